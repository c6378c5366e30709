"""The store: metadata database + artifact store, opened from settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from modelworks.core.config import Settings, get_settings
from modelworks.core.database import Database

if TYPE_CHECKING:
    from modelworks.core.artifacts import ArtifactStore


class Store:
    """Everything a service needs to persist: one per process (or per server)."""

    def __init__(self, settings: Settings | None = None, *, migrate: bool = True) -> None:
        self.settings = settings or get_settings()
        self.db = Database(self.settings.effective_database_url)
        if migrate:
            lock_dir = self.settings.home_path if self.db.dialect == "sqlite" else None
            self.db.upgrade(lock_dir=lock_dir)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from modelworks.core.artifacts import ArtifactStore

        return ArtifactStore.from_settings(self.settings)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.db.transaction() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (no write lock on SQLite)."""
        with self.db.read() as session:
            yield session

    def close(self) -> None:
        self.db.dispose()
