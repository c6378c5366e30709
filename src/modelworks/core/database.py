"""Metadata database: SQLAlchemy engine, sessions and Alembic migrations.

SQLite is tuned for many writers on one machine: WAL journal, foreign keys on, a busy
timeout, and ``BEGIN IMMEDIATE`` so that a transaction takes the write lock up front
instead of failing with "database is locked" when it upgrades from read to write.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock
from sqlalchemy import JSON, DateTime, Engine, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from modelworks.core.errors import InvalidInput, ServiceUnavailable

READ_ONLY = "modelworks_read_only"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[Any]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use modelworks.core.ids.utcnow()")
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite keeps UTC as ISO text; one C-level parse per value instead of the generic
        # regex parse plus a second pass (searches read thousands of these).
        def parse(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, str):
                return datetime.fromisoformat(value).replace(tzinfo=UTC)
            return self.process_result_value(value, dialect)

        return parse

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


def create_db_engine(url: str) -> Engine:
    """An engine for ``url`` with the pragmas and pool settings Modelworks relies on."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidInput(
            f"MODELWORKS_DATABASE_URL {url!r} is not a database URL ({exc}). "
            "Use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db."
        ) from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": 60, "check_same_thread": False},
            pool_size=8,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )
        _tune_sqlite(engine)
        return engine
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def _json_dumps(value: Any) -> str:
    # orjson: JSON columns (run system info, audit changes) are read on every search.
    return orjson.dumps(value, default=str).decode()


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Reads take no write lock, so a page or a search never waits for a writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def migrations_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrations_config(engine)).get_current_head()


def upgrade(engine: Engine, lock_dir: Path | None = None) -> str | None:
    """Apply pending migrations, serialised across processes. Returns the new revision."""
    from alembic import command

    if current_revision(engine) == head_revision(engine):
        return current_revision(engine)
    with _migration_lock(engine, lock_dir):
        if current_revision(engine) != head_revision(engine):
            command.upgrade(migrations_config(engine), "head")
    return current_revision(engine)


@contextlib.contextmanager
def _migration_lock(engine: Engine, lock_dir: Path | None) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(724011)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(724011)"))
                conn.commit()
        return
    db = engine.url.database
    base = lock_dir or (Path(db).expanduser().parent if db and db != ":memory:" else Path("."))
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / ".modelworks-migrate.lock"), timeout=120):
        yield


class Database:
    """The metadata database: one engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def upgrade(self, lock_dir: Path | None = None) -> str | None:
        try:
            return upgrade(self.engine, lock_dir)
        except Exception as exc:
            if "could not connect" in str(exc) or "Connection refused" in str(exc):
                raise ServiceUnavailable(
                    f"Cannot reach the database at {self.engine.url.render_as_string()}: {exc}. "
                    "Start it, or check MODELWORKS_DATABASE_URL."
                ) from exc
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it does not take the write lock."""
        with self._sessions() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
