"""Typed settings, read from CLOUDPLANE_* environment variables when first asked for."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDPLANE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///cloudplane.sqlite",
        description="SQLAlchemy URL of the application database (SQLite file or PostgreSQL).",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str = Field(
        default="",
        description="URL clients reach this service at; used in the OpenAPI `servers` entry.",
    )
    # The simulator's delays are multiplied by this: 1.0 feels like a real cloud, 0 is instant (tests).
    simulator_time_scale: float = 1.0
    simulator_seed: int = 42
    simulator_error_rate: float = 0.0
    simulator_latency_ms: float = 0.0
    # Probability that a create makes the machine yet answers with an error (a classic cloud failure).
    simulator_ghost_create_rate: float = 0.0
    secret_key: str | None = Field(
        default=None,
        description="JWT signing key; when unset one is generated on first start and kept in the database.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://host:6379/0) all API processes share for rate limits; unset keeps counts "
        "in process memory.",
    )
    rate_limits_enabled: bool = True
    # Namespace of the counters in Redis, so several Cloudplane deployments (or test runs) can share one Redis.
    rate_limit_key_prefix: str = "cloudplane-ratelimit"
    vastai_api_key: str | None = Field(
        default=None, description="Vast.ai API key; unset, a simulated marketplace serves as vast_ai."
    )
    default_provider: str = "simulator"
    max_page_size: int = 100
    log_level: str = "WARNING"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def _sibling_url(self, suffix: str) -> str:
        """A sibling SQLite file (SQLite has one writer per file, so separate stores do not queue behind each
        other), or the same PostgreSQL database."""
        if not self.is_sqlite:
            return self.database_url
        p = Path(self.database_url.split("///", 1)[1])
        return f"sqlite:///{p.with_name(p.stem + suffix + (p.suffix or '.sqlite'))}"

    @property
    def workflow_database_url(self) -> str:
        """Where DBOS keeps workflow checkpoints."""
        return self._sibling_url("-workflows")

    @property
    def simulator_database_url(self) -> str:
        """The simulator's inventory: the state of a separate (simulated) cloud, so kept apart from ours."""
        return self._sibling_url("-simulator")

    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()
