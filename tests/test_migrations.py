"""The migrations build the schema the models describe, and undo it."""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest

from alembic import command
from service.migrations import MIGRATION_LOCK_KEY, alembic_config
from tests.conftest import asyncpg_dsn, create_database, drop_database


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    url = create_database(server_url, prefix="sessions_migrations")
    yield url
    drop_database(server_url, url)


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def test_upgrade_downgrade_upgrade_round_trip(empty_database: str) -> None:
    import asyncio

    config = alembic_config(empty_database, configure_logging=False)
    await asyncio.to_thread(command.upgrade, config, "head")
    assert {"sessions", "alembic_version"} <= await tables(empty_database)
    # The models and the migrations agree: autogenerate finds nothing to add.
    await asyncio.to_thread(command.check, config)
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await tables(empty_database) == {"alembic_version"}
    await asyncio.to_thread(command.upgrade, config, "head")
    assert "sessions" in await tables(empty_database)


async def test_upgrade_to_0002_stamps_existing_rows_for_the_change_feed(
    empty_database: str,
) -> None:
    import asyncio

    config = alembic_config(empty_database, configure_logging=False)
    await asyncio.to_thread(command.upgrade, config, "0001")
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute(
            "INSERT INTO sessions (event_id, title, created_at, last_modified_at, version) "
            "VALUES (1, 'from before', now(), now(), 1)"
        )
        await asyncio.to_thread(command.upgrade, config, "head")
        txid, own_txid = await conn.fetchrow(
            "SELECT txid, pg_current_xact_id()::text::bigint FROM sessions"
        )
        # Stamped by the migration's transaction, an older one than this: the feed serves it.
        assert 0 < txid < own_txid
        await asyncio.to_thread(command.downgrade, config, "0001")
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'"
        )
        assert "txid" not in {row["column_name"] for row in columns}
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 1
    finally:
        await conn.close()


def test_migrates_started_together_take_turns(empty_database: str) -> None:
    # Replicas' init containers, each a process of its own: each waits for the one before, then
    # finds nothing to do.
    command_line = [sys.executable, "-m", "service", "migrate"]
    env = os.environ | {"DATABASE_URL": empty_database}
    runs = [subprocess.Popen(command_line, env=env, stderr=subprocess.PIPE) for _ in range(3)]
    for run in runs:
        _, errors = run.communicate(timeout=120)
        assert run.returncode == 0, errors.decode()
    assert "sessions" in asyncio.run(tables(empty_database))


async def test_migrate_leaves_a_newer_release_schema_as_it_is(empty_database: str) -> None:
    # An older release's migrate (a rollback, a job run again) on a schema a newer one migrated.
    config = alembic_config(empty_database, configure_logging=False)
    await asyncio.to_thread(command.upgrade, config, "head")
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = '9999_newer'")
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "9999_newer"
    finally:
        await conn.close()


async def test_a_migrate_waiting_its_turn_ends_on_sigterm_unfinished(empty_database: str) -> None:
    # As PID 1 of a container or a Job that is deleted: not after the orchestrator's kill grace.
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            migrate = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "service", "migrate"),
                env=os.environ | {"DATABASE_URL": empty_database},
                stderr=asyncio.subprocess.PIPE,
            )
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            for _ in range(300):
                if await conn.fetchval(waiting):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("migrate never waited for the lock")
            migrate.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                returncode = await migrate.wait()
        assert returncode == 128 + signal.SIGTERM
        assert await tables(empty_database) == set()  # nothing migrated
    finally:
        await conn.close()
