"""Idempotency-Key on POST /sessions (draft-ietf-httpapi-idempotency-key-header).

A client that never got its answer (a lost connection, a timeout, a 503 commit-unconfirmed)
cannot tell whether its session was created, and a plain retry could create it twice. Sent with
an Idempotency-Key, a creation stores the key, a fingerprint of its body and its answer in the
same transaction as the session: both are saved or neither is. A retry with the same key is then
answered as the first request was, and creates nothing; one sent while the first is still being
written waits for its outcome (PostgreSQL's unique index makes it wait) rather than racing it,
for up to DB_LOCK_TIMEOUT: then it is 409, as the draft answers a request still in progress.

Only successes are stored: a request refused (401, 403, 422...) changed nothing, so its retry is
simply a new attempt. Keys belong to the caller (the token's `sub`) and expire after
KEY_LIFETIME; each new key deletes a few expired ones, so the table holds about a day of keys.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from fastapi import Request, Response
from sqlalchemy import Table, bindparam, delete, false, func, orm, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from service.conditional import format_http_date, http_date, last_modified, parse_http_date
from service.db import ASYNCPG_DIALECT, is_lock_not_available
from service.errors import BadRequest, ChangeInProgress, InvalidInput
from service.models import IDEMPOTENCY_KEY_MAX, IdempotencyKey
from service.openapi import header_parameter

HEADER = "Idempotency-Key"
KEY_LIFETIME = timedelta(hours=24)
PRUNED_PER_KEY = 10  # more than one: the table shrinks back after a burst

# The draft's syntax is a Structured Field string (RFC 8941 3.3.3: printable ASCII in double
# quotes, \" and \\ escaped); a bare key of URL-safe characters, as many clients send, is
# taken too.
_SF_CHARACTER = r'[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\\"]'  # an escape stands for one
_BARE_CHARACTER = r"[A-Za-z0-9._~:+/=-]"
_SF_STRING = re.compile(rf'"((?:{_SF_CHARACTER})*)"')
_BARE_KEY = re.compile(rf"{_BARE_CHARACTER}+")
_ESCAPE = re.compile(r'\\([\\"])')

# The pattern is exactly what idempotency_key takes.
PARAMETER = header_parameter(
    HEADER,
    "A key of the client's choosing (a UUID) for this one creation: a retry with the same key "
    "and body gets the first answer again and creates nothing more; with another body, 422. "
    f"Keys are the caller's own and expire after {KEY_LIFETIME // timedelta(hours=1)} hours.",
    pattern=rf'^("(?:{_SF_CHARACTER}){{1,{IDEMPOTENCY_KEY_MAX}}}"'
    rf"|{_BARE_CHARACTER}{{1,{IDEMPOTENCY_KEY_MAX}}})$",
    examples=['"8e03978e-40d5-43e8-bc93-6894a57f9324"'],
)

# The headers of the stored answer; Date is the replay's own (and caps Last-Modified).
_REPLAYED_HEADERS = ("location", "etag", "last-modified", "cache-control")


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, or None; 400 if it is malformed or sent twice."""
    lines = request.headers.getlist(HEADER)
    if not lines:
        return None
    value = lines[0].strip(" \t")
    if len(lines) == 1 and (quoted := _SF_STRING.fullmatch(value)):
        key = _ESCAPE.sub(r"\1", quoted[1])
    elif len(lines) == 1 and _BARE_KEY.fullmatch(value):
        key = value
    else:
        key = ""
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise BadRequest(
            f"{HEADER} must be one string of 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII "
            'characters, quoted ("8e03978e-40d5-43e8-bc93-6894a57f9324") or bare (letters, '
            "digits and ._~:+/=-); a UUID is a good one.",
            header=HEADER,
        )
    return key


def fingerprint(body: dict[str, Any]) -> bytes:
    """SHA-256 of the request body as validated (so the same JSON written otherwise matches)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: bytes
    status: int
    headers: dict[str, str]
    body: bytes


class KeyAlreadyUsed(Exception):
    """Raised in the unit of work, whose write it rolls back: the key has an answer already."""

    def __init__(self, stored: StoredAnswer) -> None:
        super().__init__(HEADER)
        self.stored = stored

    def replay(self, body_fingerprint: bytes) -> Response:
        """The stored answer, or 422 if the key was first sent with another body."""
        if body_fingerprint != self.stored.fingerprint:
            raise InvalidInput(
                ("header", HEADER),
                "was first sent with another request body; a new request needs a new key",
            )
        return Response(
            self.stored.body,
            self.stored.status,
            _replayed_headers(self.stored.headers, datetime.now(UTC)),
            media_type="application/json",
        )


def _replayed_headers(stored: dict[str, str], now: datetime) -> dict[str, str]:
    """The stored answer's headers, dated now: its Last-Modified never later than this Date
    (RFC 9110 8.8.2.1), though the host that first answered had a clock ahead of this one."""
    modified = parse_http_date(stored.get("last-modified", ""))
    if modified is None:
        return stored
    return stored | {
        "last-modified": format_http_date(last_modified(modified, now)),
        "date": http_date(int(now.timestamp())),
    }


_keys = cast(Table, IdempotencyKey.__table__)
_fresh = _keys.c.created_at >= func.now() - KEY_LIFETIME
# Built once. An expired key is taken over as if new; a live one is left as it is (no row back).
_insert_key = insert(_keys)
_CLAIM = _insert_key.on_conflict_do_update(
    index_elements=[_keys.c.caller, _keys.c.key],
    set_={
        "fingerprint": _insert_key.excluded.fingerprint,
        "created_at": func.now(),
        "status": _insert_key.excluded.status,
        "headers": _insert_key.excluded.headers,
        "body": _insert_key.excluded.body,
    },
    where=~_fresh,
).returning(_keys.c.key)
_STORED = select(_keys.c.fingerprint, _keys.c.status, _keys.c.headers, _keys.c.body).where(
    _keys.c.caller == bindparam("caller"), _keys.c.key == bindparam("key")
)
# A statement that touches no row but takes the table lock the claim's INSERT takes (ROW
# EXCLUSIVE): no row lock holds it up (a request in flight with the key holds one), only DDL's
# lock on the whole table, CREATE INDEX's (SHARE) included, which a plain read would pass.
_CLAIMS_TABLE_LOCK = str(delete(_keys).where(false()).compile(dialect=ASYNCPG_DIALECT))
_PRUNE = delete(_keys).where(
    tuple_(_keys.c.caller, _keys.c.key).in_(
        select(_keys.c.caller, _keys.c.key)
        .where(~_fresh)
        .limit(PRUNED_PER_KEY)
        .with_for_update(skip_locked=True)
    )
)


class IdempotencyKeys:
    """The keys, in the write's own unit of work (sync code, as the repository's)."""

    def __init__(self, db: orm.Session) -> None:
        self.db = db

    def claim(self, caller: str, key: str, body_fingerprint: bytes, answer: Response) -> None:
        """Store the answer of the write under the key, to be committed with it.

        If the key has an answer already (committed, or by a request still in flight, whose
        outcome this waits for), raise KeyAlreadyUsed with it; ChangeInProgress if that request
        is not over within DB_LOCK_TIMEOUT.
        """
        row = {
            "caller": caller,
            "key": key,
            "fingerprint": body_fingerprint,
            "status": answer.status_code,
            "headers": {
                name: value for name, value in answer.headers.items() if name in _REPLAYED_HEADERS
            },
            "body": bytes(answer.body),
        }
        try:
            claimed = self.db.execute(_CLAIM, row).first()
        except DBAPIError as exc:
            if is_lock_not_available(exc):  # the first request's outcome, not known in time
                raise ChangeInProgress.of_idempotency_key() from exc
            raise
        if claimed is None:
            stored = self.db.execute(_STORED, {"caller": caller, "key": key}).one()
            raise KeyAlreadyUsed(StoredAnswer(*stored))
        self.db.execute(_PRUNE)


async def wait_for_the_keys_table(conn: Any) -> None:
    """On a driver connection (service.transactions.read_connection), after a claim was refused
    its lock (ChangeInProgress), take the claim's lock on the table: where DDL (a migration)
    holds the table, rather than a request in flight with the key, this waits for it too, and
    its lock timeout is the 503 of any request on such a table."""
    await conn.execute(_CLAIMS_TABLE_LOCK)
