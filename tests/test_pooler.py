"""Behind PgBouncer (DB_BEHIND_POOLER): every operation works in transaction pooling, and the
timeouts come from the role or the database, as the README's recipe has it.

Runs where PgBouncer is installed (Debian's package `pgbouncer`), skipped otherwise.
"""

import asyncio
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    asyncpg_dsn,
    migrated_database,
    session_body,
    settings_for,
    started,
)
from tests.processes import free_port, stopped
from tests.test_changes import follow, has_ids

PGBOUNCER = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="PgBouncer is not installed")
POOLED_SERVER_CONNECTIONS = 10


def _unprivileged_user(host: object) -> str | None:
    """PgBouncer refuses to run as root: as root, it runs as the owner of the directory of the
    server's socket where that is not root (the embedded server's, which only its own user may
    enter), else as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    if isinstance(host, str) and host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        pytest.skip("PgBouncer will not run as root, and there is no postgres user to run it as")


@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    """A database of the module's own, with the service's default timeouts as its own: through
    a pooler, the service cannot set them (the README's recipe sets them on the role)."""
    with migrated_database(server_url, prefix="sessions_pooler") as url:
        asyncio.run(_set_database_timeouts(url, statement="5s", lock="1s"))
        yield url


@pytest.fixture(scope="module")
def pooled_url(database_url: str) -> Iterator[str]:
    """The database through a PgBouncer of the test's own, in transaction pooling."""
    server = make_url(database_url)
    host = server.query.get("host") or server.host or "127.0.0.1"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sessions-pgbouncer-") as directory:
        os.chmod(directory, 0o777)
        config = Path(directory) / "pgbouncer.ini"
        config.write_text(
            f"""[databases]
pooled = host={host} port={server.port or 5432} dbname={server.database} user={server.username}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {POOLED_SERVER_CONNECTIONS}
max_client_conn = 200
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""
        )
        user = _unprivileged_user(host)
        assert PGBOUNCER is not None
        command = [PGBOUNCER, *(["-u", user] if user else []), str(config)]
        # A file, not a pipe: PgBouncer also logs each connection to stderr, and a pipe nobody
        # reads would fill and stop it.
        output = Path(directory) / "output.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, process, output)
            yield (
                make_url(database_url)
                .set(host="127.0.0.1", port=port, database="pooled", query={})
                .render_as_string(hide_password=False)
            )
        finally:
            stopped(process, timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"PgBouncer did not start: {output.read_text(errors='replace')}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("PgBouncer did not listen within 10 s")


async def _set_database_timeouts(database_url: str, *, statement: str, lock: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        name = make_url(database_url).database
        await conn.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout = '{statement}'")
        await conn.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '{lock}'")
    finally:
        await conn.close()


async def test_every_operation_works_in_transaction_pooling(pooled_url: str) -> None:
    # Far more requests at once than PgBouncer has server connections (10), so that each
    # transaction, and each read outside one, may run on any of them.
    settings = settings_for(pooled_url, db_behind_pooler=True, db_pool_size=20)
    async with started(settings) as (_, client):

        async def one_session(n: int) -> tuple[int, int]:
            created = await client.post(
                "/sessions",
                json=session_body(event_id=1 + n % 3, title=f"Pooled {n}"),
                headers={"Idempotency-Key": f"pooled-{n}"},
            )
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            again = await client.post(
                "/sessions",
                json=session_body(event_id=1 + n % 3, title=f"Pooled {n}"),
                headers={"Idempotency-Key": f"pooled-{n}"},
            )
            assert again.content == created.content
            read = await client.get(location)
            assert read.status_code == 200, read.text
            assert (
                await client.get(location, headers={"If-None-Match": read.headers["etag"]})
            ).status_code == 304
            changed = await client.patch(
                location,
                json={"subtitle": f"Changed {n}"},
                headers={"If-Match": read.headers["etag"]},
            )
            assert changed.status_code == 200, changed.text
            stale = await client.patch(
                location, json={"subtitle": "Stale"}, headers={"If-Match": read.headers["etag"]}
            )
            assert stale.status_code == 412, stale.text
            page = await client.get("/sessions", params={"event_id": 1 + n % 3, "limit": 2})
            assert page.status_code == 200, page.text
            if cursor := page.json()["next_cursor"]:
                following = await client.get(
                    "/sessions", params={"event_id": 1 + n % 3, "limit": 2, "cursor": cursor}
                )
                assert following.status_code == 200, following.text
            found = await client.get("/sessions", params={"q": f"Pooled {n}"})
            assert found.status_code == 200, found.text
            return created.json()["id"], changed.json()["version"]

        stored = dict(await asyncio.gather(*(one_session(n) for n in range(60))))
        deleted = next(iter(stored))
        assert (await client.delete(f"/sessions/{deleted}")).status_code == 204

        # The change feed, from the start: every session once, at its last version. (Polled
        # until they are all there: a transaction open elsewhere on the server holds the
        # feed's horizon back a while.)
        received, _ = await follow(client, has_ids(*stored), limit=25)
        assert len(received) == len(stored)
        seen = {item["id"]: item["version"] for item in received}
        assert seen == stored | {deleted: stored[deleted] + 1}
        assert (await client.get("/readyz")).status_code == 200


async def test_the_timeouts_are_the_databases_and_checked_at_start(
    pooled_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The database has 5 s and 1 s (the fixture, as the README's recipe sets the role's).
    with caplog.at_level(logging.WARNING, logger="service.ops"):
        async with started(settings_for(pooled_url, db_behind_pooler=True, db_lock_timeout=2)):
            pass
    warned = [record.getMessage() for record in caplog.records if record.name == "service.ops"]
    assert len(warned) == 1, warned
    assert warned[0].startswith("lock_timeout is 1000 ms on the database's connections, not ")
    assert "ALTER ROLE <role> SET lock_timeout = 2000" in warned[0]


async def test_a_change_kept_waiting_is_409_at_the_databases_lock_timeout(
    pooled_url: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(pooled_url, db_behind_pooler=True)
    with caplog.at_level(logging.WARNING, logger="service.ops"):
        async with started(settings) as (_, client):
            created = await client.post("/sessions", json=session_body())
            holder = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                async with holder.transaction():
                    await holder.execute(
                        "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", created.json()["id"]
                    )
                    began = time.monotonic()
                    blocked = await client.patch(
                        created.headers["location"], json={"subtitle": "Waited"}
                    )
                    waited = time.monotonic() - began
            finally:
                await holder.close()
    assert not [record for record in caplog.records if record.name == "service.ops"]
    # DB_LOCK_TIMEOUT's 409, not a 503 at the client's own bound (DB_STATEMENT_TIMEOUT + 1 s).
    assert blocked.status_code == 409, blocked.text
    assert waited < 4, waited


async def test_readiness_answers_within_its_timeout_while_pgbouncer_has_no_server_free(
    pooled_url: str,
) -> None:
    # Every server connection PgBouncer may open (default_pool_size) held in a transaction: the
    # probe's connection waits for one, and its cancelled first connect takes longer to end.
    holders = [
        await asyncpg.connect(asyncpg_dsn(pooled_url), statement_cache_size=0)
        for _ in range(POOLED_SERVER_CONNECTIONS)
    ]
    try:
        for holder in holders:
            await holder.execute("BEGIN; SELECT 1")
        settings = settings_for(pooled_url, db_behind_pooler=True, readiness_timeout=2)
        async with started(settings) as (_, client):
            began = time.monotonic()
            probe = await client.get("/readyz")
            waited = time.monotonic() - began
    finally:
        for holder in holders:
            await holder.close()
    assert probe.status_code == 503
    assert probe.json()["checks"] == {"database": "unavailable"}
    # Not twice READINESS_TIMEOUT, as before; with room for a busy machine.
    assert waited < 3.5, waited


def test_migrate_runs_again_and_again_through_transaction_pooling(pooled_url: str) -> None:
    # Each run a process of its own (asyncpg numbers its statements per process, from 1), on
    # server connections an earlier run used, which keep the statements it prepared.
    environment = os.environ | {"DATABASE_URL": pooled_url, "DB_BEHIND_POOLER": "true"}
    for _ in range(3):
        run = subprocess.run(
            [sys.executable, "-m", "service", "migrate"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
