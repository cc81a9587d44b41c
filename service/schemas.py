"""The JSON contract of /sessions: request and response models.

PATCH follows JSON Merge Patch (RFC 7396): a member left out is MISSING (unchanged), a member
set to null clears a nullable field; `model_dump()` leaves MISSING members out.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    MISSING,
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    PlainSerializer,
    StrictBool,
    UrlConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticUndefined
from typing_extensions import TypeAliasType

from service import models
from service.content import sanitize_html
from service.errors import SCHEDULE_ERROR, SCHEDULE_MESSAGES
from service.pagination import INT4_MAX, WHITESPACE

# Named aliases: each enum is one schema in the OpenAPI document (one type in generated clients)
# instead of an inline copy per field and model.
# AudienceLevel, not Level: openapi-generator's Java client imports java.util.logging.Level
# beside a model of that name, and does not compile.
AudienceLevel = TypeAliasType(
    "AudienceLevel",
    Annotated[models.Level, Field(description="The level of the audience a session is for.")],
)
State = TypeAliasType(
    "State",
    Annotated[
        models.State,
        Field(
            description="A state of the review workflow; GET /sessions/states has who may move a "
            "session from which to which. Anonymous clients see accepted and confirmed sessions."
        ),
    ],
)

# Sent back by clients that echo what they read; accepted and ignored (rule: output only).
READ_ONLY_FIELDS = frozenset(
    {"id", "created_at", "last_modified_at", "version", "creator_id", "submitted_at"}
)


# RFC 3339 date-time, as "format: date-time" in the schema says; the offset is checked after.
# Also an offset without its colon (+0200, as ISO 8601 allows): openapi-generator's Python
# client sends date-time query parameters so (strftime's %z), and it is as unambiguous.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)


def _require_rfc3339_string(value: object) -> object:
    # Without this, lax mode would also take Unix timestamps ("1800000000" too) and other
    # shapes (no seconds, a space for T) for a date-time.
    if isinstance(value, datetime):
        return value
    if not (isinstance(value, str) and _RFC3339.fullmatch(value)):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    if value[17:19] == "60":
        # RFC 3339 allows second 60 at a leap second; Python's datetime cannot hold it.
        raise ValueError("must not fall on a leap second (second 60): send second 59 instead")
    return value


# The years of the date-times a client sends, far from the ends of what the stack can hold:
# Python's datetime ends with the years 1 and 9999 (an offset could carry a value past them), and
# asyncpg writes the first and the last instant it can hold as -infinity and infinity, which
# come back as other values (naive ones). Both as sent (the schema's pattern says so) and in UTC
# (as the service answers): so that every date-time it answers with can be sent back.
INPUT_YEARS = range(1900, 3000)
INPUT_YEARS_PATTERN = "^(19|2[0-9])[0-9]{2}-"


_INPUT_YEARS_TEXT = f"in the years {INPUT_YEARS[0]} to {INPUT_YEARS[-1]} as sent and in UTC"


def _in_input_years(value: datetime) -> datetime:
    if value.year not in INPUT_YEARS or value.astimezone(UTC).year not in INPUT_YEARS:
        raise ValueError(f"must be {_INPUT_YEARS_TEXT}")
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# The C0 control characters but tab, line feed and carriage return: nothing a person writes, and
# what XML 1.0 cannot hold (the schedules that conference tools export: Pentabarf, xCal), a
# terminal may act on, and JSON sends as six bytes each. Written as regex escapes, not the
# characters themselves: the schema's patterns carry them, and client generators copy patterns
# into source code, where a NUL is a syntax error (Python, Go).
_CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f"
# The two noncharacters that XML 1.0 cannot hold either (its characters end at U+FFFD): U+FFFE,
# a byte order mark read backwards, and U+FFFF. In the schema's patterns as the characters
# themselves (openapi.json escapes them as JSON does, "\ufffe"): a regex escape would be
# ECMA-262's \uFFFE, which Go's regexes (RE2) and PCRE do not read.
_NONCHARACTERS = "\ufffe\uffff"
_REFUSED_CHARACTERS = _CONTROL_CHARACTERS + _NONCHARACTERS
_REFUSED_CHARACTER = re.compile(f"[{_REFUSED_CHARACTERS}]")
# Half of a UTF-16 pair, which JSON may escape on its own ("\ud800"): no character at all, and
# PostgreSQL cannot store it (asyncpg cannot encode it). Not in the schema's patterns: a
# JSON Schema pattern sees a valid pair (an emoji) as two such halves.
_SURROGATES = "\ud800-\udfff"
_UNSTORABLE_CHARACTER = re.compile(f"[{_REFUSED_CHARACTERS}{_SURROGATES}]")


def storable_text(value: object) -> object:
    # Checked before the str's own validation (a BeforeValidator): its length check cannot
    # read a lone surrogate, and would say so less plainly. Other types are left to it.
    if isinstance(value, str) and (found := _UNSTORABLE_CHARACTER.search(value)):
        if "\ud800" <= found[0] <= "\udfff":
            raise ValueError("must be Unicode text: a lone surrogate (U+D800 to U+DFFF) is not")
        raise ValueError(
            "must not contain control characters (U+0000 to U+001F) but tab, line feed and "
            "carriage return, nor U+FFFE or U+FFFF"
        )
    return value


def _no_refused_characters_once_sanitised(value: str) -> str:
    # A character reference ("&#1;") is one once the HTML is parsed.
    if _REFUSED_CHARACTER.search(value):
        raise ValueError(
            "must not contain control characters, U+FFFE or U+FFFF, nor character references to "
            "them"
        )
    return value


# Blank: whitespace alone, as the title's pattern has it (WHITESPACE: str.isspace's, but for
# U+2028 and U+2029, which a pattern cannot hold for every client). A title of either alone is
# valid by the spec, so the service takes it too: the spec a client is generated from decides.
_BLANK = re.compile(f"[{WHITESPACE}]*")


def _not_blank(value: str) -> str:
    if _BLANK.fullmatch(value):
        raise ValueError("must not be blank")
    return value


def _fits_once_sanitised(value: str) -> str:
    # Escaping can lengthen a value ("<" becomes "&lt;"): the stored form must fit the column.
    if len(value) > models.TEXT_MAX:
        raise ValueError(f"must be at most {models.TEXT_MAX} characters once sanitised")
    return value


def _fits_once_normalised(url: HttpUrl) -> HttpUrl:
    # Normalising can lengthen a URL (non-ASCII percent-encoded, "é" becomes "%C3%A9"): what is
    # stored, and read back, must pass this same check when a client sends it back.
    if len(str(url)) > models.URL_MAX:
        raise ValueError(f"must be at most {models.URL_MAX} characters once normalised")
    return url


def format_utc(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-26T15:06:27.123456Z."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# The serializer returns a string; the schema still says date-time, so clients parse a datetime.
UtcDateTime = Annotated[
    datetime,
    PlainSerializer(format_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
InputDateTime = Annotated[
    AwareDatetime,
    BeforeValidator(_require_rfc3339_string),
    AfterValidator(_in_input_years),
    AfterValidator(_to_utc),
    Field(json_schema_extra={"pattern": INPUT_YEARS_PATTERN}),
]


def _json_integer(value: object) -> object:
    # JSON Schema's "integer" includes numbers like 7.0; strings and booleans stay invalid.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


Id = Annotated[int, Field(ge=1, le=INT4_MAX), BeforeValidator(_json_integer)]
# The schema's patterns state the validators' rules: no NUL in a search, which PostgreSQL text
# cannot hold; no control character (nor U+FFFE, U+FFFF) in a stored text, and a title not blank.
NO_NUL = Field(json_schema_extra={"pattern": r"^[^\x00]*$"})
_ALLOWED_CHARACTER = f"[^{_REFUSED_CHARACTERS}]"
NO_CONTROL = Field(json_schema_extra={"pattern": f"^{_ALLOWED_CHARACTER}*$"})
_VISIBLE_CHARACTER = f"[^{_REFUSED_CHARACTERS}{WHITESPACE}]"
NOT_BLANK = Field(
    json_schema_extra={
        "pattern": f"^{_ALLOWED_CHARACTER}*{_VISIBLE_CHARACTER}{_ALLOWED_CHARACTER}*$"
    }
)
# The lengths are constraints on the str itself, not after an AfterValidator: pydantic checks a
# length given after one on whatever it returns, and speaks of "items".
STORABLE = BeforeValidator(storable_text)

Title = Annotated[
    str,
    Field(min_length=1, max_length=models.TITLE_MAX),
    STORABLE,
    AfterValidator(_not_blank),
    NOT_BLANK,
]
Subtitle = Annotated[str, Field(max_length=models.SUBTITLE_MAX), STORABLE, NO_CONTROL]
LongText = Annotated[str, Field(max_length=models.TEXT_MAX), STORABLE, NO_CONTROL]
SafeHtml = Annotated[
    LongText,
    AfterValidator(sanitize_html),
    AfterValidator(_no_refused_characters_once_sanitised),
    AfterValidator(_fits_once_sanitised),
    Field(description="HTML; sanitised on write to a small safe subset (see the README)."),
]
Language = Annotated[str, Field(max_length=models.LANGUAGE_MAX), STORABLE, NO_CONTROL]
Url = Annotated[
    HttpUrl,
    # On the URL as sent, which the schema's maxLength documents; and on the normalised URL,
    # which can be longer (a "/" after a bare host, non-ASCII percent-encoded) and is what is
    # stored and sent back.
    UrlConstraints(max_length=models.URL_MAX),
    AfterValidator(_fits_once_normalised),
    # Documents the http(s)-only rule HttpUrl enforces; "format: uri" alone allows any scheme.
    Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}),
    PlainSerializer(str, return_type=str),
]


# Rules the schema's maxLength and format cannot state: they hold for what is stored.
_SANITISED_LIMIT = (
    f"; at most {models.TEXT_MAX} characters once sanitised, as stored (& becomes &amp;)"
)
_URL_RULES = (
    ": http or https, with a host (an IP address host a valid IPv4 or IPv6 address), a port, if "
    f"any, up to 65535; at most {models.URL_MAX} characters once normalised, as stored (a bare "
    "host gains a /, non-ASCII characters are percent-encoded)"
)
# What the OpenAPI document says about each field (description, example), shared by the models.
FIELD_DOCS: dict[str, tuple[str, object]] = {
    "id": ("The session's id, assigned by the server.", 42),
    "event_id": ("The id of the event the session belongs to.", 7),
    "title": ("The session's title; not blank.", "Keyset pagination in practice"),
    "subtitle": ("A line shown under the title.", "Why OFFSET hurts"),
    "short_abstract": (
        f"A summary of a few sentences; HTML, sanitised on write{_SANITISED_LIMIT}.",
        "How to page through large tables fast.",
    ),
    "long_abstract": (
        f"The full abstract; HTML, sanitised on write{_SANITISED_LIMIT}.",
        "Keyset pagination reads only the rows it returns...",
    ),
    "comments": (
        f"Notes for the organisers; HTML, sanitised on write{_SANITISED_LIMIT}.",
        "Needs a projector.",
    ),
    "level": ("The level of the audience.", "Intermediate"),
    "language": ("The language the session is held in.", "English"),
    "starts_at": (
        f"When the session starts: RFC 3339 with an offset, {_INPUT_YEARS_TEXT}; returned in UTC.",
        "2027-05-04T08:00:00.000000Z",
    ),
    "ends_at": (
        "When the session ends, later than starts_at: RFC 3339 with an offset, "
        f"{_INPUT_YEARS_TEXT}; returned in UTC.",
        "2027-05-04T09:00:00.000000Z",
    ),
    "track_id": ("The id of the track the session is in.", 3),
    "session_type_id": ("The id of the session's type (talk, workshop...).", 1),
    "microlocation_id": (
        "The id of the room the session is held in; set by an organiser of its event.",
        12,
    ),
    "slides_url": (f"Where the slides are{_URL_RULES}.", "https://example.org/slides.pdf"),
    "video_url": (f"Where the recording is{_URL_RULES}.", "https://example.org/video"),
    "audio_url": (f"Where the audio recording is{_URL_RULES}.", "https://example.org/audio"),
    "signup_url": (f"Where attendees sign up{_URL_RULES}.", "https://example.org/signup"),
    "state": ("Where the session is in the review workflow.", "draft"),
    "is_locked": ("Whether the session is locked against changes by its speakers.", False),
    "created_at": ("When the session was created, in UTC.", "2026-11-26T15:06:27.123456Z"),
    "last_modified_at": (
        "When the session last really changed, in UTC; a request that changes nothing "
        "leaves it as it is.",
        "2026-11-26T15:06:27.123456Z",
    ),
    "version": ("1 when created, one more on each real change.", 1),
    "creator_id": ("The `sub` of the token that created the session.", "speaker-17"),
    "submitted_at": (
        "When the session first entered `pending`, in UTC; set by the server.",
        "2026-11-27T09:30:00.000000Z",
    ),
    "deleted_at": (
        "When it was deleted; null when it still exists but is no longer visible to the caller "
        "(an anonymous client, when a session stops being accepted or confirmed), or no longer "
        "in the event whose feed this is (moved to another event).",
        "2026-11-27T09:30:00.000000Z",
    ),
}


def about(name: str, default: Any = PydanticUndefined, **options: Any) -> Any:
    """The field called name, with its description and example."""
    description, example = FIELD_DOCS[name]
    return Field(default, description=description, examples=[example], **options)


def output_only(name: str) -> Any:
    """A field the server sets: readOnly in the schema, ignored in requests."""
    return about(name, json_schema_extra={"readOnly": True})


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("ends_at", check_fields=False)
    @classmethod
    def _ends_after_start(cls, ends_at: Any, info: ValidationInfo) -> Any:
        # A body that contradicts itself is invalid whatever is stored: 422 before any 412, and
        # before the request queues for a connection. Against the stored row (a patch of one
        # end), the table checks it at the flush (SessionRepository).
        starts_at = info.data.get("starts_at")
        both_given = isinstance(starts_at, datetime) and isinstance(ends_at, datetime)
        if both_given and ends_at <= starts_at:
            raise PydanticCustomError(SCHEDULE_ERROR, SCHEDULE_MESSAGES["ends_at"])
        return ends_at

    @model_validator(mode="before")
    @classmethod
    def _ignore_read_only_fields(cls, data: Any) -> Any:
        # A change of the feed is a session with `deleted: false`: sent back as read, it is the
        # session. `deleted: true` is refused (an unknown field), never taken for a delete.
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if key not in READ_ONLY_FIELDS and not (key == "deleted" and value is False)
            }
        return data


class SessionCreate(_Input):
    """A new session.

    The server sets the output-only fields of a SessionRead (id, creator_id, submitted_at,
    created_at, last_modified_at, version): they are not part of this schema, and the service
    ignores them in a session sent back as it was read.
    """

    event_id: Id = about("event_id")
    title: Title = about("title")
    subtitle: Subtitle | None = about("subtitle", None)
    short_abstract: SafeHtml | None = about("short_abstract", None)
    long_abstract: SafeHtml | None = about("long_abstract", None)
    comments: SafeHtml | None = about("comments", None)
    level: AudienceLevel | None = about("level", None)
    language: Language | None = about("language", None)
    starts_at: InputDateTime | None = about("starts_at", None)
    ends_at: InputDateTime | None = about("ends_at", None)
    track_id: Id | None = about("track_id", None)
    session_type_id: Id | None = about("session_type_id", None)
    microlocation_id: Id | None = about("microlocation_id", None)
    slides_url: Url | None = about("slides_url", None)
    video_url: Url | None = about("video_url", None)
    audio_url: Url | None = about("audio_url", None)
    signup_url: Url | None = about("signup_url", None)
    state: State = about("state", "draft")
    is_locked: StrictBool = about("is_locked", False)


class SessionUpdate(_Input):
    """A JSON Merge Patch (RFC 7396) of a session: absent members stay as they are, null clears.

    Output-only fields sent back as they were read are ignored, as in SessionCreate.
    """

    event_id: Id | MISSING = about("event_id", MISSING)
    title: Title | MISSING = about("title", MISSING)
    subtitle: Subtitle | None | MISSING = about("subtitle", MISSING)
    short_abstract: SafeHtml | None | MISSING = about("short_abstract", MISSING)
    long_abstract: SafeHtml | None | MISSING = about("long_abstract", MISSING)
    comments: SafeHtml | None | MISSING = about("comments", MISSING)
    level: AudienceLevel | None | MISSING = about("level", MISSING)
    language: Language | None | MISSING = about("language", MISSING)
    starts_at: InputDateTime | None | MISSING = about("starts_at", MISSING)
    ends_at: InputDateTime | None | MISSING = about("ends_at", MISSING)
    track_id: Id | None | MISSING = about("track_id", MISSING)
    session_type_id: Id | None | MISSING = about("session_type_id", MISSING)
    microlocation_id: Id | None | MISSING = about("microlocation_id", MISSING)
    slides_url: Url | None | MISSING = about("slides_url", MISSING)
    video_url: Url | None | MISSING = about("video_url", MISSING)
    audio_url: Url | None | MISSING = about("audio_url", MISSING)
    signup_url: Url | None | MISSING = about("signup_url", MISSING)
    state: State | MISSING = about("state", MISSING)
    is_locked: StrictBool | MISSING = about("is_locked", MISSING)


class SessionRead(BaseModel):
    """A session (talk, workshop...) of a conference event, as the server holds it."""

    model_config = ConfigDict(from_attributes=True)

    id: int = output_only("id")
    event_id: int = about("event_id")
    title: str = about("title")
    subtitle: str | None = about("subtitle")
    short_abstract: str | None = about("short_abstract")
    long_abstract: str | None = about("long_abstract")
    comments: str | None = about("comments")
    level: AudienceLevel | None = about("level")
    language: str | None = about("language")
    starts_at: UtcDateTime | None = about("starts_at")
    ends_at: UtcDateTime | None = about("ends_at")
    track_id: int | None = about("track_id")
    session_type_id: int | None = about("session_type_id")
    microlocation_id: int | None = about("microlocation_id")
    slides_url: str | None = about("slides_url")
    video_url: str | None = about("video_url")
    audio_url: str | None = about("audio_url")
    signup_url: str | None = about("signup_url")
    state: State = about("state")
    is_locked: bool = about("is_locked")
    creator_id: str | None = output_only("creator_id")
    submitted_at: UtcDateTime | None = output_only("submitted_at")
    created_at: UtcDateTime = output_only("created_at")
    last_modified_at: UtcDateTime = output_only("last_modified_at")
    version: int = output_only("version")


class SessionPage(BaseModel):
    """One page of sessions, in the order `sort` asks for (id by default)."""

    items: list[SessionRead] = Field(
        description="The sessions of this page, in the order `sort` asks for (id by default)."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same filters and sort) to get the next page; "
        "null on the last page."
    )


def _no_default(schema: dict[str, Any]) -> None:
    """A member always sent has no default in the spec: beside `const`, openapi-generator's Java
    client declares the field an enum and its default a boolean, and does not compile."""
    del schema["default"]


class SessionChange(SessionRead):
    """A session created or changed: the client stores it (an upsert by id)."""

    # `deleted` is always sent: required in the response schema, so clients can branch on it.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    deleted: Literal[False] = Field(
        False, description="Always false: the session exists.", json_schema_extra=_no_default
    )


class SessionTombstone(BaseModel):
    """A session deleted, one the caller may no longer see, or one moved out of the event whose
    feed this is: the client drops its copy."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )

    id: int = output_only("id")
    deleted_at: UtcDateTime | None = output_only("deleted_at")
    last_modified_at: UtcDateTime = output_only("last_modified_at")
    version: int = output_only("version")
    deleted: Literal[True] = Field(
        True,
        description="Always true: the session is gone for this caller.",
        json_schema_extra=_no_default,
    )


def _any_of_as_one_of(schema: dict[str, Any]) -> None:
    schema["oneOf"] = schema.pop("anyOf")


# A named oneOf, no OpenAPI discriminator: `deleted` is a boolean, and discriminators name
# string values; `deleted` being const false or true makes exactly one member match. Generators
# make a union of it (typescript-fetch: SessionChange | SessionTombstone, narrowed by
# `deleted`), where an anonymous anyOf became one type merging both members ("ItemsInner").
SessionFeedItem = TypeAliasType(
    "SessionFeedItem",
    Annotated[
        SessionChange | SessionTombstone,
        Field(
            description="A session created or changed (`deleted`: false), or a tombstone "
            "(`deleted`: true).",
            json_schema_extra=_any_of_as_one_of,
        ),
    ],
)


class ChangesPage(BaseModel):
    """One page of the change feed: the changes after `since`, and the token to poll with next."""

    items: list[SessionFeedItem] = Field(
        description="Changes in the order they became final, oldest first."
    )
    next_token: str = Field(
        description="Pass as `since` in the next poll. A page shorter than `limit` means the "
        "client is up to date for now."
    )


# A named schema: one type in a generated client for both tables below.
Transitions = TypeAliasType(
    "Transitions",
    Annotated[
        dict[State, list[State]],
        Field(description="For each state, the states a session in it may be moved to."),
    ],
)


class StateTables(BaseModel):
    """The session workflow: who may move a session from which state to which."""

    states: list[State] = Field(description="Every state, in workflow order.")
    public_states: list[State] = Field(description="The states anonymous clients can see.")
    speaker_create_states: list[State] = Field(
        description="The states a session may be created in by someone not organising its event."
    )
    speaker: Transitions = Field(description="state -> states its speaker may set.")
    organizer: Transitions = Field(description="state -> states an organiser of its event may set.")
    organizer_fields: list[str] = Field(
        description="The fields only an organiser of the session's event (or an admin) may set or "
        "change; sent back unchanged, they are no change.",
        examples=[["is_locked", "microlocation_id"]],
    )


SESSION_FIELDS = tuple(SessionRead.model_fields)


def _pick(session: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(session, name) for name in names}


def session_content(session: Any) -> dict[str, Any]:
    """A session as SessionRead renders it, field order included.

    An ORM object (writes), or a row of the read columns (reads: the repository selects exactly
    SessionRead's fields, in its order, so the row's own dict is the content, made in C).
    """
    if isinstance(session, models.Session):
        return _pick(session, SESSION_FIELDS)
    content: dict[str, Any] = session._asdict()
    return content


TOMBSTONE_FIELDS = tuple(name for name in SessionTombstone.model_fields if name != "deleted")


def change_content(session: Any) -> dict[str, Any]:
    """A change of the feed as SessionChange renders it: the session, then `deleted`: false.

    By field name: a row of the feed has more columns (deleted_at, txid) than SessionRead."""
    return _pick(session, SESSION_FIELDS) | {"deleted": False}


def tombstone_content(session: Any) -> dict[str, Any]:
    """A tombstone of the feed as SessionTombstone renders it."""
    return _pick(session, TOMBSTONE_FIELDS) | {"deleted": True}


def _encode_datetime(value: object) -> str:
    if isinstance(value, datetime):
        return format_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_json(content: Any) -> bytes:
    """The JSON bytes SessionRead, SessionPage and ChangesPage document, without the models.

    orjson renders date-times its own way (no microseconds when they are 0): they go through
    format_utc instead. tests/test_json.py holds this to the models' own serialization.
    """
    return orjson.dumps(content, default=_encode_datetime, option=orjson.OPT_PASSTHROUGH_DATETIME)
