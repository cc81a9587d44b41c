"""The bare reference: Starlette + an asyncpg pool + orjson, the same SQL on the same data.

What a careful hand-written service costs at least: the statements the service sends (one per
read and no transaction around it; BEGIN, a locking read, a column-exact UPDATE and COMMIT for
PATCH; BEGIN, one INSERT … RETURNING and COMMIT for POST), and nothing more (`create_pool`), and
the same JSON bytes. It checks only the shape of request bodies (JSON objects with known
fields), not every rule the service enforces, and checks no bearer token (it only reads the
`sub` it stamps as creator_id), so it is a lower bound on cost.

Run: BENCH_REFERENCE_DSN=postgresql://… uvicorn bench.reference_app:app
"""

import base64
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Only to sign list cursors exactly as the service does (the same bytes, the same HMAC cost).
from service.pagination import LIST_CURSOR, TOKEN_FORMAT, TokenSigner, query_fingerprint
from service.repository import SessionFilter
from service.settings import DEVELOPMENT_CURSOR_SECRET

COLUMNS = (
    "id", "event_id", "title", "subtitle", "short_abstract", "long_abstract", "comments",
    "level", "language", "starts_at", "ends_at", "track_id", "session_type_id",
    "microlocation_id", "slides_url", "video_url", "audio_url", "signup_url", "state",
    "is_locked", "creator_id", "submitted_at", "created_at", "last_modified_at", "version",
)  # fmt: skip
DATETIMES = ("starts_at", "ends_at", "submitted_at", "created_at", "last_modified_at")
READABLE = frozenset(COLUMNS)
SERVER_SET = {"id", "creator_id", "submitted_at", "created_at", "last_modified_at", "version"}
WRITABLE = READABLE - SERVER_SET
CREATE_DEFAULTS: dict[str, Any] = dict.fromkeys(WRITABLE) | {"state": "draft", "is_locked": False}
INSERTED = (*sorted(WRITABLE), "creator_id", "submitted_at", "created_at", "last_modified_at")
INSERTED += ("version",)
ONE_TICK = timedelta(microseconds=1)

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM sessions"
GET = f"{_SELECT} WHERE id = $1 AND deleted_at IS NULL"
GET_FOR_UPDATE = f"{GET} FOR UPDATE"
FIRST_PAGE = f"{_SELECT} WHERE deleted_at IS NULL AND event_id = $1 ORDER BY id LIMIT $2"
NEXT_PAGE = f"{_SELECT} WHERE deleted_at IS NULL AND event_id = $1 AND id > $3 ORDER BY id LIMIT $2"
# The writing transaction's id, which the change feed orders by (as the service stamps it).
TXID = "pg_current_xact_id()::text::bigint"
INSERT = (
    f"INSERT INTO sessions ({', '.join(INSERTED)}, txid) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(INSERTED) + 1))}, {TXID}) RETURNING id"
)


def render(row: Mapping[str, Any]) -> dict[str, Any]:
    session = dict(row)
    for name in DATETIMES:
        value = session[name]
        if value is not None:
            session[name] = value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    return session


def json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # Date, ETag, Last-Modified and the service's other headers are left out: bytes of JSON.
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def problem(status: int, detail: str) -> Response:
    body = {"type": "about:blank", "title": detail, "status": status}
    return Response(orjson.dumps(body), status, media_type="application/problem+json")


def parse_input(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if data.keys() - READABLE:
        return None  # unknown fields; output-only ones are ignored, as the service does
    changes = {name: value for name, value in data.items() if name in WRITABLE}
    for name in ("starts_at", "ends_at"):
        if isinstance(changes.get(name), str):
            try:
                changes[name] = datetime.fromisoformat(changes[name]).astimezone(UTC)
            except ValueError:
                return None
    return changes


def subject(request: Request) -> str | None:
    """The token's `sub`, read without checking the token: the reference does no auth."""
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    try:
        payload = token.split(".")[1]
        return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]  # type: ignore[no-any-return]
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def session_id(request: Request) -> int | None:
    value = request.path_params["session_id"]
    return value if 1 <= value <= 2**31 - 1 else None


async def get_session(request: Request) -> Response:
    pool: asyncpg.Pool = request.app.state.pool
    row = await pool.fetchrow(GET, session_id(request))
    if row is None:
        return problem(404, "Not Found")
    return json(render(row))


def list_query(event_id: int) -> str:
    """The query a list cursor is bound to, as the service computes it (sort=id, one event)."""
    return query_fingerprint({"sort": ["id"], **SessionFilter(event_id=event_id).criteria()})


async def list_sessions(request: Request) -> Response:
    pool: asyncpg.Pool = request.app.state.pool
    signer: TokenSigner = request.app.state.signer
    try:
        event_id = int(request.query_params["event_id"])
        limit = int(request.query_params.get("limit", 20))
        cursor = request.query_params.get("cursor")
        after = signer.verify(LIST_CURSOR, cursor)["after"][0] if cursor else None
    except (KeyError, ValueError, TypeError):
        return problem(422, "Unprocessable Entity")
    if after is None:
        rows = await pool.fetch(FIRST_PAGE, event_id, limit + 1)
    else:
        rows = await pool.fetch(NEXT_PAGE, event_id, limit + 1, after)
    items = [render(row) for row in rows[:limit]]
    next_cursor, headers = None, {}
    if len(rows) > limit:
        position = {
            "format": TOKEN_FORMAT,
            "query": list_query(event_id),
            "after": [items[-1]["id"]],
        }
        next_cursor = signer.sign(LIST_CURSOR, position)
        headers["Link"] = f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"'
    return json({"items": items, "next_cursor": next_cursor}, headers=headers)


async def change_session(
    pool: asyncpg.Pool, session_id: int | None, patch: Mapping[str, Any]
) -> dict[str, Any] | None:
    """PATCH's transaction: the session as changed, or None if there is none to change."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(GET_FOR_UPDATE, session_id)
        if row is None:
            return None
        session = dict(row)
        changes = {name: value for name, value in patch.items() if session[name] != value}
        if changes:
            changes["last_modified_at"] = max(
                datetime.now(UTC), session["last_modified_at"] + ONE_TICK
            )
            changes["version"] = session["version"] + 1
            if patch.get("state") == "pending" and session["submitted_at"] is None:
                changes["submitted_at"] = changes["last_modified_at"]
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, 2))
            await conn.execute(
                f"UPDATE sessions SET {assignments}, txid = {TXID} WHERE id = $1",
                session["id"],
                *changes.values(),
            )
            session.update(changes)
    return session


async def add_session(
    pool: asyncpg.Pool, values: Mapping[str, Any], creator_id: str | None
) -> dict[str, Any]:
    """POST's transaction: the session as stored."""
    now = datetime.now(UTC)
    stamps = {"created_at": now, "last_modified_at": now, "version": 1}
    stamps |= {"creator_id": creator_id, "submitted_at": None}
    session = CREATE_DEFAULTS | dict(values) | stamps
    if session["state"] == "pending":
        session["submitted_at"] = now
    async with pool.acquire() as conn, conn.transaction():  # BEGIN and COMMIT, as the service
        session["id"] = await conn.fetchval(INSERT, *(session[name] for name in INSERTED))
    return {name: session[name] for name in COLUMNS}


async def update_session(request: Request) -> Response:
    patch = parse_input(await request.body())
    if patch is None:
        return problem(422, "Unprocessable Entity")
    session = await change_session(request.app.state.pool, session_id(request), patch)
    if session is None:
        return problem(404, "Not Found")
    return json(render(session))


async def create_session(request: Request) -> Response:
    values = parse_input(await request.body())
    if values is None or not {"event_id", "title"} <= values.keys():
        return problem(422, "Unprocessable Entity")
    session = await add_session(request.app.state.pool, values, subject(request))
    return json(render(session), 201, {"Location": f"/sessions/{session['id']}"})


async def _no_reset_query(connection: asyncpg.Connection) -> None:
    """Nothing: asyncpg has already rolled back any transaction left open (see create_pool)."""


def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    """The reference's pool: `size` connections, kept open.

    By default asyncpg resets every connection it takes back with one more statement (`SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a round trip per request that
    the service does not make: SQLAlchemy's pool only rolls back a transaction left open (none
    is, after a read or a commit). A custom `reset` replaces that statement; asyncpg still
    rolls back an open transaction first.
    """
    return asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=_no_reset_query)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    dsn = app.state.dsn or os.environ["BENCH_REFERENCE_DSN"]
    async with create_pool(dsn, app.state.pool_size) as pool:
        app.state.pool = pool
        yield


def create_app(dsn: str | None = None, pool_size: int = 20) -> Starlette:
    """The app; pool_size is the service's default pool (DB_POOL_SIZE 20, no overflow)."""
    app = Starlette(
        routes=[
            Route("/sessions", list_sessions, methods=["GET"]),
            Route("/sessions", create_session, methods=["POST"]),
            Route("/sessions/{session_id:int}", get_session, methods=["GET"]),
            Route("/sessions/{session_id:int}", update_session, methods=["PATCH"]),
        ],
        lifespan=lifespan,
    )
    app.state.dsn = dsn
    app.state.pool_size = pool_size
    app.state.signer = TokenSigner(os.environ.get("CURSOR_SECRET", DEVELOPMENT_CURSOR_SECRET))
    return app


app = create_app()
