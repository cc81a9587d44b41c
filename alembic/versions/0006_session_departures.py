"""session_departures: the feed of an event serves a tombstone for a session that left it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:30:00.000000

A new table only: sessions are untouched. The before_flush hook records a departure with each
change that moves a session to another event (one row per session and event left, the last such
move). Moves made before this migration, or by replicas of the previous release while the rolling
deploy runs (they know no departures), were not recorded and cannot be recovered: once every
replica runs the release, a client of one event's feed that may hold a session moved before then
rebuilds its copy (a feed without `since`) once (README, Syncing).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "session_departures",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("last_modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_departures_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "session_id", name=op.f("pk_session_departures")),
    )
    op.create_index(
        "ix_session_departures_event_id_txid_session_id",
        "session_departures",
        ["event_id", "txid", "session_id"],
        unique=False,
    )


def downgrade() -> None:
    """Loses the departures: upgraded again, the feed of an event no longer serves a tombstone for
    the sessions that left it before."""
    op.drop_index("ix_session_departures_event_id_txid_session_id", table_name="session_departures")
    op.drop_table("session_departures")
