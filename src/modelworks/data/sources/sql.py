"""Relational databases as a source: a table or a query, streamed in chunks, optionally resumed.

``SqlSource(url=..., table="orders")`` or ``SqlSource(url=..., query="SELECT ...")`` reads
through SQLAlchemy with a server-side cursor (``stream_results``), ``chunk_rows`` rows at a
time, and hands DuckDB an Arrow ``RecordBatchReader`` over the chunks, so a table never has to
fit in memory. Any SQLAlchemy URL works; ``postgresql://`` means psycopg 3 and
``mysql://`` / ``mariadb://`` mean PyMySQL (the drivers Modelworks installs).

The URL is stored with every version, so it may hold a password only as a reference:
``postgresql+psycopg://app:${secret:pg_pw}@db.internal/shop``, or the whole URL as one
reference, ``${secret:warehouse_url}``. References are expanded only while reading.

Incremental ingestion: with ``cursor_column`` each ingest reads only the rows whose value in
that column is greater than the largest one the previous ingest stored, up to the largest value
present when this read started, in that column's order. The column must only grow (an
auto-increment id, an insertion timestamp): rows that arrive later with a value at or below the
stored one are never read. Ingest such a source with ``mode="append"``.

Arrow types come from the table's declared column types (``table=``) or the driver's result
description (``query=``), and otherwise from the values of the first chunk:

========================================  ==============================================
database type                             Arrow type
========================================  ==============================================
integers                                  int64
boolean (and MySQL ``TINYINT(1)``)        bool
real / float / double                     float64
numeric/decimal(p, s) with p <= 38        decimal128(p, s) (exact)
numeric without precision, or p > 38      float64 (Arrow decimals need a fixed scale)
date                                      date32
timestamp / datetime                      timestamp[us] (with time zone: timestamp[us, UTC])
time                                      time64[us]
interval                                  float64, in seconds
text, enum, UUID                          string
JSON, arrays                              string holding the JSON text
binary                                    binary
a column with only NULLs and no type      string
========================================  ==============================================

Values that do not fit their column's type in a later chunk (SQLite stores anything anywhere)
fail the ingest with the column's name; cast them in a ``query`` instead.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.type_api import TypeEngine

from modelworks.core import secrets
from modelworks.core.errors import InvalidInput, ModelworksError, ServiceUnavailable
from modelworks.data.sources.base import Scan, ScanContext, Source, register_source

# The parts of a URL's query string that carry credentials; they too must be references.
_SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "sslpassword", "secret", "token", "api_key"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_EXTRAS = {"psycopg": "postgres", "pymysql": "mysql"}
_DECIMAL_MAX_PRECISION = 38  # decimal128; DuckDB's DECIMAL has the same limit


@register_source
class SqlSource(Source):
    """A table or query of a relational database, read through SQLAlchemy."""

    kind: Literal["sql"] = "sql"
    url: str = Field(description="SQLAlchemy URL; a password only as ${secret:NAME}.")
    table: str | None = Field(default=None, description="Table or view, optionally schema.table.")
    query: str | None = Field(default=None, description="A SELECT to run instead of a table.")
    cursor_column: str | None = Field(
        default=None, description="Read only rows whose value here grew since the last ingest."
    )
    chunk_rows: int = Field(default=50_000, ge=1, le=10_000_000)
    connect_timeout: int = Field(default=10, ge=2, le=300, description="Seconds to connect.")

    @field_validator("url")
    @classmethod
    def _url_has_no_password(cls, url: str) -> str:
        # InvalidInput, not ValueError: pydantic would echo the rejected URL (and its
        # password) in its ValidationError.
        return check_url(url)

    @field_validator("table")
    @classmethod
    def _table_name(cls, table: str | None) -> str | None:
        if table is None:
            return None
        parts = table.strip().split(".")
        if len(parts) > 2 or not all(p.strip() for p in parts):
            raise InvalidInput(
                f"The sql source's table {table!r} is not a table name: write `orders` or "
                "`schema.orders`, or use query= for anything else."
            )
        return ".".join(p.strip() for p in parts)

    @field_validator("query")
    @classmethod
    def _query_text(cls, query: str | None) -> str | None:
        if query is None:
            return None
        # A trailing ';' breaks the subquery the incremental read wraps the query in.
        text = query.strip().rstrip(";").strip()
        if not text:
            raise InvalidInput("The sql source's query is empty: give a SELECT statement.")
        return text

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise InvalidInput(
                "The sql source needs exactly one of table= (e.g. 'public.orders') or query= "
                "(e.g. 'SELECT * FROM orders WHERE ...')."
            )
        return self

    @property
    def resumable(self) -> bool:  # type: ignore[override]
        # Per instance: only a source with a cursor column resumes; a plain table or query
        # is a snapshot and may replace the dataset.
        return self.cursor_column is not None

    def identity(self) -> dict[str, Any]:
        # Tuning knobs must not start a new cursor (and so re-read everything).
        params = self.describe()
        params.pop("chunk_rows", None)
        params.pop("connect_timeout", None)
        return params

    def label(self) -> str:
        what = self.table or _shorten(self.query or "", 60)
        return f"sql {what} ({display_url(self.url)})"

    # ---- reading -----------------------------------------------------------------------
    def scan(self, ctx: ScanContext) -> Scan:
        url = self._connect_url(ctx)
        where = _where(url)
        engine = self._engine(url)
        conn = self._connect(engine, url, where)
        try:
            return self._start(conn, ctx, where, engine)
        except BaseException:
            conn.close()
            engine.dispose()
            raise

    def _connect_url(self, ctx: ScanContext) -> URL:
        """The URL with its secret references expanded and a default driver filled in."""
        if _is_whole_reference(self.url):
            raw = secrets.expand(self.url.strip(), ctx.settings)
            try:
                url = make_url(raw)
            except (sa_exc.ArgumentError, ValueError):
                name = secrets.references(self.url)[0]
                raise InvalidInput(
                    f"Secret {name!r} does not hold a database URL; store one such as "
                    "postgresql+psycopg://user:password@host:5432/db with "
                    f"`modelworks secrets set {name}`."
                ) from None
        else:
            url = make_url(self.url)

            def exp(value: str | None) -> str | None:
                return secrets.expand(value, ctx.settings) if value else value

            url = url.set(
                username=exp(url.username),
                password=exp(url.password),
                host=exp(url.host),
                database=exp(url.database),
                query={
                    k: (secrets.expand(v, ctx.settings) if isinstance(v, str) else v)
                    for k, v in url.query.items()
                },
            )
        driver = _DRIVERS.get(url.drivername)
        return url.set(drivername=driver) if driver else url

    def _engine(self, url: URL) -> Engine:
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend in ("postgresql", "mysql", "mariadb"):
            connect_args["connect_timeout"] = self.connect_timeout
        elif backend == "sqlite":
            # DuckDB pulls the batches on its own worker threads.
            connect_args["check_same_thread"] = False
            _check_sqlite_file(url)
        try:
            return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except (ModuleNotFoundError, sa_exc.NoSuchModuleError) as exc:
            driver = url.get_driver_name() or url.drivername
            extra = _EXTRAS.get(driver)
            hint = f"pip install 'modelworks[{extra}]'" if extra else f"install the {driver} driver"
            raise InvalidInput(
                f"The database driver for {display_url(url)} is not installed ({exc}); {hint}."
            ) from None
        except sa_exc.ArgumentError as exc:
            raise InvalidInput(
                f"The sql source's URL {display_url(url)} is not valid: {secrets.redact(str(exc))}."
            ) from None

    def _connect(self, engine: Engine, url: URL, where: str) -> Connection:
        try:
            return engine.connect()
        except sa_exc.DBAPIError as exc:
            engine.dispose()
            reason = _driver_message(exc)
            if _is_login_failure(reason):
                refs = secrets.references(self.url)
                check = (
                    "check the secret " + ", ".join(repr(r) for r in refs)
                    + f" (`modelworks secrets set {refs[0]}`)"
                    if refs
                    else "check the user and password"
                )  # fmt: skip
                raise InvalidInput(
                    f"The database at {where} refused the login ({reason}); {check}."
                ) from None
            raise ServiceUnavailable(
                f"Cannot connect to the database at {where} ({display_url(url)}): {reason}. "
                "Check that the server is running and reachable from here, and the host and "
                "port in the URL."
            ) from None

    def _start(self, conn: Connection, ctx: ScanContext, where: str, engine: Engine) -> Scan:
        plan = self._plan(conn, ctx.cursor, where)

        def close() -> None:
            conn.close()
            engine.dispose()

        if plan.statement is None:
            close()
            return Scan(relation=None, message=plan.message)
        stream = conn.execution_options(stream_results=True, yield_per=self.chunk_rows)
        result = self._run(stream, plan.statement, plan.params)
        names = list(result.keys())
        _check_names(names, self.label())
        hints = plan.hints or _description_hints(conn.dialect.name, result)
        chunks = result.partitions(self.chunk_rows)
        first = self._next_chunk(chunks)
        schema = pa.schema(
            [
                pa.field(name, hints.get(name) or _infer([row[i] for row in first]) or pa.string())
                for i, name in enumerate(names)
            ]
        )
        reader = pa.RecordBatchReader.from_batches(schema, self._batches(schema, first, chunks))

        def close_all() -> None:
            result.close()
            close()

        return Scan(
            relation=ctx.con.from_arrow(reader),
            cursor=plan.cursor,
            close=close_all,
            message=plan.message,
        )

    def _run(
        self, conn: Connection, statement: sa.Executable, params: dict[str, Any]
    ) -> CursorResult[Any]:
        try:
            with warnings.catch_warnings():
                # SQLite has no DECIMAL; SQLAlchemy warns that it converts - which is fine.
                warnings.filterwarnings("ignore", message=".*support Decimal objects natively")
                return conn.execute(statement, params)
        except sa_exc.DBAPIError as exc:
            raise self._failed(exc) from None
        except sa_exc.StatementError as exc:
            raise InvalidInput(
                f"The {self._what()} cannot be run: {secrets.redact(str(exc.orig))}."
            ) from None

    def _next_chunk(self, chunks: Iterator[Sequence[sa.Row[Any]]]) -> Sequence[sa.Row[Any]]:
        try:
            return next(chunks, [])
        except sa_exc.DBAPIError as exc:
            raise self._failed(exc) from None

    def _batches(
        self,
        schema: pa.Schema,
        first: Sequence[sa.Row[Any]],
        chunks: Iterator[Sequence[sa.Row[Any]]],
    ) -> Iterator[pa.RecordBatch]:
        number = 1
        rows = first
        while rows:
            yield _batch(schema, rows, number, self.label())
            number += 1
            try:
                rows = next(chunks, [])
            except sa_exc.DBAPIError as exc:
                raise self._failed(exc) from None

    def _what(self) -> str:
        if self.table:
            return f"table {self.table!r}"
        return f"query {_shorten(self.query or '', 200)!r}"

    def _failed(self, exc: sa_exc.DBAPIError) -> ModelworksError:
        reason = _driver_message(exc)
        if exc.connection_invalidated:
            return ServiceUnavailable(
                f"The connection to the database was lost while reading the {self._what()}: "
                f"{reason}. Run the ingest again."
            )
        return InvalidInput(f"Reading the {self._what()} failed: {reason}.")

    # ---- what to read ------------------------------------------------------------------
    def _plan(self, conn: Connection, cursor: dict[str, Any] | None, where: str) -> _Plan:
        after = decode_cursor(cursor) if cursor else None
        if self.table is not None:
            return self._plan_table(conn, self.table, after, where)
        return self._plan_query(conn, self.query or "", after)

    def _plan_table(self, conn: Connection, name: str, after: Any, where: str) -> _Plan:
        schema, _, table_name = name.rpartition(".")
        try:
            table = sa.Table(table_name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        except sa_exc.NoSuchTableError:
            raise InvalidInput(
                f"Table {name!r} does not exist in the database at {where}."
                f"{_known_tables(conn, schema or None)} Check the name (and its schema)."
            ) from None
        except sa_exc.DBAPIError as exc:
            raise self._failed(exc) from None
        hints = {c.name: _arrow_type(c.type, conn.dialect.name) for c in table.columns}
        statement = sa.select(table)
        if self.cursor_column is None:
            # Ordered by the primary key so the same rows make the same version bytes.
            keys = list(table.primary_key.columns)
            return _Plan(statement.order_by(*keys) if keys else statement, {}, hints)
        column = table.columns.get(self.cursor_column)
        if column is None:
            columns = ", ".join(c.name for c in table.columns)
            raise InvalidInput(
                f"Table {name!r} has no column {self.cursor_column!r} to use as cursor_column; "
                f"its columns are: {columns}."
            )
        newer = [column > after] if after is not None else []
        upto = self._scalar(conn, sa.select(sa.func.max(column)).where(*newer), {})
        if upto is None:
            return self._nothing_new(after)
        statement = statement.where(*newer, column <= upto).order_by(column)
        return _Plan(statement, {}, hints, cursor=encode_cursor(upto, self.cursor_column))

    def _plan_query(self, conn: Connection, query: str, after: Any) -> _Plan:
        escaped = escape_colons(query)
        if self.cursor_column is None:
            return _Plan(sa.text(escaped), {}, {})
        col = conn.dialect.identifier_preparer.quote(self.cursor_column)
        source = f"({escaped}) AS mw_source"
        newer = f" AND {col} > :mw_after" if after is not None else ""
        params = {"mw_after": after} if after is not None else {}
        upto = self._scalar(
            conn, sa.text(f"SELECT MAX({col}) FROM {source} WHERE 1 = 1{newer}"), params
        )
        if upto is None:
            return self._nothing_new(after)
        statement = sa.text(f"SELECT * FROM {source} WHERE {col} <= :mw_upto{newer} ORDER BY {col}")
        return _Plan(
            statement,
            {**params, "mw_upto": upto},
            {},
            cursor=encode_cursor(upto, self.cursor_column),
        )

    def _scalar(self, conn: Connection, statement: sa.Executable, params: dict[str, Any]) -> Any:
        result = self._run(conn, statement, params)
        try:
            return result.scalar()
        except sa_exc.DBAPIError as exc:
            raise self._failed(exc) from None

    def _nothing_new(self, after: Any) -> _Plan:
        since = f" > {after!s}" if after is not None else ""
        return _Plan(
            None, {}, {}, message=f"No rows in the {self._what()} with {self.cursor_column}{since}."
        )


class _Plan:
    """The statement to stream (None: nothing new), its parameters and column type hints."""

    def __init__(
        self,
        statement: sa.Executable | None,
        params: dict[str, Any],
        hints: dict[str, pa.DataType | None],
        *,
        cursor: dict[str, Any] | None = None,
        message: str = "",
    ) -> None:
        self.statement = statement
        self.params = params
        self.hints = hints
        self.cursor = cursor
        self.message = message


# ---- URLs and secrets ----------------------------------------------------------------------
def check_url(url: str) -> str:
    """``url`` if it is a database URL whose credentials are secret references."""
    text = url.strip()
    if _is_whole_reference(text):
        return text
    try:
        parsed = make_url(text)
    except (sa_exc.ArgumentError, ValueError):
        # Not echoed: it may hold a password.
        raise InvalidInput(
            "The sql source's url is not a SQLAlchemy database URL; write it as "
            "dialect+driver://user:${secret:NAME}@host:port/database, e.g. "
            "postgresql+psycopg://app:${secret:pg_pw}@127.0.0.1:5432/shop or "
            "sqlite:///path/to/file.db."
        ) from None
    literal = _is_literal(parsed.password) or any(
        key.lower() in _SECRET_QUERY_KEYS and any(_is_literal(v) for v in _values(value))
        for key, value in parsed.query.items()
    )
    if literal:
        user = parsed.username or "user"
        raise InvalidInput(
            "The sql source's url holds a password in plain text, which would be stored with "
            "every version. Store it as a secret (`modelworks secrets set db_password`) and "
            f"refer to it in the URL: {parsed.drivername}://{user}:${{secret:db_password}}@"
            f"{parsed.host or 'host'}{_port_text(parsed)}/{parsed.database or ''}"
        )
    return text


def display_url(url: str | URL) -> str:
    """A URL fit for messages: password hidden, any resolved secret value masked."""
    if isinstance(url, str):
        if _is_whole_reference(url):
            return url.strip()
        try:
            url = make_url(url)
        except (sa_exc.ArgumentError, ValueError):
            return "(an invalid URL)"
    return secrets.redact(url.render_as_string(hide_password=True))


def _is_whole_reference(text: str) -> bool:
    return secrets.REFERENCE.fullmatch(text.strip()) is not None


def _is_literal(value: str | None) -> bool:
    """True for a value that is set and is not made only of secret references."""
    return bool(value) and bool(secrets.REFERENCE.sub("", value or "").strip())


def _values(value: str | Sequence[str]) -> Sequence[str]:
    return (value,) if isinstance(value, str) else value


def _port_text(url: URL) -> str:
    return f":{url.port}" if url.port else ""


def _where(url: URL) -> str:
    """Host and port (or the SQLite file) for messages."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    port = url.port or _DEFAULT_PORTS.get(backend)
    host = url.host or "localhost"
    return secrets.redact(f"{host}:{port}" if port else host)


def _check_sqlite_file(url: URL) -> None:
    # SQLite would silently create an empty database at a mistyped path.
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise InvalidInput(
            f"SQLite database file {database} does not exist; check the path in the URL "
            "(sqlite:///relative/path.db or sqlite:////absolute/path.db)."
        )


def _driver_message(exc: sa_exc.DBAPIError) -> str:
    """The driver's own message, first lines only, with secret values masked."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return secrets.redact(_shorten(" ".join(lines[:3]), 500))


def _is_login_failure(reason: str) -> bool:
    lowered = reason.lower()
    return any(
        marker in lowered
        for marker in ("password authentication failed", "access denied", "authentication fail")
    )


def _known_tables(conn: Connection, schema: str | None) -> str:
    try:
        inspector = sa.inspect(conn)
        names = sorted(inspector.get_table_names(schema) + inspector.get_view_names(schema))
    except sa_exc.SQLAlchemyError:
        return ""
    if not names:
        return " It has no tables" + (f" in schema {schema!r}." if schema else ".")
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f" Tables there: {shown}."


def escape_colons(query: str) -> str:
    r"""``query`` for ``sa.text``, which would read ``':b'`` or ``x::date`` as bind parameters."""
    return query.replace(":", r"\:")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_names(names: list[str], label: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInput(
                f"{label} returns two columns named {name!r}; give them distinct aliases "
                "(SELECT a.id AS order_id, b.id AS customer_id ...)."
            )
        seen.add(name)


# ---- cursor positions ------------------------------------------------------------------------
def encode_cursor(value: Any, column: str) -> dict[str, Any]:
    """A JSON-storable position: ``{"value": ..., "type": ...}``."""
    if isinstance(value, bool):
        raise InvalidInput(
            f"cursor_column {column!r} is boolean; use a column that only grows, such as an "
            "auto-increment id or an insertion timestamp."
        )
    if isinstance(value, int):
        return {"value": value, "type": "int"}
    if isinstance(value, float):
        return {"value": value, "type": "float"}
    if isinstance(value, Decimal):
        return {"value": str(value), "type": "decimal"}
    if isinstance(value, datetime):
        return {"value": value.isoformat(), "type": "timestamp"}
    if isinstance(value, date):
        return {"value": value.isoformat(), "type": "date"}
    if isinstance(value, str | UUID):
        return {"value": str(value), "type": "string"}
    raise InvalidInput(
        f"cursor_column {column!r} holds {type(value).__name__} values; use a number, text, "
        "date or timestamp column that only grows."
    )


def decode_cursor(position: dict[str, Any]) -> Any:
    """The Python value of a stored position, for comparing in SQL."""
    value, kind = position.get("value"), position.get("type")
    try:
        if kind == "int":
            return int(value)  # type: ignore[arg-type]
        if kind == "float":
            return float(value)  # type: ignore[arg-type]
        if kind == "decimal":
            return Decimal(str(value))
        if kind == "timestamp":
            return datetime.fromisoformat(str(value))
        if kind == "date":
            return date.fromisoformat(str(value))
        if kind == "string":
            return str(value)
    except (TypeError, ValueError, ArithmeticError):
        pass
    raise InvalidInput(
        f"The stored position of this sql source ({position!r}) cannot be read; ingest into a "
        "new dataset, or change cursor_column to start over."
    )


# ---- Arrow types and batches ---------------------------------------------------------------
def _decimal_type(precision: int | None, scale: int | None) -> pa.DataType:
    if precision is None or scale is None:
        return pa.float64()
    if 0 < precision <= _DECIMAL_MAX_PRECISION and 0 <= scale <= precision:
        return pa.decimal128(precision, scale)
    return pa.float64()


def _arrow_type(kind: TypeEngine[Any], dialect: str) -> pa.DataType | None:
    """The Arrow type for a declared column type; None to infer from the values."""
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if dialect in ("mysql", "mariadb") and getattr(kind, "display_width", None) == 1:
        return pa.bool_()  # MySQL's BOOLEAN is TINYINT(1)
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.Numeric):
        return _decimal_type(kind.precision, kind.scale)
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if kind.timezone else None)
    if isinstance(kind, sa.Date):
        return pa.date32()
    if isinstance(kind, sa.Time):
        return pa.time64("us")
    if isinstance(kind, sa.JSON | sa.ARRAY | sa.Uuid | sa.String):
        return pa.string()
    if isinstance(kind, sa.LargeBinary):
        return pa.binary()
    try:
        python = kind.python_type
    except NotImplementedError:
        return None
    return pa.float64() if python is timedelta else None


# PostgreSQL type OIDs (psycopg's description) for queries, whose columns have no declared type.
_PG_OIDS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    19: pa.string(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    25: pa.string(),
    114: pa.string(),
    700: pa.float64(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1186: pa.float64(),
    2950: pa.string(),
    3802: pa.string(),
}
# MySQL field types (PyMySQL's description); text and blobs share codes, so they are inferred.
_MYSQL_FIELDS: dict[int, pa.DataType] = {
    1: pa.int64(),
    2: pa.int64(),
    3: pa.int64(),
    4: pa.float64(),
    5: pa.float64(),
    7: pa.timestamp("us"),
    8: pa.int64(),
    9: pa.int64(),
    10: pa.date32(),
    11: pa.float64(),  # TIME can exceed a day (it is a duration): seconds
    12: pa.timestamp("us"),
    13: pa.int64(),
    245: pa.string(),
    247: pa.string(),
    248: pa.string(),
}


def _description_hints(dialect: str, result: CursorResult[Any]) -> dict[str, pa.DataType | None]:
    description = result.cursor.description if result.cursor is not None else None
    hints: dict[str, pa.DataType | None] = {}
    for column in description or ():
        name, code = column[0], column[1]
        if dialect == "postgresql" and isinstance(code, int):
            if code == 1700:
                hints[name] = _decimal_type(
                    getattr(column, "precision", None), getattr(column, "scale", None)
                )
            else:
                hints[name] = _PG_OIDS.get(code)
        elif dialect in ("mysql", "mariadb") and isinstance(code, int):
            if code in (0, 246):  # DECIMAL: the display length bounds the precision
                hints[name] = _decimal_type(column[3], column[5])
            else:
                hints[name] = _MYSQL_FIELDS.get(code)
    return hints


def _infer(values: list[Any]) -> pa.DataType | None:
    """The Arrow type of a column from its first chunk's values; None when all are NULL."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int, bool}:
        return pa.int64()
    if kinds <= {int, bool, float, Decimal}:
        return pa.float64()  # precision unknown: exact decimals need a fixed scale
    if kinds <= {datetime}:
        aware = any(v.tzinfo is not None for v in values if v is not None)
        return pa.timestamp("us", tz="UTC" if aware else None)
    if kinds == {date}:
        return pa.date32()
    if kinds == {time}:
        return pa.time64("us")
    if kinds == {timedelta}:
        return pa.float64()
    if kinds <= {bytes, bytearray, memoryview}:
        return pa.binary()
    return pa.string()


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal) and value == int(value):
        return int(value)
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float | Decimal):
        return float(value)
    raise ValueError(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(value)


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    raise ValueError(value)


def _to_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    raise ValueError(value)


def _to_date(value: Any) -> date:
    if isinstance(value, datetime):
        if value.time() != time(0):
            raise ValueError(value)
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value)
    raise ValueError(value)


def _to_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, timedelta) and timedelta(0) <= value < timedelta(days=1):
        return (datetime.min + value).time()  # MySQL's driver returns TIME as a timedelta
    if isinstance(value, str):
        return time.fromisoformat(value)
    raise ValueError(value)


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise ValueError(value)


def _converter(kind: pa.DataType) -> tuple[tuple[type, ...], Callable[[Any], Any]]:
    """The Python types Arrow takes as they are for ``kind``, and how to convert the rest.

    Checked strictly, because Arrow itself would turn 1.5 into 1 for an int64 column.
    """
    if pa.types.is_int64(kind):
        return (int,), _to_int
    if pa.types.is_float64(kind):
        return (float, int), _to_float
    if pa.types.is_boolean(kind):
        return (bool,), _to_bool
    if pa.types.is_decimal(kind):
        return (Decimal, int), _to_decimal
    if pa.types.is_timestamp(kind):
        return (datetime,), _to_timestamp
    if pa.types.is_date32(kind):
        return (date,), _to_date
    if pa.types.is_time64(kind):
        return (time,), _to_time
    if pa.types.is_binary(kind):
        return (bytes,), _to_bytes
    return (str,), _to_text


def _column(values: list[Any], kind: pa.DataType, name: str, chunk: int, label: str) -> pa.Array:
    native, convert = _converter(kind)
    if not all(v is None or type(v) in native for v in values):
        converted: list[Any] = []
        for row, value in enumerate(values, start=1):
            try:
                converted.append(None if value is None else convert(value))
            except (ValueError, TypeError, ArithmeticError):
                raise InvalidInput(
                    f"Column {name!r} of {label} is {kind}, but row {row} of chunk {chunk} holds "
                    f"{_shorten(repr(value), 80)} ({type(value).__name__}). Read it with a query "
                    f"that casts the column to one type (CAST({name} AS ...))."
                ) from None
        values = converted
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise InvalidInput(
            f"Column {name!r} of {label} does not fit {kind} in chunk {chunk}: {exc}. Read it "
            "with a query that casts the column to a type that holds every value."
        ) from None


def _batch(schema: pa.Schema, rows: Sequence[Any], chunk: int, label: str) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [
        _column(list(values), field.type, field.name, chunk, label)
        for values, field in zip(columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
