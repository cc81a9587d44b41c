"""sessions: creator_id and submitted_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 15:40:00.000000

Both columns are nullable and not backfilled: sessions created before authentication have no
known creator (only admins and organisers can reach them until one is set), and when an existing
pending session was submitted is not known either.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("creator_id", sa.String(length=255), nullable=True))
    op.add_column("sessions", sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_sessions_creator_id_id", "sessions", ["creator_id", "id"], unique=False)


def downgrade() -> None:
    """Loses who created each session and when it was submitted: upgraded again, both are null,
    and speakers no longer see or change the sessions they created (organisers and admins
    still do)."""
    op.drop_index("ix_sessions_creator_id_id", table_name="sessions")
    op.drop_column("sessions", "submitted_at")
    op.drop_column("sessions", "creator_id")
