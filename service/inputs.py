"""A request's input read strictly: its body and its query, each only once the route accepts the
caller, and neither read two ways.

A body is read only in a media type the operation takes, without a content coding, and in no
transfer coding but chunked (check_body_format); otherwise it is refused unread.

Bodies are read as I-JSON (RFC 7493): UTF-8 only, and no member named twice. RFC 8259 (4)
leaves an object that names a member twice to the parser: Python's keeps the last value, others
keep the first. Read either way, one of the values a client sent would be dropped without a
word, and a gateway that checks bodies could read a body otherwise than the service stores it.
The same goes for UTF-16 and UTF-32, which Python's parser guesses from the bytes where RFC 8259
(8.1) and I-JSON (2.1) ask for UTF-8. The service refuses both, with the rest of malformed JSON
(a 422); a leading byte order mark is ignored, as RFC 8259 lets a parser do.

The query is held to the same rules: a parameter that takes one value may be given once
(Starlette keeps the last of `limit=1&limit=2`, other frameworks the first), and a value must be
UTF-8 once percent-decoded (Starlette puts U+FFFD in place of what is not).
"""

import json
import types
from collections.abc import Callable, Coroutine, Iterator
from http import HTTPStatus
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import unquote_to_bytes

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from service.errors import (
    UNREADABLE_BODY,
    BadRequest,
    DuplicateMember,
    NotANumber,
    ServiceError,
    TooManyMembers,
    drop_tracebacks,
)

# The media types a request body may be sent as, by method (the service's only bodies are
# POST /sessions and PATCH /sessions/{id}). A body without Content-Type is none of them: FastAPI
# does not read it as JSON (a browser sends one cross-origin without a CORS preflight).
BODY_MEDIA_TYPES = {
    "POST": ("application/json",),
    "PATCH": ("application/merge-patch+json", "application/json"),
}


class UnsupportedMediaType(ServiceError):
    """415 (RFC 9110 15.5.16), naming what is accepted: for a media type, Accept-Patch for PATCH
    (RFC 5789 2.2) and Accept for the others (RFC 9110 12.5.1: in a response, what to send next
    time); for a content coding, Accept-Encoding (RFC 9110 12.5.3), which a 415 for any other
    reason must not carry."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    slug = "unsupported-media-type"

    @classmethod
    def media_type(cls, method: str) -> "UnsupportedMediaType":
        accepted = BODY_MEDIA_TYPES[method]
        return cls(
            f"The request body must be sent as {' or '.join(accepted)}.",
            headers={"Accept-Patch" if method == "PATCH" else "Accept": ", ".join(accepted)},
        )

    @classmethod
    def content_coding(cls) -> "UnsupportedMediaType":
        return cls(
            "The request body must be sent without a content coding (no Content-Encoding).",
            headers={"Accept-Encoding": "identity"},
        )


class UnsupportedTransferCoding(ServiceError):
    """501 (RFC 9112 6.1): a body in a transfer coding the server does not understand. The HTTP
    server decodes chunked and nothing else, and passes any other coding's bytes on as they came
    (uvicorn with httptools reads "gzip, chunked" as chunked)."""

    status = HTTPStatus.NOT_IMPLEMENTED
    slug = "unsupported-transfer-coding"


# What the HTTP server decodes (identity: no coding, as the obsolete RFC 2616 named it).
_TRANSFER_CODINGS_DECODED = frozenset({"", "chunked", "identity"})


def check_body_format(request: Request) -> None:
    """Refuse a body the operation does not accept: a transfer coding other than chunked, its
    Content-Type (given twice, or not a type the operation takes) or a Content-Encoding the
    service does not decode (a gzip body would fail as "not JSON", and a plain body declared gzip
    would pass as what it is not)."""
    accepted = BODY_MEDIA_TYPES[request.method]  # only routes that take a body call this
    if any(
        coding.partition(";")[0].strip().lower() not in _TRANSFER_CODINGS_DECODED
        for line in request.headers.getlist("transfer-encoding")
        for coding in line.split(",")
    ):
        raise UnsupportedTransferCoding(
            "The request body must be sent without a transfer coding other than chunked "
            "(Transfer-Encoding: chunked, or a Content-Length)."
        )
    if len(request.headers.getlist("content-type")) > 1:
        # A singleton field (RFC 9110 8.3): no telling which one a proxy on the way read.
        raise BadRequest("Send one Content-Type header.", header="Content-Type")
    codings = request.headers.getlist("content-encoding")
    if any(
        coding.strip().lower() not in ("", "identity")
        for line in codings
        for coding in line.split(",")
    ):
        raise UnsupportedMediaType.content_coding()
    content_type = request.headers.get("content-type")
    if content_type is None:
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        if has_body:
            raise UnsupportedMediaType.media_type(request.method)
    elif content_type.partition(";")[0].strip().lower() not in accepted:
        raise UnsupportedMediaType.media_type(request.method)


# More than any object of a body has (a session's fields), few enough that refusing each member
# the schema does not know (an error of a few hundred bytes each) costs little.
MAX_OBJECT_MEMBERS = 256


def _members_named_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_OBJECT_MEMBERS:
        raise TooManyMembers(MAX_OBJECT_MEMBERS)
    members = dict(pairs)
    if len(members) < len(pairs):
        seen = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(name)
            seen.add(name)
    return members


def _no_constant(name: str) -> None:
    raise NotANumber(name)


class IJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            text = (await self.body()).decode("utf-8-sig")
            self._json = json.loads(
                text, object_pairs_hook=_members_named_once, parse_constant=_no_constant
            )
        return self._json


def _takes_many(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes_many(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_takes_many(member) for member in get_args(annotation))
    return origin in (list, tuple, set, frozenset)


def _query_parameters(dependant: Dependant) -> Iterator[tuple[str, bool]]:
    """Each query parameter of a route and its dependencies: its name, whether it takes many."""
    for field in dependant.query_params:
        annotation = field.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                yield info.alias or name, _takes_many(info.annotation)
        else:
            yield field.alias, _takes_many(annotation)
    for dependency in dependant.dependencies:
        yield from _query_parameters(dependency)


def _repeated(query: QueryParams, singular: frozenset[str]) -> Iterator[dict[str, Any]]:
    """Parameters that take one value and were given more, as pydantic lists what it refuses."""
    if len(query) == len(query.multi_items()):
        return
    for name in sorted(singular):
        given = query.getlist(name)
        if len(given) > 1:
            yield {
                "type": "parameter_repeated",
                "loc": ("query", name),
                "msg": f"is given {len(given)} times; it takes one value",
                "input": given,
            }


def _not_utf8(query_string: bytes, names: frozenset[str]) -> Iterator[dict[str, Any]]:
    """Values of these parameters that are not UTF-8 once percent-decoded."""
    if b"%" not in query_string and query_string.isascii():
        return
    for pair in query_string.replace(b"+", b" ").split(b"&"):
        encoded_name, _, value = pair.partition(b"=")
        name = unquote_to_bytes(encoded_name).decode("utf-8", "replace")
        if name not in names:
            continue
        try:
            unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            yield {
                "type": "string_unicode",
                "loc": ("query", name),
                "msg": "Input should be a valid string, unable to parse raw data as a unicode "
                "string",
                "input": value.decode("latin-1"),  # as sent, percent-encoded
            }


class StrictInputRoute(APIRoute):
    """A route that reads its query and body strictly (above), after its authentication has
    accepted the caller, and a body only once check_body_format has accepted its format; one
    without either is served as it is.

    FastAPI reads the body before it solves the route's dependencies: a caller the route refuses
    would otherwise send the whole body (after a 100 Continue, to a client that asked first) to
    be told 401, or what is wrong with the body they may not send.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        parameters = dict(_query_parameters(self.dependant))
        queried = frozenset(parameters)
        singular = frozenset(name for name, takes_many in parameters.items() if not takes_many)
        if self.body_field is None and not queried:
            return handler
        takes_body = self.body_field is not None
        authentications = [
            dependency.call
            for dependency in self.dependant.dependencies
            if isinstance(dependency.call, HTTPBearer)
        ]

        async def read_once_accepted(request: Request) -> Response:
            for authenticate in authentications:
                await authenticate(request)
            errors = [
                *_repeated(request.query_params, singular),
                *_not_utf8(request.scope["query_string"], queried),
            ]
            if errors:
                raise RequestValidationError(errors)
            if not takes_body:
                return await handler(request)
            check_body_format(request)
            try:
                return await handler(IJSONRequest(request.scope, request.receive))
            except (RequestValidationError, HTTPException) as exc:
                if exc.__cause__ is not None and not isinstance(exc.__cause__, UNREADABLE_BODY):
                    # Reading the body failed otherwise than on the client's body (FastAPI
                    # answers any error there 400): a bug, to be logged, its traceback whole.
                    raise exc.__cause__ from None
                drop_tracebacks(exc)
                raise

        return read_once_accepted
