"""Migrations run up from an empty database on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from modelworks.core.database import Database, head_revision

EXPECTED_TABLES = {
    "audit_head",
    "audit_records",
    "users",
    "projects",
    "memberships",
    "api_tokens",
    "experiments",
    "runs",
    "run_params",
    "run_tags",
    "metrics",
    "latest_metrics",
    "run_artifacts",
    "applied_batches",
}


def _check(db: Database) -> None:
    assert db.upgrade() == head_revision(db.engine)
    tables = set(inspect(db.engine).get_table_names())
    assert tables >= EXPECTED_TABLES
    # Idempotent: a second upgrade does nothing and fails nothing.
    assert db.upgrade() == head_revision(db.engine)


def test_sqlite_from_empty(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    _check(db)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


@pytest.mark.postgres
def test_postgres_from_empty(postgres_url: str) -> None:
    db = Database(postgres_url)
    _check(db)
    db.dispose()


def test_bad_database_url_is_a_clear_error() -> None:
    from modelworks.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="MODELWORKS_DATABASE_URL"):
        Database("not a url ::")
