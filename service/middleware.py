"""Per-request telemetry as one pure ASGI middleware: request id, metrics, the access log.

Pure ASGI rather than BaseHTTPMiddleware: no extra task or body streaming per request, only a
wrapped `send`.
"""

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import HTTP_METHODS, answered_problem
from service.logs import request_id
from service.metrics import Metrics
from service.openapi import header

REQUEST_ID_HEADER = b"x-request-id"
# What a caller's id may be: short, and safe in a header and a log line; else a new one is made.
REQUEST_ID_PATTERN = "[A-Za-z0-9._~:+/=-]{1,128}"
_VALID_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.encode())
# OpenAPI: on every response. Not a parameter of every operation: a caller's id is optional and
# never refused (an unsafe one is replaced), and belongs in a client's transport, not in the
# signature of each of its methods.
REQUEST_ID_RESPONSE_HEADER = header(
    "The request's id, on every log line written while serving it: the X-Request-ID the "
    "request sent, if it is 1 to 128 characters of A-Z a-z 0-9 . _ ~ : + / = -, else a new "
    "one (32 hex digits).",
    pattern=f"^{REQUEST_ID_PATTERN}$",
) | {"required": True}
_METHODS = frozenset(HTTP_METHODS)
# Probes and scrapes come every few seconds: their access lines are debug unless they fail.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED = "unmatched"
# ACCESS_LOG=false silences this logger (service.logs.configure_logging).
access_log = logging.getLogger("service.access")


class RequestTelemetry:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = _request_id(scope)
        # For the handler of unexpected errors, which answers outside this middleware.
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (REQUEST_ID_HEADER, rid.encode())
        status = 0  # until a response starts; if none does, an exception escaped: a 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        token = request_id.set(rid)
        problem_token = answered_problem.set(None)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            status = status or 500
            seconds = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe(method, route, status, seconds)
            answered = answered_problem.get() if status >= 400 else None
            if answered is not None:
                self.metrics.count_problem(route, status, answered[0])
            _log_request(scope, rid, method, route, status, seconds, answered)
            answered_problem.reset(problem_token)
            request_id.reset(token)


def _request_id(scope: Scope) -> str:
    value: bytes
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    # 32 hex digits, as uuid4().hex gave. An id to find a request's lines by, never a secret:
    # from `random` (seeded from os.urandom at start and after a fork), not a system call each.
    return f"{random.getrandbits(128):032x}"


def _route_template(scope: Scope) -> str:
    # Never the raw path: it would make one time series per URL.
    # path_format: the template without convertors ({session_id}, not {session_id:digits}).
    route = scope.get("route")
    path: object = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _log_request(
    scope: Scope,
    rid: str,
    method: str,
    route: str,
    status: int,
    seconds: float,
    answered: tuple[str, str | None] | None,
) -> None:
    level = logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO
    if access_log.isEnabledFor(level):
        line = {
            "method": method,
            "route": route,
            "path": scope["path"][:500],
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": rid,
        }
        if answered is not None:
            line["problem"], detail = answered
            if detail is not None:
                line["detail"] = detail
        access_log.log(level, "request", extra=line)
