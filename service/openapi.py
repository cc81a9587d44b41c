"""The OpenAPI document: what it says beyond what FastAPI infers, and the committed openapi.json.

Client generators turn operation ids into method names and schema names into types, so both are
chosen here for every route; errors are documented as they are sent, problem+json.

`python -m service.openapi` writes openapi.json at the repository root; `--check` only compares.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import PROBLEM_JSON, Problem, ValidationProblem

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
REGENERATE = "python -m service.openapi"
REF_PREFIX = "#/components/schemas/"
HEADER_REF_PREFIX = "#/components/headers/"

# The descriptions of the problems that operations answer alike; the others are described where
# they are answered.
PROBLEMS = {
    409: "Another change of this session is in progress (type "
    "`urn:sessions-service:problem:change-in-progress`); nothing was changed: retry after "
    "`Retry-After` seconds.",
    413: "The body is larger than MAX_BODY_SIZE.",
    415: "The body's Content-Type or Content-Encoding is not one this operation accepts.",
    422: "The request is invalid; `errors` names each invalid field.",
    501: "The body was sent in a transfer coding other than chunked (Transfer-Encoding: gzip, "
    "chunked...), which the service does not decode (type "
    "`urn:sessions-service:problem:unsupported-transfer-coding`); nothing was changed.",
    503: "The database is unavailable, or the service is shutting down (type "
    "`urn:sessions-service:problem:shutting-down`): retry after `Retry-After` seconds. A 503 of "
    "type `urn:sessions-service:problem:query-canceled` (no `Retry-After`): the database stopped "
    "the request, which took too long; nothing was changed, and the same request may take as "
    "long again. A 503 of type `urn:sessions-service:problem:commit-unconfirmed` (no "
    "`Retry-After`) may have been saved: read before retrying. A 503 of type "
    "`urn:sessions-service:problem:signing-keys-unavailable`: the identity provider's signing "
    "keys (JWT_JWKS_URL) cannot be fetched now, so the bearer token cannot be verified; retry "
    "after `Retry-After` seconds.",
}
# A cause of 400 on every operation (service.edge.RequestHead), added to each one's own causes.
HOST_PROBLEM = "Host header is missing (HTTP/1.1 requires one), sent twice or not a host"
# Seconds to wait before retrying, as a 409 and a 503 say it (RFC 9110 10.2.3).
RETRY_AFTER = {
    409: "Seconds to wait before retrying.",
    503: "Seconds to wait before retrying; absent when a write may have been saved, or when the "
    "request itself took too long (query-canceled).",
}


Responses = dict[int | str, dict[str, Any]]


def operation_id(route: APIRoute) -> str:
    """The handler's name in camelCase (create_session: createSession), a method name in clients.

    A HEAD route that shares a GET handler takes head for its verb (get_session: headSession).
    """
    first, *rest = route.name.split("_")
    if route.methods == {"HEAD"}:
        first = "head"
    return first + "".join(word.capitalize() for word in rest)


def header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"} | schema}


def header_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    """An optional request header, for an operation's openapi_extra: read by the handler from
    request.headers rather than declared, which FastAPI would validate on every request."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "title": name} | schema,
    }


def problem_response(status: int, description: str | None = None, **extra: Any) -> Responses:
    """A problem+json response of an operation, for a route's `responses=`."""
    response: dict[str, Any] = {
        "model": ValidationProblem if status == 422 else Problem,
        "description": description or PROBLEMS[status],
    }
    if status in RETRY_AFTER:
        response["headers"] = {"Retry-After": header(RETRY_AFTER[status], pattern="^[0-9]+$")}
    return {status: response | extra}


def problems(*statuses: int) -> Responses:
    """The problem+json responses of an operation, with their default descriptions."""
    return merge_responses(*(problem_response(status) for status in statuses))


def merge_responses(*parts: Responses) -> Responses:
    """Responses declared in several places, merged status by status (headers too)."""
    merged: Responses = {}
    for part in parts:
        for status, response in part.items():
            into = merged.setdefault(status, {})
            for key, value in response.items():
                into[key] = into[key] | value if isinstance(into.get(key), dict) else value
    return merged


def is_under(path: str, prefix: str) -> bool:
    """Whether a URL path is `prefix` or below it (`/sessions/1` is under `/sessions`, not
    `/sessionsX`)."""
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class MiddlewareHeader:
    """A response header that a middleware adds to every answer under `path_prefix`, problems
    and 304s included: declared once in components.headers, referenced from each response."""

    name: str
    definition: dict[str, Any]
    path_prefix: str = ""

    def applies_to(self, path: str) -> bool:
        return is_under(path, self.path_prefix)


def install_openapi(app: FastAPI, middleware_headers: Sequence[MiddlewareHeader]) -> None:
    """Make app.openapi() return the document as the service really answers, and serve it at
    app.openapi_url byte for byte as committed (render)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _as_sent(document)
            _add_middleware_headers(document, middleware_headers)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    # FastAPI's own route sends the document through JSONResponse, which writes the patterns'
    # U+FFFE and U+FFFF as they are: JSON allows them, YAML does not, and spec tools that load
    # JSON as YAML (openapi-spec-validator, openapi-python-client given a file) refused it.
    rendered: list[bytes] = []

    async def serve_rendered(request: Request) -> Response:
        document = app.openapi()
        # Behind a prefix (uvicorn's --root-path), the server it is served from, as FastAPI's
        # route names it.
        root_path = request.scope.get("root_path", "").rstrip("/")
        servers = document.get("servers", [])
        if root_path and app.root_path_in_servers and {"url": root_path} not in servers:
            document = document | {"servers": [{"url": root_path}, *servers]}
            return Response(render(document).encode("ascii"), media_type="application/json")
        if not rendered:
            rendered.append(render(document).encode("ascii"))
        return Response(rendered[0], media_type="application/json")

    app.router.routes = [
        Route(app.openapi_url, serve_rendered, include_in_schema=False)
        if isinstance(route, Route) and route.path == app.openapi_url
        else route
        for route in app.router.routes
    ]


def _as_sent(document: dict[str, Any]) -> None:
    """Correct what FastAPI's spec says about the service's answers.

    FastAPI documents every response model as application/json, adds its own 422 shape to the
    operations that declare none, gives HEAD the body of GET, and makes optional parameters
    nullable. Errors go out as problem+json (Problem, or ValidationProblem for a 422), HEAD has
    no body, a parameter is sent or left out, never null (and a parameter of a named schema is
    its bare $ref), an operation without input cannot fail validation, and any may be a 400 for
    its Host header.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for path in document.get("paths", {}).values():
        for method, operation in path.items():
            for parameter in operation.get("parameters", []):
                _not_nullable(parameter["schema"])
                _bare_reference(parameter["schema"])
            if "requestBody" not in operation and all(
                parameter["in"] == "header" for parameter in operation.get("parameters", [])
            ):
                # Nothing to validate (the router declares 422 for all its operations): header
                # parameters are documented through openapi_extra and parsed by the handlers,
                # a malformed one a 400.
                operation.get("responses", {}).pop("422", None)
            _add_host_problem(operation.setdefault("responses", {}))
            for status, response in operation.get("responses", {}).items():
                if method == "head":
                    # The answer to HEAD has the headers of GET's, never a body.
                    response.pop("content", None)
                content = response.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
                    if content[PROBLEM_JSON]["schema"] == {
                        "$ref": REF_PREFIX + "HTTPValidationError"
                    }:
                        content[PROBLEM_JSON]["schema"] = {"$ref": REF_PREFIX + "ValidationProblem"}
                        response["description"] = PROBLEMS[422]
                        _add_schema(schemas, ValidationProblem)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    _integral_bounds(schemas)


def _add_host_problem(responses: dict[str, Any]) -> None:
    problem = {"schema": {"$ref": REF_PREFIX + "Problem"}}
    response = responses.setdefault("400", {"description": "", "content": {PROBLEM_JSON: problem}})
    causes = response["description"].rstrip(".")
    response["description"] = (
        f"{causes}; or, as on every operation, the {HOST_PROBLEM}."
        if causes
        else f"The {HOST_PROBLEM}."
    )


def _add_middleware_headers(
    document: dict[str, Any], middleware_headers: Sequence[MiddlewareHeader]
) -> None:
    components = document.setdefault("components", {}).setdefault("headers", {})
    for header in middleware_headers:
        components[header.name] = header.definition
    for path, item in document.get("paths", {}).items():
        added = {
            header.name: {"$ref": HEADER_REF_PREFIX + header.name}
            for header in middleware_headers
            if header.applies_to(path)
        }
        if not added:
            continue
        for operation in item.values():
            for response in operation.get("responses", {}).values():
                response["headers"] = response.get("headers", {}) | added


def _integral_bounds(node: Any) -> None:
    # FastAPI's OpenAPI models hold bounds as floats: an integer's 1 became 1.0, which typed
    # generators may read as a decimal constraint.
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if isinstance(node.get(bound), float) and node[bound].is_integer():
                    node[bound] = int(node[bound])
        for value in node.values():
            _integral_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integral_bounds(value)


def _not_nullable(schema: dict[str, Any]) -> None:
    # An optional parameter is left out, never sent as null: `int | None` in a handler is
    # `integer` in the document, and `int | Unset` (not `int | None | Unset`) in a client.
    variants = [variant for variant in schema.get("anyOf", []) if variant != {"type": "null"}]
    if len(variants) == 1 and len(schema["anyOf"]) == 2:
        del schema["anyOf"]
        schema.update(variants[0])


def _bare_reference(schema: dict[str, Any]) -> None:
    # A $ref beside other keywords (the title and description FastAPI copies into a parameter's
    # schema) is typed Any by openapi-generator's Python client, not the enum it names; the
    # parameter object carries the description.
    if "$ref" in schema:
        for keyword in ("title", "description"):
            schema.pop(keyword, None)


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}", mode="serialization")
    schemas.update(schema.pop("$defs", {}))
    schemas.setdefault(model.__name__, schema)


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys and fixed indentation, so that diffs show real changes;
    ASCII, so that no character is invisible in an editor or a diff (the text patterns' U+FFFE
    and U+FFFF are written "\\ufffe", "\\uffff")."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description="Write openapi.json.")
    parser.add_argument("--check", action="store_true", help="fail if openapi.json is stale")
    args = parser.parse_args(argv)
    # The one import of main outside the server: this module is also a command.
    from service.main import create_app

    text = render(create_app().openapi())
    if args.check:
        if not SPEC_PATH.exists() or SPEC_PATH.read_text() != text:
            print(f"{SPEC_PATH.name} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    SPEC_PATH.write_text(text)
    print(f"wrote {SPEC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
