from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base

LEVELS = ("Beginner", "Intermediate", "Advanced", "Expert")
STATES = ("draft", "pending", "accepted", "confirmed", "rejected", "canceled", "withdrawn")

TITLE_MAX = 255
SUBTITLE_MAX = 255
TEXT_MAX = 10_000
LANGUAGE_MAX = 64
URL_MAX = 2048


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Session(Base):
    """A session (talk, workshop...) of a conference event, as in Open Event's `sessions`."""

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint("btrim(title) <> ''", name="title_not_blank"),
        CheckConstraint(_one_of("level", LEVELS), name="level_known"),
        CheckConstraint(_one_of("state", STATES), name="state_known"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_sessions_event_id_id", "event_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer)
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
    # Stamped by the repository's before_flush hook, never by clients or column defaults.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_modified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
