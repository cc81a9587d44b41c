"""The change feed shows each caller what it may see; what it may hold but no longer see is a
tombstone; a session it may not see and that has never been public is left out."""

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.repository import make_sessionmaker
from tests.conftest import (
    asgi_client,
    auth_headers,
    build_app,
    create_session,
    session_body,
    stored_row,
)
from tests.test_changes import follow, has_ids

STATES = ["draft", "pending", "accepted", "confirmed", "rejected", "canceled", "withdrawn"]
PUBLIC = {"accepted", "confirmed"}
EVENT = 3


@pytest.fixture
def committed_app(database_url: str, engine: AsyncEngine) -> FastAPI:
    """An app whose requests commit (the feed serves only finished writes).

    Its rows are removed by committed_client's teardown, which every test here uses.
    """
    app = build_app(database_url)
    app.state.db_maker = make_sessionmaker(engine)
    return app


@pytest.fixture
async def anonymous(committed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(committed_app) as client:
        yield client


@pytest.fixture
async def speaker(committed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(committed_app, auth_headers("speaker-7")) as client:
        yield client


@pytest.fixture
async def organizer(committed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(committed_app, auth_headers("org-9", organizer_events=[EVENT])) as c:
        yield c


@pytest.fixture
async def stranger(committed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in user with no session of their own and no event."""
    async with asgi_client(committed_app, auth_headers("someone-else")) as client:
        yield client


async def arrange(
    speaker: httpx.AsyncClient, admin: httpx.AsyncClient, state: str
) -> dict[str, Any]:
    created = await speaker.post("/sessions", json=session_body(event_id=EVENT, title=state))
    assert created.status_code == 201, created.text
    session: dict[str, Any] = created.json()
    if state != "draft":
        response = await admin.patch(f"/sessions/{session['id']}", json={"state": state})
        assert response.status_code == 200, response.text
        session = response.json()
    return session


def hidden_tombstone(changed: httpx.Response) -> dict[str, Any]:
    """The tombstone of the session a write answered with, once the caller may not see it."""
    session = changed.json()
    return {
        "id": session["id"],
        "deleted": True,
        "deleted_at": None,
        "last_modified_at": session["last_modified_at"],
        "version": session["version"],
    }


def latest(received: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each session's last item, as a client applying the feed in order keeps it."""
    return {item["id"]: item for item in received}


async def test_anonymous_feed_leaves_out_every_session_never_public(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
) -> None:
    sessions = {state: await arrange(speaker, committed_client, state) for state in STATES}
    marker = await arrange(speaker, committed_client, "accepted")
    received, _ = await follow(anonymous, has_ids(marker["id"]))
    # Not even a tombstone: the ids of an event's drafts, and when each changed, are no one
    # else's business.
    assert received == [
        session | {"deleted": False}
        for session in [*sessions.values(), marker]
        if session["state"] in PUBLIC
    ]


async def test_session_that_stops_being_public_becomes_a_tombstone_for_anonymous_clients(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    organizer: httpx.AsyncClient,
) -> None:
    session = await arrange(speaker, committed_client, "accepted")
    received, token = await follow(anonymous, has_ids(session["id"]))
    assert latest(received)[session["id"]]["title"] == "accepted"

    withdrawn = await speaker.patch(f"/sessions/{session['id']}", json={"state": "withdrawn"})
    assert withdrawn.status_code == 200, withdrawn.text
    received, _ = await follow(anonymous, has_ids(session["id"]), since=token)
    assert received == [hidden_tombstone(withdrawn)]
    # Its speaker and the event's organiser still see it whole.
    for client in (speaker, organizer):
        received, _ = await follow(client, has_ids(session["id"]), since=token)
        assert received == [withdrawn.json() | {"deleted": False}]


async def test_feed_shows_a_user_their_own_and_their_events_sessions(
    committed_client: httpx.AsyncClient,
    committed_app: FastAPI,
    speaker: httpx.AsyncClient,
) -> None:
    own = await arrange(speaker, committed_client, "draft")
    other_event = await committed_client.post(
        "/sessions", json=session_body(event_id=EVENT + 1, state="pending")
    )
    this_event = await committed_client.post(
        "/sessions", json=session_body(event_id=EVENT, state="pending")
    )
    marker = await arrange(speaker, committed_client, "accepted")
    ids = [own["id"], other_event.json()["id"], this_event.json()["id"], marker["id"]]
    received, _ = await follow(speaker, has_ids(marker["id"]))
    assert [(item["id"], item["deleted"]) for item in received] == [
        (ids[0], False),
        (ids[3], False),
    ]
    async with asgi_client(committed_app, auth_headers("org", organizer_events=[EVENT])) as org:
        received, _ = await follow(org, has_ids(marker["id"]))
    assert [(item["id"], item["deleted"]) for item in received] == [
        (ids[0], False),
        (ids[2], False),
        (ids[3], False),
    ]


async def assert_tombstones_then(
    marker: dict[str, Any], client: httpx.AsyncClient, tombstones: list[int], **params: Any
) -> None:
    """The caller's feed, followed up to `marker` (a public session written last), holds the
    tombstones of these sessions, in this order, and nothing else before the marker."""
    received, _ = await follow(client, has_ids(marker["id"]), **params)
    assert [item["id"] for item in received] == [*tombstones, marker["id"]]
    assert all(item["deleted"] for item in received[:-1]), received


async def test_a_deleted_session_is_a_tombstone_for_those_who_saw_it_only(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    organizer: httpx.AsyncClient,
    stranger: httpx.AsyncClient,
) -> None:
    draft = await arrange(speaker, committed_client, "draft")
    public = await arrange(speaker, committed_client, "confirmed")
    # Public once, hidden since: anyone may still hold it.
    was_public = await arrange(speaker, committed_client, "accepted")
    hidden = await committed_client.patch(
        f"/sessions/{was_public['id']}", json={"state": "canceled"}
    )
    assert hidden.status_code == 200, hidden.text
    for session in (draft, public, was_public):
        assert (await speaker.delete(f"/sessions/{session['id']}")).status_code == 204
    marker = await arrange(speaker, committed_client, "accepted")
    every_tombstone = [draft["id"], public["id"], was_public["id"]]
    for client, tombstones in [
        (speaker, every_tombstone),
        (organizer, every_tombstone),
        (stranger, every_tombstone[1:]),
        (anonymous, every_tombstone[1:]),
    ]:
        await assert_tombstones_then(marker, client, tombstones)


async def test_a_session_moved_away_is_a_tombstone_in_its_old_event_for_those_who_saw_it(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    organizer: httpx.AsyncClient,
    stranger: httpx.AsyncClient,
) -> None:
    draft = await arrange(speaker, committed_client, "draft")
    public = await arrange(speaker, committed_client, "accepted")
    for session in (draft, public):
        moved = await committed_client.patch(
            f"/sessions/{session['id']}", json={"event_id": EVENT + 1}
        )
        assert moved.status_code == 200, moved.text
    marker = await arrange(speaker, committed_client, "accepted")
    for client, tombstones in [
        (speaker, [draft["id"], public["id"]]),
        (organizer, [draft["id"], public["id"]]),
        (stranger, [public["id"]]),
        (anonymous, [public["id"]]),
    ]:
        await assert_tombstones_then(marker, client, tombstones, event_id=EVENT)


async def test_ever_public_is_set_by_the_change_that_makes_a_session_public_and_kept(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    created = await create_session(client, state="draft")
    born_public = await create_session(client, state="confirmed")
    assert (await stored_row(connection, created["id"]))["ever_public"] is False
    assert (await stored_row(connection, born_public["id"]))["ever_public"] is True
    path = f"/sessions/{created['id']}"
    for state, ever_public in [("pending", False), ("accepted", True), ("rejected", True)]:
        response = await client.patch(path, json={"state": state})
        assert response.status_code == 200, response.text
        assert (await stored_row(connection, created["id"]))["ever_public"] is ever_public
    # Nothing of it in the API: it only decides what the change feed serves.
    assert "ever_public" not in response.json()
    assert "ever_public" not in (await client.get(path)).json()


async def test_an_organisers_feed_of_every_event_drops_a_session_that_left_their_event(
    committed_client: httpx.AsyncClient,
    committed_app: FastAPI,
    speaker: httpx.AsyncClient,
    organizer: httpx.AsyncClient,
) -> None:
    pending = await arrange(speaker, committed_client, "pending")
    received, token = await follow(organizer, has_ids(pending["id"]))
    assert latest(received)[pending["id"]]["deleted"] is False
    moved = await committed_client.patch(f"/sessions/{pending['id']}", json={"event_id": EVENT + 1})
    assert moved.status_code == 200, moved.text
    received, token = await follow(organizer, has_ids(pending["id"]), since=token)
    assert received == [hidden_tombstone(moved)]
    # Its later changes, in an event they do not organise, are none of their business: not in
    # the feed of every event, nor in the feed of the event it went to.
    edited = await speaker.patch(f"/sessions/{pending['id']}", json={"title": "elsewhere"})
    assert edited.status_code == 200, edited.text
    marker = await arrange(speaker, committed_client, "accepted")
    await assert_tombstones_then(marker, organizer, [], since=token)
    # Who never saw it gets nothing of it.
    async with asgi_client(committed_app, auth_headers("org-other", organizer_events=[99])) as c:
        await assert_tombstones_then(marker, c, [])
    there = await committed_client.post(
        "/sessions", json=session_body(event_id=EVENT + 1, state="accepted")
    )
    await assert_tombstones_then(there.json(), organizer, [], event_id=EVENT + 1)


async def test_a_move_made_while_hidden_stays_hidden_once_the_session_is_public(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
) -> None:
    # Public later, in the event it moved to: no anonymous client held it in the one it left.
    pending = await arrange(speaker, committed_client, "pending")
    path = f"/sessions/{pending['id']}"
    for change in ({"event_id": EVENT + 1}, {"state": "accepted"}):
        assert (await committed_client.patch(path, json=change)).status_code == 200
    marker = await arrange(speaker, committed_client, "accepted")
    received, _ = await follow(anonymous, has_ids(marker["id"]), event_id=EVENT)
    assert [item["id"] for item in received] == [marker["id"]]


async def write_behind_the_service(engine: AsyncEngine, session_id: int, assignment: str) -> None:
    """Change a stored session as other code does (SQL by hand, the previous release): not
    through the service's hook."""
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE sessions SET {assignment} WHERE id = :id"), {"id": session_id}
        )


async def test_a_session_made_public_by_other_code_counts_as_public_once_hidden(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    # The previous release, during a rolling deploy, makes sessions public without recording
    # it: the change that hides one sees the state it had.
    session = await arrange(speaker, committed_client, "accepted")
    await write_behind_the_service(engine, session["id"], "ever_public = false")
    hidden = await committed_client.patch(f"/sessions/{session['id']}", json={"state": "rejected"})
    assert hidden.status_code == 200, hidden.text
    received, _ = await follow(anonymous, has_ids(session["id"]))
    assert latest(received)[session["id"]] == hidden_tombstone(hidden)


async def test_a_session_without_a_creator_that_left_an_organisers_event_is_a_tombstone(
    committed_client: httpx.AsyncClient,
    organizer: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    # Sessions from before authentication have no creator: "is it the caller's own?" is
    # unknown (NULL) in SQL, which must not read as "the caller may see it now".
    session = await arrange(speaker, committed_client, "pending")
    await write_behind_the_service(engine, session["id"], "creator_id = NULL")
    _, token = await follow(organizer, has_ids(session["id"]))
    moved = await committed_client.patch(f"/sessions/{session['id']}", json={"event_id": EVENT + 1})
    assert moved.status_code == 200, moved.text
    received, _ = await follow(organizer, has_ids(session["id"]), since=token)
    assert received == [hidden_tombstone(moved)]


# What a replica of the release before migration 0007 writes: the state, a new version, stamp and
# place in the feed, and nothing of ever_public, which it does not know.
def previous_release_sets(state: str) -> str:
    return (
        f"state = '{state}', version = version + 1, last_modified_at = clock_timestamp(), "
        "txid = pg_current_xact_id()::text::bigint"
    )


# The README's statements (Who may do what), run as it says: in one transaction.
COUNT_AFTER_THE_DEPLOY = [
    "UPDATE sessions SET ever_public = true, txid = pg_current_xact_id()::text::bigint"
    " WHERE NOT ever_public AND state <> 'draft' AND last_modified_at >= :migrated_at",
    "UPDATE session_departures SET ever_public = true, txid = pg_current_xact_id()::text::bigint"
    " WHERE NOT ever_public AND last_modified_at >= :migrated_at"
    " AND session_id IN (SELECT id FROM sessions WHERE state <> 'draft')",
]


async def count_after_the_deploy(engine: AsyncEngine, migrated_at: datetime) -> int:
    """The sessions the statements counted."""
    async with engine.begin() as conn:
        counted = [
            await conn.execute(text(statement), {"migrated_at": migrated_at})
            for statement in COUNT_AFTER_THE_DEPLOY
        ]
    return counted[0].rowcount


async def public_then_hidden_by_the_previous_release(
    admin: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    engine: AsyncEngine,
    **feed: Any,
) -> tuple[datetime, dict[str, Any], str]:
    """A session that a replica of the release before 0007 made public, an anonymous client
    copied from its feed (of `feed`'s parameters), and the replica hid again: what the README's
    statements are for. With the moment the migration ran (before it all) and the client's
    token."""
    async with engine.connect() as conn:
        migrated_at = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    session = await arrange(speaker, admin, "pending")
    await write_behind_the_service(engine, session["id"], previous_release_sets("accepted"))
    received, token = await follow(anonymous, has_ids(session["id"]), **feed)
    assert latest(received)[session["id"]]["state"] == "accepted"
    await write_behind_the_service(engine, session["id"], previous_release_sets("rejected"))
    return migrated_at, session, token


def test_the_readme_has_the_statements_that_count_after_the_deploy() -> None:
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    for statement in COUNT_AFTER_THE_DEPLOY:
        assert statement.replace(":migrated_at", "'<when the migration ran>'") in readme


async def test_the_readmes_count_after_the_deploy_sends_the_missed_tombstones(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    migrated_at, session, token = await public_then_hidden_by_the_previous_release(
        committed_client, anonymous, speaker, engine
    )
    # Unrecorded, the feed leaves it out, and the anonymous client's copy stays.
    marker = await arrange(speaker, committed_client, "confirmed")
    received, token = await follow(anonymous, has_ids(marker["id"]), since=token)
    assert session["id"] not in latest(received)
    # A draft changed meanwhile, never public: the statement leaves it out.
    draft = await arrange(speaker, committed_client, "draft")
    retitled = await speaker.patch(f"/sessions/{draft['id']}", json={"title": "Retitled"})
    assert retitled.status_code == 200, retitled.text
    # Once every replica runs this release: the README's statements (Who may do what).
    assert await count_after_the_deploy(engine, migrated_at) >= 1
    received, _ = await follow(anonymous, has_ids(session["id"]), since=token)
    tombstone = latest(received)[session["id"]]
    assert tombstone["deleted"] is True
    assert tombstone["deleted_at"] is None
    assert tombstone["version"] == session["version"] + 2
    assert draft["id"] not in latest(received)


async def test_the_readmes_count_after_the_deploy_sends_the_missed_tombstone_of_a_move(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
    engine: AsyncEngine,
) -> None:
    # Made public and hidden again by the previous release, then moved by this one: its
    # departure from the event, recorded as never public, is left out of that event's feed.
    migrated_at, session, token = await public_then_hidden_by_the_previous_release(
        committed_client, anonymous, speaker, engine, event_id=EVENT
    )
    moved = await committed_client.patch(f"/sessions/{session['id']}", json={"event_id": EVENT + 1})
    assert moved.status_code == 200, moved.text
    marker = await arrange(speaker, committed_client, "confirmed")
    received, token = await follow(anonymous, has_ids(marker["id"]), since=token, event_id=EVENT)
    assert session["id"] not in latest(received)

    assert await count_after_the_deploy(engine, migrated_at) >= 1
    received, _ = await follow(anonymous, has_ids(session["id"]), since=token, event_id=EVENT)
    assert latest(received)[session["id"]] == hidden_tombstone(moved)
