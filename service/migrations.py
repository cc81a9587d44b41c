"""The Alembic migrations of the service: running them, and the revision the code expects."""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
# Any constant of the service's own: pg_advisory_xact_lock's key for "a migrate is running".
MIGRATION_LOCK_KEY = 0x5E55_1025
# How long a migration waits for a table lock before it fails (alembic/env.py).
MIGRATION_LOCK_TIMEOUT = "10s"


def alembic_config(database_url: str, *, configure_logging: bool = True) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = configure_logging
    config.set_main_option("script_location", str(ROOT / "alembic"))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str, *, configure_logging: bool = True) -> None:
    command.upgrade(alembic_config(database_url, configure_logging=configure_logging), "head")


def migration_heads() -> frozenset[str]:
    """The revisions a database at the head of this code's migrations records."""
    return frozenset(_script_directory().get_heads())


def known_revisions() -> frozenset[str]:
    """Every revision of this code's migrations: a database at another one is ahead of it."""
    return frozenset(revision.revision for revision in _script_directory().walk_revisions())


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(ROOT / "alembic"))
