"""sessions.ever_public: the change feed keeps sessions that were never public to those who see them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:10:00.000000

The change feed served every row to every caller, those a caller may not see as tombstones (an id,
a stamp and a version): anyone could follow the ids of an event's drafts and when each changed.
It now serves a tombstone only where the caller may hold a copy: of a session they may see, or
of one that has been public. Which sessions have been public is recorded from now on; for the
sessions already stored it is not known, and a session that may have been is counted as one:
every session that is public, and every session that has changed since its creation (version
above 1: a change may have made it public, and a later one hidden again). Only sessions never
changed in a state that is not public are known never to have been. Adding the column with a
default of true rewrites no row (PostgreSQL 11 and later); the UPDATE writes only the rows known
never to have been public, and changes neither their stamps nor their place in the feed (txid).

Replicas of the previous release, which run on the new schema during the rolling deploy, do not
set it: once every replica runs this release, count the sessions they made public as such
(`UPDATE sessions SET ever_public = true WHERE state IN ('accepted', 'confirmed') AND NOT
ever_public`; README, Syncing).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("ever_public", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.alter_column("sessions", "ever_public", server_default=sa.false())
    op.execute(
        "UPDATE sessions SET ever_public = false"
        " WHERE version = 1 AND state NOT IN ('accepted', 'confirmed')"
    )


def downgrade() -> None:
    op.drop_column("sessions", "ever_public")
