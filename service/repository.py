"""Queries and writes on sessions, and the one place that stamps last_modified_at (and version,
and submitted_at with the same stamp).

Writes go through the ORM unit of work, whose before_flush hook stamps what they change; the
repository flushes and never commits: the request's unit of work
(service.transactions.unit_of_work) owns the transaction. Reads need neither the hook nor an
identity map: they select columns (Core), and the read of one session, the list's pages and the
change feed run straight on the driver, their statements compiled once (per shape: list_query,
feed_query) (SessionReads).
"""

from collections import namedtuple
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Select,
    Subquery,
    Table,
    and_,
    any_,
    bindparam,
    event,
    false,
    func,
    null,
    or_,
    orm,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from service.db import (
    ASYNCPG_DIALECT,
    STAMPED,
    WRITING_TRANSACTION,
    DriverQuery,
    is_lock_not_available,
)
from service.errors import SCHEDULE_ERROR, SCHEDULE_MESSAGES, ChangeInProgress, InvalidInput
from service.models import (
    CLUSTER_HISTORY,
    CURRENT_TXID,
    DATABASE_OID,
    NEGATIVE_INFINITY,
    POSITIVE_INFINITY,
    PUBLIC_STATES,
    SNAPSHOT_XMIN,
    Session,
    SessionDeparture,
    Versioned,
    has_been_public,
    nulls_last,
)
from service.pagination import NULLABLE_SORT_KEYS, SortKey
from service.policy import SessionFacts, Visibility

ONE_TICK = timedelta(microseconds=1)  # timestamptz resolution


class StampingSession(orm.Session):
    """The ORM session class of this service: every flush stamps what it really changes."""


@event.listens_for(StampingSession, "before_flush")
def _stamp_changed_sessions(db: orm.Session, flush_context: Any, instances: Any) -> None:
    # before_flush, not after_update (an assignment there is never written) nor before_update
    # (it fires for objects whose attributes were set to the values they already had).
    # A row the flush writes because of these stamps gets its txid from the column itself.
    now = datetime.now(UTC)
    # What a commit that is never confirmed is checked against (service.transactions.unit_of_work).
    stamped = db.info.setdefault(STAMPED, [])
    for obj in db.new:
        if isinstance(obj, Session):
            obj.created_at = obj.last_modified_at = now
            obj.version = 1
            _stamp_submission(obj)
            obj.ever_public = obj.state in PUBLIC_STATES
            stamped.append(obj)
    for obj in db.dirty:
        if isinstance(obj, Session) and db.is_modified(obj, include_collections=False):
            # Strictly later than the stored stamp, even if this host's clock is behind.
            obj.last_modified_at = max(now, obj.last_modified_at + ONE_TICK)
            obj.version += 1
            # Public before this change: as recorded, or by the state it had (a session made
            # public by other code, as the previous release during a rolling deploy, was not
            # recorded as such).
            was_public = obj.ever_public or _before(obj, "state") in PUBLIC_STATES
            if _changed(obj, "state"):
                _stamp_submission(obj)
            if _changed(obj, "event_id"):
                _record_departure(db, obj, ever_public=was_public)
            if not obj.ever_public and (was_public or obj.state in PUBLIC_STATES):
                obj.ever_public = True  # and never unset: anyone may hold a copy from now on
            if obj.deleted_at is not None and _changed(obj, "deleted_at"):
                obj.deleted_at = obj.last_modified_at  # the stamp of the change that deleted it
            stamped.append(obj)


def _changed(session: Session, attribute: str) -> bool:
    return orm.attributes.get_history(session, attribute).has_changes()


def _before(session: Session, attribute: str) -> Any:
    """The attribute's value as loaded, before this flush's change of it."""
    history = orm.attributes.get_history(session, attribute)
    return history.deleted[0] if history.deleted else getattr(session, attribute)


# A session moved to another event: the feed of the event it left serves a tombstone for it, at
# this transaction's place in the feed (one per session and event: the last move out), until the
# session comes back, when its own row takes that place again. So a session is never in an
# event's feed twice.
_departures = cast(Table, SessionDeparture.__table__)
_insert_departure = postgresql.insert(_departures).values(
    event_id=bindparam("left"),
    session_id=bindparam("id"),
    txid=CURRENT_TXID,
    last_modified_at=bindparam("last_modified_at"),
    version=bindparam("version"),
    ever_public=bindparam("ever_public"),
)
_UPSERT_DEPARTURE = _insert_departure.on_conflict_do_update(
    index_elements=[_departures.c.event_id, _departures.c.session_id],
    set_={
        "txid": CURRENT_TXID,
        "last_modified_at": _insert_departure.excluded.last_modified_at,
        "version": _insert_departure.excluded.version,
        "ever_public": _insert_departure.excluded.ever_public,
    },
)
_DELETE_DEPARTURE_ON_RETURN = _departures.delete().where(
    _departures.c.event_id == bindparam("entered"), _departures.c.session_id == bindparam("id")
)


def _record_departure(db: orm.Session, session: Session, *, ever_public: bool) -> None:
    (left,) = list(orm.attributes.get_history(session, "event_id").deleted)
    values = {
        "id": session.id,
        "left": left,
        "entered": session.event_id,
        "last_modified_at": session.last_modified_at,
        "version": session.version,
        "ever_public": ever_public,
    }
    db.execute(_UPSERT_DEPARTURE, values)
    db.execute(_DELETE_DEPARTURE_ON_RETURN, values)


def _stamp_submission(session: Session) -> None:
    # submitted_at: the stamp of the change that first made the session pending; later round
    # trips through pending keep it. Sessions pending before the column existed stay unknown.
    if session.state == "pending" and session.submitted_at is None:
        session.submitted_at = session.last_modified_at


def make_sessionmaker(
    bind: AsyncEngine | AsyncConnection, **options: Any
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind, sync_session_class=StampingSession, expire_on_commit=False, **options
    )


# Check constraints the schemas cannot see on their own (the merged row of a PATCH that sets one
# end of the schedule is checked by the table, at the flush): the error, and what it says of each
# field the constraint reads, told of the first of them that the client sent.
_CONSTRAINT_ERRORS = {
    "ck_sessions_ends_after_start": (SCHEDULE_ERROR, SCHEDULE_MESSAGES),
}


_sessions = Session.__table__
# What reads return: the columns of the API's session, in table order (not deleted_at, null on
# every listed session, nor txid, the change feed's position, nor ever_public, which only decides
# what the feed serves).
_FEED_ONLY = {"deleted_at", "txid", "ever_public"}
_READ_COLUMNS = [column for column in _sessions.c if column.name not in _FEED_ONLY]
# A read session as a named tuple: attributes, like the ORM objects writes return.
SessionRow: Any = namedtuple(  # type: ignore[misc]  # its fields are the columns above
    "SessionRow", [column.name for column in _READ_COLUMNS]
)
# The change feed's rows: deleted sessions too (tombstones), the feed position, and whether the
# row stands for the session's departure from the event of the feed (a tombstone there too).
_FEED_COLUMNS = [
    *_READ_COLUMNS,
    _sessions.c.deleted_at,
    _sessions.c.txid,
    _sessions.c.ever_public,
    false().label("departed"),
]
FeedRow: Any = namedtuple(  # type: ignore[misc]
    "FeedRow", [column.name for column in _FEED_COLUMNS]
)


class StoredSession(SessionFacts, Versioned, Protocol):
    """A SessionRow as its users see it (the ORM's Session is one too); the rest of its
    columns are read by name (schemas.session_content)."""


class FeedSession(StoredSession, Protocol):
    """A FeedRow: a StoredSession, deleted or not, with its place in the feed."""

    @property
    def deleted_at(self) -> datetime | None: ...
    @property
    def txid(self) -> int: ...
    @property
    def departed(self) -> bool: ...


class _SearchQuery(DriverQuery):
    """A list statement with q, planned anew for each search's own text.

    Whether the trigram indexes (migration 0005) can serve a search depends on its text: one
    without a trigram ("go", "C#") can only be found by reading the table. A statement from
    asyncpg's cache is a server-side prepared statement, which PostgreSQL plans generically after
    five executions when their own plans looked dearer: a plan for a text it does not know, an
    index walk of the whole table, kept for every later search on that connection. The unnamed
    statement (name "") is parsed for each call and never reused: one round trip more.
    """

    async def fetch(self, conn: Any, **values: object) -> list[Any]:
        statement = await conn.prepare(self.sql, name="")
        records = await statement.fetch(*(values[name] for name in self.parameters))
        return [self.row._make(record.values()) for record in records]


_GET = DriverQuery(
    select(*_READ_COLUMNS).where(
        _sessions.c.id == bindparam("id"), _sessions.c.deleted_at.is_(None)
    ),
    SessionRow,
)


# A place in the change feed: (txid, id) of the last change served, in the feed's order.
FeedPosition = tuple[int, int]


class FeedHorizon(NamedTuple):
    """Where the feed stands, read in one snapshot."""

    # Every transaction with a smaller id has ended (SessionReads.changes).
    xmin: int
    # One more than the newest txid stored: a transaction id known to have reached the disk. A
    # transaction's id is on disk once it commits (synchronous_commit, PostgreSQL's default);
    # the id of one that aborted, or never wrote, may not be, and after a crash PostgreSQL hands
    # such ids out again. A position is never moved past this one: a change committed after a
    # crash under a reused id would sort behind it, never to be served.
    durable: int
    # The cluster and its history: its system identifier (another cluster, as after a dump and
    # restore, has another) and timeline (a new one after a point-in-time restore or a standby's
    # promotion). Transaction ids mean nothing outside them.
    cluster: str
    # The database among the cluster's (DATABASE_OID): they share its transaction ids, so a
    # position in one database's feed would skip the changes of another's.
    database: int

    def may_have_issued(self, position: FeedPosition, issued_in: Mapping[str, object]) -> bool:
        """Whether a token at `position`, naming the cluster and database it was `issued_in`,
        can be from this history and database. Transaction ids of another cluster, or of this
        one before a restore to an earlier point, or a position in another database's feed:
        its polls would skip every change below its position. Every token this history issued
        is at most its horizon then, which never moves back. (Tokens of earlier releases name
        no history, or no database: only the checks of what they name are left for them.)"""
        return (
            issued_in.get("cluster", self.cluster) == self.cluster
            and issued_in.get("database", self.database) == self.database
            and position[0] <= self.xmin
        )

    def next_position(self, served: FeedPosition, *, page_full: bool) -> FeedPosition:
        """Where the next poll starts, after a page that ends at `served`. After a full page,
        right there: more may follow. After a shorter one, every change below the horizon has
        been served: at the horizon, which skips the rows of other events or of older writes
        that this page had to pass; but never past a transaction id known to be on disk
        (`durable`)."""
        if page_full:
            return served
        return max((min(self.xmin, self.durable), 0), served)


class SessionReads:
    """Reads of live sessions, on a driver connection (service.transactions.read_connection)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def get(self, session_id: int) -> StoredSession | None:
        """A SessionRow, or None."""
        rows = await _GET.fetch(self.conn, id=session_id)
        return rows[0] if rows else None

    async def page(
        self,
        filters: "SessionFilter",
        sort: Sequence[SortKey],
        *,
        after: Sequence[Any] | None,
        limit: int,
        visible: Visibility,
    ) -> list[StoredSession]:
        """SessionRows that are not deleted and `visible`, in `sort` order, after the keyset
        position `after`: the values of the sort keys of the last row of the previous page
        (`keyset_position`)."""
        query, values = list_query(filters, sort, after=after, limit=limit, visible=visible)
        return await query.fetch(self.conn, **values)

    async def changes(
        self,
        *,
        event_id: int | None,
        after: FeedPosition | None,
        limit: int,
        visible: Visibility,
    ) -> tuple[Sequence[FeedSession], FeedHorizon]:
        """FeedRows (deleted sessions too; with event_id, the departures of sessions moved out
        of it as well) that are `visible` (policy.feed_visibility), written after the feed
        position `after` = (txid, id), oldest write first, and the horizon: every change by a
        transaction with an id below it is in the rows or before `after` (FeedHorizon).

        Why not `last_modified_at > :since`: a transaction stamps last_modified_at when it
        flushes but its rows become visible when it commits, later. A transaction that stamped
        10:00:00 and commits at 10:00:05 is invisible to a poll at 10:00:03, which already saw a
        10:00:02 change and so moves its watermark past 10:00:00 for good: the row is never
        served. Clocks of several service hosts make it worse. Transaction ids give a position
        that is safe instead: pg_snapshot_xmin() is the oldest transaction still running, so
        every transaction below it has committed or aborted, and any later write gets an id at
        or above it. Serving only rows with txid below the horizon, in (txid, id) order, means
        that nothing can appear later behind a position once it has been handed out. A write
        that is still open (or a long transaction anywhere on the server) holds the horizon
        back: the feed then lags, it never skips. (The page's statement reads a later snapshot
        than the horizon's: it sees every transaction below the horizon, all ended by then.)
        """
        horizon = FeedHorizon(*await self.conn.fetchrow(_HORIZON))
        query, values = feed_query(
            event_id=event_id, after=after, limit=limit, horizon=horizon.xmin, visible=visible
        )
        return await query.fetch(self.conn, **values), horizon


_HORIZON = (
    select(
        SNAPSHOT_XMIN,
        select(func.coalesce(func.max(_sessions.c.txid), 0) + 1).scalar_subquery(),
        CLUSTER_HISTORY,
        DATABASE_OID,
    )
    .compile(dialect=ASYNCPG_DIALECT, compile_kwargs={"literal_binds": True})
    .string
)


def feed_query(
    *,
    event_id: int | None,
    after: FeedPosition | None,
    limit: int,
    horizon: int,
    visible: Visibility,
) -> tuple[DriverQuery, dict[str, Any]]:
    """The change feed's statement for these arguments, and the values of its parameters."""
    values: dict[str, Any] = {"horizon": horizon, "limit": limit}
    values |= _visibility_parameters(visible)
    if event_id is not None:
        values["event_id"] = event_id
    if after is not None:
        values["after_txid"], values["after_id"] = after
    shape = (event_id is not None, after is not None, frozenset(values), visible.everything)
    return _compiled_feed_query(*shape), values


@lru_cache(maxsize=64)
def _compiled_feed_query(
    by_event: bool, after: bool, parameters: frozenset[str], everything: bool
) -> DriverQuery:
    if by_event:
        feed = _FEED_OF_EVENT
    elif "left_event_ids" in parameters:
        feed = _feed_with_departures(parameters)
    else:
        feed = _FEED
    query = select(*(feed.c[column.name] for column in _FEED_COLUMNS)).where(
        feed.c.txid < bindparam("horizon", type_=BigInteger)
    )
    if not everything:
        query = query.where(_visible(parameters, feed.c))
    if by_event:
        query = query.where(feed.c.feed_event_id == bindparam("event_id", type_=Integer))
    if after:
        position = tuple_(bindparam("after_txid", type_=BigInteger), bindparam("after_id"))
        query = query.where(tuple_(feed.c.txid, feed.c.id) > position)
    order = query.order_by(feed.c.txid, feed.c.id).limit(bindparam("limit"))
    return DriverQuery(order, FeedRow)


def _departure_column(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A departure as a column of the feed: a tombstone needs the id, last_modified_at and
    version, and who may be served it (policy.feed_visibility) whether the session had been
    public when it left, which the departure holds, and its creator, which the session holds;
    its other columns are nulls of their types (so that the union's parts match exactly). Its
    event_id is the event it left, whose organisers may hold it; its state is null, which is not
    public."""
    if column.name in _departures.c:
        own: ColumnElement[Any] = _departures.c[column.name]
        return own
    if column.name == "creator_id":
        creator: ColumnElement[Any] = _sessions.c.creator_id
        return creator
    value = {"id": _departures.c.session_id, "departed": true()}.get(column.name)
    return (null().cast(column.type) if value is None else value).label(column.name)


_FEED = select(*_FEED_COLUMNS).subquery("feed")
# The feed of one event: its sessions, and a tombstone for each session that left it (and is not
# back: the hook deletes the departure then), at the place of its departure. Filtered by
# feed_event_id outside the union, not inside each part: PostgreSQL then merges the two parts'
# index scans, each read in (txid, id) order, rather than reading all of the event's rows and
# sorting them.
_FEED_OF_EVENT = union_all(
    select(*_FEED_COLUMNS, _sessions.c.event_id.label("feed_event_id")),
    select(
        *(_departure_column(column) for column in _FEED_COLUMNS),
        _departures.c.event_id.label("feed_event_id"),
    ).join_from(_departures, _sessions, _sessions.c.id == _departures.c.session_id),
).subquery("feed")


def _feed_with_departures(parameters: frozenset[str]) -> Subquery:
    """The feed of every event for an organiser: the sessions, and a tombstone for each that
    left one of its events (left_event_ids) and that it may not see now, at its departure's
    place. The session's own row, in an event it does not organise, no longer reaches it (nor
    do its later changes: a draft's are no business of the event it left); one it may see now
    is served as itself, and its departure left out, which could sort after it."""
    seen_now = _visible(parameters, _sessions.c)
    left = (
        select(*(_departure_column(column) for column in _FEED_COLUMNS))
        .join_from(_departures, _sessions, _sessions.c.id == _departures.c.session_id)
        .where(
            _departures.c.event_id == any_(bindparam("left_event_ids")),
            seen_now.is_not(true()),  # not null: a session without a creator is not one's own
        )
    )
    return union_all(select(*_FEED_COLUMNS), left).subquery("feed")


def list_query(
    filters: "SessionFilter",
    sort: Sequence[SortKey],
    *,
    after: Sequence[Any] | None,
    limit: int,
    visible: Visibility,
) -> tuple[DriverQuery, dict[str, Any]]:
    """The list statement for these arguments, and the values of its parameters.

    Its SQL depends only on which filters are set, the visibility's parts, the sort and which
    keys of `after` are null, never on the values: compiled once for each such shape.
    """
    values = {"limit": limit} | filters.parameters() | _visibility_parameters(visible)
    if after is not None:
        values |= {f"after_{i}": value for i, value in enumerate(after) if value is not None}
    nulls_after = None if after is None else tuple(value is None for value in after)
    shape = (frozenset(values), visible.everything, tuple(sort), nulls_after)
    return _compiled_list_query(*shape), values


@lru_cache(maxsize=1024)
def _compiled_list_query(
    parameters: frozenset[str],
    everything: bool,
    sort: tuple[SortKey, ...],
    nulls_after: tuple[bool, ...] | None,
) -> DriverQuery:
    conditions: list[ColumnElement[bool]] = [Session.deleted_at.is_(None)]
    conditions += [_FILTERS[name](bindparam(name)) for name in _FILTERS if name in parameters]
    if not everything:
        conditions.append(_visible(parameters))
    expressions = [_sort_expression(key) for key in sort]
    if nulls_after is not None:
        conditions.append(_after(sort, expressions, nulls_after))
    order = (
        expr.desc() if key.descending else expr.asc()
        for key, expr in zip(sort, expressions, strict=True)
    )
    query = _SearchQuery if "q" in parameters else DriverQuery
    return query(
        select(*_READ_COLUMNS).where(*conditions).order_by(*order).limit(bindparam("limit")),
        SessionRow,
    )


@lru_cache(maxsize=8)
def _locking_query(parameters: frozenset[str], everything: bool) -> Select[Session, int]:
    """The locking read of a write, for one shape of a Visibility (policy.changeable): a row the
    caller may not change is neither locked nor waited for, so that how long a refusal takes
    does not tell that another change holds it, nor whether a session they may not see exists.

    With the id of the locking transaction, which its UPDATE writes into txid: what tells this
    write from another one that stored the same version and stamp
    (service.transactions.unit_of_work). Built once per shape: a statement object keeps its
    cache key, which SQLAlchemy would otherwise derive anew on every request.
    """
    conditions = [Session.id == bindparam("id"), Session.deleted_at.is_(None)]
    if not everything:
        conditions.append(_visible(parameters))
    return select(Session, CURRENT_TXID).where(*conditions).with_for_update()


def _visible(parameters: frozenset[str], columns: Any = _sessions.c) -> ColumnElement[bool]:
    """A Visibility's condition on these columns (the sessions table's, or a query's that has
    them), of the parts that it has (_visibility_parameters): false when it has none."""
    return or_(
        false(),
        *(_VISIBLE[name](columns, bindparam(name)) for name in _VISIBLE if name in parameters),
    )


_FIND = select(Session).where(Session.id == bindparam("id"), Session.deleted_at.is_(None))


class SessionRepository:
    """The writes, on the ORM session of a unit of work (service.transactions.unit_of_work).

    Sync code: a write's whole unit of work runs in one greenlet (`AsyncSession.run_sync`), its
    statements awaited by SQLAlchemy's asyncio layer underneath; see unit_of_work for why.
    """

    def __init__(self, db: orm.Session) -> None:
        self.db = db

    def lock(self, session_id: int, visible: Visibility) -> Session | None:
        """A session that is not deleted and `visible`, locked until the transaction ends (for
        a write)."""
        values = _visibility_parameters(visible)
        statement = _locking_query(frozenset(values), visible.everything)
        try:
            found = self.db.execute(statement, values | {"id": session_id}).one_or_none()
        except DBAPIError as exc:
            if is_lock_not_available(exc):  # not granted within DB_LOCK_TIMEOUT
                raise ChangeInProgress.of_session() from exc
            raise
        if found is None:
            return None
        session, self.db.info[WRITING_TRANSACTION] = found
        return session

    def find(self, session_id: int) -> Session | None:
        """A session that is not deleted, not locked: why a write may not lock it."""
        return self.db.execute(_FIND, {"id": session_id}).scalar_one_or_none()

    def create(self, values: Mapping[str, Any], *, creator_id: str | None = None) -> Session:
        session = Session(**values, creator_id=creator_id)
        self.db.add(session)
        self._flush(sent=values)
        return session

    @staticmethod
    def real_changes(session: Session, patch: Mapping[str, Any]) -> dict[str, Any]:
        """The members of a patch that differ from the stored values (sending one back is no
        edit)."""
        return {name: value for name, value in patch.items() if getattr(session, name) != value}

    def update(self, session: Session, changes: Mapping[str, Any]) -> Session:
        """Apply a merge patch; a patch that changes nothing issues no UPDATE."""
        for name, value in changes.items():
            setattr(session, name, value)
        self._flush(sent=changes)
        return session

    def delete(self, session: Session) -> None:
        """Soft delete: the row stays, with deleted_at set, invisible to reads.

        The before_flush hook sets deleted_at to the deleting change's own last_modified_at: the
        value set here only marks the session deleted, and is never stored.
        """
        session.deleted_at = session.last_modified_at
        self._flush()

    def _flush(self, *, sent: Collection[str] = ()) -> None:
        """Flush, a check constraint's violation told of the field sent (`sent`) that broke it."""
        try:
            self.db.flush()
        except IntegrityError as exc:
            kind, messages = _CONSTRAINT_ERRORS.get(_constraint_name(exc) or "", ("", {}))
            field = next((name for name in messages if name in sent), None)
            if field is None:
                raise  # the schemas let through what the table refuses: a bug, a 500
            raise InvalidInput(("body", field), messages[field], kind=kind) from exc


def _constraint_name(exc: IntegrityError) -> str | None:
    # The asyncpg error (with its constraint_name) is the cause of the DBAPI error SQLAlchemy wraps.
    driver_error = exc.orig.__cause__ if exc.orig is not None else None
    return getattr(driver_error, "constraint_name", None)


# Who may see what (policy.visibility): a session is visible by any of these that is set.
_VISIBLE: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "visible_states": lambda c, states: c.state == any_(states),
    "visible_creator_id": lambda c, creator_id: c.creator_id == creator_id,
    "visible_event_ids": lambda c, event_ids: c.event_id == any_(event_ids),
    # Written out, not compared with a parameter: the condition of the partial indexes of the
    # sessions that are or have been public, which serve an anonymous feed (its only one).
    "visible_ever_public": lambda c, _: has_been_public(c),
}


def _visibility_parameters(visible: Visibility) -> dict[str, Any]:
    if visible.everything:
        return {}
    values: dict[str, Any] = {}
    if visible.states:
        values["visible_states"] = sorted(visible.states)
    if visible.creator_id is not None:
        values["visible_creator_id"] = visible.creator_id
    if visible.event_ids:
        values["visible_event_ids"] = sorted(visible.event_ids)
    if visible.held:
        values["visible_ever_public"] = True
        if visible.states <= PUBLIC_STATES:  # the part above says it too
            values.pop("visible_states", None)
        if visible.event_ids:
            # Of the feed of every event (_feed_with_departures): the feed of one event has the
            # departures from it.
            values["left_event_ids"] = sorted(visible.event_ids)
    return values


@dataclass(frozen=True, kw_only=True)
class SessionFilter:
    """The list filters; every one that is set must hold."""

    event_id: int | None = None
    states: tuple[str, ...] = ()
    track_id: int | None = None
    session_type_id: int | None = None
    microlocation_id: int | None = None
    level: str | None = None
    creator_id: str | None = None
    language: str | None = None
    starts_after: datetime | None = None  # inclusive
    starts_before: datetime | None = None  # exclusive: consecutive ranges never overlap
    modified_since: datetime | None = None  # inclusive
    q: str | None = None

    def may_match(self, visible: Visibility) -> bool:
        """Whether a session could pass these filters and be `visible` (the list statement's
        conditions, see _VISIBLE): if not, the page is empty without asking the database."""
        if self.starts_after and self.starts_before and self.starts_after >= self.starts_before:
            return False
        if visible.everything:
            return True
        return (
            not self.states
            or not visible.states.isdisjoint(self.states)
            or visible.creator_id is not None
            or (bool(visible.event_ids) and self.event_id in (None, *visible.event_ids))
        )

    def may_read_the_table(self, visible: Visibility) -> bool:
        """Whether one page may have to read much of the table: a text search (q), or, without
        the event_id or creator_id whose index bounds the rest to one event's or one user's
        sessions, a filter that no index serves, or the visibility of a caller who may not see
        everything (a filter too): one that matches few sessions reads every row, 0.2 to 0.5 s
        on a million. Such a list waits for its turn among searches (ConnectionLine.search_turn)."""
        if self.q is not None:
            return True
        if self.event_id is not None or self.creator_id is not None:
            return False
        return not visible.everything or any(
            getattr(self, name) not in (None, ()) for name in _UNBOUNDED
        )

    def criteria(self) -> dict[str, Any]:
        """Every filter by name, as a list cursor is bound to them (GET /sessions). Those added
        after the first release only when set: a cursor an earlier release issued (during a
        rolling deploy) still continues its query."""
        criteria = asdict(self)
        for name in _LATER_FILTERS:
            if criteria[name] is None:
                del criteria[name]
        return criteria

    def parameters(self) -> dict[str, Any]:
        """The filters that are set, by name, with the values their conditions compare with."""
        values = {
            name: getattr(self, name) for name in _AS_GIVEN if getattr(self, name) is not None
        }
        if self.states:
            values["states"] = list(self.states)
        if self.q:
            values["q"] = "%" + _escape_like(self.q) + "%"
        return values


# The condition of each filter (a field of SessionFilter), given its bound parameter.
_FILTERS: dict[str, Callable[[Any], ColumnElement[bool]]] = {
    "event_id": lambda event_id: Session.event_id == event_id,
    "track_id": lambda track_id: Session.track_id == track_id,
    "session_type_id": lambda session_type_id: Session.session_type_id == session_type_id,
    "microlocation_id": lambda microlocation_id: Session.microlocation_id == microlocation_id,
    "level": lambda level: Session.level == level,
    "creator_id": lambda creator_id: Session.creator_id == creator_id,
    # Both sides lowered by PostgreSQL: Python's lower() differs on some letters ("İ").
    "language": lambda language: func.lower(Session.language) == func.lower(language),
    "states": lambda states: Session.state == any_(states),
    "starts_after": lambda instant: Session.starts_at >= instant,
    "starts_before": lambda instant: Session.starts_at < instant,
    "modified_since": lambda instant: Session.last_modified_at >= instant,
    "q": lambda pattern: or_(
        Session.title.ilike(pattern, escape="\\"),
        Session.subtitle.ilike(pattern, escape="\\"),
        Session.short_abstract.ilike(pattern, escape="\\"),
    ),
}


# The filters added after the first release (SessionFilter.criteria).
_LATER_FILTERS = ("creator_id",)
# The filters whose conditions compare with the value as given (SessionFilter.parameters).
_AS_GIVEN = tuple(name for name in _FILTERS if name not in ("states", "q"))
# The filters that no index serves on its own (SessionFilter.may_read_the_table).
_UNBOUNDED = tuple(name for name in _FILTERS if name not in ("event_id", "creator_id", "q"))


def _escape_like(text: str) -> str:
    """`text` matched literally by LIKE: its wildcards and the escape character escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sort_expression(key: SortKey) -> ColumnElement[Any]:
    # Nullable columns sort through a non-null expression (see models.nulls_last), matched by
    # an expression index per direction; the keyset predicate then needs no NULL cases.
    column = getattr(Session, key.name)
    if key.name in NULLABLE_SORT_KEYS:
        return nulls_last(column, descending=key.descending)
    return column  # type: ignore[no-any-return]


def keyset_position(session: object, sort: Sequence[SortKey]) -> list[Any]:
    """The values of the sort keys of a row: where the next page starts (None for NULL)."""
    return [getattr(session, key.name) for key in sort]


def _position_value(i: int, key: SortKey, null: bool) -> ColumnElement[Any]:
    """The bound parameter after_<i>, or the infinity that a null of a nullable key sorts as."""
    if key.name in NULLABLE_SORT_KEYS:
        if null:
            return NEGATIVE_INFINITY if key.descending else POSITIVE_INFINITY
        return bindparam(f"after_{i}", type_=DateTime(timezone=True))
    return bindparam(f"after_{i}", type_=getattr(Session, key.name).type)


def _after(
    sort: Sequence[SortKey], expressions: Sequence[ColumnElement[Any]], nulls: Sequence[bool]
) -> ColumnElement[bool]:
    """Rows strictly after the position after_0, after_1... in the order of `sort`; `nulls`
    tells which of its values are null."""
    values = [
        _position_value(i, key, null) for i, (key, null) in enumerate(zip(sort, nulls, strict=True))
    ]
    if len({key.descending for key in sort}) == 1:
        # One direction: a row comparison, which PostgreSQL reads as one index range.
        if sort[0].descending:
            return tuple_(*expressions) < tuple_(*values)
        return tuple_(*expressions) > tuple_(*values)
    # Mixed directions: after on the first key that differs, equal on all before it; the bound
    # on the first key alone lets an index on it start the range.
    alternatives = []
    for i, key in enumerate(sort):
        beyond = expressions[i] < values[i] if key.descending else expressions[i] > values[i]
        alternatives.append(
            and_(*(e == v for e, v in zip(expressions[:i], values[:i], strict=True)), beyond)
        )
    first = expressions[0] <= values[0] if sort[0].descending else expressions[0] >= values[0]
    return and_(first, or_(*alternatives))
