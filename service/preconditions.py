"""Conditional requests on the HTTP layer: the precondition headers a route accepts, the
validators (ETag, Last-Modified, Date) its responses carry, 304, 412 and 428.

The rules themselves are in service.conditional; this module binds them to FastAPI.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response

from service.conditional import (
    ENTITY_TAGS_PATTERN,
    EntityTag,
    MalformedHeader,
    Outcome,
    Preconditions,
    evaluate,
    format_http_date,
    http_date,
    last_modified,
    parse_preconditions,
)
from service.errors import BadRequest, PreconditionFailed, PreconditionRequired
from service.models import Versioned
from service.openapi import Responses, header, header_parameter, problem_response
from service.settings import Settings

# Clients and caches may store a session, but must revalidate it (If-None-Match) before each use.
CACHE_CONTROL = "no-cache"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def entity_tag(session: Versioned) -> EntityTag:
    """Strong: the version, then last_modified_at in microseconds since the epoch, in
    hexadecimal: "3-661e00e434a40".

    Every real change bumps the version, and nothing else varies, so the version alone tells
    apart the representations of one history of the data. The stamp tells apart those of two: a
    database restored to an earlier point gives a version it had lost to a different change, made
    later, so a client holding the lost change's tag gets neither 304 nor past If-Match.
    """
    micros = (session.last_modified_at - _EPOCH) // _MICROSECOND
    return EntityTag(f"{session.version}-{micros:x}")


def version_tag(session: Versioned) -> EntityTag:
    """The version alone, "3": the entity tag of releases before 2026-12-05, which clients may
    hold or build from `version`. It still matches, without the stamp's safety across a restore."""
    return EntityTag(str(session.version))


def validator_headers(session: Versioned, now: datetime) -> dict[str, str]:
    """What a 200 and a 304 about this session both carry (RFC 9110 15.4.5).

    Date is set here, from the same clock reading that caps Last-Modified, so that Last-Modified
    is never later than Date. Vary (Authorization: who may see the session) is set for every
    response of the sessions routes by service.auth.VaryByAuthorization.
    """
    return {
        "ETag": str(entity_tag(session)),
        "Cache-Control": CACHE_CONTROL,
        "Date": http_date(int(now.timestamp())),
    }


def representation_headers(session: Versioned) -> dict[str, str]:
    """The validators of a response that carries the session's representation."""
    now = datetime.now(UTC)
    modified = format_http_date(last_modified(session.last_modified_at, now))
    return validator_headers(session, now) | {"Last-Modified": modified}


def _parse(request: Request) -> Preconditions:
    headers = request.headers
    try:
        return parse_preconditions(
            if_match=headers.getlist("if-match"),
            if_none_match=headers.getlist("if-none-match"),
            if_modified_since=headers.getlist("if-modified-since"),
            if_unmodified_since=headers.getlist("if-unmodified-since"),
        )
    except MalformedHeader as exc:
        raise BadRequest(
            f"{exc.field} must be * or a comma-separated list of entity tags, such as "
            '"3-661e00e434a40" (with the quotes, as ETag gives it) or W/"3-661e00e434a40".',
            header=exc.field,
        ) from None


IF_MATCH = header_parameter(
    "If-Match",
    "Proceed only if the session's ETag is one of these (strong comparison), as the ETag "
    'header gave it: `"3-661e00e434a40"`, a list or `*`. Otherwise 412 and nothing changes.',
    pattern=ENTITY_TAGS_PATTERN,
)
IF_UNMODIFIED_SINCE = header_parameter(
    "If-Unmodified-Since",
    "Only without If-Match: proceed only if the session has not changed after this "
    "HTTP-date, else 412. Dates have whole seconds, so changes within one second go unseen: "
    "If-Match is the reliable precondition. An invalid date is ignored.",
)
IF_NONE_MATCH = header_parameter(
    "If-None-Match",
    "If the session's ETag is one of these (weak comparison), or `*`: 304 on GET "
    "and HEAD, 412 on other methods.",
    pattern=ENTITY_TAGS_PATTERN,
)
IF_MODIFIED_SINCE = header_parameter(
    "If-Modified-Since",
    "GET and HEAD, only without If-None-Match: 304 if the session has not changed "
    "after this HTTP-date. Dates have whole seconds, so a change later in the same second goes "
    "unseen: If-None-Match is the reliable revalidation. An invalid date is ignored.",
)
# For the operations' openapi_extra. The headers are documented there rather than declared as
# Header parameters, which FastAPI would validate on every request only to hand over the last
# line of each: the values are read from request.headers, which keeps every line of a field
# sent on several lines, and parsed (and refused with 400) by parse_preconditions.
READ_PRECONDITION_HEADERS = [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_MATCH, IF_UNMODIFIED_SINCE]
WRITE_PRECONDITION_HEADERS = [IF_MATCH, IF_UNMODIFIED_SINCE, IF_NONE_MATCH]
# The same on a resource without validators (collection_not_modified, check_collection_write).
COLLECTION_PRECONDITION_HEADERS = [
    header_parameter(
        "If-None-Match",
        "`*`: 304 on GET and HEAD, 412 on POST (the resource exists). It has no entity tag, "
        "so a list of entity tags matches nothing and the request is served.",
        pattern=ENTITY_TAGS_PATTERN,
    ),
    header_parameter(
        "If-Match",
        "`*` holds (the resource exists). It has no entity tag, so a list of entity tags "
        "matches nothing: 412.",
        pattern=ENTITY_TAGS_PATTERN,
    ),
]


# Called by the handlers rather than declared as dependencies: FastAPI's solving of a
# dependency costs more than parsing these headers (bench/README.md, the sixth pass), and
# nothing in the spec comes from them. The handlers read them where they evaluate them, once the
# session is found and the caller may change it: a malformed header is then a 400 only where the
# request is otherwise servable (401, 404, 403 and 422 come first), as RFC 9110 13.2.1 orders
# preconditions.
def read_preconditions(request: Request) -> Preconditions:
    """The precondition headers of a read; a malformed one is a 400."""
    return _parse(request)


@dataclass(frozen=True)
class WriteConditions:
    preconditions: Preconditions
    required: bool  # the REQUIRE_PRECONDITIONS setting


def write_preconditions(request: Request) -> WriteConditions:
    """The precondition headers of a write, and whether one is required; a malformed one is a
    400."""
    settings: Settings = request.app.state.settings
    return WriteConditions(_parse(request), required=settings.require_preconditions)


def _evaluate(preconditions: Preconditions, method: str, session: Versioned) -> Outcome:
    outcome = evaluate(
        preconditions,
        method=method,
        etag=entity_tag(session),
        earlier_etag=version_tag(session),
        modified_at=session.last_modified_at,
    )
    if outcome is Outcome.PRECONDITION_FAILED:
        current = str(entity_tag(session))
        raise PreconditionFailed(
            f"Session {session.id} does not meet the request's preconditions; its current ETag "
            f"is {current}. Read it again before retrying.",
            headers={"ETag": current},
        )
    return outcome


def not_modified_or_none(
    preconditions: Preconditions, method: str, session: Versioned
) -> Response | None:
    """The 304 to send instead of the session, or None; 412 if a precondition fails."""
    if _evaluate(preconditions, method, session) is Outcome.NOT_MODIFIED:
        return Response(status_code=304, headers=validator_headers(session, datetime.now(UTC)))
    return None


def check_write(conditions: WriteConditions, method: str, session: Versioned) -> None:
    """428 or 412 unless the write may go ahead; call it with the session's row locked.

    The row lock (SELECT ... FOR UPDATE) is held until the write commits, so the state checked
    here is the state the write changes: of two writers sending the same If-Match, one gets 412.
    """
    latest = max(datetime.now(UTC), session.last_modified_at)
    if conditions.required and not conditions.preconditions.guards_write(latest):
        raise PreconditionRequired(
            f"This server accepts only conditional changes: GET /sessions/{session.id}, then "
            "repeat the request with If-Match set to the ETag of that response.",
        )
    _evaluate(conditions.preconditions, method, session)


def _check_collection(request: Request) -> Outcome:
    """RFC 9110 13.1.1-2 on a resource that exists but has no validators: a list page, the
    change feed, the workflow, or the collection a POST creates in. 412 if a precondition fails;
    a malformed one is a 400."""
    outcome = evaluate(_parse(request), method=request.method, etag=None, modified_at=None)
    if outcome is Outcome.PRECONDITION_FAILED:
        raise PreconditionFailed(
            f"{request.url.path} does not meet the request's preconditions: it has no entity "
            "tag, so If-Match holds there only as *, and it exists, so If-None-Match: * does "
            "not hold."
        )
    return outcome


def collection_not_modified(request: Request, headers: Mapping[str, str]) -> Response | None:
    """The 304 that If-None-Match: * asks of a GET or HEAD of a resource without validators,
    carrying `headers` (its 200's Cache-Control); None to serve the 200; 412 if a precondition
    fails. Call it once the request is otherwise servable (RFC 9110 13.2.1)."""
    if _check_collection(request) is Outcome.NOT_MODIFIED:
        return Response(status_code=304, headers=headers)
    return None


def check_collection_write(request: Request) -> None:
    """412 for a POST with an If-Match list or If-None-Match: * (the collection exists, and
    has no entity tag); call it in the write's transaction, which the 412 rolls back."""
    _check_collection(request)


# OpenAPI: what the operations of /sessions/{id} answer about preconditions. Each is sent with
# every response that declares it (required, so that generated clients type it as present).
ETAG_HEADER = header(
    'The session\'s entity tag, a strong validator (quoted, opaque: `"3-661e00e434a40"`); it '
    "changes with every change of the session."
) | {"required": True}
LAST_MODIFIED_HEADER = header(
    "last_modified_at as an HTTP-date, truncated to the second; never later than Date."
) | {"required": True}
CACHE_CONTROL_HEADER = header(
    "no-cache: a copy may be stored, and must be revalidated before each use."
) | {"required": True}
VALIDATOR_HEADERS = {
    "ETag": ETAG_HEADER,
    "Last-Modified": LAST_MODIFIED_HEADER,
    "Cache-Control": CACHE_CONTROL_HEADER,
}
_MALFORMED = problem_response(400, "If-Match or If-None-Match is malformed.")
_FAILED = problem_response(
    412,
    "A precondition failed; nothing changed. ETag is the session's current one.",
    headers={"ETag": ETAG_HEADER},
)
_REQUIRED = problem_response(
    428,
    "REQUIRE_PRECONDITIONS is on and the request has neither If-Match with an entity tag (* "
    "matches any version, so it cannot prevent a lost update) nor If-Unmodified-Since with a "
    "date that is not in the future (which any version meets too): read the session and send "
    "its ETag in If-Match.",
)
CREATE_RESPONSES: Responses = {201: {"headers": VALIDATOR_HEADERS}}
READ_RESPONSES: Responses = {
    200: {"headers": VALIDATOR_HEADERS},
    304: {
        "description": "Not Modified: the copy the client holds is current. No body.",
        "headers": {"ETag": ETAG_HEADER, "Cache-Control": CACHE_CONTROL_HEADER},
    },
    **_MALFORMED,
    **_FAILED,
}
UPDATE_RESPONSES: Responses = {
    200: {"headers": VALIDATOR_HEADERS},
    **_MALFORMED,
    **_FAILED,
    **_REQUIRED,
}
DELETE_RESPONSES: Responses = {**_MALFORMED, **_FAILED, **_REQUIRED}
# A list page, the change feed and the workflow have no validators (RFC 9110 13.1.1-2).
COLLECTION_READ_RESPONSES: Responses = {
    304: {
        "description": "Not Modified: If-None-Match is `*`, and the resource exists (it has no "
        "entity tag, so no other If-None-Match matches). No body."
    },
    **problem_response(
        412, "If-Match lists entity tags: this resource has none, so only `*` matches."
    ),
}
CREATE_PRECONDITION_RESPONSES: Responses = problem_response(
    412,
    "If-Match lists entity tags (the collection has none: only `*` matches), or If-None-Match "
    "is `*` (the collection exists); nothing was created.",
)
