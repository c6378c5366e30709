"""The dataset service: versions, refs, append, schema policy, atomicity, lineage, audit."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks.core.audit import verify
from modelworks.core.auth import local_principal
from modelworks.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.service import DataService
from modelworks.data.sources.base import Scan, ScanContext, Source, register_source
from modelworks.data.sources.frames import FrameSource

P = "default"


@pytest.fixture
def svc(store: Store) -> DataService:
    return DataService(store)


def frame(n: int, start: int = 0, **extra: Any) -> pd.DataFrame:
    data: dict[str, Any] = {
        "id": list(range(start, start + n)),
        "x": [float(i) / 2 for i in range(start, start + n)],
        "label": [f"c{i % 3}" for i in range(start, start + n)],
    }
    data.update(extra)
    return pd.DataFrame(data)


def read(svc: DataService, ref: str) -> pd.DataFrame:
    _, paths = svc.read_paths(local_principal(), P, ref)
    con = duckdb.connect()
    try:
        return storage.relation_of(con, paths).df()
    finally:
        con.close()


def test_ingest_makes_an_immutable_version_with_schema_profile_and_hash(svc: DataService) -> None:
    result = svc.ingest(local_principal(), P, "churn", FrameSource.of(frame(100)))
    v = result.version
    assert v is not None and v.version == 1 and v.ref == "churn@1"
    assert result.rows == 100 and v.row_count == 100
    assert [(c.name, c.type) for c in v.columns] == [
        ("id", "int64"),
        ("x", "double"),
        ("label", "string"),
    ]
    assert len(v.content_hash) == 64 and v.size_bytes == sum(f.size for f in v.files)
    assert v.source["kind"] == "frame" and v.source["params"]["rows"] == 100
    assert v.profile is not None and v.profile.row_count == 100
    assert v.profile.column("x").mean == pytest.approx(frame(100)["x"].mean())
    # The parts are zstd Parquet in the artifact store, readable as they are.
    _, paths = svc.read_paths(local_principal(), P, "churn@1")
    meta = pq.read_metadata(paths[0])
    assert meta.row_group(0).column(0).compression == "ZSTD"
    pd.testing.assert_frame_equal(read(svc, "churn@1"), frame(100), check_dtype=False)


def test_refs_by_number_latest_and_tag(svc: DataService) -> None:
    p = local_principal()
    svc.ingest(p, P, "churn", FrameSource.of(frame(10)))
    svc.ingest(p, P, "churn", FrameSource.of(frame(20)))
    assert svc.get_version(p, P, "churn").version == 2
    assert svc.get_version(p, P, "churn@latest").version == 2
    assert svc.get_version(p, P, "churn@1").row_count == 10
    tagged = svc.tag_version(p, P, "churn@1", "golden")
    assert tagged.tags == ["golden"]
    assert svc.get_version(p, P, "churn@golden").version == 1
    svc.tag_version(p, P, "churn@2", "golden")  # a tag moves
    assert svc.get_version(p, P, "churn@golden").version == 2
    with pytest.raises(NotFound, match=r"no version 7; latest is 2. Use churn@latest or churn@2"):
        svc.get_version(p, P, "churn@7")
    with pytest.raises(NotFound, match="no tag 'silver'"):
        svc.get_version(p, P, "churn@silver")
    with pytest.raises(InvalidInput, match="not 'latest'"):
        svc.tag_version(p, P, "churn@1", "latest")
    with pytest.raises(InvalidInput, match="ends with '@'"):
        svc.get_version(p, P, "churn@")
    with pytest.raises(NotFound, match="Dataset 'nope' does not exist"):
        svc.get_version(p, P, "nope@1")


def test_append_shares_the_previous_parts_and_adds_rows(svc: DataService) -> None:
    p = local_principal()
    v1 = svc.ingest(p, P, "events", FrameSource.of(frame(50))).version
    v2 = svc.ingest(p, P, "events", FrameSource.of(frame(30, start=50)), mode="append").version
    assert v1 is not None and v2 is not None
    assert v2.row_count == 80 and v2.parent_version == 1 and v2.mode == "append"
    assert [f.sha256 for f in v2.files[: len(v1.files)]] == [f.sha256 for f in v1.files]
    assert read(svc, "events@2")["id"].tolist() == list(range(80))
    assert read(svc, "events@1")["id"].tolist() == list(range(50))  # v1 is untouched
    assert v2.profile is not None and v2.profile.row_count == 80


def test_schema_policy_rejects_a_retyped_column_and_keeps_the_old_versions(
    svc: DataService,
) -> None:
    p = local_principal()
    svc.ingest(p, P, "s", FrameSource.of(frame(10)))
    retyped = frame(10).assign(id=[f"x{i}" for i in range(10)])
    with pytest.raises(InvalidInput, match=r"column 'id' changed type from int64 to string"):
        svc.ingest(p, P, "s", FrameSource.of(retyped))
    with pytest.raises(InvalidInput, match=r"removed column 'label'"):
        svc.ingest(p, P, "s", FrameSource.of(frame(10).drop(columns=["label"])))
    assert [v.version for v in svc.list_versions(p, P, "s")] == [1]
    # Additive (the default) allows a new column and records it.
    added = svc.ingest(p, P, "s", FrameSource.of(frame(10).assign(extra=1))).version
    assert added is not None and [c.name for c in added.schema_changes.added] == ["extra"]
    # 'any' lets the type change through, and the change is recorded.
    svc.update_dataset(p, P, "s", schema_policy="any")
    v = svc.ingest(p, P, "s", FrameSource.of(retyped.assign(extra=1))).version
    assert v is not None
    assert v.schema_changes.retyped == [{"name": "id", "from": "int64", "to": "string"}]
    # A strict dataset refuses even an added column.
    svc.update_dataset(p, P, "s", schema_policy="strict")
    with pytest.raises(InvalidInput, match="added column 'more'"):
        svc.ingest(p, P, "s", FrameSource.of(retyped.assign(extra=1, more=2)))


def test_append_must_keep_types_even_under_any(svc: DataService) -> None:
    p = local_principal()
    svc.create_dataset(p, P, "a", schema_policy="any")
    svc.ingest(p, P, "a", FrameSource.of(frame(5)))
    with pytest.raises(InvalidInput, match="An append must keep the columns"):
        svc.ingest(
            p, P, "a", FrameSource.of(frame(5).assign(x=["s"] * 5)), mode="append"
        )  # fmt: skip


@register_source
class ExplodingSource(Source):
    """Fails halfway through the write, like a crash mid-ingest."""

    kind: Literal["test_exploding"] = "test_exploding"

    def scan(self, ctx: ScanContext) -> Scan:
        def boom(i: int) -> int:
            if i > 5000:
                raise RuntimeError("disk on fire")
            return i

        ctx.con.create_function("boom", boom, ["BIGINT"], "BIGINT")  # type: ignore[list-item]
        return Scan(relation=ctx.con.sql("SELECT boom(range) AS i FROM range(10000)"))


def test_a_failure_mid_ingest_leaves_no_version_and_no_staging(
    svc: DataService, store: Store
) -> None:
    p = local_principal()
    svc.ingest(p, P, "c", FrameSource.of(frame(10)))
    with pytest.raises(Exception, match="disk on fire"):
        svc.ingest(p, P, "c", ExplodingSource())
    assert [v.version for v in svc.list_versions(p, P, "c")] == [1]
    assert svc.get_dataset(p, P, "c").version_count == 1
    stage_root = Path(store.artifacts.root) / "tmp"
    assert not [d for d in stage_root.iterdir() if d.name.startswith("stage-")]
    assert read(svc, "c@latest")["id"].tolist() == list(range(10))


def test_a_killed_ingest_process_leaves_the_previous_versions_intact(
    svc: DataService, store: Store, tmp_path: Path
) -> None:
    """SIGKILL mid-ingest: nothing half-visible, and the next ingest works.

    The child stops itself at a known point — its Parquet parts written and adopted into the
    artifact store, the version not yet committed — and is killed there, so the test does
    not depend on how fast the machine writes.
    """
    import signal
    import subprocess
    import sys

    p = local_principal()
    svc.ingest(p, P, "k", FrameSource.of(frame(10)))
    script = tmp_path / "ingest.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np, pandas as pd\n"
        "from modelworks.core.store import Store\n"
        "from modelworks.core.auth import local_principal\n"
        "from modelworks.data import storage\n"
        "from modelworks.data.service import DataService\n"
        "from modelworks.data.sources.frames import FrameSource\n"
        "publish = storage.publish_parts\n"
        "def publish_then_wait(*args, **kwargs):\n"
        "    files = publish(*args, **kwargs)\n"
        "    print('published', len(files), flush=True)\n"
        "    time.sleep(120)\n"
        "    return files\n"
        "storage.publish_parts = publish_then_wait\n"
        "n = 200_000\n"
        "df = pd.DataFrame({'id': np.arange(n), 'x': np.random.rand(n), 'label': 'c'})\n"
        "DataService(Store()).ingest(local_principal(), 'default', 'k', FrameSource.of(df))\n"
    )
    env = dict(os.environ, MODELWORKS_HOME=str(store.settings.home_path))
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("published") and int(line.split()[1]) >= 1, line
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert [v.version for v in svc.list_versions(p, P, "k")] == [1]
    assert read(svc, "k@latest")["id"].tolist() == list(range(10))
    v2 = svc.ingest(p, P, "k", FrameSource.of(frame(3))).version
    assert v2 is not None and v2.version == 2
    assert read(svc, "k@latest")["id"].tolist() == list(range(3))


def test_concurrent_appends_never_lose_rows(svc: DataService) -> None:
    """Two appends racing: one commits, the other is refused with Conflict, never merged."""
    p = local_principal()
    svc.ingest(p, P, "race", FrameSource.of(frame(1)))
    outcomes: list[str] = []

    def append(start: int) -> None:
        try:
            svc.ingest(p, P, "race", FrameSource.of(frame(100, start=start)), mode="append")
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=append, args=(1000 * (i + 1),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latest = svc.get_version(p, P, "race@latest")
    assert outcomes.count("ok") >= 1
    assert latest.row_count == 1 + 100 * outcomes.count("ok")
    assert len(set(read(svc, "race@latest")["id"])) == latest.row_count


def test_datasets_list_update_delete_restore_and_audit(svc: DataService, store: Store) -> None:
    p = local_principal()
    svc.create_dataset(p, P, "d1", description="first")
    svc.ingest(p, P, "d2", FrameSource.of(frame(3)))
    with pytest.raises(AlreadyExists):
        svc.create_dataset(p, P, "d1")
    assert {d.name for d in svc.list_datasets(p, P).items} == {"d1", "d2"}
    page = svc.list_datasets(p, P, max_results=1)
    assert len(page.items) == 1 and page.next_page_token
    svc.delete_dataset(p, P, "d2")
    assert {d.name for d in svc.list_datasets(p, P).items} == {"d1"}
    with pytest.raises(NotFound, match="restore it"):
        svc.get_version(p, P, "d2@1")
    with pytest.raises(Conflict, match="was deleted"):
        svc.ingest(p, P, "d2", FrameSource.of(frame(3)))
    svc.restore_dataset(p, P, "d2")
    assert svc.get_version(p, P, "d2@1").row_count == 3
    with store.read() as s:
        from sqlalchemy import select

        from modelworks.core.audit import AuditRecord

        actions = s.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)).all()
        assert verify(s).ok
    assert "dataset.version.create" in actions and "dataset.delete" in actions


def test_bad_names_and_modes_are_refused_before_anything_is_read(svc: DataService) -> None:
    p = local_principal()
    with pytest.raises(InvalidInput, match="Dataset name"):
        svc.ingest(p, P, "../etc", FrameSource.of(frame(1)))
    with pytest.raises(InvalidInput, match="mode must be"):
        svc.ingest(p, P, "ok", FrameSource.of(frame(1)), mode="upsert")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="gave no rows"):
        svc.ingest(p, P, "ok", FrameSource.of(frame(0)))
    assert svc.list_datasets(p, P).items == []


def test_lineage_links_source_versions_and_appends(svc: DataService) -> None:
    p = local_principal()
    svc.ingest(p, P, "l", FrameSource.of(frame(5)))
    svc.ingest(p, P, "l", FrameSource.of(frame(5, start=5)), mode="append")
    graph = svc.lineage(p, P, "l@2", direction="up")
    relations = {(e.parent.label, e.relation, e.child.label) for e in graph.edges}
    assert ("l@1", "appended_to", "l@2") in relations
    assert any(r == "ingested_from" and c == "l@2" for _, r, c in relations)
    assert any(r == "ingested_from" and c == "l@1" for _, r, c in relations)
    down = svc.lineage(p, P, "l@1", direction="down")
    assert {e.child.label for e in down.edges} == {"l@2"}


def test_preview_pages_and_checks_columns(svc: DataService) -> None:
    p = local_principal()
    svc.ingest(p, P, "pv", FrameSource.of(frame(25)))
    page = svc.preview(p, P, "pv@1", offset=20, limit=10, columns=["label", "id"])
    assert page.total == 25 and [c.name for c in page.columns] == ["label", "id"]
    assert page.rows == [[f"c{i % 3}", i] for i in range(20, 25)]
    with pytest.raises(InvalidInput, match="no column"):
        svc.preview(p, P, "pv@1", columns=["nope"])
    with pytest.raises(InvalidInput, match="limit must be"):
        svc.preview(p, P, "pv@1", limit=0)


def test_parts_are_checked_against_their_hash_before_reading(
    svc: DataService, store: Store
) -> None:
    p = local_principal()
    v = svc.ingest(p, P, "h", FrameSource.of(frame(10))).version
    assert v is not None
    path = store.artifacts.local_path(v.files[0].sha256)
    assert path is not None
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    Path(path).write_bytes(bytes(data))
    from modelworks.core.errors import CorruptData

    with pytest.raises(CorruptData, match="damaged"):
        svc.read_paths(p, P, "h@1")


def test_arrow_and_polars_frames_ingest_too(svc: DataService) -> None:
    import polars as pl

    p = local_principal()
    v = svc.ingest(p, P, "pl", FrameSource.of(pl.DataFrame({"a": [1, 2], "b": ["x", None]})))
    assert v.version is not None and v.version.row_count == 2
    t = pa.table({"a": [3], "b": ["z"]})
    v2 = svc.ingest(p, P, "pl", FrameSource.of(t), mode="append").version
    assert v2 is not None and read(svc, "pl@2")["a"].tolist() == [1, 2, 3]


def test_a_frames_unnamed_index_is_not_ingested_but_a_named_one_is(store: Store) -> None:
    import pandas as pd

    from modelworks.core.auth import local_principal
    from modelworks.data.service import DataService
    from modelworks.data.sources.frames import FrameSource

    svc = DataService(store)
    me = local_principal()
    frame = pd.DataFrame({"id": [10, 11, 12, 13], "x": [1.0, 2.0, 3.0, 4.0]})
    split = frame.iloc[[3, 1]]  # unnamed, non-default row labels, as a split leaves them
    svc.ingest(me, "default", "split", FrameSource.of(split))
    assert [c.name for c in svc.get_version(me, "default", "split@1").columns] == ["id", "x"]
    svc.ingest(me, "default", "indexed", FrameSource.of(frame.set_index("id")))
    assert [c.name for c in svc.get_version(me, "default", "indexed@1").columns] == ["x", "id"]


def float_batch(start: int, rows: int, *, nan: bool) -> pa.Table:
    """Float columns with NaN, infinities and nulls (``nan=False``: only nulls), by odd names."""
    x = [float(i) / 3 for i in range(start, start + rows)]
    if nan:
        x[1], x[2], x[3] = float("nan"), float("inf"), float("-inf")
    mask = [i % 10 == 9 for i in range(rows)]
    return pa.table(
        {
            "id": list(range(start, start + rows)),
            "x": pa.array(x, mask=mask),
            'odd "name". y': pa.array(
                [float("nan") if nan and i % 4 == 0 else i / 7 for i in range(rows)],
                pa.float32(),
            ),
            "all nan": pa.array([float("nan")] * rows, mask=mask),
            "label": [f"c{i % 3}" for i in range(rows)],
        }
    )


def test_the_ingest_profile_uses_the_writers_nan_counts_and_equals_a_profile_by_reading(
    svc: DataService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelworks.data import profile as profile_module

    given: list[dict[str, dict[str, storage.FloatCounts]]] = []
    original = profile_module.profile_paths

    def spy(con: duckdb.DuckDBPyConnection, paths: Any, **kwargs: Any) -> Any:
        given.append(dict(kwargs.get("float_counts") or {}))
        return original(con, paths, **kwargs)

    monkeypatch.setattr(profile_module, "profile_paths", spy)
    p = local_principal()
    v1 = svc.ingest(p, P, "floats", FrameSource.of(float_batch(0, 40, nan=True))).version
    # Appended: the previous part has no counts (it is read), the new one has.
    v2 = svc.ingest(
        p, P, "floats", FrameSource.of(float_batch(40, 30, nan=False)), mode="append"
    ).version
    assert v1 is not None and v2 is not None
    assert [list(counts.values()) for counts in given] == [
        [
            {
                "x": storage.FloatCounts(values=36, nans=1),
                'odd "name". y': storage.FloatCounts(values=40, nans=10),
                "all nan": storage.FloatCounts(values=36, nans=36),
            }
        ],
        [
            {
                "x": storage.FloatCounts(values=27, nans=0),
                'odd "name". y': storage.FloatCounts(values=30, nans=0),
                "all nan": storage.FloatCounts(values=27, nans=27),
            }
        ],
    ]
    for version in (v1, v2):
        _, paths = svc.read_paths(p, P, version.ref)
        con = duckdb.connect()
        try:
            read = original(con, paths)
        finally:
            con.close()
        assert version.profile is not None
        assert version.profile.model_dump_json(exclude={"seconds"}) == read.model_dump_json(
            exclude={"seconds"}
        )
    assert v1.profile is not None and v1.profile.column("x").max is None  # NaN
    assert v2.profile is not None and v2.profile.column("x").min is None  # -inf from v1
