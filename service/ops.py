"""Endpoints for the platform, not for API clients: liveness, readiness, metrics.

They stay out of the OpenAPI document (include_in_schema=False): generated clients and API
tests are about /sessions, and /metrics is not JSON at all. Each answers HEAD as GET (RFC 9110
9.1), without the body.
"""

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import State

from service.db import DATABASE_ERRORS, UNDEFINED_TABLE, driver_reason, server_timeouts, sqlstate
from service.errors import problem
from service.metrics import Metrics

router = APIRouter(include_in_schema=False)

logger = logging.getLogger(__name__)


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP. The database is not asked: restarting this process
    would not bring it back."""
    return {"status": "ok"}


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(request: Request) -> Any:
    """Readiness: the database answers within READINESS_TIMEOUT and its schema is one this
    code can serve; asked on a connection of its own, not the requests' pool (see
    service.db.create_probe_engine)."""
    try:
        schema = await _database_schema(request.app.state)
    except DATABASE_ERRORS as exc:  # any of them: not ready. Other errors (a bug) stay 500s.
        logger.warning("not ready: the database is unavailable (%s)", driver_reason(exc))
        return _not_ready("The database is unavailable.", database="unavailable")
    if schema in NOT_SERVABLE:
        logger.warning("not ready: the database schema is %s", schema)
        return _not_ready(
            "The database schema is not migrated to this version: run `sessions-service migrate`.",
            database="ok",
            schema=schema,
        )
    return {"status": "ready", "checks": {"database": "ok", "schema": schema}}


@router.api_route("/metrics", methods=["GET", "HEAD"])
async def metrics(request: Request) -> Response:
    """Prometheus metrics, in the text exposition format."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(app_metrics.render(), media_type=Metrics.CONTENT_TYPE)


async def log_schema_state(state: State) -> None:
    """At start, an error in the log if the database's schema is one this code cannot serve:
    until `migrate` runs, every request that reads it is a 503. A database that does not answer
    yet is only a warning: the service starts all the same, and recovers when it does."""
    try:
        schema = await _database_schema(state)
    except DATABASE_ERRORS as exc:
        logger.warning("the database is unavailable at start (%s)", driver_reason(exc))
        return
    if schema in NOT_SERVABLE:
        logger.error("the database schema is %s: run `sessions-service migrate`", schema)


async def log_pooled_timeouts(state: State) -> None:
    """At start, behind a pooler (DB_BEHIND_POOLER), a warning for each timeout that the
    database's connections do not have as set: the service cannot set them there itself (a
    pooler refuses startup parameters), the role must (ALTER ROLE … SET)."""
    if not state.settings.db_behind_pooler:
        return
    try:
        async with asyncio.timeout(state.settings.readiness_timeout):
            async with state.probe_engine.connect() as conn:
                rows = await conn.execute(_TIMEOUTS)
    except DATABASE_ERRORS:
        return  # log_schema_state says the database is unavailable
    found = {name: setting for name, setting in rows}
    for name, wanted in server_timeouts(state.settings).items():
        if found.get(name) != wanted:
            logger.warning(
                "%s is %s ms on the database's connections, not DB_%s (%s ms): behind a "
                "pooler, set it on the service's role: ALTER ROLE <role> SET %s = %s",
                name,
                found.get(name),
                name.upper(),
                wanted,
                name,
                wanted,
            )


_TIMEOUTS = text(
    "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', 'lock_timeout')"
)


async def _database_schema(state: State) -> str:
    """schema_state of the app's database, asked within READINESS_TIMEOUT.

    Asked once at a time: a probe that comes while it is being asked gets the same answer.
    Each asking takes a connection of its own (the probe engine has no pool), and /readyz is
    open to anyone: many at once would each have taken one of the server's connections."""
    check: asyncio.Task[str] | None = state.schema_check
    if check is None or check.done():
        check = state.schema_check = asyncio.create_task(_ask_database_schema(state))
        # Retrieved even when every probe that waited for it has gone.
        check.add_done_callback(lambda done: done.cancelled() or done.exception())
    # Shielded: a probe that goes (its client closed the connection) leaves it to the others;
    # and one that waits READINESS_TIMEOUT has its answer then, though the asking, cancelled
    # at its own timeout, takes longer to end (SQLAlchemy's first connect, behind PgBouncer
    # waiting for a server connection, took twice as long).
    async with asyncio.timeout(state.settings.readiness_timeout):
        return await asyncio.shield(check)


async def _ask_database_schema(state: State) -> str:
    async with asyncio.timeout(state.settings.readiness_timeout):
        revisions = await _applied_revisions(state.probe_engine)
    return schema_state(revisions, state.migration_heads, state.known_revisions)


async def _applied_revisions(engine: AsyncEngine) -> frozenset[str] | None:
    """The revisions alembic_version records; None when there is no such table."""
    async with engine.connect() as conn:
        try:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except ProgrammingError as exc:
            if sqlstate(exc) == UNDEFINED_TABLE:  # never migrated
                return None
            raise  # another reason, such as a role that may not read it: the database's own
        return frozenset(rows.scalars())


NOT_SERVABLE = frozenset({"missing", "behind"})


def schema_state(
    applied: frozenset[str] | None, heads: frozenset[str], known: frozenset[str]
) -> str:
    """at head; missing or behind (not ready); or ahead: migrated by a newer release.

    Ahead stays ready on purpose: in a rolling deploy the migration job runs first, and the old
    replicas keep serving (migrations are written to be compatible with the previous release)
    until the new ones are ready. Taking them out of the load balancer would be an outage.
    """
    if not applied:
        return "missing" if applied is None else "behind"
    if applied == heads:
        return "at head"
    if applied <= known:
        return "behind"
    return "ahead"


def _not_ready(detail: str, **checks: str) -> Response:
    return problem(503, detail, slug="not-ready", headers={"Retry-After": "5"}, checks=checks)
