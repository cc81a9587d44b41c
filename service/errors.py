"""Errors as RFC 9457 problem details (application/problem+json), and the handlers that render them.

No handler ever puts driver text, SQL or a stack trace into a response: a client sees a status,
a title and a sentence written for it.
"""

import asyncio
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any, Literal

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import MISSING, BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import (
    DRIVER_CONNECTION_ERRORS,
    QUERY_CANCELED,
    driver_reason,
    errors_in_chain,
    is_database_unavailable,
    is_lock_not_available,
    leave_out_row_values,
    sqlstate,
)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:sessions-service:problem:"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

logger = logging.getLogger(__name__)


# The rules a 403 names (service.policy).
ForbiddenRule = Literal[
    "speaker-create-states",
    "organizer-fields",
    "owner-only",
    "locked",
    "event-change",
    "speaker-transitions",
    "organizer-transitions",
]


class _ProblemDetail(BaseModel):
    """The members of every RFC 9457 problem detail."""

    # Examples are whole problems, on each model: a 400's members are no example of a 422.
    type: str = Field(
        description="A URI naming the kind of problem; about:blank when the status says it all."
    )
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong, in a sentence written for the client.")


class Problem(_ProblemDetail):
    """An RFC 9457 problem detail: the body of every error response but a 422's."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_BASE + "bad-request",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "The cursor is not one this service issued.",
                    "parameter": "cursor",
                }
            ]
        }
    )

    # Extension members (RFC 9457 3.2), each sent only by the problems it names.
    parameter: str | MISSING = Field(
        MISSING,
        description="400: the query parameter that cannot be used (a cursor or a since token).",
        examples=["cursor"],
    )
    header: str | MISSING = Field(
        MISSING,
        description="400: the request header that is malformed.",
        examples=["If-Match"],
    )
    rule: ForbiddenRule | MISSING = Field(
        MISSING, description="403: the rule that refuses the request (GET /sessions/states)."
    )
    from_state: str | MISSING = Field(
        MISSING, description="403 for a state change: the session's state.", examples=["draft"]
    )
    to_state: str | MISSING = Field(
        MISSING, description="403 for a state change: the state asked for.", examples=["accepted"]
    )


class FieldError(BaseModel):
    """One invalid part of a request."""

    location: list[str | int] = Field(
        description="Where: body, query, path or header, then the path to the field.",
        examples=[["body", "title"]],
    )
    message: str = Field(description="What is wrong with it.", examples=["Field required"])
    type: str = Field(description="A machine-readable kind of error.", examples=["missing"])


# A body of 1 MiB can hold some 100,000 invalid fields: listing them all would answer ten times
# what was sent.
LISTED_ERRORS_MAX = 50


class ValidationProblem(_ProblemDetail):
    """A problem detail for a request that failed validation: one entry per invalid field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_BASE + "validation-error",
                    "title": "Unprocessable Content",
                    "status": 422,
                    "detail": "The request is invalid; see errors for each field.",
                    "errors": [
                        {
                            "location": ["body", "title"],
                            "message": "Field required",
                            "type": "missing",
                        }
                    ],
                }
            ]
        }
    )

    errors: list[FieldError] = Field(
        description=f"The invalid fields; the first {LISTED_ERRORS_MAX} if there are more.",
        max_length=LISTED_ERRORS_MAX,
    )


class ServiceError(Exception):
    """An error a client can act on; each subclass is one kind of problem."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR
    slug: str | None = None  # None: the HTTP status says it all ("about:blank")

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


class BadRequest(ServiceError):
    status = HTTPStatus.BAD_REQUEST
    slug = "bad-request"


class NotFound(ServiceError):
    status = HTTPStatus.NOT_FOUND


INVALID_REQUEST = "The request is invalid; see errors for each field."
# The schedule's rule (the table's ends_after_start), told of whichever end the client sent: by
# the body's own validator, or by the table at the flush, where the other end is the stored one.
SCHEDULE_ERROR = "ends_before_start"
SCHEDULE_MESSAGES = {
    "ends_at": "must be later than starts_at",
    "starts_at": "must be earlier than ends_at",
}


class InvalidInput(ServiceError):
    """422 for one field: the same as a request validation error of that field."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    slug = "validation-error"

    def __init__(
        self, location: Sequence[str | int], message: str, *, kind: str = "value_error"
    ) -> None:
        super().__init__(
            INVALID_REQUEST,
            errors=[{"location": list(location), "message": message, "type": kind}],
        )


# What reading a body the client sent may raise, FastAPI's 400 then its cause: a body that is not
# JSON (not UTF-8, malformed, nested too deeply, not I-JSON), or a client gone before it ended.
# Anything else is a bug of the service's, a 500.
UNREADABLE_BODY = (ValueError, RecursionError, ClientDisconnect)
# nginx's status for a request whose client closed the connection before it was answered.
CLIENT_CLOSED_REQUEST = 499


class NotIJSON(ValueError):
    """A JSON body that Python's json module reads and I-JSON (RFC 7493) does not (service.inputs
    reads bodies); its text says why."""


class DuplicateMember(NotIJSON):
    """An object that names a member twice."""

    def __init__(self, name: str) -> None:
        # json.dumps: ASCII only, whatever the name holds (a lone surrogate is valid JSON).
        super().__init__(f"{json.dumps(name)} is named twice in one object.")


class NotANumber(NotIJSON):
    """NaN, Infinity or -Infinity: JavaScript's, no JSON number (RFC 8259 6)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not a JSON number.")


class TooManyMembers(ValueError):
    """An object with more members than any object of the API has: refused as it is read, where
    the schema would have listed each member it does not know (a body of 100,000 took 0.3 s of
    the event loop and 100 MB to refuse)."""

    def __init__(self, most: int) -> None:
        super().__init__(
            f"An object of the body has more than {most} members, more than any object of this "
            "API has."
        )


class PreconditionFailed(ServiceError):
    status = HTTPStatus.PRECONDITION_FAILED
    slug = "precondition-failed"


class PreconditionRequired(ServiceError):
    status = HTTPStatus.PRECONDITION_REQUIRED
    slug = "precondition-required"


class DatabaseUnavailable(ServiceError):
    """503: the database cannot serve now (a lost connection, a timeout, a full pool)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "database-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The database is unavailable; retry shortly.", headers={"Retry-After": "1"}
        )


class SearchesBusy(ServiceError):
    """503: no search slot came free within DB_POOL_TIMEOUT (ConnectionLine): other searches
    (lists with q, lists and feeds that may read the whole table without event_id or creator_id)
    hold the half of the pool's connections searches may use. The database is not at fault, and
    every other request is still served."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "searches-busy"

    def __init__(self) -> None:
        super().__init__(
            "Too many searches (lists with q; lists without event_id or creator_id, change "
            "feeds without event_id) are running at once; retry shortly.",
            headers={"Retry-After": "1"},
        )


class QueryCanceled(ServiceError):
    """503: PostgreSQL cancelled a statement of the request (57014): it ran longer than
    DB_STATEMENT_TIMEOUT allows, or an operator cancelled it (pg_cancel_backend). Nothing was
    written: a COMMIT that did not finish is CommitUnconfirmed. No Retry-After, unlike a database
    that cannot serve now: the same request may well take as long again."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "query-canceled"

    def __init__(self) -> None:
        super().__init__(
            "The database stopped this request before it finished: it took longer than the "
            "service allows, or was cancelled. Nothing was changed; sent again, the same request "
            "may take as long."
        )


class ChangeInProgress(ServiceError):
    """409: a write that waited DB_LOCK_TIMEOUT for a lock held by another transaction, changing
    the same session or creating under the same Idempotency-Key (whose draft answers such a
    retry 409), and gave up; its transaction rolled back. Retry-After: the other transaction,
    if it is one of the service's writes, is over within a few statements."""

    status = HTTPStatus.CONFLICT
    slug = "change-in-progress"

    @classmethod
    def of_session(cls) -> "ChangeInProgress":
        return cls(
            "Another change of this session is in progress; nothing was changed. Send the request "
            "again shortly.",
            headers={"Retry-After": "1"},
        )

    @classmethod
    def of_idempotency_key(cls) -> "ChangeInProgress":
        return cls(
            "A request with this Idempotency-Key is still in progress; nothing was changed. Send "
            "the request again shortly, to get its answer.",
            headers={"Retry-After": "1"},
        )


# Set while a unit of work commits (service.transactions.unit_of_work), until its outcome is
# known: a request cancelled then (at shutdown) may have been saved, and is answered so.
committing: ContextVar[bool] = ContextVar("committing", default=False)


class ShuttingDown(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "shutting-down"

    def __init__(self) -> None:
        super().__init__(
            "The service is shutting down; retry the request.", headers={"Retry-After": "1"}
        )


class CommitUnconfirmed(ServiceError):
    """A write whose COMMIT the database never confirmed, and that could not be found stored:
    it may have been saved all the same. No Retry-After: a blind retry could apply it twice."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "commit-unconfirmed"

    def __init__(self) -> None:
        super().__init__(
            "The database did not confirm the change, which may have been saved all the same: "
            "read the session (or the change feed) before you send it again."
        )


# RFC 9110's reason phrases where Python before 3.13 still has RFC 7231's: a problem's title is
# its status's phrase (RFC 9457 4.2.1), the same on every Python the service runs on.
_RFC_9110_PHRASES: dict[int, str] = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def status_phrase(status: int) -> str:
    return _RFC_9110_PHRASES.get(status) or HTTPStatus(status).phrase


# The problem a request is answered with, for its access line (service.middleware): its type,
# and its detail where that says why a bearer token was refused (a 401's detail names only the
# token's failing check; other details may quote what the request sent).
answered_problem: ContextVar[tuple[str, str | None] | None] = ContextVar(
    "answered_problem", default=None
)


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if slug else "about:blank",
        "title": status_phrase(status),
        "status": status,
        # Every problem has a detail, the status phrase where the raiser gave none.
        "detail": detail or status_phrase(status) + ".",
    }
    body.update(extensions)
    answered_problem.set((body["type"], body["detail"] if status == 401 else None))
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def drop_tracebacks(exc: BaseException) -> None:
    """Take the tracebacks off an error a client is answered for, and off its causes.

    An error raised from a frame that holds it (a local variable: FastAPI's of a body it cannot
    parse, the driver's of a connection refused) and the request's body: a reference cycle,
    through each traceback, that only the cyclic garbage collector frees, and the served process
    runs it rarely (service.cli). Such an error needs no traceback: the client gets its problem,
    and the log its reason.
    """
    for error in errors_in_chain(exc):
        error.__traceback__ = None


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    drop_tracebacks(exc)
    return problem(exc.status, exc.detail, slug=exc.slug, headers=exc.headers, **exc.extensions)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    errors = [
        {"location": list(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in found[:LISTED_ERRORS_MAX]
    ]
    detail = INVALID_REQUEST
    if len(found) > len(errors):
        detail = (
            f"The request has {len(found)} invalid fields; errors lists the first {len(errors)}."
        )
    if any(error["type"] == "json_invalid" for error in found):
        detail = "The request body is not valid JSON."
    return problem(422, detail, slug="validation-error", errors=errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == HTTPStatus.BAD_REQUEST and isinstance(exc.__cause__, TooManyMembers):
        message = str(exc.__cause__)
        return problem(
            422,
            message,
            slug="validation-error",
            errors=[{"location": ["body"], "message": message, "type": "too_many_members"}],
        )
    if exc.status_code == HTTPStatus.BAD_REQUEST and isinstance(exc.__cause__, ClientDisconnect):
        # Gone before its body ended: nobody reads an answer. Its access line and metrics say
        # so, as nginx's do, rather than count it among the invalid bodies.
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if exc.status_code == HTTPStatus.BAD_REQUEST and isinstance(exc.__cause__, UNREADABLE_BODY):
        # FastAPI's 400 for a body it could not decode at all (not UTF-8, nested too deeply, a
        # member named twice): malformed JSON, a 422 like every other one.
        message = "Invalid JSON"
        if isinstance(exc.__cause__, NotIJSON):
            message = f"Invalid JSON: {exc.__cause__}"
        return problem(
            422,
            "The request body is not valid JSON.",
            slug="validation-error",
            errors=[{"location": ["body"], "message": message, "type": "json_invalid"}],
        )
    # Starlette's own errors (no route, a method the route does not take) come with the bare
    # status phrase as their detail.
    detail = exc.detail
    headers = exc.headers
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        return method_not_allowed(request.method, _allowed_methods(request))
    if exc.status_code == HTTPStatus.NOT_FOUND and detail == HTTPStatus.NOT_FOUND.phrase:
        detail = "There is nothing at this URL."
    elif detail == HTTPStatus(exc.status_code).phrase:
        detail = status_phrase(exc.status_code) + "."
    return problem(exc.status_code, detail, headers=headers)


def method_not_allowed(method: str, allowed: str) -> Response:
    """The 405 of a method that the URL does not take; allowed is the Allow header's value."""
    detail = f"{method} is not allowed on this URL; the Allow header lists what is."
    return problem(HTTPStatus.METHOD_NOT_ALLOWED, detail, headers={"Allow": allowed})


def _allowed_methods(request: Request) -> str:
    # Starlette names only the methods of the first route that matches the path; here each route
    # has one method, so Allow must gather the methods of all of them (RFC 9110, 15.5.6).
    allowed = [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    drop_tracebacks(exc)
    if sqlstate(exc) == QUERY_CANCELED:
        logger.warning("query canceled: %s", driver_reason(exc))
        return await _service_error(request, QueryCanceled())
    logger.warning("database unavailable: %s", driver_reason(exc))
    return await _service_error(request, DatabaseUnavailable())


async def _change_in_progress(request: Request, exc: Exception) -> Response:
    # A lock that timed out is logged as the database's other refusals are: a lock held for long
    # (a transaction left open in psql, a migration) shows here first. Another change that
    # raced this one's reads (service.routes._lock_or_refuse) waited for no lock.
    if exc.__cause__ is not None and is_lock_not_available(exc.__cause__):
        logger.warning("lock not granted within DB_LOCK_TIMEOUT: %s", driver_reason(exc.__cause__))
    return await _service_error(request, exc)


def _internal_error(request: Request) -> Response:
    return _logged_internal_error(request.method, request.url.path)


def _logged_internal_error(method: str, path: str) -> Response:
    """The 500 of the exception being handled, logged with its traceback, and recorded on the
    request's span where it is traced: answered here, it never reaches FastAPI's tracing."""
    if (error := sys.exc_info()[1]) is not None:
        leave_out_row_values(error)
    logger.exception("unhandled error on %s %s", method, path[:500])
    if error is not None:
        span = trace.get_current_span()
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, type(error).__name__)
    return problem(500, "An unexpected error occurred.")


class UnexpectedErrors:
    """The last resort, innermost of the app's middleware: an exception that no handler took
    becomes a 500 problem, logged once with the request's id; a request cancelled at shutdown,
    a 503. Innermost, so that these answers get every header the middleware add (CORS, Vary).

    Starlette's own last resort (ServerErrorMiddleware, which runs `_unexpected_error`) answers
    outside every middleware: its 500 had no CORS or Vary headers, its log line no request id,
    and it re-raises the exception for the server, which logged it a second time. It still
    answers for an exception raised in the middleware themselves.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # too late for an answer: the server ends the connection
                raise
            response = _logged_internal_error(scope["method"], scope["path"])
            await response(scope, receive, send)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running at GRACEFUL_SHUTDOWN_TIMEOUT: a 503
            # (retry elsewhere) tells the client more than uvicorn's bare text 500. Once it is
            # sent, the request's task ends here; re-raised, the cancellation would reach uvicorn
            # as an "Exception in ASGI application", logged with a traceback at every such stop.
            if started:
                raise
            await _shut_down_answer()(scope, receive, send)


def _shut_down_answer() -> Response:
    # Cancelled while its write was committing, the request may have been saved.
    error = CommitUnconfirmed() if committing.get() else ShuttingDown()
    headers = {**error.headers, "Connection": "close"}
    return problem(error.status, error.detail, slug=error.slug, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    response = _internal_error(request)
    # Starlette sends this answer outside the request telemetry middleware, which therefore
    # cannot add the request id to it: it is echoed here.
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


async def _database_error(request: Request, exc: Exception) -> Response:
    # SQLAlchemy's errors, and the driver's and its adapter's where they arrive unwrapped (the
    # read path runs asyncpg on the pool's raw connection): a 503 when the database cannot serve
    # now, else a bug's 500.
    if is_database_unavailable(exc):
        return await _database_unavailable(request, exc)
    return _internal_error(request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ChangeInProgress, _change_in_progress)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    # Pool exhaustion: every connection stayed busy for DB_POOL_TIMEOUT.
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)
    # What asyncpg raises unwrapped when it cannot reach the server: ConnectionRefusedError,
    # socket errors, and TimeoutError (connect timeout, or a server that stopped answering).
    # The database is the only I/O a request does, so an OSError here is always about it.
    app.add_exception_handler(OSError, _database_unavailable)
    # The read path runs asyncpg itself: its errors arrive unwrapped.
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    for error in DRIVER_CONNECTION_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(AsyncAdapt_asyncpg_dbapi.Error, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
