"""A request's database connection: the wait for it (first come, first served, bounded by
DB_POOL_TIMEOUT), and a write's unit of work, which commits before the response is sent."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_

from service import transactions
from service.auth import issue_token
from service.schemas import format_utc
from service.settings import Settings
from service.transactions import ConnectionLine, connection_line, read_connection
from tests.conftest import (
    ADMIN_HEADERS,
    asgi_client,
    asyncpg_dsn,
    create_session,
    empty_sessions,
    migrated_database,
    post_sessions_scope,
    session_body,
    settings_for,
    started,
)

# At COMMIT (a deferred constraint trigger), a write of this title ends its own connection: the
# database goes away between the write's last statement and the end of its transaction.
LOST_AT_COMMIT = "Lost at commit"
LOSE_CONNECTION_AT_COMMIT = f"""
CREATE FUNCTION lose_connection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.title = '{LOST_AT_COMMIT}' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER lose_connection_at_commit AFTER INSERT OR UPDATE ON sessions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lose_connection();
"""


async def test_waiters_get_their_turn_in_order_and_newcomers_queue_behind_them() -> None:
    line = ConnectionLine(Settings(db_pool_size=1, db_max_overflow=0, db_pool_timeout=5))
    served: list[str] = []

    async def request(name: str) -> None:
        async with line.turn():
            served.append(name)
            await asyncio.sleep(0)

    holder = line.turn()
    await holder.__aenter__()
    waiters = [asyncio.create_task(request(f"waiter {i}")) for i in range(3)]
    await asyncio.sleep(0.01)  # all three wait, in this order
    await holder.__aexit__(None, None, None)
    # Asks at the moment the slot is handed to the first waiter: it must not overtake anyone.
    newcomer = asyncio.create_task(request("newcomer"))
    await asyncio.gather(*waiters, newcomer)
    assert served == ["waiter 0", "waiter 1", "waiter 2", "newcomer"]


@pytest.fixture
async def one_connection(
    database_url: str, engine: AsyncEngine
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app as deployed with a pool of one connection, waited for at most 0.2 s.

    Its writes commit: the table is emptied afterwards, as committed_client does.
    """
    settings = Settings(database_url=database_url, db_pool_size=1, db_pool_timeout=0.2)
    async with started(settings) as (app, client):
        yield app, client
    await empty_sessions(engine)


async def test_a_request_that_waits_longer_than_the_pool_timeout_gets_503(
    one_connection: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = one_connection
    session = await create_session(client)
    with caplog.at_level(logging.WARNING, logger="service.errors"):
        async with connection_line(app).turn():  # the only connection is busy meanwhile
            response = await client.get(f"/sessions/{session['id']}")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:sessions-service:problem:database-unavailable"
    # The log tells a busy pool from a database that is down.
    assert "no pooled connection was free within DB_POOL_TIMEOUT" in caplog.text
    # Once the connection is free again, requests are served.
    assert (await client.get(f"/sessions/{session['id']}")).status_code == 200


@pytest.mark.parametrize("path", ["/sessions", "/sessions/changes"])
async def test_lists_and_the_feed_wait_in_the_same_line(
    one_connection: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    app, client = one_connection
    async with connection_line(app).turn():
        assert (await client.get(path)).status_code == 503
    assert (await client.get(path)).status_code == 200


async def test_searches_wait_for_half_the_connections_and_leave_the_rest_to_other_requests(
    database_url: str, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # A pool of two: one search slot. A search whose text the trigram indexes cannot serve reads
    # the whole table; a burst of them must not take every connection.
    settings = Settings(database_url=database_url, db_pool_size=2, db_pool_timeout=0.2)
    async with started(settings) as (app, client):
        session = await create_session(client)
        async with connection_line(app).search_turn():  # a search in progress
            response = await client.get("/sessions", params={"q": "go"})
            # Not "database unavailable": the database is fine, and serves everything else.
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:sessions-service:problem:searches-busy"
            assert response.headers["retry-after"] == "1"
            assert "searches busy: no search slot was free within DB_POOL_TIMEOUT" in caplog.text
            assert "database unavailable" not in caplog.text
            assert (await client.get(f"/sessions/{session['id']}")).status_code == 200
            # A filter that no index serves without event_id may read the table too: a search.
            unbounded = await client.get("/sessions", params={"track_id": 999})
            assert unbounded.json()["type"] == "urn:sessions-service:problem:searches-busy"
            bounded = {"event_id": session["event_id"], "level": "Expert"}
            assert (await client.get("/sessions", params=bounded)).status_code == 200
            assert (await client.get("/sessions")).status_code == 200  # an admin's
            # An anonymous caller's visibility is a filter too: without event_id, a search.
            async with asgi_client(app) as anonymous:
                unfiltered = await anonymous.get("/sessions")
            assert unfiltered.json()["type"] == "urn:sessions-service:problem:searches-busy"
            # It names what a search is, not only q, which this client never sent.
            assert "without event_id" in unfiltered.json()["detail"]
            # So is a speaker's change feed without event_id: it reads past every draft never
            # public but their own. An anonymous one reads the indexes of what has been public.
            as_speaker = {"Authorization": f"Bearer {issue_token(settings, 'speaker-7')}"}
            async with asgi_client(app, as_speaker) as speaker:
                feed = await speaker.get("/sessions/changes")
                of_event = {"event_id": session["event_id"]}
                assert (await speaker.get("/sessions/changes", params=of_event)).status_code == 200
            assert feed.json()["type"] == "urn:sessions-service:problem:searches-busy"
            async with asgi_client(app) as anonymous:
                assert (await anonymous.get("/sessions/changes")).status_code == 200
            assert (await client.get("/sessions/changes")).status_code == 200
        assert (await client.get("/sessions", params={"q": "go"})).status_code == 200
        assert (await client.get("/sessions", params={"track_id": 999})).status_code == 200
    await empty_sessions(engine)


async def test_a_search_waits_for_its_slot_and_a_connection_within_one_db_pool_timeout() -> None:
    # Both waits are the request's wait for a connection, which DB_POOL_TIMEOUT bounds: a search
    # that got its slot late must not then wait a whole DB_POOL_TIMEOUT more. (Long enough that
    # a loaded machine's late wake-ups stay well inside the margins below: 0.6 s and 0.45 s.)
    timeout = 1.5
    line = ConnectionLine(Settings(db_pool_size=2, db_max_overflow=0, db_pool_timeout=timeout))
    searching, other = line.search_turn(), line.turn()  # the one search slot, both connections
    await searching.__aenter__()
    await other.__aenter__()

    async def search() -> None:
        async with line.search_turn():
            pass

    waiting = asyncio.create_task(search())
    await asyncio.sleep(timeout * 0.6)
    await searching.__aexit__(None, None, None)  # its slot free, for the waiting search
    async with line.turn():  # the connection it held goes to another request at once
        await asyncio.sleep(timeout * 0.7)
        await other.__aexit__(None, None, None)  # past DB_POOL_TIMEOUT since the search came
        with pytest.raises(PoolTimeout, match="DB_POOL_TIMEOUT"):
            await waiting
    async with line.search_turn():  # every slot given back
        pass


async def test_writes_refused_before_they_reach_the_database_never_queue_for_a_connection(
    one_connection: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = one_connection
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    async with connection_line(app).turn():
        # Invalid, unauthenticated: answered at once, not after DB_POOL_TIMEOUT with a 503.
        assert (await client.patch(url, json={"level": "Guru"})).status_code == 422
        assert (await client.post("/sessions", json={"title": "No event"})).status_code == 422
        anonymous = {"Authorization": ""}
        assert (await client.delete(url, headers=anonymous)).status_code == 401
        # A valid write needs the connection: it waits its turn, then gives up.
        assert (await client.patch(url, json={"level": "Expert"})).status_code == 503
    assert (await client.patch(url, json={"level": "Expert"})).status_code == 200


async def test_a_read_sends_its_one_statement_and_nothing_more(
    one_connection: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    # No BEGIN or COMMIT around it, and nothing when the connection goes back to the pool
    # (SQLAlchemy rolls back only a transaction left open): one round trip per read.
    app, client = one_connection
    session = await create_session(client)
    sent: list[str] = []
    async with read_connection(app) as conn:  # the pool's only connection
        conn.add_query_logger(lambda query: sent.append(query.query))
    assert (await client.get(f"/sessions/{session['id']}")).status_code == 200
    await asyncio.sleep(0)  # the logger is called soon after each statement
    assert len(sent) == 1
    assert sent[0].startswith("SELECT sessions.id,")


async def test_a_list_no_visible_session_can_match_sends_nothing_and_needs_no_connection(
    one_connection: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    # Anonymous callers see accepted and confirmed sessions only: state=draft cannot match.
    app, _ = one_connection
    sent: list[str] = []
    async with read_connection(app) as conn:  # the pool's only connection
        conn.add_query_logger(lambda query: sent.append(query.query))
    async with asgi_client(app) as anonymous:
        never = await anonymous.get("/sessions", params={"state": "draft"})
        assert never.json() == {"items": [], "next_cursor": None}
        await asyncio.sleep(0)  # the logger is called soon after each statement
        assert sent == []
        asked = await anonymous.get("/sessions", params={"state": "accepted"})
        assert asked.json() == {"items": [], "next_cursor": None}
        await asyncio.sleep(0)
        assert len(sent) == 1
        async with connection_line(app).turn():  # the only connection is busy meanwhile
            never = await anonymous.get("/sessions", params={"state": "draft"})
            assert never.status_code == 200
            asked = await anonymous.get("/sessions", params={"state": "accepted"})
            assert asked.status_code == 503


async def test_a_read_cancelled_mid_statement_leaves_the_pool_usable(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, db_pool_size=1)
    async with started(settings) as (app, client):

        async def slow_read() -> None:
            async with read_connection(app) as conn:
                await conn.fetch("SELECT pg_sleep(5)")

        read = asyncio.create_task(slow_read())
        watcher = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            for _ in range(3000):  # until the statement is running (30 s at most)
                if await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'active' AND query = 'SELECT pg_sleep(5)'"
                ):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the read's statement never ran")
        finally:
            await watcher.close()
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        # The pool's only connection went back with its statement cancelled (asyncpg waits for
        # the cancellation before its next statement): the next request is served.
        assert (await client.get("/sessions")).status_code == 200


# What a BEGIN, COMMIT or ROLLBACK cancelled mid-way (a statement timeout, pg_cancel_backend) can
# leave a pooled connection in, seen under a stream of pg_cancel_backend calls; made here with
# asyncpg's own calls, behind SQLAlchemy's back, as the cancellation leaves it.
async def _open_transaction(driver: asyncpg.Connection) -> None:
    await driver.execute("BEGIN")  # asyncpg: "cannot use transaction() in a manually started one"


async def _stale_transaction_object(driver: asyncpg.Connection) -> None:
    await driver.transaction().start()  # the next one would be a SAVEPOINT, outside any BEGIN
    await driver.execute("ROLLBACK")


async def _hidden_outer_transaction(driver: asyncpg.Connection) -> None:
    await driver.transaction().start()  # the next write: a SAVEPOINT in it, answered and lost


@pytest.mark.parametrize(
    "leave_in_transaction",
    [_open_transaction, _stale_transaction_object, _hidden_outer_transaction],
)
async def test_a_connection_left_in_a_transaction_is_replaced_before_a_request_uses_it(
    database_url: str,
    engine: AsyncEngine,
    leave_in_transaction: Callable[[asyncpg.Connection], Awaitable[None]],
) -> None:
    stored = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with started(Settings(database_url=database_url, db_pool_size=1)) as (app, client):
            connection = await app.state.db_maker.kw["bind"].raw_connection()
            await leave_in_transaction(connection.driver_connection)
            connection.close()  # back to the pool, whose rollback knows of no transaction
            created = await client.post("/sessions", json=session_body())
            assert created.status_code == 201, created.text
            row = await stored.fetchrow(
                "SELECT * FROM sessions WHERE id = $1", created.json()["id"]
            )
            assert row is not None, "answered 201, but the row was never committed"
            assert (await client.get(created.headers["location"])).json() == created.json()
            open_transactions = await stored.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
            )
            assert open_transactions == 0
    finally:
        await stored.close()
        await empty_sessions(engine)


async def test_a_connection_the_server_refuses_is_a_503_on_reads_and_writes(
    database_url: str,
) -> None:
    # A role allowed no connection: the server answers 53300 ("too many connections"), as it
    # does when full, and 57P03 while it starts or shuts down. The read path got it unwrapped.
    role = f"sessions_test_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        refused_url = make_url(database_url).set(username=role).render_as_string(False)
        async with started(Settings(database_url=refused_url)) as (_, client):
            for response in (
                await client.get("/sessions/1"),
                await client.get("/sessions"),
                await client.get("/sessions/changes"),
                await client.post("/sessions", json=session_body()),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["retry-after"] == "1"
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


async def test_reads_on_overflow_connections_close_them_cleanly(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Beyond DB_POOL_SIZE, a returned connection is closed: I/O, which must run in a greenlet
    # (else "Exception closing connection ... MissingGreenlet", logged at ERROR every time).
    settings = Settings(database_url=database_url, db_pool_size=1, db_max_overflow=3)
    async with started(settings) as (app, client):
        responses = await asyncio.gather(*(client.get("/sessions") for _ in range(24)))
        assert {response.status_code for response in responses} == {200}
        assert app.state.engine.pool.overflow() <= 0  # the overflow connections were closed
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


def commit_then(monkeypatch: pytest.MonkeyPatch, *, applied: bool, raised: BaseException) -> None:
    """The driver's COMMIT, applied or not, then `raised` in place of its answer."""
    commit: Any = AsyncAdapt_asyncpg_connection.commit

    def commit_and_lose_the_answer(connection: Any) -> None:
        if applied:
            commit(connection)
        else:
            connection.rollback()
        raise raised

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "commit", commit_and_lose_the_answer)


@pytest.mark.parametrize("write", ["POST", "PATCH", "DELETE"])
async def test_a_write_whose_commit_went_through_unconfirmed_is_answered_as_stored(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    stored = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            url = f"/sessions/{session['id']}"
            commit_then(monkeypatch, applied=True, raised=ConnectionResetError("lost"))
            if write == "POST":
                response = await client.post("/sessions", json=session_body(title="Unconfirmed"))
                expected = (201, "Unconfirmed", 1)
            elif write == "PATCH":
                response = await client.patch(url, json={"title": "Unconfirmed"})
                expected = (200, "Unconfirmed", 2)
            else:
                response = await client.delete(url)
                expected = (204, session["title"], 2)
            monkeypatch.undo()
        assert response.status_code == expected[0], response.text
        row = await stored.fetchrow(
            "SELECT * FROM sessions WHERE id = $1",
            response.json()["id"] if write == "POST" else session["id"],
        )
        assert (row["title"], row["version"]) == expected[1:]
        if write != "DELETE":  # the answer is the stored session, as after any write
            body = response.json()
            assert (body["title"], body["version"]) == expected[1:]
            assert body["last_modified_at"] == format_utc(row["last_modified_at"])
    finally:
        await stored.close()
        await empty_sessions(engine)


async def test_the_lookup_of_an_unconfirmed_commit_keeps_the_writes_turn_for_a_connection(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lookup connects in place of the connection that failed: were the write's turn given
    # back first, a waiting request would open another, and a replica more than its pool.
    looking, release = asyncio.Event(), asyncio.Event()
    restore_if_stored = transactions._restore_if_stored

    async def held_lookup(app: FastAPI, written: Any) -> bool:
        looking.set()
        await release.wait()
        return await restore_if_stored(app, written)

    try:
        async with started(settings_for(database_url, db_pool_size=1)) as (_, client):
            session = await create_session(client)
            url = f"/sessions/{session['id']}"
            commit_then(monkeypatch, applied=True, raised=ConnectionResetError("lost"))
            monkeypatch.setattr(transactions, "_restore_if_stored", held_lookup)
            patched = asyncio.create_task(client.patch(url, json={"title": "Unconfirmed"}))
            await looking.wait()
            read = asyncio.create_task(client.get(url))
            await asyncio.sleep(0.2)
            assert not read.done()  # waiting for the one connection's turn
            release.set()
            patched_response, read_response = await asyncio.gather(patched, read)
            monkeypatch.undo()
        assert patched_response.status_code == 200, patched_response.text
        assert read_response.json() == patched_response.json()
    finally:
        await empty_sessions(engine)


async def test_a_write_whose_commit_is_unconfirmed_and_not_stored_is_never_answered_retry(
    database_url: str,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            commit_then(monkeypatch, applied=False, raised=ConnectionResetError("lost"))
            with caplog.at_level(logging.WARNING, logger="service.transactions"):
                response = await client.patch(f"/sessions/{session['id']}", json={"title": "Lost"})
            monkeypatch.undo()
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:sessions-service:problem:commit-unconfirmed"
            assert "retry-after" not in response.headers
            # The operator's one trace of a write that may or may not stand, and why.
            assert "commit unconfirmed, and the write not found stored" in caplog.text
            assert "ConnectionResetError: lost" in caplog.text
            assert (await client.get(f"/sessions/{session['id']}")).json() == session
    finally:
        await empty_sessions(engine)


@pytest.mark.parametrize("applied", [True, False], ids=["saved", "not saved"])
async def test_a_commit_the_database_cancels_is_looked_up_never_answered_unchanged(
    database_url: str,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    applied: bool,
) -> None:
    # 57014 at COMMIT (pg_cancel_backend; PostgreSQL stops the statement timeout before it
    # commits, but not every cancellation): query-canceled would tell the client that nothing
    # was changed, of a write that may stand. The outcome is looked up instead, as for a lost one.
    message = "canceling statement due to user request"
    canceled = AsyncAdapt_asyncpg_dbapi.Error(message, asyncpg.QueryCanceledError(message))  # type: ignore[no-untyped-call]
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            commit_then(monkeypatch, applied=applied, raised=canceled)
            with caplog.at_level(logging.WARNING, logger="service.transactions"):
                response = await client.patch(
                    f"/sessions/{session['id']}", json={"title": "Canceled"}
                )
            monkeypatch.undo()
            stored = (await client.get(f"/sessions/{session['id']}")).json()
    finally:
        await empty_sessions(engine)
    if applied:
        assert response.status_code == 200, response.text
        assert response.json() == stored
        assert stored["version"] == 2
    else:
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "urn:sessions-service:problem:commit-unconfirmed"
        assert stored == session
    found = "found stored" if applied else "not found stored"
    assert f"commit unconfirmed, and the write {found}" in caplog.text
    assert "canceling statement due to user request" in caplog.text


@pytest.mark.parametrize("write", ["PATCH", "DELETE"])
async def test_a_lost_commit_is_not_taken_for_another_writers_with_the_same_stamp(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    # The stored stamp is ahead of this host's clock (a replica's clock ran fast): every writer
    # then stamps it plus a microsecond. A's COMMIT is lost and its transaction rolled back; B
    # changes the row next, to the very version and stamp A wrote. A must not be told it stands.
    other = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            await other.execute(
                "UPDATE sessions SET created_at = created_at + interval '1 hour',"
                " last_modified_at = last_modified_at + interval '1 hour',"
                " txid = pg_current_xact_id()::text::bigint WHERE id = $1",
                session["id"],
            )

            def lose_commit_while_another_writer_commits(connection: Any) -> None:
                connection.rollback()
                await_(
                    other.execute(
                        "UPDATE sessions SET title = 'From B', version = 2,"
                        " last_modified_at = last_modified_at + interval '1 microsecond',"
                        " txid = pg_current_xact_id()::text::bigint WHERE id = $1",
                        session["id"],
                    )
                )
                raise ConnectionResetError("lost")

            monkeypatch.setattr(
                AsyncAdapt_asyncpg_connection, "commit", lose_commit_while_another_writer_commits
            )
            url = f"/sessions/{session['id']}"
            if write == "PATCH":
                response = await client.patch(url, json={"title": "From A"})
            else:
                response = await client.delete(url)
            monkeypatch.undo()
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "urn:sessions-service:problem:commit-unconfirmed"
        row = await other.fetchrow(
            "SELECT title, deleted_at FROM sessions WHERE id = $1", session["id"]
        )
        assert dict(row) == {"title": "From B", "deleted_at": None}
    finally:
        await other.close()
        await empty_sessions(engine)


def lose_track_of_the_connection_once(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str
) -> list[Any]:
    """`owner.name` raises asyncpg's InternalClientError once, as when the server ended a pooled
    connection (pg_terminate_backend) and asyncpg read the FATAL message but not yet the close.
    Returns the driver connections it failed on."""
    original = getattr(owner, name)
    failed_on: list[Any] = []

    async def fail_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not failed_on:
            failed_on.append(getattr(self, "_connection", self))
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, fail_once)
    return failed_on


async def test_a_read_on_a_connection_the_driver_lost_track_of_is_503_and_drops_it(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            failed_on = lose_track_of_the_connection_once(monkeypatch, asyncpg.Connection, "fetch")
            response = await client.get(f"/sessions/{session['id']}")
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:sessions-service:problem:database-unavailable"
            assert failed_on[0].is_closed()  # invalidated, not handed to the next request
            assert (await client.get(f"/sessions/{session['id']}")).json() == session
    finally:
        await empty_sessions(engine)


async def test_a_write_on_a_connection_the_driver_lost_track_of_is_503_and_drops_it(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        async with started(settings_for(database_url)) as (_, client):
            session = await create_session(client)
            failed_on = lose_track_of_the_connection_once(
                monkeypatch, asyncpg.prepared_stmt.PreparedStatement, "fetch"
            )
            url = f"/sessions/{session['id']}"
            response = await client.patch(url, json={"title": "Not applied"})
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:sessions-service:problem:database-unavailable"
            assert failed_on[0].is_closed()
            assert (await client.get(url)).json() == session
            assert (await client.patch(url, json={"title": "Applied"})).status_code == 200
    finally:
        await empty_sessions(engine)


async def test_a_request_stopped_while_it_commits_is_told_its_write_may_be_saved(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn cancels the requests still running at GRACEFUL_SHUTDOWN_TIMEOUT: here, in COMMIT.
    try:
        async with started(settings_for(database_url)) as (app, _):
            commit_then(monkeypatch, applied=True, raised=asyncio.CancelledError())
            sent: list[MutableMapping[str, Any]] = []
            body = orjson.dumps(session_body())

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            scope = post_sessions_scope(ADMIN_HEADERS) | {"app": app}
            await app(scope, receive, send)  # answered: the cancellation ends there
            monkeypatch.undo()
        start, answer = sent[0], orjson.loads(sent[1]["body"])
        assert start["status"] == 503
        assert answer["type"] == "urn:sessions-service:problem:commit-unconfirmed"
        assert b"retry-after" not in dict(start["headers"])
        assert dict(start["headers"])[b"vary"] == b"Authorization"
    finally:
        await empty_sessions(engine)


@pytest.fixture
def database_losing_connections_at_commit(server_url: str) -> Iterator[str]:
    """A database of its own: the trigger would disturb the other tests'."""
    with migrated_database(server_url, prefix="sessions_test_commit") as database_url:
        yield database_url


async def test_a_write_whose_commit_fails_answers_an_error_and_stores_nothing(
    database_losing_connections_at_commit: str,
) -> None:
    database_url = database_losing_connections_at_commit
    stored = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await stored.execute(LOSE_CONNECTION_AT_COMMIT)
        async with started(Settings(database_url=database_url)) as (_, client):
            created = await client.post("/sessions", json=session_body(title=LOST_AT_COMMIT))
            assert created.status_code == 503, created.text
            assert created.headers["content-type"] == "application/problem+json"
            # The commit's outcome unknown to the service (looked up, not found): never "retry".
            assert created.json()["type"] == "urn:sessions-service:problem:commit-unconfirmed"
            assert "retry-after" not in created.headers
            assert await stored.fetchval("SELECT count(*) FROM sessions") == 0

            session = await create_session(client)
            url = f"/sessions/{session['id']}"
            changed = await client.patch(url, json={"title": LOST_AT_COMMIT})
            assert changed.status_code == 503, changed.text
            row = await stored.fetchrow("SELECT title, version FROM sessions")
            assert dict(row) == {"title": session["title"], "version": 1}
            # The pool replaced the lost connection: the next requests are served.
            assert (await client.get(url)).json() == session
    finally:
        await stored.close()
