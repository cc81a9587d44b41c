"""Request bodies: read only once the route accepts the caller and the body's format, and read as
I-JSON (RFC 7493): UTF-8 only, and no member named twice.

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
from fastapi.security import HTTPBearer

from service.errors import DuplicateMember, check_body_format


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
    """A route that takes a body reads it as I-JSON, after its authentication and
    check_body_format have accepted the request; one without a body is served as it is.

    FastAPI reads the body before it solves the route's dependencies: a caller the route refuses
    would otherwise send the whole body (after a 100 Continue, to a client that asked first) to
    be told 401, or what is wrong with the body they may not send.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        authentications = [
            dependency.call
            for dependency in self.dependant.dependencies
            if isinstance(dependency.call, HTTPBearer)
        ]

        async def read_once_accepted(request: Request) -> Response:
            for authenticate in authentications:
                await authenticate(request)
            check_body_format(request)
            return await handler(IJSONRequest(request.scope, request.receive))

        return read_once_accepted
