"""create sessions

Revision ID: 0001
Revises:
Create Date: 2026-11-26 15:10:08.479896
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("subtitle", sa.String(length=255), nullable=True),
        sa.Column("short_abstract", sa.String(length=10000), nullable=True),
        sa.Column("long_abstract", sa.String(length=10000), nullable=True),
        sa.Column("comments", sa.String(length=10000), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("language", sa.String(length=64), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("track_id", sa.Integer(), nullable=True),
        sa.Column("session_type_id", sa.Integer(), nullable=True),
        sa.Column("microlocation_id", sa.Integer(), nullable=True),
        sa.Column("slides_url", sa.Text(), nullable=True),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column("audio_url", sa.Text(), nullable=True),
        sa.Column("signup_url", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="draft", nullable=False),
        sa.Column("is_locked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("btrim(title) <> ''", name=op.f("ck_sessions_title_not_blank")),
        sa.CheckConstraint(
            "level IN ('Beginner', 'Intermediate', 'Advanced', 'Expert')",
            name=op.f("ck_sessions_level_known"),
        ),
        sa.CheckConstraint(
            "state IN ('draft', 'pending', 'accepted', 'confirmed', 'rejected', 'canceled', 'withdrawn')",
            name=op.f("ck_sessions_state_known"),
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_sessions_ends_after_start")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_sessions_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index("ix_sessions_event_id_id", "sessions", ["event_id", "id"], unique=False)


def downgrade() -> None:
    """Every session, gone with the table."""
    op.drop_index("ix_sessions_event_id_id", table_name="sessions")
    op.drop_table("sessions")
