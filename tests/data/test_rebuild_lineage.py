"""Recipes rebuild bit for bit, tampering is caught, and lineage links sources, versions and
transforms."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pandas as pd
import pytest

from modelworks.core.auth import local_principal
from modelworks.core.errors import InvalidInput
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.models import DatasetVersion
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.data.transform_service import TransformService

P = "default"

CHURN = pd.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6, 6],
        "plan": ["basic", "pro", "basic", "team", "pro", None, None],
        "tenure": [3, 14, 25, 7, 30, 1, 1],
        "spend": [10.5, 99.0, None, 300.0, 120.0, 9.75, 9.75],
        "city": [" Paris", "lyon ", "PARIS", "Lyon", "nice", "Nice", "Nice"],
    }
)
PLANS = pd.DataFrame({"plan": ["basic", "pro", "team"], "price": [10, 100, 250]})

FUNCS = """
import pandas as pd
import pyarrow as pa


def enrich(churn: pd.DataFrame, plans: pd.DataFrame) -> pd.DataFrame:
    out = churn.merge(plans, on="plan", how="left")
    out["ratio"] = out["spend"] / out["price"]
    return out.sort_values("id", kind="stable").reset_index(drop=True)


def spenders(churn: pa.Table) -> pa.Table:
    return churn.filter(pa.compute.greater(churn["spend"], 50))
"""


@pytest.fixture
def data(store: Store) -> DataService:
    data = DataService(store)
    data.ingest(local_principal(), P, "churn", FrameSource.of(CHURN))
    data.ingest(local_principal(), P, "plans", FrameSource.of(PLANS))
    return data


@pytest.fixture
def tx(store: Store) -> TransformService:
    return TransformService(store)


@pytest.fixture
def funcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A real, importable module of transform functions (as a user's project would have)."""
    name = f"mw_recipes_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / f"{name}.py").write_text(FUNCS)
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def read(data: DataService, ref: str) -> pd.DataFrame:
    _, paths = data.read_paths(local_principal(), P, ref)
    con = duckdb.connect()
    try:
        return storage.relation_of(con, paths).df()
    finally:
        con.close()


def made(result: Any) -> str:
    assert result.version is not None
    return str(result.version.ref)


def tamper(store: Store, data: DataService, ref: str, **changes: Any) -> None:
    """Edit a version's stored recipe behind the service's back."""
    version = data.get_version(local_principal(), P, ref)
    with store.transaction() as s:
        row = s.get(DatasetVersion, version.id)
        assert row is not None and row.recipe is not None
        row.recipe = {**row.recipe, **changes}


JOIN = """
    SELECT c.id, c.city, c.spend, p.price, c.spend / p.price AS ratio
    FROM "churn@latest" c LEFT JOIN "plans@1" p USING (plan)
    ORDER BY c.id
"""
STEPS: list[dict[str, Any]] = [
    {"op": "deduplicate"},
    {"op": "impute", "columns": ["spend"], "strategy": "median"},
    {"op": "clip", "columns": ["tenure"], "method": "quantile", "lower": 0.1, "upper": 0.9},
    {"op": "normalize_text", "columns": ["city"], "remove_accents": True},
    {"op": "filter", "where": "tenure >= 2"},
]


# ---- bit for bit -------------------------------------------------------------------------------
def test_a_sql_recipe_rebuilds_bit_for_bit(data: DataService, tx: TransformService) -> None:
    ref = made(tx.sql(local_principal(), P, JOIN, "joined"))
    result = tx.rebuild(local_principal(), P, ref)
    stored = data.get_version(local_principal(), P, ref)
    assert result.identical is True
    assert result.expected_hash == result.rebuilt_hash == stored.content_hash
    assert result.rows == stored.row_count == len(CHURN)
    assert "bit for bit" in result.message
    assert data.get_version(local_principal(), P, "joined@latest").version == 1  # nothing stored


def test_a_clean_recipe_rebuilds_bit_for_bit(data: DataService, tx: TransformService) -> None:
    ref = made(tx.clean(local_principal(), P, "churn@1", STEPS, output="churn-clean"))
    result = tx.rebuild(local_principal(), P, ref)
    assert result.identical is True and result.rows == 6  # one duplicate row dropped


def test_a_python_recipe_rebuilds_bit_for_bit(
    data: DataService, tx: TransformService, funcs: ModuleType
) -> None:
    ref = made(tx.python(local_principal(), P, funcs.enrich, ["churn@1", "plans@latest"], "rich"))
    recipe = data.get_version(local_principal(), P, ref).recipe or {}
    assert recipe["rebuildable"] is True and recipe["function"] == f"{funcs.__name__}:enrich"
    assert tx.rebuild(local_principal(), P, ref).identical is True
    arrow_ref = made(tx.python(local_principal(), P, funcs.spenders, ["churn@1"], "spenders"))
    assert tx.rebuild(local_principal(), P, arrow_ref).identical is True


def test_many_parts_keep_their_order_and_rebuild_bit_for_bit(
    data: DataService, tx: TransformService
) -> None:
    # Appends make a version of several Parquet parts: the input spans file boundaries.
    n, chunk = 240_000, 80_000
    frame = pd.DataFrame({"i": range(n), "key": [i % 150_000 for i in range(n)]})
    frame["x"] = frame["i"] * 0.5
    for start in range(0, n, chunk):
        part = frame.iloc[start : start + chunk].reset_index(drop=True)
        data.ingest(local_principal(), P, "big", FrameSource.of(part), mode="append")
    assert len(data.get_version(local_principal(), P, "big@3").files) == 3

    steps = [{"op": "deduplicate", "columns": ["key"]}, {"op": "clip", "columns": ["x"]}]
    cleaned = made(tx.clean(local_principal(), P, "big@3", steps, output="big-clean"))
    got = read(data, cleaned)
    # The first row of each key, in input order, across part boundaries.
    assert got["i"].tolist() == list(range(150_000))
    assert tx.rebuild(local_principal(), P, cleaned).identical is True

    keep_last = [{"op": "deduplicate", "columns": ["key"], "keep": "last"}]
    last = made(tx.clean(local_principal(), P, "big@3", keep_last, output="big-last"))
    expected = frame.drop_duplicates(subset=["key"], keep="last")["i"].tolist()
    assert read(data, last)["i"].tolist() == expected
    assert tx.rebuild(local_principal(), P, last).identical is True

    grouped = 'SELECT key, sum(x) AS total, count(*) AS n FROM "big@3" GROUP BY key'
    summary = made(tx.sql(local_principal(), P, grouped, "totals"))
    assert tx.rebuild(local_principal(), P, summary).identical is True


def test_an_appended_version_rebuilds_with_the_parts_it_shares(
    data: DataService, tx: TransformService
) -> None:
    tx.sql(local_principal(), P, 'SELECT id FROM "churn@1" WHERE id < 3', "ids")
    ref = made(
        tx.sql(local_principal(), P, 'SELECT id FROM "churn@1" WHERE id > 4', "ids", mode="append")
    )
    assert tx.rebuild(local_principal(), P, ref).identical is True
    with pytest.raises(InvalidInput, match="appended rows to ids@1"):
        tx.rebuild(local_principal(), P, ref, write=True)


def test_rebuild_with_write_stores_a_new_identical_version(
    data: DataService, tx: TransformService
) -> None:
    ref = made(tx.clean(local_principal(), P, "churn@1", STEPS, output="churn-clean"))
    result = tx.rebuild(local_principal(), P, ref, write=True)
    assert result.identical is True and "Stored as churn-clean@2" in result.message
    first = data.get_version(local_principal(), P, ref)
    second = data.get_version(local_principal(), P, "churn-clean@2")
    assert second.content_hash == first.content_hash and second.files == first.files
    assert second.recipe == first.recipe
    edges = data.lineage(local_principal(), P, "churn-clean@2", direction="up", depth=1).edges
    assert [(e.parent.label, e.relation) for e in edges] == [("churn@1", "derived_from")]


# ---- tampering and what cannot be rebuilt ------------------------------------------------------
def test_a_recipe_pointing_at_other_inputs_is_detected(
    store: Store, data: DataService, tx: TransformService
) -> None:
    ref = made(tx.sql(local_principal(), P, JOIN, "joined"))
    data.ingest(local_principal(), P, "churn", FrameSource.of(CHURN.head(4)))  # churn@2
    assert tx.rebuild(local_principal(), P, ref).identical is True  # still pinned to churn@1
    tamper(store, data, ref, inputs={"churn@latest": "churn@2", "plans@1": "plans@1"})
    result = tx.rebuild(local_principal(), P, ref)
    assert result.identical is False and result.rebuilt_hash != result.expected_hash
    assert result.rows == 4
    assert "7 rows were stored, 4 rebuilt" in result.message
    assert "recipe or its inputs were changed" in result.message


def test_edited_statistics_are_detected(
    store: Store, data: DataService, tx: TransformService
) -> None:
    ref = made(tx.clean(local_principal(), P, "churn@1", STEPS, output="churn-clean"))
    computed = data.get_version(local_principal(), P, ref).recipe["computed"]  # type: ignore[index]
    assert computed["1"]["spend"] == pytest.approx(CHURN.drop_duplicates()["spend"].median())
    tamper(store, data, ref, computed={**computed, "1": {"spend": 0.0}})
    result = tx.rebuild(local_principal(), P, ref)
    assert result.identical is False and "same row count (6), different bytes" in result.message
    tamper(store, data, ref, computed={})
    with pytest.raises(InvalidInput, match="no computed value 'spend' for step 2"):
        tx.rebuild(local_principal(), P, ref)


def test_a_different_engine_is_named_as_the_likely_cause(
    store: Store, data: DataService, tx: TransformService
) -> None:
    ref = made(tx.sql(local_principal(), P, JOIN, "joined"))
    edited = JOIN.replace("ORDER BY", "WHERE c.id < 3 ORDER BY")
    tamper(store, data, ref, engine="duckdb 0.9.2", sql=edited)
    result = tx.rebuild(local_principal(), P, ref)
    assert result.identical is False and result.rows == 2
    assert "it was made with duckdb 0.9.2 and this is duckdb" in result.message


def test_a_changed_python_function_is_detected(
    data: DataService, tx: TransformService, funcs: ModuleType
) -> None:
    ref = made(tx.python(local_principal(), P, funcs.enrich, ["churn@1", "plans@1"], "rich"))
    path = Path(str(funcs.__file__))
    path.write_text(FUNCS.replace('out["spend"] / out["price"]', 'out["spend"] / out["price"] * 2'))
    sys.modules.pop(funcs.__name__)
    importlib.invalidate_caches()
    with pytest.raises(InvalidInput) as err:
        tx.rebuild(local_principal(), P, ref)
    assert f"The code of {funcs.__name__}:enrich changed since rich@1 was made" in err.value.detail
    path.write_text(FUNCS.replace("def enrich", "def enriched"))
    sys.modules.pop(funcs.__name__)
    with pytest.raises(InvalidInput, match="has no 'enrich' any more"):
        tx.rebuild(local_principal(), P, ref)


def test_functions_that_cannot_be_imported_again_are_not_rebuilt(
    data: DataService, tx: TransformService
) -> None:
    def local(df: pd.DataFrame) -> pd.DataFrame:
        return df

    ref = made(tx.python(local_principal(), P, local, ["churn@1"], "copy"))
    with pytest.raises(InvalidInput) as err:
        tx.rebuild(local_principal(), P, ref)
    assert "cannot be run again" in err.value.detail
    assert "defined inside another function" in err.value.detail


def test_an_ingested_version_has_no_recipe_to_rebuild(
    data: DataService, tx: TransformService
) -> None:
    with pytest.raises(InvalidInput) as err:
        tx.rebuild(local_principal(), P, "churn@1")
    assert err.value.detail.startswith(
        "churn@1 was ingested from a source, not made by a recipe; re-ingest it instead"
    )


def test_an_unknown_recipe_kind_is_explained(
    store: Store, data: DataService, tx: TransformService
) -> None:
    ref = made(tx.sql(local_principal(), P, JOIN, "joined"))
    tamper(store, data, ref, kind="spark")
    with pytest.raises(InvalidInput, match="recipe of kind 'spark'"):
        tx.rebuild(local_principal(), P, ref)


# ---- lineage -----------------------------------------------------------------------------------
def test_lineage_runs_from_the_source_through_transforms(
    data: DataService, tx: TransformService
) -> None:
    joined = made(tx.sql(local_principal(), P, JOIN, "joined"))
    cleaned = made(
        tx.clean(local_principal(), P, joined, [{"op": "drop_nulls", "columns": ["price"]}])
    )
    assert cleaned == "joined@2"

    up = data.lineage(local_principal(), P, cleaned, direction="up")
    assert up.root.label == "joined@2"
    edges = {(e.parent.label, e.child.label, e.relation) for e in up.edges}
    assert edges == {
        ("joined@1", "joined@2", "derived_from"),
        ("churn@1", "joined@1", "derived_from"),
        ("plans@1", "joined@1", "derived_from"),
        ("pandas frame (7 rows)", "churn@1", "ingested_from"),
        ("pandas frame (3 rows)", "plans@1", "ingested_from"),
    }
    types = {n.label: n.type for n in up.nodes}
    assert types["pandas frame (7 rows)"] == "source"
    assert types["churn@1"] == types["joined@2"] == "dataset_version"

    down = data.lineage(local_principal(), P, "churn@1", direction="down")
    assert {(e.parent.label, e.child.label) for e in down.edges} == {
        ("churn@1", "joined@1"),
        ("joined@1", "joined@2"),
    }
    both = data.lineage(local_principal(), P, joined, direction="both", depth=1)
    assert {(e.parent.label, e.child.label, e.relation) for e in both.edges} == {
        ("churn@1", "joined@1", "derived_from"),
        ("plans@1", "joined@1", "derived_from"),
        ("joined@1", "joined@2", "derived_from"),
    }


def test_a_join_has_two_parents_and_a_self_join_one(
    data: DataService, tx: TransformService
) -> None:
    joined = made(tx.sql(local_principal(), P, JOIN, "joined"))
    parents = data.lineage(local_principal(), P, joined, direction="up", depth=1).edges
    assert sorted((e.parent.label, e.relation) for e in parents) == [
        ("churn@1", "derived_from"),
        ("plans@1", "derived_from"),
    ]
    pairs = 'SELECT a.id FROM "churn@latest" a JOIN "churn@1" b USING (id)'
    selfjoin = made(tx.sql(local_principal(), P, pairs, "pairs"))
    edges = data.lineage(local_principal(), P, selfjoin, direction="up", depth=1).edges
    assert [(e.parent.label, e.relation) for e in edges] == [("churn@1", "derived_from")]


def test_python_transforms_link_every_input(
    data: DataService, tx: TransformService, funcs: ModuleType
) -> None:
    ref = made(tx.python(local_principal(), P, funcs.enrich, ["churn@1", "plans@1"], "rich"))
    edges = data.lineage(local_principal(), P, ref, direction="up", depth=1).edges
    assert sorted(e.parent.label for e in edges) == ["churn@1", "plans@1"]
    assert {e.relation for e in edges} == {"derived_from"}
