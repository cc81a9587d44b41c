"""The Alembic migrations of the service: running them, and the revision the code expects."""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
# Any constant of the service's own: pg_advisory_xact_lock's key for "a migrate is running".
MIGRATION_LOCK_KEY = 0x5E55_1025
# A migration's table lock, tried for a moment at a time (its lock_timeout) and again after a
# pause, for so many seconds in all before the migrate fails (alembic/env.py). While a migration
# waits for a lock, every request for that table queues behind it: a moment, shorter than any
# sensible DB_LOCK_TIMEOUT (1 s by default), so that requests wait rather than fail.
MIGRATION_LOCK_WAIT = "300ms"
MIGRATION_LOCK_PAUSE = (0.2, 0.8)  # seconds, at random between attempts
MIGRATION_LOCK_PATIENCE = 10.0
# The texts are Unicode and their limits count characters: in a database of another encoding
# PostgreSQL refuses characters (LATIN1) or counts bytes (SQL_ASCII), and valid requests would
# be 500s. Refused before anything is migrated, online or in the SQL script (README, Migrations).
DATABASE_ENCODING = "UTF8"
REQUIRE_DATABASE_ENCODING = (
    "DO $$ BEGIN IF current_setting('server_encoding') <> '" + DATABASE_ENCODING + "' THEN "
    "RAISE EXCEPTION 'the database''s encoding is %, not " + DATABASE_ENCODING + ": create it "
    "with ENCODING ''" + DATABASE_ENCODING + "'' (and TEMPLATE template0)', "
    "current_setting('server_encoding'); END IF; END $$"
)


def alembic_config(database_url: str) -> Config:
    """The migrations' configuration in a process of the service's own (the CLI, the tests):
    unlike the `alembic` command, it leaves the process's logging as it is (alembic/env.py
    would apply alembic.ini's)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    config.set_main_option("script_location", str(ROOT / "alembic"))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def migration_heads() -> frozenset[str]:
    """The revisions a database at the head of this code's migrations records."""
    return frozenset(_script_directory().get_heads())


def known_revisions() -> frozenset[str]:
    """Every revision of this code's migrations: a database at another one is ahead of it."""
    return frozenset(revision.revision for revision in _script_directory().walk_revisions())


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(ROOT / "alembic"))
