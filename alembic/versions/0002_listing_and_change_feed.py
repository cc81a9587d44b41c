"""listing indexes and the change feed's txid

Adds `sessions.txid` (bigint, the id of the last transaction that wrote the row, from
pg_current_xact_id(); the change feed's position) and the indexes of the list and feed queries.

The indexes were chosen from EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL 15 with 1,000,000 rows
(1,000 events of 1,000 sessions, 10 % unscheduled, 2 % deleted), for a page of 21 rows deep in
the table (row ~900,000); "before" is with only the primary key and (event_id, id):

| query (deep page)                              | before                         | after                                     |
|------------------------------------------------|--------------------------------|-------------------------------------------|
| sort=starts_at (NULLs last), all events        | parallel seq scan + top-N, 357 ms | index scan ..._starts_at_asc_..., 0.35 ms |
| sort=-starts_at (NULLs last), all events       | parallel seq scan + top-N, 343 ms | backward scan ..._starts_at_desc_..., 0.34 ms |
| sort=title, all events                         | parallel seq scan + top-N, 304 ms | index only scan ix_sessions_title_id, 0.11 ms |
| sort=-last_modified_at, all events             | parallel seq scan + top-N, 295 ms | backward index scan, 0.06 ms              |
| event_id=500&sort=starts_at                    | bitmap scan of the event + sort, 9-14 ms | index scan ..._event_id_starts_at_..., 0.22 ms |
| changes, all events                            | parallel seq scan + top-N, 318 ms | index only scan ix_sessions_txid_id, 0.06 ms |
| changes?event_id=500                           | bitmap and (event, txid) + sort, 13 ms | index only scan ix_sessions_event_id_txid_id, 0.08 ms |

`scripts/explain_listing.py SERVER_URL` reproduces the "after" column with the statements the
repository really sends. The first page costs the same as the deep one in every "after" row: each is one index range read
from the keyset position (a row comparison `(key, id) > (:key, :id)` as the Index Cond).

Left without an index of their own, on purpose:
- The other sort orders within one event (title, created_at, ...): they read the event's rows
  through (event_id, ...) and sort them, 10-35 ms for 1,000 rows at any depth; seven more
  per-event indexes would tax every write for a list that is small by nature.
- `q` (ILIKE on title, subtitle, short_abstract): within an event it filters the event's rows
  (~11 ms); across all events it scans (50-350 ms). A pg_trgm GIN index would serve it, but the
  embedded PostgreSQL (pgserver, PG 16) ships without contrib extensions, and the schema must be
  the same on every server this migration runs on.
- Filters on state, level, language, track and so on: they narrow an index range read in the
  sort order, which stays cheap unless the filter is very selective.

Every list index is partial (WHERE deleted_at IS NULL): lists never show deleted rows. The feed
indexes are not: the feed serves tombstones.

Nullable sort columns sort through coalesce(column, 'infinity') ascending and
coalesce(column, '-infinity') descending, so NULLs come last in both directions and the keyset
predicate stays a plain row comparison; each direction has its own expression index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTED = sa.text("deleted_at IS NULL")


def _nulls_last(column: str, *, descending: bool) -> sa.TextClause:
    infinity = "'-infinity'" if descending else "'infinity'"
    return sa.text(f"coalesce({column}, {infinity}::timestamptz)")


def upgrade() -> None:
    op.add_column("sessions", sa.Column("txid", sa.BigInteger(), nullable=True))
    # Rows that exist now count as written by this migration's transaction: a feed read from
    # the beginning serves them once it has committed.
    op.execute("UPDATE sessions SET txid = pg_current_xact_id()::text::bigint")
    op.alter_column("sessions", "txid", nullable=False)

    op.create_index("ix_sessions_txid_id", "sessions", ["txid", "id"])
    op.create_index("ix_sessions_event_id_txid_id", "sessions", ["event_id", "txid", "id"])
    for column in ("title", "created_at", "last_modified_at"):
        op.create_index(
            f"ix_sessions_{column}_id", "sessions", [column, "id"], postgresql_where=LISTED
        )
    for column in ("starts_at", "ends_at"):
        for descending in (False, True):
            op.create_index(
                f"ix_sessions_{column}_{'desc' if descending else 'asc'}_nulls_last_id",
                "sessions",
                [_nulls_last(column, descending=descending), sa.text("id")],
                postgresql_where=LISTED,
            )
    op.create_index(
        "ix_sessions_event_id_starts_at_asc_nulls_last_id",
        "sessions",
        [sa.text("event_id"), _nulls_last("starts_at", descending=False), sa.text("id")],
        postgresql_where=LISTED,
    )


def downgrade() -> None:
    """Loses every row's txid: upgraded again, every session is stamped with that migration's
    transaction, so every feed position clients hold is stale (they start over)."""
    op.drop_index("ix_sessions_event_id_starts_at_asc_nulls_last_id", table_name="sessions")
    for column in ("starts_at", "ends_at"):
        for direction in ("asc", "desc"):
            op.drop_index(f"ix_sessions_{column}_{direction}_nulls_last_id", table_name="sessions")
    for column in ("title", "created_at", "last_modified_at"):
        op.drop_index(f"ix_sessions_{column}_id", table_name="sessions")
    op.drop_index("ix_sessions_event_id_txid_id", table_name="sessions")
    op.drop_index("ix_sessions_txid_id", table_name="sessions")
    op.drop_column("sessions", "txid")
