"""`python -m bench.features`: what the service's own features cost per request.

The service's app is driven in this process (ASGI calls, no HTTP server, the same requests as
the wrk scripts), as it runs in production and with parts of it left out, next to the
reference and its handlers under bare FastAPI. Every variant is its own app with its own pool,
all started at once and measured in alternating rounds, so that a busy machine disturbs them
alike: what one variant saves against "all on" is what the part it leaves out costs, in µs of
CPU per request. wrk's runs (`python -m bench`) cannot say this: a feature costs tens of µs,
less than their req/s move from round to round here.

The access log goes to a file, as the server's does in `python -m bench`. See bench/README.md.
"""

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import uvloop
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from bench import bare_fastapi, reference_app, seed
from bench.run import BENCH_JWT_SECRET, add_server_argument, authorization, cores
from bench.unit_of_work import pinned_to
from service.auth import VaryByAuthorization
from service.cli import tune_garbage_collector
from service.edge import BodySizeLimit, ConfiguredCORS, ResponseHeaders
from service.logs import configure_logging
from service.main import create_app
from service.middleware import RequestTelemetry
from service.models import LEVELS
from service.settings import Settings

OPERATIONS = ("GET by id", "PATCH real change")
CONCURRENCY = 64  # requests at once, as wrk's connections
POOL_SIZE = 10  # per app: seven apps at once stay within PostgreSQL's default 100 connections
# Parts of the service's own middleware (service.main.create_app).
TELEMETRY: frozenset[object] = frozenset({RequestTelemetry})
EDGE: frozenset[object] = frozenset(
    {ResponseHeaders, ConfiguredCORS, VaryByAuthorization, BodySizeLimit}
)


@dataclass(frozen=True)
class Variant:
    name: str
    build: Callable[[str, int], Starlette]  # the database URL, the pool's size -> the app
    access_log: bool = True


def service(
    *, leaves_out: Callable[[object], bool] = lambda _: False
) -> Callable[[str, int], Starlette]:
    def build(database_url: str, pool_size: int) -> Starlette:
        settings = Settings(
            database_url=database_url,
            jwt_secret=BENCH_JWT_SECRET,
            jwt_algorithms=["HS256"],
            db_pool_size=pool_size,
        )
        app = create_app(settings)
        # Starlette builds the middleware stack on the first call: leaving one out here is as
        # if create_app had not added it.
        app.user_middleware = [m for m in app.user_middleware if not leaves_out(m.cls)]
        return app

    return build


def reference(database_url: str, pool_size: int) -> Starlette:
    return reference_app.create_app(seed.asyncpg_dsn(database_url), pool_size)


def bare(database_url: str, pool_size: int) -> Starlette:
    return bare_fastapi.create_app(seed.asyncpg_dsn(database_url), pool_size)


VARIANTS = (
    Variant("the service, all on", service()),
    Variant("without the access log", service(), access_log=False),
    Variant("without request ids, metrics, access log", service(leaves_out=TELEMETRY.__contains__)),
    Variant("without Date, CORS, Vary, body limit", service(leaves_out=EDGE.__contains__)),
    Variant("without any middleware of its own", service(leaves_out=lambda _: True)),
    Variant("bare FastAPI (the reference's handlers)", bare),
    Variant("the reference", reference),
)


@dataclass
class Requests:
    """Random requests, as the wrk scripts make them: live ids, PATCHes that change something."""

    sessions: int
    rng: random.Random = field(default_factory=random.Random)  # unseeded: every PATCH a change
    bearer: bytes = field(default_factory=lambda: authorization().split(": ", 1)[1].encode())

    def live_id(self) -> int:
        session_id = self.rng.randrange(1, self.sessions + 1)
        return session_id - 1 if session_id % seed.DELETED_EVERY == 0 else session_id

    async def send(self, app: ASGIApp, operation: str) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"authorization", self.bearer)]
        body = b""
        if operation == "GET by id":
            method = "GET"
        else:
            method = "PATCH"
            revision, level = self.rng.randrange(10**9), self.rng.choice(LEVELS)
            body = f'{{"subtitle": "Revision {revision}", "level": "{level}"}}'.encode()
            headers += [
                (b"content-type", b"application/merge-patch+json"),
                (b"content-length", str(len(body)).encode()),
            ]
        path = f"/sessions/{self.live_id()}"
        status = await _call(app, method, path, headers, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")


async def _call(
    app: ASGIApp, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> int:
    """One request through the app, as uvicorn hands it over; the response's status."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def cpu_per_request(
    database_url: str,
    *,
    sessions: int,
    operations: Sequence[str] = OPERATIONS,
    requests: int = 1280,
    rounds: int = 6,
    variants: Sequence[Variant] = VARIANTS,
    pool_size: int = POOL_SIZE,
) -> dict[str, dict[str, list[float]]]:
    """µs of CPU per request, by operation and variant: one number per round, each round
    `requests` requests through every variant, in alternating order. Every variant is open at
    once, each with a pool of `pool_size` connections."""
    access_log = logging.getLogger("service.access")

    async def run(app: ASGIApp, operation: str, source: Requests, count: int) -> None:
        async def client(share: int) -> None:
            for _ in range(share):
                await source.send(app, operation)

        await asyncio.gather(*(client(count // CONCURRENCY) for _ in range(CONCURRENCY)))

    results: dict[str, dict[str, list[float]]] = {}
    level = access_log.level
    async with AsyncExitStack() as stack:
        stack.callback(access_log.setLevel, level)
        apps: list[tuple[Variant, Starlette]] = []
        for variant in variants:
            app = variant.build(database_url, pool_size)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append((variant, app))
        for operation in operations:
            source = Requests(sessions)
            for _, app in apps:  # warm-up: statement caches, first-call costs
                await run(app, operation, source, max(requests // 4, CONCURRENCY))
            costs: dict[str, list[float]] = {variant.name: [] for variant, _ in apps}
            for i in range(rounds):
                for variant, app in apps if i % 2 == 0 else reversed(apps):
                    # ACCESS_LOG=false does exactly this (service.logs.configure_logging).
                    access_log.setLevel(logging.NOTSET if variant.access_log else logging.CRITICAL)
                    started = time.process_time()
                    await run(app, operation, source, requests)
                    cpu = time.process_time() - started
                    costs[variant.name].append(cpu * 1e6 / (requests // CONCURRENCY * CONCURRENCY))
            results[operation] = costs
    return results


def table(results: dict[str, dict[str, list[float]]]) -> str:
    operations = list(results)
    header = ["variant"]
    for operation in operations:
        header += [f"{operation}: CPU µs/request (range)", "against all on"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in next(iter(results.values())):
        row = [name]
        for operation in operations:
            costs = results[operation]
            median = statistics.median(costs[name])
            all_on = statistics.median(costs[VARIANTS[0].name])
            row += [
                f"{median:.0f} ({min(costs[name]):.0f} to {max(costs[name]):.0f})",
                f"{median - all_on:+.0f}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.features", description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--sessions", type=int, default=100_000, help="rows to seed (100,000)")
    parser.add_argument("--requests", type=int, default=1280, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (6)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    server_url = seed.to_asyncpg_url(args.database_url)
    with seed.migrated_database(server_url) as database_url:
        asyncio.run(seed.seed(database_url, sessions=args.sessions, events=100))
        server_cpus, _ = cores()
        # The access log as the service writes it, to a file rather than over this table.
        with tempfile.TemporaryFile("w") as log:
            stdout, sys.stdout = sys.stdout, log
            try:
                configure_logging("info")
            finally:
                sys.stdout = stdout
            tune_garbage_collector()  # as the server's process is (service.cli.run_server)
            with pinned_to(server_cpus):
                results = uvloop.run(
                    cpu_per_request(
                        database_url,
                        sessions=args.sessions,
                        requests=args.requests,
                        rounds=args.rounds,
                    )
                )
        print(
            f"{args.sessions:,} sessions, {CONCURRENCY} requests at once, "
            f"{args.rounds} rounds of {args.requests} requests per variant, on CPU "
            f"{server_cpus or 'any'}; medians:"
        )
        print(table(results))


if __name__ == "__main__":
    main()
