import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import orm
from starlette.convertors import Convertor, register_url_convertor

from service import idempotency, policy
from service.auth import (
    CREATE_AUTH_RESPONSES,
    LIST_AUTH_RESPONSES,
    MALFORMED_AUTHORIZATION,
    NO_AUTHENTICATION,
    OPTIONAL_BEARER,
    READ_AUTH_RESPONSES,
    WRITE_AUTH_RESPONSES,
    Reader,
    Writer,
)
from service.errors import (
    BadRequest,
    ChangeInProgress,
    InvalidInput,
    NotFound,
)
from service.idempotency import IdempotencyKeys, KeyAlreadyUsed, fingerprint, idempotency_key
from service.inputs import BODY_MEDIA_TYPES, StrictInputRoute
from service.models import USER_ID_MAX, Session
from service.openapi import (
    PROBLEMS,
    header,
    merge_responses,
    operation_id,
    problem_response,
    problems,
)
from service.pagination import (
    FEED_TOKEN,
    INT4_MAX,
    INT8_MAX,
    LIST_CURSOR,
    SORT_PATTERN,
    TOKEN_FORMAT,
    InvalidPositionToken,
    InvalidSort,
    SortKey,
    TokenSigner,
    decode_position,
    encode_position,
    parse_sort,
    query_fingerprint,
)
from service.policy import Principal
from service.preconditions import (
    COLLECTION_PRECONDITION_HEADERS,
    COLLECTION_READ_RESPONSES,
    CREATE_PRECONDITION_RESPONSES,
    CREATE_RESPONSES,
    DELETE_RESPONSES,
    READ_PRECONDITION_HEADERS,
    READ_RESPONSES,
    UPDATE_RESPONSES,
    WRITE_PRECONDITION_HEADERS,
    check_collection_write,
    check_write,
    collection_not_modified,
    not_modified_or_none,
    read_preconditions,
    representation_headers,
    write_preconditions,
)
from service.repository import (
    FeedPosition,
    SessionFilter,
    SessionReads,
    SessionRepository,
    StoredSession,
    keyset_position,
)
from service.schemas import (
    NO_NUL,
    AudienceLevel,
    ChangesPage,
    InputDateTime,
    Language,
    SessionCreate,
    SessionPage,
    SessionRead,
    SessionUpdate,
    State,
    StateTables,
    change_content,
    dump_json,
    no_nul,
    session_content,
    tombstone_content,
)
from service.transactions import read_connection, unit_of_work

Handler = TypeVar("Handler", bound=Callable[..., Any])
SessionT = TypeVar("SessionT", bound=policy.SessionFacts)
ResultT = TypeVar("ResultT")

# Every operation here validates its input, and refuses a body over MAX_BODY_SIZE whatever the
# method; all but GET /sessions/states need the database (503: DATABASE below).
router = APIRouter(
    prefix="/sessions",
    tags=["sessions"],
    route_class=StrictInputRoute,
    responses=problems(413, 422),
    generate_unique_id_function=operation_id,
)


_CONVERTOR = re.compile(r":\w+}")  # "{session_id:digits}" is "{session_id}" in the spec


def get_and_head(
    path: str, *, head_summary: str, head_description: str, **options: Any
) -> Callable[[Handler], Handler]:
    """Declare `path` for GET and for HEAD with one handler: FastAPI does not answer HEAD for a
    GET route, and RFC 9110 (9.1) asks it of every resource that answers GET. HEAD answers what
    GET would, and the server sends no body."""

    def declare(handler: Handler) -> Handler:
        router.get(path, **options)(handler)
        get_path = router.prefix + _CONVERTOR.sub("}", path)
        head_options = options | {
            "summary": head_summary,
            "description": f"The status and headers of GET {get_path}, without its body.\n\n"
            + inspect.cleandoc(handler.__doc__ or ""),
            "response_description": head_description,
        }
        return router.head(path, **head_options)(handler)

    return declare


class Digits(Convertor[str]):
    """`{name:digits}`: a path segment of digits, left for the route's int parameter to parse.

    Starlette's `{name:int}` parses it while routing, where more than 4,300 digits raise
    (CPython's limit on int()) and answer 500; as the parameter, they are a 422 like any id out
    of range. No leading zero: a session has one URL (/sessions/3, never /sessions/03 as well,
    which a cache would keep as another resource).
    """

    regex = "0|[1-9][0-9]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("digits", Digits())

# Routes say {session_id:digits}: only digits match, so /sessions/changes is never a session id
# (PATCH /sessions/changes is a 405, as the spec's concrete path says), and /sessions/abc a 404.
SessionId = Annotated[int, Path(ge=1, le=INT4_MAX, description="The session's id.")]
# The spec names only the precise media type: documenting application/json as well (which is
# accepted all the same) makes openapi-python-client 0.29 generate code that does not import
# (its open issues #1451 and #1276: several media types for one body).
MergePatch = Annotated[SessionUpdate, Body(media_type="application/merge-patch+json")]
# Documents the syntax parse_sort reads (it gives the errors, naming the bad key).
SortValue = Annotated[str, Field(json_schema_extra={"pattern": SORT_PATTERN})]
SearchText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul), NO_NUL]
UserId = Annotated[str, Field(min_length=1, max_length=USER_ID_MAX), AfterValidator(no_nul), NO_NUL]


# An integer in the query as the spec's `type: integer` has it: digits, perhaps after a minus,
# perhaps with a fraction of zeros (JSON Schema's integer is a number whose fraction is zero:
# "10.0" is 10, as 10.0 is in a body). pydantic's lax mode would also read " 10 ", "+10" and
# "1_0" as 10. Annotated after the parameter's bounds: before them, the spec would get them as
# "ge" and "le", not minimum and maximum.
_QUERY_INTEGER = re.compile(r"-?[0-9]+(?:\.0+)?")


def _query_integer(value: object) -> object:
    if isinstance(value, str) and not _QUERY_INTEGER.fullmatch(value):
        raise PydanticCustomError(
            "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        )
    return value


QueryInteger = BeforeValidator(_query_integer)


def id_filter(description: str) -> Any:
    """An optional query parameter that is one of a session's ids (event_id, track_id...), as a
    handler's parameter or a field of a model of them."""
    return Query(ge=1, le=INT4_MAX, description=description)


DATABASE = problems(503)
# The list's: a search (q, or a list without event_id or creator_id) also waits for one of the
# search slots (SearchesBusy).
LIST_DATABASE = problem_response(
    503,
    f"{PROBLEMS[503]} A 503 of type `urn:sessions-service:problem:searches-busy`: too many "
    "searches (`q`, or lists without `event_id` or `creator_id` but an admin's unfiltered one) "
    "are running at once; retry after `Retry-After` seconds.",
)
# The change feed's: without event_id, but for an admin or an anonymous caller, a search too.
FEED_DATABASE = problem_response(
    503,
    f"{PROBLEMS[503]} A 503 of type `urn:sessions-service:problem:searches-busy`: too many "
    "searches (the feed without `event_id` of a signed-in caller who is not an admin, lists "
    "with `q` or without `event_id` or `creator_id`) are running at once; retry after "
    "`Retry-After` seconds.",
)
# A write that waited DB_LOCK_TIMEOUT for a lock another one holds (ChangeInProgress).
CHANGE_IN_PROGRESS = problems(409)
# A body sent as another media type is refused before it is read (text/plain, a form, a JSON
# Patch), naming what is accepted; one sent in a content coding (gzip), naming identity; one
# sent in a transfer coding other than chunked, 501.
_UNSUPPORTED_BODY = {
    method: merge_responses(
        problem_response(
            415,
            headers={
                name: header(
                    f"{', '.join(BODY_MEDIA_TYPES[method])}: what the body may be sent as (on a "
                    "415 for the media type)."
                ),
                "Accept-Encoding": header(
                    "identity: the body must not be content-coded (on a 415 for a "
                    "Content-Encoding)."
                ),
            },
        ),
        problems(501),
    )
    for method, name in (("POST", "Accept"), ("PATCH", "Accept-Patch"))
}

# A page has no validator to revalidate with, and holds what this caller may see: never stored.
PAGE_CACHE_CONTROL = {"Cache-Control": "no-store"}
# A 404 is never stored either, for reasons of its own (_visible_or_404).
NOT_FOUND_CACHE_CONTROL = {"Cache-Control": "no-store"}
# The workflow changes only with a release, but then at once: a cache must ask again before
# each use (without it, shared caches kept it for minutes by heuristic, and front ends offered
# transitions the service then refused).
WORKFLOW_CACHE_CONTROL = {"Cache-Control": "no-cache"}
_NO_STORE = {
    "Cache-Control": header("no-store: a page is never stored by a cache.") | {"required": True}
}
LIST_RESPONSES = merge_responses(
    {
        200: {
            "headers": {
                "Link": header('The next page, `<url>; rel="next"`; absent on the last page.'),
                **_NO_STORE,
            }
        },
        304: {"headers": _NO_STORE},
    },
    COLLECTION_READ_RESPONSES,
    problem_response(
        400,
        "The cursor was altered, signed with another secret, or issued for other filters or "
        "another sort order (`parameter`: cursor); or If-Match or If-None-Match is malformed "
        f"(`header`); or {MALFORMED_AUTHORIZATION}.",
    ),
)
CHANGES_RESPONSES = merge_responses(
    {200: {"headers": _NO_STORE}, 304: {"headers": _NO_STORE}},
    COLLECTION_READ_RESPONSES,
    problem_response(
        400,
        "The token was altered, signed with another secret, issued for another event_id, or "
        "issued by another database or by this one before a restore: start again without since "
        "(`parameter`: since); or If-Match or If-None-Match is malformed (`header`); or "
        f"{MALFORMED_AUTHORIZATION}.",
    ),
)
# GET and DELETE of a session: their precondition headers' 400 and authentication's.
_MALFORMED_HEADERS = problem_response(
    400, f"If-Match or If-None-Match is malformed; or {MALFORMED_AUTHORIZATION}."
)


async def get_signer(request: Request) -> TokenSigner:
    """The app's signer of cursors and change-feed tokens (service.main.configure builds it).

    `async` though it never waits: FastAPI runs a plain `def` dependency in its thread pool."""
    signer: TokenSigner = request.app.state.signer
    return signer


Signer = Annotated[TokenSigner, Depends(get_signer)]


def _bad_cursor(parameter: str, reason: str) -> BadRequest:
    noun = "since token" if parameter == "since" else parameter
    return BadRequest(f"The {noun} {reason}; start again without it.", parameter=parameter)


def _read_token(signer: TokenSigner, kind: str, parameter: str, token: str) -> dict[str, Any]:
    try:
        data = signer.verify(kind, token)
    except InvalidPositionToken as exc:
        raise _bad_cursor(parameter, str(exc)) from None
    if data.get("format") != TOKEN_FORMAT:
        raise _bad_cursor(parameter, "is from an older version of the service")
    return data


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    # The handlers render their JSON themselves, in the shape response_model documents (see
    # dump_json): FastAPI then skips validating and re-serializing it through the model.
    return Response(dump_json(content), status_code, headers, media_type="application/json")


def _visible_or_404(session: SessionT | None, session_id: int, principal: Principal) -> SessionT:
    """The session if this principal may see it: one they may not see does not exist for them.

    The 404 is never stored: a 404 is cacheable by default (RFC 9111 4.2.2), and a cache would
    go on answering it once the session is created or becomes visible, where its 200 is
    revalidated on every use (no-cache).
    """
    if session is None or not policy.can_see(principal, session):
        raise NotFound(f"There is no session {session_id}.", headers=NOT_FOUND_CACHE_CONTROL)
    return session


def _lock_or_refuse(
    repository: SessionRepository,
    session_id: int,
    principal: Principal,
    check_standing: Callable[[Principal, Session], None],
) -> Session:
    """The session, locked for a write, if the principal may change it at all (check_standing:
    policy.check_may_change or check_delete, which raise their 403).

    Only a session they may change is locked or waited for: another may not see it (404) or
    may see it but not change it (403), answered at once while another change holds it, as
    when none does. A session that another change made theirs between the two reads is one
    that change holds.
    """
    session = repository.lock(session_id, policy.changeable(principal))
    if session is None:
        found = _visible_or_404(repository.find(session_id), session_id, principal)
        check_standing(principal, found)
        raise ChangeInProgress.of_session()
    check_standing(principal, session)
    return session


async def _write_of_one_session(
    request: Request, session_id: int, principal: Principal, write: Callable[[orm.Session], ResultT]
) -> ResultT:
    """The unit of work of a PATCH or DELETE, which locks the session first (_lock_or_refuse).

    Its lock not granted in time, the session is read again without it, on a connection of its
    own (the refusal aborted the write's transaction): where DDL (a migration) holds the whole
    table, that read waits for it too, and the request is the 503 of any other on such a table.
    Else it is the 409 of a change in progress, but for a caller who may no longer see the
    session (the change in progress hid it): "another change of this session" would tell them
    that it exists. A write granted its lock pays nothing for this.
    """
    try:
        return await unit_of_work(request.app, write)
    except ChangeInProgress:
        async with read_connection(request.app) as conn:
            stored = await SessionReads(conn).get(session_id)
        _visible_or_404(stored, session_id, principal)
        raise


# The new session's id feeds the operations on one session (OpenAPI links).
_CREATED_SESSION_LINKS = {
    name: {"operationId": name, "parameters": {"session_id": "$response.body#/id"}}
    for name in ("getSession", "updateSession", "deleteSession")
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionRead,
    summary="Create a session",
    response_description="The session as stored.",
    responses=merge_responses(
        CREATE_RESPONSES,
        CREATE_AUTH_RESPONSES,
        DATABASE,
        problem_response(
            409,
            f"A request with this {idempotency.HEADER} is still in progress (type "
            "`urn:sessions-service:problem:change-in-progress`); nothing was changed: retry after "
            "`Retry-After` seconds to get its answer.",
        ),
        _UNSUPPORTED_BODY["POST"],
        problem_response(
            400,
            f"{idempotency.HEADER}, If-Match or If-None-Match is malformed, or "
            f"{idempotency.HEADER} or Content-Type is sent twice; or {MALFORMED_AUTHORIZATION}.",
        ),
        CREATE_PRECONDITION_RESPONSES,
        {
            201: {
                "headers": {
                    "Location": header("The new session's URL.", format="uri-reference")
                    | {"required": True}
                },
                "links": _CREATED_SESSION_LINKS,
            }
        },
    ),
    openapi_extra={"parameters": [idempotency.PARAMETER, *COLLECTION_PRECONDITION_HEADERS]},
)
async def create_session(body: SessionCreate, request: Request, principal: Writer) -> Response:
    """Create a session as its speaker; its id, timestamps and version are set by the server.

    With an Idempotency-Key, a retry gets the first request's answer and creates nothing more.
    """
    key = idempotency_key(request)
    values = body.model_dump()
    policy.check_create(principal, values)
    caller = principal.user_id
    assert caller is not None  # a Writer
    body_fingerprint = fingerprint(body.model_dump(mode="json")) if key else b""

    def create(db: orm.Session) -> Response:
        answer = _created(SessionRepository(db).create(values, creator_id=caller))
        if key is not None:
            IdempotencyKeys(db).claim(caller, key, body_fingerprint, answer)
        # The collection's preconditions last (a 412 rolls the creation back): a key already
        # used answers first, with its 422 or its replay (RFC 9110 13.2.1).
        check_collection_write(request)
        return answer

    try:
        return await unit_of_work(request.app, create)
    except KeyAlreadyUsed as used:  # this attempt's session is rolled back
        answer = used.replay(body_fingerprint)
        check_collection_write(request)
        return answer
    except ChangeInProgress:  # the key's claim, refused its lock in time
        async with read_connection(request.app) as conn:
            await idempotency.wait_for_the_keys_table(conn)
        raise


def _created(session: Session) -> Response:
    headers = {"Location": f"{router.prefix}/{session.id}", **representation_headers(session)}
    return json_response(session_content(session), status.HTTP_201_CREATED, headers)


class ListParameters(BaseModel):
    """GET /sessions' query parameters: each one a parameter in the spec."""

    event_id: Annotated[int | None, id_filter("Only sessions of this event."), QueryInteger] = None
    state: Annotated[
        list[State] | None,
        Field(
            description="Only sessions in one of these states; repeat it for several: "
            "state=accepted&state=confirmed."
        ),
    ] = None
    track_id: Annotated[int | None, id_filter("Only sessions in this track."), QueryInteger] = None
    session_type_id: Annotated[
        int | None, id_filter("Only sessions of this type."), QueryInteger
    ] = None
    microlocation_id: Annotated[
        int | None, id_filter("Only sessions held in this room (microlocation)."), QueryInteger
    ] = None
    level: Annotated[
        AudienceLevel | None, Field(description="Only sessions for this level of audience.")
    ] = None
    creator_id: Annotated[
        UserId | None,
        Field(
            description="Only sessions created by this user (the `sub` of their token): a "
            "speaker's own, with their `sub`."
        ),
    ] = None
    language: Annotated[
        Language | None, Field(description="Only sessions in this language, ignoring case.")
    ] = None
    starts_after: Annotated[
        InputDateTime | None, Field(description="RFC 3339; starts_at at or after it.")
    ] = None
    starts_before: Annotated[
        InputDateTime | None, Field(description="RFC 3339; starts_at before it.")
    ] = None
    modified_since: Annotated[
        InputDateTime | None,
        Field(
            description="RFC 3339; last_modified_at at or after it. Not a way to sync: changes "
            "commit in another order than they are stamped, so a poll from the latest stamp seen "
            "can miss one for good; follow GET /sessions/changes instead."
        ),
    ] = None
    q: Annotated[
        SearchText | None,
        Field(
            description="Case-insensitive text in title, subtitle or short_abstract (in "
            "short_abstract's stored, sanitised HTML: & is &amp;)."
        ),
    ] = None
    sort: Annotated[
        list[SortValue] | None,
        Field(
            description="Sort keys, comma-separated or repeated, each optionally prefixed by "
            "'-' (descending): id, title, starts_at, ends_at, created_at, last_modified_at. "
            "id is the final tie-breaker; sessions without starts_at or ends_at come last."
        ),
    ] = None
    limit: Annotated[
        int,
        Field(ge=1, le=100, description="The most sessions a page holds (1 to 100)."),
        QueryInteger,
    ] = 20
    cursor: Annotated[
        str | None,
        Field(
            max_length=4096,
            description="The next_cursor of the previous page (its Link header has it too), with "
            "the same filters and sort; only limit may change. Omit for the first page. Opaque "
            "and signed: one not issued for this query is a 400.",
        ),
    ] = None

    def session_filter(self) -> SessionFilter:
        return SessionFilter(
            event_id=self.event_id,
            states=tuple(sorted(set(self.state or ()))),
            track_id=self.track_id,
            session_type_id=self.session_type_id,
            microlocation_id=self.microlocation_id,
            level=self.level,
            creator_id=self.creator_id,
            language=self.language,
            starts_after=self.starts_after,
            starts_before=self.starts_before,
            modified_since=self.modified_since,
            q=self.q,
        )


@get_and_head(
    "",
    response_model=SessionPage,
    summary="List sessions",
    response_description="A page of sessions.",
    head_summary="Get the headers of a page of sessions",
    head_description="A page's headers, without a body.",
    responses=merge_responses(LIST_RESPONSES, LIST_AUTH_RESPONSES, LIST_DATABASE),
    openapi_extra=OPTIONAL_BEARER | {"parameters": COLLECTION_PRECONDITION_HEADERS},
)
async def list_sessions(
    request: Request,
    signer: Signer,
    principal: Reader,
    parameters: Annotated[ListParameters, Query()],
) -> Response:
    """List the sessions the caller may see, filtered and sorted, a page at a time (keyset
    pagination)."""
    try:
        sort_keys = parse_sort(parameters.sort or ["id"])
    except InvalidSort as exc:
        raise InvalidInput(("query", "sort"), str(exc)) from None
    filters = parameters.session_filter()
    # The cursor is bound to the query it continues: with other filters or another order its
    # position would silently skip or repeat rows.
    bound_to = query_fingerprint({"sort": [str(key) for key in sort_keys], **filters.criteria()})
    after = (
        _read_cursor(signer, parameters.cursor, sort_keys, bound_to) if parameters.cursor else None
    )
    if not_modified := collection_not_modified(request, PAGE_CACHE_CONTROL):
        return not_modified
    visible = policy.visibility(principal)
    rows: Sequence[StoredSession] = []
    # Filters no session this caller may see can pass (anonymous, state=draft) need no query,
    # nor a turn for a connection.
    if filters.may_match(visible):
        # One row more than the page tells whether another page follows.
        search = filters.may_read_the_table(visible)
        async with read_connection(request.app, search=search) as conn:
            rows = await SessionReads(conn).page(
                filters, sort_keys, after=after, limit=parameters.limit + 1, visible=visible
            )
    page = rows[: parameters.limit]
    next_cursor = None
    headers = dict(PAGE_CACHE_CONTROL)
    if len(rows) > parameters.limit:
        position = encode_position(keyset_position(page[-1], sort_keys))
        next_cursor = signer.sign(
            LIST_CURSOR, {"format": TOKEN_FORMAT, "query": bound_to, "after": position}
        )
        # Relative (RFC 8288 resolves it against the request's URL), as Location is: the Host
        # header is the client's to send, not a name this service can vouch for.
        next_url = request.url.include_query_params(cursor=next_cursor)
        headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    items = [session_content(row) for row in page]
    return json_response({"items": items, "next_cursor": next_cursor}, headers=headers)


def _read_cursor(
    signer: TokenSigner, cursor: str, sort_keys: tuple[SortKey, ...], bound_to: str
) -> list[Any]:
    data = _read_token(signer, LIST_CURSOR, "cursor", cursor)
    if data.get("query") != bound_to:
        raise _bad_cursor("cursor", "was issued for other filters or another sort order")
    try:
        return decode_position(sort_keys, data.get("after"))
    except InvalidPositionToken as exc:
        raise _bad_cursor("cursor", str(exc)) from None


@get_and_head(
    "/changes",
    response_model=ChangesPage,
    summary="List changes since a token",
    response_description="The changes, and the token for the next poll.",
    head_summary="Get the headers of a page of changes",
    head_description="The headers of the changes' page, without a body.",
    responses=merge_responses(CHANGES_RESPONSES, LIST_AUTH_RESPONSES, FEED_DATABASE),
    openapi_extra=OPTIONAL_BEARER | {"parameters": COLLECTION_PRECONDITION_HEADERS},
)
async def list_session_changes(
    request: Request,
    signer: Signer,
    principal: Reader,
    since: Annotated[
        str | None,
        Query(max_length=1000, description="The next_token of the previous poll; omit to start."),
    ] = None,
    # At most 200: a session carries up to three 10,000-character texts.
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=200,
            description="The most changes a page holds (1 to 200); a page with fewer means the "
            "client is up to date for now.",
        ),
        QueryInteger,
    ] = 100,
    event_id: Annotated[
        int | None,
        id_filter(
            "Only the changes of this event's sessions, and a tombstone for each session that "
            "moved to another event; a since token is bound to the event_id it was issued with."
        ),
        QueryInteger,
    ] = None,
) -> Response:
    """Sessions created, changed or deleted since a token, oldest change first; deletions,
    sessions the caller may no longer see (anonymous: all but accepted and confirmed) and, in
    the feed of one event, sessions moved to another event, as tombstones. A session the caller
    may not see and that has never been public is left out."""
    after, issued_in = _read_feed_token(signer, since, event_id) if since else (None, {})
    visible = policy.feed_visibility(principal)
    # Without event_id, the feed of a signed-in caller who may see some drafts (their own, their
    # events') but not all reads the order of all changes past every one it may not see: as
    # many as there are, like a list's filter that no index serves, so it is a search too. An
    # anonymous caller's reads the indexes of what has been public (migration 0008).
    search = event_id is None and (visible.creator_id is not None or bool(visible.event_ids))
    async with read_connection(request.app, search=search) as conn:
        rows, horizon = await SessionReads(conn).changes(
            event_id=event_id, after=after, limit=limit, visible=visible
        )
    if after and not horizon.may_have_issued(after, issued_in):
        raise _bad_cursor(
            "since", "was issued by another database, or by this one before a restore"
        )
    if not_modified := collection_not_modified(request, PAGE_CACHE_CONTROL):
        return not_modified
    # Every row of the caller's feed is served, those it may no longer see as tombstones: a
    # session that stops being visible must reach the client's copy. (A position is a place in
    # one order of all changes, whoever's feed it was issued in.)
    items = [
        change_content(session)
        if session.deleted_at is None
        and not session.departed
        and policy.can_see(principal, session)
        else tombstone_content(session)
        for session in rows
    ]
    served = (rows[-1].txid, rows[-1].id) if rows else after or (0, 0)
    position = horizon.next_position(served, page_full=len(rows) == limit)
    token = signer.sign(
        FEED_TOKEN,
        {
            "format": TOKEN_FORMAT,
            "cluster": horizon.cluster,
            "database": horizon.database,
            "event_id": event_id,
            "txid": position[0],
            "id": position[1],
        },
    )
    return json_response({"items": items, "next_token": token}, headers=PAGE_CACHE_CONTROL)


def _read_feed_token(
    signer: TokenSigner, since: str, event_id: int | None
) -> tuple[FeedPosition, dict[str, object]]:
    """The position in a feed token, and where it was issued: the history and the database
    (FeedHorizon.cluster and .database) that it names."""
    data = _read_token(signer, FEED_TOKEN, "since", since)
    if data.get("event_id") != event_id:
        raise _bad_cursor("since", "was issued for another event_id")
    txid, session_id = data.get("txid"), data.get("id")
    issued_in: dict[str, object] = {k: data[k] for k in ("cluster", "database") if k in data}
    if (
        type(txid) is not int
        or type(session_id) is not int
        or not 0 <= txid <= INT8_MAX
        or not 0 <= session_id <= INT4_MAX
        or not isinstance(issued_in.get("cluster", ""), str)
        or type(issued_in.get("database", 0)) is not int
    ):
        raise _bad_cursor("since", "is not one this service issued")
    return (txid, session_id), issued_in


@get_and_head(
    "/states",
    response_model=StateTables,
    summary="Get the session workflow",
    response_description="The states and their transitions.",
    head_summary="Get the session workflow's headers",
    head_description="The workflow's headers, without a body.",
    responses=merge_responses(
        {
            200: {
                "headers": {
                    "Cache-Control": header(
                        "no-cache: a copy may be stored, and must be fetched again before each "
                        "use (the workflow changes with a release)."
                    )
                    | {"required": True}
                }
            }
        },
        problem_response(400, "If-Match or If-None-Match is malformed."),
        COLLECTION_READ_RESPONSES,
    ),
    openapi_extra=NO_AUTHENTICATION | {"parameters": COLLECTION_PRECONDITION_HEADERS},
)
async def get_state_tables(request: Request, response: Response) -> Response | dict[str, object]:
    """The session workflow: the states, and who may move a session from which to which."""
    if not_modified := collection_not_modified(request, WORKFLOW_CACHE_CONTROL):
        return not_modified
    response.headers.update(WORKFLOW_CACHE_CONTROL)
    return policy.state_tables()


@get_and_head(
    "/{session_id:digits}",
    response_model=SessionRead,
    summary="Get a session",
    response_description="The session.",
    head_summary="Get a session's headers",
    head_description="The session's headers, without a body.",
    responses=merge_responses(READ_RESPONSES, READ_AUTH_RESPONSES, DATABASE, _MALFORMED_HEADERS),
    openapi_extra=OPTIONAL_BEARER | {"parameters": READ_PRECONDITION_HEADERS},
)
async def get_session(
    session_id: SessionId,
    request: Request,
    principal: Reader,
) -> Response:
    """Get one session; anonymous clients see accepted and confirmed sessions only.

    If-None-Match or If-Modified-Since make it a cheap revalidation (304).
    """
    async with read_connection(request.app) as conn:
        stored = await SessionReads(conn).get(session_id)
    session = _visible_or_404(stored, session_id, principal)
    # Read once the session is found: a 404 ignores the preconditions, a malformed one too.
    preconditions = read_preconditions(request)
    if not_modified := not_modified_or_none(preconditions, request.method, session):
        return not_modified
    return json_response(session_content(session), headers=representation_headers(session))


@router.patch(
    "/{session_id:digits}",
    response_model=SessionRead,
    summary="Change a session",
    response_description="The session as stored after the change.",
    responses=merge_responses(
        UPDATE_RESPONSES,
        WRITE_AUTH_RESPONSES,
        _UNSUPPORTED_BODY["PATCH"],
        problem_response(
            400,
            "If-Match or If-None-Match is malformed, or Content-Type is sent twice; or "
            f"{MALFORMED_AUTHORIZATION}.",
        ),
        DATABASE,
        CHANGE_IN_PROGRESS,
    ),
    openapi_extra={"parameters": WRITE_PRECONDITION_HEADERS},
)
async def update_session(
    session_id: SessionId,
    body: MergePatch,
    request: Request,
    principal: Writer,
) -> Response:
    """Change a session with a JSON Merge Patch (RFC 7396); null clears a field.

    Sent as application/merge-patch+json or as application/json.
    """
    patch = body.model_dump()

    def change(db: orm.Session) -> Session:
        repository = SessionRepository(db)
        # Who may change it at all is decided before the preconditions (RFC 9110 13.2.1), what
        # the patch changes after them. The headers are read only then: a 404 or 403 ignores
        # them, even malformed.
        session = _lock_or_refuse(repository, session_id, principal, policy.check_may_change)
        check_write(write_preconditions(request), "PATCH", session)
        changes = repository.real_changes(session, patch)
        policy.check_changes(principal, session, changes)
        return repository.update(session, changes)

    session = await _write_of_one_session(request, session_id, principal, change)
    return json_response(session_content(session), headers=representation_headers(session))


@router.delete(
    "/{session_id:digits}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a session",
    response_description="Deleted.",
    responses=merge_responses(
        DELETE_RESPONSES, WRITE_AUTH_RESPONSES, DATABASE, CHANGE_IN_PROGRESS, _MALFORMED_HEADERS
    ),
    openapi_extra={"parameters": WRITE_PRECONDITION_HEADERS},
)
async def delete_session(
    session_id: SessionId,
    request: Request,
    principal: Writer,
) -> Response:
    """Delete a session; it is no longer visible through the API."""

    def delete(db: orm.Session) -> None:
        repository = SessionRepository(db)
        session = _lock_or_refuse(repository, session_id, principal, policy.check_delete)
        check_write(write_preconditions(request), "DELETE", session)
        repository.delete(session)

    await _write_of_one_session(request, session_id, principal, delete)
    # Built here: FastAPI's own 204 would say its body (none) is application/json.
    return Response(status_code=status.HTTP_204_NO_CONTENT)
