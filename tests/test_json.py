"""The JSON the handlers render themselves is byte for byte what the response models document."""

from datetime import UTC, datetime, timedelta, timezone

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.models import Session
from service.schemas import (
    ChangesPage,
    SessionChange,
    SessionPage,
    SessionRead,
    SessionTombstone,
    change_content,
    dump_json,
    session_content,
    tombstone_content,
)
from tests.conftest import session_body

EVERY_FIELD = {
    "id": 7,
    "event_id": 3,
    "title": "Zürich: «keyset» pagination 🚀",
    "subtitle": "Why OFFSET hurts",
    "short_abstract": "Short",
    "long_abstract": 'Long\nwith "quotes" and a \\ backslash',
    "comments": "Bring a laptop",
    "level": "Expert",
    "language": "de",
    # Whole seconds (orjson alone would drop the microseconds) and another offset than UTC.
    "starts_at": datetime(2027, 5, 4, 10, 0, tzinfo=timezone(timedelta(hours=2))),
    "ends_at": datetime(2027, 5, 4, 11, 0, 0, 1, tzinfo=UTC),
    "track_id": 1,
    "session_type_id": 2,
    "microlocation_id": 2_147_483_647,
    "slides_url": "https://example.org/slides",
    "video_url": "https://example.org/video?t=1&x=%20",
    "audio_url": "http://example.org/audio",
    "signup_url": "https://example.org/signup",
    "state": "accepted",
    "is_locked": True,
    "creator_id": "auth0|ada",
    "submitted_at": datetime(2026, 1, 1, 12, tzinfo=UTC),
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    "last_modified_at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "version": 3,
}


def model_json(content: object) -> bytes:
    return SessionRead.model_validate(content, from_attributes=True).model_dump_json().encode()


def test_session_json_equals_the_models_for_every_field_set() -> None:
    session = Session(**EVERY_FIELD)
    assert dump_json(session_content(session)) == model_json(session)


def test_session_json_equals_the_models_with_nulls() -> None:
    nullable = {"subtitle", "short_abstract", "long_abstract", "comments", "level", "language"}
    nullable |= {"starts_at", "ends_at", "track_id", "session_type_id", "microlocation_id"}
    nullable |= {"slides_url", "video_url", "audio_url", "signup_url", "creator_id", "submitted_at"}
    session = Session(**EVERY_FIELD | dict.fromkeys(nullable))
    assert dump_json(session_content(session)) == model_json(session)
    assert b'"subtitle":null' in dump_json(session_content(session))


async def test_get_and_list_bytes_equal_the_models_of_the_stored_rows(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    server_set = {"id", "created_at", "version", "creator_id", "submitted_at"}
    fields = {k: v for k, v in EVERY_FIELD.items() if k not in server_set}
    fields |= {"starts_at": "2027-05-04T10:00:00+02:00", "ends_at": "2027-05-04T11:00:00Z"}
    del fields["last_modified_at"]
    first = (await client.post("/sessions", json=fields)).json()
    second = (await client.post("/sessions", json=session_body(event_id=3))).json()

    table = Session.__table__
    rows = (await connection.execute(select(table).order_by(table.c.id))).mappings().all()
    stored = {row["id"]: row for row in rows}

    response = await client.get(f"/sessions/{first['id']}")
    assert response.headers["content-type"] == "application/json"
    assert response.content == model_json(stored[first["id"]])

    page = await client.get("/sessions", params={"event_id": 3, "limit": 1})
    expected = SessionPage.model_validate(
        {"items": [stored[first["id"]]], "next_cursor": page.json()["next_cursor"]},
        from_attributes=True,
    )
    assert page.json()["next_cursor"] is not None
    assert page.content == expected.model_dump_json().encode()
    last = await client.get(
        "/sessions", params={"event_id": 3, "cursor": page.json()["next_cursor"]}
    )
    assert [item["id"] for item in last.json()["items"]] == [second["id"]]
    assert last.json()["next_cursor"] is None


async def test_write_responses_equal_the_models_of_the_stored_rows(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    created = await client.post("/sessions", json=session_body(starts_at="2027-05-04T10:00:00Z"))
    patched = await client.patch(f"/sessions/{created.json()['id']}", json={"level": "Expert"})
    table = Session.__table__
    row = (
        (await connection.execute(select(table).where(table.c.id == created.json()["id"])))
        .mappings()
        .one()
    )
    assert patched.content == model_json(row)
    assert created.json()["version"] == 1
    assert created.content == model_json(
        dict(row) | {"version": 1, "level": None, "last_modified_at": row["created_at"]}
    )


def test_change_feed_json_equals_the_models_for_changes_and_tombstones() -> None:
    changed = Session(**EVERY_FIELD)
    deleted = Session(**EVERY_FIELD | {"id": 8, "deleted_at": datetime(2026, 1, 3, tzinfo=UTC)})
    hidden = Session(**EVERY_FIELD | {"id": 9, "state": "draft", "submitted_at": None})
    content = {
        "items": [change_content(changed), tombstone_content(deleted), tombstone_content(hidden)],
        "next_token": "token",
    }
    models = ChangesPage(
        items=[
            SessionChange.model_validate(changed),
            SessionTombstone.model_validate(deleted),
            SessionTombstone.model_validate(hidden),
        ],
        next_token="token",
    )
    assert dump_json(content) == models.model_dump_json().encode()
    assert b'"deleted":false' in dump_json(content)
    assert b'"deleted_at":null' in dump_json(content)
