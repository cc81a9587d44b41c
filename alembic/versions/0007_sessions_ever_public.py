"""sessions.ever_public: the change feed keeps sessions that were never public to those who see them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:10:00.000000

The change feed served every row to every caller, those a caller may not see as tombstones (an id,
a stamp and a version): anyone could follow the ids of an event's drafts and when each changed.
It now serves a tombstone only where the caller may hold a copy: of a session they could see, or
of one that has been public. Which sessions have been public is recorded from now on (and on a
departure, whether the session had been when it left); for what is already stored it is not
known, and a session that may have been counts as one: every session that is public, and every
session that has changed since its creation (version above 1: a change may have made it public,
and a later one hidden again), so every departure too. Only sessions never changed, in a state
that is not public, are known never to have been. Adding the columns with a default of true
rewrites no row (PostgreSQL 11 and later); the UPDATE writes only the rows known never to have
been public, and changes neither their stamps nor their place in the feed (txid).

The default stays true: rows that replicas of the previous release write during the rolling
deploy (they know nothing of the columns) count as public, so no copy a client may hold misses
its tombstone. A session such a replica makes public and hidden again before the deploy ends is
not recorded: README, Who may do what, has the statement that counts them once it has.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("sessions", "session_departures"):
        op.add_column(
            table, sa.Column("ever_public", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.execute(
        "UPDATE sessions SET ever_public = false"
        " WHERE version = 1 AND state NOT IN ('accepted', 'confirmed')"
    )


def downgrade() -> None:
    """Loses which sessions have been public: upgraded again, it is guessed as for the sessions
    stored before this migration (above), and the sessions of that guess that never were public
    reach the anonymous feed as tombstones again."""
    op.drop_column("session_departures", "ever_public")
    op.drop_column("sessions", "ever_public")
