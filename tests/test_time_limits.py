"""The database's time limits, each answered as what it is: a write that waited DB_LOCK_TIMEOUT
for a lock another transaction holds is 409 change-in-progress, a statement the database
cancelled (DB_STATEMENT_TIMEOUT, pg_cancel_backend) is 503 query-canceled; neither changes
anything. The settings make the two limits far apart, so which one ended a wait is unambiguous.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth import issue_token
from service.errors import PROBLEM_BASE, ChangeInProgress
from service.settings import Settings
from tests.conftest import (
    ADMIN_ID,
    StoredRows,
    asgi_client,
    assert_problem,
    asyncpg_dsn,
    create_session,
    empty_sessions,
    session_body,
    started,
)
from tests.test_idempotency import KEY, keyed

LOCK_TIMEOUT = 0.2
STATEMENT_TIMEOUT = 30.0
# Well under STATEMENT_TIMEOUT: an answer that comes before it did not wait for the statement
# timeout, and one that does not come is a failure, not a hang.
BOUND = 10.0


async def answer(request: Awaitable[httpx.Response]) -> httpx.Response:
    async with asyncio.timeout(BOUND):
        return await request


@pytest.fixture
async def client(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app as deployed, its lock timeout short and its statement timeout long; its writes
    commit, and the tables are emptied afterwards."""
    settings = Settings(
        database_url=database_url,
        db_lock_timeout=LOCK_TIMEOUT,
        db_statement_timeout=STATEMENT_TIMEOUT,
    )
    async with started(settings) as (_, client):
        yield client
    await empty_sessions(engine)


@pytest.fixture
async def elsewhere(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another client of the database (psql, a migration, another service), holding locks."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    yield conn
    await conn.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the error handlers logged at warning."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "service.errors" and record.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_write_of_a_row_locked_elsewhere_is_409_and_changes_nothing(
    client: httpx.AsyncClient,
    elsewhere: asyncpg.Connection,
    stored: StoredRows,
    caplog: pytest.LogCaptureFixture,
    method: str,
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    body = {"title": "Changed"} if method == "PATCH" else None
    before = await stored.row(session["id"])
    with caplog.at_level(logging.WARNING, logger="service.errors"):
        async with elsewhere.transaction():
            await elsewhere.execute(
                "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session["id"]
            )
            response = await answer(client.request(method, url, json=body))

    problem = assert_problem(response, 409)
    assert problem["type"] == PROBLEM_BASE + "change-in-progress"
    assert response.headers["retry-after"] == "1"
    assert await stored.row(session["id"]) == before  # version and stamp included
    assert warnings(caplog) == [
        "lock not granted within DB_LOCK_TIMEOUT: LockNotAvailableError: "
        "canceling statement due to lock timeout"
    ]
    # The lock released, the same request goes through.
    retried = await client.request(method, url, json=body)
    assert retried.status_code == (200 if method == "PATCH" else 204), retried.text


# When a trigger raises: as a statement does (BEFORE), or at COMMIT (a deferred constraint
# trigger), where the outcome of a write is otherwise looked up as unknown.
TRIGGERS = {
    "statement": "CREATE TRIGGER roll_back BEFORE INSERT OR UPDATE ON sessions",
    "commit": "CREATE CONSTRAINT TRIGGER roll_back AFTER INSERT OR UPDATE ON sessions"
    " DEFERRABLE INITIALLY DEFERRED",
}


@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize(
    "sqlstate", ["40P01", "40001"], ids=["deadlock_detected", "serialization_failure"]
)
async def test_a_write_the_database_rolled_back_for_a_conflict_is_503_and_changes_nothing(
    client: httpx.AsyncClient,
    elsewhere: asyncpg.Connection,
    stored: StoredRows,
    caplog: pytest.LogCaptureFixture,
    sqlstate: str,
    trigger: str,
) -> None:
    # As a PATCH that waits for a table lock while a migration holds one and waits for the
    # PATCH's (alembic/env.py retries the migration's side): the same request may pass later.
    # At COMMIT too: the database answered, so the outcome is known, not commit-unconfirmed.
    session = await create_session(client)
    before = await stored.row(session["id"])
    count = "SELECT count(*) FROM sessions"
    sessions = await elsewhere.fetchval(count)
    title = "Rolled back by the database"
    await elsewhere.execute(
        f"""
        CREATE FUNCTION roll_back() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = '{title}' THEN
                RAISE EXCEPTION 'a conflict of the test''s' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NEW;
        END $$;
        {TRIGGERS[trigger]} FOR EACH ROW EXECUTE FUNCTION roll_back();
        """
    )
    try:
        with caplog.at_level(logging.WARNING, logger="service.errors"):
            patched = await client.patch(f"/sessions/{session['id']}", json={"title": title})
            created = await client.post("/sessions", json=session_body(title=title))
    finally:
        await elsewhere.execute("DROP TRIGGER roll_back ON sessions; DROP FUNCTION roll_back()")
    for response in (patched, created):
        problem = assert_problem(response, 503)
        assert problem["type"] == PROBLEM_BASE + "database-unavailable"
        assert response.headers["retry-after"] == "1"
    assert await stored.row(session["id"]) == before
    assert await elsewhere.fetchval(count) == sessions
    assert len(warnings(caplog)) == 2
    assert all("a conflict of the test's" in warning for warning in warnings(caplog))


async def test_a_change_in_progress_that_waited_for_no_lock_logs_no_lock_timeout(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Another change that raced a write's two reads (service.routes._lock_or_refuse) is a 409
    # too, but no lock was waited for: the log must not send the operator looking for one.
    async def raced() -> None:
        raise ChangeInProgress.of_session()

    async with started(Settings(database_url=database_url)) as (app, client):
        app.router.add_api_route("/raced", raced)
        with caplog.at_level(logging.WARNING, logger="service.errors"):
            response = await client.get("/raced")
    assert assert_problem(response, 409)["type"] == PROBLEM_BASE + "change-in-progress"
    assert warnings(caplog) == []


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("draft", 404),  # the speaker may not see another's draft
        ("accepted", 403),  # they may see it, and not change it
    ],
)
async def test_write_of_a_locked_row_the_caller_may_not_change_is_answered_at_once(
    database_url: str,
    engine: AsyncEngine,
    elsewhere: asyncpg.Connection,
    stored: StoredRows,
    method: str,
    state: str,
    status: int,
) -> None:
    # A session the caller may not see does not exist for them, even while another change holds
    # its lock: a 409 "another change of this session" would tell them that it does, and so
    # would a 404 that first waited for the lock (DB_LOCK_TIMEOUT) where another came at once.
    # One they may see but not change is their 403, not a 409 that tells them of another's
    # change in progress: neither is locked, or waited for, for them.
    settings = Settings(
        database_url=database_url,
        db_lock_timeout=LOCK_TIMEOUT,
        db_statement_timeout=STATEMENT_TIMEOUT,
    )
    try:
        async with (
            started(settings) as (app, client),
            asgi_client(app, {"Authorization": f"Bearer {issue_token(settings, '7')}"}) as speaker,
        ):
            session = await create_session(client, state=state)  # an admin's: not the speaker's
            url = f"/sessions/{session['id']}"
            body = {"title": "Changed"} if method == "PATCH" else None
            before = await stored.row(session["id"])
            async with elsewhere.transaction():
                await elsewhere.execute(
                    "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session["id"]
                )
                request = asyncio.create_task(answer(speaker.request(method, url, json=body)))
                waited = False
                while not request.done():
                    waited |= await stored.conn.fetchval(
                        "SELECT count(*) > 0 FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    await asyncio.sleep(0.01)
                response = await request
            unlocked = await speaker.request(method, url, json=body)
            after = await stored.row(session["id"])
    finally:
        await empty_sessions(engine)

    assert not waited  # the row the speaker may not change was never locked for them
    assert_problem(response, status)
    assert response.json() == unlocked.json()  # as once the lock is granted
    assert after == before


async def test_create_retried_while_the_first_is_in_flight_past_the_lock_timeout_is_409(
    client: httpx.AsyncClient,
    elsewhere: asyncpg.Connection,
    stored: StoredRows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = session_body()
    # The first request, still writing: its key inserted, its transaction open.
    first = elsewhere.transaction()
    await first.start()
    await elsewhere.execute(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, status, headers, body) "
        "VALUES ($1, $2, '', 201, '{}', '')",
        ADMIN_ID,
        KEY,
    )
    with caplog.at_level(logging.WARNING, logger="service.errors"):
        try:
            response = await answer(client.post("/sessions", json=body, headers=keyed()))
        finally:
            await first.rollback()

    problem = assert_problem(response, 409)
    assert problem["type"] == PROBLEM_BASE + "change-in-progress"
    assert response.headers["retry-after"] == "1"
    assert await stored.conn.fetchval("SELECT count(*) FROM sessions") == 0
    assert len(warnings(caplog)) == 1
    # The first never happened: the retry is the creation.
    assert (await client.post("/sessions", json=body, headers=keyed())).status_code == 201


async def test_requests_on_a_table_a_migration_holds_are_503_at_the_lock_timeout(
    client: httpx.AsyncClient, elsewhere: asyncpg.Connection, stored: StoredRows
) -> None:
    # DDL locks the whole table: reads wait too, and creations. The database cannot serve them
    # now; it will once the migration commits. (A PATCH or DELETE gets no 409: its lock was
    # refused on the table, not because another change of the session was in progress.)
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    async with elsewhere.transaction():
        await elsewhere.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        responses = [
            await answer(request)
            for request in (
                client.get(url),
                client.get("/sessions"),
                client.get("/sessions/changes"),
                client.post("/sessions", json=session_body()),
                client.patch(url, json={"title": "Changed"}),
                client.delete(url),
            )
        ]
    for response in responses:
        problem = assert_problem(response, 503)
        assert problem["type"] == PROBLEM_BASE + "database-unavailable"
        assert response.headers["retry-after"] == "1"
    assert await stored.conn.fetchval("SELECT count(*) FROM sessions") == 1


@pytest.mark.parametrize(
    "mode",
    [
        "ACCESS EXCLUSIVE",  # ALTER TABLE
        "SHARE",  # CREATE INDEX, which lets reads of the keys through
        "SHARE ROW EXCLUSIVE",  # CREATE TRIGGER
    ],
)
async def test_keyed_create_on_a_keys_table_a_migration_holds_is_503(
    client: httpx.AsyncClient, elsewhere: asyncpg.Connection, stored: StoredRows, mode: str
) -> None:
    # The claim of the key is refused its lock as when a request with it is in flight (409), but
    # no such request exists: the database cannot serve keyed creations until the DDL commits.
    async with elsewhere.transaction():
        await elsewhere.execute(f"LOCK TABLE idempotency_keys IN {mode} MODE")
        response = await answer(client.post("/sessions", json=session_body(), headers=keyed()))
    problem = assert_problem(response, 503)
    assert problem["type"] == PROBLEM_BASE + "database-unavailable"
    assert response.headers["retry-after"] == "1"
    assert await stored.conn.fetchval("SELECT count(*) FROM sessions") == 0
    assert (await client.post("/sessions", json=session_body(), headers=keyed())).status_code == 201


# A BEFORE UPDATE trigger that takes a minute for one title: a statement that runs long without
# waiting for any lock, as a heavy query on an overloaded database does.
SLOW_TITLE = "Slow to write"
SLOW_UPDATE = f"""
CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(60);
    RETURN NEW;
END $$;
CREATE TRIGGER slow_update BEFORE UPDATE ON sessions
    FOR EACH ROW WHEN (NEW.title = '{SLOW_TITLE}') EXECUTE FUNCTION slow_update();
"""


async def test_write_past_the_statement_timeout_is_503_query_canceled_and_changes_nothing(
    database_url: str, engine: AsyncEngine, stored: StoredRows, caplog: pytest.LogCaptureFixture
) -> None:
    # Long enough that the quick statements around it are never cut short on a busy machine (at
    # 0.5 s, the POST before it once was); the slow one takes a minute.
    settings = Settings(database_url=database_url, db_statement_timeout=2, db_lock_timeout=0.2)
    await stored.conn.execute(SLOW_UPDATE)
    try:
        async with started(settings) as (_, client):
            session = await create_session(client)
            before = await stored.row(session["id"])
            with caplog.at_level(logging.WARNING, logger="service.errors"):
                response = await answer(
                    client.patch(f"/sessions/{session['id']}", json={"title": SLOW_TITLE})
                )
            # Not an outage: the next request is served.
            patched = await client.patch(f"/sessions/{session['id']}", json={"title": "Quick"})
    finally:
        await stored.conn.execute(
            "DROP TRIGGER slow_update ON sessions; DROP FUNCTION slow_update()"
        )
        await empty_sessions(engine)

    problem = assert_problem(response, 503)
    assert problem["type"] == PROBLEM_BASE + "query-canceled"
    # Not "retry in a second": the same request would take as long again.
    assert "retry-after" not in response.headers
    assert warnings(caplog) == [
        "query canceled: QueryCanceledError: canceling statement due to statement timeout"
    ]
    assert before["version"] == 1
    assert patched.json()["version"] == 2  # the slow change was never applied


async def test_read_the_database_cancels_is_503_query_canceled(
    database_url: str, engine: AsyncEngine, elsewhere: asyncpg.Connection
) -> None:
    # pg_cancel_backend (an operator ending a query) gives the same SQLSTATE as a statement
    # timeout, and the same answer. The read waits for a table lock meanwhile, so that there is
    # a statement to cancel: the lock timeout is long here.
    settings = Settings(database_url=database_url, db_lock_timeout=20, db_statement_timeout=30)
    async with started(settings) as (_, client), elsewhere.transaction():
        await elsewhere.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        read = asyncio.create_task(client.get("/sessions"))
        waiting = None
        for _ in range(500):
            waiting = await elsewhere.fetchval(
                "SELECT pid FROM pg_locks WHERE relation = 'sessions'::regclass AND NOT granted"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the read never waited for the table"
        await elsewhere.execute("SELECT pg_cancel_backend($1)", waiting)
        response = await answer(read)
    problem = assert_problem(response, 503)
    assert problem["type"] == PROBLEM_BASE + "query-canceled"
    assert "retry-after" not in response.headers
