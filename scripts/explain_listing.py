"""EXPLAIN ANALYZE the list and change-feed statements the repository sends, on a large table.

Reproduces the plans recorded in alembic/versions/0002_listing_and_change_feed.py: creates a
scratch database on SERVER_URL, migrates it, seeds --rows sessions with generate_series (1,000
events, 10 % unscheduled, 2 % deleted), runs each query shape deep in the table and prints its
plan's scans and time, then drops the database.

  .venv/bin/python scripts/explain_listing.py postgresql://root@127.0.0.1:5432/postgres
"""

import argparse
import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from service.migrations import migrate
from service.pagination import parse_sort
from service.policy import ANONYMOUS, Visibility, feed_visibility
from service.repository import SessionFilter, feed_query, list_query, make_sessionmaker
from service.settings import to_asyncpg_url

SEED = """
INSERT INTO sessions (event_id, title, subtitle, short_abstract, level, language, starts_at,
                      ends_at, track_id, state, created_at, last_modified_at, version,
                      deleted_at, txid)
SELECT 1 + i % 1000,
       initcap(md5(i::text)) || ' talk',
       CASE WHEN i % 3 = 0 THEN 'Subtitle ' || md5((i * 7)::text) END,
       'About ' || md5((i * 13)::text) || CASE WHEN i % 997 = 0 THEN ' keyset' ELSE '' END,
       (ARRAY['Beginner', 'Intermediate', 'Advanced', 'Expert'])[1 + i % 4],
       (ARRAY['en', 'de', 'fr'])[1 + i % 3],
       s.starts_at, s.starts_at + interval '45 minutes',
       1 + i % 20,
       (ARRAY['draft', 'pending', 'accepted', 'confirmed', 'rejected', 'canceled',
              'withdrawn'])[1 + i % 7],
       timestamptz '2026-01-01' + i * interval '10 seconds',
       timestamptz '2026-01-01' + i * interval '10 seconds' + random() * interval '30 days',
       1 + i % 5,
       CASE WHEN i % 50 = 0 THEN timestamptz '2026-06-01' END,
       -- As if each row had been written by a transaction of its own, all of them ended.
       pg_current_xact_id()::text::bigint - 3 * $1 + 3 * i - (random() * 2)::int
FROM generate_series(1, $1) AS i,
     LATERAL (SELECT CASE WHEN i % 10 <> 0
                          THEN timestamptz '2027-01-01' + random() * interval '365 days'
                     END AS starts_at) AS s
"""

DEEP = datetime(2027, 12, 20, tzinfo=UTC)
EARLY = datetime(2027, 1, 10, tzinfo=UTC)
LIST_CASES: list[tuple[str, SessionFilter, str, list[Any] | None]] = [
    ("sort=id", SessionFilter(), "id", [900_000]),
    ("sort=starts_at", SessionFilter(), "starts_at", [DEEP, 1]),
    ("sort=-starts_at", SessionFilter(), "-starts_at", [EARLY, 1]),
    ("sort=-starts_at, among the NULLs", SessionFilter(), "-starts_at", [None, 500_000]),
    ("sort=ends_at", SessionFilter(), "ends_at", [DEEP, 1]),
    ("sort=title", SessionFilter(), "title", ["Fff", 1]),
    ("sort=created_at", SessionFilter(), "created_at", [datetime(2026, 4, 15, tzinfo=UTC), 1]),
    ("sort=-last_modified_at", SessionFilter(), "-last_modified_at", [EARLY, 1]),
    ("sort=title,-starts_at", SessionFilter(), "title,-starts_at", ["Fff", DEEP, 5]),
    ("event_id&sort=starts_at", SessionFilter(event_id=500), "starts_at", [DEEP, 1]),
    ("event_id&sort=title", SessionFilter(event_id=500), "title", ["F", 1]),
    ("q", SessionFilter(q="keyset"), "id", None),
    ("event_id&q", SessionFilter(event_id=500, q="keyset"), "id", None),
]


async def explain(db: AsyncSession, name: str, statement: str, params: Sequence[Any]) -> None:
    raw = await (await db.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    plan = [
        row[0] for row in await driver.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + statement, *params)
    ]
    scans = [line.strip(" ->") for line in plan if "Scan" in line or "Sort Method" in line]
    elapsed = next(line for line in plan if "Execution Time" in line).split(":")[1].strip()
    print(f"{name:34} {elapsed:>10}  {' | '.join(scans)[:140]}")


async def run(database_url: str, rows: int) -> None:
    conn = await asyncpg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        print(f"seeding {rows:,} rows...")
        await conn.execute(SEED, rows)
        await conn.execute("VACUUM ANALYZE sessions")
        deep_txid = await conn.fetchval("SELECT txid FROM sessions WHERE id = 900000")
        # The feed's horizon as the service reads it (service.models.SNAPSHOT_XMIN).
        horizon = await conn.fetchval(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        )
    finally:
        await conn.close()

    engine = create_async_engine(database_url)
    async with make_sessionmaker(engine)() as db, db.begin():
        everything = Visibility(everything=True)
        for name, filters, sort, after in LIST_CASES:
            query, values = list_query(
                filters, parse_sort([sort]), after=after, limit=21, visible=everything
            )
            await explain(db, name, query.sql, [values[name] for name in query.parameters])
        for name, event_id in (("changes", None), ("changes?event_id", 500)):
            query, values = feed_query(
                event_id=event_id,
                after=(deep_txid, 900_000),
                limit=100,
                horizon=horizon,
                visible=feed_visibility(ANONYMOUS),
            )
            await explain(db, name, query.sql, [values[name] for name in query.parameters])
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server_url", help="a PostgreSQL server to create the scratch database on")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    server_url = to_asyncpg_url(args.server_url)
    name = f"sessions_explain_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_url(server_url).set(drivername="postgresql").render_as_string(False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        database_url = make_url(server_url).set(database=name).render_as_string(False)
        migrate(database_url)
        asyncio.run(run(database_url, args.rows))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
