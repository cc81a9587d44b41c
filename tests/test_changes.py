"""GET /sessions/changes: the change feed, on committed data (it serves only finished writes)."""

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import orm, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import policy
from service.models import CURRENT_TXID, Session
from service.pagination import FEED_TOKEN, TOKEN_FORMAT, TokenSigner
from service.repository import FeedHorizon, feed_query, make_sessionmaker
from service.schemas import SessionRead, format_utc
from tests.conftest import (
    EVERYTHING,
    StoredRows,
    assert_problem,
    create_session,
    migrated_database,
    repository_call,
    session_body,
    settings_for,
    started,
)

# The feed waits for every older writing transaction on the server to end; on a shared server
# another client's transaction may hold it back for a while.
CATCH_UP_SECONDS = 60


async def poll(
    client: httpx.AsyncClient, since: str | None = None, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        "/sessions/changes", params=params | ({"since": since} if since else {})
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def follow(
    client: httpx.AsyncClient,
    until: Callable[[list[dict[str, Any]]], bool],
    since: str | None = None,
    **params: Any,
) -> tuple[list[dict[str, Any]], str]:
    """Poll with each next_token until the changes received satisfy `until`."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while not until(received):
        assert time.monotonic() < deadline, f"feed did not catch up: {received}"
        page = await poll(client, since, **params)
        received += page["items"]
        since = page["next_token"]
        if not page["items"]:
            await asyncio.sleep(0.05)
    assert since is not None
    return received, since


def has_ids(*ids: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda received: set(ids) <= {item["id"] for item in received}


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_changes_start_at_the_beginning_oldest_change_first_with_tombstones(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    first, second, third = [await create_session(committed_client, title=f"t{n}") for n in range(3)]
    patched = (
        await committed_client.patch(f"/sessions/{first['id']}", json={"level": "Expert"})
    ).json()
    assert (await committed_client.delete(f"/sessions/{second['id']}")).status_code == 204

    received, _ = await follow(committed_client, has_ids(first["id"], second["id"], third["id"]))

    # One entry per session, at the place of its last change.
    assert [item["id"] for item in received] == [third["id"], first["id"], second["id"]]
    assert received[0] == third | {"deleted": False}
    assert received[1] == patched | {"deleted": False}
    row = await stored.row(second["id"])
    assert received[2] == {
        "id": second["id"],
        "deleted_at": format_utc(row["deleted_at"]),
        "last_modified_at": format_utc(row["last_modified_at"]),
        "version": row["version"],
        "deleted": True,
    }
    assert row["version"] == 2


async def test_changes_page_through_with_next_token(
    committed_client: httpx.AsyncClient,
) -> None:
    ids = [(await create_session(committed_client, title=f"t{n}"))["id"] for n in range(5)]
    received, token = await follow(committed_client, has_ids(*ids), limit=2)
    assert [item["id"] for item in received] == ids
    # Nothing new: the same position comes back, and nothing is repeated.
    page = await poll(committed_client, token, limit=2)
    assert page["items"] == []
    more = await create_session(committed_client, title="later")
    received, _ = await follow(committed_client, has_ids(more["id"]), token, limit=2)
    assert [item["id"] for item in received] == [more["id"]]


async def test_changes_deliver_a_write_that_commits_after_a_later_stamp(
    committed_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The case a `last_modified_at > watermark` poll gets wrong, step by step."""
    maker = make_sessionmaker(engine)
    async with maker() as db, db.begin():
        held = await db.run_sync(repository_call, "create", session_body(title="held open"))
        later = await create_session(committed_client, title="committed first")
        # Stamped first, committed last.
        assert held.last_modified_at < parse(later["last_modified_at"])
        page = await poll(committed_client)
        # The feed holds "committed first" back: an older transaction is still open.
        assert later["id"] not in [item["id"] for item in page["items"]]
        since = page["next_token"]
        # A watermark client sees "committed first" now and moves past its stamp...
        watermark = later["last_modified_at"]
        seen = (
            await committed_client.get(
                "/sessions", params={"modified_since": "2000-01-01T00:00:00Z"}
            )
        ).json()
        assert [item["id"] for item in seen["items"]] == [later["id"]]
    # ...so once "held open" commits, with its earlier stamp, that client never sees it.
    after_watermark = (
        await committed_client.get("/sessions", params={"modified_since": watermark})
    ).json()
    assert held.id not in [item["id"] for item in after_watermark["items"]]
    # The feed delivers both, in the order of their transactions.
    received, _ = await follow(committed_client, has_ids(held.id, later["id"]), since)
    assert [item["id"] for item in received] == [held.id, later["id"]]
    assert received[0]["last_modified_at"] == format_utc(held.last_modified_at)


async def test_changes_leave_out_rolled_back_writes_and_no_op_patches(
    committed_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    session = await create_session(committed_client, title="kept")
    _, token = await follow(committed_client, has_ids(session["id"]))
    maker = make_sessionmaker(engine)
    async with maker() as db:
        transaction = await db.begin()
        await db.run_sync(repository_call, "create", session_body(title="rolled back"))
        await transaction.rollback()
    same = await committed_client.patch(f"/sessions/{session['id']}", json={"title": "kept"})
    assert same.json()["version"] == 1
    marker = await create_session(committed_client, title="marker")
    received, _ = await follow(committed_client, has_ids(marker["id"]), token)
    assert [item["id"] for item in received] == [marker["id"]]


async def test_changes_filter_by_event(committed_client: httpx.AsyncClient) -> None:
    mine = [
        (await create_session(committed_client, event_id=7, title=f"t{n}"))["id"] for n in range(3)
    ]
    other = await create_session(committed_client, event_id=8)
    received, token = await follow(committed_client, has_ids(*mine), event_id=7, limit=2)
    assert [item["id"] for item in received] == mine
    assert other["id"] not in [item["id"] for item in received]
    page = await poll(committed_client, token, event_id=7)
    assert page["items"] == []


async def test_a_session_moved_to_another_event_is_a_tombstone_in_the_feed_it_left(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    client = committed_client
    session = await create_session(client, event_id=7)
    _, token_7 = await follow(client, has_ids(session["id"]), event_id=7)
    token_8 = (await poll(client, event_id=8))["next_token"]
    moved = (await client.patch(f"/sessions/{session['id']}", json={"event_id": 8})).json()

    tombstone = {
        "id": session["id"],
        "deleted_at": None,
        "last_modified_at": moved["last_modified_at"],
        "version": moved["version"],
        "deleted": True,
    }
    left, _ = await follow(client, has_ids(session["id"]), token_7, event_id=7)
    assert left == [tombstone]
    entered, _ = await follow(client, has_ids(session["id"]), token_8, event_id=8)
    assert entered == [moved | {"deleted": False}]
    # A client starting now gets the tombstone too (it needs nothing), once, and no session.
    assert (await poll(client, event_id=7))["items"] == [tombstone]
    # The feed of every event has the session once, as it is.
    everything = [item for item in (await poll(client))["items"] if item["id"] == session["id"]]
    assert everything == [moved | {"deleted": False}]
    departure = await stored.conn.fetchrow("SELECT * FROM session_departures")
    assert dict(departure) == {
        "event_id": 7,
        "session_id": session["id"],
        "txid": (await stored.row(session["id"]))["txid"],
        "last_modified_at": parse(moved["last_modified_at"]),
        "version": moved["version"],
        "ever_public": False,  # a draft (session_body's state) when it left
    }


async def test_a_session_moved_back_is_in_each_feed_once_as_it_last_left_or_entered(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    client = committed_client
    session = await create_session(client, event_id=7)
    _, token_7 = await follow(client, has_ids(session["id"]), event_id=7)
    url = f"/sessions/{session['id']}"
    assert (await client.patch(url, json={"event_id": 8})).status_code == 200
    assert (await client.patch(url, json={"event_id": 9, "title": "Moved on"})).status_code == 200
    back = (await client.patch(url, json={"event_id": 7})).json()

    # Back in 7: its row took the departure's place there, so a client of 7 gets it once.
    received, _ = await follow(client, has_ids(session["id"]), token_7, event_id=7)
    assert received == [back | {"deleted": False}]
    assert (await poll(client, event_id=7))["items"] == [back | {"deleted": False}]
    # Events 8 and 9 each have the tombstone of the last change that moved it out.
    for event_id, version in ((8, 3), (9, 4)):
        items = (await poll(client, event_id=event_id))["items"]
        assert [(item["id"], item["deleted"], item["version"]) for item in items] == [
            (session["id"], True, version)
        ]
    departures = await stored.conn.fetch(
        "SELECT event_id FROM session_departures WHERE session_id = $1 ORDER BY event_id",
        session["id"],
    )
    assert [row["event_id"] for row in departures] == [8, 9]


async def test_a_session_moved_and_deleted_is_a_tombstone_in_both_events(
    committed_client: httpx.AsyncClient,
) -> None:
    client = committed_client
    session = await create_session(client, event_id=7)
    url = f"/sessions/{session['id']}"
    moved = (await client.patch(url, json={"event_id": 8})).json()
    assert (await client.delete(url)).status_code == 204

    # follow, not one poll: another transaction on the server may hold the feed back a while.
    (left,), _ = await follow(client, has_ids(session["id"]), event_id=7)
    assert (left["deleted"], left["deleted_at"], left["version"]) == (True, None, moved["version"])
    (deleted,), _ = await follow(client, has_ids(session["id"]), event_id=8)
    assert deleted["deleted"] is True
    assert deleted["deleted_at"] is not None
    assert deleted["version"] == moved["version"] + 1


async def test_a_move_rolled_back_leaves_no_departure(
    committed_client: httpx.AsyncClient, engine: AsyncEngine, stored: StoredRows
) -> None:
    session = await create_session(committed_client, event_id=7)
    maker = make_sessionmaker(engine)
    async with maker() as db, db.begin() as transaction:
        found = await db.run_sync(repository_call, "lock", session["id"], EVERYTHING)
        await db.run_sync(repository_call, "update", found, {"event_id": 8})
        assert await db.scalar(text("SELECT count(*) FROM session_departures")) == 1
        await transaction.rollback()
    assert await stored.conn.fetchval("SELECT count(*) FROM session_departures") == 0
    received, _ = await follow(committed_client, has_ids(session["id"]), event_id=7)
    assert received == [session | {"deleted": False}]


async def test_a_move_of_a_session_whose_event_was_expired_records_the_event_it_left(
    committed_client: httpx.AsyncClient, engine: AsyncEngine, stored: StoredRows
) -> None:
    session = await create_session(committed_client, event_id=7)

    def move(db: orm.Session) -> None:
        found = repository_call(db, "lock", session["id"], EVERYTHING)
        db.expire(found, ["event_id"])  # as after a refresh or a rollback to a savepoint
        repository_call(db, "update", found, {"event_id": 8})

    async with make_sessionmaker(engine)() as db, db.begin():
        await db.run_sync(move)
    departure = await stored.conn.fetchrow("SELECT event_id, session_id FROM session_departures")
    assert tuple(departure) == (7, session["id"])


async def test_changes_items_validate_against_the_session_schema(
    committed_client: httpx.AsyncClient,
) -> None:
    session = await create_session(committed_client, starts_at="2027-05-04T10:00:00+02:00")
    received, _ = await follow(committed_client, has_ids(session["id"]))
    item = received[-1]
    assert item.pop("deleted") is False
    assert SessionRead.model_validate(item).model_dump(mode="json") == session


async def test_changes_token_for_another_event_is_400(client: httpx.AsyncClient) -> None:
    token = (await poll(client, event_id=1))["next_token"]
    for params in ({}, {"event_id": 2}):
        response = await client.get("/sessions/changes", params=params | {"since": token})
        body = assert_problem(response, 400)
        assert body["parameter"] == "since"
    assert (
        await client.get("/sessions/changes", params={"since": token, "event_id": 1})
    ).is_success


async def test_changes_forged_or_foreign_token_is_400(client: httpx.AsyncClient) -> None:
    await create_session(client)
    await create_session(client)
    cursor = (await client.get("/sessions", params={"limit": 1})).json()["next_cursor"]
    forged = TokenSigner("another secret").sign(
        FEED_TOKEN, {"format": TOKEN_FORMAT, "event_id": None, "txid": 0, "id": 0}
    )
    token = (await poll(client))["next_token"]
    payload, signature = token.split(".")
    respelled = [f"{payload}=.{signature}", f"{payload}.{signature[:3]}\n{signature[3:]}"]
    for bad in (cursor, forged, f"{payload}x.{signature}", "garbage!", ".", *respelled):
        body = assert_problem(await client.get("/sessions/changes", params={"since": bad}), 400)
        assert body["parameter"] == "since"
        assert body["detail"].startswith("The since token ")


@pytest.mark.parametrize("position", [{"txid": 2**63}, {"id": 2**31}, {"txid": -1}])
async def test_changes_forged_token_beyond_the_columns_is_400(
    client: httpx.AsyncClient, position: dict[str, int]
) -> None:
    # Signed with the secret, as anyone can where it is left at its public development default.
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    signer = TokenSigner(DEVELOPMENT_CURSOR_SECRET)
    genuine = signer.verify(FEED_TOKEN, (await poll(client))["next_token"])
    forged = signer.sign(FEED_TOKEN, genuine | position)
    response = await client.get("/sessions/changes", params={"since": forged})
    assert assert_problem(response, 400)["parameter"] == "since"


async def test_changes_token_never_passes_the_newest_stored_transaction(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    # Transactions that took an id and rolled back move the horizon past ids that may never
    # reach the disk: after a crash PostgreSQL hands them out again, and a change committed
    # under one would sort behind a token placed past it (tests/test_outage.py crashes for real).
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    client = committed_client
    session = await create_session(client)
    _, since = await follow(client, has_ids(session["id"]))
    for _ in range(3):
        await stored.conn.execute("BEGIN; SELECT pg_current_xact_id(); ROLLBACK")
    page = await poll(client, since)
    newest = await stored.conn.fetchval("SELECT max(txid) FROM sessions")
    position = TokenSigner(DEVELOPMENT_CURSOR_SECRET).verify(FEED_TOKEN, page["next_token"])
    assert position["txid"] <= newest + 1
    # The feed goes on from there: nothing served twice, nothing skipped.
    later = await create_session(client)
    received, _ = await follow(client, has_ids(later["id"]), page["next_token"])
    assert [item["id"] for item in page["items"] + received] == [later["id"]]


async def test_changes_token_of_another_database_history_is_400(client: httpx.AsyncClient) -> None:
    # Another cluster (dump and restore), or this one restored to an earlier point (a new
    # timeline): a token of its transaction ids is refused even once the counter has passed it.
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    signer = TokenSigner(DEVELOPMENT_CURSOR_SECRET)
    genuine = signer.verify(FEED_TOKEN, (await poll(client))["next_token"])
    identifier, timeline = genuine["cluster"].split(".")
    assert identifier.isdigit()
    assert len(timeline) == 8
    for cluster in (
        f"{int(identifier) + 1}.{timeline}",
        f"{identifier}.{int(timeline, 16) + 1:08X}",
    ):
        foreign = signer.sign(FEED_TOKEN, genuine | {"cluster": cluster, "txid": 1})
        response = await client.get("/sessions/changes", params={"since": foreign})
        assert "another database" in assert_problem(response, 400)["detail"]
    # Another database of this cluster, whose transaction ids are the same counter's: its
    # position would skip this database's changes below it.
    foreign = signer.sign(FEED_TOKEN, genuine | {"database": genuine["database"] + 1})
    response = await client.get("/sessions/changes", params={"since": foreign})
    assert "another database" in assert_problem(response, 400)["detail"]
    # Tokens of earlier releases name no history, or no database: still taken, as before.
    for missing in ("cluster", "database"):
        legacy = {key: value for key, value in genuine.items() if key != missing}
        response = await client.get(
            "/sessions/changes", params={"since": signer.sign(FEED_TOKEN, legacy)}
        )
        assert response.status_code == 200


@pytest.fixture
def other_database(server_url: str) -> Iterator[str]:
    """Another database of the test server, migrated."""
    with migrated_database(server_url, prefix="sessions_test_other") as url:
        yield url


async def test_changes_token_of_another_database_of_the_server_is_400(
    other_database: str, committed_client: httpx.AsyncClient
) -> None:
    # The databases of one server share its transaction ids: a position in another's feed, past
    # a change of this one, skipped it (with the same CURSOR_SECRET, as the default).
    ours = await create_session(committed_client)
    async with started(settings_for(other_database)) as (_, other):
        theirs = await create_session(other)
        _, foreign = await follow(other, has_ids(theirs["id"]))
    response = await committed_client.get("/sessions/changes", params={"since": foreign})
    assert "another database" in assert_problem(response, 400)["detail"]
    received, _ = await follow(committed_client, has_ids(ours["id"]))
    assert [item["id"] for item in received] == [ours["id"]]


async def test_changes_token_ahead_of_the_database_is_400(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # A position past every transaction this database has run: issued by another cluster (the
    # data moved by dump and restore), or by this one before a restore to an earlier point. Its
    # polls would skip every change until the counter caught up.
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    signer = TokenSigner(DEVELOPMENT_CURSOR_SECRET)
    genuine = signer.verify(FEED_TOKEN, (await poll(client))["next_token"])
    # Ahead of the server's counter, not of the genuine position: on an empty table that is 1,
    # and a server that has run a million transactions is past 1,000,001.
    counter = (await connection.execute(select(CURRENT_TXID))).scalar_one()
    ahead = signer.sign(FEED_TOKEN, genuine | {"txid": counter + 1_000_000})
    response = await client.get("/sessions/changes", params={"since": ahead})
    body = assert_problem(response, 400)
    assert body["parameter"] == "since"
    assert "another database" in body["detail"]
    # The genuine one still serves.
    since = signer.sign(FEED_TOKEN, genuine)
    assert (await client.get("/sessions/changes", params={"since": since})).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"event_id": 0},
        # Integers as the spec has them: pydantic's lax mode read these as 10 and 1.
        {"limit": "1_0"},
        {"event_id": "+1"},
        {"event_id": " 1"},
    ],
)
async def test_changes_bad_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    body = assert_problem(await client.get("/sessions/changes", params=params), 422)
    (name,) = params
    assert ["query", name] in [error["location"] for error in body["errors"]]


async def test_changes_follow_transaction_order_not_stamp_order(
    committed_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    maker = make_sessionmaker(engine)
    async with maker() as db, db.begin():
        early = await db.run_sync(repository_call, "create", session_body(title="first write of A"))
        between = await create_session(committed_client, title="B, between A's writes")
        late = await db.run_sync(repository_call, "create", session_body(title="second write of A"))
    # Stamps say early, between, late; the transactions say A (early, late), then B.
    received, _ = await follow(committed_client, has_ids(early.id, late.id, between["id"]), limit=1)
    assert [item["id"] for item in received] == [early.id, late.id, between["id"]]


async def test_writes_stamp_the_txid_of_their_transaction_and_no_ops_do_not(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    session = await create_session(committed_client)
    created = (await stored.row(session["id"]))["txid"]
    await committed_client.patch(f"/sessions/{session['id']}", json={"title": session["title"]})
    assert (await stored.row(session["id"]))["txid"] == created
    await committed_client.patch(f"/sessions/{session['id']}", json={"title": "Changed"})
    patched = (await stored.row(session["id"]))["txid"]
    assert patched > created
    await committed_client.delete(f"/sessions/{session['id']}")
    assert (await stored.row(session["id"]))["txid"] > patched


async def test_an_update_outside_the_flush_stamps_its_txid_too(
    committed_client: httpx.AsyncClient, engine: AsyncEngine, stored: StoredRows
) -> None:
    # The column sets txid itself: a bulk or Core UPDATE still moves the row in the feed.
    session = await create_session(committed_client)
    created = (await stored.row(session["id"]))["txid"]
    async with engine.begin() as conn:
        changed = update(Session).where(Session.id == session["id"]).values(comments="By hand")
        await conn.execute(changed)
        own_txid = (await conn.execute(select(CURRENT_TXID))).scalar_one()
    assert (await stored.row(session["id"]))["txid"] == own_txid > created


async def test_a_change_of_the_feed_sent_back_as_read_is_no_change(
    committed_client: httpx.AsyncClient,
) -> None:
    client = committed_client  # the feed serves committed writes only
    created = (await client.post("/sessions", json=session_body())).json()
    received, _ = await follow(client, has_ids(created["id"]))
    (change,) = [item for item in received if item["id"] == created["id"]]
    assert change["deleted"] is False
    patched = await client.patch(f"/sessions/{created['id']}", json=change)
    assert patched.status_code == 200, patched.text
    assert patched.json() == created  # no new version
    # A tombstone's `deleted: true` is not a way to delete: an unknown field.
    refused = await client.patch(f"/sessions/{created['id']}", json={"deleted": True})
    assert assert_problem(refused, 422)["errors"][0]["location"] == ["body", "deleted"]


HORIZON = FeedHorizon(xmin=100, durable=90, cluster="7-1", database=5)


@pytest.mark.parametrize(
    ("served", "page_full", "position"),
    [
        ((80, 3), True, (80, 3)),  # more may follow: right after the last change served
        ((80, 3), False, (90, 0)),  # up to date: at the horizon, but not past what is on disk
        ((95, 3), False, (95, 3)),  # never behind what was served
        ((0, 0), False, (90, 0)),  # an empty first page
    ],
)
def test_the_next_position_is_the_horizon_after_a_short_page(
    served: tuple[int, int], page_full: bool, position: tuple[int, int]
) -> None:
    assert HORIZON.next_position(served, page_full=page_full) == position
    assert HORIZON._replace(durable=200).next_position((80, 3), page_full=False) == (100, 0)


def test_a_position_is_from_this_history_and_database_or_not_at_all() -> None:
    assert HORIZON.may_have_issued((100, 9), {"cluster": "7-1", "database": 5})
    assert HORIZON.may_have_issued((100, 9), {})  # a token of a release that named neither
    assert not HORIZON.may_have_issued((101, 0), {"cluster": "7-1", "database": 5})  # ahead
    assert not HORIZON.may_have_issued((10, 0), {"cluster": "7-2", "database": 5})  # restored
    assert not HORIZON.may_have_issued((10, 0), {"cluster": "7-1", "database": 6})


# A speaker's drafts by the thousand, never public, among a few public sessions.
DRAFTS_AND_PUBLIC = """
INSERT INTO sessions (event_id, title, state, ever_public, created_at, last_modified_at,
                      version, txid)
SELECT 1 + n % 2, 'Session ' || n, CASE WHEN n % 200 = 0 THEN 'accepted' ELSE 'draft' END,
       n % 200 = 0, now(), now(), 1, pg_current_xact_id()::text::bigint
FROM generate_series(1, 20000) AS n
"""


@pytest.mark.parametrize("event_id", [None, 1], ids=["all events", "one event"])
async def test_an_anonymous_feed_reads_only_the_index_of_what_has_been_public(
    connection: AsyncConnection, event_id: int | None
) -> None:
    # It read past every draft never public, in the order of all changes: 40 to 70 ms a page on
    # 300,000 drafts, whatever few public sessions there were.
    await connection.execute(text(DRAFTS_AND_PUBLIC))
    await connection.execute(text("ANALYZE sessions"))  # rolled back with the rows
    query, values = feed_query(
        event_id=event_id,
        after=None,
        limit=50,
        horizon=2**62,
        visible=policy.feed_visibility(policy.ANONYMOUS),
    )
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    # The plan for any values (generic), as PostgreSQL may keep one for a statement that asyncpg
    # prepared, after five runs: a condition on the parameters' values would match the indexes'
    # only in a plan made for those values.
    await driver.execute(f"PREPARE feed AS {query.sql}")
    try:
        await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        arguments = ", ".join(sql_literal(values[name]) for name in query.parameters)
        rows = await driver.fetch(f"EXPLAIN EXECUTE feed({arguments})")
    finally:
        await driver.execute("DEALLOCATE feed")
    plan = "\n".join(row[0] for row in rows)
    # Either index of what has been public (of one event, or of all with the event as a filter:
    # the planner's choice); never the indexes of every session.
    assert re.search(r"Index Scan using ix_sessions_(event_id_)?txid_id_public on sessions", plan)
    assert "ix_sessions_txid_id on" not in plan, plan
    assert "ix_sessions_event_id_txid_id on" not in plan, plan
    assert "Seq Scan on sessions" not in plan, plan


def sql_literal(value: Any) -> str:
    """A parameter's value as SQL, for EXECUTE (which takes no parameters of its own)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, list), value
    return "ARRAY[" + ", ".join(f"'{item}'" for item in value) + "]"
