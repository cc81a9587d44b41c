"""Idempotency-Key on POST /sessions: a retry gets the first answer and creates nothing more."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.conditional import format_http_date, parse_http_date
from service.idempotency import KEY_LIFETIME, PRUNED_PER_KEY, fingerprint
from service.schemas import SessionCreate
from tests.conftest import (
    ADMIN_ID,
    ClientAs,
    StoredRows,
    assert_problem,
    count_sessions,
    empty_sessions,
    etag_of,
    session_body,
    settings_for,
    started,
)
from tests.test_transactions import commit_then

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


def keyed(key: str = KEY) -> dict[str, str]:
    return {"Idempotency-Key": f'"{key}"'}


async def count_keys(connection: AsyncConnection) -> int:
    count: int = (
        await connection.execute(text("SELECT count(*) FROM idempotency_keys"))
    ).scalar_one()
    return count


async def test_a_retry_gets_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    body = session_body(subtitle="Keyset", starts_at="2027-05-04T10:00:00+02:00")
    first = await client.post("/sessions", json=body, headers=keyed())
    assert first.status_code == 201, first.text
    # The same JSON written otherwise (order, spacing), as a retry by another library might.
    content = orjson.dumps(dict(reversed(body.items())), option=orjson.OPT_INDENT_2)
    retry = await client.post(
        "/sessions", content=content, headers=keyed() | {"content-type": "application/json"}
    )
    assert retry.status_code == 201
    assert retry.content == first.content
    for name in ("location", "etag", "last-modified", "cache-control", "content-type"):
        assert retry.headers[name] == first.headers[name]
    assert await count_sessions(connection) == 1
    assert await count_keys(connection) == 1


async def test_a_replay_after_a_change_is_still_the_first_answer(
    client: httpx.AsyncClient,
) -> None:
    # The README's one exception to "every response shows what the database holds".
    first = await client.post("/sessions", json=session_body(), headers=keyed())
    assert first.status_code == 201, first.text
    changed = await client.patch(first.headers["location"], json={"subtitle": "Changed"})
    assert changed.status_code == 200, changed.text
    retry = await client.post("/sessions", json=session_body(), headers=keyed())
    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["etag"] == first.headers["etag"] == etag_of(first.json())
    current = await client.get(first.headers["location"])
    assert current.headers["etag"] == changed.headers["etag"] == etag_of(changed.json())
    assert current.json()["subtitle"] == "Changed"
    assert changed.json()["version"] == 2


async def test_a_replay_is_never_modified_after_its_own_date(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # The first answer came from a replica whose clock ran a minute ahead of this one's.
    first = await client.post("/sessions", json=session_body(), headers=keyed())
    assert first.status_code == 201, first.text
    ahead = format_http_date(datetime.now(UTC) + timedelta(minutes=1))
    await connection.execute(
        text(
            "UPDATE idempotency_keys SET headers = "
            "jsonb_set(headers, '{last-modified}', to_jsonb(CAST(:ahead AS text)))"
        ),
        {"ahead": ahead},
    )
    retry = await client.post("/sessions", json=session_body(), headers=keyed())
    assert retry.status_code == 201
    assert retry.content == first.content
    date = parse_http_date(retry.headers["date"])
    assert date is not None
    assert parse_http_date(retry.headers["last-modified"]) == date


async def test_a_key_sent_again_with_another_body_is_422_and_creates_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    assert (await client.post("/sessions", json=session_body(), headers=keyed())).is_success
    response = await client.post("/sessions", json=session_body(title="Other"), headers=keyed())
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["header", "Idempotency-Key"]
    assert "another request body" in problem["errors"][0]["message"]
    assert await count_sessions(connection) == 1


async def test_keys_are_each_callers_own(client_as: ClientAs, connection: AsyncConnection) -> None:
    for subject in ("7", "8"):
        response = await client_as(subject).post("/sessions", json=session_body(), headers=keyed())
        assert response.status_code == 201
        assert response.json()["creator_id"] == subject
    assert await count_sessions(connection) == 2


async def test_without_a_key_every_request_creates(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    for _ in range(2):
        assert (await client.post("/sessions", json=session_body())).status_code == 201
    assert await count_sessions(connection) == 2
    assert await count_keys(connection) == 0


async def test_a_refused_request_stores_nothing_and_its_key_stays_free(
    client_as: ClientAs, connection: AsyncConnection
) -> None:
    speaker = client_as("7")
    # A speaker may not create an accepted session: 403, nothing stored under the key.
    refused = await speaker.post("/sessions", json=session_body(state="accepted"), headers=keyed())
    assert_problem(refused, 403)
    assert await count_keys(connection) == 0
    response = await speaker.post("/sessions", json=session_body(), headers=keyed())
    assert response.status_code == 201
    assert await count_sessions(connection) == 1


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (f'"{KEY}"', KEY),
        (KEY, KEY),  # bare, as many clients send it
        ('"a \\"quoted\\" key\\\\"', 'a "quoted" key\\'),
        ('  "padded"\t', "padded"),
        ('"' + "k" * 255 + '"', "k" * 255),
    ],
)
async def test_a_key_is_a_structured_field_string_or_a_bare_token(
    client: httpx.AsyncClient, connection: AsyncConnection, value: str, key: str
) -> None:
    response = await client.post(
        "/sessions", json=session_body(), headers={"Idempotency-Key": value}
    )
    assert response.status_code == 201, response.text
    stored = await connection.execute(text("SELECT caller, key FROM idempotency_keys"))
    assert stored.all() == [(ADMIN_ID, key)]


@pytest.mark.parametrize(
    "lines",
    [
        ['""'],
        ["two words"],
        ['"unterminated'],
        ['"bad \\n escape"'],
        ['"' + "k" * 256 + '"'],
        ["k" * 256],
        ["a, b"],  # two keys folded into one line by a proxy
        [KEY, KEY],
    ],
    ids=["empty", "space", "unterminated", "escape", "too long", "bare too long", "list", "twice"],
)
async def test_a_malformed_key_is_400_and_creates_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection, lines: list[str]
) -> None:
    headers = [("Idempotency-Key", line) for line in lines]
    response = await client.post("/sessions", json=session_body(), headers=headers)
    problem = assert_problem(response, 400)
    assert problem["header"] == "Idempotency-Key"
    assert await count_sessions(connection) == 0


async def test_an_expired_key_is_a_new_one_and_expired_keys_are_pruned(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    assert (await client.post("/sessions", json=session_body(), headers=keyed())).is_success
    other_expired = PRUNED_PER_KEY - 1
    await connection.execute(
        text(
            "INSERT INTO idempotency_keys (caller, key, fingerprint, status, headers, body) "
            "SELECT 'someone', 'old-' || n, '', 201, '{}', '' FROM generate_series(1, :n) AS n"
        ),
        {"n": other_expired},
    )
    # Every key but the one about to be reused falls out of the window.
    await connection.execute(
        text("UPDATE idempotency_keys SET created_at = now() - CAST(:age AS interval)"),
        {"age": KEY_LIFETIME + timedelta(seconds=1)},
    )
    response = await client.post("/sessions", json=session_body(title="New"), headers=keyed())
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "New"
    assert await count_sessions(connection) == 2
    remaining = await connection.execute(text("SELECT caller, key FROM idempotency_keys"))
    assert remaining.all() == [(ADMIN_ID, KEY)]


def _fingerprint(body: dict[str, Any]) -> bytes:
    return fingerprint(SessionCreate.model_validate(body).model_dump(mode="json"))


@pytest.mark.parametrize("first_outcome", ["commit", "rollback"])
async def test_a_retry_while_the_first_is_in_flight_waits_for_its_outcome(
    committed_client: httpx.AsyncClient,
    engine: AsyncEngine,
    stored: StoredRows,
    first_outcome: str,
) -> None:
    body = session_body()
    answer = b'{"id": 12345}'
    # The first request, still writing: its key inserted, its transaction open.
    first = stored.conn
    transaction = first.transaction()
    await transaction.start()
    await first.execute(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, status, headers, body) "
        "VALUES ($1, $2, $3, 201, $4, $5)",
        ADMIN_ID,
        KEY,
        _fingerprint(body),
        '{"location": "/sessions/12345"}',
        answer,
    )
    retry = asyncio.create_task(committed_client.post("/sessions", json=body, headers=keyed()))
    try:
        await _until_waiting_for_a_lock(engine, retry)
    finally:
        await (transaction.commit() if first_outcome == "commit" else transaction.rollback())
    response = await retry
    sessions = await first.fetchval("SELECT count(*) FROM sessions")
    if first_outcome == "commit":
        # The first request's answer, and the retry's own session rolled back.
        assert response.status_code == 201
        assert response.content == answer
        assert response.headers["location"] == "/sessions/12345"
        assert sessions == 0
    else:
        # The first never happened: the retry is the creation.
        assert response.status_code == 201
        assert response.headers["location"] == f"/sessions/{response.json()['id']}"
        assert sessions == 1
    await first.execute("TRUNCATE idempotency_keys")


async def _until_waiting_for_a_lock(
    engine: AsyncEngine, request: "asyncio.Task[httpx.Response]"
) -> None:
    for _ in range(500):
        assert not request.done(), (await request).text
        async with engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the retry never waited for the first request's key")


@pytest.mark.parametrize("applied", [True, False], ids=["saved", "not saved"])
async def test_a_creation_whose_commit_was_unconfirmed_is_simply_sent_again(
    database_url: str,
    engine: AsyncEngine,
    stored: StoredRows,
    monkeypatch: pytest.MonkeyPatch,
    applied: bool,
) -> None:
    try:
        async with started(settings_for(database_url)) as (_, client):
            commit_then(monkeypatch, applied=applied, raised=ConnectionResetError("lost"))
            first = await client.post("/sessions", json=session_body(), headers=keyed())
            monkeypatch.undo()
            # Saved: found on another connection and answered as stored. Not saved: unknown.
            assert first.status_code == (201 if applied else 503), first.text
            retries = [
                await client.post("/sessions", json=session_body(), headers=keyed())
                for _ in range(2)
            ]
        assert [retry.status_code for retry in retries] == [201, 201]
        assert retries[0].content == retries[1].content
        if applied:
            assert retries[0].content == first.content
        assert await stored.conn.fetchval("SELECT count(*) FROM sessions") == 1
    finally:
        await empty_sessions(engine)
