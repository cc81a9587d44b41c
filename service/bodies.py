"""JSON request bodies read as I-JSON (RFC 7493): UTF-8 only, and no member named twice.

RFC 8259 (4) leaves an object that names a member twice to the parser: Python's keeps the last
value, others keep the first. Read either way, one of the values a client sent would be dropped
without a word, and a gateway that checks bodies could read a body otherwise than the service
stores it. The same goes for UTF-16 and UTF-32, which Python's parser guesses from the bytes
where RFC 8259 (8.1) and I-JSON (2.1) ask for UTF-8. The service refuses both, with the rest of
malformed JSON (a 422); a leading byte order mark is ignored, as RFC 8259 lets a parser do.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{json.dumps(name)} is named twice in one object.")


def _members_named_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) < len(pairs):
        seen = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(name)
            seen.add(name)
    return members


class IJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            text = (await self.body()).decode("utf-8-sig")
            self._json = json.loads(text, object_pairs_hook=_members_named_once)
        return self._json


class IJSONRoute(APIRoute):
    """A route whose JSON body FastAPI reads as I-JSON; one without a body is served as it is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_as_ijson(request: Request) -> Response:
            return await handler(IJSONRequest(request.scope, request.receive))

        return read_as_ijson
