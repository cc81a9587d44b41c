"""q, the list's text search: served by the trigram indexes of migration 0005 where the server has
pg_trgm (the embedded PostgreSQL has not: these tests are skipped there)."""

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import TRIGRAM_INDEXES
from service.pagination import parse_sort
from service.policy import ANONYMOUS, visibility
from service.repository import SessionFilter, list_query

# Enough rows that the planner prefers the indexes on its own, as it does on a real table (on a
# few hundred it rightly reads the table instead).
ROWS = 20_000
SEED = """
INSERT INTO sessions (event_id, title, subtitle, short_abstract, state, created_at,
                      last_modified_at, version, txid)
SELECT 1 + n % 100, 'Session ' || n || ': ' || md5(n::text),
       CASE WHEN n % 3 = 0 THEN 'Part ' || n % 7 || ' of the track' END,
       'What you will learn: ' || repeat(md5((n + 1)::text), 2),
       (ARRAY['draft', 'pending', 'accepted', 'confirmed'])[1 + n % 4], now(), now(), 1,
       pg_current_xact_id()::text::bigint
FROM generate_series(1, :rows) AS n
"""


@pytest.fixture
async def searchable(connection: AsyncConnection) -> AsyncConnection:
    """The test's connection, on a table of ROWS sessions with fresh statistics."""
    available = "SELECT name FROM pg_available_extensions WHERE name = 'pg_trgm'"
    if await connection.scalar(text(available)) is None:
        pytest.skip("this server has no pg_trgm: migration 0005 built no trigram indexes")
    await connection.execute(text(SEED), {"rows": ROWS})
    # The new rows' entries into the indexes proper, as autovacuum moves them from the indexes'
    # pending lists on a live table; the planner's statistics, as autovacuum's ANALYZE takes them.
    for index in TRIGRAM_INDEXES:
        await connection.execute(
            text("SELECT gin_clean_pending_list(:index ::regclass)"), {"index": index}
        )
    await connection.execute(text("ANALYZE sessions"))  # rolled back with the rows
    return connection


async def explain(connection: AsyncConnection, sql: str, parameters: list[Any]) -> str:
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    plan = await driver.fetch("EXPLAIN " + sql, *parameters)
    return "\n".join(row[0] for row in plan)


@pytest.mark.parametrize("sort", ["id", "-starts_at", "title"])
async def test_search_statement_reads_the_trigram_indexes(
    searchable: AsyncConnection, sort: str
) -> None:
    # The statement the service sends for an anonymous search that matches nothing: without the
    # indexes, a read of the whole table.
    query, values = list_query(
        SessionFilter(q="kubernetes"),
        parse_sort([sort]),
        after=None,
        limit=21,
        visible=visibility(ANONYMOUS),
    )
    plan = await explain(searchable, query.sql, [values[name] for name in query.parameters])
    assert "BitmapOr" in plan, plan
    for index in TRIGRAM_INDEXES:
        assert f"Bitmap Index Scan on {index}" in plan, plan
    assert "Seq Scan" not in plan, plan


async def index_scans(connection: AsyncConnection) -> dict[str, int]:
    """How many times this transaction scanned each trigram index so far."""
    counts = await connection.execute(
        text(
            "SELECT name, pg_stat_get_xact_numscans(name::regclass) "
            "FROM unnest(CAST(:names AS text[])) AS name"
        ),
        {"names": sorted(TRIGRAM_INDEXES)},
    )
    return {name: scans for name, scans in counts}


async def test_search_keeps_reading_the_trigram_indexes_after_searches_they_cannot_serve(
    searchable: AsyncConnection, anonymous_client: httpx.AsyncClient
) -> None:
    # Text without a trigram ("zq") can only be found by reading the table. Were the statement
    # prepared once and reused, PostgreSQL would plan it generically after five such searches,
    # for a value it does not know: an index walk of the whole table, then kept for every search
    # on that connection.
    for _ in range(8):
        response = await anonymous_client.get("/sessions", params={"q": "zq"})
        assert response.json()["items"] == []
    before = await index_scans(searchable)
    response = await anonymous_client.get("/sessions", params={"q": "kubernetes"})
    assert response.json()["items"] == []
    after = await index_scans(searchable)
    assert all(after[index] == before[index] + 1 for index in TRIGRAM_INDEXES), (before, after)
