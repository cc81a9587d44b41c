"""The HTTP contract of /sessions: CRUD, merge patch, validation, errors and pages."""

import gzip
import inspect
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models
from service.inputs import MAX_OBJECT_MEMBERS
from service.schemas import SessionCreate
from tests.conftest import (
    assert_problem,
    build_app,
    count_sessions,
    create_session,
    post_body,
    session_body,
)


async def test_create_returns_201_with_location_and_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/sessions", json=session_body())
    assert response.status_code == 201
    session = response.json()
    assert response.headers["location"] == f"/sessions/{session['id']}"
    assert session["state"] == "draft"
    assert session["is_locked"] is False
    assert session["subtitle"] is None


async def test_create_stores_every_field(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    fields: dict[str, Any] = {
        "event_id": 7,
        "title": "Keyset pagination",
        "subtitle": "Why OFFSET hurts",
        "short_abstract": "Short",
        "long_abstract": "Long",
        "comments": "Bring a laptop",
        "level": "Intermediate",
        "language": "en",
        "starts_at": "2027-05-04T10:00:00Z",
        "ends_at": "2027-05-04T11:00:00Z",
        "track_id": 1,
        "session_type_id": 2,
        "microlocation_id": 3,
        "slides_url": "https://example.org/slides",
        "video_url": "https://example.org/video",
        "audio_url": "http://example.org/audio",
        "signup_url": "https://example.org/signup",
        "state": "pending",
        "is_locked": True,
    }
    session = await create_session(client, **fields)
    row = (
        (
            await connection.execute(
                text("SELECT * FROM sessions WHERE id = :id"), {"id": session["id"]}
            )
        )
        .mappings()
        .one()
    )
    for name, value in fields.items():
        if name.endswith("_at"):
            assert session[name] == value.replace("Z", ".000000Z")
        else:
            assert session[name] == value
            assert row[name] == value
    assert row["deleted_at"] is None


async def test_get_returns_the_session(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await client.get(f"/sessions/{session['id']}")
    assert response.status_code == 200
    assert response.json() == session


@pytest.mark.parametrize("path", ["/sessions/12345", "/sessions/2147483647"])
async def test_get_missing_session_is_404_problem(client: httpx.AsyncClient, path: str) -> None:
    body = assert_problem(await client.get(path), 404)
    assert body["title"] == "Not Found"


async def test_a_session_404_is_never_stored_by_a_cache(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient
) -> None:
    # A 404 is cacheable by default (RFC 9110 15.1, RFC 9111 4.2.2: Varnish keeps one for two
    # minutes): a cache would go on answering 404 for a draft once it is accepted, or for an id
    # once created, where the session's 200 (no-cache) is revalidated on every use.
    draft = await create_session(client, state="draft")
    for response in [
        await anonymous_client.get(f"/sessions/{draft['id']}"),
        await anonymous_client.head(f"/sessions/{draft['id']}"),
        await client.get("/sessions/12345"),
        await client.patch("/sessions/12345", json={"title": "x"}),
        await client.delete("/sessions/12345"),
    ]:
        assert response.status_code == 404
        assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "DELETE"])
async def test_an_id_with_a_leading_zero_is_no_url_of_the_session(
    client: httpx.AsyncClient, method: str
) -> None:
    # One URL per session: a cache keyed by URL would otherwise hold /sessions/03 apart from
    # /sessions/3, and serve it stale once the session changes through the other.
    session = await create_session(client)
    for path in (f"/sessions/0{session['id']}", f"/sessions/000{session['id']}"):
        response = await client.request(method, path, json={"title": "Not here"})
        assert response.status_code == 404, (path, response.text)
    assert (await client.get(f"/sessions/{session['id']}")).json() == session
    assert_problem(await client.get("/sessions/0"), 422)  # the one id that starts with 0


async def test_get_out_of_range_id_is_422_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/sessions/99999999999999999999"), 422)
    # Not a number: no session can be there (and /sessions/changes is another resource).
    assert_problem(await client.get("/sessions/abc"), 404)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "DELETE"])
async def test_an_id_of_thousands_of_digits_is_422_not_500(
    client: httpx.AsyncClient, method: str
) -> None:
    # CPython refuses to parse more than 4,300 digits; the routing must not try.
    response = await client.request(method, "/sessions/" + "9" * 4301, json={})
    assert response.status_code == 422
    if method != "HEAD":
        assert_problem(response, 422)
    session = await create_session(client)
    padded = await client.get("/sessions/" + "0" * 5000 + str(session["id"]))
    assert_problem(padded, 404)  # not a URL of the session (no leading zero)


async def merge_patch(
    client: httpx.AsyncClient, session_id: int, content: str | bytes
) -> httpx.Response:
    """PATCH the session with this body, as it is, sent as a merge patch."""
    return await client.patch(
        f"/sessions/{session_id}",
        content=content,
        headers={"content-type": "application/merge-patch+json"},
    )


async def test_patch_merges_and_null_clears_nullable_field(client: httpx.AsyncClient) -> None:
    session = await create_session(client, subtitle="Old", language="en")
    response = await merge_patch(client, session["id"], b'{"subtitle": null, "level": "Expert"}')
    assert response.status_code == 200
    patched = response.json()
    assert patched["subtitle"] is None
    assert patched["level"] == "Expert"
    assert patched["language"] == "en"
    assert patched["title"] == session["title"]


@pytest.mark.parametrize("field", ["title", "event_id", "state", "is_locked"])
async def test_patch_null_for_required_field_is_422_and_changes_nothing(
    client: httpx.AsyncClient, field: str
) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}", json={field: None, "level": "Expert"}
    )
    body = assert_problem(response, 422)
    assert ["body", field] in [error["location"] for error in body["errors"]]
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


SCHEDULE_ERROR_AT = {
    "ends_at": {
        "location": ["body", "ends_at"],
        "message": "must be later than starts_at",
        "type": "ends_before_start",
    },
    "starts_at": {
        "location": ["body", "starts_at"],
        "message": "must be earlier than ends_at",
        "type": "ends_before_start",
    },
}


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"ends_at": "2027-05-04T09:00:00Z"}, "ends_at"),
        # The field sent is the one named, not the stored end it contradicts.
        ({"starts_at": "2027-05-04T11:00:00Z"}, "starts_at"),
        # Contradicting itself: refused by the patch's own validator, in the same words.
        ({"starts_at": "2027-05-04T12:00:00Z", "ends_at": "2027-05-04T12:00:00Z"}, "ends_at"),
    ],
)
async def test_patch_ending_before_it_starts_is_422_naming_the_end_sent(
    client: httpx.AsyncClient, patch: dict[str, str], named: str
) -> None:
    session = await create_session(
        client, starts_at="2027-05-04T10:00:00Z", ends_at="2027-05-04T11:00:00Z"
    )
    body = assert_problem(await client.patch(f"/sessions/{session['id']}", json=patch), 422)
    assert body["errors"] == [SCHEDULE_ERROR_AT[named]]
    assert body["detail"] == "The request is invalid; see errors for each field."
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


async def test_create_ending_before_it_starts_is_422_as_a_patch_is(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    before = await create_session(client)
    response = await client.post(
        "/sessions",
        json=session_body(starts_at="2027-05-04T10:00:00Z", ends_at="2027-05-04T09:00:00Z"),
    )
    body = assert_problem(response, 422)
    assert body["errors"] == [SCHEDULE_ERROR_AT["ends_at"]]
    assert body["detail"] == "The request is invalid; see errors for each field."
    assert await count_sessions(connection) == 1
    # Refused by the body's own validator, before any statement: no INSERT took an id.
    assert (await create_session(client))["id"] == before["id"] + 1


async def test_patch_missing_session_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.patch("/sessions/4242", json={"title": "x"}), 404)


async def test_delete_hides_the_session_but_keeps_the_row(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    session = await create_session(client)
    response = await client.delete(f"/sessions/{session['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers  # there is no body to have a type
    assert_problem(await client.get(f"/sessions/{session['id']}"), 404)
    assert_problem(await client.patch(f"/sessions/{session['id']}", json={"title": "x"}), 404)
    assert_problem(await client.delete(f"/sessions/{session['id']}"), 404)
    listed = (await client.get("/sessions")).json()["items"]
    assert session["id"] not in [item["id"] for item in listed]
    deleted_at = (
        await connection.execute(
            text("SELECT deleted_at FROM sessions WHERE id = :id"), {"id": session["id"]}
        )
    ).scalar_one()
    assert deleted_at is not None


INVALID_BODIES = [
    pytest.param({"title": "No event"}, ["body", "event_id"], id="event_id missing"),
    pytest.param({"event_id": 1}, ["body", "title"], id="title missing"),
    pytest.param(session_body(event_id=None), ["body", "event_id"], id="event_id null"),
    pytest.param(session_body(event_id="1"), ["body", "event_id"], id="event_id string"),
    pytest.param(session_body(event_id=2**31), ["body", "event_id"], id="event_id too big"),
    pytest.param(session_body(title=""), ["body", "title"], id="title empty"),
    pytest.param(session_body(title="   "), ["body", "title"], id="title blank"),
    pytest.param(session_body(title="x" * 256), ["body", "title"], id="title too long"),
    pytest.param(session_body(title="a\x00b"), ["body", "title"], id="title with NUL"),
    pytest.param(session_body(title="a\x07b"), ["body", "title"], id="title with BEL"),
    pytest.param(session_body(subtitle="\x1b[31mred"), ["body", "subtitle"], id="subtitle ESC"),
    pytest.param(session_body(language="e\x0bn"), ["body", "language"], id="language VT"),
    pytest.param(session_body(comments="a\x1fb"), ["body", "comments"], id="comments US"),
    # A character reference is the character once the HTML is parsed (and sanitised).
    pytest.param(session_body(short_abstract="a&#1;b"), ["body", "short_abstract"], id="HTML &#1;"),
    pytest.param(
        session_body(long_abstract="<p>&#x1b;</p>"), ["body", "long_abstract"], id="HTML &#x1b;"
    ),
    pytest.param(session_body(subtitle="x" * 256), ["body", "subtitle"], id="subtitle too long"),
    pytest.param(
        session_body(long_abstract="x" * 10_001), ["body", "long_abstract"], id="abstract too long"
    ),
    pytest.param(session_body(language="x" * 65), ["body", "language"], id="language too long"),
    pytest.param(session_body(level="Guru"), ["body", "level"], id="level unknown"),
    pytest.param(session_body(state="published"), ["body", "state"], id="state unknown"),
    pytest.param(session_body(is_locked="yes"), ["body", "is_locked"], id="is_locked string"),
    pytest.param(
        session_body(starts_at="2027-05-04T10:00:00"), ["body", "starts_at"], id="no offset"
    ),
    pytest.param(session_body(starts_at="tomorrow"), ["body", "starts_at"], id="not a date"),
    pytest.param(session_body(starts_at=1_800_000_000), ["body", "starts_at"], id="timestamp"),
    pytest.param(
        session_body(starts_at="0001-01-01T00:00:00+01:00"), ["body", "starts_at"], id="year 0"
    ),
    # asyncpg writes the first and the last instant a datetime can hold as -infinity and
    # infinity, which come back naive: such a session could not be read any more (a 500).
    pytest.param(
        session_body(starts_at="0001-01-01T00:00:00Z"), ["body", "starts_at"], id="datetime.min"
    ),
    pytest.param(
        session_body(ends_at="9999-12-31T23:59:59.999999Z"), ["body", "ends_at"], id="datetime.max"
    ),
    pytest.param(
        session_body(starts_at="1899-12-31T23:59:59Z"), ["body", "starts_at"], id="before 1900"
    ),
    pytest.param(
        session_body(starts_at="3000-01-01T00:00:00Z", ends_at="3000-01-01T01:00:00Z"),
        ["body", "starts_at"],
        id="after 2999",
    ),
    # The years hold in UTC too (the service answers in UTC, and what it answers can be sent
    # back), and as sent (the schema's pattern).
    pytest.param(
        session_body(starts_at="1900-01-01T00:00:00+14:00", ends_at="1900-01-01T01:00:00+14:00"),
        ["body", "starts_at"],
        id="1899 in UTC",
    ),
    pytest.param(
        session_body(starts_at="2999-12-31T10:00:00Z", ends_at="2999-12-31T23:00:00-12:00"),
        ["body", "ends_at"],
        id="3000 in UTC",
    ),
    pytest.param(
        session_body(starts_at="1899-12-31T23:00:00-14:00", ends_at="1899-12-31T23:30:00-14:00"),
        ["body", "starts_at"],
        id="1899 as sent, 1900 in UTC",
    ),
    pytest.param(
        session_body(starts_at="2027-05-04T10:00:00Z", ends_at="2027-05-04T10:00:00Z"),
        ["body", "ends_at"],
        id="ends_at equal to starts_at",
    ),
    pytest.param(session_body(slides_url="ftp://x.org/a"), ["body", "slides_url"], id="ftp url"),
    pytest.param(session_body(video_url="not a url"), ["body", "video_url"], id="not a url"),
    pytest.param(
        # 420 characters as sent, 2,420 once percent-encoded: read back, it would be refused.
        session_body(slides_url="https://example.org/" + "é" * 400),
        ["body", "slides_url"],
        id="url too long once normalised",
    ),
    pytest.param(session_body(track_id=0), ["body", "track_id"], id="track_id zero"),
    pytest.param(session_body(unknown=1), ["body", "unknown"], id="unknown field"),
    pytest.param([session_body()], ["body"], id="array body"),
]


async def test_a_url_of_the_longest_normalised_length_can_be_sent_back(
    client: httpx.AsyncClient,
) -> None:
    url = "https://example.org/" + "%C3%A9" * 338  # 2,048 characters, already normalised
    session = await create_session(client, slides_url=url)
    assert session["slides_url"] == url
    response = await client.patch(f"/sessions/{session['id']}", json=session)
    assert response.json() == session


async def test_a_body_with_hundreds_of_invalid_fields_lists_the_first_fifty(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    unknown = MAX_OBJECT_MEMBERS - len(session_body())  # as many as an object may have
    body = session_body() | {f"unknown_{n}": n for n in range(unknown)}
    problem = assert_problem(await client.post("/sessions", json=body), 422)
    assert [error["location"] for error in problem["errors"]] == [
        ["body", f"unknown_{n}"] for n in range(50)
    ]
    assert problem["detail"] == (
        f"The request has {unknown} invalid fields; errors lists the first 50."
    )
    assert await count_sessions(connection) == 0


@pytest.mark.parametrize(("body", "location"), INVALID_BODIES)
async def test_create_invalid_body_is_422_problem_and_stores_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection, body: Any, location: list[str]
) -> None:
    problem = assert_problem(await client.post("/sessions", json=body), 422)
    assert location in [error["location"] for error in problem["errors"]]
    assert all(error["message"] for error in problem["errors"])
    assert await count_sessions(connection) == 0


@pytest.mark.parametrize(
    "title", [" ", "\u3000\t", "\u2028", " \u2029 ", "\u200b", "\ufeff", "\u00a0a"]
)
async def test_a_title_is_blank_exactly_when_the_spec_says_so(
    app: FastAPI, client: httpx.AsyncClient, title: str
) -> None:
    # A client generated from the spec checks the title's pattern: whatever passes it is taken,
    # whatever fails it is refused (U+2028 and U+2029 alone pass: see pagination.WHITESPACE).
    schema = app.openapi()["components"]["schemas"]["SessionCreate"]
    valid = re.search(schema["properties"]["title"]["pattern"], title) is not None
    response = await client.post("/sessions", json=session_body(title=title))
    assert response.status_code == (201 if valid else 422), response.text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_create_in_another_encoding_than_utf_8_is_422(
    client: httpx.AsyncClient, connection: AsyncConnection, encoding: str
) -> None:
    # Python's parser would guess the encoding from the bytes; JSON between systems is UTF-8.
    response = await post_body(client, json.dumps(session_body()).encode(encoding))
    assert assert_problem(response, 422)["errors"][0]["type"] == "json_invalid"
    assert await count_sessions(connection) == 0


async def test_create_ignores_a_leading_byte_order_mark(client: httpx.AsyncClient) -> None:
    response = await post_body(client, json.dumps(session_body(title="Marked")).encode("utf-8-sig"))
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "Marked"


# Nested deeper than the parser recurses (well under MAX_BODY_SIZE): a RecursionError inside it.
TOO_DEEP = 100_000


@pytest.mark.parametrize(
    "content",
    [
        b'{"event_id": 1, "title": ',
        b"not json",
        b"",
        b'{"event_id": 1, "title": "x", "tags": ' + b"[" * TOO_DEEP + b"]" * TOO_DEEP + b"}",
        b'{"event_id": 1, "title": "x", "extra": '
        + b'{"a": ' * TOO_DEEP
        + b"1"
        + b"}" * (TOO_DEEP + 1),
    ],
    ids=["cut short", "not json", "empty", "arrays nested too deep", "objects nested too deep"],
)
async def test_create_malformed_json_is_422(
    client: httpx.AsyncClient, connection: AsyncConnection, content: bytes
) -> None:
    response = await post_body(client, content)
    assert_problem(response, 422)
    assert await count_sessions(connection) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"event_id": 1, "title": "x"}', "text/plain"),
        (b"event_id=1&title=x", "application/x-www-form-urlencoded"),
        # A +json type that FastAPI parses as JSON, and a valid body in it: still not accepted.
        (b'{"event_id": 1, "title": "x"}', "application/merge-patch+json"),
        (b"", "text/plain"),
    ],
)
async def test_create_body_of_another_media_type_is_415_naming_json(
    client: httpx.AsyncClient, connection: AsyncConnection, content: bytes, content_type: str
) -> None:
    response = await client.post(
        "/sessions", content=content, headers={"content-type": content_type}
    )
    problem = assert_problem(response, 415)
    assert problem["type"] == "urn:sessions-service:problem:unsupported-media-type"
    assert response.headers["accept"] == "application/json"
    assert await count_sessions(connection) == 0


async def test_create_accepts_json_with_parameters(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    content = json.dumps(session_body()).encode()
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    assert (await client.post("/sessions", content=content, headers=headers)).status_code == 201
    assert await count_sessions(connection) == 1


async def test_create_body_without_content_type_is_415(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # Not read as JSON: a browser may send such a request cross-origin without a preflight.
    request = client.build_request("POST", "/sessions", json=session_body())
    del request.headers["content-type"]
    response = await client.send(request)
    assert_problem(response, 415)
    assert response.headers["accept"] == "application/json"
    assert await count_sessions(connection) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        # RFC 6902's JSON Patch: an array, which a merge patch can never be.
        (b'[{"op": "replace", "path": "/title", "value": "x"}]', "application/json-patch+json"),
        (b'{"title": "x"}', "application/json-patch+json"),
        (b'{"title": "x"}', "text/plain"),
    ],
)
async def test_patch_of_another_media_type_is_415_with_accept_patch(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}", content=content, headers={"content-type": content_type}
    )
    assert_problem(response, 415)
    assert response.headers["accept-patch"] == "application/merge-patch+json, application/json"
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


@pytest.mark.parametrize(
    ("content", "coding"),
    [
        (gzip.compress(json.dumps(session_body()).encode()), "gzip"),
        # Declared compressed but sent plain: taken as it is, it would be read as what it is not.
        (json.dumps(session_body()).encode(), "gzip"),
        (json.dumps(session_body()).encode(), "identity, br"),
    ],
    ids=["gzip", "declared-gzip-sent-plain", "identity-then-br"],
)
async def test_create_body_with_content_encoding_is_415_with_accept_encoding(
    client: httpx.AsyncClient, connection: AsyncConnection, content: bytes, coding: str
) -> None:
    headers = {"content-type": "application/json", "content-encoding": coding}
    response = await client.post("/sessions", content=content, headers=headers)
    problem = assert_problem(response, 415)
    assert "Content-Encoding" in problem["detail"]
    assert response.headers["accept-encoding"] == "identity"
    assert "accept" not in response.headers
    assert await count_sessions(connection) == 0


async def test_patch_body_with_content_encoding_is_415(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}",
        content=b'{"title": "x"}',
        headers={"content-type": "application/merge-patch+json", "content-encoding": "gzip"},
    )
    assert_problem(response, 415)
    assert response.headers["accept-encoding"] == "identity"
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


@pytest.mark.parametrize(
    "coding", ["gzip, chunked", "deflate,chunked", "x-unknown, chunked", "GZIP;q=1, chunked"]
)
async def test_create_body_with_transfer_coding_is_501(
    client: httpx.AsyncClient, connection: AsyncConnection, coding: str
) -> None:
    # The server dechunks, nothing more: a body declared gzip-coded but sent plain would be read
    # as what it is not, and created a session (RFC 9112 6.1: 501 for a coding not understood).
    headers = {"content-type": "application/json", "transfer-encoding": coding}
    response = await client.post(
        "/sessions", content=json.dumps(session_body()).encode(), headers=headers
    )
    problem = assert_problem(response, 501)
    assert "Transfer-Encoding" in problem["detail"]
    assert await count_sessions(connection) == 0


async def test_patch_body_with_transfer_coding_is_501(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}",
        content=b'{"title": "x"}',
        headers={
            "content-type": "application/merge-patch+json",
            "transfer-encoding": "gzip, chunked",
        },
    )
    assert_problem(response, 501)
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


async def test_create_body_chunked_is_accepted(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    headers = {"content-type": "application/json", "transfer-encoding": "Chunked"}
    content = json.dumps(session_body()).encode()
    assert (await client.post("/sessions", content=content, headers=headers)).status_code == 201
    assert await count_sessions(connection) == 1


@pytest.mark.parametrize(
    "content_types", [["application/json", "text/plain"], ["text/plain", "application/json"]]
)
async def test_create_with_two_content_types_is_400(
    client: httpx.AsyncClient, connection: AsyncConnection, content_types: list[str]
) -> None:
    # Which one counts depends on who reads the request: a proxy may take the other.
    headers = [("content-type", content_type) for content_type in content_types]
    response = await client.post(
        "/sessions", content=json.dumps(session_body()).encode(), headers=headers
    )
    problem = assert_problem(response, 400)
    assert problem["header"] == "Content-Type"
    assert await count_sessions(connection) == 0


async def test_create_body_with_identity_content_encoding_is_accepted(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    headers = {"content-type": "application/json", "content-encoding": "Identity"}
    content = json.dumps(session_body()).encode()
    assert (await client.post("/sessions", content=content, headers=headers)).status_code == 201
    assert await count_sessions(connection) == 1


async def test_patch_accepts_merge_patch_and_plain_json(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    for number, content_type in enumerate(["application/merge-patch+json", "application/json"]):
        response = await client.patch(
            f"/sessions/{session['id']}",
            content=b'{"subtitle": "take %d"}' % number,
            headers={"content-type": content_type},
        )
        assert response.status_code == 200, response.text
        assert response.json()["subtitle"] == f"take {number}"


async def test_create_with_a_member_named_twice_is_422_and_creates_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # Python's parser would keep the last title, others the first: neither is what was meant.
    response = await post_body(client, b'{"event_id": 1, "title": "First", "title": "Second"}')
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "location": ["body"],
            "message": 'Invalid JSON: "title" is named twice in one object.',
            "type": "json_invalid",
        }
    ]
    assert await count_sessions(connection) == 0


async def test_patch_with_a_member_named_twice_at_any_depth_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    for content in (b'{"title": "x", "title": null}', b'{"title": "x", "level": {"a": 1, "a": 2}}'):
        response = await merge_patch(client, session["id"], content)
        assert "named twice" in assert_problem(response, 422)["errors"][0]["message"]
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_a_body_holding_a_non_number_is_422_and_changes_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection, constant: str
) -> None:
    # JavaScript's, not JSON's (RFC 8259 6), though Python's parser reads them: even as the
    # value of an output-only member, which is otherwise ignored.
    response = await post_body(
        client, b'{"event_id": 1, "title": "x", "id": %s}' % constant.encode()
    )
    problem = assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "location": ["body"],
            "message": f"Invalid JSON: {constant} is not a JSON number.",
            "type": "json_invalid",
        }
    ]
    assert await count_sessions(connection) == 0
    session = await create_session(client)
    patched = await merge_patch(client, session["id"], b'{"version": %s}' % constant.encode())
    assert_problem(patched, 422)
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


async def test_a_body_with_an_object_of_too_many_members_is_422_and_creates_nothing(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # Refused as it is read: the schema would build an error for each member it does not know.
    assert len(SessionCreate.model_fields) < MAX_OBJECT_MEMBERS
    members = {str(n): 1 for n in range(100_000)}
    for body in (members, {"title": "x", "level": members}):
        response = await post_body(client, orjson.dumps(body))
        problem = assert_problem(response, 422)
        assert problem["detail"] == (
            f"An object of the body has more than {MAX_OBJECT_MEMBERS} members, more than any "
            "object of this API has."
        )
        assert problem["errors"] == [
            {"location": ["body"], "message": problem["detail"], "type": "too_many_members"}
        ]
    # Up to that many, the schema names them (the test above).
    assert await count_sessions(connection) == 0


async def test_patch_with_one_name_in_two_objects_is_not_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    response = await merge_patch(client, session["id"], b'{"title": "x", "level": {"title": "y"}}')
    # Read, and refused for what it says: level is no object.
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["location"] == ["body", "level"]


async def test_patch_malformed_json_is_422_and_changes_nothing(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await merge_patch(client, session["id"], b'{"title": "x"')
    body = assert_problem(response, 422)
    assert "JSON" in body["detail"]
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    # With a detail, as every problem the service answers (Starlette's own have only a title).
    not_found = assert_problem(await client.get("/nope"), 404)
    assert not_found["detail"] == "There is nothing at this URL."
    response = await client.put("/sessions/1", json={})
    not_allowed = assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD, PATCH, DELETE"
    assert not_allowed["detail"].startswith("PUT is not allowed on this URL")


@pytest.mark.parametrize("path", ["/sessions/", "/sessions/1/", "/sessions/changes/"])
async def test_a_trailing_slash_is_another_url_not_a_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers={"Host": "evil.example"})
    assert_problem(response, 404)
    assert "location" not in response.headers


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "DELETE"])
@pytest.mark.parametrize("slash", ["%2F", "%2f"])
async def test_a_percent_encoded_slash_is_no_path_separator(
    client: httpx.AsyncClient, method: str, slash: str
) -> None:
    # /sessions%2F1 is one segment (RFC 3986 2.2), not /sessions/1, which a proxy in front that
    # matches paths as sent would take it for.
    session = await create_session(client)
    path = f"/sessions{slash}{session['id']}"
    body = {"title": "Changed"} if method == "PATCH" else None
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    if method != "HEAD":
        assert assert_problem(response, 404)["detail"] == "There is nothing at this URL."
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


@pytest.mark.parametrize(
    ("send", "status", "title"),
    [
        (
            lambda client: client.post("/sessions", content=b"x" * 2_000_000),
            413,
            "Content Too Large",
        ),
        (lambda client: client.post("/sessions", json={}), 422, "Unprocessable Content"),
    ],
)
async def test_problem_titles_are_rfc_9110_phrases_on_every_python(
    client: httpx.AsyncClient, send: Any, status: int, title: str
) -> None:
    # Python before 3.13 names 413 and 422 by RFC 7231 ("Request Entity Too Large").
    assert assert_problem(await send(client), status)["title"] == title


async def test_unexpected_error_is_a_500_problem_without_details(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from service.logs import RequestContextFilter
    from tests.conftest import build_app

    app = build_app(database_url, cors_origins=["https://app.example"])
    caplog.handler.addFilter(RequestContextFilter())  # as the service's own handler has it

    @app.get("/sessions/boom")
    async def boom() -> None:
        raise RuntimeError("secret driver text")

    # The app answers the 500 itself: nothing is raised to the server (which would log it
    # again), so the default transport raises nothing either.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.get(
            "/sessions/boom",
            headers={"Origin": "https://app.example", "X-Request-ID": "bug-report-1"},
        )
    body = assert_problem(response, 500)
    assert "secret" not in response.text
    assert body["title"] == "Internal Server Error"
    # An answer like any other: the request id, CORS and Vary on it.
    assert response.headers["x-request-id"] == "bug-report-1"
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "Authorization" in response.headers["vary"]
    (logged,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert logged.getMessage() == "unhandled error on GET /sessions/boom"
    assert logged.request_id == "bug-report-1"  # type: ignore[attr-defined]
    assert logged.exc_info is not None


async def test_list_pages_through_all_sessions_in_id_order(client: httpx.AsyncClient) -> None:
    ids = [(await create_session(client, title=f"Talk {n}"))["id"] for n in range(5)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/sessions", params=params)
        assert response.status_code == 200
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3


async def test_list_last_full_page_has_no_next_cursor(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await create_session(client)
    page = (await client.get("/sessions", params={"limit": 2})).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


async def test_list_default_limit_is_20(client: httpx.AsyncClient) -> None:
    for _ in range(21):
        await create_session(client)
    page = (await client.get("/sessions")).json()
    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


async def test_list_filters_by_event(client: httpx.AsyncClient) -> None:
    mine = await create_session(client, event_id=11)
    await create_session(client, event_id=12)
    page = (await client.get("/sessions", params={"event_id": 11})).json()
    assert [item["id"] for item in page["items"]] == [mine["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"event_id": "x"},
    ],
)
async def test_list_bad_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    body = assert_problem(await client.get("/sessions", params=params), 422)
    (name,) = params
    assert ["query", name] in [error["location"] for error in body["errors"]]


@pytest.mark.parametrize(
    "cursor", ["garbage!", "eyJ4IjogMX0", "eyJhZnRlciI6ICIxIn0", "eyJhZnRlciI6IDFlNTB9"]
)
async def test_list_forged_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    body = assert_problem(await client.get("/sessions", params={"cursor": cursor}), 400)
    assert body["parameter"] == "cursor"


LEAP_SECOND = "2016-12-31T23:59:60Z"  # a real one: RFC 3339 allows second 60 there


async def test_a_leap_second_is_422_saying_so(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    created = await client.post("/sessions", json=session_body(starts_at=LEAP_SECOND))
    [error] = assert_problem(created, 422)["errors"]
    assert error["location"] == ["body", "starts_at"]
    assert "leap second" in error["message"]
    assert await count_sessions(connection) == 0
    listed = await client.get("/sessions", params={"starts_after": LEAP_SECOND})
    [error] = assert_problem(listed, 422)["errors"]
    assert error["location"] == ["query", "starts_after"]
    assert "leap second" in error["message"]


async def test_date_times_near_the_ends_of_the_years_come_back_as_they_can_be_sent(
    client: httpx.AsyncClient,
) -> None:
    body = session_body(starts_at="1900-01-01T00:00:00-14:00", ends_at="2999-12-31T23:00:00+12:00")
    created = await client.post("/sessions", json=body)
    assert created.status_code == 201, created.text
    stored = (await client.get(f"/sessions/{created.json()['id']}")).json()
    assert stored["starts_at"] == "1900-01-01T14:00:00.000000Z"
    assert stored["ends_at"] == "2999-12-31T11:00:00.000000Z"
    # The whole session read back is a valid merge patch, and changes nothing.
    patched = await client.patch(f"/sessions/{stored['id']}", json=stored)
    assert patched.status_code == 200, patched.text
    assert patched.json() == stored


async def test_tab_and_newlines_are_kept_in_texts(client: httpx.AsyncClient) -> None:
    # The control characters a person writes are the only ones a text may hold.
    texts = {"title": "A\ttalk", "subtitle": "in\r\ntwo lines", "long_abstract": "<p>a\nb</p>"}
    response = await client.post("/sessions", json=session_body(**texts))
    assert response.status_code == 201
    assert {name: response.json()[name] for name in texts} == texts


async def test_del_and_c1_controls_are_kept_in_texts(client: httpx.AsyncClient) -> None:
    # XML 1.0 can hold them, unlike the C0 controls and U+FFFE and U+FFFF.
    texts = {"title": "a\x7fb", "subtitle": "a\x85b\x9fc"}
    response = await client.post("/sessions", json=session_body(**texts))
    assert response.status_code == 201
    assert {name: response.json()[name] for name in texts} == texts


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "a\x01b"),
        ("comments", "a&#x1f;b"),
        ("subtitle", "a\uffffb"),
        ("language", "\ufffeen"),
        ("long_abstract", "a&#xFFFE;b"),
    ],
    ids=["raw", "reference", "U+FFFF", "U+FFFE", "U+FFFE reference"],
)
async def test_patch_with_a_control_character_is_422_and_changes_nothing(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    session = await create_session(client)
    response = await client.patch(f"/sessions/{session['id']}", json={field: value})
    body = assert_problem(response, 422)
    assert [error["location"] for error in body["errors"]] == [["body", field]]
    assert "control characters" in body["errors"][0]["message"]
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


@pytest.mark.parametrize(
    ("field", "longest"),
    [
        ("title", models.TITLE_MAX),
        ("subtitle", models.SUBTITLE_MAX),
        ("language", models.LANGUAGE_MAX),
        ("long_abstract", models.TEXT_MAX),
    ],
)
async def test_a_text_too_long_is_422_counting_characters(
    client: httpx.AsyncClient, field: str, longest: int
) -> None:
    session = await create_session(client)
    # Code points, as PostgreSQL counts them: one emoji is one character (two UTF-16 units).
    fits = await client.patch(f"/sessions/{session['id']}", json={field: "\U0001f600" * longest})
    assert fits.status_code == 200, fits.text
    response = await client.patch(
        f"/sessions/{session['id']}", json={field: "\U0001f600" * (longest + 1)}
    )
    [error] = assert_problem(response, 422)["errors"]
    assert error == {
        "location": ["body", field],
        "message": f"String should have at most {longest} characters",
        "type": "string_too_long",
    }
    assert (await client.get(f"/sessions/{session['id']}")).json() == fits.json()


# JSON may escape half of a UTF-16 surrogate pair on its own ("\ud800"): Python reads it into a
# str that is not Unicode text, which PostgreSQL cannot store. json.dumps writes it so.
LONE_SURROGATE = "a\ud800b"


@pytest.mark.parametrize("field", ["title", "subtitle", "language", "short_abstract"])
async def test_create_with_a_lone_surrogate_is_422(
    client: httpx.AsyncClient, connection: AsyncConnection, field: str
) -> None:
    response = await client.post(
        "/sessions",
        content=json.dumps(session_body(**{field: LONE_SURROGATE})),
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 422)
    assert [error["location"] for error in body["errors"]] == [["body", field]]
    assert "surrogate" in body["errors"][0]["message"]
    assert await count_sessions(connection) == 0


async def test_patch_with_a_lone_surrogate_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    response = await merge_patch(client, session["id"], json.dumps({"title": LONE_SURROGATE}))
    body = assert_problem(response, 422)
    assert [error["location"] for error in body["errors"]] == [["body", "title"]]
    assert (await client.get(f"/sessions/{session['id']}")).json() == session


def _calls(dependant: Dependant) -> Iterator[Any]:
    yield dependant.call
    for dependency in dependant.dependencies:
        yield from _calls(dependency)


def test_no_request_waits_for_a_worker_thread() -> None:
    # FastAPI runs a plain `def` endpoint or dependency in its thread pool: a hand-off to a
    # worker thread and back on every request that reaches it (found by py-spy on list pages,
    # whose cursor signer was a `def` dependency), for code that never blocks.
    app = build_app("postgresql://127.0.0.1/unused")
    synchronous = {
        f"{sorted(route.methods or ())} {route.path}: {call}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for call in _calls(route.dependant)
        if call is not None
        and not inspect.iscoroutinefunction(call)
        # (an instance, such as the bearer scheme, by its class's __call__)
        and not inspect.iscoroutinefunction(type(call).__call__)
    }
    assert not synchronous, synchronous
