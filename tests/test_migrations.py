"""The migrations build the schema the models describe, and undo it."""

import asyncio
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from alembic import command
from service import migrations
from service.cli import embedded_postgres
from service.migrations import MIGRATION_LOCK_KEY, REQUIRE_DATABASE_ENCODING, alembic_config
from service.models import TRIGRAM_INDEXES
from service.settings import to_asyncpg_url
from tests.conftest import (
    asyncpg_dsn,
    create_database,
    create_session,
    database_role,
    drop_database,
    settings_for,
    started,
    waiting_for_a_lock,
)
from tests.test_changes import follow, has_ids


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    url = create_database(server_url, prefix="sessions_migrations")
    yield url
    drop_database(server_url, url)


def killed(process: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> None:
    """A process a failed test left running, gone: not one to outlive the test."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            process.kill()


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def test_upgrade_downgrade_upgrade_round_trip(empty_database: str) -> None:
    import asyncio

    config = alembic_config(empty_database)
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

    config = alembic_config(empty_database)
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
    try:
        for run in runs:
            _, errors = run.communicate(timeout=120)
            assert run.returncode == 0, errors.decode()
    finally:
        for run in runs:
            killed(run)
    assert "sessions" in asyncio.run(tables(empty_database))


async def test_migrate_is_not_cut_short_by_the_timeouts_of_the_database(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As behind PgBouncer, where the service's timeouts are the role's or the database's (README):
    # a migrate waiting for another's lock, or building an index, takes longer than a request.
    # Its wait for its turn is not a table lock refused and tried again for a while: it waits.
    monkeypatch.setattr(migrations, "MIGRATION_LOCK_PATIENCE", 0.0)
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        name = make_url(empty_database).database
        await conn.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout = '100ms'")
        await conn.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '100ms'")
        holder = await asyncpg.connect(asyncpg_dsn(empty_database))
        try:
            async with holder.transaction():
                await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
                waiting = asyncio.create_task(
                    asyncio.to_thread(command.upgrade, alembic_config(empty_database), "head")
                )
                await asyncio.sleep(1)
                assert not waiting.done()
        finally:
            await holder.close()
        await waiting
    finally:
        await conn.close()
    assert "sessions" in await tables(empty_database)


def test_migrate_refuses_a_database_not_in_utf8(server_url: str) -> None:
    url = create_database(server_url, prefix="sessions_migrations", encoding="LATIN1")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "service", "migrate"],
            env=os.environ | {"DATABASE_URL": url},
            capture_output=True,
            timeout=120,
        )
        assert run.returncode == 1
        assert run.stderr.decode().endswith(
            "migrate failed, nothing was changed: RaiseError: the database's encoding is LATIN1, "
            "not UTF8: create it with ENCODING 'UTF8' (and TEMPLATE template0)\n"
        )
        assert asyncio.run(tables(url)) == set()
    finally:
        drop_database(server_url, url)


async def test_migrate_leaves_a_newer_release_schema_as_it_is(empty_database: str) -> None:
    # An older release's migrate (a rollback, a job run again) on a schema a newer one migrated.
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "head")
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = '9999_newer'")
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "9999_newer"
    finally:
        await conn.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl+C"])
async def test_a_migrate_waiting_its_turn_ends_on_a_signal_unfinished(
    empty_database: str, stop: signal.Signals
) -> None:
    # As PID 1 of a container or a Job that is deleted: not after the orchestrator's kill grace.
    # Ctrl+C as quietly (it printed a KeyboardInterrupt's traceback).
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    migrate = None
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            migrate = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "service", "migrate"),
                env=os.environ | {"DATABASE_URL": empty_database},
                stderr=asyncio.subprocess.PIPE,
            )
            await waiting_for_a_lock(conn, held_by=conn.get_server_pid())
            migrate.send_signal(stop)
            async with asyncio.timeout(10):
                _, stderr = await migrate.communicate()
        assert migrate.returncode == 128 + stop
        assert b"Traceback" not in stderr
        assert await tables(empty_database) == set()  # nothing migrated
    finally:
        await conn.close()
        if migrate is not None:
            killed(migrate)


async def test_a_migrate_waiting_for_a_table_lock_does_not_hold_up_writes(
    empty_database: str,
) -> None:
    # 0006 needs a lock on sessions that an open writing transaction's conflicts with. While a
    # migration waits for a lock, every write of the table queues behind it: it waits a moment
    # at a time, shorter than DB_LOCK_TIMEOUT, so that writes are delayed, never refused.
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.downgrade, config, "0005")  # 0006 and 0007 both need one
    holder = await asyncpg.connect(asyncpg_dsn(empty_database))
    writer = await asyncpg.connect(
        asyncpg_dsn(empty_database), server_settings={"lock_timeout": "1s"}
    )
    migrate = None
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("LOCK TABLE sessions IN ROW EXCLUSIVE MODE")  # as an UPDATE holds
        migrate = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "service", "migrate"),
            env=os.environ | {"DATABASE_URL": empty_database},
            stderr=asyncio.subprocess.PIPE,
        )
        # Only once migrate asks for the table (it waits 0.3 s at a time) do the writes prove
        # anything: a migrate slow to start would leave them nothing to queue behind.
        await waiting_for_a_lock(writer, held_by=holder.get_server_pid())
        refused = 0
        for _ in range(20):  # writes for about two seconds, the table held all along
            try:
                async with writer.transaction():
                    await writer.execute("LOCK TABLE sessions IN ROW EXCLUSIVE MODE")
            except asyncpg.LockNotAvailableError:
                refused += 1
            await asyncio.sleep(0.1)
        await held.rollback()
        async with asyncio.timeout(30):
            _, errors = await migrate.communicate()
        assert migrate.returncode == 0, errors.decode()
        assert refused == 0
        assert "session_departures" in await tables(empty_database)
        assert await holder.fetchval("SELECT count(ever_public) FROM sessions") == 0
    finally:
        await holder.close()
        await writer.close()
        if migrate is not None:
            killed(migrate)


async def test_a_migrate_that_deadlocks_with_a_write_tries_again(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0006 (a foreign key) locks sessions against writes, and 0007 (a new column) against
    # everything: run together, a write that locked a row before and waits to update it since
    # 0006 is a deadlock, which PostgreSQL resolves by rolling back the migrate (as it does a
    # lock not granted: the same transaction, tried again after a pause).
    monkeypatch.setattr(migrations, "MIGRATION_LOCK_WAIT", "10s")  # the steps below take turns
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "0005")
    dsn = asyncpg_dsn(empty_database)
    writer, holder, watcher = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        session_id = await writer.fetchval(
            "INSERT INTO sessions (event_id, title, state, created_at, last_modified_at,"
            " version, txid) VALUES (1, 't', 'draft', now(), now(), 1, 1) RETURNING id"
        )
        write = writer.transaction()
        await write.start()
        await writer.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
        # The migrate, once it has run 0006, waits to record it: then the write waits for it.
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM alembic_version FOR UPDATE")
        migrate = asyncio.create_task(asyncio.to_thread(command.upgrade, config, "head"))
        await waiting_for_a_lock(watcher, held_by=holder.get_server_pid())
        update = asyncio.create_task(
            writer.execute("UPDATE sessions SET title = 'written' WHERE id = $1", session_id)
        )
        await waiting_for_a_lock(watcher, pid=writer.get_server_pid())
        await hold.rollback()  # the migrate goes on to 0007
        async with asyncio.timeout(30):
            await update
            await write.commit()
            await migrate
        head = ScriptDirectory.from_config(config).get_current_head()
        assert await watcher.fetchval("SELECT version_num FROM alembic_version") == head
        assert await watcher.fetchval("SELECT title FROM sessions") == "written"
    finally:
        for conn in (writer, holder, watcher):
            await conn.close()


async def test_upgrade_to_0007_counts_every_session_that_may_have_been_public(
    empty_database: str,
) -> None:
    # What a stored session's history was is not known: one that changed since it was created
    # may have been public, and a copy of it be held by anyone (the change feed serves them its
    # tombstone). Only one never changed, in a state that is not public, never was.
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "0006")
    rows = [("draft", 1), ("pending", 1), ("accepted", 1), ("draft", 2), ("withdrawn", 3)]
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.executemany(
            "INSERT INTO sessions (event_id, title, state, created_at, last_modified_at,"
            " version, txid) VALUES (1, 't', $1, now(), now(), $2, 1)",
            rows,
        )
        await conn.execute(
            "INSERT INTO session_departures (event_id, session_id, txid, last_modified_at,"
            " version) SELECT 2, id, 1, now(), version FROM sessions WHERE version = 3"
        )
        before = await conn.fetch("SELECT id, last_modified_at, version, txid FROM sessions")
        await asyncio.to_thread(command.upgrade, config, "head")
        after = await conn.fetch("SELECT id, last_modified_at, version, txid FROM sessions")
        ever_public = await conn.fetch("SELECT ever_public FROM sessions ORDER BY id")
        departed = await conn.fetchval("SELECT ever_public FROM session_departures")
    finally:
        await conn.close()
    assert [row[0] for row in ever_public] == [False, False, True, True, True]
    assert departed is True  # a move is a change: the session may have been public
    # Not a change of any session: no stamp, version or place in the feed moves.
    assert sorted(after) == sorted(before)


async def fetch_column(url: str, sql: str, *args: object) -> list[object]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [row[0] for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def trigram_indexes(url: str) -> set[str]:
    """The trigram indexes of sessions, by name, that are valid."""
    names = await fetch_column(
        url,
        "SELECT name FROM (SELECT indexrelid::regclass::text AS name FROM pg_index "
        "WHERE indrelid = 'sessions'::regclass AND indisvalid) AS valid WHERE name = ANY($1)",
        list(TRIGRAM_INDEXES),
    )
    return {str(name) for name in names}


async def has_pg_trgm(url: str) -> bool:
    found = "SELECT name FROM pg_available_extensions WHERE name = 'pg_trgm'"
    return bool(await fetch_column(url, found))


async def test_upgrade_builds_the_trigram_indexes_and_downgrade_drops_them(
    empty_database: str,
) -> None:
    if not await has_pg_trgm(empty_database):
        pytest.skip("this server has no pg_trgm (test_upgrade_without_pg_trgm_... covers it)")
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await trigram_indexes(empty_database) == TRIGRAM_INDEXES
    await asyncio.to_thread(command.check, config)
    await asyncio.to_thread(command.downgrade, config, "0004")
    assert await trigram_indexes(empty_database) == set()
    # Kept: other objects may use it, and 0005 cannot tell whether it installed it.
    installed = "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'"
    assert await fetch_column(empty_database, installed) == ["pg_trgm"]
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await trigram_indexes(empty_database) == TRIGRAM_INDEXES


async def test_the_sql_script_of_the_migrations_builds_what_migrate_builds(
    server_url: str, empty_database: str
) -> None:
    # `alembic upgrade head --sql`, for a DBA to review or run: no statement asks the server
    # anything (0005 asked whether pg_trgm is available), and running it builds the schema.
    if not await has_pg_trgm(empty_database):
        pytest.skip("the script builds the trigram indexes, which need pg_trgm")
    config = alembic_config(empty_database)
    config.output_buffer = io.StringIO()
    await asyncio.to_thread(command.upgrade, config, "head", sql=True)
    script = config.output_buffer.getvalue()
    assert f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});" in script  # as migrate takes
    assert f"{REQUIRE_DATABASE_ENCODING};" in script  # as migrate checks
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute(script)
    finally:
        await conn.close()

    migrated = await asyncio.to_thread(create_database, server_url, "sessions_migrations")
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(migrated), "head")
        assert await schema(empty_database) == await schema(migrated)
    finally:
        await asyncio.to_thread(drop_database, server_url, migrated)
    assert await trigram_indexes(empty_database) == TRIGRAM_INDEXES


async def test_the_sql_script_waits_for_table_locks_as_its_runner_chose(
    empty_database: str,
) -> None:
    # The script lifts lock_timeout to wait for another migrate, not for its DDL: a DBA running
    # it with one (PGOPTIONS, the role's) would otherwise queue every write behind it for long.
    await asyncio.to_thread(command.upgrade, alembic_config(empty_database), "0007")
    config = alembic_config(empty_database)
    config.output_buffer = io.StringIO()
    await asyncio.to_thread(command.upgrade, config, "0007:head", sql=True)
    holder = await asyncpg.connect(asyncpg_dsn(empty_database))
    runner = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE sessions IN ROW EXCLUSIVE MODE")  # a write's
            await runner.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                async with asyncio.timeout(10):
                    await runner.execute(config.output_buffer.getvalue())
    finally:
        await holder.close()
        await runner.close()


async def schema(url: str) -> list[tuple[str, ...]]:
    """The tables' columns, constraints and indexes, and the revision."""
    columns = (
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
    )
    constraints = (
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
    )
    indexes = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    revision = "SELECT version_num FROM alembic_version"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = [
            tuple(row.values())
            for query in (columns, constraints, indexes, revision)
            for row in await conn.fetch(query)
        ]
    finally:
        await conn.close()
    return sorted(tuple(str(value) for value in row) for row in rows)


@pytest.mark.parametrize("schema", ["public", "extensions"])
@pytest.mark.parametrize("script", [False, True], ids=["migrate", "upgrade --sql"])
async def test_upgrade_keeps_a_trigram_index_built_beforehand_and_rebuilds_an_invalid_one(
    empty_database: str, script: bool, schema: str
) -> None:
    # As an operator does on a large table: CREATE INDEX CONCURRENTLY before migrating (README);
    # with pg_trgm where it is installed, on the search path or off it (Supabase's extensions).
    if not await has_pg_trgm(empty_database):
        pytest.skip("this server has no pg_trgm")
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "0004")
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute(
            f"CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION pg_trgm SCHEMA {schema}"
        )
        for column in ("title", "subtitle"):
            await conn.execute(
                f"CREATE INDEX CONCURRENTLY ix_sessions_{column}_trgm ON sessions "
                f"USING gin ({column} {schema}.gin_trgm_ops) WHERE deleted_at IS NULL"
            )
        # What a CREATE INDEX CONCURRENTLY that failed leaves behind.
        await conn.execute(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'ix_sessions_subtitle_trgm'::regclass"
        )
        built_beforehand = await conn.fetchval("SELECT 'ix_sessions_title_trgm'::regclass::oid")
        if script:
            config.output_buffer = io.StringIO()
            await asyncio.to_thread(command.upgrade, config, "0004:head", sql=True)
            await conn.execute(config.output_buffer.getvalue())
        else:
            await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("SELECT 'ix_sessions_title_trgm'::regclass::oid") == (
            built_beforehand
        )
    finally:
        await conn.close()
    assert await trigram_indexes(empty_database) == TRIGRAM_INDEXES


async def test_upgrade_skips_the_trigram_indexes_when_the_role_may_not_create_pg_trgm(
    server_url: str, empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A role that owns its schema but may not create extensions (CREATE on the database), as on
    # a server where a DBA hands out such roles: the migration goes on without the indexes.
    if not await has_pg_trgm(empty_database):
        pytest.skip("this server has no pg_trgm")
    async with database_role(empty_database, "GRANT CREATE ON SCHEMA public TO {role}") as url:
        config = alembic_config(url)
        with caplog.at_level(logging.WARNING, logger="alembic"):
            await asyncio.to_thread(command.upgrade, config, "head")
        assert "may not create the extension pg_trgm" in caplog.text
        assert await trigram_indexes(empty_database) == set()
        # Every revision applied, in the one transaction that the refusal did not abort.
        head = ScriptDirectory.from_config(config).get_current_head()
        applied = await fetch_column(empty_database, "SELECT version_num FROM alembic_version")
        assert applied == [head]
        await asyncio.to_thread(command.downgrade, config, "base")


async def test_upgrade_without_pg_trgm_skips_the_trigram_indexes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The embedded PostgreSQL of the README's quick start, which ships no contrib extensions; in
    # a directory of its own, as the tests' server (another pytest may clean up pytest's).
    with tempfile.TemporaryDirectory(prefix="sessions-no-trgm-") as data_dir:
        server = await asyncio.to_thread(embedded_postgres, Path(data_dir) / "pg")
        try:
            url = to_asyncpg_url(server.get_uri())
            assert not await has_pg_trgm(url)
            config = alembic_config(url)
            with caplog.at_level(logging.WARNING, logger="alembic"):
                await asyncio.to_thread(command.upgrade, config, "head")
            assert "pg_trgm is not available on this server" in caplog.text
            assert await trigram_indexes(url) == set()
            await asyncio.to_thread(command.check, config)  # the schema the models describe
            await asyncio.to_thread(command.downgrade, config, "base")
            assert await tables(url) == {"alembic_version"}
        finally:
            await asyncio.to_thread(server.cleanup)


# The README's grants (Roles), for a service that connects as a role of its own: `{role}` is the
# service's, `{owner}` the one that runs migrate.
SERVICE_ROLE_GRANTS = [
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE ON SEQUENCES TO {role}",
]


async def test_the_readmes_grants_let_a_role_of_its_own_serve_across_later_migrations(
    empty_database: str,
) -> None:
    # Granted after a first migrate, before one that adds a table (0006's session_departures).
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "0005")
    owner = make_url(empty_database).username
    grants = [grant.replace("{owner}", f'"{owner}"') for grant in SERVICE_ROLE_GRANTS]
    async with database_role(empty_database, *grants) as as_role:
        await asyncio.to_thread(command.upgrade, config, "head")
        async with started(settings_for(as_role)) as (_, client):
            created = await create_session(client, event_id=1, state="accepted")
            moved = await client.patch(f"/sessions/{created['id']}", json={"event_id": 2})
            assert moved.status_code == 200, moved.text
            # (Polled: a transaction open elsewhere on the server holds the horizon back.)
            departures, _ = await follow(client, has_ids(created["id"]), event_id=1)
            assert [item["id"] for item in departures] == [created["id"]]
            assert (await client.delete(f"/sessions/{created['id']}")).status_code == 204
            assert (await client.get("/readyz")).status_code == 200
