"""The JSON contract of /sessions: request and response models.

PATCH follows JSON Merge Patch (RFC 7396): a member left out is MISSING (unchanged), a member
set to null clears a nullable field; `model_dump()` leaves MISSING members out.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

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
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service import models
from service.content import sanitize_html

INT4_MAX = 2**31 - 1

Level = Literal["Beginner", "Intermediate", "Advanced", "Expert"]
State = Literal["draft", "pending", "accepted", "confirmed", "rejected", "canceled", "withdrawn"]

# Sent back by clients that echo what they read; accepted and ignored (rule: output only).
READ_ONLY_FIELDS = frozenset(
    {"id", "created_at", "last_modified_at", "version", "creator_id", "submitted_at"}
)


def _require_rfc3339_string(value: object) -> object:
    # Without this, lax mode would also take Unix timestamps for a date-time.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported date range") from None


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _fits_once_sanitised(value: str) -> str:
    # Escaping can lengthen a value ("<" becomes "&lt;"): the stored form must fit the column.
    if len(value) > models.TEXT_MAX:
        raise ValueError(f"must be at most {models.TEXT_MAX} characters once sanitised")
    return value


def format_utc(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-26T15:06:27.123456Z."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str)]
InputDateTime = Annotated[
    AwareDatetime, BeforeValidator(_require_rfc3339_string), AfterValidator(_to_utc)
]
Id = Annotated[StrictInt, Field(ge=1, le=INT4_MAX)]
Title = Annotated[
    str,
    Field(min_length=1, max_length=models.TITLE_MAX),
    AfterValidator(no_nul),
    AfterValidator(_not_blank),
]
Subtitle = Annotated[str, Field(max_length=models.SUBTITLE_MAX), AfterValidator(no_nul)]
LongText = Annotated[str, Field(max_length=models.TEXT_MAX), AfterValidator(no_nul)]
SafeHtml = Annotated[
    LongText,
    AfterValidator(sanitize_html),
    AfterValidator(_fits_once_sanitised),
    Field(description="HTML; sanitised on write to a small safe subset (see the README)."),
]
Language = Annotated[str, Field(max_length=models.LANGUAGE_MAX), AfterValidator(no_nul)]
Url = Annotated[
    HttpUrl,
    Field(max_length=models.URL_MAX),
    PlainSerializer(str, return_type=str),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _ignore_read_only_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in READ_ONLY_FIELDS}
        return data


class SessionCreate(_Input):
    event_id: Id
    title: Title
    subtitle: Subtitle | None = None
    short_abstract: SafeHtml | None = None
    long_abstract: SafeHtml | None = None
    comments: SafeHtml | None = None
    level: Level | None = None
    language: Language | None = None
    starts_at: InputDateTime | None = None
    ends_at: InputDateTime | None = None
    track_id: Id | None = None
    session_type_id: Id | None = None
    microlocation_id: Id | None = None
    slides_url: Url | None = None
    video_url: Url | None = None
    audio_url: Url | None = None
    signup_url: Url | None = None
    state: State = "draft"
    is_locked: StrictBool = False


class SessionUpdate(_Input):
    """A JSON Merge Patch of a session: absent members stay as they are."""

    event_id: Id | MISSING = MISSING
    title: Title | MISSING = MISSING
    subtitle: Subtitle | None | MISSING = MISSING
    short_abstract: SafeHtml | None | MISSING = MISSING
    long_abstract: SafeHtml | None | MISSING = MISSING
    comments: SafeHtml | None | MISSING = MISSING
    level: Level | None | MISSING = MISSING
    language: Language | None | MISSING = MISSING
    starts_at: InputDateTime | None | MISSING = MISSING
    ends_at: InputDateTime | None | MISSING = MISSING
    track_id: Id | None | MISSING = MISSING
    session_type_id: Id | None | MISSING = MISSING
    microlocation_id: Id | None | MISSING = MISSING
    slides_url: Url | None | MISSING = MISSING
    video_url: Url | None | MISSING = MISSING
    audio_url: Url | None | MISSING = MISSING
    signup_url: Url | None | MISSING = MISSING
    state: State | MISSING = MISSING
    is_locked: StrictBool | MISSING = MISSING

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, ends_at: Any, info: ValidationInfo) -> Any:
        # A patch that contradicts itself is invalid whatever is stored: 422 before any 412.
        # Against the stored row, the repository checks it once the precondition has passed.
        starts_at = info.data.get("starts_at")
        both_given = isinstance(starts_at, datetime) and isinstance(ends_at, datetime)
        if both_given and ends_at <= starts_at:
            raise ValueError("must be later than starts_at")
        return ends_at


class SessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    title: str
    subtitle: str | None
    short_abstract: str | None
    long_abstract: str | None
    comments: str | None
    level: Level | None
    language: str | None
    starts_at: UtcDateTime | None
    ends_at: UtcDateTime | None
    track_id: int | None
    session_type_id: int | None
    microlocation_id: int | None
    slides_url: str | None
    video_url: str | None
    audio_url: str | None
    signup_url: str | None
    state: State
    is_locked: bool
    creator_id: str | None = Field(description="The `sub` of the token that created it.")
    submitted_at: UtcDateTime | None = Field(
        description="When the session first entered `pending`; set by the server."
    )
    created_at: UtcDateTime
    last_modified_at: UtcDateTime
    version: int


class SessionPage(BaseModel):
    items: list[SessionRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same filters and sort) to get the next page; "
        "null on the last page."
    )


class SessionChange(SessionRead):
    """A session created or changed: the client stores it (an upsert by id)."""

    # `deleted` is always sent: required in the response schema, so clients can branch on it.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    deleted: Literal[False] = False


class SessionTombstone(BaseModel):
    """A session deleted, or one the caller may no longer see: the client drops its copy."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )

    id: int
    deleted_at: UtcDateTime | None = Field(
        description="When it was deleted; null when it still exists but is no longer visible to "
        "the caller (an anonymous client, when a session stops being accepted or confirmed)."
    )
    last_modified_at: UtcDateTime
    version: int
    deleted: Literal[True] = True


class ChangesPage(BaseModel):
    # A plain union, no OpenAPI discriminator: `deleted` is a boolean, and discriminators
    # name string values; `deleted` being const false or true keeps oneOf unambiguous anyway.
    items: list[SessionChange | SessionTombstone] = Field(
        description="Changes in the order they became final, oldest first."
    )
    next_token: str = Field(
        description="Pass as `since` in the next poll. A page shorter than `limit` means the "
        "client is up to date for now."
    )


class StateTables(BaseModel):
    """The session workflow: who may move a session from which state to which."""

    states: list[State]
    public_states: list[State] = Field(description="The states anonymous clients can see.")
    speaker_create_states: list[State] = Field(
        description="The states a session may be created in by someone not organising its event."
    )
    speaker: dict[State, list[State]] = Field(description="state -> states its speaker may set.")
    organizer: dict[State, list[State]] = Field(
        description="state -> states an organiser of its event may set."
    )
