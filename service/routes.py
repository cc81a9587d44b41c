import base64
import binascii
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response, status

from service.db import Db
from service.errors import BadRequest, NotFound
from service.models import Session
from service.preconditions import (
    CREATE_RESPONSES,
    DELETE_RESPONSES,
    READ_RESPONSES,
    UPDATE_RESPONSES,
    ReadPreconditions,
    WritePreconditions,
    check_write,
    not_modified_or_none,
    set_validators,
)
from service.repository import SessionRepository
from service.schemas import INT4_MAX, SessionCreate, SessionPage, SessionRead, SessionUpdate

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionId = Annotated[int, Path(ge=1, le=INT4_MAX, description="The session's id.")]


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = data["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise BadRequest("The cursor is not one this service issued.", parameter="cursor") from None
    if type(after) is not int or not 0 <= after <= INT4_MAX:
        raise BadRequest("The cursor is not one this service issued.", parameter="cursor")
    return after


async def _get_or_404(repository: SessionRepository, session_id: int, **options: bool) -> Session:
    session = await repository.get(session_id, **options)
    if session is None:
        raise NotFound(f"There is no session {session_id}.")
    return session


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=SessionRead, responses=CREATE_RESPONSES
)
async def create_session(body: SessionCreate, db: Db, response: Response) -> Session:
    """Create a session; its id, timestamps and version are set by the server."""
    session = await SessionRepository(db).create(body.model_dump())
    response.headers["Location"] = f"{router.prefix}/{session.id}"
    set_validators(response, session)
    return session


@router.get("", response_model=SessionPage)
async def list_sessions(
    db: Db,
    event_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, object]:
    """List sessions ordered by id, a page at a time."""
    after_id = decode_cursor(cursor) if cursor else None
    # One row more than the page tells whether another page follows.
    rows = await SessionRepository(db).list(event_id=event_id, after_id=after_id, limit=limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
    return {"items": page, "next_cursor": next_cursor}


# FastAPI does not answer HEAD for a GET route: declared here, it answers what GET would,
# and the server sends no body.
@router.head("/{session_id}", response_model=SessionRead, responses=READ_RESPONSES)
@router.get("/{session_id}", response_model=SessionRead, responses=READ_RESPONSES)
async def get_session(
    session_id: SessionId,
    db: Db,
    preconditions: ReadPreconditions,
    request: Request,
    response: Response,
) -> Session | Response:
    """Get one session; If-None-Match or If-Modified-Since make it a cheap revalidation (304)."""
    session = await _get_or_404(SessionRepository(db), session_id)
    if not_modified := not_modified_or_none(preconditions, request.method, session):
        return not_modified
    set_validators(response, session)
    return session


@router.patch("/{session_id}", response_model=SessionRead, responses=UPDATE_RESPONSES)
async def update_session(
    session_id: SessionId,
    body: SessionUpdate,
    db: Db,
    preconditions: WritePreconditions,
    response: Response,
) -> Session:
    """Change a session with a JSON Merge Patch (RFC 7396); null clears a field."""
    repository = SessionRepository(db)
    session = await _get_or_404(repository, session_id, for_update=True)
    check_write(preconditions, "PATCH", session)
    session = await repository.update(session, body.model_dump())
    set_validators(response, session)
    return session


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=DELETE_RESPONSES)
async def delete_session(session_id: SessionId, db: Db, preconditions: WritePreconditions) -> None:
    """Delete a session; it is no longer visible through the API."""
    repository = SessionRepository(db)
    session = await _get_or_404(repository, session_id, for_update=True)
    check_write(preconditions, "DELETE", session)
    await repository.delete(session)
