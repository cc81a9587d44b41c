"""trigram indexes for the list's text search (q), where pg_trgm is available

`q` is `title ILIKE :p OR subtitle ILIKE :p OR short_abstract ILIKE :p` with :p = '%text%', which
no btree index serves: a search that finds fewer rows than a page read the whole table. A GIN
trigram index per column (pg_trgm's gin_trgm_ops, partial as every list index) serves each ILIKE,
and PostgreSQL ORs their bitmaps (BitmapOr), reading only rows that hold the text's trigrams.

Measured on PostgreSQL 15 with bench/seed.py's sessions: EXPLAIN (ANALYZE, BUFFERS) of the
statement an anonymous `GET /sessions?q=…` sends (sort=id, limit 21), warm:

| q                      | 200,000 before | after            | 1,000,000 before | after            |
|------------------------|----------------|------------------|------------------|------------------|
| no session holds it    | 183 ms         | 0.10 ms, 55 bufs | 1,222 ms         | 0.08 ms, 55 bufs |
| one session holds it   | 191 ms         | 0.45 ms, 67 bufs | 1,343 ms         | 2.0 ms, 98 bufs  |
| thousands hold it      | 0.5 ms         | the same         | 0.55 ms          | the same         |
| "zq": holds no trigram | 200 ms         | the same         | 755-1,530 ms     | the same         |

Before, a parallel seq scan, but for the common text: pk_sessions until the page is full (so
after too). After, a BitmapOr of the three indexes.

Building them blocked writes for 9-18 s on 200,000 rows and 86 s on 1,000,000 (260 MB of
indexes there); a write then adds its texts' trigrams to them (about 2.5 times a write's WAL).

Where pg_trgm is not available (the embedded PostgreSQL of development and the tests ships no
contrib extensions), or the migrating role may not create it (CREATE on the database: pg_trgm is
a trusted extension since PostgreSQL 13), the migration logs a warning and creates nothing, and
`q` answers the same, by reading the table. The indexes change plans, never results, so a schema
with them and one without serve the same release: the one exception to 0002's rule of one
schema on every server, which is why the models do not declare them and alembic/env.py leaves
them out of autogenerate's comparison. Any other error fails the migration as usual.

An index of that name that exists already is kept: an operator may build them beforehand with
CREATE INDEX CONCURRENTLY, writes going on meanwhile (README, Migrations); one left invalid by a
failed concurrent build is built anew. The script of `alembic upgrade --sql` does the same, in
PL/pgSQL.

Downgrade drops the indexes and keeps the extension: other objects may use it (DROP EXTENSION
would fail on them, or with CASCADE drop them), this migration cannot tell whether it installed
it, and an extension nothing uses costs nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00.000000
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# index -> the column it serves (service.models.TRIGRAM_INDEXES names them too).
TRIGRAM_INDEXES = {
    "ix_sessions_title_trgm": "title",
    "ix_sessions_subtitle_trgm": "subtitle",
    "ix_sessions_short_abstract_trgm": "short_abstract",
}
INSUFFICIENT_PRIVILEGE = "42501"
WITHOUT_INDEXES = "q searches read the whole table (README: Finding sessions)"


def upgrade() -> None:
    if context.is_offline_mode():
        # A script (`alembic upgrade --sql`) asks the server nothing as it is written: it does
        # what a server with pg_trgm gets, and, run, what _create_index does.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, column in TRIGRAM_INDEXES.items():
            op.execute(sa.text(_OFFLINE_INDEX.format(name=name, column=column)))
        return
    bind = op.get_bind()
    schema = _trigram_schema(bind)
    if schema is None:
        return
    for name, column in TRIGRAM_INDEXES.items():
        _create_index(bind, name, column, f"{schema}.gin_trgm_ops")


# _create_index as SQL: keep a valid index built beforehand, build anew an invalid one, with the
# operator class of the schema pg_trgm is in (_trigram_schema).
_OFFLINE_INDEX = """\
DO $$
DECLARE
    trgm text := (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm');
BEGIN
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('{name}') AND NOT indisvalid) THEN
        DROP INDEX {name};
    END IF;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS {name} ON sessions USING gin ({column} %s.gin_trgm_ops) '
        'WHERE deleted_at IS NULL',
        trgm
    );
END
$$"""


def downgrade() -> None:
    """Indexes only: nothing is lost."""
    for name in TRIGRAM_INDEXES:
        op.drop_index(name, table_name="sessions", if_exists=True)


def _trigram_schema(bind: Connection) -> str | None:
    """The schema pg_trgm is installed in, installing it if need be; None where it cannot be."""
    available = "SELECT true FROM pg_available_extensions WHERE name = 'pg_trgm'"
    if not bind.scalar(sa.text(available)):
        log.warning(
            "pg_trgm is not available on this server: no trigram indexes; %s", WITHOUT_INDEXES
        )
        return None
    try:
        # In a savepoint: a failure here must not abort the one transaction of all revisions.
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
            raise
        log.warning(
            "this role may not create the extension pg_trgm (it needs CREATE on the database): "
            "no trigram indexes; %s; README (Migrations) says how to add them later",
            WITHOUT_INDEXES,
        )
        return None
    # Schema-qualified, as where it was installed need not be on the search path (Supabase's
    # "extensions"); regnamespace's text is quoted where it must be.
    installed_in = (
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    )
    schema: str = bind.scalar(sa.text(installed_in))
    return schema


def _create_index(bind: Connection, name: str, column: str, operator_class: str) -> None:
    valid = bind.scalar(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name},
    )
    if valid:
        log.info("%s exists already (built beforehand): kept", name)
        return
    if valid is not None:
        log.warning("%s is invalid (a CREATE INDEX CONCURRENTLY that failed): built anew", name)
        op.drop_index(name, table_name="sessions")
    _build_index(name, column, operator_class)


def _build_index(name: str, column: str, operator_class: str) -> None:
    op.create_index(
        name,
        "sessions",
        [column],
        postgresql_using="gin",
        postgresql_ops={column: operator_class},
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
