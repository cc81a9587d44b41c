"""The change feed shows each caller what it may see; what stops being visible is a tombstone."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.repository import make_sessionmaker
from tests.conftest import asgi_client, auth_headers, build_app, session_body
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


def latest(received: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each session's last item, as a client applying the feed in order keeps it."""
    return {item["id"]: item for item in received}


async def test_anonymous_feed_never_shows_a_non_public_session(
    committed_client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    speaker: httpx.AsyncClient,
) -> None:
    sessions = {state: await arrange(speaker, committed_client, state) for state in STATES}
    received, _ = await follow(anonymous, has_ids(*(s["id"] for s in sessions.values())))
    seen = latest(received)
    for state, session in sessions.items():
        item = seen[session["id"]]
        if state in PUBLIC:
            assert item == session | {"deleted": False}
        else:
            # Nothing of a hidden session but that it changed: no title, no state.
            assert item == {
                "id": session["id"],
                "deleted": True,
                "deleted_at": None,
                "last_modified_at": session["last_modified_at"],
                "version": session["version"],
            }
    # Whatever was on the way: no full item of a non-public session, ever.
    for item in received:
        assert item["deleted"] or item["state"] in PUBLIC, item


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
    assert received == [
        {
            "id": session["id"],
            "deleted": True,
            "deleted_at": None,
            "last_modified_at": withdrawn.json()["last_modified_at"],
            "version": withdrawn.json()["version"],
        }
    ]
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
    ids = (own["id"], other_event.json()["id"], this_event.json()["id"])
    seen = latest((await follow(speaker, has_ids(*ids)))[0])
    assert [seen[i]["deleted"] for i in ids] == [False, True, True]
    async with asgi_client(committed_app, auth_headers("org", organizer_events=[EVENT])) as org:
        seen = latest((await follow(org, has_ids(*ids)))[0])
    assert [seen[i]["deleted"] for i in ids] == [False, True, False]
