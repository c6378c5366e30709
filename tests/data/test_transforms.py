"""SQL and Python transforms: refs found by the parser, inputs pinned, only versions readable."""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelworks.core.auth import local_principal
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.data.transform_service import TransformService
from modelworks.data.transforms import ENGINE, check_select, sandbox

P = "default"


@pytest.fixture
def data(store: Store) -> DataService:
    return DataService(store)


@pytest.fixture
def tx(store: Store) -> TransformService:
    return TransformService(store)


def ingest(data: DataService, name: str, df: pd.DataFrame) -> str:
    result = data.ingest(local_principal(), P, name, FrameSource.of(df))
    assert result.version is not None
    return result.version.ref


def read(data: DataService, ref: str) -> pd.DataFrame:
    _, paths = data.read_paths(local_principal(), P, ref)
    con = duckdb.connect()
    try:
        return storage.relation_of(con, paths).df()
    finally:
        con.close()


CHURN = pd.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "plan": ["basic", "pro", "basic", "team", "pro", "basic"],
        "tenure": [3, 14, 25, 7, 30, 1],
        "spend": [10.5, 99.0, 12.25, 300.0, 120.0, 9.75],
    }
)
PLANS = pd.DataFrame({"plan": ["basic", "pro", "team"], "price": [10, 100, 250]})


# ---- finding refs ---------------------------------------------------------------------------
def test_refs_come_from_the_parser_not_from_strings_or_comments() -> None:
    sql = """
        -- "ignored@1" in a comment
        WITH recent AS (SELECT * FROM "churn@latest" WHERE note <> '"decoy@2"')
        SELECT r.*, p.price, '"also@3" is text' AS s /* "nor@4" */
        FROM recent r JOIN "plans@golden" p USING (plan)
        WHERE r.id IN (SELECT id FROM "churn@3")
    """
    assert check_select(sql) == ["churn@latest", "plans@golden", "churn@3"]


def test_the_same_ref_twice_is_one_input() -> None:
    sql = 'SELECT * FROM "a@1" x JOIN "a@1" y USING (id) UNION ALL SELECT * FROM "a@1", "a@1"'
    assert check_select(sql) == ["a@1"]


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
SELECTORS = st.one_of(st.integers(1, 999).map(str), st.just("latest"), st.just("gold"))


@settings(max_examples=60, deadline=None)
@given(
    tables=st.lists(st.tuples(NAMES, SELECTORS), min_size=1, max_size=4),
    decoys=st.lists(st.tuples(NAMES, SELECTORS), max_size=3),
)
def test_property_refs_are_exactly_the_tables_named(
    tables: list[tuple[str, str]], decoys: list[tuple[str, str]]
) -> None:
    refs = [f"{n}@{s}" for n, s in tables]
    fake = [f"{n}@{s}" for n, s in decoys]
    froms = ", ".join(f'"{r}" t{i}' for i, r in enumerate(refs))
    text = " || ".join(f"'\"{d}\" ''{d}'''" for d in fake) or "'none'"
    comments = " ".join(f'/* "{d}" */' for d in fake)
    sql = f"SELECT {text} AS s {comments} FROM {froms} -- {' '.join(fake)}"
    assert check_select(sql) == list(dict.fromkeys(refs))


# ---- what a transform may say ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DROP TABLE t", "DROP"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ("ATTACH 'other.db'", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA version", "PRAGMA"),
        ("SET threads = 4", "SET"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
    ],
)
def test_only_select_queries_are_transforms(sql: str, kind: str) -> None:
    with pytest.raises(InvalidInput, match=f"Only SELECT.*this is a {kind}"):
        check_select(sql)


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('/data/*.parquet')", "read_parquet"),
        ("SELECT * FROM glob('/home/*')", "glob"),
        ("SELECT * FROM query('SELECT 1')", "query"),
        ("SELECT * FROM read_text('/etc/hosts')", "read_text"),
        ("SELECT * FROM \"a@1\" WHERE x IN (SELECT x FROM read_csv('f.csv'))", "read_csv"),
        ("WITH t AS (SELECT * FROM read_json('x.json')) SELECT * FROM t", "read_json"),
        ("SELECT * FROM '/etc/passwd'", "'/etc/passwd' is not a dataset version"),
        ('SELECT * FROM "data.parquet"', "'data.parquet' is not a dataset version"),
        ("SELECT * FROM churn", 'e.g. "churn@latest"'),
        ("SELECT * FROM main.churn", "'main.churn' is not a dataset version"),
    ],
)
def test_transforms_read_only_dataset_versions(sql: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_select(sql)
    assert says in err.value.detail


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("", "needs a query"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("SELEC * FROM x", "does not parse"),
        ('SELECT * FROM "churn@"', "ends with '@'"),
        ('PIVOT "churn@1" ON plan USING sum(spend)', "must list its values"),
    ],
)
def test_malformed_sql_is_explained(sql: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_select(sql)
    assert says in err.value.detail


def test_ctes_and_generated_rows_are_allowed() -> None:
    sql = "WITH n AS (SELECT range AS i FROM range(3)) SELECT * FROM n, unnest([1, 2]) u(x)"
    assert check_select(sql) == []


def test_sandbox_reads_only_the_versions_it_was_given(
    data: DataService, store: Store, tmp_path: Any
) -> None:
    ingest(data, "churn", CHURN)
    _, paths = data.read_paths(local_principal(), P, "churn@1")
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    secret = pd.DataFrame({"a": [1]})  # a Python variable a replacement scan could pick up
    box = sandbox(store.settings, {"churn@1": paths})
    try:
        assert box.sql('SELECT count(*) FROM "churn@1"').fetchall() == [(6,)]
        # What the parser checks refuse, the sandbox refuses too: it is the real guarantee.
        for sql in (
            f"SELECT * FROM read_csv('{outside}')",
            f"SELECT * FROM '{outside}'",
            "SELECT * FROM secret",
            "SET enable_external_access = true",
        ):
            with pytest.raises(duckdb.Error):
                box.sql(sql).fetchall()
    finally:
        box.close()
    assert len(secret) == 1


# ---- SQL transforms ---------------------------------------------------------------------------
def test_sql_transform_joins_pins_inputs_and_matches_pandas(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN.head(3))
    ingest(data, "churn", CHURN)  # churn@latest is now churn@2
    ingest(data, "plans", PLANS)
    sql = """
        SELECT c.plan, count(*) AS customers, sum(c.spend) AS spend, any_value(p.price) AS price
        FROM "churn@latest" c JOIN "plans@1" p USING (plan)
        WHERE c.tenure > 2
        GROUP BY c.plan ORDER BY c.plan
    """
    result = tx.sql(local_principal(), P, sql, "plan-summary", message="by plan")
    v = result.version
    assert v is not None and v.ref == "plan-summary@1" and v.message == "by plan"
    assert v.recipe == {
        "kind": "sql",
        "sql": sql,
        "inputs": {"churn@latest": "churn@2", "plans@1": "plans@1"},
        "engine": ENGINE,
    }
    assert v.source["kind"] == "sql_transform"
    assert v.source["params"]["inputs"] == {"churn@latest": "churn@2", "plans@1": "plans@1"}
    assert v.source["params"]["sql"] == sql

    joined = CHURN[CHURN.tenure > 2].merge(PLANS, on="plan")
    expected = (
        joined.groupby("plan")
        .agg(customers=("id", "count"), spend=("spend", "sum"), price=("price", "first"))
        .reset_index()
    )
    got = read(data, "plan-summary@1")
    assert got["plan"].tolist() == expected["plan"].tolist()
    assert got["customers"].tolist() == expected["customers"].tolist()
    assert got["spend"].tolist() == pytest.approx(expected["spend"].tolist())
    assert got["price"].tolist() == expected["price"].tolist()
    assert result.rows == len(expected) == v.row_count


def test_a_transform_can_make_a_new_version_of_its_own_input(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    v = tx.sql(local_principal(), P, 'SELECT * FROM "churn@latest" WHERE tenure >= 7', "churn")
    assert v.version is not None and v.version.ref == "churn@2"
    assert read(data, "churn@2")["id"].tolist() == CHURN[CHURN.tenure >= 7]["id"].tolist()
    assert v.version.recipe and v.version.recipe["inputs"] == {"churn@latest": "churn@1"}


def test_sql_errors_carry_duckdbs_message_and_the_known_refs(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    with pytest.raises(InvalidInput) as err:
        tx.sql(local_principal(), P, 'SELECT nope FROM "churn@latest"', "out")
    assert 'column "nope" not found' in err.value.detail
    assert '"churn@latest" (churn@1)' in err.value.detail
    assert "Traceback" not in err.value.detail


def test_an_unknown_version_is_not_found_and_names_the_latest(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    with pytest.raises(NotFound, match=r"no version 7; latest is 1"):
        tx.sql(local_principal(), P, 'SELECT * FROM "churn@7"', "out")
    with pytest.raises(NotFound, match="'ghost' does not exist"):
        tx.sql(local_principal(), P, 'SELECT * FROM "ghost@latest"', "out")


def test_refs_differing_only_in_case_are_refused(data: DataService, tx: TransformService) -> None:
    ingest(data, "churn", CHURN)
    with pytest.raises(InvalidInput, match="differ only in case"):
        tx.sql(local_principal(), P, 'SELECT * FROM "churn@1", "CHURN@1"', "out")


def test_sql_transform_can_append(data: DataService, tx: TransformService) -> None:
    ingest(data, "churn", CHURN)
    tx.sql(local_principal(), P, 'SELECT id FROM "churn@1" WHERE id <= 2', "ids")
    r = tx.sql(local_principal(), P, 'SELECT id FROM "churn@1" WHERE id > 4', "ids", mode="append")
    assert r.version is not None and r.version.mode == "append" and r.rows == 2
    assert read(data, "ids@2")["id"].tolist() == [1, 2, 5, 6]


def test_an_empty_result_makes_no_version(data: DataService, tx: TransformService) -> None:
    ingest(data, "churn", CHURN)
    with pytest.raises(InvalidInput, match="no rows"):
        tx.sql(local_principal(), P, 'SELECT * FROM "churn@1" WHERE false', "empty")


# ---- Python transforms ------------------------------------------------------------------------
def add_price(churn: pd.DataFrame, plans: pd.DataFrame) -> pd.DataFrame:
    out = churn.merge(plans, on="plan", how="left")
    out["margin"] = out["spend"] - out["price"]
    return out


def arrow_fn(churn: pa.Table) -> pa.Table:
    assert isinstance(churn, pa.Table)
    return churn.select(["id", "spend"]).filter(pc.greater(churn["spend"], 50))


def polars_fn(churn: pl.DataFrame) -> pl.DataFrame:
    assert isinstance(churn, pl.DataFrame)
    return churn.group_by("plan").agg(pl.col("spend").sum()).sort("plan")


def test_python_transform_gets_dataframes_and_records_a_recipe(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    ingest(data, "plans", PLANS)
    result = tx.python(local_principal(), P, add_price, ["churn@latest", "plans@1"], "priced")
    v = result.version
    assert v is not None and v.ref == "priced@1"
    got = read(data, "priced@1")
    expected = add_price(CHURN, PLANS)
    assert got["margin"].tolist() == pytest.approx(expected["margin"].tolist())
    assert got["id"].tolist() == expected["id"].tolist()
    recipe = v.recipe or {}
    assert recipe["kind"] == "python"
    assert recipe["function"] == f"{add_price.__module__}:add_price"
    assert len(recipe["source_sha256"]) == 64
    assert recipe["inputs"] == {"churn@latest": "churn@1", "plans@1": "plans@1"}
    assert recipe["args"] == ["churn@1", "plans@1"]
    assert recipe["takes"] == ["pandas", "pandas"]
    assert recipe["engine"] == ENGINE and "pyarrow" in recipe["libraries"]
    assert v.source["kind"] == "python_transform"


def test_python_transform_hands_arrow_or_polars_when_annotated(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    a = tx.python(local_principal(), P, arrow_fn, ["churn@1"], "big-spend")
    assert a.version is not None and a.version.recipe and a.version.recipe["takes"] == ["arrow"]
    assert read(data, "big-spend@1")["id"].tolist() == CHURN[CHURN.spend > 50]["id"].tolist()
    p = tx.python(local_principal(), P, polars_fn, ["churn@1"], "by-plan")
    assert p.version is not None and p.version.recipe and p.version.recipe["takes"] == ["polars"]
    expected = CHURN.groupby("plan")["spend"].sum()
    got = read(data, "by-plan@1").set_index("plan")["spend"]
    assert got.to_dict() == pytest.approx(expected.to_dict())


def test_a_lambda_runs_but_is_marked_not_rebuildable(
    data: DataService, tx: TransformService
) -> None:
    ingest(data, "churn", CHURN)
    result = tx.python(local_principal(), P, lambda df: df[df.tenure > 10], ["churn@1"], "long")
    assert result.version is not None and result.rows == int((CHURN.tenure > 10).sum())
    recipe = result.version.recipe or {}
    assert recipe["rebuildable"] is False and "lambda" in recipe["not_rebuildable_because"]
    assert "cannot make it again" in result.message and "lambda" in result.message


def test_python_transform_errors_are_explained(data: DataService, tx: TransformService) -> None:
    ingest(data, "churn", CHURN)

    def boom(df: pd.DataFrame) -> pd.DataFrame:
        raise ValueError("bad plan")

    with pytest.raises(InvalidInput, match="raised ValueError: bad plan") as err:
        tx.python(local_principal(), P, boom, ["churn@1"], "out")
    assert isinstance(err.value.__cause__, ValueError)  # the user's traceback is kept
    with pytest.raises(InvalidInput, match="returned a int"):
        tx.python(local_principal(), P, lambda df: 3, ["churn@1"], "out")
    with pytest.raises(InvalidInput, match="cannot take 2 table"):
        tx.python(local_principal(), P, lambda df: df, ["churn@1", "churn@1"], "out")
    with pytest.raises(InvalidInput, match="at least one input"):
        tx.python(local_principal(), P, lambda: None, [], "out")
    with pytest.raises(NotFound, match="latest is 1"):
        tx.python(local_principal(), P, lambda df: df, ["churn@4"], "out")
