"""Indexes of the sessions that are or have been public: an anonymous change feed reads those

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:10:00.000000

An anonymous caller's change feed serves the sessions that are or have been public, in (txid, id)
order. It read that order in the indexes of every session and left out, one by one, those never
public: a speaker's drafts by the thousand made every anonymous poll read past them all (300,000
drafts: 40 to 70 ms a page, of one event or of all). Partial indexes of the sessions that are or
have been public serve it instead, whatever else the table holds; the feed's condition is
written as theirs (service.models.has_been_public), so that the planner matches the two. A
caller who also sees some drafts (a speaker, an organiser) reads the full indexes as before.

Built without CONCURRENTLY, as the migrations before: writes to sessions wait while they are
built (a read of the table each: seconds on a million rows).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HAS_BEEN_PUBLIC = sa.text("ever_public OR state IN ('accepted', 'confirmed')")


def upgrade() -> None:
    op.create_index(
        "ix_sessions_txid_id_public", "sessions", ["txid", "id"], postgresql_where=HAS_BEEN_PUBLIC
    )
    op.create_index(
        "ix_sessions_event_id_txid_id_public",
        "sessions",
        ["event_id", "txid", "id"],
        postgresql_where=HAS_BEEN_PUBLIC,
    )


def downgrade() -> None:
    """Indexes only: nothing is lost."""
    op.drop_index("ix_sessions_event_id_txid_id_public", table_name="sessions")
    op.drop_index("ix_sessions_txid_id_public", table_name="sessions")
