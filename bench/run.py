"""`python -m bench`: seed a database, load the service and the reference app with wrk, compare.

See bench/README.md for what is measured and how to read the table.
"""

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import asyncpg
import orjson
import uvloop

from bench import seed, unit_of_work
from bench.wrk_output import Run, parse_wrk
from service import policy
from service.auth import issue_token
from service.cli import tune_garbage_collector
from service.pagination import FEED_TOKEN, TOKEN_FORMAT, TokenSigner
from service.repository import feed_query
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "wrk"
DEFAULT_SERVER = "postgresql://root@127.0.0.1:5432/postgres"

# operation: (wrk script, target ratio of req/s to the reference)
OPERATIONS = {
    "GET by id": ("get.lua", 0.50),
    "list page": ("list.lua", 0.50),
    "PATCH real change": ("patch.lua", 0.40),
    "POST": ("post.lua", 0.40),
}
P99_LIMIT = 3.0  # the service's p99 at most 3x the reference's


@dataclass
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far: less sensitive to a busy machine than req/s."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class App:
    name: str
    command: list[str]
    env: dict[str, str]
    probe: str  # a path that answers 200 once the app serves


BENCH_JWT_SECRET = "bench-jwt-secret-of-at-least-thirty-two-bytes"  # noqa: S105 (the bench's own)


@functools.cache
def authorization() -> str:
    """An admin's bearer token for the service in the bench: it may see and change everything."""
    settings = Settings(jwt_secret=BENCH_JWT_SECRET, jwt_algorithms=["HS256"])
    token = issue_token(settings, "bench-admin", admin=True, lifetime_seconds=24 * 3600)
    return f"Authorization: Bearer {token}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cores() -> tuple[str | None, str | None]:
    """CPU lists for the server and for wrk: different cores where there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2 or not shutil.which("taskset"):
        return None, None
    return str(available[0]), ",".join(str(cpu) for cpu in available[1:])


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


@contextlib.contextmanager
def serving(app: App, cpus: str | None) -> Iterator[Server]:
    """Start the app on a free loopback port; yield it once it answers; stop it."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in app.command]
    # Its logs (the service writes an access line per request) go to a file: a pipe nobody
    # reads would fill up and stall the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            pinned(command, cpus), cwd=ROOT, env=os.environ | app.env, stdout=log, stderr=log
        )
        try:
            _wait_until_it_answers(app, process, log, f"http://127.0.0.1:{port}{app.probe}")
            yield Server(f"http://127.0.0.1:{port}", process.pid)  # taskset execs the server
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_it_answers(
    app: App, process: subprocess.Popen[bytes], log: IO[bytes], url: str
) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"{app.name} exited:\n{log.read().decode()[-5000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{app.name} did not answer {url}") from None
            time.sleep(0.2)


def wrk(
    server: Server,
    path: str,
    script: str | None,
    script_args: Sequence[object],
    *,
    seconds: int,
    connections: int,
    cpus: str | None,
) -> Run:
    threads = len(cpus.split(",")) if cpus else 2
    # A 10 s timeout: on a busy machine a slow answer is a slow answer, not an error.
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    # Every request signed in (the reference ignores the token but stamps its subject).
    command += ["--latency", "-H", authorization()]
    if script:
        command += ["-s", str(SCRIPTS / script)]
    command += [server.url + path]
    if script:
        command += ["--", *(str(arg) for arg in script_args)]
    cpu_before = server.cpu_seconds()
    result = subprocess.run(pinned(command, cpus), capture_output=True, text=True, check=True)
    cpu = server.cpu_seconds() - cpu_before
    run = parse_wrk(result.stdout)
    run.cpu_us_per_request = cpu * 1e6 / max(run.requests, 1)
    return run


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def apps(database_url: str) -> dict[str, App]:
    dsn = seed.asyncpg_dsn(database_url)
    return {
        # Exactly how production runs it: `sessions-service serve` (one uvicorn worker).
        "service": App(
            "service",
            [sys.executable, "-m", "service", "serve", "--port", "{port}"],
            {
                "DATABASE_URL": database_url,
                "CURSOR_SECRET": BENCH_CURSOR_SECRET,
                "JWT_SECRET": BENCH_JWT_SECRET,
                "JWT_ALGORITHMS": "HS256",
            },
            "/healthz",
        ),
        "reference": App(
            "reference",
            # Served as the service is (bench/serve.py), without its access log.
            [sys.executable, "-m", "bench.serve", "bench.reference_app:app", "--port", "{port}"],
            {"BENCH_REFERENCE_DSN": dsn, "CURSOR_SECRET": BENCH_CURSOR_SECRET},
            "/sessions/1",
        ),
        # The reference's handlers under FastAPI: the best ratio a FastAPI app can reach.
        "bare fastapi": App(
            "bare fastapi",
            [sys.executable, "-m", "bench.serve", "bench.bare_fastapi:app", "--port", "{port}"],
            {"BENCH_REFERENCE_DSN": dsn, "CURSOR_SECRET": BENCH_CURSOR_SECRET},
            "/sessions/1",
        ),
    }


def measure(
    server: Server,
    path: str,
    script: str | None,
    script_args: Sequence[object],
    args: argparse.Namespace,
    wrk_cpus: str | None,
) -> Run:
    """A warm-up run (not counted), then the measured one."""
    options = {"connections": args.connections, "cpus": wrk_cpus}
    if args.warmup:
        wrk(server, path, script, script_args, seconds=args.warmup, **options)
    return wrk(server, path, script, script_args, seconds=args.duration, **options)


def throughput(args: argparse.Namespace, database_url: str) -> dict[str, dict[str, list[Run]]]:
    server_cpus, wrk_cpus = cores()
    script_args = (args.sessions, args.events, seed.DELETED_EVERY)
    results: dict[str, dict[str, list[Run]]] = {}
    order = list(apps(database_url).values())
    operations = {name: OPERATIONS[name] for name in args.operations}
    for round_number in range(1, args.repeats + 1):
        for app in order:
            with serving(app, server_cpus) as server:
                for operation, (script, _) in operations.items():
                    run = measure(server, "", script, script_args, args, wrk_cpus)
                    results.setdefault(operation, {}).setdefault(app.name, []).append(run)
                    print(
                        f"  round {round_number} {app.name:12} {operation:17} "
                        f"{run.requests_per_second:8.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms  {run.cpu_us_per_request:5.0f} µs CPU/req  "
                        f"errors {run.errors}  load {load_average()}",
                        flush=True,
                    )
        order.reverse()  # alternate which app goes first, so drift in the machine shows
    return results


def throughput_table(results: dict[str, dict[str, list[Run]]]) -> str:
    lines = [
        "| operation | service req/s | reference req/s | ratio (target) "
        f"| service p50 / p99 ms | reference p50 / p99 ms | p99 ratio (≤ {P99_LIMIT:g}) "
        "| CPU µs/req service / reference | CPU ratio | bare FastAPI ratio | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for operation, by_app in results.items():
        service, reference = by_app["service"], by_app["reference"]
        bare = by_app.get("bare fastapi")

        def rps(runs: list[Run]) -> str:
            values = [run.requests_per_second for run in runs]
            spread = f" ({min(values):.0f} to {max(values):.0f})" if len(values) > 1 else ""
            return f"{statistics.median(values):.0f}{spread}"

        def median(runs: list[Run], field: str) -> float:
            values: list[float] = [getattr(run, field) for run in runs]
            return statistics.median(values)

        reference_rps = median(reference, "requests_per_second")
        ratio = median(service, "requests_per_second") / reference_rps
        p99_ratio = median(service, "p99_ms") / median(reference, "p99_ms")
        target = OPERATIONS[operation][1]
        errors = sum(run.errors for runs in by_app.values() for run in runs)
        bare_ratio = f"{median(bare, 'requests_per_second') / reference_rps:.2f}" if bare else "-"
        cpu_service = median(service, "cpu_us_per_request")
        cpu_reference = median(reference, "cpu_us_per_request")
        lines.append(
            f"| {operation} | {rps(service)} | {rps(reference)} "
            f"| **{ratio:.2f}** ({'≥' if ratio >= target else '<'} {target:.2f}) "
            f"| {median(service, 'p50_ms'):.2f} / {median(service, 'p99_ms'):.2f} "
            f"| {median(reference, 'p50_ms'):.2f} / {median(reference, 'p99_ms'):.2f} "
            f"| {p99_ratio:.2f} | {cpu_service:.0f} / {cpu_reference:.0f} "
            f"| {cpu_reference / cpu_service:.2f} | {bare_ratio} | {errors} |"
        )
    return "\n".join(lines)


def request_budget_us(reference_rps: float, target: float) -> float:
    """The most CPU a request may cost for one worker to serve `target` times the reference's
    requests per second: what it costs when the worker is busy all the time, never waiting.

    A bound from the target as the issue states it (throughput). The reference's own CPU per
    request divided by the target is lower wherever the reference leaves its CPU idle part of
    the time (waiting on PostgreSQL's commits, as on writes), so it would understate the budget.
    """
    return 1e6 / (target * reference_rps)


def unit_of_work_table(
    results: dict[str, dict[str, list[Run]]], database_url: str, sessions: int, writes: list[str]
) -> str:
    """The writes' unit of work alone (bench/unit_of_work.py) against their budget."""
    # On uvloop, as the servers run: asyncio's own loop costs both columns more per round trip.
    with unit_of_work.pinned_to(cores()[0]):
        costs = uvloop.run(unit_of_work.cpu_per_write(database_url, sessions=sessions))
    lines = [
        "| write | its unit of work alone (AsyncSession + before_flush, no HTTP): CPU µs "
        "| the same write on asyncpg alone (the reference's transaction): CPU µs "
        "| target req/s (the ratio times the reference's) | the most CPU a whole request may cost "
        "to reach it: µs | left for all but the unit of work (HTTP, FastAPI, features): µs |",
        "|---|---|---|---|---|---|",
    ]
    for name in writes:
        target = OPERATIONS[name][1]
        reference_rps = statistics.median(
            run.requests_per_second for run in results[name]["reference"]
        )
        budget = request_budget_us(reference_rps, target)
        orm, driver = costs[name]
        lines.append(
            f"| {name} | {orm:.0f} | {driver:.0f} | {target * reference_rps:.0f} | {budget:.0f} "
            f"| {budget - orm:.0f} |"
        )
    return "\n".join(lines)


def walk_to_last_page(base_url: str, event_id: int, limit: int) -> tuple[str, int, int]:
    """Follow next_cursor through one event's pages: the last one's URL, the number of pages,
    and the id the last page starts after."""
    url = f"/sessions?event_id={event_id}&limit={limit}"
    pages, after_id = 0, 0
    while True:
        request = urllib.request.Request(base_url + url)
        request.add_header(*authorization().split(": ", 1))
        with urllib.request.urlopen(request, timeout=10) as response:
            page = orjson.loads(response.read())
        pages += 1
        if page["next_cursor"] is None:
            return url, pages, after_id
        after_id = page["items"][-1]["id"]
        url = f"/sessions?event_id={event_id}&limit={limit}&cursor={page['next_cursor']}"


async def explain(database_url: str, sql: str, *params: object) -> tuple[float, int]:
    """PostgreSQL's own execution time (ms) and buffers touched for one run of the statement."""
    conn = await asyncpg.connect(seed.asyncpg_dsn(database_url))
    try:
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params)
    finally:
        await conn.close()
    top = orjson.loads(plan)[0]
    buffers = top["Plan"]["Shared Hit Blocks"] + top["Plan"]["Shared Read Blocks"]
    return top["Execution Time"], buffers


# The list's statement for one event in id order, as the repository builds it (scripts/
# explain_listing.py EXPLAINs the statements it really sends, for every sort order).
_EVENT_PAGE = (
    "SELECT * FROM sessions WHERE deleted_at IS NULL AND event_id = $1 {after}ORDER BY id LIMIT 51"
)
BENCH_CURSOR_SECRET = "bench-cursor-secret-of-at-least-32-bytes"  # noqa: S105 (the service's secret in the bench)


def newest_txid(database_url: str) -> int:
    async def query() -> int:
        conn = await asyncpg.connect(seed.asyncpg_dsn(database_url))
        try:
            txid: int = await conn.fetchval("SELECT max(txid) FROM sessions")
        finally:
            await conn.close()
        return txid

    return asyncio.run(query())


def caught_up_token(txid: int, event_id: int | None = None) -> str:
    """A change-feed token past the newest write: the poll of a client that is up to date."""
    payload = {"format": TOKEN_FORMAT, "event_id": event_id, "txid": txid + 1, "id": 0}
    return TokenSigner(BENCH_CURSOR_SECRET).sign(FEED_TOKEN, payload)


def scale(args: argparse.Namespace, database_url: str) -> str:
    """First against deepest page of one event, and the change feed, on the seeded table and on
    one 10 times as big.

    The pages are measured twice: through the service with wrk, and in PostgreSQL (EXPLAIN
    ANALYZE of the keyset statement), next to the same page fetched by OFFSET for contrast.
    """
    server_cpus, wrk_cpus = cores()
    service = apps(database_url)["service"]
    lines = [
        "| sessions in table | request | rows before it | req/s | p50 ms | p99 ms | CPU µs/req "
        "| its query in PostgreSQL: ms / buffers | same page by OFFSET: ms / buffers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in (args.sessions, args.sessions * 10):
        if size != args.sessions:
            print(f"growing the table to {size:,} sessions…", flush=True)
            asyncio.run(seed.grow(database_url, sessions=size, events=args.events))
        with serving(service, server_cpus) as server:
            deep_path, pages, after_id = walk_to_last_page(server.url, event_id=1, limit=50)
            for page, path, depth in (
                ("list, first page of event 1", "/sessions?event_id=1&limit=50", 0),
                ("list, last page of event 1", deep_path, (pages - 1) * 50),
            ):
                run = measure(server, path, None, (), args, wrk_cpus)
                after = "AND id > $2 " if depth else ""
                keyset = asyncio.run(
                    explain(database_url, _EVENT_PAGE.format(after=after), 1, after_id)
                    if depth
                    else explain(database_url, _EVENT_PAGE.format(after=""), 1)
                )
                offset = asyncio.run(
                    explain(database_url, _EVENT_PAGE.format(after="") + f" OFFSET {depth}", 1)
                )
                print(
                    f"  {size:>9,} {page:28} {run.requests_per_second:6.0f} req/s  "
                    f"keyset {keyset[0]:.3f} ms, offset {offset[0]:.3f} ms",
                    flush=True,
                )
                lines.append(
                    f"| {size:,} | {page} (limit 50) | {depth:,} | {run.requests_per_second:.0f} "
                    f"| {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.cpu_us_per_request:.0f} "
                    f"| {keyset[0]:.3f} / {keyset[1]} | {offset[0]:.3f} / {offset[1]} |"
                )
            txid = newest_txid(database_url)
            horizon = txid + 1_000_000  # above every row: what the statement costs, not waits
            feeds = [
                ("change feed from the start", "", None, None),
                ("change feed, caught-up poll", "", None, (txid + 1, 0)),
                ("change feed of event 1 from the start", "&event_id=1", 1, None),
                ("change feed of event 1, caught-up poll", "&event_id=1", 1, (txid + 1, 0)),
            ]
            for feed, filters, event_id, position in feeds:
                since = f"&since={caught_up_token(txid, event_id)}" if position else ""
                path = f"/sessions/changes?limit=100{filters}{since}"
                run = measure(server, path, None, (), args, wrk_cpus)
                # The statement as the service runs it, with the horizon above every row.
                query, values = feed_query(
                    event_id=event_id,
                    after=position,
                    limit=100,
                    horizon=horizon,
                    visible=policy.feed_visibility(policy.ANONYMOUS),  # wrk sends no token
                )
                parameters = (values[name] for name in query.parameters)
                cost = asyncio.run(explain(database_url, query.sql, *parameters))
                print(
                    f"  {size:>9,} {feed:38} {run.requests_per_second:6.0f} req/s  "
                    f"query {cost[0]:.3f} ms",
                    flush=True,
                )
                lines.append(
                    f"| {size:,} | {feed} | | {run.requests_per_second:.0f} | {run.p50_ms:.2f} "
                    f"| {run.p99_ms:.2f} | {run.cpu_us_per_request:.0f} "
                    f"| {cost[0]:.3f} / {cost[1]} | |"
                )
    return "\n".join(lines)


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER),
        help="the PostgreSQL server to create the database on "
        "(BENCH_DATABASE_URL; default %(default)s)",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--sessions", type=int, default=100_000, help="rows to seed (100,000)")
    parser.add_argument(
        "--large",
        action="store_const",
        const=1_000_000,
        dest="sessions",
        help="seed 1,000,000 sessions",
    )
    parser.add_argument("--events", type=int, default=100, help="events they spread over (100)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run (2)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both apps (3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--operations",
        nargs="+",
        choices=list(OPERATIONS),
        metavar="OP",
        default=list(OPERATIONS),
        help=f"of {', '.join(OPERATIONS)}",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also: first vs deepest page, on the table and on one 10x as big",
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Stopped with SIGTERM too, it still stops its servers and drops its database.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    server_url = seed.to_asyncpg_url(args.database_url)
    started = datetime.now(UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC · {machine()} · load {load_average()}")
    with seed.migrated_database(server_url, keep=args.keep_database) as database_url:
        began = time.monotonic()
        asyncio.run(seed.seed(database_url, sessions=args.sessions, events=args.events))
        print(
            f"seeded {args.sessions:,} sessions over {args.events} events "
            f"in {time.monotonic() - began:.1f} s",
            flush=True,
        )
        server_cpus, wrk_cpus = cores()
        print(
            f"server on CPU {server_cpus or 'any'}, wrk on CPU {wrk_cpus or 'any'}; "
            f"{args.connections} connections, {args.duration:g} s per run, "
            f"{args.repeats} rounds",
            flush=True,
        )
        results = throughput(args, database_url) if args.operations and args.repeats else {}
        if broken := asyncio.run(seed.broken_stamp_rules(database_url)):
            raise SystemExit(f"after the load, rows break the rules of last_modified_at: {broken}")
        print(f"after the load, every row keeps the {len(seed.STAMP_RULES)} stamp rules")
        print()
        if results:
            print(throughput_table(results))
            if writes := [name for name in unit_of_work.WRITES if name in results]:
                # Measured in this process: its collector tuned as the servers' are.
                tune_garbage_collector()
                print()
                print(unit_of_work_table(results, database_url, args.sessions, writes))
        if args.scale:
            print()
            print(scale(args, database_url))
        print(f"\nload average at the end: {load_average()}")
