"""Sort orders, and the signed tokens that carry a position between requests.

A cursor or feed token is `base64url(json payload) . base64url(HMAC-SHA256(key, kind NUL payload))`,
the key derived from CURSOR_SECRET (TokenSigner), the kind telling cursors from feed tokens.
It is opaque to clients and tamper-evident: the service reads a payload only after its signature
checks out, and the payload names the query it was issued for, so a cursor replayed with other
filters or another sort order is refused instead of serving a wrong page.
"""

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

SORT_KEYS = ("id", "title", "starts_at", "ends_at", "created_at", "last_modified_at")
NULLABLE_SORT_KEYS = frozenset({"starts_at", "ends_at"})


class InvalidPositionToken(ValueError):
    """A token this service did not issue, or issued for another query."""


class InvalidSort(ValueError):
    pass


@dataclass(frozen=True)
class SortKey:
    name: str
    descending: bool = False

    def __str__(self) -> str:
        return f"-{self.name}" if self.descending else self.name


def parse_sort(values: Iterable[str]) -> tuple[SortKey, ...]:
    """`sort` values, each comma-separated, in order; `id` is appended as the tie-breaker.

    Keys after `id` could never decide an order, so they are dropped (once checked: what the
    service accepts is what SORT_PATTERN documents).
    """
    keys: list[SortKey] = []
    seen: set[str] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            name = item.removeprefix("-")
            if name not in SORT_KEYS:
                raise InvalidSort(
                    f"unknown sort key {item!r}; use {', '.join(SORT_KEYS)}, "
                    "each optionally prefixed by '-'"
                )
            if name in seen:
                raise InvalidSort(f"sort key {name!r} is given twice")
            if "id" not in seen:
                keys.append(SortKey(name, descending=item.startswith("-")))
            seen.add(name)
    if keys and keys[-1].name == "id":
        return tuple(keys)
    # The tie-breaker runs in the direction of the last key, so that one index read backwards
    # serves a descending order.
    return (*keys, SortKey("id", descending=bool(keys) and keys[-1].descending))


# Whitespace as str.isspace() sees it, spelled out for a regex character class, so that every
# regex engine (the schema's patterns are read by clients) reads it alike; but for U+2028 and
# U+2029. Some generators (@hey-api/openapi-ts's zod and valibot plugins) copy a pattern into a
# JavaScript regex literal with its escapes undone, where those two end the line: the client
# does not compile. The title's blank check uses the same set (a title of those alone is taken);
# around a sort key the pattern is a little stricter than parse_sort, which strips them too.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
# One `sort` value as parse_sort reads it, for the OpenAPI document: keys, each optionally
# prefixed by '-', separated by commas, with whitespace (as str.strip sees it) around each.
_SPACE = f"[{WHITESPACE}]*"
_SORT_ITEM = rf"{_SPACE}-?(?:{'|'.join(SORT_KEYS)}){_SPACE}"
SORT_PATTERN = rf"^{_SORT_ITEM}(?:,{_SORT_ITEM})*$"


# Token kinds: a list cursor is never accepted as a feed token, nor the other way round.
LIST_CURSOR = "sessions-list"
FEED_TOKEN = "sessions-changes"  # noqa: S105 (a token kind, not a secret)
TOKEN_FORMAT = 1  # the payloads' layout: a token of another format is refused


class TokenSigner:
    """Signs and verifies position tokens; every replica must share the secret."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"sessions-service position token:" + secret.encode()).digest()

    def _signature(self, kind: str, payload: bytes) -> bytes:
        return hmac.new(self._key, kind.encode() + b"\x00" + payload, hashlib.sha256).digest()

    def sign(self, kind: str, data: Mapping[str, Any]) -> str:
        payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        return f"{_b64encode(payload)}.{_b64encode(self._signature(kind, payload))}"

    def verify(self, kind: str, token: str) -> dict[str, Any]:
        """The payload of a token issued for `kind`; InvalidPositionToken for anything else."""
        encoded_payload, _, encoded_signature = token.partition(".")
        try:
            payload = _b64decode(encoded_payload)
            signature = _b64decode(encoded_signature)
        except (binascii.Error, ValueError):
            raise InvalidPositionToken("is not one this service issued") from None
        if not hmac.compare_digest(signature, self._signature(kind, payload)):
            raise InvalidPositionToken("is not one this service issued")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # Signed but not JSON: forged with the secret (the development default is public).
            raise InvalidPositionToken("is not one this service issued") from None
        if not isinstance(data, dict):
            raise InvalidPositionToken("is not one this service issued")
        return data


# The largest values of PostgreSQL's integer and bigint columns (ids, transaction ids).
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
_DATETIME_KEYS = frozenset({"starts_at", "ends_at", "created_at", "last_modified_at"})


def encode_position(values: Sequence[Any]) -> list[Any]:
    """A keyset position as JSON values: date-times in ISO 8601, NULL as null."""
    return [value.isoformat() if isinstance(value, datetime) else value for value in values]


def decode_position(sort: Sequence[SortKey], data: object) -> list[Any]:
    """The keyset position in a verified cursor, checked against the sort order it is for."""
    if not isinstance(data, list) or len(data) != len(sort):
        raise InvalidPositionToken("does not fit the sort order")
    values: list[Any] = []
    for key, value in zip(sort, data, strict=True):
        # Only values a column can hold: a signed cursor may still be forged where the secret
        # is known (the development default), and its values go to the driver as they are.
        if (key.name == "id" and type(value) is int and 1 <= value <= INT4_MAX) or (
            key.name == "title" and isinstance(value, str) and "\x00" not in value
        ):
            values.append(value)
        elif key.name in _DATETIME_KEYS and isinstance(value, str):
            values.append(_instant(value))
        elif key.name in NULLABLE_SORT_KEYS and value is None:
            values.append(None)
        else:
            raise InvalidPositionToken("does not fit the sort order")
    return values


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
        # The first and last instants of years 1 and 9999 are ±infinity to asyncpg.
        if moment.tzinfo is not None and 1 < moment.astimezone(UTC).year < 9999:
            return moment
    except (ValueError, OverflowError):
        pass
    raise InvalidPositionToken("does not fit the sort order")


def query_fingerprint(parameters: Mapping[str, Any]) -> str:
    """A short digest of the parameters a token is bound to (canonical: sorted JSON)."""
    canonical = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS, default=str)
    return _b64encode(hashlib.sha256(canonical).digest()[:12])


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    # What _b64encode writes and nothing else: urlsafe_b64decode skips other characters and
    # padding, and ignores the last character's unused bits, so that many spellings of one
    # token would all be taken for it.
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise ValueError("not unpadded base64url as written")
    return data
