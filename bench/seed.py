"""A benchmark database: created on a PostgreSQL server, migrated, seeded with generate_series.

The seeded rows obey the service's rules: `created_at == last_modified_at` at version 1, a later
`last_modified_at` for every later version, all stamps in the past, `ends_at > starts_at`, and
soft-deleted rows stamped when they were deleted. One row in DELETED_EVERY is deleted, so reads
must skip them; the wrk scripts never ask for those ids. Some sessions moved to another event
(MOVED_EVERY), as the change feed of one event must show.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url

from service.migrations import migrate
from service.settings import to_asyncpg_url

__all__ = ["to_asyncpg_url"]

DELETED_EVERY = 97  # a prime: deleted sessions fall in every event, not all in a few
# One session in MOVED_EVERY (of those changed since created and not deleted) came from the next
# event, its departure recorded as the service's hook records it (the change feed of that event
# serves it as a tombstone).
MOVED_EVERY = 53

_SEED = """
INSERT INTO sessions (
    id, event_id, title, subtitle, short_abstract, long_abstract, comments, level, language,
    starts_at, ends_at, track_id, session_type_id, microlocation_id,
    slides_url, video_url, audio_url, signup_url, state, is_locked, ever_public,
    created_at, last_modified_at, version, deleted_at, txid
)
SELECT
    n,
    1 + n % $3,
    'Session ' || n || ': ' || (ARRAY['Keyset pagination', 'Async SQLAlchemy',
        'Zero-downtime migrations', 'Observability', 'PostgreSQL internals',
        'Type-safe APIs', 'Testing with real databases', 'Caching'])[1 + n % 8],
    CASE WHEN n % 3 = 0 THEN NULL ELSE 'Part ' || (n % 7) || ' of the track' END,
    'What you will learn in session ' || n || ': ' || repeat(md5(n::text), 2),
    CASE WHEN n % 4 = 0 THEN NULL ELSE repeat(md5((n + 1)::text) || ' ', 8) END,
    CASE WHEN n % 10 = 0 THEN 'Needs a projector' END,
    (ARRAY['Beginner', 'Intermediate', 'Advanced', 'Expert', NULL])[1 + n % 5],
    (ARRAY['en', 'de', 'fr', 'es'])[1 + n % 4],
    slot,
    slot + interval '45 minutes',
    1 + n % 12,
    1 + n % 4,
    CASE WHEN n % 5 = 0 THEN NULL ELSE 1 + n % 30 END,
    'https://slides.example.org/' || n,
    CASE WHEN n % 2 = 0 THEN 'https://video.example.org/' || n END,
    NULL,
    'https://signup.example.org/' || n,
    (ARRAY['draft', 'pending', 'accepted', 'confirmed', 'rejected', 'canceled',
        'withdrawn'])[1 + n % 7],
    n % 20 = 0,
    -- Has been public: is public now, or (as migration 0007 counts the sessions stored before
    -- it) has changed since it was created.
    n % 7 IN (2, 3) OR version > 1,
    created,
    modified,
    version,
    CASE WHEN n % $4 = 0 THEN modified END,
    -- Written by this transaction, as a bulk import would write them (the change feed's order).
    pg_current_xact_id()::text::bigint
FROM generate_series($1::int, $2::int) AS n,
    LATERAL (SELECT
        timestamptz '2027-03-01 08:00Z' + (n % 365) * interval '1 day'
            + (n % 10) * interval '1 hour' AS slot,
        timestamptz '2026-01-01 00:00Z' + n * interval '1 second'
            + (n % 1000) * interval '1 microsecond' AS created,
        1 + n % 5 AS version
    ) AS base,
    LATERAL (SELECT
        created + (version - 1) * interval '17 minutes 3.000001 seconds' AS modified
    ) AS stamps
"""
# Their last change moved them: the departure has its stamp, version and transaction id.
_SEED_DEPARTURES = """
INSERT INTO session_departures (event_id, session_id, txid, last_modified_at, version)
SELECT event_id % $3 + 1, id, txid, last_modified_at, version
FROM sessions
WHERE id BETWEEN $1 AND $2 AND id % $4 = 0 AND version > 1 AND deleted_at IS NULL
"""


def asyncpg_dsn(url: str) -> str:
    """A PostgreSQL URL as asyncpg takes it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(server_url: str) -> str:
    """Create an empty, uniquely named database on the server and return its URL."""
    name = f"sessions_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return to_asyncpg_url(
        make_url(server_url).set(database=name).render_as_string(hide_password=False)
    )


async def drop_database(server_url: str, database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        name = make_url(database_url).database
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# The rules of last_modified_at that every row keeps, seeded or written under load (one host's
# clock here): each holds for every row, or the run found a bug.
STAMP_RULES = {
    "version 1 exactly when created_at = last_modified_at": (
        "(version = 1) = (created_at = last_modified_at)"
    ),
    "last_modified_at never before created_at": "last_modified_at >= created_at",
    "every stamp in the past": "last_modified_at <= now()",
    "every write has its transaction id": "txid IS NOT NULL",
}


async def broken_stamp_rules(database_url: str) -> list[str]:
    """The STAMP_RULES that some row breaks (none, if the service and the seed are right)."""
    checks = ", ".join(f"bool_and({sql})" for sql in STAMP_RULES.values())
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        held = await conn.fetchrow(f"SELECT {checks} FROM sessions")
    finally:
        await conn.close()
    return [rule for rule, ok in zip(STAMP_RULES, held, strict=True) if not ok]


def migrate_database(database_url: str) -> None:
    migrate(database_url)


@contextlib.contextmanager
def migrated_database(server_url: str, *, keep: bool = False) -> Iterator[str]:
    """A database of its own on the server, migrated; dropped on leaving unless `keep`."""
    database_url = asyncio.run(create_database(server_url))
    try:
        migrate_database(database_url)
        yield database_url
    finally:
        if not keep:
            asyncio.run(drop_database(server_url, database_url))


async def seed(database_url: str, *, sessions: int, events: int, start: int = 1) -> None:
    """Add sessions start..sessions (ids as given) spread over events, then ANALYZE."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        batch = 200_000
        for first in range(start, sessions + 1, batch):
            last = min(first + batch - 1, sessions)
            await conn.execute(_SEED, first, last, events, DELETED_EVERY)
            if events > 1:
                await conn.execute(_SEED_DEPARTURES, first, last, events, MOVED_EVERY)
        # Explicit ids do not move the identity sequence: later POSTs continue after them.
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('sessions', 'id'), max(id)) FROM sessions"
        )
        await conn.execute("VACUUM ANALYZE sessions, session_departures")
    finally:
        await conn.close()


async def grow(database_url: str, *, sessions: int, events: int) -> None:
    """Seed more sessions after the highest id (POSTs may have taken some) up to this count."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        count, max_id = await conn.fetchrow("SELECT count(*), coalesce(max(id), 0) FROM sessions")
    finally:
        await conn.close()
    if count < sessions:
        await seed(
            database_url, sessions=max_id + sessions - count, events=events, start=max_id + 1
        )
