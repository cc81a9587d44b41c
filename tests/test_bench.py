"""The benchmark's parts: its seed obeys the service's rules, its reference app answers the
service's bytes, its wrk output parser reads wrk, and (where wrk is installed) a tiny run works.

No timing is asserted here: the benchmark measures, the tests only check that it measures the
right thing.
"""

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench import features, reference_app, seed, unit_of_work
from bench.bare_fastapi import create_app as create_bare_fastapi_app
from bench.reference_app import create_app as create_reference_app
from bench.wrk_output import parse_wrk
from tests.conftest import asyncpg_dsn, create_database, drop_database, session_body

# The repository. bench.run itself runs only in its own process (test_bench_command_...).
ROOT = Path(__file__).resolve().parent.parent

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.04ms    3.10ms  45.22ms   80.00%
    Req/Sec     5.33k   200.00     5.80k    70.00%
  Latency Distribution
     50%   11.52ms
     75%   13.01ms
     90%  800.00us
     99%    1.20s
  53012 requests in 10.00s, 60.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:   5301.20
Transfer/sec:      6.01MB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    run = parse_wrk(WRK_OUTPUT)
    assert run.requests_per_second == 5301.20
    assert run.p50_ms == 11.52
    assert run.p99_ms == 1200.0
    assert run.errors == 4 + 2 + 3


@pytest.fixture(scope="module")
def seeded_url(server_url: str) -> Iterator[str]:
    url = create_database(server_url, prefix="sessions_bench_test")
    seed.migrate_database(url)
    asyncio.run(seed.seed(url, sessions=1_000, events=10))
    yield url
    drop_database(server_url, url)


async def test_seed_obeys_the_stamp_rules(seeded_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(seeded_url))
    try:
        facts = await conn.fetchrow(
            """
            SELECT count(*) AS sessions,
                count(DISTINCT event_id) AS events,
                bool_and((version = 1) = (created_at = last_modified_at)) AS first_versions_equal,
                bool_and(last_modified_at >= created_at) AS never_before_creation,
                bool_and(last_modified_at < now()) AS all_in_the_past,
                bool_and(ends_at > starts_at) AS ends_after_start,
                bool_and((deleted_at IS NOT NULL) = (id % $1 = 0)) AS deleted_as_announced,
                bool_and(deleted_at IS NULL OR deleted_at = last_modified_at) AS deletes_stamped,
                max(id) AS max_id
            FROM sessions
            """,
            seed.DELETED_EVERY,
        )
        next_id = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('sessions', 'id'))")
        departures = await conn.fetchrow(
            """
            SELECT count(*) AS moved,
                bool_and(s.event_id <> d.event_id) AS elsewhere,
                bool_and((d.txid, d.last_modified_at, d.version)
                    = (s.txid, s.last_modified_at, s.version)) AS by_their_last_change,
                bool_and(s.version > 1 AND s.deleted_at IS NULL) AS changed_and_live
            FROM session_departures AS d JOIN sessions AS s ON s.id = d.session_id
            """
        )
    finally:
        await conn.close()
    assert facts["sessions"] == 1_000
    assert facts["events"] == 10
    for rule in ("first_versions_equal", "never_before_creation", "all_in_the_past"):
        assert facts[rule], rule
    for rule in ("ends_after_start", "deleted_as_announced", "deletes_stamped"):
        assert facts[rule], rule
    assert next_id == facts["max_id"] + 1
    assert departures["moved"] > 0
    for rule in ("elsewhere", "by_their_last_change", "changed_and_live"):
        assert departures[rule], rule
    assert await seed.broken_stamp_rules(seeded_url) == []


async def test_a_row_that_breaks_a_stamp_rule_is_reported(seeded_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(seeded_url))
    try:
        session_id = await conn.fetchval("SELECT min(id) FROM sessions WHERE version = 1")
        # A change written past the hook: a new version, last_modified_at left as created.
        await conn.execute("UPDATE sessions SET version = 2 WHERE id = $1", session_id)
        try:
            broken = await seed.broken_stamp_rules(seeded_url)
        finally:
            await conn.execute("UPDATE sessions SET version = 1 WHERE id = $1", session_id)
    finally:
        await conn.close()
    assert broken == ["version 1 exactly when created_at = last_modified_at"]


# The bare FastAPI app serves the reference's own handlers: it must answer the same bytes.
@pytest.fixture(params=[create_reference_app, create_bare_fastapi_app], ids=["reference", "bare"])
async def reference(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    app = request.param(asyncpg_dsn(database_url), pool_size=2)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reference") as client:
            yield client


async def test_reference_reads_answer_the_services_bytes(
    committed_client: httpx.AsyncClient, reference: httpx.AsyncClient
) -> None:
    body = session_body(event_id=5, subtitle="Sub", starts_at="2027-05-04T10:00:00+02:00")
    body |= {"ends_at": "2027-05-04T12:00:00Z", "slides_url": "https://example.org/s/1"}
    ids = [(await committed_client.post("/sessions", json=body)).json()["id"] for _ in range(3)]
    for path in (f"/sessions/{ids[0]}", "/sessions?event_id=5&limit=2"):
        service, bare = await committed_client.get(path), await reference.get(path)
        assert service.status_code == bare.status_code == 200
        assert service.content == bare.content, path
    cursor = (await committed_client.get("/sessions?event_id=5&limit=2")).json()["next_cursor"]
    path = f"/sessions?event_id=5&limit=2&cursor={cursor}"
    assert (await committed_client.get(path)).content == (await reference.get(path)).content


async def test_reference_writes_answer_the_services_bytes(
    committed_client: httpx.AsyncClient, reference: httpx.AsyncClient
) -> None:
    body = session_body(level="Beginner", starts_at="2027-05-04T10:00:00+02:00")
    created = await reference.post("/sessions", json=body)
    assert created.status_code == 201
    assert created.headers["location"] == f"/sessions/{created.json()['id']}"
    assert created.content == (await committed_client.get(created.headers["location"])).content

    patched = await reference.patch(
        created.headers["location"],
        content=b'{"subtitle": "Revision 2", "level": "Expert"}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.json()["version"] == 2
    assert patched.json()["last_modified_at"] > created.json()["last_modified_at"]
    assert patched.content == (await committed_client.get(created.headers["location"])).content


async def test_the_reference_sends_the_services_statements_and_nothing_more(
    database_url: str, committed_client: httpx.AsyncClient
) -> None:
    # asyncpg's pool would reset each connection it takes back with one more statement: the
    # reference would then pay a round trip per request that the service does not.
    session_id = (await committed_client.post("/sessions", json=session_body())).json()["id"]
    app = create_reference_app(asyncpg_dsn(database_url), pool_size=1)
    sent: list[str] = []
    async with app.router.lifespan_context(app):
        async with app.state.pool.acquire() as conn:  # the only connection
            conn.add_query_logger(lambda query: sent.append(query.query))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reference") as client:
            assert (await client.get(f"/sessions/{session_id}")).status_code == 200
            await asyncio.sleep(0)  # the logger is called soon after each statement
            read, sent[:] = list(sent), []
            patch = {"subtitle": "Revision 2"}
            assert (await client.patch(f"/sessions/{session_id}", json=patch)).status_code == 200
            await asyncio.sleep(0)
    assert read == [reference_app.GET]
    assert [query.split(maxsplit=1)[0] for query in sent] == [
        "BEGIN;",
        "SELECT",
        "UPDATE",
        "COMMIT;",
    ]
    assert sent[1] == reference_app.GET_FOR_UPDATE


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_bench_command_runs_end_to_end(server_url: str) -> None:
    command = [
        sys.executable,
        "-m",
        "bench",
        "--database-url",
        server_url,
        "--sessions",
        "1000",
        "--events",
        "10",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--operations",
        "GET by id",
        "PATCH real change",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tables = {
        block.splitlines()[0].split(" | ")[1]: block.splitlines()[2:]
        for block in result.stdout.split("\n\n")
        if block.startswith("| ")
    }
    rows = tables["service req/s"]
    assert [row.split(" | ")[0] for row in rows] == ["| GET by id", "| PATCH real change"]
    for row in rows:
        assert row.endswith(" | 0 |"), row  # no errors: every request answered 2xx
    assert "after the load, every row keeps the 4 stamp rules" in result.stdout
    # The unit of work of the one write measured, against its budget.
    [unit_of_work_row] = next(rows for header, rows in tables.items() if "unit of work" in header)
    name, *numbers = unit_of_work_row.strip("| ").split(" | ")
    assert name == "PATCH real change"
    alone, _, target_rps, budget, left = map(float, numbers)
    # The budget is the CPU per request of a worker busy all the time at the target req/s.
    assert budget == pytest.approx(1e6 / target_rps, rel=0.01, abs=1)
    assert left == pytest.approx(budget - alone, abs=1)


async def test_unit_of_work_runs_the_repositorys_writes(seeded_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(seeded_url))
    try:
        before = await conn.fetchrow(
            "SELECT count(*) AS rows, sum(version) AS versions FROM sessions"
        )
        costs = await unit_of_work.cpu_per_write(
            seeded_url, sessions=1_000, writes=20, concurrency=4, rounds=2
        )
        after = await conn.fetchrow(
            "SELECT count(*) AS rows, sum(version) AS versions FROM sessions"
        )
    finally:
        await conn.close()
    assert set(costs) == set(unit_of_work.WRITES)
    assert all(orm > 0 and driver > 0 for orm, driver in costs.values())
    # Each kind, each way (through the ORM, on the driver): 4 writes of warm-up (one per writer)
    # and 2 rounds of 20 measured. Each PATCH made a new version of an existing session (as the
    # hook or the reference stamps it), each POST a new session at version 1.
    each_way = 4 + 2 * 20
    assert after["rows"] - before["rows"] == 2 * each_way
    assert after["versions"] - before["versions"] == 2 * (each_way + each_way)


async def test_features_measures_every_variant_through_real_requests(seeded_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(seeded_url))
    try:
        versions = "SELECT sum(version) FROM sessions"
        before = await conn.fetchval(versions)
        # Small pools: the seven apps at once would take 70 of the server's connections, and
        # a server that other clients use too (a developer's, a CI runner's) may not have them.
        costs = await features.cpu_per_request(
            seeded_url, sessions=1_000, requests=features.CONCURRENCY, rounds=2, pool_size=2
        )
        after = await conn.fetchval(versions)
    finally:
        await conn.close()
    names = [variant.name for variant in features.VARIANTS]
    assert list(costs) == list(features.OPERATIONS)
    for operation in features.OPERATIONS:
        assert list(costs[operation]) == names
        assert all(len(rounds) == 2 and min(rounds) > 0 for rounds in costs[operation].values())
    # Every PATCH answered 200 (a request that did not fails the run) and was a real change:
    # per variant 64 of warm-up (a quarter of 64 is less than the 64 at once) and 2 rounds of 64.
    assert after - before == len(names) * (64 + 2 * 64)
    table = features.table(costs)
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [f"| {n}" for n in names]
