import asyncio
import logging
import random
import time
from logging.config import fileConfig

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from service.db import (
    DEADLOCK_DETECTED,
    Base,
    driver_reason,
    is_lock_not_available,
    pooled_statements,
    sqlstate,
)
from service.migrations import (
    MIGRATION_LOCK_KEY,
    MIGRATION_LOCK_PATIENCE,
    MIGRATION_LOCK_PAUSE,
    MIGRATION_LOCK_WAIT,
    REQUIRE_DATABASE_ENCODING,
    known_revisions,
)
from service.models import TRIGRAM_INDEXES  # (the import registers the tables on Base.metadata)
from service.settings import get_settings, to_asyncpg_url

config = context.config
# fileConfig would replace the logging of a host process (the CLI, the tests).
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
log = logging.getLogger("alembic.env")


def compared(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """What autogenerate compares: all but the indexes only some servers have (0005)."""
    return not (type_ == "index" and name in TRIGRAM_INDEXES)


# A migration takes as long as it takes (0005 builds indexes for minutes on a large table), and
# waits for another migrate's lock: bounded neither by a statement_timeout nor by a lock_timeout
# that the role or the database may set for the service (README, Behind PgBouncer). Its table
# locks get MIGRATION_LOCK_WAIT once it has its turn.
NO_TIMEOUTS = ("SET LOCAL statement_timeout = 0", "SET LOCAL lock_timeout = 0")
# Where the SQL script keeps the lock_timeout it lifts (a placeholder setting of the transaction).
SAVED_LOCK_TIMEOUT = "sessions_service.lock_timeout"


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return to_asyncpg_url(url)


def run_migrations_offline() -> None:
    """The SQL of the migrations, for a DBA to review or run (`alembic upgrade head --sql`): in
    one transaction, taking the lock a migrate takes."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        # The lock_timeout the DBA runs it with is lifted for the wait its turn only: its DDL
        # then waits for table locks as long as the DBA chose (migrate tries a moment at a time).
        context.execute(
            f"SELECT set_config('{SAVED_LOCK_TIMEOUT}', current_setting('lock_timeout'), true)"
        )
        for statement in NO_TIMEOUTS:
            context.execute(statement)
        context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.execute(
            f"SELECT set_config('lock_timeout', current_setting('{SAVED_LOCK_TIMEOUT}'), true)"
        )
        context.execute(REQUIRE_DATABASE_ENCODING)
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    for statement in NO_TIMEOUTS:
        connection.execute(text(statement))
    # One migrate at a time: init containers of several replicas start together. The lock is
    # the transaction's, which then reads the revision the one before it committed.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.execute(text(REQUIRE_DATABASE_ENCODING))
    # A table lock not granted at once (a transaction using the table) fails this attempt, which
    # changes nothing (one transaction), rather than queueing every request behind it for long.
    connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_WAIT}'"))
    context.configure(
        connection=connection, target_metadata=target_metadata, include_object=compared
    )
    current = set(context.get_context().get_current_heads())
    newer = current - known_revisions()
    if newer:
        # A newer release migrated it (a rollback, or an old release's job run again): that
        # schema serves this release too (README: Migrations), so there is nothing to do.
        log.warning("the database is at %s, a newer release's revision: nothing to migrate", newer)
    else:
        with context.begin_transaction():  # in the lock's transaction: committed below
            context.run_migrations()
    connection.commit()


def _lock_refused(exc: DBAPIError) -> bool:
    """A table lock not granted within MIGRATION_LOCK_WAIT, or a deadlock with a request (one
    that locked a row before an earlier revision locked the table against its writes, and
    waits to write since): its transaction rolled back, changing nothing."""
    return is_lock_not_available(exc) or sqlstate(exc) == DEADLOCK_DETECTED


async def run_migrations_online() -> None:
    settings = get_settings()
    engine = create_async_engine(
        database_url(),
        connect_args={"timeout": settings.db_connect_timeout} | pooled_statements(settings),
    )
    deadline = time.monotonic() + MIGRATION_LOCK_PATIENCE
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    await connection.run_sync(do_run_migrations)
                return
            except DBAPIError as exc:
                if not _lock_refused(exc) or time.monotonic() > deadline:
                    raise
                log.info("a table lock was refused (%s): trying again", driver_reason(exc))
            await asyncio.sleep(random.uniform(*MIGRATION_LOCK_PAUSE))  # noqa: S311 (a jitter)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
