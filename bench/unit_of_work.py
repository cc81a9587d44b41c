"""The writes' unit of work on its own: what the ORM path that stamps last_modified_at costs.

The issue requires writes to go through the AsyncSession and its before_flush hook. This runs
exactly the repository code a PATCH and a POST run (load the session FOR UPDATE, apply the
patch, flush, commit; add, flush, commit), without HTTP, FastAPI or any other feature, and
reports its CPU time per write. Next to the budget of a whole request at the target ratio it
tells how much of the budget the unit of work alone leaves. The reference's transactions for the
same writes (the same statements on asyncpg alone) are measured the same way: the difference is
what the ORM path itself costs.

The writes run as the server runs them under load: as many at once as the service's pool has
connections. One write after the other would cost more per write (~100 µs): each of its round
trips then idles the event loop and wakes it again, where under load one wake-up serves many.
bench.run runs it on uvloop, the servers' event loop.
"""

import asyncio
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import orm
from sqlalchemy.ext.asyncio import create_async_engine

from bench import reference_app
from bench.seed import DELETED_EVERY, asyncpg_dsn
from service.policy import Visibility
from service.repository import SessionRepository, make_sessionmaker

WRITES = {"PATCH real change": "patch", "POST": "post"}
POOL_SIZE = 20  # the service's default DB_POOL_SIZE (no overflow), as the reference's pool
# The benchmark signs every request in as an admin, who may see every session.
EVERYTHING = Visibility(everything=True)


@contextmanager
def pinned_to(cpus: str | None) -> Iterator[None]:
    """This process on the server's CPU meanwhile, as the servers are."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def cpu_per_write(
    database_url: str,
    *,
    sessions: int,
    writes: int = 2000,
    concurrency: int = POOL_SIZE,
    rounds: int = 3,
) -> dict[str, tuple[float, float]]:
    """µs of CPU per write, through the ORM unit of work and on asyncpg alone (the reference's
    transactions), by operation name (as in bench.run.OPERATIONS): the medians of `rounds`
    rounds of `writes` writes each way, alternating which way goes first, as a busy machine
    moves single measurements by a tenth or more."""
    engine = create_async_engine(database_url, pool_size=concurrency, max_overflow=0)
    maker = make_sessionmaker(engine)
    pool = await reference_app.create_pool(asyncpg_dsn(database_url), concurrency)
    rng = random.Random(writes)  # noqa: S311 (ids and subtitles, not secrets)

    def live_id() -> int:
        session_id = rng.randrange(1, sessions + 1)
        return session_id - 1 if session_id % DELETED_EVERY == 0 else session_id

    def revision() -> dict[str, str]:
        return {"subtitle": f"Revision {rng.randrange(10**9)}", "level": "Expert"}

    def new_session() -> dict[str, object]:
        return {"event_id": 1 + rng.randrange(100), "title": "A unit of work"}

    def patch_in(db: orm.Session) -> None:
        repository = SessionRepository(db)
        session = repository.lock(live_id(), EVERYTHING)
        assert session is not None
        repository.update(session, revision())

    def post_in(db: orm.Session) -> None:
        SessionRepository(db).create(new_session(), creator_id="bench-admin")

    # As service.transactions.unit_of_work runs a write: in one transaction, in one greenlet.
    def in_transaction(write: Callable[[orm.Session], None]) -> Callable[[], Awaitable[None]]:
        def transaction(db: orm.Session) -> None:
            with db.begin():
                write(db)

        async def run() -> None:
            async with maker() as db:
                await db.run_sync(transaction)

        return run

    patch, post = in_transaction(patch_in), in_transaction(post_in)

    async def patch_on_driver() -> None:
        assert await reference_app.change_session(pool, live_id(), revision()) is not None

    async def post_on_driver() -> None:
        await reference_app.add_session(pool, new_session(), "bench-admin")

    async def run(write: Callable[[], Awaitable[None]], count: int) -> None:
        async def writer(share: int) -> None:
            for _ in range(share):
                await write()

        await asyncio.gather(*(writer(count // concurrency) for _ in range(concurrency)))

    async def measure(write: Callable[[], Awaitable[None]]) -> float:
        started = time.process_time()
        await run(write, writes)
        return (time.process_time() - started) * 1e6 / (writes // concurrency * concurrency)

    async def median_costs(*ways: Callable[[], Awaitable[None]]) -> tuple[float, float]:
        for write in ways:  # warm-up: every pooled connection's statement caches
            await run(write, max(writes // 10, concurrency))
        costs: dict[Callable[[], Awaitable[None]], list[float]] = {write: [] for write in ways}
        for i in range(rounds):
            for write in ways if i % 2 == 0 else reversed(ways):
                costs[write].append(await measure(write))
        orm, driver = (statistics.median(costs[write]) for write in ways)
        return orm, driver

    ways = {"patch": (patch, patch_on_driver), "post": (post, post_on_driver)}
    try:
        return {name: await median_costs(*ways[kind]) for name, kind in WRITES.items()}
    finally:
        await pool.close()
        await engine.dispose()
