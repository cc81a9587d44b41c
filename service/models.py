from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    cast,
    false,
    func,
    literal_column,
    or_,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from service.db import Base

Level = Literal["Beginner", "Intermediate", "Advanced", "Expert"]
State = Literal["draft", "pending", "accepted", "confirmed", "rejected", "canceled", "withdrawn"]
LEVELS: tuple[str, ...] = get_args(Level)
STATES: tuple[str, ...] = get_args(State)
# What the public sees (service.policy).
PUBLIC_STATES = frozenset({"accepted", "confirmed"})

TITLE_MAX = 255
SUBTITLE_MAX = 255
USER_ID_MAX = 255
IDEMPOTENCY_KEY_MAX = 255
TEXT_MAX = 10_000
LANGUAGE_MAX = 64
URL_MAX = 2048


# Sort keys of nullable columns: NULL becomes the infinity that sorts last in that direction, so
# "unscheduled last" holds both ways and each order is one index range (see migration 0002).
POSITIVE_INFINITY: ColumnElement[datetime] = literal_column("'infinity'::timestamptz")
NEGATIVE_INFINITY: ColumnElement[datetime] = literal_column("'-infinity'::timestamptz")


def _xid8_as_bigint(xid8: ColumnElement[Any]) -> ColumnElement[int]:
    # A transaction id of 64 bits with its epoch (it never wraps), as a bigint.
    return cast(cast(xid8, Text), BigInteger)


# The id of the writing transaction.
CURRENT_TXID = _xid8_as_bigint(func.pg_current_xact_id())
# Every transaction with a smaller id has ended: none of them can still commit a row.
SNAPSHOT_XMIN = _xid8_as_bigint(func.pg_snapshot_xmin(func.pg_current_snapshot()))
# The history transaction ids belong to: the cluster's system identifier and the current
# timeline (the first 8 hex digits of a WAL file's name), as "<identifier>.<timeline>".
CLUSTER_HISTORY: ColumnElement[str] = literal_column(
    "(SELECT system_identifier FROM pg_control_system())::text || '.' || "
    "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
)
# The database among the cluster's, which share its transaction ids: its oid (one dropped and
# created again under the same name has another).
DATABASE_OID: ColumnElement[int] = literal_column(
    "(SELECT oid FROM pg_database WHERE datname = current_database())::bigint"
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Versioned(Protocol):
    """What a session's validators (ETag, Last-Modified) are made of: a stored session, as reads
    (a row) and writes (the ORM's object) return it."""

    @property
    def id(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def last_modified_at(self) -> datetime: ...


class Session(Base):
    """A session (talk, workshop...) of a conference event, as in Open Event's `sessions`."""

    __tablename__ = "sessions"
    # An INSERT returns only the new id: the one other value the database computes, txid, is
    # never read, and fetching it back would defeat SQLAlchemy's cached INSERT.
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 (read once, by the mapper)
    __table_args__ = (
        CheckConstraint("btrim(title) <> ''", name="title_not_blank"),
        CheckConstraint(_one_of("level", LEVELS), name="level_known"),
        CheckConstraint(_one_of("state", STATES), name="state_known"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_sessions_event_id_id", "event_id", "id"),
        Index("ix_sessions_creator_id_id", "creator_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    # active_history: a move must know the event it leaves (the hook records the departure),
    # even where the value was expired before it was set.
    event_id: Mapped[int] = mapped_column(Integer, active_history=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    subtitle: Mapped[str | None] = mapped_column(String(SUBTITLE_MAX))
    short_abstract: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    long_abstract: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    comments: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    level: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_MAX))
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    track_id: Mapped[int | None] = mapped_column(Integer)
    session_type_id: Mapped[int | None] = mapped_column(Integer)
    microlocation_id: Mapped[int | None] = mapped_column(Integer)
    slides_url: Mapped[str | None] = mapped_column(Text)
    video_url: Mapped[str | None] = mapped_column(Text)
    audio_url: Mapped[str | None] = mapped_column(Text)
    signup_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="draft", server_default="draft")
    is_locked: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The token's `sub`: a string by RFC 7519 (identity providers use UUIDs, "auth0|…" and so on),
    # so it is stored as sent, not as an integer. NULL for sessions created before authentication.
    creator_id: Mapped[str | None] = mapped_column(String(USER_ID_MAX))
    # Stamped by the before_flush hook when the session first enters "pending".
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by the before_flush hook when the session is public (policy.PUBLIC_STATES), and never
    # unset: anyone may hold a copy of it from then on, so the change feed serves its later
    # changes to anyone, as tombstones where they may no longer see it. A session that has never
    # been public is a secret of those who may see it, its id and its changes included. A row
    # that other code writes (the previous release during a rolling deploy, SQL by hand) counts
    # as public once: a copy a client may hold is never left without its tombstone.
    ever_public: Mapped[bool] = mapped_column(default=False, server_default=true())
    # Stamped by the repository's before_flush hook, never by clients or column defaults.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The id of the last transaction that wrote the row: the change feed's position. Every INSERT
    # and UPDATE that SQLAlchemy issues sets it, from a flush or not (a column default, not the
    # hook's: an assigned SQL expression defeats the statement cache). SQL written by hand must
    # set it too (README, Syncing). Never loaded implicitly: reading it by accident would be I/O
    # under asyncio, so it raises instead.
    txid: Mapped[int] = mapped_column(
        BigInteger,
        default=CURRENT_TXID,
        onupdate=CURRENT_TXID,
        deferred=True,
        deferred_raiseload=True,
    )


def nulls_last(column: Any, *, descending: bool) -> ColumnElement[Any]:
    """A non-null sort expression that puts NULL last in the given direction."""
    return func.coalesce(column, NEGATIVE_INFINITY if descending else POSITIVE_INFINITY)


_LISTED = Session.deleted_at.is_(None)

# One index per sort order that a page may be asked for across all events, each partial (lists
# never show deleted rows) and ending in id, the tie-breaker; the plans that chose them are in
# alembic/versions/0002_listing_and_change_feed.py.
Index("ix_sessions_title_id", Session.title, Session.id, postgresql_where=_LISTED)
Index("ix_sessions_created_at_id", Session.created_at, Session.id, postgresql_where=_LISTED)
Index(
    "ix_sessions_last_modified_at_id",
    Session.last_modified_at,
    Session.id,
    postgresql_where=_LISTED,
)
for _name in ("starts_at", "ends_at"):
    for _descending in (False, True):
        Index(
            f"ix_sessions_{_name}_{'desc' if _descending else 'asc'}_nulls_last_id",
            nulls_last(getattr(Session, _name), descending=_descending),
            Session.id,
            postgresql_where=_LISTED,
        )
# The schedule of one event, the list asked for most.
Index(
    "ix_sessions_event_id_starts_at_asc_nulls_last_id",
    Session.event_id,
    nulls_last(Session.starts_at, descending=False),
    Session.id,
    postgresql_where=_LISTED,
)


# The change feed reads in (txid, id) order, tombstones included, of all events or of one; an
# anonymous caller's, only the sessions that are or have been public (migration 0008), in the
# condition's own words (service.repository's _VISIBLE), which the planner matches to these.
def has_been_public(columns: Any) -> ColumnElement[bool]:
    """Whether a session (of these columns: the table's, or a query's that has them) is or has
    been public: its states written out, not bound, for the planner to match the indexes'."""
    public: list[ColumnElement[str]] = [
        literal_column(f"'{state}'") for state in sorted(PUBLIC_STATES)
    ]
    return or_(columns.ever_public, columns.state.in_(public))


HAS_BEEN_PUBLIC = has_been_public(Session)
Index("ix_sessions_txid_id", Session.txid, Session.id)
Index("ix_sessions_event_id_txid_id", Session.event_id, Session.txid, Session.id)
Index("ix_sessions_txid_id_public", Session.txid, Session.id, postgresql_where=HAS_BEEN_PUBLIC)
Index(
    "ix_sessions_event_id_txid_id_public",
    Session.event_id,
    Session.txid,
    Session.id,
    postgresql_where=HAS_BEEN_PUBLIC,
)
# The GIN trigram indexes that serve q's ILIKEs: created by migration 0005 only where the server
# has pg_trgm, so not declared here, and left out of autogenerate's comparison (alembic/env.py).
TRIGRAM_INDEXES = frozenset(
    {"ix_sessions_title_trgm", "ix_sessions_subtitle_trgm", "ix_sessions_short_abstract_trgm"}
)


class SessionDeparture(Base):
    """The last time a session moved out of an event, recorded by the before_flush hook that
    stamps the move: that event's change feed serves it as a tombstone, where the session's own
    row, now in another event, no longer appears."""

    __tablename__ = "session_departures"
    __table_args__ = (
        # The feed of one event reads its departures in (txid, session_id) order.
        Index("ix_session_departures_event_id_txid_session_id", "event_id", "txid", "session_id"),
    )

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey(Session.id, ondelete="CASCADE"), primary_key=True
    )
    # The id of the transaction that moved it last, as sessions.txid, and the session's stamp and
    # version from that change: what its tombstone shows.
    txid: Mapped[int] = mapped_column(BigInteger)
    last_modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    # Whether the session had been public when it left (Session.ever_public then): if not, only
    # those who could see it in that event are served the tombstone. The previous release,
    # during a rolling deploy, records departures without it: they count as public.
    ever_public: Mapped[bool] = mapped_column(server_default=true())


class IdempotencyKey(Base):
    """A creation's Idempotency-Key and the answer it got, stored in the creation's transaction:
    a retry with the same key gets that answer again (service.idempotency)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    # Keys are the caller's own: the token's `sub` and the key together name one request.
    caller: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)  # SHA-256 of the request body
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[int] = mapped_column(SmallInteger)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    body: Mapped[bytes] = mapped_column(LargeBinary)
