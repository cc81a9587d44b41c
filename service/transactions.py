"""How a request uses the database: its turn for one of the pool's connections
(ConnectionLine), a driver connection for a read (read_connection), and one transaction of the
ORM session for a write (unit_of_work)."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import asyncpg
from fastapi import FastAPI
from sqlalchemy import inspect, orm
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import undefer
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from service.db import (
    DRIVER_CONNECTION_ERRORS,
    STAMPED,
    WRITING_TRANSACTION,
    driver_reason,
    is_database_unavailable,
    is_rolled_back,
)
from service.errors import CommitUnconfirmed, SearchesBusy, committing
from service.settings import Settings

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ConnectionLine:
    """Requests wait for the pool's connections here, first come, first served.

    SQLAlchemy's asyncio pool hands a returned connection to whichever task asks next: a waiter
    it wakes but that finds the connection already taken queues again at the back (as with any
    asyncio.Queue). Under overload one request could then wait out DB_POOL_TIMEOUT, and get a
    503, while later ones were served. asyncio.Semaphore serves its waiters strictly in order,
    and with a slot per connection no request waits in the pool itself. A wait longer than
    DB_POOL_TIMEOUT raises SQLAlchemy's TimeoutError, as its own pool does (503 "database
    unavailable", logged as the pool's).

    Searches (the list's q, or a list without event_id or creator_id but an admin's unfiltered
    one:
    SessionFilter.may_read_the_table; the change feed without event_id of a signed-in caller
    who is not an admin) first wait for one of half as many search slots: one
    whose text the trigram indexes cannot serve ("go", "C#"), or on a server without them, or
    whose filters (the caller's visibility too) match few sessions, reads the whole table, up to
    seconds on a large one. A burst of them
    then holds at most half the connections, and every other request keeps the rest. A search
    that finds no slot free within DB_POOL_TIMEOUT is SearchesBusy: the database is not at
    fault.
    """

    def __init__(self, settings: Settings) -> None:
        connections = settings.db_pool_size + settings.db_max_overflow
        self._slots = asyncio.Semaphore(connections)
        self._search_slots = asyncio.Semaphore(max(1, connections // 2))
        self._timeout = settings.db_pool_timeout

    @asynccontextmanager
    async def turn(self, deadline: float | None = None) -> AsyncIterator[None]:
        await self._take(self._slots, "pooled connection", deadline)
        try:
            yield
        finally:
            self._slots.release()

    @asynccontextmanager
    async def search_turn(self) -> AsyncIterator[None]:
        """A search's turn among searches, then for a connection: both waits within one
        DB_POOL_TIMEOUT, as any request's wait for a connection."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            await self._take(self._search_slots, "search slot", deadline)
        except PoolTimeout as waited_out:
            logger.warning("searches busy: %s", waited_out)
            raise SearchesBusy() from None
        try:
            async with self.turn(deadline):
                yield
        finally:
            self._search_slots.release()

    async def _take(self, slots: asyncio.Semaphore, what: str, deadline: float | None) -> None:
        if slots.locked():  # no slot free, or others already waiting: queue, bounded
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self._timeout
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise PoolTimeout(
                    f"no {what} was free within DB_POOL_TIMEOUT ({self._timeout:g} s)"
                ) from None
        else:  # a free slot is taken at once: no wait to bound, nor a timer to set and cancel
            await slots.acquire()


def connection_line(app: FastAPI) -> ConnectionLine:
    """The app's line (service.main.configure builds it)."""
    line: ConnectionLine = app.state.connection_line
    return line


class Written(NamedTuple):
    """A row a write stamped, as it wrote it."""

    obj: Any
    id: int
    version: int
    last_modified_at: datetime
    transaction: int | None  # WRITING_TRANSACTION, for a row the write locked and changed


async def unit_of_work(app: FastAPI, write: Callable[[orm.Session], T]) -> T:
    """Run a write in one transaction of the app's ORM session, committed before returning.

    `write` is sync ORM code (the repository's), run whole in one greenlet by
    `AsyncSession.run_sync`: SQLAlchemy's asyncio layer then adapts one call per write rather
    than one per step (begin, each statement, the flush, the commit; bench/README.md, the
    seventh pass). Its statements are still awaited underneath, and the session's before_flush
    hook stamps what the write changes, as in any other flush.

    Called by the handler, after the request is validated and authenticated, rather than a
    dependency: the commit plainly finishes before the handler answers, so a failed commit
    reaches the client as an error, never as a success; requests refused before the write never
    queue for a connection.

    A COMMIT the database never answers (a lost connection, the client's timeout) may have
    been applied all the same: the stamped rows are then looked up on another connection. Found
    as stamped, the write stands; else the client learns that its outcome is unknown
    (CommitUnconfirmed), never "retry", which could apply it twice.
    """
    maker: async_sessionmaker[AsyncSession] = app.state.db_maker
    written: list[Written] = []
    results: list[T] = []
    token = None

    def in_transaction(db: orm.Session) -> None:
        nonlocal token
        with db.begin():
            results.append(write(db))
            # The write has flushed: what the hook stamped is final. Listed now, since a failed
            # commit expires the objects.
            transaction = db.info.get(WRITING_TRANSACTION)
            written.extend(
                Written(obj, obj.id, obj.version, obj.last_modified_at, transaction)
                for obj in db.info.get(STAMPED, ())
            )
            token = committing.set(True)  # leaving db.begin() commits

    # The turn is kept until the outcome is known: the lookup's connection takes the place of
    # the one that failed, and a replica never opens more than its pool's size for requests.
    async with connection_line(app).turn():
        try:
            async with maker() as db:
                await db.run_sync(in_transaction)
        except Exception as exc:
            if token is None:
                raise
            unconfirmed = is_database_unavailable(exc) and not is_rolled_back(exc)
            stored = unconfirmed and await _restore_if_stored(app, written)
            # Only once the outcome is known: a request cancelled (at shutdown) until then is
            # answered that its write may have been saved (service.errors.UnexpectedErrors).
            committing.reset(token)
            if unconfirmed and not stored:
                logger.warning(
                    "commit unconfirmed, and the write not found stored (it may be all the "
                    "same): %s",
                    driver_reason(exc),
                )
                raise CommitUnconfirmed from exc
            if not stored:
                raise
            # The write stands: the handler answers as for any other.
            logger.warning("commit unconfirmed, and the write found stored: %s", driver_reason(exc))
        else:
            assert token is not None
            committing.reset(token)
    return results[0]


async def _restore_if_stored(app: FastAPI, written: Iterable[Written]) -> bool:
    """Whether every row the hook stamped is stored as this write wrote it: the version and the
    stamp, and by this write's transaction where it changed a row that existed.

    If so, the objects get the stored values back (the failed commit expired them) for the
    handler's answer. Asked on a connection of its own (the probe engine's), in place of the
    pool's that failed, which SQLAlchemy has discarded (with the rest of the pool, for most
    disconnects).
    """
    try:
        async with AsyncSession(app.state.probe_engine) as db:
            for row in written:
                model = type(row.obj)
                stored = await db.get(model, row.id, options=[undefer(model.txid)])
                if stored is None or (stored.version, stored.last_modified_at) != (
                    row.version,
                    row.last_modified_at,
                ):
                    return False
                if row.transaction is not None and stored.txid != row.transaction:
                    return False  # another writer's change, with the same version and stamp
                state = inspect(stored)
                for attribute in state.mapper.column_attrs:
                    if attribute.key not in state.unloaded:
                        set_committed_value(row.obj, attribute.key, state.dict[attribute.key])
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        return False  # the database still does not answer: the outcome stays unknown
    return True


@asynccontextmanager
async def read_connection(app: FastAPI, *, search: bool = False) -> AsyncIterator[Any]:
    """A driver (asyncpg) connection from the app's pool, for reads of one statement.

    No ORM session and no transaction: one statement reads one consistent snapshot on its own,
    so BEGIN and COMMIT would only add two round trips. The pool's raw connection, without the
    Core `Connection` around it, which a read that never begins a transaction does not need:
    returning it to the pool then sends nothing (there is nothing to roll back). Where the app's
    sessionmaker is bound to an open connection (the tests' transaction), reads run in that
    connection.

    A context manager in the handler rather than a dependency: the connection goes back to the
    pool as soon as the statement has run, and FastAPI's machinery for dependencies that yield
    costs more than the statement.

    A `search` (a list or a feed that may read the whole table, see ConnectionLine) waits for
    its turn among searches first.
    """
    maker: async_sessionmaker[AsyncSession] = app.state.db_maker
    bind: AsyncEngine | AsyncConnection = maker.kw["bind"]
    if isinstance(bind, AsyncConnection):
        yield (await bind.get_raw_connection()).driver_connection
        return
    line = connection_line(app)
    async with line.search_turn() if search else line.turn():
        connection = await bind.raw_connection()
        try:
            yield connection.driver_connection
        except (asyncpg.PostgresConnectionError, *DRIVER_CONNECTION_ERRORS, OSError):
            # The pool cannot see errors raised past SQLAlchemy: drop the connection ourselves.
            connection.invalidate()
            raise
        finally:
            if isinstance(bind.pool, QueuePool) and bind.pool.overflow() > 0:
                # The pool may close it rather than keep it (DB_MAX_OVERFLOW): I/O, which
                # SQLAlchemy's asyncio layer runs in a greenlet only.
                await greenlet_spawn(connection.close)
            else:
                connection.close()
