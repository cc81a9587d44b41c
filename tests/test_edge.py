"""The edge middleware (service.edge): request bodies over MAX_BODY_SIZE get 413 unread; CORS only
for the configured origins."""

from collections.abc import AsyncIterator, Callable

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.types import Message

from service.settings import Settings
from tests.conftest import (
    ADMIN_HEADERS,
    asgi_client,
    count_sessions,
    post_body,
    post_sessions_scope,
    session_body,
)

LIMIT = 1000


def body_of_size(size: int) -> bytes:
    body = orjson.dumps(session_body(comments=""))
    padding = size - len(body)
    assert padding >= 0
    return orjson.dumps(session_body(comments="x" * padding))


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413


async def test_body_at_the_limit_is_accepted(app_with: Callable[..., FastAPI]) -> None:
    async with asgi_client(app_with(max_body_size=LIMIT), ADMIN_HEADERS) as client:
        body = body_of_size(LIMIT)
        assert len(body) == LIMIT
        response = await post_body(client, body)
    assert response.status_code == 201, response.text


async def test_declared_length_over_the_limit_is_413_before_the_app_runs(
    app_with: Callable[..., FastAPI], connection: AsyncConnection
) -> None:
    async with asgi_client(app_with(max_body_size=LIMIT)) as client:
        # No token: had the app run, this would be a 401.
        response = await client.post(
            "/sessions",
            content=body_of_size(LIMIT + 1),
            headers={"content-type": "application/json"},
        )
    assert_413(response)
    assert response.headers["connection"] == "close"
    assert await count_sessions(connection) == 0


async def test_streamed_body_over_the_limit_is_413_and_closes_the_connection(
    app_with: Callable[..., FastAPI], connection: AsyncConnection
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 100

    async with asgi_client(app_with(max_body_size=LIMIT), ADMIN_HEADERS) as client:
        response = await client.post(
            "/sessions", content=chunks(), headers={"content-type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert_413(response)
    assert f"larger than {LIMIT} bytes" in response.json()["detail"]
    # The rest of the body is read only to be dropped (tests/test_deployment.py has what the
    # client sees of it), and then the server closes the connection.
    assert response.headers["connection"] == "close"
    assert await count_sessions(connection) == 0


async def test_a_body_that_ended_with_the_chunk_over_the_limit_keeps_the_connection(
    app_with: Callable[..., FastAPI], connection: AsyncConnection
) -> None:
    # Nothing is left to read before the next request: closing would only cost the client a
    # new connection. (httpx's ASGI transport always ends a body with an empty message, so the
    # app is called as a server calls it.)
    app = app_with(max_body_size=LIMIT)
    messages: list[Message] = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = post_sessions_scope(ADMIN_HEADERS | {"transfer-encoding": "chunked"})
    await app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 413
    assert b"connection" not in {name for name, _ in start["headers"]}
    assert not messages  # the whole body was read
    assert await count_sessions(connection) == 0


async def test_default_limit_is_one_mebibyte(app_with: Callable[..., FastAPI]) -> None:
    # The test apps pin MAX_BODY_SIZE (the environment may set it): the default is the field's.
    default = Settings.model_fields["max_body_size"].default
    assert default == 1024 * 1024
    async with asgi_client(app_with(max_body_size=default), ADMIN_HEADERS) as client:
        response = await client.post(
            "/sessions",
            content=b"{" + b" " * (1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )
    assert_413(response)


async def test_no_cors_headers_by_default(anonymous_client: httpx.AsyncClient) -> None:
    response = await anonymous_client.get("/sessions", headers={"Origin": "https://app.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await anonymous_client.options(
        "/sessions",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_for_configured_origins_only(app_with: Callable[..., FastAPI]) -> None:
    app = app_with(cors_origins=["https://app.example"])
    async with asgi_client(app) as client:
        preflight = await client.options(
            "/sessions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, "
                "traceparent, tracestate",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        response = await client.get("/sessions", headers={"Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        # Both what the answer depends on: the caller (auth) and the origin (CORS).
        assert response.headers.get_list("vary") == ["Authorization, Origin"]
        other = await client.get("/sessions", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # The next page's link, readable by a browser's script.
        assert "link" in response.headers["access-control-expose-headers"].lower()
        exposed = response.headers["access-control-expose-headers"].lower().split(", ")
        assert {"accept", "accept-encoding", "accept-patch"} <= set(exposed)  # what a 415 names
        # HEAD too, as a browser asks before it sends one with a token or a validator.
        head = await client.options(
            "/sessions/1",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "HEAD",
                "Access-Control-Request-Headers": "authorization, if-none-match",
            },
        )
        assert head.status_code == 200, head.text
        refused = await client.options(
            "/sessions/1",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
        )
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"] == "Disallowed CORS origin, method."


# What a script reads without exposure (the Fetch standard's CORS-safelisted response headers),
# and what only the browser acts on.
SAFELISTED = {"cache-control", "content-language", "content-length", "content-type", "expires"}
SAFELISTED |= {"last-modified", "pragma"}
FOR_THE_BROWSER = {"vary", "x-content-type-options", "content-security-policy", "x-frame-options"}


async def test_cors_exposes_every_header_the_api_answers_with(
    app_with: Callable[..., FastAPI],
) -> None:
    origin = {"Origin": "https://app.example"}
    app = app_with(cors_origins=["https://app.example"])
    async with asgi_client(app, ADMIN_HEADERS | origin) as client:
        created = await client.post("/sessions", json=session_body())
        url = created.headers["location"]
        responses = [
            created,  # Location, ETag
            await client.get("/sessions", params={"limit": 1}),  # Link
            await client.post(url, json={}),  # 405: Allow, which its detail points to
            await client.post("/sessions", content=b"x", headers={"content-type": "text/plain"}),
            await client.patch(url, content=b"{}", headers={"content-type": "text/plain"}),
            await client.patch(url, json={}, headers={"If-Match": '"stale"'}),  # 412
        ]
    async with asgi_client(app, origin) as anonymous:
        responses.append(await anonymous.post("/sessions", json=session_body()))  # 401
    assert [response.status_code for response in responses] == [201, 200, 405, 415, 415, 412, 401]
    for response in responses:
        exposed = set(response.headers["access-control-expose-headers"].lower().split(", "))
        sent = {name for name in response.headers if not name.startswith("access-control-")}
        assert sent - SAFELISTED - FOR_THE_BROWSER <= exposed, response.status_code


async def test_every_response_carries_the_security_headers_once(
    app_with: Callable[..., FastAPI],
) -> None:
    async with asgi_client(app_with(max_body_size=LIMIT), ADMIN_HEADERS) as client:
        created = await client.post("/sessions", json=session_body())
        url = created.headers["location"]
        responses = [
            created,
            await client.get(url),
            await client.get(url, headers={"If-None-Match": created.headers["etag"]}),  # 304
            await client.get("/sessions/999"),
            await client.get("/nope"),
            await client.post("/sessions", content=body_of_size(LIMIT + 1)),  # 413, outside
            await client.get("/docs"),
            await client.get("/healthz"),
        ]
    assert [response.status_code for response in responses] == [
        201,
        200,
        304,
        404,
        404,
        413,
        200,
        200,
    ]
    for response in responses:
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]
        assert response.headers.get_list("content-security-policy") == ["frame-ancestors 'none'"]
        assert response.headers.get_list("x-frame-options") == ["DENY"]
        assert len(response.headers.get_list("date")) == 1
