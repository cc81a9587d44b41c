"""The change feed under concurrent writers: a poller following next_token misses nothing.

Writers create, patch (moving sessions between events too) and delete through the API while
others hold transactions open on purpose (they write or move, wait, then commit or roll back), so
transactions commit in another order than they stamped last_modified_at. A poller of the whole
feed and one of each event's follow next_token all along with small pages. At the end the first
holds every session as the database does, and each of the others exactly its event's live ones.

Size: FEED_STRESS_OPERATIONS (default 240, a few seconds), e.g.
  FEED_STRESS_OPERATIONS=5000 .venv/bin/python -m pytest tests/test_changes_stress.py
"""

import asyncio
import os
import random
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from service.repository import make_sessionmaker
from service.schemas import SessionChange, SessionTombstone, format_utc
from tests.conftest import EVERYTHING, StoredRows, repository_call, session_body
from tests.test_changes import CATCH_UP_SECONDS

OPERATIONS = int(os.environ.get("FEED_STRESS_OPERATIONS", "240"))
API_WRITERS = 4
HOLDING_WRITERS = 2
POLL_LIMIT = 7
EVENTS = 3


async def test_poller_following_next_token_misses_no_committed_change(
    committed_client: httpx.AsyncClient, engine: AsyncEngine, stored: StoredRows
) -> None:
    rng = random.Random(4)
    ids: list[int] = []
    maker = make_sessionmaker(engine)
    held_commits = 0
    overtaken_commits = 0

    async def api_writer(operations: int) -> None:
        for _ in range(operations):
            roll = rng.random()
            if roll < 0.3 or not ids:
                response = await committed_client.post(
                    "/sessions", json=session_body(event_id=rng.randint(1, EVENTS))
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            elif roll < 0.85:
                patch = rng.choice(
                    [
                        {"title": f"t{rng.randint(0, 10**6)}"},
                        {"level": "Expert"},
                        {"track_id": 2},
                        {"event_id": rng.randint(1, EVENTS)},
                    ]
                )
                response = await committed_client.patch(f"/sessions/{rng.choice(ids)}", json=patch)
                assert response.status_code in (200, 404), response.text
            else:
                response = await committed_client.delete(f"/sessions/{rng.choice(ids)}")
                assert response.status_code in (204, 404), response.text

    async def holding_writer(transactions: int) -> None:
        nonlocal held_commits, overtaken_commits
        for _ in range(transactions):
            async with maker() as db:
                transaction = await db.begin()
                created = await db.run_sync(repository_call, "create", session_body(title="held"))
                existing = (
                    await db.run_sync(repository_call, "lock", rng.choice(ids), EVERYTHING)
                    if ids
                    else None
                )
                if existing is not None:
                    change = rng.choice(
                        [{"subtitle": f"held {rng.random()}"}, {"event_id": rng.randint(1, EVENTS)}]
                    )
                    await db.run_sync(repository_call, "update", existing, change)
                # Others stamp and commit meanwhile; this one stamped first, commits later.
                await asyncio.sleep(rng.uniform(0.02, 0.15))
                # A client polling `last_modified_at > newest stamp seen` right now would move
                # past this transaction's stamp, and never see its rows.
                later_stamp = format_utc(created.last_modified_at + timedelta(microseconds=1))
                overtaken = (
                    await committed_client.get(
                        "/sessions", params={"modified_since": later_stamp, "limit": 1}
                    )
                ).json()["items"]
                if rng.random() < 0.2:
                    await transaction.rollback()
                else:
                    await transaction.commit()
                    ids.append(created.id)
                    held_commits += 1
                    overtaken_commits += bool(overtaken)

    # What a client of every event and a client of each event hold.
    views: dict[int | None, dict[int, dict[str, Any]]] = {
        event_id: {} for event_id in (None, *range(1, EVENTS + 1))
    }
    writers_done = asyncio.Event()

    async def poll_once(event_id: int | None, token: str | None) -> tuple[int, str]:
        view = views[event_id]
        params: dict[str, Any] = {"limit": POLL_LIMIT}
        params |= ({"since": token} if token else {}) | ({"event_id": event_id} if event_id else {})
        response = await committed_client.get("/sessions/changes", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        for item in page["items"]:
            known = view.get(item["id"])
            assert known is None or known["version"] < item["version"], (known, item)
            if event_id is None or not item["deleted"]:
                view[item["id"]] = item
            else:  # a client of one event drops what left it
                view.pop(item["id"], None)
        return len(page["items"]), page["next_token"]

    async def poller(event_id: int | None) -> str | None:
        token: str | None = None
        while True:
            received, token = await poll_once(event_id, token)
            if writers_done.is_set() and received < POLL_LIMIT:
                return token
            if received < POLL_LIMIT:
                await asyncio.sleep(0.01)

    polling = [asyncio.create_task(poller(event_id)) for event_id in views]
    per_writer = OPERATIONS // (API_WRITERS + HOLDING_WRITERS)
    await asyncio.gather(
        *(api_writer(per_writer) for _ in range(API_WRITERS)),
        *(holding_writer(max(1, per_writer // 4)) for _ in range(HOLDING_WRITERS)),
    )
    writers_done.set()
    tokens = dict(zip(views, await asyncio.gather(*polling), strict=True))

    # Every writer has committed: a session created now has a newer transaction than all of
    # theirs, and once a poller has received it, it has received everything before it.
    markers = {
        event_id: (
            await committed_client.post(
                "/sessions", json=session_body(title="marker", event_id=event_id)
            )
        ).json()["id"]
        for event_id in range(1, EVENTS + 1)
    }
    for event_id, view in views.items():
        awaited = set(markers.values()) if event_id is None else {markers[event_id]}
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while not awaited <= view.keys():
            assert time.monotonic() < deadline, f"the feed of {event_id} did not reach the marker"
            received, tokens[event_id] = await poll_once(event_id, tokens[event_id])
            if not received:
                await asyncio.sleep(0.05)

    rows = await stored.conn.fetch("SELECT * FROM sessions ORDER BY id")
    expected = {
        row["id"]: (
            SessionTombstone.model_validate(dict(row))
            if row["deleted_at"] is not None
            else SessionChange.model_validate(dict(row))
        ).model_dump(mode="json")
        for row in rows
    }
    for event_id, view in views.items():
        wanted = {
            row["id"]: expected[row["id"]]
            for row in rows
            if event_id is None or (row["event_id"] == event_id and row["deleted_at"] is None)
        }
        missed = sorted(i for i in wanted.keys() | view.keys() if view.get(i) != wanted.get(i))
        assert missed == [], f"event {event_id}: {len(missed)} sessions differ: {missed[:10]}"
    # The run did create the case that a timestamp watermark gets wrong.
    assert overtaken_commits > 0, f"none of {held_commits} held transactions was overtaken"
    print(f"{len(rows)} sessions, {held_commits} held commits, {overtaken_commits} overtaken")
    assert any(row["deleted_at"] for row in rows)
    assert any(row["version"] > 1 and row["deleted_at"] is None for row in rows)
    # Sessions left events, and some of them came back.
    assert await stored.conn.fetchval("SELECT count(*) FROM session_departures") > 0
