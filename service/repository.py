"""Queries and writes on sessions, and the one place that stamps last_modified_at.

The repository flushes and never commits: the request's unit of work (service.db.get_db)
owns the transaction.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, orm, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.errors import Conflict, InvalidInput
from service.models import Session

ONE_TICK = timedelta(microseconds=1)  # timestamptz resolution


class StampingSession(orm.Session):
    """The ORM session class of this service: every flush stamps what it really changes."""


@event.listens_for(StampingSession, "before_flush")
def _stamp_changed_sessions(db: orm.Session, flush_context: Any, instances: Any) -> None:
    # before_flush, not after_update (an assignment there is never written) nor before_update
    # (it fires for objects whose attributes were set to the values they already had).
    now = datetime.now(UTC)
    for obj in db.new:
        if isinstance(obj, Session):
            obj.created_at = obj.last_modified_at = now
            obj.version = 1
    for obj in db.dirty:
        if isinstance(obj, Session) and db.is_modified(obj, include_collections=False):
            # Strictly later than the stored stamp, even if this host's clock is behind.
            obj.last_modified_at = max(now, obj.last_modified_at + ONE_TICK)
            obj.version += 1


def make_sessionmaker(
    bind: AsyncEngine | AsyncConnection, **options: Any
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind, sync_session_class=StampingSession, expire_on_commit=False, **options
    )


# Check constraints the schemas cannot see on their own, mapped to the field a client sent.
_CONSTRAINT_FIELDS = {
    "ck_sessions_ends_after_start": ("ends_at", "must be later than starts_at"),
}


class SessionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def get(self, session_id: int, *, for_update: bool = False) -> Session | None:
        """A session that is not deleted; locked until the transaction ends if for_update."""
        query = select(Session).where(Session.id == session_id, Session.deleted_at.is_(None))
        if for_update:
            query = query.with_for_update()
        return (await self.db.execute(query)).scalar_one_or_none()

    async def list(
        self, *, event_id: int | None, after_id: int | None, limit: int
    ) -> Sequence[Session]:
        query = select(Session).where(Session.deleted_at.is_(None))
        if event_id is not None:
            query = query.where(Session.event_id == event_id)
        if after_id is not None:
            query = query.where(Session.id > after_id)
        query = query.order_by(Session.id).limit(limit)
        return (await self.db.scalars(query)).all()

    async def create(self, values: Mapping[str, Any]) -> Session:
        session = Session(**values)
        _check_schedule(session)
        self.db.add(session)
        await self._flush()
        return session

    async def update(self, session: Session, changes: Mapping[str, Any]) -> Session:
        """Apply a merge patch; a patch that changes nothing issues no UPDATE."""
        for name, value in changes.items():
            setattr(session, name, value)
        _check_schedule(session)
        await self._flush()
        return session

    async def delete(self, session: Session) -> None:
        """Soft delete: the row stays, with deleted_at set, invisible to reads."""
        session.deleted_at = datetime.now(UTC)
        await self._flush()

    async def _flush(self) -> None:
        try:
            await self.db.flush()
        except IntegrityError as exc:
            constraint = _constraint_name(exc)
            if constraint in _CONSTRAINT_FIELDS:
                field, message = _CONSTRAINT_FIELDS[constraint]
                raise InvalidInput(("body", field), message) from exc
            raise Conflict("The session conflicts with the stored data.") from exc


def _constraint_name(exc: IntegrityError) -> str | None:
    # The asyncpg error (with its constraint_name) is the cause of the DBAPI error SQLAlchemy wraps.
    driver_error = exc.orig.__cause__ if exc.orig is not None else None
    return getattr(driver_error, "constraint_name", None)


def _check_schedule(session: Session) -> None:
    # Checked on the merged row, so a PATCH that sets only one end is checked too.
    if session.starts_at and session.ends_at and session.ends_at <= session.starts_at:
        raise InvalidInput(("body", "ends_at"), "must be later than starts_at")
