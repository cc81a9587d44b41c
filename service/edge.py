"""Pure ASGI middleware at the edge of the app, configured from the settings it starts with.

- BodySizeLimit: a request body over MAX_BODY_SIZE gets 413 without being read whole: a declared
  Content-Length over the limit is refused before the app runs, and a streamed (chunked) body is
  counted as it arrives and refused at the chunk that crosses the limit. Not FastAPI's own
  `max_body_size` (Starlette's RequestBodyLimitMiddleware): it answers a declared
  Content-Length over the limit with a text/plain 413, not problem+json (FastAPI 0.165,
  Starlette 1.10), and takes its limit when the app is built, not from the settings at start.
- ConfiguredCORS: Starlette's CORSMiddleware for the CORS_ORIGINS, or nothing when there are none;
  a preflight it refuses is a problem+json 400 like any other error, not its text/plain one.
- RequestHead: a request line of another major version than HTTP/1 is a 505; a path with a
  percent-encoded slash (`/sessions%2F12`) a 404; an HTTP/1.0 request with a Transfer-Encoding,
  and a Host missing (in HTTP/1.1), repeated or malformed, a 400.
- ResponseHeaders: what every response carries: a Date, and the headers OWASP's REST Security
  Cheat Sheet asks of an API (no MIME sniffing, no framing).
- WholeFiles: the docs' static files served whole, ignoring Range, and 405 for other methods.
"""

import asyncio
import contextlib
import ipaddress
import re
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.conditional import http_date
from service.errors import method_not_allowed, problem
from service.settings import Settings


def _settings(scope: Scope) -> Settings:
    """The app's settings: read when it starts (service.main), so not yet when this is built."""
    settings: Settings = scope["app"].state.settings
    return settings


class WholeFiles:
    """Serves static files whole, ignoring Range (RFC 9110 14.2 lets a server): Starlette's
    FileResponse answers a malformed or unsatisfiable range with a text/plain 400 or 416 of its
    own, where every other error is problem+json. The docs' files are small.

    Another method than GET or HEAD is a 405 that names those two in its Allow: the app's
    routes, which say what a URL allows, know nothing of what a mount serves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await method_not_allowed(scope["method"], "GET, HEAD")(scope, receive, send)
            return
        headers = [(n, v) for n, v in scope["headers"] if n not in (b"range", b"if-range")]

        async def send_without_accept_ranges(message: Message) -> None:
            # Nor offer ranges (RFC 9110 14.3) that would be ignored.
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (n, v) for n, v in message.get("headers", ()) if n != b"accept-ranges"
                ]
            await send(message)

        await self.app({**scope, "headers": headers}, receive, send_without_accept_ranges)


# Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): an IP literal in brackets (an
# IPv6 address, without a zone id, or an IPvFuture), or a reg-name (an IPv4 address is one too),
# possibly empty.
_REG_NAME = r"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
_HOST = re.compile(rf"(?:\[(?P<literal>[^\]]*)\]|{_REG_NAME})(?::[0-9]*)?")
_IP_FUTURE = re.compile(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")


def _valid_host(value: str) -> bool:
    host = _HOST.fullmatch(value)
    if host is None or host["literal"] is None:
        return host is not None
    literal = host["literal"]
    if _IP_FUTURE.fullmatch(literal):
        return True
    try:
        return "%" not in literal and bool(ipaddress.IPv6Address(literal))
    except ValueError:
        return False


class RequestHead:
    """A request whose head the server passed on, though it is not one to serve:

    - a 505 for a request line of another major version than 1 (`HTTP/2.0`, `HTTP/0.9`),
      which uvicorn serves as HTTP/1.1 (RFC 9112 2.3 lets a server refuse a major version);
    - a 400 for an HTTP/1.0 request with a Transfer-Encoding, which uvicorn decodes as chunked:
      HTTP/1.0 has no transfer codings, so RFC 9112 6.1 has its framing treated as faulty (a
      request smuggled past a proxy that reads the body otherwise), and the connection closed
      (BodySizeLimit closes it: the body is left unread);
    - a 404 for a path with a percent-encoded slash: routes match the decoded path, where
      `/sessions%2F12` is `/sessions/12`, but RFC 3986 (2.2) makes it another path, a single
      segment, and so would a proxy in front that matches the path as sent (a rule for
      `/sessions/*` that it never meets);
    - a 400 for an HTTP/1.1 request without a Host, and for any with two or with one that is
      not a host and an optional port (RFC 9112 3.2 has a server refuse them all).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self._refusal(scope)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _refusal(scope: Scope) -> Response | None:
        version = scope["http_version"]
        if not version.startswith("1."):
            return problem(505, f"HTTP/{version} is not supported: send HTTP/1.1.")
        if version == "1.0" and _is_chunked(scope):
            return problem(400, "An HTTP/1.0 request cannot have a Transfer-Encoding.")
        if b"%2f" in scope.get("raw_path", b"").lower():
            return problem(404, "There is nothing at this URL.")
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) > 1:
            return problem(400, "The request has more than one Host.")
        if not hosts and scope["http_version"] == "1.1":
            return problem(400, "An HTTP/1.1 request must have a Host.")
        if hosts and not _valid_host(hosts[0].decode("latin-1")):
            return problem(400, "The Host is not a host and an optional port.")
        return None


class BodyTooLarge(HTTPException):
    """Raised from receive(); an HTTPException, so the app's handlers render it as a problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


# How long the rest of a body left unread is still read, and dropped, after the answer (a
# "lingering close", RFC 9112 9.6): a client that sends its whole body before it reads the
# answer, as most do, then gets the answer rather than a connection reset by the close, and one
# that sends without end is cut off.
LINGER_SECONDS = 5.0


class _Body:
    """What the app has read of a request's body, through `receive` (limited)."""

    def __init__(self, scope: Scope, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.refused = False
        # A chunked body's end is known only once read; one of a declared length the server
        # reads to its end itself (at most the limit) to keep the connection.
        self.chunked = _is_chunked(scope)
        self.finished = not self.chunked and not _content_length(scope)

    async def receive(self) -> Message:
        message = await self._receive()
        self._note(message)
        if self.received > self.limit:
            self.refused = True
            raise BodyTooLarge(self.limit)
        return message

    def left_unbounded(self) -> bool:
        """Whether the server would read on, without a bound, to the body's end to find the
        next request: a body refused for its size, or a chunked one answered unread."""
        return not self.finished and (self.refused or self.chunked)

    async def linger(self) -> None:
        """Read and drop what is left of the body, for LINGER_SECONDS at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while not self.finished:
                    self._note(await self._receive())

    def _note(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.finished = not message.get("more_body", False)
        else:
            self.finished = True  # http.disconnect


class BodySizeLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _Body(scope, receive, _settings(scope).max_body_size)
        declared = _content_length(scope)
        if declared is not None and declared > body.limit:
            await self._refuse(BodyTooLarge(body.limit), scope, body, send)
            return

        response_started = False
        lingering_send = _lingering(send, body)
        send_on = send

        async def closing_send(message: Message) -> None:
            nonlocal response_started, send_on
            if message["type"] == "http.response.start":
                response_started = True
                if body.left_unbounded():
                    # The server closes the connection after the answer rather than read on
                    # to the body's end, however far that is, to find the next request.
                    MutableHeaders(scope=message)["connection"] = "close"
                    send_on = lingering_send
            await send_on(message)

        try:
            await self.app(scope, body.receive, closing_send)
        except BodyTooLarge as exc:
            # Only when the app let it through (read the body outside its handlers).
            if response_started:
                raise
            await self._refuse(exc, scope, body, send)

    @staticmethod
    async def _refuse(error: BodyTooLarge, scope: Scope, body: _Body, send: Send) -> None:
        response = problem(error.status_code, error.detail, headers={"Connection": "close"})
        await response(scope, _no_body, _lingering(send, body))


def _lingering(send: Send, body: _Body) -> Send:
    """`send`, but the answer's end waits until what is left of the body has been read
    (_Body.linger): so the close that follows does not reset the connection under a client
    still sending, which would lose the answer."""

    async def lingering_send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await send({**message, "more_body": True})
            await body.linger()
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return lingering_send


def _is_chunked(scope: Scope) -> bool:
    # A request's Transfer-Encoding ends in chunked (RFC 9112 6.3), which frames its body; the
    # routes refuse any coding before it (service.inputs.UnsupportedTransferCoding).
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed Content-Length itself
    return None


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class ConfiguredCORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handler: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.handler is None and scope["type"] == "http":
            origins = _settings(scope).cors_origins
            self.handler = (
                ProblemCORSMiddleware(
                    self.app,
                    allow_origins=origins,
                    # Every method the API answers (HEAD as GET): a preflight for one refused
                    # fails the browser's request.
                    allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE"],
                    allow_headers=[
                        "Authorization",
                        "Content-Type",
                        "Idempotency-Key",
                        "If-Match",
                        "If-None-Match",
                        "If-Modified-Since",
                        "If-Unmodified-Since",
                        "X-Request-ID",
                        # W3C Trace Context: a browser app's trace continues in the service's.
                        "traceparent",
                        "tracestate",
                    ],
                    expose_headers=[
                        "Accept",  # what a 415 names
                        "Accept-Encoding",
                        "Accept-Patch",
                        "Allow",  # what a 405 names
                        # The server's clock: a client judges its own skew by it (Last-Modified,
                        # a token's expiry).
                        "Date",
                        "Location",
                        "Link",
                        "ETag",
                        "Last-Modified",
                        "Retry-After",
                        "WWW-Authenticate",
                        "X-Request-ID",
                    ],
                    max_age=600,
                )
                if origins
                else self.app
            )
        await (self.handler or self.app)(scope, receive, send)


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Its text, "Disallowed CORS origin, method", names what the preflight asked for in vain.
        cors_headers = {
            name: value
            for name, value in response.headers.items()
            if name not in {"content-length", "content-type"}
        }
        detail = bytes(response.body).decode() + "."
        return problem(response.status_code, detail, headers=cors_headers)


# A browser never reads a response as another type than it says (a JSON string as HTML), nor
# shows one in a frame. Static: the same bytes on every response.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]


class ResponseHeaders:
    """Put a Date on every response that has none (RFC 9110 6.6.1), and SECURITY_HEADERS.

    The service sets Date itself, rather than the server (uvicorn runs with date_header=False):
    uvicorn's Date is refreshed about once a second and could be earlier than a Last-Modified.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *SECURITY_HEADERS]
                if not any(name.lower() == b"date" for name, _ in headers):
                    headers.append((b"date", http_date(int(time.time())).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
