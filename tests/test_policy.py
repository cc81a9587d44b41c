"""Who may do what: every role, operation and state against the rules, through HTTP.

The expected outcomes are written out here, independently of service/policy.py, so a change to
the rules there shows up as a failing row here.
"""

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import (
    ADMIN_ID,
    ClientAs,
    assert_problem,
    etag_of,
    session_body,
    stored_row,
)

STATES = ["draft", "pending", "accepted", "confirmed", "rejected", "canceled", "withdrawn"]
PUBLIC = {"accepted", "confirmed"}
EVENT, OTHER_EVENT = 3, 4

# Who asks. "speaker" created the session; "organizer" organises its event; "user" is signed in
# with no standing; "other-organizer" organises another event only.
ROLES = ["anonymous", "user", "other-organizer", "speaker", "organizer", "admin"]
SEES_EVERY_STATE = {"speaker", "organizer", "admin"}

SPEAKER_TABLE = {
    "draft": {"pending"},  # not withdrawn, from which an organiser could publish it unsubmitted
    "pending": {"withdrawn"},
    "accepted": {"withdrawn"},
    "confirmed": {"withdrawn"},
    "rejected": {"withdrawn"},
    "canceled": {"withdrawn"},
    "withdrawn": set(),
}
ORGANIZER_TABLE = {
    "draft": set(),
    "pending": {"accepted", "confirmed", "rejected", "withdrawn"},
    "accepted": {"pending", "confirmed", "rejected", "canceled", "withdrawn"},
    "confirmed": {"pending", "accepted", "rejected", "canceled", "withdrawn"},
    "rejected": {"pending", "accepted", "confirmed", "withdrawn"},
    "canceled": {"pending", "accepted", "confirmed", "rejected", "withdrawn"},
    "withdrawn": {"pending", "accepted", "rejected", "canceled"},
}

Actors = dict[str, httpx.AsyncClient]


@pytest.fixture
def actors(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient, client_as: ClientAs
) -> Actors:
    return {
        "anonymous": anonymous_client,
        "user": client_as("user-8"),
        "other-organizer": client_as("organizer-10", organizer_events=[OTHER_EVENT]),
        "speaker": client_as("speaker-7"),
        "organizer": client_as("organizer-9", organizer_events=[EVENT]),
        "admin": client,
    }


async def arrange(actors: Actors, state: str, *, locked: bool = False) -> dict[str, Any]:
    """A session of EVENT created by the speaker, brought to state (and locked) by the admin."""
    response = await actors["speaker"].post("/sessions", json=session_body(event_id=EVENT))
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    if state != "draft" or locked:
        response = await actors["admin"].patch(
            f"/sessions/{session['id']}", json={"state": state, "is_locked": locked}
        )
        assert response.status_code == 200, response.text
        session = response.json()
    return session


def visible(role: str, state: str) -> bool:
    return role in SEES_EVERY_STATE or state in PUBLIC


READS = [(role, state) for role in ROLES for state in STATES]


@pytest.mark.parametrize(("role", "state"), READS)
async def test_get_shows_only_what_the_role_may_see(actors: Actors, role: str, state: str) -> None:
    session = await arrange(actors, state)
    response = await actors[role].get(f"/sessions/{session['id']}")
    if visible(role, state):
        assert response.status_code == 200, response.text
        assert response.json() == session
    else:
        body = assert_problem(response, 404)
        assert "rule" not in body  # indistinguishable from a session that does not exist


@pytest.mark.parametrize("role", ROLES)
async def test_list_shows_only_what_the_role_may_see(actors: Actors, role: str) -> None:
    ids = {state: (await arrange(actors, state))["id"] for state in STATES}
    response = await actors[role].get("/sessions", params={"limit": 100})
    assert response.status_code == 200, response.text
    listed = {item["id"] for item in response.json()["items"]}
    assert listed == {ids[state] for state in STATES if visible(role, state)}


async def test_list_shows_a_user_their_own_and_their_events_sessions(
    actors: Actors, client_as: ClientAs
) -> None:
    own = await arrange(actors, "draft")
    others_draft = await actors["user"].post("/sessions", json=session_body(event_id=OTHER_EVENT))
    assert others_draft.status_code == 201
    both = client_as("speaker-7", organizer_events=[OTHER_EVENT])
    listed = {item["id"] for item in (await both.get("/sessions")).json()["items"]}
    assert listed == {own["id"], others_draft.json()["id"]}


# Edit (a title) and delete: who may, by whether the session is locked.
def write_outcome(role: str, state: str, locked: bool) -> tuple[int, str | None]:
    if role == "anonymous":
        return 401, None
    if not visible(role, state):
        return 404, None
    if role in {"user", "other-organizer"}:
        return 403, "owner-only"
    if role == "speaker" and locked:
        return 403, "locked"
    return 200, None


WRITES = [(role, state, locked) for role in ROLES for state in STATES for locked in (False, True)]


@pytest.mark.parametrize(("role", "state", "locked"), WRITES)
async def test_edit_by_role_state_and_lock(
    actors: Actors, connection: AsyncConnection, role: str, state: str, locked: bool
) -> None:
    session = await arrange(actors, state, locked=locked)
    before = await stored_row(connection, session["id"])
    response = await actors[role].patch(f"/sessions/{session['id']}", json={"title": "Renamed"})
    status, rule = write_outcome(role, state, locked)
    if status == 200:
        assert response.status_code == 200, response.text
        assert (await stored_row(connection, session["id"]))["title"] == "Renamed"
        return
    body = assert_problem(response, status)
    assert body.get("rule") == rule
    assert await stored_row(connection, session["id"]) == before


@pytest.mark.parametrize(("role", "state", "locked"), WRITES)
async def test_delete_by_role_state_and_lock(
    actors: Actors, connection: AsyncConnection, role: str, state: str, locked: bool
) -> None:
    session = await arrange(actors, state, locked=locked)
    before = await stored_row(connection, session["id"])
    response = await actors[role].delete(f"/sessions/{session['id']}")
    status, rule = write_outcome(role, state, locked)
    if status == 200:
        assert response.status_code == 204, response.text
        assert (await stored_row(connection, session["id"]))["deleted_at"] is not None
        return
    body = assert_problem(response, status)
    assert body.get("rule") == rule
    assert await stored_row(connection, session["id"]) == before


def may_move(role: str, old: str, new: str) -> bool:
    if role == "admin":
        return True
    table = SPEAKER_TABLE if role == "speaker" else ORGANIZER_TABLE
    return new in table[old]


TRANSITIONS = [
    (role, old, new)
    for role in ("speaker", "organizer", "admin")
    for old in STATES
    for new in STATES
    if old != new
]


@pytest.mark.parametrize(("role", "old", "new"), TRANSITIONS)
async def test_state_change_follows_the_role_table(
    actors: Actors, connection: AsyncConnection, role: str, old: str, new: str
) -> None:
    session = await arrange(actors, old)
    before = await stored_row(connection, session["id"])
    response = await actors[role].patch(f"/sessions/{session['id']}", json={"state": new})
    if may_move(role, old, new):
        assert response.status_code == 200, response.text
        assert response.json()["state"] == new
        assert (await stored_row(connection, session["id"]))["state"] == new
    else:
        body = assert_problem(response, 403)
        assert body["rule"] == f"{role}-transitions"
        assert (body["from_state"], body["to_state"]) == (old, new)
        assert f'"{old}" to "{new}"' in body["detail"]
        assert await stored_row(connection, session["id"]) == before


async def test_speaker_organising_their_event_may_use_either_table(
    actors: Actors, client_as: ClientAs
) -> None:
    both = client_as("speaker-7", organizer_events=[EVENT])
    outcomes = {}
    for old in STATES:
        for new in set(STATES) - {old}:
            session = await arrange(actors, old)
            response = await both.patch(f"/sessions/{session['id']}", json={"state": new})
            outcomes[old, new] = response.status_code
    assert outcomes == {
        (old, new): 200 if new in SPEAKER_TABLE[old] | ORGANIZER_TABLE[old] else 403
        for old, new in outcomes
    }
    assert len(outcomes) == 42


CREATES = [(role, state) for role in ROLES for state in STATES]


@pytest.mark.parametrize(("role", "state"), CREATES)
async def test_create_states_by_role(
    actors: Actors, connection: AsyncConnection, role: str, state: str
) -> None:
    response = await actors[role].post("/sessions", json=session_body(event_id=EVENT, state=state))
    count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
    if role == "anonymous":
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    elif role in {"organizer", "admin"} or state in {"draft", "pending"}:
        assert response.status_code == 201, response.text
        assert response.json()["state"] == state
        assert count == 1
        return
    else:
        assert assert_problem(response, 403)["rule"] == "speaker-create-states"
    assert count == 0


@pytest.mark.parametrize("role", ROLES)
async def test_create_locked_needs_an_organiser(
    actors: Actors, connection: AsyncConnection, role: str
) -> None:
    response = await actors[role].post(
        "/sessions", json=session_body(event_id=EVENT, is_locked=True)
    )
    if role in {"organizer", "admin"}:
        assert response.status_code == 201, response.text
        assert response.json()["is_locked"] is True
    elif role == "anonymous":
        assert_problem(response, 401)
    else:
        assert assert_problem(response, 403)["rule"] == "organizer-fields"
        count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
        assert count == 0


@pytest.mark.parametrize(("role", "allowed"), [("speaker", False), ("organizer", True)])
@pytest.mark.parametrize("lock", [True, False])
async def test_only_an_organiser_locks_and_unlocks(
    actors: Actors, role: str, allowed: bool, lock: bool
) -> None:
    session = await arrange(actors, "pending", locked=not lock)
    response = await actors[role].patch(f"/sessions/{session['id']}", json={"is_locked": lock})
    if allowed:
        assert response.status_code == 200, response.text
        assert response.json()["is_locked"] is lock
    else:
        # A locked session refuses the speaker for its lock; an unlocked one for the field.
        expected = "locked" if not lock else "organizer-fields"
        assert assert_problem(response, 403)["rule"] == expected


@pytest.mark.parametrize("role", ROLES)
async def test_create_in_a_room_needs_an_organiser(
    actors: Actors, connection: AsyncConnection, role: str
) -> None:
    # Rooms are the organisers' to assign (the Open Event Server drops a speaker's).
    response = await actors[role].post(
        "/sessions", json=session_body(event_id=EVENT, microlocation_id=5)
    )
    if role in {"organizer", "admin"}:
        assert response.status_code == 201, response.text
        assert response.json()["microlocation_id"] == 5
    elif role == "anonymous":
        assert_problem(response, 401)
    else:
        body = assert_problem(response, 403)
        assert body["rule"] == "organizer-fields"
        assert "room (microlocation_id)" in body["detail"]
        count = (await connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
        assert count == 0


@pytest.mark.parametrize(("role", "allowed"), [("speaker", False), ("organizer", True)])
@pytest.mark.parametrize("room", [6, None])
async def test_only_an_organiser_assigns_or_clears_the_room(
    actors: Actors, connection: AsyncConnection, role: str, allowed: bool, room: int | None
) -> None:
    session = await arrange(actors, "pending")
    placed = await actors["organizer"].patch(
        f"/sessions/{session['id']}", json={"microlocation_id": 5}
    )
    assert placed.status_code == 200, placed.text
    before = await stored_row(connection, session["id"])
    # Sent back unchanged, the room is no change: the speaker's other edits go through.
    echoed = await actors[role].patch(
        f"/sessions/{session['id']}", json={"microlocation_id": 5, "subtitle": "Revised"}
    )
    assert echoed.status_code == 200, echoed.text
    response = await actors[role].patch(
        f"/sessions/{session['id']}", json={"microlocation_id": room}
    )
    if allowed:
        assert response.status_code == 200, response.text
        assert response.json()["microlocation_id"] == room
    else:
        assert assert_problem(response, 403)["rule"] == "organizer-fields"
        assert (await stored_row(connection, session["id"]))["version"] == before["version"] + 1
        both = await actors[role].patch(
            f"/sessions/{session['id']}", json={"microlocation_id": room, "is_locked": True}
        )
        assert assert_problem(both, 403)["detail"] == (
            f"Only an organiser of event {EVENT} may lock or unlock this session, or assign "
            "this session's room (microlocation_id)."
        )


async def test_echoing_a_locked_session_back_unchanged_is_no_edit(
    actors: Actors, connection: AsyncConnection
) -> None:
    session = await arrange(actors, "accepted", locked=True)
    before = await stored_row(connection, session["id"])
    response = await actors["speaker"].patch(f"/sessions/{session['id']}", json=session)
    assert response.status_code == 200, response.text
    assert response.json() == session
    assert await stored_row(connection, session["id"]) == before


async def test_echoing_back_is_still_refused_to_a_user_without_standing(actors: Actors) -> None:
    session = await arrange(actors, "accepted")
    response = await actors["user"].patch(f"/sessions/{session['id']}", json=session)
    assert assert_problem(response, 403)["rule"] == "owner-only"


@pytest.mark.parametrize(
    ("role", "state", "target", "allowed"),
    [
        ("speaker", "draft", OTHER_EVENT, True),
        ("speaker", "pending", OTHER_EVENT, False),
        ("organizer", "pending", OTHER_EVENT, False),
        ("both-events-organizer", "pending", OTHER_EVENT, True),
        ("admin", "accepted", OTHER_EVENT, True),
    ],
)
async def test_moving_a_session_to_another_event(
    actors: Actors, client_as: ClientAs, role: str, state: str, target: int, allowed: bool
) -> None:
    if role == "both-events-organizer":
        actors[role] = client_as("organizer-11", organizer_events=[EVENT, OTHER_EVENT])
    session = await arrange(actors, state)
    response = await actors[role].patch(f"/sessions/{session['id']}", json={"event_id": target})
    if allowed:
        assert response.status_code == 200, response.text
        assert response.json()["event_id"] == target
    else:
        assert assert_problem(response, 403)["rule"] == "event-change"


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ({"is_locked": True}, "organizer-fields"),
        ({"state": "accepted"}, "speaker-transitions"),
    ],
)
async def test_a_speaker_organising_their_own_event_moves_a_draft_as_its_speaker(
    client_as: ClientAs, patch: dict[str, Any], rule: str
) -> None:
    # Organiser of the draft's event, not of the event it moves to: no organiser's rights there.
    speaker = client_as("speaker-organizer-12", organizer_events=[EVENT])
    created = await speaker.post("/sessions", json=session_body(event_id=EVENT))
    url = f"/sessions/{created.json()['id']}"
    response = await speaker.patch(url, json={"event_id": OTHER_EVENT} | patch)
    assert assert_problem(response, 403)["rule"] == rule
    moved = await speaker.patch(url, json={"event_id": OTHER_EVENT, "state": "pending"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["event_id"], moved.json()["is_locked"]) == (OTHER_EVENT, False)


async def test_creator_id_is_the_token_subject_and_output_only(actors: Actors) -> None:
    response = await actors["speaker"].post(
        "/sessions", json=session_body(creator_id="someone-else", submitted_at=None)
    )
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["creator_id"] == "speaker-7"
    patched = await actors["admin"].patch(
        f"/sessions/{session['id']}", json={"creator_id": ADMIN_ID}
    )
    assert patched.json()["creator_id"] == "speaker-7"
    assert patched.json()["version"] == session["version"]


async def test_submitted_at_is_set_when_a_session_first_enters_pending(
    actors: Actors, connection: AsyncConnection
) -> None:
    session = await arrange(actors, "draft")
    assert session["submitted_at"] is None
    submitted = (
        await actors["speaker"].patch(f"/sessions/{session['id']}", json={"state": "pending"})
    ).json()
    assert submitted["submitted_at"] == submitted["last_modified_at"]
    stored = (await stored_row(connection, session["id"]))["submitted_at"]
    assert stored is not None
    organizer = actors["organizer"]
    for state in ("accepted", "pending"):
        response = await organizer.patch(f"/sessions/{session['id']}", json={"state": state})
        assert response.status_code == 200, response.text
        assert response.json()["submitted_at"] == submitted["submitted_at"]
    assert (await stored_row(connection, session["id"]))["submitted_at"] == stored


async def test_create_in_pending_sets_submitted_at(actors: Actors) -> None:
    response = await actors["speaker"].post("/sessions", json=session_body(state="pending"))
    session = response.json()
    assert session["submitted_at"] == session["created_at"] == session["last_modified_at"]


async def test_states_endpoint_returns_the_tables(anonymous_client: httpx.AsyncClient) -> None:
    response = await anonymous_client.get("/sessions/states")
    assert response.status_code == 200
    # Fetched again before each use: shared caches kept it for minutes by heuristic.
    assert response.headers["cache-control"] == "no-cache"
    tables = response.json()
    assert tables["states"] == STATES
    assert set(tables["public_states"]) == PUBLIC
    assert set(tables["speaker_create_states"]) == {"draft", "pending"}
    assert {k: set(v) for k, v in tables["speaker"].items()} == SPEAKER_TABLE
    assert {k: set(v) for k, v in tables["organizer"].items()} == ORGANIZER_TABLE
    assert tables["organizer_fields"] == ["is_locked", "microlocation_id"]


async def test_head_and_revalidation_do_not_reveal_hidden_sessions(actors: Actors) -> None:
    session = await arrange(actors, "pending")
    etag = (await actors["speaker"].get(f"/sessions/{session['id']}")).headers["etag"]
    url = f"/sessions/{session['id']}"
    anonymous = actors["anonymous"]
    assert (await anonymous.head(url)).status_code == 404
    assert_problem(await anonymous.get(url, headers={"If-None-Match": etag}), 404)
    assert (await actors["speaker"].get(url, headers={"If-None-Match": etag})).status_code == 304


async def test_who_may_change_is_decided_before_preconditions(actors: Actors) -> None:
    # RFC 9110 13.2.1: without the precondition this would be a 403, so it is ignored.
    session = await arrange(actors, "accepted")
    response = await actors["user"].patch(
        f"/sessions/{session['id']}", json={"title": "x"}, headers={"If-Match": '"999"'}
    )
    assert assert_problem(response, 403)["rule"] == "owner-only"


async def test_what_the_patch_changes_is_checked_after_preconditions(actors: Actors) -> None:
    session = await arrange(actors, "accepted")
    url = f"/sessions/{session['id']}"
    stale = await actors["speaker"].patch(
        url, json={"state": "confirmed"}, headers={"If-Match": '"999"'}
    )
    assert_problem(stale, 412)
    current = await actors["speaker"].patch(
        url, json={"state": "confirmed"}, headers={"If-Match": etag_of(session)}
    )
    assert assert_problem(current, 403)["rule"] == "speaker-transitions"


@pytest.mark.parametrize("state", STATES)
async def test_list_filtered_by_state_still_hides_what_anonymous_may_not_see(
    actors: Actors, state: str
) -> None:
    session = await arrange(actors, state)
    response = await actors["anonymous"].get("/sessions", params={"state": state})
    assert response.status_code == 200, response.text
    listed = [item["id"] for item in response.json()["items"]]
    assert listed == ([session["id"]] if state in PUBLIC else [])


@pytest.mark.parametrize(("role", "state"), READS)
async def test_list_filtered_by_state_shows_exactly_what_the_role_may_see_of_it(
    actors: Actors, role: str, state: str
) -> None:
    # Whether the database is asked at all depends on who asks (a page no session the caller
    # may see can be on is answered without it): the outcome must not.
    ids = {each: (await arrange(actors, each))["id"] for each in STATES}
    by_state: dict[str, Any] = {"state": state}
    for params in (by_state, by_state | {"event_id": EVENT}):
        response = await actors[role].get("/sessions", params=params)
        assert response.status_code == 200, response.text
        listed = [item["id"] for item in response.json()["items"]]
        assert listed == ([ids[state]] if visible(role, state) else [])
        assert response.json()["next_cursor"] is None
