"""The data SDK, run against both transports (see conftest: ``ws`` is embedded or remote)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import polars.testing
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import modelworks as mw
from modelworks.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelworks.data import storage
from modelworks.data.client import DatasetVersion


@pytest.fixture
def name() -> str:
    """A fresh dataset name: the remote server is shared by the whole session."""
    return f"ds-{uuid.uuid4().hex[:10]}"


def frame(n: int, start: int = 0, **extra: Any) -> pd.DataFrame:
    data: dict[str, Any] = {
        "id": list(range(start, start + n)),
        "x": [i / 4 for i in range(start, start + n)],
        "label": [f"c{i % 3}" if i % 5 else None for i in range(start, start + n)],
        "flag": [i % 2 == 0 for i in range(start, start + n)],
    }
    data.update(extra)
    return pd.DataFrame(data)


# ---- ingest and read back ------------------------------------------------------------------
def test_ingest_a_frame_and_read_it_back_every_way(ws: mw.Workspace, name: str) -> None:
    df = frame(50)
    v = ws.datasets.ingest(df, name, message="first export")
    assert isinstance(v, DatasetVersion)
    assert (v.ref, v.version, v.row_count, v.status) == (f"{name}@1", 1, 50, "ready")
    assert v.column_names == ["id", "x", "label", "flag"]
    assert [c.type for c in v.columns] == ["int64", "double", "string", "bool"]
    assert v.message == "first export" and v.mode == "replace"
    assert v.ingest_result is not None and v.ingest_result.rows == 50
    assert v.size_bytes == sum(f.size for f in v.files) > 0

    got = ws.datasets.get(f"{name}@latest")
    assert got == v and got.ref == f"{name}@1"
    pd.testing.assert_frame_equal(got.to_pandas(), df)
    polars.testing.assert_frame_equal(got.to_polars(), pl.from_pandas(df))
    table = got.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == df.astype(object).where(df.notna(), None).to_dict("records")
    rel = got.to_duckdb()
    assert rel.order("id").fetchall() == list(
        df.astype(object).where(df.notna(), None).itertuples(index=False, name=None)
    )
    assert rel.filter("flag").count("*").fetchall() == [(25,)]
    assert got.to_pandas(columns=["x", "id"]).columns.tolist() == ["x", "id"]
    with pytest.raises(InvalidInput, match="no column"):
        got.to_arrow(columns=["nope"])


def test_polars_and_arrow_frames(ws: mw.Workspace, name: str) -> None:
    pl_df = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    v = ws.datasets.ingest(pl_df, name)
    assert v is not None
    polars.testing.assert_frame_equal(v.to_polars(), pl_df)
    table = pa.table({"a": pa.array([4, 5], pa.int64()), "b": pa.array(["z", "w"])})
    v2 = ws.datasets.ingest(table, name, mode="append")
    assert v2 is not None and v2.row_count == 5
    assert v2.to_arrow().column("a").to_pylist() == [1, 2, 3, 4, 5]


def test_reading_uses_verified_local_parts(ws: mw.Workspace, name: str) -> None:
    v = ws.datasets.ingest(frame(10), name)
    assert v is not None
    paths = v.paths()
    assert len(paths) == len(v.files) >= 1
    for path, part in zip(paths, v.files, strict=True):
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == part.sha256
        if ws.mode == "remote":
            # Downloaded once into this machine's cache, then read from there.
            assert path == str(storage.cache_path(ws.datasets._backend.settings, part.sha256))
    again = ws.datasets.get(v.ref)
    assert again.paths() == paths


def test_ingest_local_files_by_extension(ws: mw.Workspace, name: str, tmp_path: Path) -> None:
    df = frame(12)
    csv = tmp_path / "export.csv"
    df.to_csv(csv, index=False)
    v = ws.datasets.ingest(str(csv), name)
    assert v is not None and v.row_count == 12
    assert v.to_pandas()["id"].tolist() == list(range(12))
    parquet = tmp_path / "more.parquet"
    pq.write_table(pa.Table.from_pandas(frame(3, start=12)), parquet)
    v2 = ws.datasets.ingest(parquet, name, mode="append")
    assert v2 is not None and v2.row_count == 15
    assert v2.to_pandas()["id"].tolist() == list(range(15))

    gz = tmp_path / "export.csv.gz"
    df.to_csv(gz, index=False, compression="gzip")
    zipped = ws.datasets.ingest(gz, name + "-gz")
    assert zipped is not None and zipped.to_pandas()["id"].tolist() == list(range(12))

    odd = tmp_path / "x.unknown"
    odd.write_text("id\n1\n")
    with pytest.raises(InvalidInput, match="Cannot tell the format"):
        ws.datasets.ingest(str(odd), name)
    other = ws.datasets.ingest(odd, name + "-odd", format="csv")
    assert other is not None and other.row_count == 1
    with pytest.raises(InvalidInput, match="not a file"):
        ws.datasets.ingest(str(tmp_path / "missing.csv"), name)
    with pytest.raises(InvalidInput, match="Cannot ingest a"):
        ws.datasets.ingest(object(), name)


# ---- versions, refs, append ----------------------------------------------------------------
def test_append_refs_and_tags(ws: mw.Workspace, name: str) -> None:
    ws.datasets.ingest(frame(10), name)
    v2 = ws.datasets.ingest(frame(5, start=10), name, mode="append")
    assert v2 is not None
    assert (v2.version, v2.row_count, v2.mode, v2.info.parent_version) == (2, 15, "append", 1)
    assert v2.to_pandas()["id"].tolist() == list(range(15))
    assert ws.datasets.get(f"{name}@1").row_count == 10
    assert ws.datasets.get(name).version == 2  # a bare name is the latest ready version

    tagged = ws.datasets.tag(f"{name}@1", "golden")
    assert tagged.tags == ["golden"] and tagged.version == 1
    assert ws.datasets.get(f"{name}@golden").to_pandas()["id"].tolist() == list(range(10))
    moved = v2.tag("golden")
    assert moved.version == 2 and ws.datasets.get(f"{name}@golden").version == 2
    assert ws.datasets.info(name).latest_version == 2

    versions = ws.datasets.versions(name)
    assert [v.version for v in versions] == [2, 1]
    assert versions[0].tags == ["golden"] and versions[1].tags == []

    ws.datasets.untag(name, "golden")
    with pytest.raises(NotFound, match="no tag 'golden'"):
        ws.datasets.get(f"{name}@golden")


def test_an_append_may_add_columns(ws: mw.Workspace, name: str) -> None:
    ws.datasets.ingest(frame(3), name)
    v2 = ws.datasets.ingest(frame(2, start=3, extra=["e1", "e2"]), name, mode="append")
    assert v2 is not None
    assert [c.name for c in v2.schema_changes.added] == ["extra"]
    got = v2.to_pandas()
    assert got["extra"].tolist()[:3] == [None, None, None] or got["extra"][:3].isna().all()
    assert got["extra"].tolist()[3:] == ["e1", "e2"]
    assert v2.to_duckdb().filter("extra IS NOT NULL").count("*").fetchall() == [(2,)]


def test_preview_pages_and_columns(ws: mw.Workspace, name: str) -> None:
    v = ws.datasets.ingest(frame(25), name)
    assert v is not None
    first = v.preview(limit=10)
    assert len(first) == 10 and first.total == 25
    assert [r["id"] for r in first.records()] == list(range(10))
    last = ws.datasets.preview(name, offset=20, limit=10, columns=["id", "x"])
    assert last.columns == ["id", "x"]
    assert last.rows == [[i, i / 4] for i in range(20, 25)]
    assert last.to_pandas()["id"].tolist() == list(range(20, 25))
    assert "rows 21-25 of 25" in repr(last) and "<table>" in last._repr_html_()
    with pytest.raises(InvalidInput, match="no column"):
        v.preview(columns=["nope"])
    with pytest.raises(InvalidInput, match="limit"):
        v.preview(limit=0)


def test_profile_is_present(ws: mw.Workspace, name: str) -> None:
    df = frame(40)
    v = ws.datasets.ingest(df, name)
    assert v is not None
    prof = v.profile
    assert prof.row_count == 40
    assert prof.column("x").mean == pytest.approx(df["x"].mean())
    assert prof.column("label").nulls == int(df["label"].isna().sum())
    listed = ws.datasets.versions(name)[0]
    assert listed.info.profile is None  # listings leave profiles out...
    assert listed.profile.row_count == 40  # ...and the version fetches its own on first use
    assert ws.datasets.profile(f"{name}@1").column("id").max == 39


def test_lineage(ws: mw.Workspace, name: str) -> None:
    ws.datasets.ingest(frame(3), name)
    ws.datasets.ingest(frame(3, start=3), name, mode="append")
    up = ws.datasets.lineage(f"{name}@2", direction="up")
    assert up.root.label == f"{name}@2"
    relations = {(e.parent.label, e.relation, e.child.label) for e in up.edges}
    assert (f"{name}@1", "appended_to", f"{name}@2") in relations
    assert any(e.parent.type == "source" and e.relation == "ingested_from" for e in up.edges)
    down = ws.datasets.get(f"{name}@1").lineage(direction="down")
    assert f"{name}@2" in {n.label for n in down.nodes}


# ---- datasets ------------------------------------------------------------------------------
def test_datasets_create_list_update_delete_restore(ws: mw.Workspace, name: str) -> None:
    created = ws.datasets.create(name, description="who leaves", schema_policy="strict")
    assert (created.name, created.schema_policy, created.latest_version) == (name, "strict", None)
    with pytest.raises(AlreadyExists, match="already exists"):
        ws.datasets.create(name)
    assert name in {d.name for d in ws.datasets.list_all()}
    updated = ws.datasets.update(name, description="churn", schema_policy="additive")
    assert (updated.description, updated.schema_policy) == ("churn", "additive")

    with pytest.raises(NotFound, match="no versions yet"):
        ws.datasets.get(name)
    ws.datasets.ingest(frame(2), name)
    assert ws.datasets.delete(name).deleted
    assert name not in {d.name for d in ws.datasets.list_all()}
    assert name in {d.name for d in ws.datasets.list_all(include_deleted=True)}
    with pytest.raises(NotFound, match="restore"):
        ws.datasets.get(name)
    with pytest.raises(Conflict, match="deleted"):
        ws.datasets.ingest(frame(2), name)
    assert not ws.datasets.restore(name).deleted
    assert ws.datasets.get(name).row_count == 2


def test_list_pages(ws: mw.Workspace, name: str) -> None:
    for i in range(3):
        ws.datasets.create(f"{name}-{i}")
    page = ws.datasets.list(max_results=2)
    assert len(page.items) == 2 and page.next_page_token
    rest = ws.datasets.list(max_results=2, page_token=page.next_page_token)
    seen = {d.name for d in page.items} | {d.name for d in rest.items}
    assert len(seen) == len(page.items) + len(rest.items)


# ---- errors say what was wrong and what to do ---------------------------------------------
def test_errors(ws: mw.Workspace, name: str) -> None:
    with pytest.raises(NotFound, match=f"Dataset '{name}' does not exist") as missing:
        ws.datasets.get(name)
    assert "modelworks data list" in str(missing.value)
    ws.datasets.ingest(frame(3), name)
    with pytest.raises(NotFound, match="no version 7; latest is 1") as unknown:
        ws.datasets.get(f"{name}@7")
    assert f"{name}@latest" in str(unknown.value)
    with pytest.raises(InvalidInput, match="ends with '@'"):
        ws.datasets.get(f"{name}@")
    with pytest.raises(InvalidInput, match="not valid"):
        ws.datasets.ingest(frame(1), "bad/name")
    with pytest.raises(InvalidInput, match="latest"):
        ws.datasets.tag(f"{name}@1", "latest")
    with pytest.raises(InvalidInput, match="mode"):
        ws.datasets.ingest(frame(1), name, mode="upsert")


# ---- display -------------------------------------------------------------------------------
def test_notebook_reprs(ws: mw.Workspace, name: str) -> None:
    v = ws.datasets.ingest(frame(4), name, message="<b>raw</b>")
    assert v is not None
    assert repr(v).startswith(f"<DatasetVersion {name}@1 rows=4 columns=4")
    page = v._repr_html_()
    assert f"{name}@1" in page and "&lt;b&gt;raw&lt;/b&gt;" in page and "<b>raw" not in page
    assert "label" in page and "string" in page
    assert "datasets" in repr(ws.datasets).lower()


# ---- expectations and validation -----------------------------------------------------------
def test_expectations_and_validation(ws: mw.Workspace, name: str, tmp_path: Path) -> None:
    v = ws.datasets.ingest(frame(20), name)
    assert v is not None
    assert ws.datasets.expectations(name) is None
    with pytest.raises(InvalidInput, match="no expectations"):
        v.validate()
    inferred = ws.datasets.infer_expectations(v)
    assert inferred["expectations"]
    assert ws.datasets.set_expectations(name, inferred).has_expectations
    stored = ws.datasets.expectations(name)
    assert stored is not None and len(stored["expectations"]) == len(inferred["expectations"])
    passed = v.validate()
    assert passed.success and passed.ref == v.ref and passed.trigger == "manual"

    strict = "expectations:\n  - type: row_count\n    min: 1000\n"
    failed = ws.datasets.validate(f"{name}@1", strict)
    assert not failed.success and failed.report.failures()
    assert [r.success for r in ws.datasets.validations(v)] == [False, True]

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text("expectations:\n  - type: row_count\n    min: 10\n")
    ws.datasets.set_expectations(name, suite_file)
    with pytest.raises(InvalidInput, match="failed validation"):
        ws.datasets.ingest(frame(3), name)  # every ingest runs the suite
    assert ws.datasets.info(name).latest_version == 1
    with pytest.raises(InvalidInput, match="line"):
        ws.datasets.set_expectations(name, "expectations:\n  - type: row_count\n    min: [\n")
    assert not ws.datasets.set_expectations(name, None).has_expectations


# ---- transforms ----------------------------------------------------------------------------
def test_sql_clean_and_rebuild(ws: mw.Workspace, name: str) -> None:
    ws.datasets.ingest(frame(10), name)
    small = ws.datasets.sql(
        f'SELECT id, x FROM "{name}@latest" WHERE id < 5 ORDER BY id', f"{name}-small"
    )
    assert small is not None and small.row_count == 5
    assert small.recipe is not None and small.recipe["inputs"] == {f"{name}@latest": f"{name}@1"}
    assert small.to_pandas()["id"].tolist() == [0, 1, 2, 3, 4]
    up = small.lineage(direction="up")
    assert (f"{name}@1", "derived_from", small.ref) in {
        (e.parent.label, e.relation, e.child.label) for e in up.edges
    }
    rebuilt = ws.datasets.rebuild(small)
    assert rebuilt.identical and rebuilt.ref == small.ref and rebuilt.rows == 5

    cleaned = ws.datasets.clean(
        f"{name}@1",
        [{"op": "filter", "where": "flag"}, {"op": "drop_columns", "columns": ["label"]}],
        output=f"{name}-clean",
    )
    assert cleaned is not None and cleaned.row_count == 5
    assert cleaned.column_names == ["id", "x", "flag"]
    with pytest.raises(InvalidInput, match="steps"):
        ws.datasets.clean(f"{name}@1", [{"op": "teleport"}])
    with pytest.raises(InvalidInput, match="not made by a recipe"):
        ws.datasets.rebuild(f"{name}@1")
