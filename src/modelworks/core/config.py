"""Settings, read from the environment with the ``MODELWORKS_`` prefix."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Effective configuration. Every field can be set as ``MODELWORKS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MODELWORKS_", extra="ignore")

    home: Path = Field(default=Path("~/.modelworks"), description="Where the embedded store lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in HOME."
    )
    artifact_url: str | None = Field(
        default=None, description="Folder or s3://bucket/prefix; default: HOME/artifacts."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint.")
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str | None = None
    ray_address: str | None = Field(default=None, description="Ray cluster address.")
    ray_dashboard_url: str | None = Field(
        default=None, description="Ray's job submission API; default: http://<ray host>:8265."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Signs session cookies; default: generated once in HOME."
    )
    max_request_bytes: int = Field(default=32 * 1024 * 1024, description="Largest request body.")
    max_artifact_bytes: int = Field(
        default=5 * 1024**3, description="Largest artifact upload (streamed, not held in memory)."
    )
    session_ttl_seconds: int = 12 * 3600
    ingest_roots: str = Field(
        default="",
        description="Folders and s3:// prefixes (comma-separated) remote callers may ingest from.",
    )
    duckdb_memory_limit: str = Field(
        default="1GB", description="Memory DuckDB may use for ingest, profiles and transforms."
    )
    url: str | None = Field(default=None, description="Server URL the SDK connects to.")
    project: str = Field(default="default", description="Project the SDK works in.")
    token: SecretStr | None = Field(default=None, description="API token for the SDK.")

    @property
    def home_path(self) -> Path:
        return self.home.expanduser()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_path / 'modelworks.db'}"

    @property
    def effective_artifact_url(self) -> str:
        if self.artifact_url:
            return self.artifact_url
        return str(self.home_path / "artifacts")

    def effective_secret_key(self) -> str:
        """The cookie-signing key: configured, or generated once and kept in HOME."""
        if self.secret_key:
            return self.secret_key.get_secret_value()
        path = self.home_path / "secret_key"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        tmp.chmod(0o600)
        tmp.replace(path)
        return key

    def describe(self) -> dict[str, Any]:
        """Effective settings for display, secrets masked."""
        return {
            "home": str(self.home_path),
            "database_url": _mask_url(self.effective_database_url),
            "artifact_url": self.effective_artifact_url,
            "s3_endpoint_url": self.s3_endpoint_url,
            "s3_access_key_id": self.s3_access_key_id,
            "s3_secret_access_key": "***" if self.s3_secret_access_key else None,
            "s3_region": self.s3_region,
            "ray_address": self.ray_address,
            "ray_dashboard_url": self.ray_dashboard_url,
            "max_request_bytes": self.max_request_bytes,
            "max_artifact_bytes": self.max_artifact_bytes,
            "ingest_roots": self.ingest_roots,
            "duckdb_memory_limit": self.duckdb_memory_limit,
            "url": self.url,
            "project": self.project,
            "token": "***" if self.token else None,
        }


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
