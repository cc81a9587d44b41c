from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
Seconds = float
DEVELOPMENT_CURSOR_SECRET = "development-only-cursor-secret"  # noqa: S105 (a documented default)


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
    log_level: LogLevel = "info"
    access_log: bool = True
    # uvicorn's wait for in-flight requests after SIGTERM; below Kubernetes' default 30 s grace.
    graceful_shutdown_timeout: int = Field(default=20, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # Every wait on the database is bounded, so that an outage answers 503 instead of hanging.
    db_pool_timeout: Seconds = Field(default=5.0, gt=0)
    db_connect_timeout: Seconds = Field(default=5.0, gt=0)
    db_statement_timeout: Seconds = Field(default=5.0, gt=0)
    readiness_timeout: Seconds = Field(default=2.0, gt=0)
    # PATCH and DELETE without If-Match or If-Unmodified-Since get 428 (RFC 6585).
    require_preconditions: bool = False
    # Signs list cursors and change-feed tokens. The default is for development only: in
    # production set a long random secret, the same on every replica (a token signed by one is
    # then accepted by all); changing it makes every outstanding cursor and token a 400.
    cursor_secret: str = DEVELOPMENT_CURSOR_SECRET

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, url: str | None) -> str | None:
        return to_asyncpg_url(url) if url else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level


@lru_cache
def get_settings() -> Settings:
    return Settings()
