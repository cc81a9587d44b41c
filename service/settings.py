from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def to_asyncpg_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and name the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError("must be a postgresql:// or postgresql+asyncpg:// URL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # None means "no database configured": the CLI then starts an embedded PostgreSQL.
    database_url: str | None = None
    embedded_data_dir: Path = Path(".data/postgres")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # PATCH and DELETE without If-Match or If-Unmodified-Since get 428 (RFC 6585).
    require_preconditions: bool = False

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, url: str | None) -> str | None:
        return to_asyncpg_url(url) if url else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
