"""A database outage: prompt 503s while PostgreSQL is down or frozen, recovery without a restart.

The PostgreSQL here is the test's own (tests/private_postgres.py), never the shared one.
"""

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from service.db import DISPOSE_TIMEOUT
from service.migrations import migrate
from service.settings import Settings
from tests.conftest import (
    asyncpg_dsn,
    create_database,
    retained_by,
    sample,
    session_body,
    started,
)
from tests.private_postgres import PrivatePostgres


def short_bounds(database_url: str) -> Settings:
    """Every wait of the service bounded short, so that a hang shows within seconds."""
    return Settings(
        database_url=database_url,
        db_connect_timeout=1.0,
        db_statement_timeout=0.5,
        db_lock_timeout=0.2,
        db_pool_timeout=1.0,
        readiness_timeout=1.0,
    )


# Well above what the bounds add up to: reaching it means something waited unbounded.
HANG = 10.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: any pytest run on the machine resets that tree to mode 0700,
    # which locks out the unprivileged user the server runs as when the tests run as root.
    with tempfile.TemporaryDirectory(prefix="sessions-outage-") as data_dir:
        server = PrivatePostgres(Path(data_dir) / "pg")
        server.start()
        try:
            yield server
        finally:
            server.thaw()
            server.stop()


@pytest.fixture(scope="module")
def database_url(postgres: PrivatePostgres) -> str:
    url = create_database(postgres.url)
    migrate(url)
    return url


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with started(short_bounds(database_url)) as running:
        yield running


async def answer(request: Coroutine[None, None, httpx.Response]) -> httpx.Response:
    """The response, which must come before HANG seconds (TimeoutError otherwise)."""
    async with asyncio.timeout(HANG):
        return await request


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:sessions-service:problem:database-unavailable"
    assert response.headers["retry-after"] == "1"


async def test_stopped_database_gives_503_promptly_and_recovers_without_restart(
    postgres: PrivatePostgres, service: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    _, client = service
    session = (await client.post("/sessions", json=session_body())).json()
    assert (await client.get("/readyz")).status_code == 200

    await asyncio.to_thread(postgres.stop)
    try:
        for request in (
            client.get(f"/sessions/{session['id']}"),
            client.get("/sessions"),
            client.post("/sessions", json=session_body()),
            client.patch(f"/sessions/{session['id']}", json={"title": "Lost"}),
            client.delete(f"/sessions/{session['id']}"),
        ):
            assert_unavailable(await answer(request))
        ready = await answer(client.get("/readyz"))
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"database": "unavailable"}
        # Liveness stays green: restarting the service would not bring the database back.
        assert (await client.get("/healthz")).status_code == 200
        # What an operator's alert counts: an outage, told apart from other 503s by its type.
        metrics = (await client.get("/metrics")).text
        outage = {"status": "503", "type": "urn:sessions-service:problem:database-unavailable"}
        assert sample(metrics, "http_problems_total", route="/sessions/{session_id}", **outage) == 3
        assert sample(metrics, "http_problems_total", route="/sessions", **outage) == 2
    finally:
        await asyncio.to_thread(postgres.start)

    response = await client.get(f"/sessions/{session['id']}")
    assert response.json() == session
    patched = await client.patch(f"/sessions/{session['id']}", json={"title": "Back"})
    assert patched.status_code == 200
    assert patched.json()["version"] == 2
    assert (await client.get("/readyz")).status_code == 200


async def test_a_feed_client_misses_no_change_committed_after_a_crash(
    postgres: PrivatePostgres, database_url: str, service: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    # Transactions that took an id and rolled back: their end is not flushed to disk at once
    # (held back 10 s here, 0.2 s by default), so after a crash PostgreSQL hands their ids out
    # again. A feed token placed past them would then skip the changes committed under them.
    _, client = service
    admin = await asyncpg.connect(asyncpg_dsn(postgres.url))
    await admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
    await admin.execute("SELECT pg_reload_conf()")
    await admin.close()
    try:
        assert (await client.post("/sessions", json=session_body())).status_code == 201
        other = await asyncpg.connect(asyncpg_dsn(database_url))
        for _ in range(5):
            await other.execute("BEGIN; SELECT pg_current_xact_id(); ROLLBACK")
        await other.close()
        since = await _up_to_date(client)
        await asyncio.to_thread(postgres.crash)
    finally:
        await asyncio.to_thread(postgres.start)
        admin = await asyncpg.connect(asyncpg_dsn(postgres.url))
        await admin.execute("ALTER SYSTEM RESET wal_writer_delay")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()

    created: list[int] = []
    for _ in range(12):  # more than the ids handed out again, so the counter passes them
        response = await answer(client.post("/sessions", json=session_body()))
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    page = await client.get("/sessions/changes", params={"since": since})
    assert page.status_code == 200, page.text
    assert [item["id"] for item in page.json()["items"]] == created


async def _up_to_date(client: httpx.AsyncClient) -> str:
    """A feed token past every change so far."""
    params: dict[str, str] = {}
    while True:
        page = (await client.get("/sessions/changes", params=params)).json()
        params = {"since": page["next_token"]}
        if not page["items"]:
            return params["since"]


async def test_restarted_database_fails_no_request(
    postgres: PrivatePostgres, service: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    """Without pre-ping: the pooled connections the restart closed are replaced on checkout."""
    app, client = service
    created = await asyncio.gather(
        *(client.post("/sessions", json=session_body()) for _ in range(3))
    )
    assert [r.status_code for r in created] == [201] * 3
    assert app.state.engine.pool.checkedin() >= 2  # connections the restart will close

    await asyncio.to_thread(postgres.stop)
    await asyncio.to_thread(postgres.start)

    fetched = await asyncio.gather(*(client.get(f"/sessions/{r.json()['id']}") for r in created))
    assert [r.json() for r in fetched] == [r.json() for r in created]


async def test_frozen_database_gives_503_within_bounds_and_recovers(
    postgres: PrivatePostgres, service: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    _, client = service
    session = (await client.post("/sessions", json=session_body())).json()

    postgres.freeze()
    try:
        for request in (
            client.get(f"/sessions/{session['id']}"),
            client.patch(f"/sessions/{session['id']}", json={"title": "Stuck"}),
            client.get(f"/sessions/{session['id']}"),
        ):
            assert_unavailable(await answer(request))
        ready = await answer(client.get("/readyz"))
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"database": "unavailable"}
    finally:
        postgres.thaw()

    # The first request after the thaw already succeeds: the connection that timed out was
    # discarded, not handed to the next request.
    assert (await client.get(f"/sessions/{session['id']}")).json() == session
    patched = await client.patch(f"/sessions/{session['id']}", json={"title": "Thawed"})
    assert patched.json()["version"] == 2
    assert (await client.get("/readyz")).status_code == 200


async def test_a_commit_the_database_never_confirms_is_never_answered_retry(
    postgres: PrivatePostgres, database_url: str
) -> None:
    # Synchronous replication to a standby that does not exist: COMMIT is written, then waits
    # for the standby forever; the service's client gives up (DB_STATEMENT_TIMEOUT + 1 s) and
    # cancels the wait, and the transaction stands. Answering "retry" would make a duplicate.
    # Whether the lookup sees it yet is a race with the cancelled wait's end: the answer is the
    # write (found) or commit-unconfirmed (not yet), never database-unavailable. That a write
    # found stored is answered as stored, tests/test_transactions.py checks without a race.
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'absent_standby'")
        await admin.execute("SELECT pg_reload_conf()")
        try:
            async with started(short_bounds(database_url)) as (_, client):
                response = await answer(
                    client.post("/sessions", json=session_body(title="Never confirmed"))
                )
        finally:  # the server is the module's: later tests' commits must not wait
            await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await admin.execute("SELECT pg_reload_conf()")
        stored = await admin.fetch(
            "SELECT id, version FROM sessions WHERE title = 'Never confirmed'"
        )
    finally:
        await admin.close()
    assert len(stored) == 1
    if response.status_code == 201:  # found stored: the write stands
        assert response.json()["id"] == stored[0]["id"]
    else:
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "urn:sessions-service:problem:commit-unconfirmed"
        assert "retry-after" not in response.headers


async def test_a_database_closed_to_new_connections_gives_503_not_500(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator closing a database for maintenance (ALLOW_CONNECTIONS false): SQLSTATE 55000,
    # which on a statement would be a bug. Any refusal of a new connection is an outage.
    name = f"sessions_test_closed_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    server = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await server.execute(f'CREATE DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        async with started(short_bounds(url)) as (_, client):
            for request in (
                client.get("/sessions/1"),
                client.get("/sessions"),
                client.post("/sessions", json=session_body()),
            ):
                with caplog.at_level(logging.WARNING, logger="service.errors"):
                    assert_unavailable(await answer(request))
                logged = caplog.records[-1].getMessage()
                assert logged.startswith(
                    "database unavailable: ObjectNotInPrerequisiteStateError: "
                ), logged
            assert (await client.get("/readyz")).status_code == 503
    finally:
        await server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await server.close()


@pytest.mark.parametrize(
    ("refused", "reason"),
    [
        ("database", "InvalidCatalogNameError"),
        ("role", "InvalidAuthorizationSpecificationError"),
    ],
)
async def test_a_database_that_refuses_the_service_gives_503_not_500(
    server_url: str, refused: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A database dropped or not yet created (3D000), credentials rotated away (28xxx): the
    # service cannot serve until an operator acts, and no request of a client's is wrong.
    server = make_url(server_url)
    never_created = f"sessions_test_no_such_{uuid.uuid4().hex[:12]}"  # as a database or a role
    wrong = (
        server.set(database=never_created)
        if refused == "database"
        else server.set(username=never_created)
    )
    url = wrong.render_as_string(hide_password=False)
    async with started(short_bounds(url)) as (_, client):
        for request in (client.get("/sessions/1"), client.post("/sessions", json=session_body())):
            with caplog.at_level(logging.WARNING, logger="service.errors"):
                assert_unavailable(await answer(request))
            # The driver's reason, for the operator: a read's as a write's.
            logged = caplog.records[-1].getMessage()
            assert logged.startswith(f"database unavailable: {reason}: "), logged


async def test_a_stop_while_the_database_is_frozen_waits_a_bounded_time(
    postgres: PrivatePostgres, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Closing a pooled connection waits for the server's answer (DB_STATEMENT_TIMEOUT + 1 s,
    # 1.5 s here), one connection after another: twelve of them held a stop up for 18 s.
    async with AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, postgres.thaw)  # once the app has stopped
        app, _ = await stack.enter_async_context(started(short_bounds(database_url)))
        engine = app.state.engine
        async with AsyncExitStack() as held:  # twelve connections at once, pooled when released
            for _ in range(12):
                await held.enter_async_context(engine.connect())
        assert engine.pool.checkedin() == 12
        postgres.freeze()
        stopping = time.monotonic()
        await stack.aclose()
    # DISPOSE_TIMEOUT (3 s) and the thaw: well under the 18 s it took, with room for a loaded
    # machine (no tighter: the suite asserts no timings but such bounds).
    assert time.monotonic() - stopping < 4 * DISPOSE_TIMEOUT
    assert "the pool's connections were being closed" in caplog.text


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_write_answered_503_is_freed_with_its_request(server_url: str, method: str) -> None:
    # The served process runs the cyclic garbage collector rarely (service.cli): a body that a
    # reference cycle held (the driver's error, its traceback, a frame holding the error) would
    # stay until then, and an outage's few hundred writes a second would take gigabytes.
    never_created = f"sessions_test_no_such_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=never_created).render_as_string(hide_password=False)
    content = b'{"event_id": 1, "title": "A"' + b" " * 900_000 + b"}"  # valid JSON, padded
    path = "/sessions" if method == "POST" else "/sessions/1"
    async with started(short_bounds(url)) as (_, client):

        async def refuse() -> None:
            response = await client.request(
                method, path, content=content, headers={"content-type": "application/json"}
            )
            assert_unavailable(response)

        retained = await retained_by(refuse)
    assert retained < len(content), retained
