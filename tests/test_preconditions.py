"""Conditional requests over HTTP: validators, 304, 412 and 428, checked against the database."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.conditional import format_http_date, parse_http_date, truncate_to_second
from service.repository import make_sessionmaker
from service.settings import Settings
from tests.conftest import (
    ADMIN_HEADERS,
    ClientAs,
    StoredRows,
    asgi_client,
    assert_problem,
    build_app,
    count_sessions,
    create_session,
    etag_of,
    session_body,
    stored_row,
)


def http_date(response: httpx.Response, field: str) -> datetime:
    parsed = parse_http_date(response.headers[field])
    assert parsed is not None, f"{field}: {response.headers[field]!r} is not an IMF-fixdate"
    return parsed


def assert_validators(response: httpx.Response, row: dict[str, Any]) -> None:
    """ETag, Last-Modified, Cache-Control and Date as RFC 9110 wants them, for this stored row."""
    assert response.headers["etag"] == etag_of(row)
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["last-modified"].endswith(" GMT")
    last_modified, date = http_date(response, "last-modified"), http_date(response, "date")
    assert last_modified == truncate_to_second(row["last_modified_at"])
    assert last_modified <= date
    assert len(response.headers.get_list("date")) == 1


# Validators on every representation


async def test_create_get_and_patch_carry_validators_of_the_stored_row(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    created = await client.post("/sessions", json=session_body())
    session_id = created.json()["id"]
    assert_validators(created, await stored_row(connection, session_id))
    assert created.headers["etag"] == etag_of(created.json())

    fetched = await client.get(f"/sessions/{session_id}")
    assert_validators(fetched, await stored_row(connection, session_id))

    patched = await client.patch(f"/sessions/{session_id}", json={"title": "New"})
    assert_validators(patched, await stored_row(connection, session_id))
    assert patched.headers["etag"] == etag_of(patched.json()) != created.headers["etag"]
    # Who asks decides what is seen: a cache must not hand one caller's answer to another.
    for response in (created, fetched, patched):
        assert response.headers.get_list("vary") == ["Authorization"]


async def test_last_modified_is_capped_at_date_when_the_stamp_is_ahead(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    session = await create_session(client)
    # Written by a host whose clock runs an hour ahead of this one.
    await connection.execute(
        text("UPDATE sessions SET last_modified_at = now() + interval '1 hour' WHERE id = :id"),
        {"id": session["id"]},
    )
    response = await client.get(f"/sessions/{session['id']}")
    assert response.status_code == 200
    assert http_date(response, "last-modified") == http_date(response, "date")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/sessions"), ("GET", "/sessions/999"), ("GET", "/nope"), ("POST", "/sessions")],
)
async def test_every_response_has_one_date(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json=[])
    assert len(response.headers.get_list("date")) == 1
    assert abs(parsedate_to_datetime(response.headers["date"]).timestamp() - time.time()) < 5


# Conditional reads: GET and HEAD


@pytest.mark.parametrize(
    "if_none_match",
    [["{tag}"], ["W/{tag}"], ['"7", {tag}'], ["*"], ['"7"', "{tag}"]],
    ids=["strong", "weak", "list", "any", "two lines"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_read_if_none_match_current_is_304_with_the_headers_of_a_200(
    client: httpx.AsyncClient, method: str, if_none_match: list[str]
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    full = await client.request(method, url)
    tag = etag_of(session)
    headers = [("If-None-Match", value.format(tag=tag)) for value in if_none_match]
    response = await client.request(method, url, headers=headers)
    assert response.status_code == 304
    assert response.content == b""
    assert "content-type" not in response.headers
    for field in ("etag", "cache-control", "vary"):
        assert response.headers.get(field) == full.headers.get(field)
    assert response.headers["etag"] == tag
    assert len(response.headers.get_list("date")) == 1


async def test_get_if_none_match_stale_is_200_with_the_session(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    await client.patch(url, json={"title": "Changed"})
    response = await client.get(url, headers={"If-None-Match": f'{etag_of(session)}, W/"3"'})
    assert response.status_code == 200
    assert response.json()["title"] == "Changed"
    assert response.headers["etag"] == etag_of(response.json())


async def test_head_answers_what_get_answers_without_a_body(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    get, head = await client.get(url), await client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    for field in ("etag", "last-modified", "cache-control", "content-type", "content-length"):
        assert head.headers[field] == get.headers[field]
    assert (await client.head("/sessions/999")).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/sessions?limit=1",
        "/sessions/changes",
        "/sessions/states",
        "/healthz",
        "/metrics",
    ],
)
async def test_every_resource_that_answers_get_answers_head(
    client: httpx.AsyncClient, url: str
) -> None:
    # RFC 9110 9.1: a general-purpose server supports HEAD wherever it supports GET.
    await create_session(client)
    await create_session(client)
    get, head = await client.get(url), await client.head(url)
    assert get.status_code == head.status_code == 200  # /readyz: test_ops, on a started app
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if url.startswith("/sessions?"):
        assert head.headers["link"] == get.headers["link"]


async def test_get_if_modified_since_echoed_last_modified_is_304(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    last_modified = (await client.get(url)).headers["last-modified"]
    response = await client.get(url, headers={"If-Modified-Since": last_modified})
    assert response.status_code == 304
    assert response.headers["etag"] == etag_of(session)
    one_second_earlier = format_http_date(
        parsedate_to_datetime(last_modified) - timedelta(seconds=1)
    )
    response = await client.get(url, headers={"If-Modified-Since": one_second_earlier})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"If-Modified-Since": "not a date"},
        {"If-Modified-Since": "2099-01-01T00:00:00Z"},
        # If-None-Match decides alone when present, even though the date would give 304.
        {"If-None-Match": '"7"', "If-Modified-Since": "Fri, 01 Jan 2099 00:00:00 GMT"},
    ],
    ids=["invalid", "iso 8601", "if-none-match present"],
)
async def test_get_if_modified_since_ignored_is_200(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    session = await create_session(client)
    response = await client.get(f"/sessions/{session['id']}", headers=headers)
    assert response.status_code == 200
    assert response.json() == session


async def test_get_if_modified_since_obsolete_formats_are_understood(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    for future in ("Friday, 01-Jan-60 00:00:00 GMT", "Fri Jan  1 00:00:00 2060"):
        response = await client.get(url, headers={"If-Modified-Since": future})
        assert response.status_code == 304, future


# Conditional writes: PATCH and DELETE


@pytest.mark.parametrize("if_match", ["{tag}", '"9", {tag}', "*"], ids=["strong", "list", "any"])
async def test_patch_if_match_current_changes_the_session(
    client: httpx.AsyncClient, if_match: str
) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}",
        json={"title": "Mine"},
        headers={"If-Match": if_match.format(tag=etag_of(session))},
    )
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Mine"
    assert response.headers["etag"] == etag_of(response.json()) != etag_of(session)


@pytest.mark.parametrize(
    "headers",
    [
        {"If-Match": '"2"'},
        {"If-Match": '"0", "2"'},
        {"If-Match": "W/{tag}"},  # a weak tag never matches in If-Match (strong comparison)
        {"If-Match": ""},  # an empty list matches nothing
        {"If-None-Match": "*"},
        {"If-None-Match": "W/{tag}"},
        {"If-Unmodified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"},
    ],
)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_write_failed_precondition_is_412_with_etag_and_changes_nothing(
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    method: str,
    headers: dict[str, str],
) -> None:
    session = await create_session(client)
    before, tag = await stored_row(connection, session["id"]), etag_of(session)
    response = await client.request(
        method,
        f"/sessions/{session['id']}",
        json={"title": "Lost"},
        headers={name: value.format(tag=tag) for name, value in headers.items()},
    )
    body = assert_problem(response, 412)
    assert body["title"] == "Precondition Failed"
    assert response.headers["etag"] == tag
    assert await stored_row(connection, session["id"]) == before  # xmin too: no write at all


async def test_delete_if_match_current_deletes(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    assert (await client.delete(url, headers={"If-Match": etag_of(session)})).status_code == 204
    assert_problem(await client.get(url), 404)


async def test_patch_if_unmodified_since_echoed_last_modified_never_412(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    # Right after creation the stamp and Last-Modified share their second: the hard case.
    last_modified = (await client.get(url)).headers["last-modified"]
    response = await client.patch(
        url, json={"level": "Expert"}, headers={"If-Unmodified-Since": last_modified}
    )
    assert response.status_code == 200
    response = await client.patch(
        url, json={"level": "Beginner"}, headers={"If-Unmodified-Since": "not a date"}
    )
    assert response.status_code == 200  # an invalid date is ignored (RFC 9110 13.1.4)


async def test_patch_if_match_decides_over_if_unmodified_since(client: httpx.AsyncClient) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}",
        json={"title": "Mine"},
        headers={
            "If-Match": etag_of(session),
            "If-Unmodified-Since": "Sun, 06 Nov 1994 08:49:37 GMT",
        },
    )
    assert response.status_code == 200


async def test_same_second_edits_only_if_match_tells_them_apart(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    for _ in range(5):
        seen = await client.get(url)
        changed = await client.patch(url, json={"title": f"{seen.headers['etag']} edited"})
        if changed.headers["last-modified"] == seen.headers["last-modified"]:
            break  # both in one second, as intended (else the edits straddled a second)
    else:
        pytest.fail("two edits never fell within one second")
    assert changed.headers["etag"] != seen.headers["etag"]
    # A writer still holding `seen`: its ETag catches the change, its Last-Modified cannot.
    stale_by_etag = await client.patch(
        url, json={"title": "Stale"}, headers={"If-Match": seen.headers["etag"]}
    )
    assert_problem(stale_by_etag, 412)
    stale_by_date = await client.patch(
        url,
        json={"subtitle": "Stale"},
        headers={"If-Unmodified-Since": seen.headers["last-modified"]},
    )
    assert stale_by_date.status_code == 200  # one-second granularity, as RFC 9110 defines it


async def test_a_tag_of_a_change_the_database_lost_matches_not_the_change_that_replaced_it(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    lost = await client.patch(url, json={"title": "Lost"})
    # The database restored to a point before that change: its version 2 is free again.
    await connection.execute(
        text(
            "UPDATE sessions SET title = :title, version = 1, last_modified_at = :stamp "
            "WHERE id = :id"
        ),
        {
            "id": session["id"],
            "title": session["title"],
            "stamp": datetime.fromisoformat(session["last_modified_at"]),
        },
    )
    replacing = await client.patch(url, json={"subtitle": "Made after the restore"})
    assert replacing.json()["version"] == lost.json()["version"] == 2
    assert replacing.headers["etag"] != lost.headers["etag"]
    # A client still holding the lost change: its copy is stale, and it may not write over.
    revalidated = await client.get(url, headers={"If-None-Match": lost.headers["etag"]})
    assert revalidated.status_code == 200
    assert revalidated.json()["title"] == session["title"]
    stale = await client.patch(
        url, json={"level": "Expert"}, headers={"If-Match": lost.headers["etag"]}
    )
    assert_problem(stale, 412)


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_the_version_alone_as_earlier_releases_tagged_it_still_matches(
    client: httpx.AsyncClient, method: str
) -> None:
    # Clients may hold such a tag, or build it from `version` as the README once said to.
    session = await create_session(client)
    url = f"/sessions/{session['id']}"
    not_modified = await client.get(url, headers={"If-None-Match": '"1"'})
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == etag_of(session)  # the current form, to echo
    stale = await client.request(method, url, json={"title": "x"}, headers={"If-Match": '"0"'})
    assert_problem(stale, 412)
    current = await client.request(method, url, json={"title": "x"}, headers={"If-Match": '"1"'})
    assert current.status_code == (200 if method == "PATCH" else 204), current.text


async def test_noop_patch_with_matching_if_match_keeps_the_etag(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    session = await create_session(client)
    before = await stored_row(connection, session["id"])
    response = await client.patch(
        f"/sessions/{session['id']}",
        json={"title": session["title"]},
        headers={"If-Match": etag_of(session)},
    )
    assert response.status_code == 200
    assert response.headers["etag"] == etag_of(session)
    assert response.json() == session
    assert await stored_row(connection, session["id"]) == before


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_missing_or_deleted_session_is_404_before_412(
    client: httpx.AsyncClient, method: str
) -> None:
    deleted = await create_session(client)
    await client.delete(f"/sessions/{deleted['id']}")
    for path in ("/sessions/999", f"/sessions/{deleted['id']}"):
        for if_match in ('"1"', '"7"', "*"):
            response = await client.request(
                method, path, json={"title": "x"}, headers={"If-Match": if_match}
            )
            assert_problem(response, 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": None}, "title"),
        ({"unknown": 1}, "unknown"),
        ({"starts_at": "2027-05-04T10:00:00Z", "ends_at": "2027-05-04T09:00:00Z"}, "ends_at"),
    ],
)
async def test_patch_invalid_body_is_422_before_412(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    session = await create_session(client)
    response = await client.patch(
        f"/sessions/{session['id']}", json=body, headers={"If-Match": '"7"'}
    )
    problem = assert_problem(response, 422)
    assert ["body", field] in [error["location"] for error in problem["errors"]]


async def test_patch_invalid_against_a_stale_state_is_412(client: httpx.AsyncClient) -> None:
    # Whether ends_at alone is valid depends on the stored starts_at, which this client has not
    # seen in its current state: 412 tells it to re-read first.
    session = await create_session(client, starts_at="2027-05-04T10:00:00Z")
    response = await client.patch(
        f"/sessions/{session['id']}",
        json={"ends_at": "2027-05-04T09:00:00Z"},
        headers={"If-Match": '"7"'},
    )
    assert_problem(response, 412)


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [
        ("GET", "If-None-Match", "1"),
        ("GET", "If-Match", '"1'),
        ("HEAD", "If-None-Match", "W/1"),
        ("PATCH", "If-Match", "1"),
        ("PATCH", "If-Match", '*, "1"'),
        ("PATCH", "If-None-Match", '"1" "2"'),
        ("DELETE", "If-Match", 'W/ "1"'),
        ("DELETE", "If-Match", '"\x7f"'),
    ],
)
async def test_malformed_entity_tags_are_400_and_change_nothing(
    client: httpx.AsyncClient,
    connection: AsyncConnection,
    method: str,
    field: str,
    value: str,
) -> None:
    session = await create_session(client)
    before = await stored_row(connection, session["id"])
    response = await client.request(
        method, f"/sessions/{session['id']}", json={"title": "x"}, headers={field: value}
    )
    assert response.status_code == 400
    if method != "HEAD":
        body = assert_problem(response, 400)
        assert body["header"] == field
        assert field in body["detail"]
    assert await stored_row(connection, session["id"]) == before


async def test_malformed_entity_tags_count_only_once_the_request_is_otherwise_servable(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient
) -> None:
    # As preconditions are evaluated (RFC 9110 13.2.1): after authentication and validation.
    session = await create_session(client)
    url, malformed = f"/sessions/{session['id']}", {"If-Match": "1"}
    unauthenticated = await anonymous_client.patch(url, json={"title": "x"}, headers=malformed)
    assert_problem(unauthenticated, 401)
    invalid = await client.patch(url, json={"title": ""}, headers=malformed)
    assert_problem(invalid, 422)
    assert_problem(await client.get("/sessions/0", headers=malformed), 422)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "DELETE"])
async def test_malformed_entity_tags_are_ignored_where_the_answer_is_404_or_403(
    client: httpx.AsyncClient,
    anonymous_client: httpx.AsyncClient,
    client_as: ClientAs,
    method: str,
) -> None:
    # RFC 9110 13.2.1: preconditions are ignored where the answer without them is not a 2xx or
    # 412. A missing session, one the caller may not see, and one they may not change are the
    # 404 and 403 they would be without the header, not a 400 about the header.
    malformed = {"If-Match": "1", "If-None-Match": "W/1"}
    hidden = await create_session(client, state="draft")
    public = await create_session(client, state="accepted")
    for path, caller in (
        ("/sessions/999999", client),
        (f"/sessions/{hidden['id']}", client_as("7")),
    ):
        response = await caller.request(method, path, json={"title": "x"}, headers=malformed)
        assert response.status_code == 404, response.text
    speaker = client_as("7")
    url = f"/sessions/{public['id']}"
    response = await speaker.request(method, url, json={"title": "x"}, headers=malformed)
    if method in ("PATCH", "DELETE"):
        assert_problem(response, 403)
    else:  # a public session: the request is servable, so the header counts
        assert response.status_code == 400


INVALID_DATES = [b"tomorrow", b"Sun, 06 Nov 1994 08:49:37", b"\xff\xfe", b" "]


@pytest.mark.parametrize("value", INVALID_DATES)
@pytest.mark.parametrize("field", ["If-Modified-Since", "If-Unmodified-Since"])
async def test_invalid_dates_are_ignored_on_reads(
    client: httpx.AsyncClient, field: str, value: bytes
) -> None:
    session = await create_session(client)
    response = await client.get(f"/sessions/{session['id']}", headers={field.encode(): value})
    assert response.status_code == 200  # neither 304 nor 412
    assert response.json() == session


@pytest.mark.parametrize("value", INVALID_DATES)
@pytest.mark.parametrize("field", ["If-Modified-Since", "If-Unmodified-Since"])
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_invalid_dates_are_ignored_on_writes(
    client: httpx.AsyncClient, connection: AsyncConnection, method: str, field: str, value: bytes
) -> None:
    session = await create_session(client)
    response = await client.request(
        method,
        f"/sessions/{session['id']}",
        json={"title": "Changed"},
        headers={field.encode(): value},
    )
    assert response.status_code == (200 if method == "PATCH" else 204)
    row = await stored_row(connection, session["id"])
    assert row["version"] == 2
    assert (row["title"] == "Changed") if method == "PATCH" else (row["deleted_at"] is not None)


@pytest.mark.parametrize("value", INVALID_DATES)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_an_invalid_date_is_no_precondition_when_one_is_required(
    strict_client: httpx.AsyncClient, connection: AsyncConnection, method: str, value: bytes
) -> None:
    session = await create_session(strict_client)
    before = await stored_row(connection, session["id"])
    response = await strict_client.request(
        method,
        f"/sessions/{session['id']}",
        json={"title": "Changed"},
        headers={b"If-Unmodified-Since": value},
    )
    assert_problem(response, 428)
    assert await stored_row(connection, session["id"]) == before


# Resources without validators: a list page, the change feed, the workflow, and the collection
# a POST creates in. They exist and have no entity tag (RFC 9110 13.1.1-2).

COLLECTIONS = ["/sessions", "/sessions/changes", "/sessions/states"]


def page(response: httpx.Response) -> Any:
    """A response's body, but for the change feed's next_token: its position moves with every
    write to the database server, whatever the database."""
    if not response.content:
        return None
    body = response.json()
    body.pop("next_token", None)
    return body


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("url", COLLECTIONS)
async def test_a_resource_without_validators_meets_only_what_it_can(
    client: httpx.AsyncClient, url: str, method: str
) -> None:
    await create_session(client)
    served = await client.request(method, url)
    assert served.status_code == 200
    for holds in [
        {"If-Match": "*"},
        {"If-None-Match": '"1", W/"2"'},
        # No modification date: the dates are not evaluated.
        {"If-Modified-Since": format_http_date(datetime.now(UTC) + timedelta(days=1))},
        {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
    ]:
        response = await client.request(method, url, headers=holds)
        assert response.status_code == 200, holds
        assert page(response) == page(served), holds
    not_modified = await client.request(method, url, headers={"If-None-Match": "*"})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    for name in ("cache-control", "vary"):
        assert not_modified.headers.get(name) == served.headers.get(name), name
    failed = await client.request(method, url, headers={"If-Match": '"1"'})
    assert failed.status_code == 412
    if method == "GET":
        assert_problem(failed, 412)
    malformed = await client.request(method, url, headers={"If-Match": "1"})
    assert malformed.status_code == 400
    if method == "GET":
        assert assert_problem(malformed, 400)["header"] == "If-Match"


async def test_a_list_refuses_a_forged_cursor_before_its_preconditions(
    client: httpx.AsyncClient,
) -> None:
    for url, parameter in [
        ("/sessions?cursor=forged", "cursor"),
        ("/sessions/changes?since=x", "since"),
    ]:
        response = await client.get(url, headers={"If-Match": '"1"'})
        assert assert_problem(response, 400)["parameter"] == parameter


@pytest.mark.parametrize(
    "headers",
    [{"If-None-Match": "*"}, {"If-Match": '"1"'}, {"If-Match": '"1"', "If-None-Match": "*"}],
)
async def test_post_into_a_collection_that_exists_and_has_no_entity_tag_is_412(
    client: httpx.AsyncClient, connection: AsyncConnection, headers: dict[str, str]
) -> None:
    response = await client.post("/sessions", json=session_body(), headers=headers)
    assert_problem(response, 412)
    assert await count_sessions(connection) == 0


async def test_post_with_preconditions_that_hold_creates(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    for headers in [{"If-Match": "*"}, {"If-None-Match": '"1"'}]:
        response = await client.post("/sessions", json=session_body(), headers=headers)
        assert response.status_code == 201, headers
    assert await count_sessions(connection) == 2


async def test_post_answers_401_422_403_and_400_before_412(
    client: httpx.AsyncClient,
    anonymous_client: httpx.AsyncClient,
    client_as: ClientAs,
    connection: AsyncConnection,
) -> None:
    fails = {"If-None-Match": "*"}
    unauthenticated = await anonymous_client.post("/sessions", json=session_body(), headers=fails)
    assert_problem(unauthenticated, 401)
    invalid = await client.post("/sessions", json={"title": ""}, headers=fails)
    assert_problem(invalid, 422)
    speaker = client_as("7")
    accepted = session_body(state="accepted")  # not a state a speaker creates in
    assert assert_problem(await speaker.post("/sessions", json=accepted, headers=fails), 403)
    malformed = await client.post("/sessions", json=session_body(), headers={"If-Match": "1"})
    assert assert_problem(malformed, 400)["header"] == "If-Match"
    assert await count_sessions(connection) == 0


async def test_post_with_a_used_idempotency_key_answers_as_the_key_says_before_412(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    key = {"Idempotency-Key": "retried-with-a-precondition"}
    first = await client.post("/sessions", json=session_body(title="First"), headers=key)
    assert first.status_code == 201
    fails = key | {"If-None-Match": "*"}
    # Without the precondition it would be a 422: it is one with it (RFC 9110 13.2.1).
    other = await client.post("/sessions", json=session_body(title="Other"), headers=fails)
    assert assert_problem(other, 422)["errors"][0]["location"] == ["header", "Idempotency-Key"]
    # Without it, the replay (a 2xx): the collection exists, so If-None-Match: * fails.
    replayed = await client.post("/sessions", json=session_body(title="First"), headers=fails)
    assert_problem(replayed, 412)
    assert await count_sessions(connection) == 1
    # A new key with a failing precondition creates nothing, and leaves the key free.
    new_key = {"Idempotency-Key": "new-with-a-precondition"}
    refused = await client.post(
        "/sessions", json=session_body(), headers=new_key | {"If-None-Match": "*"}
    )
    assert_problem(refused, 412)
    assert await count_sessions(connection) == 1
    created = await client.post("/sessions", json=session_body(), headers=new_key)
    assert created.status_code == 201
    assert await count_sessions(connection) == 2


# The check and the write are atomic


async def test_concurrent_writes_with_the_same_if_match_exactly_one_wins(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    session = (await committed_client.post("/sessions", json=session_body())).json()
    url = f"/sessions/{session['id']}"
    rounds, writers, tag = 25, 3, etag_of(session)
    for version in range(1, rounds + 1):
        responses = await asyncio.gather(
            *(
                committed_client.patch(
                    url, json={"title": f"v{version} by {writer}"}, headers={"If-Match": tag}
                )
                for writer in range(writers)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [412] * (writers - 1), f"round {version}: {statuses}"
        (winner,) = [response for response in responses if response.status_code == 200]
        row = await stored.row(session["id"])
        assert {response.headers["etag"] for response in responses} == {etag_of(row)}
        assert row["version"] == version + 1
        assert row["title"] == winner.json()["title"]
        tag = etag_of(row)


async def test_concurrent_patch_and_delete_with_the_same_if_match_one_wins(
    committed_client: httpx.AsyncClient, stored: StoredRows
) -> None:
    for _ in range(10):
        session = (await committed_client.post("/sessions", json=session_body())).json()
        url, tag = f"/sessions/{session['id']}", etag_of(session)
        patched, deleted = await asyncio.gather(
            committed_client.patch(url, json={"title": "Mine"}, headers={"If-Match": tag}),
            committed_client.delete(url, headers={"If-Match": tag}),
        )
        row = await stored.row(session["id"])
        if deleted.status_code == 204:
            assert patched.status_code == 404  # the delete went first: the session is gone
            assert row["title"] != "Mine"
        else:
            assert (patched.status_code, deleted.status_code) == (200, 412)
            assert row["deleted_at"] is None
        assert row["version"] == 2


# REQUIRE_PRECONDITIONS


@pytest.fixture
async def strict_client(
    database_url: str, connection: AsyncConnection
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with REQUIRE_PRECONDITIONS on, in the test's transaction (an admin)."""
    app = build_app(database_url, require_preconditions=True)
    app.state.db_maker = make_sessionmaker(connection, join_transaction_mode="create_savepoint")
    async with asgi_client(app, ADMIN_HEADERS) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"If-Unmodified-Since": "not a date"},
        {"If-None-Match": '"7"'},
        {"If-Match": "*"},
        # If-Unmodified-Since is ignored beside If-Match (RFC 9110 13.2.2), a date long past too.
        {"If-Match": "*", "If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        # A date in the future: every version stored so far meets it, as every one meets *.
        {"If-Unmodified-Since": "Sat, 05 Dec 2099 00:00:00 GMT"},
    ],
    ids=[
        "none",
        "ignored date",
        "if-none-match only",
        "if-match any",
        "if-match any and date",
        "future date",
    ],
)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_write_without_precondition_is_428_when_required(
    strict_client: httpx.AsyncClient,
    connection: AsyncConnection,
    method: str,
    headers: dict[str, str],
) -> None:
    session = await create_session(strict_client)
    before = await stored_row(connection, session["id"])
    url = f"/sessions/{session['id']}"
    response = await strict_client.request(method, url, json={"title": "x"}, headers=headers)
    body = assert_problem(response, 428)
    assert "If-Match" in body["detail"]
    assert f"GET {url}" in body["detail"]
    assert await stored_row(connection, session["id"]) == before


async def test_write_with_precondition_passes_when_required(
    strict_client: httpx.AsyncClient,
) -> None:
    session = await create_session(strict_client)
    url = f"/sessions/{session['id']}"
    assert (await strict_client.get(url)).status_code == 200
    last_modified = (await strict_client.get(url)).headers["last-modified"]
    response = await strict_client.patch(
        url, json={"title": "x"}, headers={"If-Unmodified-Since": last_modified}
    )
    assert response.status_code == 200
    response = await strict_client.delete(url, headers={"If-Match": response.headers["etag"]})
    assert response.status_code == 204


def test_require_preconditions_is_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REQUIRE_PRECONDITIONS", raising=False)
    assert Settings().require_preconditions is False
    monkeypatch.setenv("REQUIRE_PRECONDITIONS", "true")
    assert Settings().require_preconditions is True


# OpenAPI


async def test_openapi_documents_preconditions_on_each_operation(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    item = spec["paths"]["/sessions/{session_id}"]
    expected_headers = {
        "get": {"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"},
        "head": {"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"},
        "patch": {"If-Match", "If-None-Match", "If-Unmodified-Since"},
        "delete": {"If-Match", "If-None-Match", "If-Unmodified-Since"},
    }
    for method, headers in expected_headers.items():
        operation = item[method]
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert documented == headers, method
        assert all(p["description"] for p in operation["parameters"] if p["in"] == "header")
        if method != "head":  # the answer to HEAD has no body, a problem neither
            assert "application/problem+json" in operation["responses"]["412"]["content"]
        assert "ETag" in operation["responses"]["412"]["headers"]
    for method in ("get", "head"):
        assert {"ETag", "Last-Modified"} <= set(item[method]["responses"]["200"]["headers"])
        assert "ETag" in item[method]["responses"]["304"]["headers"]
    for method in ("patch", "delete"):
        assert "application/problem+json" in item[method]["responses"]["428"]["content"]
    assert {"ETag", "Last-Modified"} <= set(item["patch"]["responses"]["200"]["headers"])
    created = spec["paths"]["/sessions"]["post"]["responses"]["201"]
    assert {"ETag", "Last-Modified"} <= set(created["headers"])
    for url, method in [(url, m) for url in COLLECTIONS for m in ("get", "head")] + [
        ("/sessions", "post")
    ]:
        operation = spec["paths"][url][method]
        assert "412" in operation["responses"], (url, method)
        if method != "post":
            assert "304" in operation["responses"], (url, method)
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert {"If-Match", "If-None-Match"} <= documented, (url, method)
