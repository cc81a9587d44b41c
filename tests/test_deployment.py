"""The service as deployed: several replicas on one database, and a graceful stop."""

import asyncio
import contextlib
import itertools
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from service.schemas import format_utc
from tests.conftest import (
    ADMIN_HEADERS,
    DISJOINT_PATCHES,
    asyncpg_dsn,
    migrated_database,
    sample,
    session_body,
    waiting_for_a_lock,
)
from tests.processes import ServiceProcess

CHANGES = DISJOINT_PATCHES
SESSIONS = 6
EXTRA_CREATES = 12
LOAD_REQUESTS, LOAD_CONCURRENCY = 1000, 32


@pytest.fixture(scope="module")
def deployed_database(server_url: str) -> Iterator[str]:
    """A database of its own, migrated as the deployment's migration step does."""
    with migrated_database(server_url, prefix="sessions_deployed") as url:
        yield url


@pytest.fixture(scope="module")
def replicas(deployed_database: str) -> Iterator[list[ServiceProcess]]:
    started = [ServiceProcess(deployed_database) for _ in range(2)]
    try:
        yield [replica.wait_until_ready() for replica in started]
    finally:
        for replica in started:
            replica.stop()


async def stored_rows(url: str) -> dict[int, dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return {row["id"]: dict(row) for row in await conn.fetch("SELECT * FROM sessions")}
    finally:
        await conn.close()


def stamp(response: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(response["last_modified_at"])


async def test_concurrent_writes_through_two_replicas_keep_every_rule(
    replicas: list[ServiceProcess], deployed_database: str
) -> None:
    clients = [
        httpx.AsyncClient(base_url=r.base_url, timeout=30, headers=ADMIN_HEADERS) for r in replicas
    ]
    alternate = itertools.cycle(clients)
    # Sessions the module's other tests stored, whichever ran first.
    before = set(await stored_rows(deployed_database))
    try:
        created = await asyncio.gather(
            *(next(alternate).post("/sessions", json=session_body()) for _ in range(SESSIONS))
        )
        assert [r.status_code for r in created] == [201] * SESSIONS
        sessions = [r.json() for r in created]

        # Per session: every field change, plus a PATCH that changes nothing, all at once,
        # alternating between the replicas; and more creates meanwhile.
        requests = []
        for session in sessions:
            for patch in [*CHANGES, {"title": session["title"]}]:
                requests.append(next(alternate).patch(f"/sessions/{session['id']}", json=patch))
        requests += [
            next(alternate).post("/sessions", json=session_body(title=f"Extra {n}"))
            for n in range(EXTRA_CREATES)
        ]
        responses = await asyncio.gather(*requests)
        assert {r.status_code for r in responses[: -EXTRA_CREATES or None]} == {200}
        assert {r.status_code for r in responses[-EXTRA_CREATES:]} == {201}

        rows = await stored_rows(deployed_database)
        extra_ids = {r.json()["id"] for r in responses[-EXTRA_CREATES:]}
        # Nothing lost: every create is a row of its own.
        assert set(rows) - before == {s["id"] for s in sessions} | extra_ids
        assert len(rows) == len(before) + SESSIONS + EXTRA_CREATES

        for session in sessions:
            mine = [
                r.json()
                for r in responses[: -EXTRA_CREATES or None]
                if r.json()["id"] == session["id"]
            ]
            row = rows[session["id"]]
            # The version rises by exactly the number of real changes: the no-op PATCH adds none.
            assert row["version"] == 1 + len(CHANGES)
            for change in CHANGES:
                ((field, value),) = change.items()
                assert row[field] == value
            # One stamp per version, across both replicas, strictly later at every version.
            by_version = {1: session["last_modified_at"]}
            for response in mine:
                assert (
                    by_version.setdefault(response["version"], response["last_modified_at"])
                    == (response["last_modified_at"])
                )
            assert sorted(by_version) == list(range(1, 2 + len(CHANGES)))
            stamps = [datetime.fromisoformat(by_version[v]) for v in sorted(by_version)]
            assert all(a < b for a, b in itertools.pairwise(stamps))
            # The latest response is the stored row, and both replicas serve it alike.
            latest = max(mine, key=lambda r: r["version"])
            assert latest["last_modified_at"] == format_utc(row["last_modified_at"])
            assert latest["created_at"] == format_utc(row["created_at"])
            for client in clients:
                assert (await client.get(f"/sessions/{session['id']}")).json() == latest
    finally:
        for client in clients:
            await client.aclose()


async def test_the_served_process_rarely_collects_garbage_under_load(
    replicas: list[ServiceProcess],
) -> None:
    # serve tunes the garbage collector (service.cli.tune_garbage_collector). At CPython's
    # defaults this load made the server collect its youngest generation about 70 times (and
    # every such collection promoted what the requests in flight held); tuned, none at all.
    async with httpx.AsyncClient(
        base_url=replicas[0].base_url, timeout=30, headers=ADMIN_HEADERS
    ) as client:
        created = (await client.post("/sessions", json=session_body())).json()

        async def young_collections() -> float:
            metrics = (await client.get("/metrics")).text
            return sample(metrics, "python_gc_collections_total", generation="0")

        async def reader() -> None:
            for _ in range(LOAD_REQUESTS // LOAD_CONCURRENCY):
                response = await client.get(f"/sessions/{created['id']}")
                assert response.status_code == 200

        before = await young_collections()
        await asyncio.gather(*(reader() for _ in range(LOAD_CONCURRENCY)))
        collections = await young_collections() - before
    assert collections < 10


async def test_a_websocket_upgrade_is_answered_as_plain_http(
    replicas: list[ServiceProcess],
) -> None:
    # The service speaks no WebSocket: served with ws="none", an upgrade request is an HTTP
    # request like any other (with a WebSocket library installed and uvicorn's "auto", it was
    # switched to the WebSocket protocol and refused there).
    headers = {
        "connection": "upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    async with httpx.AsyncClient(base_url=replicas[0].base_url, timeout=30) as client:
        response = await client.get("/sessions/states", headers=headers)
    assert response.status_code == 200
    assert "states" in response.json()
    # Logged as any request, without uvicorn's warnings that the upgrade was declined and its
    # advice to install a WebSocket library: any client could fill the log with them.
    request_id = response.headers["x-request-id"]
    replicas[0].access_line(request_id)  # written once the response is sent
    lines = replicas[0].log_lines()
    assert [line["logger"] for line in lines if line.get("request_id") == request_id] == [
        "service.access"
    ]
    assert not [line for line in lines if "upgrade" in line["message"].lower()]
    assert not [line for line in lines if "WebSocket" in line["message"]]


async def test_a_connect_request_writes_no_upgrade_warnings(replicas: list[ServiceProcess]) -> None:
    # llhttp stops at a CONNECT's head as at an offer to switch protocols, and uvicorn warns
    # twice (advising a WebSocket library): dropped, or any client could fill the log.
    port = replicas[0].port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"CONNECT /sessions/states HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 405 "), head
    request_id = re.search(rb"\r\nx-request-id: (\w+)\r\n", head)
    assert request_id
    replicas[0].access_line(request_id[1].decode())  # written once the response is sent
    lines = replicas[0].log_lines()
    assert not [line for line in lines if "upgrade" in line["message"].lower()]
    assert not [line for line in lines if "WebSocket" in line["message"]]


# Offers to switch protocols: Java's HttpClient offers HTTP/2 (h2c) on its first request to an
# http:// URL; a browser's WebSocket handshake.
OFFERS = {
    "h2c": [
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    ],
    "websocket": [
        "Connection: keep-alive, Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ],
}


@pytest.mark.parametrize("offer", OFFERS)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("split", [False, True], ids=["one write", "body later"])
async def test_a_request_offering_another_protocol_is_served_with_its_body(
    replicas: list[ServiceProcess], offer: str, chunked: bool, split: bool
) -> None:
    # RFC 9110 7.8: the service declines the offer and answers the request as HTTP/1.1, body
    # and all. A body without a title: its 422 names the title, where an empty one names the
    # body. Then another request on the connection: the server reads on after the offer.
    port = replicas[0].port
    body = orjson.dumps({"event_id": 1})
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    head = [
        "POST /sessions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in ADMIN_HEADERS.items()),
        *OFFERS[offer],
    ]
    then = f"GET /sessions/states HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if split:
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(payload + then.encode())
        await writer.drain()
        answers = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    finally:
        writer.close()
        await writer.wait_closed()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"422", b"200"], answers
    assert b'"location":["body","title"]' in answers, answers


@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        pytest.param(ADMIN_HEADERS, b"HTTP/1.1 413 ", id="413 at the limit"),
        pytest.param({}, b"HTTP/1.1 401 ", id="401 before the body is read"),
        pytest.param(
            ADMIN_HEADERS | {"Content-Type": "text/plain"},
            b"HTTP/1.1 415 ",
            id="415 before the body is read",
        ),
    ],
)
async def test_a_chunked_body_left_unread_is_answered_and_the_connection_closed(
    replicas: list[ServiceProcess], headers: dict[str, str], answer: bytes
) -> None:
    # A 413 at the chunk that crosses MAX_BODY_SIZE (1 MiB), or an answer given before the body
    # is read, must not leave the server reading on: on a connection kept alive it read and
    # dropped whatever followed (gigabytes, as fast as a client sent them) to find the end of
    # the body. It closes the connection instead.
    port = replicas[0].port
    head = [
        "POST /sessions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Transfer-Encoding: chunked",
        *(
            f"{name}: {value}"
            for name, value in ({"Content-Type": "application/json"} | headers).items()
        ),
    ]
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send_without_end() -> None:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        with contextlib.suppress(ConnectionError):
            for _ in range(4096):  # 256 MiB at most, never the last chunk
                writer.write(chunk)
                await writer.drain()

    async def read_until_closed() -> bytes:
        # The server closes with the body's rest unread, so its kernel may reset the connection
        # rather than end it: either ends the answer.
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(65536):
                answer += data
        return answer

    sending = asyncio.create_task(send_without_end())
    try:
        # Never ends, had the server kept the connection.
        received = await asyncio.wait_for(read_until_closed(), timeout=10)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.transport.abort()  # the server may have reset it: nothing left to flush
    assert received.startswith(answer), received[:200]
    assert b"\r\nconnection: close\r\n" in received.lower(), received[:400]


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_a_client_that_sends_a_whole_body_over_the_limit_first_gets_its_413(
    replicas: list[ServiceProcess], chunked: bool
) -> None:
    # Most clients send the whole body before they read the answer. The server reads what is
    # left of it before it closes (a lingering close): closed at once, with the body unread, the
    # connection is reset, and the client loses the 413 that was waiting for it.
    port = replicas[0].port
    body = b" " * (4 * 1024 * 1024)  # 4 MiB: past the limit, and the sockets' buffers
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    head = [
        "POST /sessions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        framing,
        *(f"{name}: {value}" for name, value in ADMIN_HEADERS.items()),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await asyncio.wait_for(writer.drain(), timeout=10)  # all of it, before reading
        received = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.transport.abort()
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"\r\nconnection: close\r\n" in received.lower(), received[:400]


EXPECTING_CONTINUE = [
    pytest.param({}, "application/json", b"HTTP/1.1 401 ", id="no token"),
    pytest.param(
        {"authorization": "Bearer not-a-token"},
        "application/json",
        b"HTTP/1.1 401 ",
        id="bad token",
    ),
    pytest.param(ADMIN_HEADERS, "text/plain", b"HTTP/1.1 415 ", id="not JSON"),
    pytest.param(ADMIN_HEADERS, "application/json", b"HTTP/1.1 100 Continue", id="accepted"),
]


@pytest.mark.parametrize(("headers", "content_type", "answer"), EXPECTING_CONTINUE)
async def test_a_client_expecting_100_continue_is_refused_before_it_sends_the_body(
    replicas: list[ServiceProcess], headers: dict[str, str], content_type: str, answer: bytes
) -> None:
    # RFC 9110 10.1.1: a client that asks first sends its body only after a 100 (Continue). The
    # server sends one when the app first reads the body: a request the route refuses anyway is
    # answered before that, and its body never crosses the network.
    body = orjson.dumps(session_body(title="asked first"))
    head = [
        "POST /sessions HTTP/1.1",
        f"Host: 127.0.0.1:{replicas[0].port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Expect: 100-continue",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", replicas[0].port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
        assert status_line.startswith(answer), status_line
        if answer.startswith(b"HTTP/1.1 100"):
            fields = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
            assert fields == b"\r\n"  # a 100 has none
            writer.write(body)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
            assert status_line.startswith(b"HTTP/1.1 201 "), status_line
    finally:
        writer.close()
        await writer.wait_closed()


async def exchange(port: int, request: bytes) -> bytes:
    """What the server answers to raw bytes, read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


HOSTS = [
    pytest.param("HTTP/1.1", [], b"400", id="HTTP/1.1 without a Host"),
    pytest.param("HTTP/1.1", ["Host: a.example", "Host: b.example"], b"400", id="two"),
    pytest.param("HTTP/1.0", ["Host: a.example", "Host: b.example"], b"400", id="two in 1.0"),
    pytest.param("HTTP/1.1", ["Host: a.example/x"], b"400", id="a path"),
    pytest.param("HTTP/1.1", ["Host: user@a.example"], b"400", id="userinfo"),
    pytest.param("HTTP/1.1", ["Host: a.example:80:80"], b"400", id="two ports"),
    pytest.param("HTTP/1.1", ["Host: [::1"], b"400", id="an open bracket"),
    pytest.param("HTTP/1.1", ["Host: [hello]"], b"400", id="brackets, no address"),
    pytest.param("HTTP/1.1", ["Host: [1.2.3.4]"], b"400", id="IPv4 in brackets"),
    pytest.param("HTTP/1.1", ["Host: [fe80::1%25eth0]"], b"400", id="a zone id"),
    pytest.param("HTTP/1.1", ["Host: ex%zzample.org"], b"400", id="a bad percent-encoding"),
    pytest.param("HTTP/1.1", ["Host: %"], b"400", id="a lone percent"),
    pytest.param("HTTP/1.0", [], b"200", id="HTTP/1.0 without a Host"),
    pytest.param("HTTP/1.1", ["Host: "], b"200", id="empty"),
    pytest.param("HTTP/1.1", ["Host: 127.0.0.1:8000"], b"200", id="IPv4 and port"),
    pytest.param("HTTP/1.1", ["Host: [::1]:8000"], b"200", id="IPv6 and port"),
    pytest.param("HTTP/1.1", ["Host: sessions.example.org"], b"200", id="a name"),
    pytest.param("HTTP/1.1", ["Host: ex%41mple.org"], b"200", id="a percent-encoded name"),
    pytest.param("HTTP/1.1", ["Host: [v1.fe80::a+en1]"], b"200", id="an IPvFuture"),
]


@pytest.mark.parametrize(("version", "fields", "status"), HOSTS)
async def test_a_request_without_one_valid_host_is_400(
    replicas: list[ServiceProcess], version: str, fields: list[str], status: bytes
) -> None:
    # RFC 9112 3.2: llhttp passed these on, and uvicorn served them.
    head = [f"GET /sessions/states {version}", *fields, "Connection: close"]
    answer = await exchange(replicas[0].port, ("\r\n".join(head) + "\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 %s " % status), answer


async def test_a_bad_host_is_answered_in_its_turn_after_the_requests_before_it(
    replicas: list[ServiceProcess],
) -> None:
    # RFC 9112 9.3.2: answers in the order of the requests. A 400 written at once by the
    # protocol came before the answer of the request in flight, which it cut off.
    port = replicas[0].port
    request = f"POST /sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in ADMIN_HEADERS.items())
    body = orjson.dumps(session_body(title="pipelined"))
    request += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    after = b"GET /sessions/states HTTP/1.1\r\nConnection: close\r\n\r\n"  # no Host
    answers = await exchange(port, request.encode() + body + after)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"201", b"400"], answers


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/0.9"])
async def test_a_request_line_of_another_major_version_is_505(
    replicas: list[ServiceProcess], version: str
) -> None:
    # llhttp passed these on, and uvicorn answered them as HTTP/1.1 requests.
    request = f"GET /sessions/states {version}\r\nHost: a.example\r\nConnection: close\r\n\r\n"
    answer = await exchange(replicas[0].port, request.encode())
    assert answer.startswith(b"HTTP/1.1 505 "), answer
    assert b"application/problem+json" in answer


async def test_an_http_1_0_request_with_a_transfer_encoding_is_400_and_creates_nothing(
    replicas: list[ServiceProcess], deployed_database: str
) -> None:
    # RFC 9112 6.1: HTTP/1.0 has no transfer codings, so a proxy may have framed this body by
    # another rule than the server would (request smuggling). uvicorn decoded it as chunked
    # and created the session; the connection, kept alive, must close too.
    port = replicas[0].port
    title = "Framed as chunked in HTTP/1.0"
    body = orjson.dumps(session_body(title=title))
    head = [
        "POST /sessions HTTP/1.0",
        f"Host: 127.0.0.1:{port}",
        "Connection: keep-alive",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        *(f"{name}: {value}" for name, value in ADMIN_HEADERS.items()),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode()
    answer = await exchange(port, request + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    rows = await stored_rows(deployed_database)
    assert title not in [row["title"] for row in rows.values()]


async def test_a_client_gone_before_its_body_ended_is_logged_and_counted_as_499(
    replicas: list[ServiceProcess],
) -> None:
    # It was a 422, among the invalid bodies, though nobody received an answer.
    replica, rid = replicas[0], "gone-before-its-body-ended"
    head = [
        "POST /sessions HTTP/1.1",
        f"Host: 127.0.0.1:{replica.port}",
        "Content-Type: application/json",
        "Content-Length: 1000",
        f"X-Request-ID: {rid}",
        *(f"{name}: {value}" for name, value in ADMIN_HEADERS.items()),
    ]
    _, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    writer.write(("\r\n".join(head) + '\r\n\r\n{"event_id"').encode())
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    writer.close()
    await writer.wait_closed()
    assert replica.access_line(rid)["status"] == 499
    async with httpx.AsyncClient(base_url=replica.base_url) as client:
        metrics = (await client.get("/metrics")).text
    labels = {"method": "POST", "route": "/sessions"}
    assert sample(metrics, "http_requests_total", **labels, status="499") >= 1


async def test_uvicorns_own_400_carries_a_date_and_the_apps_headers(
    replicas: list[ServiceProcess],
) -> None:
    # Two Content-Lengths: llhttp refuses the request, and uvicorn writes the 400 itself. It
    # had no Date (RFC 9110 6.6.1): serve leaves Date to the app, which never saw the request.
    request = b"POST /sessions HTTP/1.1\r\nHost: a.example\r\n"
    request += b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    head, _, body = (await exchange(replicas[0].port, request)).partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    headers = {name: value for name, _, value in (f.decode().partition(": ") for f in fields)}
    assert status == b"HTTP/1.1 400 Bad Request"
    assert body == b"Invalid HTTP request received."
    assert parsedate_to_datetime(headers["date"]).tzinfo is not None
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert int(headers["content-length"]) == len(body)


def readme_function(name: str) -> Callable[..., Any]:
    """A function of the README's Python examples, as a reader copies it."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for example in re.findall(r"```python\n(.*?)```", readme, flags=re.S):
        if f"def {name}(" in example:
            namespace: dict[str, Any] = {"httpx": httpx}
            exec(example, namespace)
            function: Callable[..., Any] = namespace[name]
            return function
    raise AssertionError(f"the README has no {name}")


def test_the_readmes_concurrency_loop_retries_a_412_and_gives_up_on_a_weak_etag(
    replicas: list[ServiceProcess],
) -> None:
    retitle = readme_function("retitle")
    with httpx.Client(base_url=replicas[0].base_url, headers=ADMIN_HEADERS, timeout=30) as client:
        url = f"/sessions/{client.post('/sessions', json=session_body()).json()['id']}"
        reads = 0

        def changed_elsewhere_after_the_first_read(response: httpx.Response) -> None:
            nonlocal reads
            if response.request.method == "GET":
                reads += 1
                if reads == 1:  # another client, on the other replica, between read and PATCH
                    httpx.patch(
                        replicas[1].base_url + url,
                        json={"subtitle": "Meanwhile"},
                        headers=ADMIN_HEADERS,
                    ).raise_for_status()

        client.event_hooks["response"] = [changed_elsewhere_after_the_first_read]
        retitled = retitle(client, url, "Retitled")
        assert reads == 2  # the first PATCH got 412: read again, then patched
        assert (retitled["title"], retitled["subtitle"]) == ("Retitled", "Meanwhile")

        def weakened_by_a_proxy(response: httpx.Response) -> None:
            if "etag" in response.headers:
                response.headers["etag"] = "W/" + response.headers["etag"]

        client.event_hooks["response"] = [weakened_by_a_proxy]
        with pytest.raises(RuntimeError, match="weak"):
            retitle(client, url, "Never")
        client.event_hooks["response"] = []
        assert client.get(url).json() == retitled


def test_a_start_that_fails_exits_with_status_3(deployed_database: str) -> None:
    # As `uvicorn` itself would: a supervisor tells a failed start from a crash. (A setting the
    # service checks is refused before, exit 1: SQLAlchemy refuses these hosts, one with a port
    # and one without, when the engine is made.)
    url = make_url(deployed_database).update_query_dict({"host": ["127.0.0.1:5432", "localhost"]})
    service = ServiceProcess(url.render_as_string(hide_password=False))
    try:
        assert service.wait() == 3
        messages = [line["message"] for line in service.log_lines()]
        assert messages[-1] == "Application startup failed. Exiting."
    finally:
        service.stop()


@pytest.mark.parametrize("taken_by", ["another listener", "a host that does not resolve"])
def test_an_address_the_service_cannot_listen_on_stops_it_at_once_naming_it(
    deployed_database: str, taken_by: str
) -> None:
    # uvicorn found out only once the app had started (the database checked, and an embedded
    # PostgreSQL started), then exited 3 with a log line that named neither setting.
    with contextlib.ExitStack() as stack:
        if taken_by == "another listener":
            listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            address = {"PORT": str(listener.getsockname()[1])}
        else:
            address = {"HOST": "no-such-host.invalid"}
        service = ServiceProcess(deployed_database, **address)
        stack.callback(service.stop)
        assert service.wait() == 1
        output = service.output()
    if taken_by == "another listener":
        expected = (
            f"cannot listen on HOST '127.0.0.1', PORT {address['PORT']}: Address already in use\n"
        )
        assert output == expected
    else:
        assert output.startswith("cannot listen on HOST 'no-such-host.invalid', PORT "), output
    assert "Application startup" not in output  # refused before the app started


async def test_an_idle_connection_is_kept_for_keep_alive_timeout(deployed_database: str) -> None:
    # uvicorn's 5 s was fixed, shorter than a load balancer's idle timeout: a request it sent
    # on a connection the service was just closing was lost.
    service = ServiceProcess(deployed_database, KEEP_ALIVE_TIMEOUT="2").wait_until_ready()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        request = b"GET /healthz HTTP/1.1\r\nHost: a.example\r\n\r\n"
        for idle in (0.0, 1.0):  # within the timeout: the same connection serves both
            await asyncio.sleep(idle)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = re.search(rb"content-length: (\d+)", head.lower())
            assert length is not None
            await reader.readexactly(int(length[1]))
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the server
        assert 1.0 < time.monotonic() - started < 4.0
        writer.close()
    finally:
        service.stop()


# A PATCH behind a row lock waits longer than these tests' steps take (else it would be a 409).
WAITS_FOR_LOCKS = {"DB_LOCK_TIMEOUT": "4"}


async def test_sigterm_drains_the_request_in_flight_and_exits_0(deployed_database: str) -> None:
    service = ServiceProcess(
        deployed_database, LOG_LEVEL="info", **WAITS_FOR_LOCKS
    ).wait_until_ready()
    try:
        async with httpx.AsyncClient(
            base_url=service.base_url, timeout=30, headers=ADMIN_HEADERS
        ) as client:
            session = (await client.post("/sessions", json=session_body())).json()
            # Hold the row's lock, so that the PATCH below waits inside the service.
            async with row_locked(deployed_database, session["id"]) as blocker:
                in_flight = asyncio.create_task(
                    client.patch(
                        f"/sessions/{session['id']}",
                        json={"title": "Drained"},
                        headers={"X-Request-ID": "drain-1"},
                    )
                )
                await waiting_for_a_lock(blocker, held_by=blocker.get_server_pid())
                service.terminate()
                await asyncio.sleep(0.5)
                assert service.process.poll() is None, "exited with a request in flight"
                assert not in_flight.done()
            response = await in_flight
        assert response.status_code == 200
        assert response.json()["title"] == "Drained"
        assert await asyncio.to_thread(service.wait) == 0
        lines = service.log_lines()  # every line is JSON
        (access,) = [line for line in lines if line.get("request_id") == "drain-1"]
        assert access["logger"] == "service.access"
        assert access["method"] == "PATCH"
        assert access["route"] == "/sessions/{session_id}"
        assert access["status"] == 200
        assert access["duration_ms"] >= 500
        assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    finally:
        service.stop()


def test_sighup_stops_the_service_as_sigterm_does(deployed_database: str) -> None:
    # What closing the terminal sends: by default it ended the process without its exit hooks
    # (an embedded PostgreSQL was left running).
    service = ServiceProcess(deployed_database).wait_until_ready()
    try:
        service.process.send_signal(signal.SIGHUP)
        assert service.wait(15) == 0
        messages = [line["message"] for line in service.log_lines()]
        assert "Shutting down" in messages
    finally:
        service.stop()


async def test_sigterm_gives_up_on_a_stuck_request_after_the_graceful_timeout(
    deployed_database: str,
) -> None:
    service = ServiceProcess(
        deployed_database, GRACEFUL_SHUTDOWN_TIMEOUT="1", ACCESS_LOG="false", **WAITS_FOR_LOCKS
    ).wait_until_ready()
    try:
        async with httpx.AsyncClient(
            base_url=service.base_url, timeout=30, headers=ADMIN_HEADERS
        ) as client:
            session = (await client.post("/sessions", json=session_body())).json()
            async with row_locked(deployed_database, session["id"]) as blocker:
                stuck = asyncio.create_task(
                    client.patch(f"/sessions/{session['id']}", json={"title": "Cut off"})
                )
                await waiting_for_a_lock(blocker, held_by=blocker.get_server_pid())
                service.terminate()
                # The lock is still held: only the timeout can end the process.
                assert await asyncio.to_thread(service.wait, 15) == 0
            cut_off = await stuck
            conn = await asyncpg.connect(asyncpg_dsn(deployed_database))
            try:
                row = await conn.fetchrow(
                    "SELECT title, version FROM sessions WHERE id = $1", session["id"]
                )
            finally:
                await conn.close()
        assert cut_off.status_code == 503
        assert cut_off.headers["content-type"] == "application/problem+json"
        assert cut_off.json()["type"] == "urn:sessions-service:problem:shutting-down"
        assert "date" in cut_off.headers
        assert cut_off.headers["retry-after"] == "1"
        assert cut_off.headers["vary"] == "Authorization"  # as every answer under /sessions
        # The cut-off transaction was rolled back.
        assert dict(row) == {"title": session["title"], "version": 1}
        lines = service.log_lines()
        assert lines  # uvicorn's own lines, as JSON
        assert not [line for line in lines if line["logger"] == "service.access"]
        # Answered, the cut-off request is not an error with a traceback too.
        assert not [line for line in lines if "exc_info" in line]
    finally:
        service.stop()


@asynccontextmanager
async def row_locked(database_url: str, session_id: int) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own that holds the session's row lock until the block ends."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            yield conn
    finally:
        await conn.close()
