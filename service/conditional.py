"""HTTP conditional requests as RFC 9110 defines them (sections 8.8, 13.1 and 13.2): pure functions.

Entity tags and HTTP-dates are parsed here, and the preconditions of a request are evaluated in
the order of section 13.2.2. Nothing here knows about FastAPI or the database.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import Enum
from functools import lru_cache
from typing import Final, Literal

SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


class MalformedHeader(ValueError):
    """A precondition field whose value does not follow its grammar."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is malformed")
        self.field = field


@dataclass(frozen=True)
class EntityTag:
    opaque: str  # the quoted string without its quotes
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def strong_match(self, other: "EntityTag") -> bool:
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: "EntityTag") -> bool:
        return self.opaque == other.opaque


ANY: Final = "*"
EntityTags = tuple[EntityTag, ...] | Literal["*"]

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (RFC 9110 8.8.3)
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_OWS = " \t"
# What parse_entity_tags accepts, as one pattern for the OpenAPI document: "*", or entity-tags
# separated by commas, empty list elements and optional whitespace allowed.
_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
ENTITY_TAGS_PATTERN = (
    rf"^(?:[ \t]*\*[ \t]*|[ \t,]*(?:{_TAG}[ \t]*(?:,[ \t,]*{_TAG}[ \t]*)*(?:,[ \t,]*)?)?)$"
)


def parse_entity_tags(value: str, field: str) -> EntityTags:
    """`*` or a list of entity-tags (If-Match, If-None-Match); empty list elements are allowed."""
    if value.strip(_OWS) == ANY:
        return ANY
    tags: list[EntityTag] = []
    position, end = 0, len(value)
    while position < end:
        if value[position] in _OWS + ",":
            position += 1
            continue
        match = _ENTITY_TAG.match(value, position)
        if match is None:
            raise MalformedHeader(field)
        tags.append(EntityTag(match[2], weak=match[1] is not None))
        position = match.end()
        while position < end and value[position] in _OWS:
            position += 1
        if position < end and value[position] != ",":
            raise MalformedHeader(field)
    return tuple(tags)


_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = f"(?P<month>{'|'.join(_MONTHS)})"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# The three formats a recipient must accept (RFC 9110 5.6.7); HTTP-date is case-sensitive.
_IMF_FIXDATE = re.compile(f"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(
    f"{_DAY_LONG}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<short_year>[0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE = re.compile(
    f"{_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})"
)


def parse_http_date(value: str, *, now: datetime | None = None) -> datetime | None:
    """An HTTP-date in any of its three formats as aware UTC, or None if it is not one."""
    value = value.strip(_OWS)
    for pattern in (_IMF_FIXDATE, _RFC850_DATE, _ASCTIME_DATE):
        if match := pattern.fullmatch(value):
            break
    else:
        return None
    parts = match.groupdict()
    fields = (
        _MONTHS.index(parts["month"]) + 1,
        int(parts["day"]),
        int(parts["hour"]),
        int(parts["minute"]),
        min(int(parts["second"]), 59),  # a leap second (60) is still that minute
    )
    if parts.get("short_year") is not None:
        # A two-digit year is of this century, unless that makes the date more than 50 years
        # ahead: then it is the latest past year with those digits.
        now = now or datetime.now(UTC)
        year = now.year // 100 * 100 + int(parts["short_year"])
        fifty_years_ahead = (now.year + 50, now.month, now.day, now.hour, now.minute, now.second)
        if (year, *fields) > fifty_years_ahead:
            year -= 100
    else:
        year = int(parts["year"])
    try:
        return datetime(year, *fields, tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 25, year 0
        return None


def format_http_date(moment: datetime) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (fractions of a second are dropped)."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


@lru_cache(maxsize=1)
def http_date(second: int) -> str:
    # The Date of every response within one second, formatted once rather than per response:
    # exact all the same, since an HTTP-date has whole seconds.
    return format_http_date(datetime.fromtimestamp(second, UTC))


def truncate_to_second(moment: datetime) -> datetime:
    """HTTP-dates have whole seconds: a modification time is compared at that granularity."""
    return moment.replace(microsecond=0)


def last_modified(modified_at: datetime, now: datetime) -> datetime:
    """The Last-Modified of a response whose Date is `now`: never later than it (RFC 9110 8.8.2.1).

    A stamp ahead of this host's clock (another host's clock ran ahead) is replaced by `now`.
    """
    return min(truncate_to_second(modified_at), truncate_to_second(now))


@dataclass(frozen=True)
class Preconditions:
    """The preconditions of one request, parsed; None where a field is absent or ignored."""

    if_match: EntityTags | None = None
    if_none_match: EntityTags | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    def guards_write(self, latest: datetime) -> bool:
        """Whether a write is conditional on the state the client has seen, where `latest` is
        the later of the clock and the resource's modification time. If-Match: * is not: any
        current session matches it, so it cannot prevent a lost update (RFC 6585, 3). Nor is an
        If-Unmodified-Since later than `latest`: every version stored so far meets it, where
        every Last-Modified the resource was served with is at most its modification time."""
        if self.if_match is not None:
            # If-Unmodified-Since is then ignored (RFC 9110 13.2.2): it guards nothing.
            return self.if_match != ANY
        return self.if_unmodified_since is not None and self.if_unmodified_since <= latest


def parse_preconditions(
    *,
    if_match: list[str],
    if_none_match: list[str],
    if_modified_since: list[str],
    if_unmodified_since: list[str],
) -> Preconditions:
    """Parse the field lines of each precondition (a field may be sent on several lines).

    A malformed entity-tag list raises MalformedHeader: a client that asked for a condition is
    never served as if it had not. An invalid date, or several, is ignored (RFC 9110 13.1.3-4).
    """
    return Preconditions(
        if_match=parse_entity_tags(", ".join(if_match), "If-Match") if if_match else None,
        if_none_match=(
            parse_entity_tags(", ".join(if_none_match), "If-None-Match") if if_none_match else None
        ),
        if_modified_since=_single_date(if_modified_since),
        if_unmodified_since=_single_date(if_unmodified_since),
    )


def _single_date(lines: list[str]) -> datetime | None:
    return parse_http_date(lines[0]) if len(lines) == 1 else None


class Outcome(Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412


def _matches(tags: EntityTags, current: Sequence[EntityTag], *, strong: bool) -> bool:
    # The resource exists whenever preconditions are evaluated, so `*` always matches; a list
    # matches nothing of a resource without an entity tag.
    if tags == ANY:
        return True
    if strong:
        return any(tag.strong_match(each) for tag in tags for each in current)
    return any(tag.weak_match(each) for tag in tags for each in current)


def evaluate(
    preconditions: Preconditions,
    *,
    method: str,
    etag: EntityTag | None,
    modified_at: datetime | None,
    earlier_etag: EntityTag | None = None,
) -> Outcome:
    """RFC 9110 13.2.2, steps 1-4, for a resource that exists (404 is decided before this).

    `earlier_etag`: another tag of the same representation, as an earlier release sent it,
    which a client may still hold; it matches as `etag` does.

    Dates are compared with the modification time truncated to the second, so a client that
    echoes a Last-Modified it received from an unchanged resource is never refused; two changes
    within one second are therefore indistinguishable by date: only the entity tag tells them apart.

    A resource without validators (a list page, the change feed) has neither: If-Match holds
    only as `*` and If-None-Match fails only as `*`, and no date is evaluated (13.1.3, 13.1.4).
    """
    modified = None if modified_at is None else truncate_to_second(modified_at)
    current = [tag for tag in (etag, earlier_etag) if tag is not None]
    if_match, unmodified_since = preconditions.if_match, preconditions.if_unmodified_since
    if_none_match, modified_since = preconditions.if_none_match, preconditions.if_modified_since
    if if_match is not None and not _matches(if_match, current, strong=True):  # step 1
        return Outcome.PRECONDITION_FAILED
    if (  # step 2
        if_match is None
        and unmodified_since is not None
        and modified is not None
        and modified > unmodified_since
    ):
        return Outcome.PRECONDITION_FAILED
    if if_none_match is not None:  # step 3
        if _matches(if_none_match, current, strong=False):
            return Outcome.NOT_MODIFIED if method in SAFE_METHODS else Outcome.PRECONDITION_FAILED
        return Outcome.PROCEED
    if (  # step 4
        method in SAFE_METHODS
        and modified_since is not None
        and modified is not None
        and modified <= modified_since
    ):
        return Outcome.NOT_MODIFIED
    return Outcome.PROCEED
