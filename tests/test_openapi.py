"""The OpenAPI document: committed, valid, and written for client generators; the offline docs."""

import json
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import OpenAPIV31SpecValidator

from service.conditional import ENTITY_TAGS_PATTERN, MalformedHeader, parse_entity_tags
from service.edge import SECURITY_HEADERS
from service.errors import ForbiddenRule
from service.main import create_app
from service.openapi import REGENERATE, SPEC_PATH, render
from service.schemas import INPUT_YEARS, READ_ONLY_FIELDS
from tests.conftest import (
    ADMIN_HEADERS,
    PROBLEM_JSON,
    ClientAs,
    asgi_client,
    assert_problem,
    create_session,
    session_body,
    settings_for,
    started,
)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_the_statuses_every_operation_can_answer_are_documented(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        # A body over MAX_BODY_SIZE is refused whatever the method, and a request without a
        # valid Host whatever the path (service.edge.RequestHead).
        assert "413" in responses, (method, path)
        assert "400" in responses, (method, path)
        assert "the Host header is missing" in responses["400"]["description"], (method, path)
        # Only the workflow's tables need no database.
        assert ("503" in responses) == (path != "/sessions/states"), (method, path)
        if "415" in responses:
            headers = responses["415"]["headers"]
            assert "Accept-Encoding" in headers, (method, path)
            assert {"Accept", "Accept-Patch"} & headers.keys(), (method, path)


# What the operations' responses carry undeclared: Date, and what frames the body (Content-Type,
# Content-Length, Connection: close after a refused one), which OpenAPI leaves to HTTP; and the
# security headers, the same on every answer of the app (docs included) and meant for browsers
# (the README's Safe content).
UNDECLARED_HEADERS = frozenset(
    {"date", "content-type", "content-length", "connection"}
    | {name.decode() for name, _ in SECURITY_HEADERS}
)


def declared_headers(
    document: dict[str, Any], method: str, path: str, status: int
) -> dict[str, dict[str, Any]]:
    """The headers the spec declares for this response, by lowercase name, $refs resolved."""
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    components = document["components"].get("headers", {})
    return {
        name.lower(): components[header["$ref"].rpartition("/")[2]] if "$ref" in header else header
        for name, header in response.get("headers", {}).items()
    }


def assert_headers_as_declared(
    document: dict[str, Any], method: str, path: str, response: httpx.Response
) -> None:
    declared = declared_headers(document, method, path, response.status_code)
    sent = set(response.headers.keys())
    where = (method, path, response.status_code)
    assert sent - UNDECLARED_HEADERS <= declared.keys(), (where, sent - UNDECLARED_HEADERS)
    for name, header in declared.items():
        if header.get("required"):
            assert name in sent, (where, name)
        if name in sent and "pattern" in header["schema"]:
            assert re.search(header["schema"]["pattern"], response.headers[name]), (where, name)


async def test_every_header_a_response_carries_is_declared(
    document: dict[str, Any],
    client: httpx.AsyncClient,
    anonymous_client: httpx.AsyncClient,
    client_as: ClientAs,
    app_with: Callable[..., Any],
) -> None:
    # A status of each kind, on each operation that has one; the request id as a caller sends it.
    one = "/sessions/{session_id}"
    client.headers["X-Request-ID"] = "trace:7f3a"
    answers: list[tuple[str, str, httpx.Response]] = []

    async def ask(
        method: str, path: str, url: str, *, via: httpx.AsyncClient = client, **options: Any
    ) -> httpx.Response:
        response = await via.request(method, url, **options)
        answers.append((method, path, response))
        return response

    created = await ask("POST", "/sessions", "/sessions", json=session_body())
    url = created.headers["location"]
    await create_session(client)
    await ask("POST", "/sessions", "/sessions", via=anonymous_client, json=session_body())
    speaker = client_as("7")
    await ask("POST", "/sessions", "/sessions", via=speaker, json=session_body(state="accepted"))
    await ask("POST", "/sessions", "/sessions", content="x", headers={"content-type": "text/plain"})
    await ask("POST", "/sessions", "/sessions", content=b"x" * (1024 * 1024 + 1))
    await ask("POST", "/sessions", "/sessions", json={})
    await ask(
        "POST", "/sessions", "/sessions", json=session_body(), headers={"idempotency-key": ""}
    )
    for method in ("GET", "HEAD"):
        listed = await ask(method, "/sessions", "/sessions?limit=1")
        assert "link" in listed.headers
        await ask(method, "/sessions", "/sessions?cursor=forged")
        await ask(method, "/sessions", "/sessions?limit=0")
        await ask(method, "/sessions/changes", "/sessions/changes")
        await ask(method, "/sessions/changes", "/sessions/changes?since=forged")
        await ask(method, "/sessions/states", "/sessions/states")
        await ask(method, one, url)
        await ask(method, one, url, headers={"if-none-match": created.headers["etag"]})
        await ask(method, one, url, headers={"if-match": '"9"'})
        await ask(method, one, url, headers={"if-match": "malformed"})
        await ask(method, one, "/sessions/999999")
    await ask("GET", "/sessions", "/sessions", via=anonymous_client, headers={"authorization": "x"})
    await ask("PATCH", one, url, json={"title": "New"}, headers={"if-match": '"9"'})
    await ask("PATCH", one, url, content="x", headers={"content-type": "text/plain"})
    await ask("PATCH", one, url, json={"title": ""})
    await ask("PATCH", one, url, json={"title": "New"})
    await ask("PATCH", one, url, via=speaker, json={"title": "Mine"})
    async with asgi_client(app_with(require_preconditions=True), ADMIN_HEADERS) as strict:
        await ask("PATCH", one, url, via=strict, json={"title": "Newer"})
        await ask("DELETE", one, url, via=strict)
    await ask("DELETE", one, url)
    async with started(settings_for("postgresql://nobody@127.0.0.1:1/none")) as (_, unserved):
        await ask("GET", one, url, via=unserved)

    statuses = set()
    for method, path, response in answers:
        assert_headers_as_declared(document, method, path, response)
        statuses.add(response.status_code)
    assert statuses == {200, 201, 204, 304, 400, 401, 403, 404, 412, 413, 415, 422, 428, 503}
    assert created.headers["x-request-id"] == "trace:7f3a"


def test_committed_openapi_json_is_what_the_code_generates(document: dict[str, Any]) -> None:
    committed = SPEC_PATH.read_text() if SPEC_PATH.exists() else ""
    assert committed == render(document), (
        f"{SPEC_PATH.name} differs from the spec the code generates: run `{REGENERATE}` "
        "and commit the result"
    )


def test_spec_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    errors = [str(error) for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


async def test_served_spec_is_the_committed_one_byte_for_byte(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # ASCII: the patterns' U+FFFE and U+FFFF as escapes, which YAML-based loaders refused raw.
    assert response.content == SPEC_PATH.read_bytes()
    assert response.content.isascii()
    head = await client.head("/openapi.json")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == response.headers["content-length"]


async def test_the_spec_served_behind_a_prefix_names_it_as_its_server(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        served = (await client.get("/api/openapi.json")).json()
    assert served["servers"] == [{"url": "/api"}]
    assert {key: value for key, value in served.items() if key != "servers"} == json.loads(
        SPEC_PATH.read_text()
    )


def test_every_operation_has_a_readable_id_tags_summary_and_description(
    document: dict[str, Any],
) -> None:
    ids = []
    for method, path, operation in operations(document):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", operation["operationId"]), (method, path)
        assert operation["tags"], (method, path)
        assert operation["summary"], (method, path)
        assert operation["description"], (method, path)
        ids.append(operation["operationId"])
    expected = {"createSession", "listSessions", "getSession", "headSession", "updateSession"}
    assert expected | {"deleteSession"} <= set(ids)
    assert len(ids) == len(set(ids))


async def test_every_operation_declares_its_security(
    document: dict[str, Any], client: httpx.AsyncClient
) -> None:
    # Absent, it would mean the document's own requirements (Redocly's recommended rules make
    # that an error); an empty list says outright that no token is read.
    public = []
    for method, path, operation in operations(document):
        assert "security" in operation, (method, path)
        if operation["security"] == []:
            public.append((method, path))
    assert public == [("GET", "/sessions/states"), ("HEAD", "/sessions/states")]
    for method, path in public:
        response = await client.request(
            method, path, headers={"Authorization": "Bearer not-a-token"}
        )
        assert response.status_code == 200, (method, path)


def test_output_only_fields_are_read_only_in_responses_and_absent_from_requests(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    read = schemas["SessionRead"]
    for name in READ_ONLY_FIELDS:
        assert read["properties"][name]["readOnly"] is True
        assert name in read["required"]
        assert name not in schemas["SessionCreate"]["properties"]
        assert name not in schemas["SessionUpdate"]["properties"]
    assert not any(prop.get("readOnly") for prop in schemas["SessionCreate"]["properties"].values())


def test_every_field_has_a_description_and_session_fields_an_example(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    for model, schema in schemas.items():
        for name, prop in schema.get("properties", {}).items():
            assert prop.get("description"), (model, name)
    for model in ("SessionCreate", "SessionUpdate", "SessionRead"):
        for name, prop in schemas[model]["properties"].items():
            assert prop.get("examples"), (model, name)


def test_every_parameter_schema_and_response_header_has_a_description(
    document: dict[str, Any],
) -> None:
    # Generated clients turn them into docstrings: a parameter without one is a bare name.
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])
        for status, response in operation["responses"].items():
            for name, header in response.get("headers", {}).items():
                assert "$ref" in header or header.get("description"), (method, path, status, name)
    for name, header in document["components"]["headers"].items():
        assert header.get("description"), name
    for model, schema in document["components"]["schemas"].items():
        assert schema.get("description"), model


def test_problem_documents_its_extension_members(document: dict[str, Any]) -> None:
    # What clients act on: the parameter or header at fault (400), the rule that refused (403).
    properties = document["components"]["schemas"]["Problem"]["properties"]
    assert {"parameter", "header", "rule", "from_state", "to_state"} <= set(properties)
    assert set(properties["rule"]["enum"]) == set(get_args(ForbiddenRule))


@pytest.mark.parametrize("name", ["Problem", "ValidationProblem"])
def test_every_problem_member_that_is_always_sent_is_required(
    document: dict[str, Any], name: str
) -> None:
    # A generated client types an optional member as possibly absent: every error has a detail.
    required = document["components"]["schemas"][name]["required"]
    assert {"type", "title", "status", "detail"} <= set(required)


def test_both_transition_tables_are_one_named_schema(document: dict[str, Any]) -> None:
    # One type in a generated client, not StateTablesSpeaker and StateTablesOrganizer.
    properties = document["components"]["schemas"]["StateTables"]["properties"]
    refs = {properties[table]["$ref"] for table in ("speaker", "organizer")}
    assert refs == {"#/components/schemas/Transitions"}


def test_feed_items_are_one_named_one_of(document: dict[str, Any]) -> None:
    # An anonymous anyOf became "ItemsInner" in openapi-generator's clients, and in
    # typescript-fetch one interface merging both members (a change typed `deleted: true`);
    # a named oneOf is the union SessionChange | SessionTombstone, narrowed by `deleted`.
    schemas = document["components"]["schemas"]
    items = schemas["ChangesPage"]["properties"]["items"]["items"]
    assert items == {"$ref": "#/components/schemas/SessionFeedItem"}
    assert "anyOf" not in schemas["SessionFeedItem"]
    assert schemas["SessionFeedItem"]["oneOf"] == [
        {"$ref": "#/components/schemas/SessionChange"},
        {"$ref": "#/components/schemas/SessionTombstone"},
    ]
    # What makes it oneOf: no value of `deleted` is valid in both.
    assert schemas["SessionChange"]["properties"]["deleted"]["const"] is False
    assert schemas["SessionTombstone"]["properties"]["deleted"]["const"] is True


def test_no_constant_has_a_default(document: dict[str, Any]) -> None:
    # openapi-generator's Java client declares such a member an enum and its default a boolean,
    # and does not compile; a member that is always sent needs no default.
    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "const" in node and "default" in node:
                yield where
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{where}/{index}")

    assert list(walk(document, "#")) == []


def test_integer_bounds_are_integers(document: dict[str, Any]) -> None:
    def bounds(node: Any) -> list[object]:
        if isinstance(node, list):
            return [found for value in node for found in bounds(value)]
        if not isinstance(node, dict):
            return []
        own = [
            node[key]
            for key in ("minimum", "maximum")
            if node.get("type") == "integer" and key in node
        ]
        return own + [found for value in node.values() for found in bounds(value)]

    found = bounds(document)
    assert 2**31 - 1 in found  # the ids' bound, in bodies and queries
    assert all(type(bound) is int for bound in found), found


def test_timestamps_are_documented_as_date_times(document: dict[str, Any]) -> None:
    read = document["components"]["schemas"]["SessionRead"]["properties"]
    assert read["created_at"]["format"] == "date-time"
    assert read["last_modified_at"]["format"] == "date-time"
    assert {"type": "string", "format": "date-time"} in read["starts_at"]["anyOf"]


def test_error_responses_are_problem_json(document: dict[str, Any]) -> None:
    problem_refs = {"#/components/schemas/Problem", "#/components/schemas/ValidationProblem"}
    for method, path, operation in operations(document):
        responses = operation["responses"]
        # Header parameters are the handlers' to parse (a malformed one is a 400), not FastAPI's.
        validated = "requestBody" in operation or any(
            parameter["in"] != "header" for parameter in operation.get("parameters", [])
        )
        assert ("422" in responses) == validated, (method, path)
        if method == "HEAD":
            continue
        if validated:
            assert responses["422"]["content"][PROBLEM_JSON]["schema"]["$ref"].endswith(
                "/ValidationProblem"
            )
        for status, response in responses.items():
            if status[0] in "45":
                assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
                assert response["content"][PROBLEM_JSON]["schema"]["$ref"] in problem_refs
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_route_declaring_no_errors_still_documents_its_422_as_a_problem() -> None:
    app = create_app()

    @app.get("/extra/{number}")
    async def extra_route(number: int) -> int:
        return number

    operation = app.openapi()["paths"]["/extra/{number}"]["get"]
    assert operation["operationId"] == "extraRoute"
    assert operation["responses"]["422"]["content"] == {
        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
    }
    assert "ValidationProblem" in app.openapi()["components"]["schemas"]


def test_head_responses_have_no_body(document: dict[str, Any]) -> None:
    head = document["paths"]["/sessions/{session_id}"]["head"]
    assert "ETag" in head["responses"]["200"]["headers"]
    assert all("content" not in response for response in head["responses"].values())


def test_operations_on_one_session_document_404(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if "{session_id}" in path:
            assert "404" in operation["responses"], (method, path)


def test_create_documents_location_header_and_links(document: dict[str, Any]) -> None:
    created = document["paths"]["/sessions"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
    assert {link["operationId"] for link in created["links"].values()} == {
        "getSession",
        "updateSession",
        "deleteSession",
    }


def test_patch_body_is_documented_as_merge_patch(document: dict[str, Any]) -> None:
    body = document["paths"]["/sessions/{session_id}"]["patch"]["requestBody"]
    assert body["required"] is True
    assert body["content"] == {
        "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/SessionUpdate"}}
    }


@pytest.mark.parametrize("media_type", ["application/merge-patch+json", "application/json"])
async def test_patch_accepts_merge_patch_and_plain_json(
    client: httpx.AsyncClient, media_type: str
) -> None:
    created = (await client.post("/sessions", json={"event_id": 1, "title": "Old"})).json()
    response = await client.patch(
        f"/sessions/{created['id']}",
        content=b'{"title": "New"}',
        headers={"content-type": media_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["title"] == "New"


class AssetReferences(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_loads_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    parser = AssetReferences()
    parser.feed(response.text)
    assert parser.urls, "the page references no assets"
    for url in parser.urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", response.text, re.IGNORECASE)


@pytest.mark.parametrize("range_", ["garbage", "bytes=5-1", "bytes=999999999-", "bytes=0-9"])
async def test_docs_assets_are_served_whole_whatever_the_range(
    client: httpx.AsyncClient, range_: str
) -> None:
    # Starlette answered a malformed or unsatisfiable Range with a text/plain 400 or 416.
    url = "/static-offline-docs/swagger-ui.css"
    whole = await client.get(url)
    response = await client.get(url, headers={"Range": range_})
    assert response.status_code == 200
    assert response.content == whole.content
    assert "accept-ranges" not in response.headers  # nor offered


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_docs_assets_answer_other_methods_with_their_allow(
    client: httpx.AsyncClient, method: str
) -> None:
    # Allow was empty: the static files' mount had moved its prefix into the scope's root_path.
    response = await client.request(method, "/static-offline-docs/swagger-ui.css")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"])
async def test_docs_pages_answer_head_as_get(client: httpx.AsyncClient, page: str) -> None:
    get, head = await client.get(page), await client.head(page)
    assert get.status_code == head.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]


def test_optional_parameters_are_absent_rather_than_null(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (
                method,
                path,
                parameter["name"],
            )


def test_parameters_of_a_named_schema_are_a_bare_reference(document: dict[str, Any]) -> None:
    # openapi-generator's Python client types a $ref with sibling keywords as Any: `level`
    # took any value instead of an AudienceLevel.
    found = []
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            for schema in (parameter["schema"], parameter["schema"].get("items", {})):
                if "$ref" in schema:
                    found.append(parameter["name"])
                    assert set(schema) == {"$ref"}, (method, path, parameter["name"])
    assert {"level", "state"} <= set(found)


@pytest.mark.parametrize("name", ["q", "language"])
def test_free_text_list_parameters_document_that_nul_is_refused(
    document: dict[str, Any], name: str
) -> None:
    # The service answers 422 to a NUL (PostgreSQL text cannot hold one): a client generated
    # from the spec, or a fuzzer, must be able to know that from the schema.
    parameters = document["paths"]["/sessions"]["get"]["parameters"]
    [schema] = [parameter["schema"] for parameter in parameters if parameter["name"] == name]
    assert re.search(schema["pattern"], "en") is not None
    assert re.search(schema["pattern"], "e\x00n") is None


@pytest.mark.parametrize("field", ["title", "subtitle", "language", "long_abstract"])
def test_stored_texts_document_that_control_characters_are_refused(
    document: dict[str, Any], field: str
) -> None:
    schema = document["components"]["schemas"]["SessionCreate"]["properties"][field]
    pattern = next(option for option in schema.get("anyOf", [schema]) if "pattern" in option)
    assert re.search(pattern["pattern"], "a\tb\r\nc") is not None
    for refused in "\x00\x01\x1b\x1f\ufffe\uffff":
        assert re.search(pattern["pattern"], f"a{refused}b") is None


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [pattern for value in node.values() for pattern in _patterns(value)]
    if isinstance(node, list):
        return [pattern for value in node for pattern in _patterns(value)]
    return []


def test_patterns_hold_no_control_characters(document: dict[str, Any]) -> None:
    # Generators copy a pattern into source code (openapi-generator's python and go clients): a
    # NUL there is a syntax error, and the whole client fails to import. Escapes (\x00) say
    # the same to every regex dialect. But not for U+2028 and U+2029, which end a line in a
    # JavaScript regex literal: @hey-api/openapi-ts undoes \u escapes as it prints one.
    patterns = _patterns(document)
    assert len(patterns) > 10
    for pattern in patterns:
        assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]|\\u202[89]", pattern), pattern


def test_input_date_times_document_their_years(document: dict[str, Any]) -> None:
    parameters = document["paths"]["/sessions"]["get"]["parameters"]
    [schema] = [
        parameter["schema"] for parameter in parameters if parameter["name"] == "starts_after"
    ]
    for year in (1, 1899, 1900, 2026, 2999, 3000, 9999):
        value = f"{year:04}-01-01T00:00:00Z"
        assert (re.search(schema["pattern"], value) is not None) == (year in INPUT_YEARS), value


WELL_FORMED = ["", "*", " * ", '"1"', 'W/"1"', '"1", "2"', ',"1",', '"1",,"2"', '\t"1"\t']
MALFORMED = ['"1" "2"', '"1"x', "null", "**", '"1', 'w/"1"', '"a b"', '* ,"1"']


@pytest.mark.parametrize("value", [*WELL_FORMED, *MALFORMED])
def test_entity_tags_pattern_accepts_what_the_parser_accepts(value: str) -> None:
    try:
        parse_entity_tags(value, "If-Match")
        parsed = True
    except MalformedHeader:
        parsed = False
    assert (re.search(ENTITY_TAGS_PATTERN, value) is not None) == parsed


def test_head_operations_say_they_answer_what_get_would_without_a_body(
    document: dict[str, Any],
) -> None:
    # Not GET's description alone ("List the sessions…"), which a generated client's method
    # for HEAD would otherwise carry.
    heads = [(path, op) for method, path, op in operations(document) if method == "HEAD"]
    assert heads
    for path, head in heads:
        get = document["paths"][path]["get"]
        assert head["description"] == (
            f"The status and headers of GET {path}, without its body.\n\n{get['description']}"
        )
