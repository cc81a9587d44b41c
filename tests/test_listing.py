"""GET /sessions: filters, sort orders, keyset pages and their signed cursors."""

import base64
import dataclasses
import itertools
import string
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.pagination import LIST_CURSOR, TOKEN_FORMAT, TokenSigner, parse_sort, query_fingerprint
from service.policy import Visibility
from service.repository import _FILTERS, SessionFilter, list_query
from service.routes import ListParameters
from tests.conftest import ClientAs, assert_problem, create_session

SORT_KEYS = ["id", "title", "starts_at", "ends_at", "created_at", "last_modified_at"]

# Titles repeat (ties broken by id); some sessions have no schedule (NULL sorts last both ways).
# Lower-case ASCII titles sort the same under every collation and in Python.
SCHEDULE: list[tuple[str, str | None, str | None]] = [
    ("bravo", "2027-05-04T10:00:00Z", "2027-05-04T11:00:00Z"),
    ("alpha", None, None),
    ("bravo", "2027-05-04T09:00:00Z", "2027-05-04T12:00:00Z"),
    ("charlie", "2027-05-04T10:00:00Z", None),
    ("alpha", "2027-05-03T10:00:00Z", "2027-05-03T10:30:00Z"),
    ("delta", None, None),
    ("alpha", "2027-05-04T10:00:00Z", "2027-05-04T11:00:00Z"),
    ("echo", "2027-05-05T08:00:00Z", "2027-05-05T09:00:00Z"),
    ("bravo", None, None),
    ("charlie", "2027-05-04T09:00:00Z", "2027-05-04T09:30:00Z"),
    ("delta", "2027-05-04T10:00:00Z", "2027-05-04T11:00:00Z"),
]


async def create_schedule(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    sessions = [
        await create_session(client, title=title, starts_at=starts_at, ends_at=ends_at)
        for title, starts_at, ends_at in SCHEDULE
    ]
    # Patch a few, so that last_modified_at is not in id order.
    for session in (sessions[0], sessions[4], sessions[2]):
        response = await client.patch(f"/sessions/{session['id']}", json={"comments": "moved"})
        session.update(response.json())
    return sessions


def expected_order(sessions: list[dict[str, Any]], sort: list[str]) -> list[int]:
    """The documented order, computed in Python: NULLs last both ways, then id."""
    keys = [(key.removeprefix("-"), key.startswith("-")) for key in sort]
    if "id" not in [name for name, _ in keys]:
        keys.append(("id", bool(keys) and keys[-1][1]))
    ordered = list(sessions)
    for name, descending in reversed(keys):  # stable sorts, least significant key first
        present = [s for s in ordered if s[name] is not None]
        missing = [s for s in ordered if s[name] is None]
        present.sort(key=lambda s: parse_value(s[name]), reverse=descending)
        ordered = present + missing
    return [s["id"] for s in ordered]


def parse_value(value: Any) -> Any:
    if isinstance(value, str) and value.endswith("Z"):
        return datetime.fromisoformat(value)
    return value


async def walk(
    client: httpx.AsyncClient, params: dict[str, Any], limit: int
) -> tuple[list[int], int]:
    """Follow next_cursor to the end: the ids seen and the number of pages."""
    seen: list[int] = []
    cursor: str | None = None
    for pages in itertools.count(1):
        assert pages <= 1000, "the cursor does not advance"
        page_params = params | {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/sessions", params=page_params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        assert ("link" in response.headers) == (cursor is not None)
        if cursor is None:
            return seen, pages
    raise AssertionError("unreachable")


SORTS = [
    *([key] for key in SORT_KEYS),
    *([f"-{key}"] for key in SORT_KEYS),
    ["title", "-starts_at"],
    ["-title", "ends_at"],
    ["starts_at", "title"],
    ["-ends_at", "-title"],
    ["title", "-id"],
    ["-starts_at", "ends_at", "title"],
]


async def test_list_pages_follow_every_sort_order_exactly(client: httpx.AsyncClient) -> None:
    sessions = await create_schedule(client)
    for sort in SORTS:
        # One row a page: every boundary between two rows is a keyset position.
        seen, pages = await walk(client, {"sort": ",".join(sort)}, 1)
        assert seen == expected_order(sessions, sort), sort
        assert pages == len(sessions), sort


async def test_list_sort_may_be_repeated_instead_of_comma_separated(
    client: httpx.AsyncClient,
) -> None:
    sessions = await create_schedule(client)
    seen, _ = await walk(client, {"sort": ["title", "-starts_at"]}, 4)
    assert seen == expected_order(sessions, ["title", "-starts_at"])


@pytest.mark.parametrize("url", ["/sessions", "/sessions/changes"])
async def test_pages_are_never_stored_by_caches(client: httpx.AsyncClient, url: str) -> None:
    # No validator to revalidate a page with, and it holds what this caller may see.
    await create_session(client)
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


async def test_list_link_header_points_at_the_next_page(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create_session(client, event_id=5, state="accepted", title=f"t{n}")
    params: dict[str, Any] = {
        "event_id": 5,
        "state": ["accepted", "confirmed"],
        "sort": "-title",
        "limit": 2,
    }
    first = await client.get("/sessions", params=params, headers={"Host": "evil.example"})
    link = first.headers["link"]
    assert link.startswith("</sessions?")  # relative: the Host header is the client's
    assert link.endswith('>; rel="next"')
    url = link.removeprefix("<").removesuffix('>; rel="next"')
    query = parse_qs(urlsplit(url).query)
    assert query["cursor"] == [first.json()["next_cursor"]]
    assert query["state"] == ["accepted", "confirmed"]
    second = await client.get(url)
    assert second.status_code == 200
    assert [item["title"] for item in second.json()["items"]] == ["t0"]
    assert second.json()["next_cursor"] is None
    assert "link" not in second.headers


async def test_list_a_page_ends_where_the_rows_end(client: httpx.AsyncClient) -> None:
    await create_schedule(client)
    seen, pages = await walk(client, {"sort": "starts_at"}, len(SCHEDULE))
    assert len(seen) == len(SCHEDULE)
    assert pages == 1


FILTER_CASES: list[tuple[dict[str, Any], Any]] = [
    ({"event_id": 2}, lambda s: s["event_id"] == 2),
    ({"state": "accepted"}, lambda s: s["state"] == "accepted"),
    ({"state": ["accepted", "pending"]}, lambda s: s["state"] in {"accepted", "pending"}),
    ({"track_id": 3}, lambda s: s["track_id"] == 3),
    ({"session_type_id": 4}, lambda s: s["session_type_id"] == 4),
    ({"microlocation_id": 5}, lambda s: s["microlocation_id"] == 5),
    ({"level": "Expert"}, lambda s: s["level"] == "Expert"),
    ({"language": "EN"}, lambda s: (s["language"] or "").lower() == "en"),
    (
        {"starts_after": "2027-05-04T10:00:00+02:00"},
        lambda s: s["starts_at"] is not None and s["starts_at"] >= "2027-05-04T08:00:00.000000Z",
    ),
    # The offset without its colon (ISO 8601's basic form): openapi-generator's Python client
    # formats date-time query parameters with strftime's %z.
    (
        {"starts_after": "2027-05-04T10:00:00.000000+0200"},
        lambda s: s["starts_at"] is not None and s["starts_at"] >= "2027-05-04T08:00:00.000000Z",
    ),
    (
        {"starts_before": "2027-05-04T09:00:00Z"},
        lambda s: s["starts_at"] is not None and s["starts_at"] < "2027-05-04T09:00:00.000000Z",
    ),
    (
        {"starts_after": "2027-05-04T00:00:00Z", "starts_before": "2027-05-05T00:00:00Z"},
        lambda s: s["starts_at"] is not None and s["starts_at"].startswith("2027-05-04"),
    ),
    ({"q": "keyset"}, lambda s: "keyset" in " ".join(filter(None, text_of(s))).lower()),
    ({"q": "50%"}, lambda s: "50%" in " ".join(filter(None, text_of(s)))),
    ({"q": "a_b"}, lambda s: "a_b" in " ".join(filter(None, text_of(s))).lower()),
    ({"q": "back\\slash"}, lambda s: "back\\slash" in " ".join(filter(None, text_of(s)))),
    (
        {"event_id": 1, "state": "accepted", "level": "Expert"},
        lambda s: (s["event_id"], s["state"], s["level"]) == (1, "accepted", "Expert"),
    ),
]


def text_of(session: dict[str, Any]) -> list[str | None]:
    return [session["title"], session["subtitle"], session["short_abstract"]]


async def create_varied(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = [
        {"event_id": 1, "state": "accepted", "level": "Expert", "language": "en"},
        {"event_id": 2, "state": "accepted", "track_id": 3, "title": "Keyset Pagination"},
        {"event_id": 2, "state": "pending", "session_type_id": 4, "subtitle": "Why KEYSET wins"},
        {"event_id": 1, "microlocation_id": 5, "short_abstract": "all about keysets"},
        {"event_id": 1, "level": "Beginner", "language": "En", "title": "50% off"},
        {"event_id": 3, "state": "accepted", "level": "Expert", "title": "500 errors"},
        {"event_id": 1, "title": "a_b testing", "starts_at": "2027-05-04T08:00:00Z"},
        {"event_id": 1, "title": "axb testing", "starts_at": "2027-05-04T07:59:59.999999Z"},
        {"event_id": 2, "subtitle": "back\\slash", "starts_at": "2027-05-03T23:00:00Z"},
        {"event_id": 2, "title": "backslash", "starts_at": "2027-05-05T00:00:00Z"},
        {"event_id": 1, "state": "accepted", "level": "Expert", "language": "de"},
    ]
    return [await create_session(client, **variant) for variant in variants]


@pytest.mark.parametrize(("params", "matches"), FILTER_CASES, ids=lambda v: str(v)[:60])
async def test_list_filters_return_exactly_the_matching_sessions(
    client: httpx.AsyncClient, params: dict[str, Any], matches: Any
) -> None:
    sessions = await create_varied(client)
    expected = [s["id"] for s in sessions if matches(s)]
    assert expected, "the case must match something"
    assert len(expected) < len(sessions), "the case must exclude something"
    seen, _ = await walk(client, params, 2)
    assert seen == expected


@pytest.mark.parametrize(
    ("stored", "asked"),
    [("İngilizce", "İngilizce"), ("İngilizce", "İNGİLİZCE"), ("ΕΛΛΗΝΙΚΆ", "ελληνικά")],
)
async def test_list_language_filter_ignores_case_beyond_ascii(
    client: httpx.AsyncClient, stored: str, asked: str
) -> None:
    # Python's lower() turns "İ" into "i" and a combining dot, PostgreSQL's into "i".
    session = await create_session(client, language=stored)
    await create_session(client, language="English")
    page = (await client.get("/sessions", params={"language": asked})).json()
    assert [item["id"] for item in page["items"]] == [session["id"]]


async def test_list_modified_since_compares_last_modified_at(client: httpx.AsyncClient) -> None:
    old, changed = await create_session(client), await create_session(client)
    patched = (await client.patch(f"/sessions/{changed['id']}", json={"title": "New"})).json()
    page = (
        await client.get("/sessions", params={"modified_since": patched["last_modified_at"]})
    ).json()
    assert [item["id"] for item in page["items"]] == [changed["id"]]
    page = (await client.get("/sessions", params={"modified_since": old["created_at"]})).json()
    assert [item["id"] for item in page["items"]] == [old["id"], changed["id"]]


async def test_list_creator_id_finds_a_users_sessions_that_the_caller_may_see(
    client: httpx.AsyncClient, client_as: ClientAs
) -> None:
    speaker, other = client_as("speaker-7"), client_as("speaker-8")
    draft, public = await create_session(speaker), await create_session(speaker)
    accepted = await client.patch(f"/sessions/{public['id']}", json={"state": "accepted"})
    assert accepted.status_code == 200, accepted.text
    theirs = await create_session(other)
    # A speaker's own, page by page; another user sees the public ones only; an admin all.
    assert (await walk(speaker, {"creator_id": "speaker-7"}, 1))[0] == [draft["id"], public["id"]]
    assert (await walk(other, {"creator_id": "speaker-7"}, 1))[0] == [public["id"]]
    assert (await walk(client, {"creator_id": "speaker-8"}, 1))[0] == [theirs["id"]]
    assert (await walk(speaker, {"creator_id": "nobody"}, 1))[0] == []


async def test_list_continues_a_cursor_that_an_earlier_release_issued(
    client: httpx.AsyncClient,
) -> None:
    # During a rolling deploy a client pages on with a replica of the next release: a filter
    # added since (creator_id) does not change the query a cursor without it is bound to.
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    sessions = [await create_session(client) for _ in range(3)]
    before_creator_id = {
        "sort": ["id"],
        **dict.fromkeys(["event_id", "track_id", "session_type_id", "microlocation_id"]),
        **dict.fromkeys(["level", "language", "starts_after", "starts_before"]),
        **dict.fromkeys(["modified_since", "q"]),
        "states": [],
    }
    cursor = TokenSigner(DEVELOPMENT_CURSOR_SECRET).sign(
        LIST_CURSOR,
        {
            "format": TOKEN_FORMAT,
            "query": query_fingerprint(before_creator_id),
            "after": [sessions[0]["id"]],
        },
    )
    response = await client.get("/sessions", params={"cursor": cursor})
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [s["id"] for s in sessions[1:]]


async def test_list_keeps_deleted_sessions_out_of_every_order(client: httpx.AsyncClient) -> None:
    sessions = await create_schedule(client)
    for session in sessions[::3]:
        assert (await client.delete(f"/sessions/{session['id']}")).status_code == 204
    remaining = [s for s in sessions if s not in sessions[::3]]
    for sort in (["-starts_at"], ["title"]):
        seen, _ = await walk(client, {"sort": ",".join(sort)}, 2)
        assert seen == expected_order(remaining, sort)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"sort": "speaker"}, "sort"),
        ({"sort": "title,-speaker"}, "sort"),
        ({"sort": "title,-title"}, "sort"),
        ({"sort": "--title"}, "sort"),
        ({"sort": ""}, "sort"),
        ({"state": "published"}, "state"),
        ({"level": "Guru"}, "level"),
        ({"track_id": 0}, "track_id"),
        ({"session_type_id": 2**31}, "session_type_id"),
        ({"microlocation_id": "x"}, "microlocation_id"),
        # Integers as the spec has them: pydantic's lax mode read each of these as 10 (or 1).
        ({"limit": "1_0"}, "limit"),
        ({"limit": " 10 "}, "limit"),
        ({"event_id": "+1"}, "event_id"),
        ({"track_id": "1.5"}, "track_id"),
        ({"track_id": "1."}, "track_id"),
        ({"starts_after": "yesterday"}, "starts_after"),
        ({"starts_before": "2027-05-04T10:00:00"}, "starts_before"),
        ({"modified_since": "2027-13-01T00:00:00Z"}, "modified_since"),
        ({"starts_after": "0001-01-01T00:00:00+01:00"}, "starts_after"),
        ({"q": ""}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x00b"}, "q"),
        ({"language": "e\x00n"}, "language"),
        ({"creator_id": ""}, "creator_id"),
        ({"creator_id": "x" * 256}, "creator_id"),
        ({"creator_id": "speaker\x007"}, "creator_id"),
    ],
)
async def test_list_bad_filter_or_sort_is_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], parameter: str
) -> None:
    body = assert_problem(await client.get("/sessions", params=params), 422)
    assert ["query", parameter] in [error["location"][:2] for error in body["errors"]]


async def test_list_integers_with_a_zero_fraction_are_integers(
    client: httpx.AsyncClient,
) -> None:
    # JSON Schema's integer is a number whose fraction is zero: a client (or schemathesis) may
    # send 2 as "2.0", as it may in a body.
    one = await create_session(client, event_id=2)
    await create_session(client, event_id=2)
    response = await client.get("/sessions", params={"event_id": "2.0", "limit": "1.00"})
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [one["id"]]
    changes = await client.get("/sessions/changes", params={"event_id": "2.0", "limit": "1.0"})
    assert changes.status_code == 200, changes.text


def without_per_request_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.items() if k not in {"date", "x-request-id"}]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("never", "asked"),
    [
        # Anonymous callers see accepted and confirmed sessions only.
        ({"state": "draft"}, {"state": "accepted"}),
        (
            {"state": ["draft", "pending"], "event_id": 1, "q": "keyset", "limit": 1},
            {"state": ["accepted"], "event_id": 1, "q": "keyset", "limit": 1},
        ),
        # An empty range, for anyone.
        (
            {"starts_after": "2027-05-04T10:00:00Z", "starts_before": "2027-05-04T12:00:00+02:00"},
            {"starts_after": "2027-05-04T10:00:00Z", "starts_before": "2027-05-04T10:00:01Z"},
        ),
    ],
)
async def test_list_no_visible_session_can_match_answers_as_an_empty_page_from_the_database(
    client: httpx.AsyncClient,
    anonymous_client: httpx.AsyncClient,
    method: str,
    never: dict[str, Any],
    asked: dict[str, Any],
) -> None:
    # What `never` would find were it visible; `asked` goes to the database and finds nothing.
    for state in ("draft", "pending"):
        await create_session(client, state=state, title="keyset", starts_at="2027-05-04T10:00:00Z")
    answered = await anonymous_client.request(method, "/sessions", params=never)
    from_database = await anonymous_client.request(method, "/sessions", params=asked)
    assert answered.status_code == from_database.status_code == 200
    assert answered.content == from_database.content
    assert method == "HEAD" or answered.json() == {"items": [], "next_cursor": None}
    assert without_per_request_headers(answered) == without_per_request_headers(from_database)


async def test_list_no_visible_session_can_match_still_checks_the_cursor(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient
) -> None:
    cursor = await first_cursor(client, state="draft")
    # Issued to an admin, valid for the same query from anyone: no draft is on it for them.
    page = await anonymous_client.get("/sessions", params={"state": "draft", "cursor": cursor})
    assert page.json() == {"items": [], "next_cursor": None}
    response = await anonymous_client.get(
        "/sessions", params={"state": "draft", "cursor": tamper(cursor)}
    )
    assert assert_problem(response, 400)["parameter"] == "cursor"


async def first_cursor(client: httpx.AsyncClient, **params: Any) -> str:
    for n in range(3):
        await create_session(client, event_id=1, title=f"t{n}")
    cursor: str = (await client.get("/sessions", params=params | {"limit": 1})).json()[
        "next_cursor"
    ]
    assert cursor
    return cursor


@pytest.mark.parametrize(
    "other",
    [
        {"sort": "-title"},
        {"sort": "title,-id"},
        {"event_id": 2},
        {"state": "draft"},
        {"q": "t"},
        {"starts_after": "2027-01-01T00:00:00Z"},
        {},
    ],
)
async def test_list_cursor_used_with_other_parameters_is_400(
    client: httpx.AsyncClient, other: dict[str, Any]
) -> None:
    cursor = await first_cursor(client, event_id=1, sort="title")
    params: dict[str, Any] = {"event_id": 1, "sort": "title"}
    ok = await client.get("/sessions", params=params | {"cursor": cursor})
    assert ok.status_code == 200
    changed = params | other if other else {}
    body = assert_problem(await client.get("/sessions", params=changed | {"cursor": cursor}), 400)
    assert body["parameter"] == "cursor"


async def test_list_cursor_survives_a_change_of_limit(client: httpx.AsyncClient) -> None:
    cursor = await first_cursor(client, sort="-title")
    page = (await client.get("/sessions", params={"sort": "-title", "cursor": cursor})).json()
    assert [item["title"] for item in page["items"]] == ["t1", "t0"]


def tamper(token: str) -> str:
    payload, signature = token.split(".")
    flipped = "A" if payload[-2] != "A" else "B"
    return f"{payload[:-2]}{flipped}{payload[-1]}.{signature}"


async def test_list_tampered_or_foreign_cursor_is_400(client: httpx.AsyncClient) -> None:
    cursor = await first_cursor(client)
    forged_position = TokenSigner("another secret").sign(
        LIST_CURSOR, {"format": TOKEN_FORMAT, "after": [2]}
    )
    feed_token = (await client.get("/sessions/changes")).json()["next_token"]
    payload, signature = cursor.split(".")
    # Other spellings of the same bytes: characters base64 decoders skip, padding, and the
    # unused low bits of the last character (a 32-byte signature leaves two).
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    other_last = alphabet[alphabet.index(signature[-1]) ^ 1]
    respelled = [
        f"{payload[:5]}!!!{payload[5:]}.{signature}",
        f"{payload}==.{signature}",
        f"{payload}.{signature[:-1]}{other_last}",
    ]
    for bad in (
        tamper(cursor),
        payload,
        payload + ".",
        forged_position,
        feed_token,
        "é.é",
        *respelled,
    ):
        body = assert_problem(await client.get("/sessions", params={"cursor": bad}), 400)
        assert body["parameter"] == "cursor"
        assert "issued" in body["detail"]


@pytest.mark.parametrize(
    ("sort", "position"),
    [
        ("starts_at", ["0001-01-01T00:00:00+23:59", 1]),  # year 0 in UTC
        ("-starts_at", ["9999-12-31T23:59:59.999999-01:00", 1]),  # year 10000 in UTC
        ("title", ["a\x00b", 1]),
        ("id", [2**31]),
    ],
)
async def test_list_forged_cursor_with_a_value_no_column_holds_is_400(
    client: httpx.AsyncClient, sort: str, position: list[Any]
) -> None:
    # Signed with the secret, as anyone can where it is left at its public development default.
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    signer = TokenSigner(DEVELOPMENT_CURSOR_SECRET)
    genuine = signer.verify(LIST_CURSOR, await first_cursor(client, sort=sort))
    forged = signer.sign(LIST_CURSOR, genuine | {"after": position})
    response = await client.get("/sessions", params={"sort": sort, "cursor": forged})
    assert assert_problem(response, 400)["parameter"] == "cursor"


async def test_list_forged_cursor_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    # Signed with the (public) development secret, as the signer signs, but not JSON.
    payload = b"not json"
    signature = TokenSigner(DEVELOPMENT_CURSOR_SECRET)._signature(LIST_CURSOR, payload)
    forged = ".".join(base64.urlsafe_b64encode(part).decode() for part in (payload, signature))
    response = await client.get("/sessions", params={"cursor": forged})
    assert assert_problem(response, 400)["parameter"] == "cursor"


async def test_list_cursor_of_an_older_format_is_400(client: httpx.AsyncClient) -> None:
    from service.settings import DEVELOPMENT_CURSOR_SECRET

    stale = TokenSigner(DEVELOPMENT_CURSOR_SECRET).sign(LIST_CURSOR, {"after": 1})
    body = assert_problem(await client.get("/sessions", params={"cursor": stale}), 400)
    assert body["parameter"] == "cursor"
    assert "older version" in body["detail"]


async def test_list_statement_is_compiled_once_per_shape_whatever_the_values() -> None:
    # The list's SQL depends on which filters are set, never on their values: one compiled
    # statement serves them all, and another shape gets another statement.
    def query(filters: SessionFilter, after: list[Any] | None = None) -> Any:
        statement, _ = list_query(
            filters,
            parse_sort(["starts_at"]),
            after=after,
            limit=20,
            visible=Visibility(everything=True),
        )
        return statement

    assert query(SessionFilter(event_id=1)) is query(SessionFilter(event_id=2))
    assert query(SessionFilter(event_id=1)) is not query(SessionFilter(track_id=1))
    assert query(SessionFilter(event_id=1), [datetime.now(UTC), 5]) is not query(
        SessionFilter(event_id=1), [None, 5]
    )


@pytest.mark.parametrize(
    ("event_id", "may_match"), [(None, True), (3, True), (4, False)], ids=["any", "its", "other"]
)
def test_a_draft_filter_may_match_for_an_organiser_of_the_event_alone(
    event_id: int | None, may_match: bool
) -> None:
    # Visibility through organised events alone (no creator_id, which every signed-in caller
    # has today): the list statement would find the event's drafts, so the page is not empty.
    organiser = Visibility(everything=False, event_ids=frozenset({3}))
    drafts = SessionFilter(event_id=event_id, states=("draft",))
    assert drafts.may_match(organiser) is may_match


def test_every_list_parameter_is_a_filter_with_a_condition() -> None:
    # A filter is named in three places: one left out of another would be silently ignored.
    filters = {field.name for field in dataclasses.fields(SessionFilter)}
    assert filters == set(_FILTERS)
    every = ListParameters(
        event_id=1,
        state=["accepted"],
        track_id=2,
        session_type_id=3,
        microlocation_id=4,
        level="Beginner",
        creator_id="speaker-7",
        language="en",
        starts_after=datetime(2026, 1, 1, tzinfo=UTC),
        starts_before=datetime(2026, 1, 2, tzinfo=UTC),
        modified_since=datetime(2026, 1, 3, tzinfo=UTC),
        q="async",
    )
    assert every.model_fields_set | {"sort", "limit", "cursor"} == set(ListParameters.model_fields)
    assert set(every.session_filter().parameters()) == filters


EVERYTHING = Visibility(everything=True)
ANONYMOUS = Visibility(everything=False)


@pytest.mark.parametrize(
    ("filters", "visible", "reads_the_table"),
    [
        (SessionFilter(), EVERYTHING, False),
        (SessionFilter(event_id=1), EVERYTHING, False),
        (SessionFilter(event_id=1), ANONYMOUS, False),
        (SessionFilter(event_id=1, track_id=2, states=("accepted",)), ANONYMOUS, False),
        (SessionFilter(q="go"), EVERYTHING, True),
        (SessionFilter(event_id=1, q="go"), EVERYTHING, True),
        (SessionFilter(track_id=2), EVERYTHING, True),
        (SessionFilter(states=("accepted",)), EVERYTHING, True),
        (SessionFilter(modified_since=datetime(2026, 1, 1, tzinfo=UTC)), EVERYTHING, True),
        # The visibility of a caller who may not see everything is a filter too.
        (SessionFilter(), ANONYMOUS, True),
        (SessionFilter(), Visibility(everything=False, creator_id="7"), True),
        # One user's sessions: their index bounds them, as event_id's does (a speaker's own).
        (SessionFilter(creator_id="7"), Visibility(everything=False, creator_id="7"), False),
        (SessionFilter(creator_id="7", language="en"), ANONYMOUS, False),
        (SessionFilter(creator_id="7", q="go"), EVERYTHING, True),
    ],
)
def test_a_list_without_event_id_may_read_the_table_unless_an_admins_unfiltered_one(
    filters: SessionFilter, visible: Visibility, reads_the_table: bool
) -> None:
    # Such a list waits among searches (ConnectionLine.search_turn): no index serves its
    # filters on their own, and one that matches few sessions reads every row.
    assert filters.may_read_the_table(visible) is reads_the_table
