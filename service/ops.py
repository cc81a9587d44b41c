"""Endpoints for the platform, not for API clients: liveness, readiness, metrics.

They stay out of the OpenAPI document (include_in_schema=False): generated clients and API
tests are about /sessions, and /metrics is not JSON at all. Each answers HEAD as GET (RFC 9110
9.1), without the body.
"""

import asyncio
import logging
from typing import Any, NamedTuple

from fastapi import APIRouter, Request, Response
from sqlalchemy import bindparam, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import State

from service.db import DATABASE_ERRORS, UNDEFINED_TABLE, driver_reason, server_timeouts, sqlstate
from service.errors import problem
from service.metrics import Metrics
from service.migrations import DATABASE_ENCODING
from service.models import IdempotencyKey, Session, SessionDeparture

router = APIRouter(include_in_schema=False)

logger = logging.getLogger(__name__)


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP. The database is not asked: restarting this process
    would not bring it back."""
    return {"status": "ok"}


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(request: Request) -> Any:
    """Readiness: the database answers within READINESS_TIMEOUT and can be served
    (DatabaseState.unservable: its encoding, its schema, where the role finds the tables, the
    role's privileges); asked on a connection of its own, not the requests' pool (see
    service.db.create_probe_engine)."""
    try:
        database = await _database_state(request.app.state)
    except DATABASE_ERRORS as exc:  # any of them: not ready. Other errors (a bug) stay 500s.
        logger.warning("not ready: the database is unavailable (%s)", driver_reason(exc))
        return _not_ready("The database is unavailable.", database="unavailable")
    if unservable := database.unservable():
        logger.warning("not ready: %s", unservable.reason)
        return _not_ready(unservable.detail, **unservable.checks)
    return {"status": "ready", "checks": {"database": "ok", "schema": database.schema}}


@router.api_route("/metrics", methods=["GET", "HEAD"])
async def metrics(request: Request) -> Response:
    """Prometheus metrics, in the text exposition format."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(app_metrics.render(), media_type=Metrics.CONTENT_TYPE)


async def log_schema_state(state: State) -> None:
    """At start, an error in the log if the database cannot be served
    (DatabaseState.unservable), which /readyz says too. A database that does not answer yet is
    only a warning: the service starts all the same, and recovers when it does."""
    try:
        database = await _database_state(state)
    except DATABASE_ERRORS as exc:
        logger.warning("the database is unavailable at start (%s)", driver_reason(exc))
        return
    if unservable := database.unservable():
        logger.error("%s", unservable.reason)


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
    except DATABASE_ERRORS as exc:
        logger.warning(
            "the timeouts of the database's connections are not checked: %s", driver_reason(exc)
        )
        return
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


class Unservable(NamedTuple):
    """Why the database cannot be served: the log's reason, /readyz's detail and checks."""

    reason: str
    detail: str
    checks: dict[str, str]


class DatabaseState(NamedTuple):
    encoding: str  # the server_encoding: only DATABASE_ENCODING can be served
    schema: str  # see schema_state
    missing_privileges: tuple[tuple[str, str], ...]  # (privilege, table), when servable
    # Of the service's tables and alembic_version, as the role's search_path finds them: one,
    # unless another schema ahead of the migrated one holds a table of the same name.
    table_schemas: tuple[str, ...] = ()

    def unservable(self) -> Unservable | None:
        """Why requests would fail on this database, the first reason found; None if none."""
        if self.encoding != DATABASE_ENCODING:
            return Unservable(
                f"{self.encoding_detail}: texts it cannot hold would be 500s",
                f"The database cannot hold every text: {self.encoding_detail}.",
                {"database": "ok", "encoding": self.encoding},
            )
        if self.schema in NOT_SERVABLE:  # until `migrate` runs, every request is a 503
            return Unservable(
                f"the database schema is {self.schema}: run `sessions-service migrate`",
                "The database schema is not migrated to this version: run "
                "`sessions-service migrate`.",
                {"database": "ok", "schema": self.schema},
            )
        if len(self.table_schemas) > 1:
            return Unservable(
                f"{self.search_path_detail}: requests would use the wrong ones",
                f"The service's role cannot tell its tables: {self.search_path_detail}.",
                {"database": "ok", "schema": self.schema, "search_path": "mixed"},
            )
        if self.missing_privileges:  # the requests that need one would be 500s
            return Unservable(
                f"the service's database role lacks {self.privileges_detail}",
                f"The service's database role lacks privileges: {self.privileges_detail}.",
                {"database": "ok", "schema": self.schema, "privileges": "missing"},
            )
        return None

    @property
    def search_path_detail(self) -> str:
        return (
            f"the search_path finds the service's tables in several schemas "
            f"({', '.join(self.table_schemas)}) (see README, Roles)"
        )

    @property
    def encoding_detail(self) -> str:
        return (
            f"the database's encoding is {self.encoding}, not {DATABASE_ENCODING} "
            "(see README, Migrations)"
        )

    @property
    def privileges_detail(self) -> str:
        missing = ", ".join(
            f"{privilege} on {table}" for privilege, table in self.missing_privileges
        )
        return f"{missing} (see README, Roles)"


async def _database_state(state: State) -> DatabaseState:
    """The app's database as readiness sees it, asked within READINESS_TIMEOUT.

    Asked once at a time: a probe that comes while it is being asked gets the same answer.
    Each asking takes a connection of its own (the probe engine has no pool), and /readyz is
    open to anyone: many at once would each have taken one of the server's connections."""
    check: asyncio.Task[DatabaseState] | None = state.database_check
    if check is None or check.done():
        check = state.database_check = asyncio.create_task(_ask_database_state(state))
        # Retrieved even when every probe that waited for it has gone.
        check.add_done_callback(lambda done: done.cancelled() or done.exception())
    # Shielded: a probe that goes (its client closed the connection) leaves it to the others;
    # and one that waits READINESS_TIMEOUT has its answer then, though the asking, cancelled
    # at its own timeout, takes longer to end (SQLAlchemy's first connect, behind PgBouncer
    # waiting for a server connection, took twice as long).
    async with asyncio.timeout(state.settings.readiness_timeout):
        return await asyncio.shield(check)


async def _ask_database_state(state: State) -> DatabaseState:
    async with asyncio.timeout(state.settings.readiness_timeout):
        async with state.probe_engine.connect() as conn:
            encoding = (await conn.execute(_ENCODING)).scalar_one()
            revisions = await _applied_revisions(conn)
            schema = schema_state(revisions, state.migration_heads, state.known_revisions)
            if schema in NOT_SERVABLE:  # its tables may not be there to ask about
                return DatabaseState(encoding, schema, ())
            rows = await conn.execute(_MISSING_PRIVILEGES)
            missing = tuple((privilege, table) for privilege, table in rows)
            schemas = tuple((await conn.execute(_TABLE_SCHEMAS)).scalars())
            return DatabaseState(encoding, schema, missing, schemas)


_ENCODING = text("SELECT current_setting('server_encoding')")


# What README's Roles section grants on every table of the service, and what it uses of them
# (SELECT … FOR UPDATE needs UPDATE; idempotency keys and departures are deleted). A table
# that is not there counts as missing all of them.
SERVICE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
SERVICE_TABLES = (Session, SessionDeparture, IdempotencyKey)
_MISSING_PRIVILEGES = text(
    "SELECT privilege, table_name "
    "FROM unnest(CAST(:tables AS text[])) AS t(table_name), "
    "unnest(CAST(:privileges AS text[])) AS p(privilege) "
    "WHERE to_regclass(table_name) IS NULL "
    "OR NOT has_table_privilege(to_regclass(table_name), privilege) "
    "ORDER BY table_name, array_position(CAST(:privileges AS text[]), privilege)"
).bindparams(
    bindparam("tables", [model.__tablename__ for model in SERVICE_TABLES]),
    bindparam("privileges", list(SERVICE_PRIVILEGES)),
)


_TABLE_SCHEMAS = text(
    "SELECT DISTINCT relnamespace::regnamespace::text FROM pg_class "
    "WHERE oid = ANY (SELECT to_regclass(name) FROM unnest(CAST(:tables AS text[])) AS t(name)) "
    "ORDER BY 1"
).bindparams(
    bindparam("tables", ["alembic_version", *(model.__tablename__ for model in SERVICE_TABLES)])
)


async def _applied_revisions(conn: AsyncConnection) -> frozenset[str] | None:
    """The revisions alembic_version records; None when there is no such table."""
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
