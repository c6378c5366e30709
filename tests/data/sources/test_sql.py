"""SqlSource against the real databases: PostgreSQL, MariaDB and SQLite.

Each test reads through the source contract (``scan`` -> DuckDB relation -> Parquet parts
written by ``storage.write_parts``) and checks the rows that come back with pyarrow; the
last ones go through ``DataService.ingest`` to show the cursor is stored and resumed across
versions.
"""

from __future__ import annotations

import math
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from modelworks.core.auth import local_principal
from modelworks.core.config import Settings
from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.service import DataService
from modelworks.data.sources import source_from_spec
from modelworks.data.sources import sql as sql_module
from modelworks.data.sources.base import Scan, ScanContext
from modelworks.data.sources.sql import SqlSource

# ---- helpers -------------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    path = tmp_path / "shop.db"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url, poolclass=NullPool)
    yield eng
    eng.dispose()


ORDERS = sa.MetaData()
orders = sa.Table(
    "orders",
    ORDERS,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer", sa.String(40)),
    sa.Column("amount", sa.Numeric(10, 2)),
    sa.Column("price", sa.Double),
    sa.Column("paid", sa.Boolean),
    sa.Column("created_at", sa.DateTime),
    sa.Column("day", sa.Date),
    sa.Column("note", sa.Text),
)


def order(i: int) -> dict[str, Any]:
    """Row ``i``; every column but the key is NULL on multiples of 5."""
    if i % 5 == 0:
        return {"id": i, "customer": None, "amount": None, "price": None, "paid": None,
                "created_at": None, "day": None, "note": None}  # fmt: skip
    return {
        "id": i,
        "customer": f"c{i:03d}",
        "amount": Decimal(f"{i}.{i % 100:02d}"),
        "price": i * 0.5,
        "paid": i % 2 == 1,
        "created_at": datetime(2024, 1, 1, 8, 0, 0) + timedelta(days=i),
        "day": date(2024, 3, 1 + i % 28),
        "note": f"note {i}" if i % 3 else None,
    }


def add_orders(engine: sa.Engine, ids: range) -> None:
    ORDERS.create_all(engine)
    with engine.begin() as conn:
        conn.execute(orders.insert(), [order(i) for i in ids])


def read(
    source: SqlSource,
    settings: Settings,
    tmp_path: Path,
    cursor: dict[str, Any] | None = None,
    *,
    threads: int | None = 1,
) -> tuple[pa.Table | None, Scan]:
    """Scan ``source`` and write it as the service does; the rows read back, and the scan.

    One DuckDB thread by default: with more, DuckDB 2.0's size-rotated COPY (``FILE_SIZE_BYTES``
    in ``storage.write_parts``) may interleave batches, and these tests check row order.
    """
    con = storage.connect(settings, threads=threads)
    work = tmp_path / f"work-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    ctx = ScanContext(con=con, settings=settings, workdir=work, cursor=cursor)
    scan = source.scan(ctx)
    try:
        if scan.relation is None:
            return None, scan
        parts = storage.write_parts(con, scan.relation, work / "parts")
        return pa.concat_tables([pq.read_table(p) for p in parts]), scan
    finally:
        if scan.close is not None:
            scan.close()
        con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ids(table: pa.Table | None) -> list[int]:
    assert table is not None
    return [int(v) for v in table.column("id").to_pylist()]


# ---- reading tables and queries ------------------------------------------------------------


def test_table_ingest_keeps_every_row_and_type(
    db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    add_orders(engine, range(1, 11))
    table, scan = read(SqlSource(url=db_url, table="orders"), settings, tmp_path)
    assert table is not None
    assert ids(table) == list(range(1, 11))
    assert scan.cursor is None
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "id": pa.int64(),
        "customer": pa.string(),
        "amount": pa.decimal128(10, 2),
        "price": pa.float64(),
        "paid": pa.bool_(),
        "created_at": pa.timestamp("us"),
        "day": pa.date32(),
        "note": pa.string(),
    }
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[7] == {
        "id": 7,
        "customer": "c007",
        "amount": Decimal("7.07"),
        "price": 3.5,
        "paid": True,
        "created_at": datetime(2024, 1, 8, 8, 0, 0),
        "day": date(2024, 3, 8),
        "note": "note 7",
    }
    assert rows[6]["paid"] is False and rows[6]["note"] is None
    assert rows[5] == {"id": 5} | dict.fromkeys(list(rows[5])[1:])  # all NULL but the key


def test_query_ingest(db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path) -> None:
    add_orders(engine, range(1, 11))
    # ':' inside a literal must not be taken for a bind parameter.
    query = (
        "SELECT id, customer, price * 2 AS doubled, 'a:b' AS tag FROM orders "
        "WHERE id >= 6 ORDER BY id DESC;"
    )
    table, _ = read(SqlSource(url=db_url, query=query), settings, tmp_path)
    assert table is not None
    assert table.column_names == ["id", "customer", "doubled", "tag"]
    assert ids(table) == [10, 9, 8, 7, 6]
    assert table.column("doubled").to_pylist() == [None, 9.0, 8.0, 7.0, 6.0]
    assert table.column("tag").to_pylist() == ["a:b"] * 5
    assert table.schema.field("doubled").type == pa.float64()


def test_schema_qualified_table(postgres_url: str, settings: Settings, tmp_path: Path) -> None:
    eng = sa.create_engine(postgres_url, poolclass=NullPool)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA sales"))
        conn.execute(sa.text("CREATE TABLE sales.items (sku text PRIMARY KEY, qty int)"))
        conn.execute(sa.text("INSERT INTO sales.items VALUES ('b', 2), ('a', 1)"))
    eng.dispose()
    table, _ = read(SqlSource(url=postgres_url, table="sales.items"), settings, tmp_path)
    assert table is not None
    # Ordered by the primary key, whatever the physical order.
    assert table.to_pylist() == [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]


def test_chunked_read_streams_every_row_in_order(
    db_url: str,
    engine: sa.Engine,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_orders(engine, range(1, 1001))
    chunks: list[int] = []
    make_batch = sql_module._batch

    def counting(schema: pa.Schema, rows: Any, chunk: int, label: str) -> pa.RecordBatch:
        chunks.append(len(rows))
        return make_batch(schema, rows, chunk, label)

    monkeypatch.setattr(sql_module, "_batch", counting)
    table, _ = read(SqlSource(url=db_url, table="orders", chunk_rows=64), settings, tmp_path)
    assert ids(table) == list(range(1, 1001))
    assert chunks == [64] * 15 + [40]  # 1000 rows in chunks of 64


def test_written_parts_keep_source_order_with_default_threads(
    postgres_url: str, settings: Settings, tmp_path: Path
) -> None:
    eng = sa.create_engine(postgres_url, poolclass=NullPool)
    add_orders(eng, range(1, 2001))
    eng.dispose()
    source = SqlSource(url=postgres_url, table="orders", chunk_rows=50)
    table, _ = read(source, settings, tmp_path, threads=None)
    assert ids(table) == list(range(1, 2001))


def test_column_null_in_first_chunk_keeps_declared_type(
    db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    ORDERS.create_all(engine)
    with engine.begin() as conn:
        conn.execute(orders.insert(), [{"id": i} for i in range(1, 4)])  # all NULL
        conn.execute(orders.insert(), [order(i) for i in range(11, 14)])
    table, _ = read(SqlSource(url=db_url, table="orders", chunk_rows=2), settings, tmp_path)
    assert table is not None
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    assert table.schema.field("created_at").type == pa.timestamp("us")
    assert table.column("amount").to_pylist() == [None] * 3 + [
        Decimal("11.11"),
        Decimal("12.12"),
        Decimal("13.13"),
    ]


def test_postgres_query_types(postgres_url: str, settings: Settings, tmp_path: Path) -> None:
    query = """
        SELECT i AS id,
               CASE WHEN i > 2 THEN i * 10 END AS late_int,
               (i * 1.25)::numeric(12, 3) AS exact,
               (i / 3.0)::numeric AS loose,
               TIMESTAMPTZ '2024-05-01 12:00:00+02' + make_interval(hours => i) AS at,
               jsonb_build_object('n', i, 'tags', jsonb_build_array('x', i)) AS doc,
               ('00000000-0000-0000-0000-00000000000' || i)::uuid AS uid,
               make_interval(mins => i) AS wait,
               ARRAY[i, i + 1] AS pair
        FROM generate_series(1, 5) AS i ORDER BY i
    """
    table, _ = read(SqlSource(url=postgres_url, query=query, chunk_rows=2), settings, tmp_path)
    assert table is not None
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "id": pa.int64(),
        "late_int": pa.int64(),  # NULL throughout the first chunk: typed from the driver
        "exact": pa.decimal128(12, 3),
        "loose": pa.float64(),  # numeric without precision
        "at": pa.timestamp("us", tz="UTC"),
        "doc": pa.string(),
        "uid": pa.string(),
        "wait": pa.float64(),  # seconds
        "pair": pa.string(),
    }
    first, last = table.to_pylist()[0], table.to_pylist()[-1]
    assert table.column("late_int").to_pylist() == [None, None, 30, 40, 50]
    assert first["exact"] == Decimal("1.250")
    assert math.isclose(first["loose"], 1 / 3, rel_tol=1e-12)
    assert first["at"].isoformat() == "2024-05-01T11:00:00+00:00"
    assert first["doc"] == '{"n": 1, "tags": ["x", 1]}'
    assert first["uid"] == "00000000-0000-0000-0000-000000000001"
    assert first["wait"] == 60.0
    assert last["pair"] == "[5, 6]"


def test_mariadb_query_types(mariadb_url: str, settings: Settings, tmp_path: Path) -> None:
    query = (
        "SELECT 1 AS id, CAST(12.5 AS DECIMAL(10,2)) AS amount, CAST('12:30:00' AS TIME) AS t, "
        "JSON_OBJECT('a', 1) AS doc, NULL AS nothing, TRUE AS yes"
    )
    table, _ = read(SqlSource(url=mariadb_url, query=query), settings, tmp_path)
    assert table is not None
    assert table.to_pylist() == [
        {
            "id": 1,
            "amount": Decimal("12.50"),
            "t": 45000.0,
            "doc": '{"a": 1}',
            "nothing": None,
            "yes": 1,
        }
    ]
    assert table.schema.field("amount").type.scale == 2
    assert table.schema.field("nothing").type == pa.string()


def test_sqlite_values_of_another_type_in_a_later_chunk_fail_clearly(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "loose.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 5), (2, 6), (3, "lots")])
    source = SqlSource(url=f"sqlite:///{path}", table="t", chunk_rows=2)
    with pytest.raises(Exception) as info:  # raised inside DuckDB's read of the stream
        read(source, settings, tmp_path)
    message = str(info.value)
    assert "Column 'qty'" in message and "'lots'" in message and "chunk 2" in message


# ---- incremental ---------------------------------------------------------------------------


def test_incremental_by_id_reads_only_new_rows(
    db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    add_orders(engine, range(1, 6))
    source = SqlSource(url=db_url, table="orders", cursor_column="id", chunk_rows=2)
    assert source.resumable
    table, scan = read(source, settings, tmp_path)
    assert ids(table) == [1, 2, 3, 4, 5]
    assert scan.cursor == {"value": 5, "type": "int"}

    with engine.begin() as conn:
        conn.execute(orders.insert(), [order(i) for i in (8, 6, 7)])
    table, scan = read(source, settings, tmp_path, cursor={"value": 5, "type": "int"})
    assert ids(table) == [6, 7, 8]  # ordered by the cursor column
    assert scan.cursor == {"value": 8, "type": "int"}

    table, scan = read(source, settings, tmp_path, cursor=scan.cursor)
    assert table is None and scan.cursor is None
    assert "No rows" in scan.message and "id > 8" in scan.message


def test_incremental_by_timestamp_in_a_query(
    db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    add_orders(engine, range(1, 5))
    # Multiples of 5 have a NULL created_at: never above a cursor, so never read.
    source = SqlSource(
        url=db_url,
        query="SELECT id, created_at FROM orders WHERE customer IS NOT NULL",
        cursor_column="created_at",
    )
    table, scan = read(source, settings, tmp_path)
    assert ids(table) == [1, 2, 3, 4]
    assert scan.cursor is not None and scan.cursor["type"] in ("timestamp", "string")
    assert str(scan.cursor["value"]).startswith("2024-01-05")

    with engine.begin() as conn:
        conn.execute(orders.insert(), [order(i) for i in (6, 7)])
    table, second = read(source, settings, tmp_path, cursor=scan.cursor)
    assert ids(table) == [6, 7]
    assert second.cursor is not None and str(second.cursor["value"]).startswith("2024-01-08")


def test_identity_ignores_tuning_knobs() -> None:
    url = "sqlite:///shop.db"
    base = SqlSource(url=url, table="orders", cursor_column="id")
    assert base.source_key == SqlSource(**{**base.describe(), "chunk_rows": 10}).source_key
    assert base.source_key == SqlSource(url=url, table="orders", cursor_column="id",
                                        connect_timeout=3).source_key  # fmt: skip
    assert base.source_key != SqlSource(url=url, table="orders2", cursor_column="id").source_key
    assert "chunk_rows" not in base.identity()
    assert SqlSource(url=url, table="orders").resumable is False


# ---- secrets ---------------------------------------------------------------------------------


def test_literal_password_is_refused() -> None:
    for url in (
        "postgresql+psycopg://app:hunter2@127.0.0.1/shop",
        "postgresql+psycopg://app:${secret:pg_pw}hunter2@127.0.0.1/shop",
        "mysql+pymysql://app@127.0.0.1/shop?password=hunter2",
    ):
        with pytest.raises(InvalidInput) as info:
            SqlSource(url=url, table="orders")
        assert "hunter2" not in str(info.value)
        assert "${secret:db_password}" in info.value.detail
        with pytest.raises(InvalidInput) as info:
            source_from_spec({"kind": "sql", "url": url, "table": "orders"})
        assert "hunter2" not in str(info.value)


def test_password_from_a_secret_postgres(
    postgres_url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = f"mw_app_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    eng = sa.create_engine(postgres_url, poolclass=NullPool)
    with eng.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(sa.text("CREATE TABLE orders (id int PRIMARY KEY, total numeric(8, 2))"))
        conn.execute(sa.text("INSERT INTO orders VALUES (1, 9.99), (2, 20)"))
        conn.execute(sa.text(f"GRANT SELECT ON orders TO {role}"))
    try:
        monkeypatch.setenv("MODELWORKS_SECRET_PG_PW", password)
        database = sa.make_url(postgres_url).database
        url = f"postgresql://{role}:${{secret:pg_pw}}@127.0.0.1:5432/{database}"
        source = SqlSource(url=url, table="orders")
        table, _ = read(source, settings, tmp_path)
        assert table is not None
        assert table.to_pylist() == [
            {"id": 1, "total": Decimal("9.99")},
            {"id": 2, "total": Decimal("20.00")},
        ]
        assert source.describe()["url"] == url
        assert password not in str(source.describe()) + source.label()
        assert f"{role}:***@127.0.0.1:5432" in source.label()

        with pytest.raises(InvalidInput) as info:
            read(SqlSource(url=url, table="missing"), settings, tmp_path)
        message = str(info.value)
        assert "'missing'" in message and "orders" in message and password not in message
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS orders"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        eng.dispose()


@pytest.fixture
def mariadb_user(mariadb_url: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password and SELECT on the test database."""
    user = f"mw_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    database = sa.make_url(mariadb_url).database
    eng = sa.create_engine(mariadb_url, poolclass=NullPool)
    with eng.begin() as conn:
        for host in ("%", "localhost", "127.0.0.1"):
            conn.execute(sa.text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"))
            conn.execute(sa.text(f"GRANT SELECT ON {database}.* TO '{user}'@'{host}'"))
        conn.execute(sa.text("CREATE TABLE orders (id INT PRIMARY KEY, flag BOOLEAN)"))
        conn.execute(sa.text("INSERT INTO orders VALUES (1, TRUE), (2, FALSE)"))
    yield user, password
    with eng.begin() as conn:
        for host in ("%", "localhost", "127.0.0.1"):
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
    eng.dispose()


def test_password_from_a_secret_mariadb(
    mariadb_url: str,
    mariadb_user: tuple[str, str],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, password = mariadb_user
    database = sa.make_url(mariadb_url).database
    url = f"mysql+pymysql://{user}:${{secret:maria_pw}}@127.0.0.1:3306/{database}"
    monkeypatch.setenv("MODELWORKS_SECRET_MARIA_PW", password)
    table, _ = read(SqlSource(url=url, table="orders"), settings, tmp_path)
    assert table is not None and table.to_pylist() == [
        {"id": 1, "flag": True},
        {"id": 2, "flag": False},
    ]

    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("MODELWORKS_SECRET_MARIA_PW", wrong)
    with pytest.raises(InvalidInput) as info:
        read(SqlSource(url=url, table="orders"), settings, tmp_path)
    message = info.value.detail
    assert "refused the login" in message and "127.0.0.1:3306" in message
    assert "'maria_pw'" in message and "modelworks secrets set maria_pw" in message
    assert wrong not in message and password not in message


def test_whole_url_as_a_secret(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (42)")
    monkeypatch.setenv("MODELWORKS_SECRET_WAREHOUSE_URL", f"sqlite:///{path}")
    source = SqlSource(url="${secret:warehouse_url}", table="t")
    table, _ = read(source, settings, tmp_path)
    assert table is not None and table.to_pylist() == [{"id": 42}]
    assert source.describe()["url"] == "${secret:warehouse_url}"
    assert str(path) not in source.label()


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_unreachable_database_names_host_and_port_not_password(
    scheme: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("MODELWORKS_SECRET_DB_PW", password)
    url = f"{scheme}://app:${{secret:db_pw}}@127.0.0.1:{port}/shop"
    with pytest.raises(ServiceUnavailable) as info:
        read(SqlSource(url=url, table="orders", connect_timeout=2), settings, tmp_path)
    message = info.value.detail
    assert f"127.0.0.1:{port}" in message
    assert "app:***@" in message
    assert password not in message
    assert "Traceback" not in message


# ---- errors --------------------------------------------------------------------------------


def test_bad_table_query_and_cursor_column_are_named(
    db_url: str, engine: sa.Engine, settings: Settings, tmp_path: Path
) -> None:
    add_orders(engine, range(1, 3))
    with pytest.raises(InvalidInput) as info:
        read(SqlSource(url=db_url, table="ordrs"), settings, tmp_path)
    assert "Table 'ordrs' does not exist" in info.value.detail
    assert "Tables there: orders" in info.value.detail

    with pytest.raises(InvalidInput) as info:
        read(SqlSource(url=db_url, query="SELECT nope FROM orders"), settings, tmp_path)
    assert "Reading the query 'SELECT nope FROM orders' failed" in info.value.detail
    assert "nope" in info.value.detail.split("failed:", 1)[1]

    with pytest.raises(InvalidInput) as info:
        read(SqlSource(url=db_url, table="orders", cursor_column="updated"), settings, tmp_path)
    assert "no column 'updated'" in info.value.detail and "created_at" in info.value.detail


def test_parameters_are_checked() -> None:
    with pytest.raises(InvalidInput, match="exactly one of table="):
        SqlSource(url="sqlite:///x.db")
    with pytest.raises(InvalidInput, match="exactly one of table="):
        SqlSource(url="sqlite:///x.db", table="t", query="SELECT 1")
    with pytest.raises(InvalidInput, match="not a table name"):
        SqlSource(url="sqlite:///x.db", table="a.b.c")
    with pytest.raises(InvalidInput, match="not a SQLAlchemy database URL"):
        SqlSource(url="not a url", table="t")
    with pytest.raises(InvalidInput, match="chunk_rows"):
        source_from_spec({"kind": "sql", "url": "sqlite:///x.db", "table": "t", "chunk_rows": 0})


def test_missing_sqlite_file_is_not_created(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "nowhere.db"
    with pytest.raises(InvalidInput, match="does not exist"):
        read(SqlSource(url=f"sqlite:///{path}", table="t"), settings, tmp_path)
    assert not path.exists()


# ---- through the dataset service ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_incremental_ingest_across_versions(
    kind: str, store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 'shop.db'}"
        sqlite3.connect(tmp_path / "shop.db").close()
    eng = sa.create_engine(url, poolclass=NullPool)
    add_orders(eng, range(1, 6))
    service = DataService(store)
    me = local_principal()
    source = SqlSource(url=url, table="orders", cursor_column="id", chunk_rows=2)

    with pytest.raises(InvalidInput, match="mode='append'"):
        service.ingest(me, "default", "orders", source, mode="replace")

    first = service.ingest(me, "default", "orders", source, mode="append")
    assert first.version is not None and first.version.version == 1 and first.rows == 5

    with eng.begin() as conn:
        conn.execute(orders.insert(), [order(i) for i in (6, 7, 8)])
    eng.dispose()
    # A new source object with another chunk size resumes the same cursor.
    again = SqlSource(url=url, table="orders", cursor_column="id", chunk_rows=100)
    second = service.ingest(me, "default", "orders", again, mode="append")
    assert second.version is not None and second.version.version == 2
    assert second.rows == 3 and second.version.row_count == 8
    _, paths = service.read_paths(me, "default", "orders@2")
    written = ids(pa.concat_tables([pq.read_table(p) for p in paths]))
    assert sorted(written) == list(range(1, 9))
    assert sorted(written[5:]) == [6, 7, 8]  # version 1's parts first, then the new ones
    assert second.version.source["params"]["url"] == url

    third = service.ingest(me, "default", "orders", source, mode="append")
    assert third.version is None and third.rows == 0
    assert "No rows" in third.message


def test_snapshot_table_may_replace(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    eng = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    add_orders(eng, range(1, 4))
    service = DataService(store)
    me = local_principal()
    source = SqlSource(url=f"sqlite:///{path}", table="orders")
    service.ingest(me, "default", "orders", source)
    with eng.begin() as conn:
        conn.execute(orders.insert(), [order(4)])
    eng.dispose()
    result = service.ingest(me, "default", "orders", source, mode="replace")
    assert result.version is not None and result.version.version == 2
    assert result.version.row_count == 4
