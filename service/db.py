"""The database: the declarative base, the app's engines, queries run on the driver, the keys
the repository's before_flush hook and the unit of work (service.transactions) share in an ORM
session's info, and what the database's errors mean (the database cannot serve now, a lock not
granted...). Nothing here knows of HTTP: models and migrations import it without the web stack,
and service.errors answers each kind of error."""

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy import MetaData, Select, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from service.settings import Settings

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


ASYNCPG_DIALECT = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]


class DriverQuery:
    """A Core SELECT compiled once, run by asyncpg as one of its cached prepared statements,
    each row made a `row` (a named tuple class).

    SQLAlchemy's execution and result layers cost more than the query on a read of one row;
    the statement is still written (and checked) against the model's table.
    """

    def __init__(self, statement: Select[Any], row: Any) -> None:
        compiled = statement.compile(dialect=ASYNCPG_DIALECT)
        self.sql = compiled.string
        self.parameters = compiled.positiontup or []
        self.row = row

    async def fetch(self, conn: Any, **values: object) -> list[Any]:
        records = await conn.fetch(self.sql, *(values[name] for name in self.parameters))
        return [self.row._make(record.values()) for record in records]


# The driver's errors for a connection it can no longer use: InternalClientError is its protocol's
# state machine confused by a connection that the server ended while it sat in the pool (the
# FATAL message read, the socket not yet closed), which the next statement then runs into.
DRIVER_CONNECTION_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError)
# What asking the database can raise: SQLAlchemy's errors, the driver's and its adapter's when
# they arrive unwrapped, and OSError (no route to the server; TimeoutError).
DATABASE_ERRORS = (
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    *DRIVER_CONNECTION_ERRORS,
    AsyncAdapt_asyncpg_dbapi.Error,
    OSError,
)


# How long a stop waits for the pool's connections to close. Each close waits for the server's
# answer (up to DB_STATEMENT_TIMEOUT + 1 s), one connection after another: a server cut off by
# the network never answers, and a stop would have waited minutes, past any platform's grace
# period. Idle by then, a connection left open ends with the process.
DISPOSE_TIMEOUT = 3.0


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's pooled connections, waiting at most DISPOSE_TIMEOUT."""
    try:
        async with asyncio.timeout(DISPOSE_TIMEOUT):
            await engine.dispose()
    except TimeoutError:
        logger.warning(
            "the database did not answer within %s s while the pool's connections were being "
            "closed: the others end with the process",
            DISPOSE_TIMEOUT,
        )


def create_engine(settings: Settings) -> AsyncEngine:
    """The engine of the app: every wait on the database is bounded by a setting."""
    engine = create_async_engine(
        _database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # No pool_pre_ping: it costs a round trip on every checkout. A connection the server
        # closed is discarded on checkout below at no cost, and any other disconnect error
        # invalidates the whole pool (SQLAlchemy's default), so an outage fails one request,
        # not one per pooled connection.
        connect_args=_connect_args(settings),
        hide_parameters=True,  # a statement's values are clients' data: never in an error's text
    )
    event.listen(engine.sync_engine, "do_connect", _connect)
    event.listen(engine.sync_engine, "checkout", _discard_unusable_connection)
    event.listen(engine.sync_engine, "handle_error", _driver_lost_the_connection)
    return engine


def create_probe_engine(settings: Settings) -> AsyncEngine:
    """An engine without a pool, for /readyz: a connection of its own for each probe (and for
    looking up a write whose commit went unconfirmed, service.transactions).

    The requests' pool, all busy under load or behind a row lock, says nothing about whether
    the database answers: a probe waiting there would take every replica out of the load
    balancer at once, and turn a busy service into an unavailable one.
    """
    engine = create_async_engine(
        _database_url(settings),
        poolclass=NullPool,
        connect_args=_connect_args(settings),
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def _database_url(settings: Settings) -> str:
    assert settings.database_url
    return settings.database_url


def _connect_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        # The client's own bound, for a server that does not answer at all (frozen, cut off);
        # a second later than the server's, which ends the statement more cleanly.
        "command_timeout": settings.db_statement_timeout + 1,
    }
    if settings.db_behind_pooler:
        return args | pooled_statements(settings)  # the timeouts are the role's (README)
    # For every statement of the connection, in milliseconds. Only writes wait for row locks;
    # reads wait for a lock only while DDL (a migration) holds the table. The migrations have
    # an engine and a lock_timeout of their own (alembic/env.py).
    return args | {"server_settings": server_timeouts(settings)}


def pooled_statements(settings: Settings) -> dict[str, Any]:
    """Behind a pooler (DB_BEHIND_POOLER), the connect arguments that keep prepared statements
    apart: asyncpg's own unnamed (its cache off), SQLAlchemy's each under a name of its own. A
    transaction pooler may run the next statement on a server connection that has another
    statement of the same name (a client's before), or none."""
    if not settings.db_behind_pooler:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def server_timeouts(settings: Settings) -> dict[str, str]:
    """The PostgreSQL settings the service's statements run under, in milliseconds."""
    return {
        "statement_timeout": _milliseconds(settings.db_statement_timeout),
        "lock_timeout": _milliseconds(settings.db_lock_timeout),
    }


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


def _milliseconds(seconds: float) -> str:
    return str(round(seconds * 1000))


def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
    """Open a connection. A server that refuses it cannot serve now, whatever its reason: an
    OperationalError, as the driver raises for one it cannot reach. Some reasons have SQLSTATEs
    that, on a statement, mean a bug (a database closed to connections, 55000; a role without
    CONNECT, 42501), where 3D000 or 28P01 already read as unavailable."""
    try:
        return dialect.connect(*cargs, **cparams)
    except AsyncAdapt_asyncpg_dbapi.Error as exc:
        if isinstance(exc, _ADAPTER_CONNECTION_ERRORS):
            raise
        driver_error = exc.__cause__ or exc  # asyncpg's, which the adapter's wraps
        refused = AsyncAdapt_asyncpg_dbapi.OperationalError(  # type: ignore[no-untyped-call]
            str(exc), driver_error
        )
        raise refused from driver_error


def _driver_lost_the_connection(context: ExceptionContext) -> None:
    # SQLAlchemy's adapter passes asyncpg's InternalClientError on as an InternalError, which is
    # no disconnect to its dialect: without this, the connection went back to the pool.
    error = context.original_exception
    if isinstance(error, DRIVER_CONNECTION_ERRORS) or isinstance(
        error.__cause__, DRIVER_CONNECTION_ERRORS
    ):
        context.is_disconnect = True


def _discard_unusable_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Make the pool replace a connection no request may use, before one does (DisconnectionError).

    One the server closed (a restart, a failover), which asyncpg already knows of; and one left
    inside a transaction. A cancelled BEGIN, COMMIT or ROLLBACK (a statement timeout, a client
    timeout, pg_cancel_backend) can leave asyncpg and SQLAlchemy's adapter disagreeing on whether
    a transaction is open, and the pool's rollback on return then sends nothing. The next write on
    such a connection would fail, or worse, run in a SAVEPOINT inside a transaction that nobody
    ever commits: answered 201 and lost. Reads would fail until the process restarts.
    """
    driver = dbapi_connection.driver_connection
    if driver.is_closed():
        raise sa_exc.DisconnectionError("the server closed this pooled connection")
    # _top_xact: the transaction asyncpg will nest the next one in (as its own reset reads it).
    if driver.is_in_transaction() or getattr(driver, "_top_xact", None) is not None:
        raise sa_exc.DisconnectionError(
            "a failed BEGIN, COMMIT or ROLLBACK left a transaction open"
        )


# Where the before_flush hook (service.repository) lists the objects it stamped, in the session's
# info: a commit that is never confirmed is checked against their stamps.
STAMPED = "stamped"
# Where the repository keeps the id of the transaction when it locks a row to change it: a stored
# version and stamp are not proof enough that this write was the one stored. Another writer that
# locked the row after this one's transaction was lost computes the same pair when the stored stamp
# is ahead of its clock (the stamp is then the stored one plus a microsecond, for both). A new row
# needs no such proof: its id is this write's own.
WRITING_TRANSACTION = "writing_transaction"


# The DBAPI adapter's errors for a connection that failed (no SQLSTATE of the server's).
_ADAPTER_CONNECTION_ERRORS = (
    AsyncAdapt_asyncpg_dbapi.InterfaceError,
    AsyncAdapt_asyncpg_dbapi.OperationalError,
)
# SQLSTATE classes that say "the database cannot serve now", not "this request is wrong":
# 08 connection exception, 28 invalid authorization (credentials rotated away), 3D invalid
# catalog name (the database dropped or not yet created), 53 insufficient resources (too many
# connections), 57 operator intervention (shutting down, starting up, a statement cancelled).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})
# An undefined table or column: the schema is not migrated to this release (`migrate` never run,
# or the database recreated under the service); /readyz says so too.
UNDEFINED_TABLE = "42P01"
_UNMIGRATED_SQLSTATES = frozenset({UNDEFINED_TABLE, "42703"})
# lock_timeout (DB_LOCK_TIMEOUT): a lock another transaction holds was not granted in time. Where
# a write locks a session's row or claims an Idempotency-Key, ChangeInProgress says so (the error
# does not say which lock it waited for: a PATCH or DELETE then reads the session, which waits
# too where DDL holds the table; service.routes); anywhere else it is a table that DDL holds (a
# migration), and the database cannot serve now.
LOCK_NOT_AVAILABLE = "55P03"
# A transaction the database rolled back to resolve a conflict with another, which the same
# request may pass on retry: a deadlock (with a migration's table locks: a lock waited for while
# holding one that the migration waits for), a serialization failure.
DEADLOCK_DETECTED = "40P01"
_ROLLED_BACK_SQLSTATES = frozenset({DEADLOCK_DETECTED, "40001"})
# statement_timeout (DB_STATEMENT_TIMEOUT), or pg_cancel_backend: answered QueryCanceled.
QUERY_CANCELED = "57014"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, whether SQLAlchemy wraps it or not; None for others."""
    if isinstance(exc, sa_exc.DBAPIError):
        return sqlstate(exc.orig) if exc.orig is not None else None
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_rolled_back(exc: BaseException) -> bool:
    """Whether the database answered that it rolled the transaction back to resolve a conflict
    (a deadlock, a serialization failure): its outcome is known, at COMMIT as anywhere."""
    return sqlstate(exc) in _ROLLED_BACK_SQLSTATES


def is_lock_not_available(exc: BaseException) -> bool:
    return sqlstate(exc) == LOCK_NOT_AVAILABLE


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether an error says the database cannot serve now (a lost connection, a timeout, a
    server shutting down), not that the request is wrong: what answers 503 (database-unavailable,
    or query-canceled for a cancelled statement), and a COMMIT whose outcome is unknown."""
    if isinstance(exc, sa_exc.DBAPIError):
        return _is_connection_error(exc)
    if isinstance(exc, asyncpg.PostgresError):
        return _is_unavailable_sqlstate(exc.sqlstate)
    if isinstance(exc, AsyncAdapt_asyncpg_dbapi.Error):
        return isinstance(exc, _ADAPTER_CONNECTION_ERRORS) or _is_unavailable_sqlstate(exc.sqlstate)
    return isinstance(exc, (OSError, sa_exc.TimeoutError, *DRIVER_CONNECTION_ERRORS))


def _is_unavailable_sqlstate(code: object) -> bool:
    return isinstance(code, str) and (
        code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
        or code in _UNMIGRATED_SQLSTATES
        or code in _ROLLED_BACK_SQLSTATES
        or code == LOCK_NOT_AVAILABLE
    )


def _is_connection_error(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return True
    # asyncpg errors are wrapped as the generic DBAPIError: their SQLSTATE tells them apart.
    return _is_unavailable_sqlstate(getattr(exc.orig, "sqlstate", None))


# PostgreSQL's DETAIL and HINT of an error may quote a row's values ("Failing row contains
# (...)", "Key (title)=(...) already exists", a trigger's own): the client's data, which no log
# line or trace may hold.
ROW_LEFT_OUT = "(left out: it may quote a row's values)"


def driver_reason(exc: BaseException) -> str:
    """The driver's error where SQLAlchemy wraps one, for a log line: its class names the
    SQLSTATE's meaning, its message the cause (a database that does not exist, a password
    refused), not the statement or its parameters, which SQLAlchemy's own message carries, nor
    the row that PostgreSQL's DETAIL may quote."""
    cause = exc
    if isinstance(cause, sa_exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig
    if isinstance(cause, AsyncAdapt_asyncpg_dbapi.Error):
        # The adapter's error wraps asyncpg's own; a driver connection (a read's) raises it bare.
        cause = cause.__cause__ or cause
    # asyncpg's str() adds the DETAIL and the HINT to the message, its first argument.
    message = cause.args[0] if isinstance(cause, asyncpg.PostgresError) and cause.args else cause
    return f"{type(cause).__name__}: {message}".strip().rstrip(":")


def errors_in_chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and every one it was raised from or while handling, each once."""
    seen: set[int] = set()
    errors: list[BaseException | None] = [exc]
    while errors:
        error = errors.pop()
        if error is not None and id(error) not in seen:
            seen.add(id(error))
            yield error
            # Both: an error raised `from` another, while handling a third, has the two.
            errors += (error.__cause__, error.__context__)


def leave_out_row_values(exc: BaseException) -> None:
    """Take PostgreSQL's DETAIL and HINT (ROW_LEFT_OUT) out of the driver's errors in a chain,
    in place, before it is logged or traced. (The errors wrapping them, SQLAlchemy's and its
    adapter's, copy only the message.)"""
    for error in errors_in_chain(exc):
        if isinstance(error, asyncpg.PostgresError):
            if error.detail:
                error.detail = ROW_LEFT_OUT
            if error.hint:
                error.hint = ROW_LEFT_OUT
