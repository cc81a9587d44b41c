"""Query strings read strictly: a parameter that takes one value given once, values in UTF-8.

(Bodies read strictly, as I-JSON, are in test_routes.py.)
"""

import logging

import httpx
import pytest

from service.inputs import IJSONRequest
from tests.conftest import assert_problem, create_session, retained_by

REPEATED = [
    ("/sessions", (("limit", "1"), ("limit", "2")), "limit"),
    # The same value twice is refused too: the rule is about the query, not what it holds.
    ("/sessions", (("event_id", "1"), ("event_id", "1")), "event_id"),
    ("/sessions", (("q", "a"), ("state", "accepted"), ("q", "b")), "q"),
    ("/sessions", (("cursor", "x"), ("cursor", "y")), "cursor"),
    ("/sessions/changes", (("limit", "1"), ("limit", "2")), "limit"),
    ("/sessions/changes", (("since", "a"), ("since", "b")), "since"),
]


@pytest.mark.parametrize(("url", "params", "name"), REPEATED)
async def test_a_parameter_that_takes_one_value_given_twice_is_422_naming_it(
    client: httpx.AsyncClient, url: str, params: tuple[tuple[str, str], ...], name: str
) -> None:
    # Starlette keeps the last value, other frameworks (and a gateway in front) the first.
    problem = assert_problem(await client.get(url, params=params), 422)
    assert problem["errors"] == [
        {
            "location": ["query", name],
            "message": "is given 2 times; it takes one value",
            "type": "parameter_repeated",
        }
    ]


async def test_every_repeated_parameter_is_named(client: httpx.AsyncClient) -> None:
    params = (("limit", "1"), ("track_id", "2"), ("limit", "3"), ("track_id", "2"), ("q", "x"))
    problem = assert_problem(await client.get("/sessions", params=params), 422)
    assert [error["location"] for error in problem["errors"]] == [
        ["query", "limit"],
        ["query", "track_id"],
    ]


async def test_a_head_request_with_a_repeated_parameter_is_422_too(
    client: httpx.AsyncClient,
) -> None:
    response = await client.head("/sessions", params=[("limit", "1"), ("limit", "2")])
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_parameters_that_take_many_values_may_still_be_repeated(
    client: httpx.AsyncClient,
) -> None:
    draft = await create_session(client)
    params = [("state", "accepted"), ("state", draft["state"]), ("sort", "-id"), ("sort", "title")]
    response = await client.get("/sessions", params=params)
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [draft["id"]]


async def test_a_repeated_parameter_the_operation_does_not_take_is_ignored(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/sessions", params=[("utm", "a"), ("utm", "b")])
    assert response.status_code == 200, response.text


async def test_the_caller_is_authenticated_before_the_query_is_read(
    anonymous_client: httpx.AsyncClient,
) -> None:
    response = await anonymous_client.get(
        "/sessions?limit=1&limit=2", headers={"Authorization": "Bearer not-a-token"}
    )
    assert_problem(response, 401)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/sessions?q=caf%E9", "q"),  # latin-1, not UTF-8
        ("/sessions?state=accepted&state=%FF", "state"),
        ("/sessions?cursor=%C3", "cursor"),  # a sequence cut short
        ("/sessions/changes?since=%ED%A0%80", "since"),  # a surrogate, no character
    ],
)
async def test_a_value_that_is_not_utf8_is_422_naming_it(
    client: httpx.AsyncClient, url: str, name: str
) -> None:
    # Starlette would read it with U+FFFD in place of the bytes: not what the client sent.
    problem = assert_problem(await client.get(url), 422)
    assert [(error["location"], error["type"]) for error in problem["errors"]] == [
        (["query", name], "string_unicode")
    ]


async def test_utf8_values_are_read_whatever_the_other_parameters_hold(
    client: httpx.AsyncClient,
) -> None:
    session = await create_session(client, title="Café culture")
    # A parameter the operation does not take is not read, whatever its bytes.
    for url in (
        "/sessions?q=caf%C3%A9",
        "/sessions?q=caf%C3%A9+culture",
        "/sessions?q=Caf%C3%A9&utm=%E9",
    ):
        response = await client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert [item["id"] for item in response.json()["items"]] == [session["id"]], url


REFUSED_BODIES = [
    pytest.param(b'{"event_id": 1, "title": "' + b"x" * 900_000, id="malformed JSON"),
    pytest.param(b'{"event_id": 1, "title": "\xff' + b"x" * 900_000 + b'"}', id="not UTF-8"),
    pytest.param(
        b'{"event_id": 1, "title": "a", "title": "' + b"x" * 900_000 + b'"}',
        id="a member named twice",
    ),
    # Parsed, then refused by the schema: FastAPI raises that otherwise, and it held nothing
    # before either; kept so that it never comes to.
    pytest.param(b'{"event_id": 1, "title": "' + b"x" * 900_000 + b'"}', id="invalid field"),
]


@pytest.mark.parametrize("content", REFUSED_BODIES)
async def test_a_refused_body_is_freed_with_its_request(
    client: httpx.AsyncClient, content: bytes
) -> None:
    # The served process runs the cyclic garbage collector rarely (service.cli): a body that a
    # reference cycle held (an exception, its traceback, a frame holding the exception) would
    # stay until then, and a few hundred such requests would take gigabytes.
    async def refuse() -> None:
        response = await client.post(
            "/sessions", content=content, headers={"content-type": "application/json"}
        )
        assert_problem(response, 422)

    retained = await retained_by(refuse)
    assert retained < len(content), retained


async def test_a_bug_in_reading_a_body_is_a_logged_500_not_the_clients_422(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # FastAPI answers any error of reading a body 400, which the service tells as malformed
    # JSON: one that is not about the body the client sent must not hide so.
    async def broken(self: IJSONRequest) -> object:
        raise AttributeError("a bug")

    monkeypatch.setattr(IJSONRequest, "json", broken)
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        response = await client.post("/sessions", json={"event_id": 1, "title": "A"})
    assert_problem(response, 500)
    [logged] = [record for record in caplog.records if record.name == "service.errors"]
    assert logged.exc_info is not None
    assert logged.exc_info[0] is AttributeError
