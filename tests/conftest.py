"""Test fixtures on a real PostgreSQL.

The server is TEST_DATABASE_URL, else DATABASE_URL, else an embedded PostgreSQL (pgserver) in a
temporary directory. Each test run creates its own database there, builds it with the migrations
and drops it at the end, so runs never see each other's data.
"""

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.main import create_app
from service.migrations import migrate
from service.repository import make_sessionmaker
from service.settings import Settings, to_asyncpg_url


def asyncpg_dsn(url: str) -> str:
    """The same URL without the SQLAlchemy driver name, for a plain asyncpg connection."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    configured = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        yield to_asyncpg_url(configured)
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="sessions-test-pg-") as data_dir:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        yield to_asyncpg_url(server.get_uri())
        server.cleanup()


def create_database(server_url: str, prefix: str = "sessions_test") -> str:
    """Create an empty database on the server and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await conn.execute(
                f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)'
            )
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    url = create_database(server_url)
    migrate(url, configure_logging=False)
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        await conn.begin()
        yield conn
        await conn.rollback()


def build_app(database_url: str) -> FastAPI:
    return create_app(Settings(database_url=database_url))


@pytest.fixture
def app(database_url: str, connection: AsyncConnection) -> FastAPI:
    """The app, its unit of work nested in the test's transaction (savepoints)."""
    app = build_app(database_url)
    app.state.db_maker = make_sessionmaker(connection, join_transaction_mode="create_savepoint")
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def committed_client(
    database_url: str, engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests really commit, each on a pooled connection of its own.

    For claims about commits and concurrency; the table is emptied afterwards.
    """
    app = build_app(database_url)
    app.state.db_maker = make_sessionmaker(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE sessions RESTART IDENTITY"))


@pytest.fixture
async def stored(engine: AsyncEngine) -> AsyncIterator["StoredRows"]:
    """Reads committed rows on a connection of its own, outside the app."""
    conn = await asyncpg.connect(asyncpg_dsn(engine.url.render_as_string(hide_password=False)))
    yield StoredRows(conn)
    await conn.close()


class StoredRows:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def row(self, session_id: int) -> dict[str, Any]:
        record = await self.conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
        assert record is not None, f"no row for session {session_id}"
        return dict(record)


def session_body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /sessions body."""
    return {"event_id": 1, "title": "Async SQLAlchemy in practice"} | overrides


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements the engine sends during the test, in order."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement.lstrip())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine.sync_engine, "before_cursor_execute", record)


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app as deployed (its lifespan run: an engine of its own) and a client on it."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield app, client
