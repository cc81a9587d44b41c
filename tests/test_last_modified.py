"""The rules of last_modified_at and version, each proven against the database."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.schemas import format_utc
from tests.conftest import DISJOINT_PATCHES, StoredRows, create_session, session_body


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_create_stamps_created_and_modified_equal_with_version_1(
    client: httpx.AsyncClient,
) -> None:
    before = datetime.now(UTC)
    session = await create_session(client)
    stamp = parse(session["last_modified_at"])
    assert session["created_at"] == session["last_modified_at"]
    assert session["version"] == 1
    assert before <= stamp <= datetime.now(UTC)


async def test_timestamps_are_utc_with_microseconds_in_json(client: httpx.AsyncClient) -> None:
    session = await create_session(client, starts_at="2027-05-04T10:00:00+02:00")
    for field in ("created_at", "last_modified_at", "starts_at"):
        value = session[field]
        assert isinstance(value, str)
        assert value.endswith("Z")
        assert len(value.split(".")[1]) == len("123456Z"), value
    assert session["starts_at"] == "2027-05-04T08:00:00.000000Z"


async def test_column_is_timestamptz_not_null(connection: AsyncConnection) -> None:
    result = await connection.execute(
        text(
            "SELECT data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'sessions' AND column_name = 'last_modified_at'"
        )
    )
    assert result.one() == ("timestamp with time zone", "NO")


async def test_patch_with_change_moves_stamp_forward_and_bumps_version(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    response = await client.patch(f"/sessions/{session['id']}", json={"title": "Renamed"})
    assert response.status_code == 200
    patched = response.json()
    assert parse(patched["last_modified_at"]) > parse(session["last_modified_at"])
    assert patched["created_at"] == session["created_at"]
    assert patched["version"] == 2
    assert patched["title"] == "Renamed"


async def test_patch_stamp_never_goes_backwards_when_clock_is_behind(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    session = await create_session(client)
    # A stamp from a host whose clock ran an hour ahead of this one.
    ahead = datetime.now(UTC) + timedelta(hours=1)
    await connection.execute(
        text("UPDATE sessions SET last_modified_at = :ahead WHERE id = :id"),
        {"ahead": ahead, "id": session["id"]},
    )
    response = await client.patch(f"/sessions/{session['id']}", json={"title": "Later"})
    assert parse(response.json()["last_modified_at"]) == ahead + timedelta(microseconds=1)


async def test_patch_changing_nothing_issues_no_update(
    client: httpx.AsyncClient, connection: AsyncConnection, statements: list[str]
) -> None:
    session = await create_session(client, subtitle="Same", starts_at="2027-05-04T10:00:00+02:00")
    xmin_before = (
        await connection.execute(
            text("SELECT xmin::text FROM sessions WHERE id = :id"), {"id": session["id"]}
        )
    ).scalar_one()
    statements.clear()
    same_values = {
        "title": session["title"],
        "subtitle": "Same",
        # The same instant in another offset is no change.
        "starts_at": "2027-05-04T11:00:00+03:00",
    }
    for patch in ({}, same_values, session):
        response = await client.patch(f"/sessions/{session['id']}", json=patch)
        assert response.status_code == 200, response.text
        assert response.json()["last_modified_at"] == session["last_modified_at"]
        assert response.json()["version"] == 1
    assert not [s for s in statements if s.upper().startswith("UPDATE")]
    xmin_after = (
        await connection.execute(
            text("SELECT xmin::text FROM sessions WHERE id = :id"), {"id": session["id"]}
        )
    ).scalar_one()
    assert xmin_after == xmin_before


async def test_output_only_fields_sent_by_client_are_ignored(client: httpx.AsyncClient) -> None:
    forged = {
        "id": 999_999,
        "created_at": "2000-01-01T00:00:00Z",
        "last_modified_at": "2000-01-01T00:00:00Z",
        "version": 42,
    }
    session = await create_session(client, **forged)
    assert session["id"] != 999_999
    assert session["version"] == 1
    assert session["created_at"] != forged["created_at"]
    response = await client.patch(f"/sessions/{session['id']}", json=forged | {"title": "New"})
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["id"] == session["id"]
    assert not response.json()["last_modified_at"].startswith("2000")


async def test_unknown_field_is_rejected(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await client.patch(f"/sessions/{session['id']}", json={"speaker": "Ada"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["location"] == ["body", "speaker"]


async def test_responses_equal_the_stored_row_without_extra_select(
    committed_client: httpx.AsyncClient, stored: StoredRows, statements: list[str]
) -> None:
    created = await committed_client.post("/sessions", json=session_body())
    assert [s.split()[0].upper() for s in statements] == ["INSERT"]
    assert statements[0].endswith("RETURNING sessions.id")  # and no column the server computes
    session = created.json()
    row = await stored.row(session["id"])
    assert session["created_at"] == format_utc(row["created_at"])
    assert session["last_modified_at"] == format_utc(row["last_modified_at"])
    assert session["version"] == row["version"]

    statements.clear()
    patched = (
        await committed_client.patch(f"/sessions/{session['id']}", json={"level": "Expert"})
    ).json()
    # The locking read, then the write: nothing is read back after it.
    assert [s.split()[0].upper() for s in statements] == ["SELECT", "UPDATE"]
    row = await stored.row(session["id"])
    assert patched["last_modified_at"] == format_utc(row["last_modified_at"])
    assert patched["version"] == row["version"] == 2
    assert row["last_modified_at"].tzinfo is not None

    fetched = (await committed_client.get(f"/sessions/{session['id']}")).json()
    assert fetched == patched


async def test_delete_bumps_stamp_and_version_in_the_stored_row(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    session = (await committed_client.post("/sessions", json=session_body())).json()
    response = await committed_client.delete(f"/sessions/{session['id']}")
    assert response.status_code == 204
    row = await stored.row(session["id"])
    assert row["version"] == 2
    assert row["last_modified_at"] > parse(session["last_modified_at"])
    # Deleted by that change, at its stamp: one `now` per flush (the feed's tombstone says so).
    assert row["deleted_at"] == row["last_modified_at"]


async def test_concurrent_patches_of_different_fields_all_take_effect(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    session = (await committed_client.post("/sessions", json=session_body())).json()
    patches = DISJOINT_PATCHES
    responses = await asyncio.gather(
        *(committed_client.patch(f"/sessions/{session['id']}", json=p) for p in patches)
    )
    assert [r.status_code for r in responses] == [200] * len(patches)
    assert sorted(r.json()["version"] for r in responses) == list(range(2, 2 + len(patches)))
    row = await stored.row(session["id"])
    assert row["version"] == 1 + len(patches)
    for patch in patches:
        ((field, value),) = patch.items()
        assert row[field] == value
    stamps = sorted(parse(r.json()["last_modified_at"]) for r in responses)
    assert len(set(stamps)) == len(stamps)
    assert format_utc(row["last_modified_at"]) == format_utc(stamps[-1])
