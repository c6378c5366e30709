"""The tracking SDK, run against both transports (see conftest: ``ws`` is embedded or remote)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import modelworks as mw
from modelworks.core.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelworks.tracking.client import ActiveRun

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# ---- experiments ---------------------------------------------------------------------------
def test_experiments_crud(ws: mw.Workspace, exp_name: str) -> None:
    created = ws.experiments.create(exp_name, description="who leaves", tags={"team": "growth"})
    assert (created.name, created.description, created.tags) == (
        exp_name,
        "who leaves",
        {"team": "growth"},
    )
    assert ws.experiments.get(exp_name).id == created.id
    assert ws.experiments.get(created.id).name == exp_name
    assert created.id in {e.id for e in ws.experiments.list_all()}

    with pytest.raises(AlreadyExists, match="already exists"):
        ws.experiments.create(exp_name)

    renamed = ws.experiments.update(
        exp_name, name=exp_name + "-v2", description="churn", tags={"owner": "ana"}
    )
    assert renamed.name == exp_name + "-v2"
    assert renamed.tags == {"team": "growth", "owner": "ana"}
    with pytest.raises(NotFound):
        ws.experiments.get(exp_name)

    assert ws.experiments.delete(created.id).deleted
    assert created.id not in {e.id for e in ws.experiments.list().items}
    assert created.id in {e.id for e in ws.experiments.list_all(include_deleted=True)}
    assert not ws.experiments.restore(created.id).deleted
    assert ws.experiments.get(created.id).run_count == 0


def test_experiment_names_with_slashes(ws: mw.Workspace, exp_name: str) -> None:
    name = f"team/{exp_name}/v1"
    exp = ws.experiments.create(name)
    assert ws.experiments.get(name).id == exp.id
    with ws.start_run(experiment=name):
        pass
    assert ws.experiments.get(name).run_count == 1
    assert ws.experiments.delete(name).deleted
    assert not ws.experiments.restore(name).deleted


# ---- a run, written and read back ----------------------------------------------------------
def test_run_round_trip(ws: mw.Workspace, exp_name: str, in_tmp: Path) -> None:
    Path("confusion.png").write_bytes(PNG)
    with ws.start_run(experiment=exp_name) as run:
        run.log_params({"lr": 0.1, "depth": 6})
        run.log_metric("auc", 0.91, step=3)
        run.log_artifact("confusion.png")
        run.log_metric("auc", 0.95, step=5)
        run.log_metric("auc", 0.50, step=1)  # logged last, but not the latest step
        run.log_metrics({"loss": 0.3, "f1": 0.7}, step=2)
        run.set_tag("team", "growth")
        run.set_tags({"stage": "dev", "team": "churn"})  # tags may change; last one wins
        assert mw.active_run() is run
    assert mw.active_run() is None

    out = ws.runs.get(run.id)
    assert out.status == "FINISHED" and out.end_time is not None
    assert out.experiment_name == exp_name
    assert out.params == {"depth": "6", "lr": "0.1"}
    assert out.metrics == {"auc": 0.95, "f1": 0.7, "loss": 0.3}
    assert out.tags == {"stage": "dev", "team": "churn"}
    assert run.info.status == "FINISHED"

    history = ws.runs.metric_history(run, "auc")
    assert [(p.step, p.value) for p in history] == [(1, 0.5), (3, 0.91), (5, 0.95)]

    [art] = ws.runs.list_artifacts(run)
    assert (art.path, art.size) == ("confusion.png", len(PNG))
    assert ws.runs.read_artifact(run, "confusion.png") == PNG
    dest = ws.runs.download_artifact(run, "confusion.png", in_tmp / "out")
    assert dest == in_tmp / "out" and dest.read_bytes() == PNG
    into_dir = ws.runs.download_artifact(run, "confusion.png", in_tmp)
    assert into_dir == in_tmp / "confusion.png"
    assert ws.runs.download_artifact(run, "confusion.png").read_bytes() == PNG


def test_system_info_is_captured(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        pass
    info = ws.runs.get(run).system_info
    assert info["python"].count(".") == 2
    assert info["cpu_count"] >= 1 and info["hostname"] and info["platform"]
    assert "modelworks" in info["packages"]
    # The tests run inside the project's git checkout.
    if "git" in info:
        assert len(info["git"]["commit"]) == 40 and isinstance(info["git"]["dirty"], bool)


def test_artifact_helpers(ws: mw.Workspace, exp_name: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "sub" / "meta.txt").write_text("hello")
    single = tmp_path / "report.html"
    single.write_text("<p>ok</p>")
    with ws.start_run(experiment=exp_name) as run:
        run.log_text("déjà vu\n", "notes/readme.txt")
        run.log_dict({"threshold": 0.42, "labels": ["a", "b"]}, "config.json")
        run.log_dict({"threshold": 0.42}, "config.yaml")
        run.log_artifacts(folder, artifact_path="model")
        run.log_artifact(single, artifact_path="reports/")
        with pytest.raises(InvalidInput, match="not a file"):
            run.log_artifact(tmp_path / "missing.bin")
        with pytest.raises(InvalidInput, match="not a folder"):
            run.log_artifacts(tmp_path / "missing")
        with pytest.raises(InvalidInput, match=r"config\.json"):
            run.log_dict({"x": object()}, "config.json")
    paths = [a.path for a in ws.runs.list_artifacts(run)]
    assert paths == [
        "config.json",
        "config.yaml",
        "model/sub/meta.txt",
        "model/weights.bin",
        "notes/readme.txt",
        "reports/report.html",
    ]
    assert [a.path for a in ws.runs.list_artifacts(run, prefix="model")] == paths[2:4]
    assert ws.runs.read_artifact(run, "notes/readme.txt").decode() == "déjà vu\n"
    assert json.loads(ws.runs.read_artifact(run, "config.json"))["labels"] == ["a", "b"]
    assert yaml.safe_load(ws.runs.read_artifact(run, "config.yaml")) == {"threshold": 0.42}
    assert ws.runs.read_artifact(run, "model/weights.bin") == b"\x00\x01" * 1000


# ---- nesting and the run's end -------------------------------------------------------------
def test_nested_runs_get_parent_ids(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name, name="parent") as parent:
        with pytest.raises(Conflict, match="already active"):
            ws.start_run(experiment=exp_name)
        with ws.start_run(experiment=exp_name, nested=True) as child:
            assert mw.active_run() is child
            with ws.start_run(experiment=exp_name, nested=True) as grandchild:
                grandchild.log_metric("depth", 2)
            assert mw.active_run() is child
        assert mw.active_run() is parent
        explicit = ws.start_run(experiment=exp_name, parent=parent.id)
        explicit.end()
    assert ws.runs.get(child).parent_run_id == parent.id
    assert ws.runs.get(grandchild).parent_run_id == child.id
    assert ws.runs.get(explicit).parent_run_id == parent.id
    assert ws.runs.get(parent).parent_run_id is None
    children = ws.runs.search(f"attributes.parent_run_id = '{parent.id}'", experiments=exp_name)
    assert {r.id for r in children.items} == {child.id, explicit.id}


def test_each_thread_has_its_own_active_run(ws: mw.Workspace, exp_name: str) -> None:
    import threading

    seen: dict[str, Any] = {}

    def worker() -> None:
        seen["before"] = mw.active_run()
        with ws.start_run(experiment=exp_name) as run:  # not nested: another thread's run
            seen["inside"] = mw.active_run() is run
            run.log_metric("thread", 1)

    with ws.start_run(experiment=exp_name) as main:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert mw.active_run() is main
    assert seen == {"before": None, "inside": True}


def test_exception_marks_run_failed_and_keeps_metrics(ws: mw.Workspace, exp_name: str) -> None:
    with pytest.raises(ZeroDivisionError), ws.start_run(experiment=exp_name) as run:
        for step in range(5):
            run.log_metric("loss", 1.0 / (5 - step), step=step)
        run.log_metric("loss", 1 / 0, step=5)
    out = ws.runs.get(run)
    assert out.status == "FAILED" and out.end_time is not None
    assert [p.step for p in ws.runs.metric_history(run, "loss")] == [0, 1, 2, 3, 4]
    assert mw.active_run() is None


def test_keyboard_interrupt_marks_run_killed(ws: mw.Workspace, exp_name: str) -> None:
    with pytest.raises(KeyboardInterrupt), ws.start_run(experiment=exp_name) as run:
        run.log_metric("loss", 0.5)
        raise KeyboardInterrupt
    assert ws.runs.get(run).status == "KILLED"
    assert ws.runs.get(run).metrics == {"loss": 0.5}


def test_run_without_with_and_logging_after_end(ws: mw.Workspace, exp_name: str) -> None:
    run = ws.start_run(experiment=exp_name, params={"model": "lgbm"}, tags={"team": "a"})
    assert mw.active_run() is run
    run.log_metric("auc", 0.8)
    assert run.refresh().metrics == {"auc": 0.8}
    assert run.end("FINISHED").status == "FINISHED"
    assert run.end() is run.info  # ending twice is harmless
    assert mw.active_run() is None
    run.log_metric("auc", 0.9, step=1)  # after the end, logging goes straight to storage
    run.set_tag("late", "yes")
    out = ws.runs.get(run)
    assert out.metrics == {"auc": 0.9} and out.tags == {"late": "yes", "team": "a"}
    assert out.params == {"model": "lgbm"}


def test_nan_metrics_are_stored_as_null(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        run.log_metric("loss", math.nan)
        run.log_metric("ok", 1)
    assert ws.runs.get(run).metrics == {"loss": None, "ok": 1.0}


# ---- errors ----------------------------------------------------------------------------------
def test_param_conflict_raises(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        run.log_param("lr", 0.1)
        run.log_param("lr", "0.1")  # the same value again is fine
        with pytest.raises(Conflict, match="lr"):
            run.log_param("lr", 0.2)
        run.log_metric("auc", 0.9)  # the run goes on
    assert ws.runs.get(run).params == {"lr": "0.1"}
    assert ws.runs.get(run).status == "FINISHED"


def test_errors_are_typed(ws: mw.Workspace, exp_name: str) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        ws.runs.get("01HZZZZZZZZZZZZZZZZZZZZZZZ")
    with pytest.raises(NotFound):
        ws.experiments.get(exp_name)
    with pytest.raises(InvalidInput):
        ws.runs.search("metrics.auc >>> 1")
    with pytest.raises(InvalidInput):
        ws.runs.search(order_by=["nonsense.key DESC"])
    with pytest.raises(InvalidInput, match="page_token"):
        ws.runs.search(page_token="not-a-token")
    ws.experiments.create(exp_name)
    with pytest.raises(AlreadyExists):
        ws.experiments.create(exp_name)


def test_bad_keys_and_values_raise_where_logged(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        with pytest.raises(InvalidInput, match="key"):
            run.log_metric("bad key!", 1.0)
        with pytest.raises(InvalidInput, match=r"\.\."):
            run.log_metric("a/../b", 1.0)
        with pytest.raises(InvalidInput, match="number"):
            run.log_metric("auc", "high")
        with pytest.raises(InvalidInput, match="key"):
            run.set_tag("", "x")
        with pytest.raises(InvalidInput, match="key"):
            run.log_param("bad key!", 1)
        run.log_metric("auc", 0.7)
    assert ws.runs.get(run).metrics == {"auc": 0.7}


@pytest.mark.parametrize("path", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "..", "a/.."])
def test_artifact_path_traversal_is_refused(
    ws: mw.Workspace, exp_name: str, tmp_path: Path, path: str
) -> None:
    src = tmp_path / "evil.txt"
    src.write_text("x")
    with ws.start_run(experiment=exp_name) as run:
        with pytest.raises(InvalidInput, match="path"):
            run.log_text("x", path)
        with pytest.raises(InvalidInput):
            run.log_artifact(src, artifact_path=path)
        with pytest.raises(InvalidInput):
            ws.runs.read_artifact(run, path)
    assert ws.runs.list_artifacts(run) == []


def test_background_flush_error_surfaces(ws: mw.Workspace, exp_name: str) -> None:
    """A flush that can never succeed (the run was deleted) is raised on the next call."""
    run = ws.start_run(experiment=exp_name)
    run.log_metric("loss", 1.0)
    run.flush()
    ws.runs.delete(run)
    run.log_metric("loss", 0.5, step=1)
    with pytest.raises(Conflict, match="deleted") as err:
        run.flush()
    assert any("were not stored" in n for n in getattr(err.value, "__notes__", []))
    ws.runs.restore(run)
    run.end()
    assert [p.step for p in ws.runs.metric_history(run, "loss")] == [0]


def test_transient_flush_failures_keep_everything(
    ws: mw.Workspace, exp_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flaky transport loses nothing: failed batches are retried until they land."""
    from modelworks.core.errors import ServiceUnavailable
    from modelworks.tracking.client import start_run

    class Flaky:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.failures = 3

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def log_batch(self, run_id: str, **kw: Any) -> None:
            if kw.get("metrics") and self.failures:
                self.failures -= 1
                raise ServiceUnavailable("the database is restarting")
            self.inner.log_batch(run_id, **kw)

    # Only explicit flushes here, so the failures happen where the test expects them.
    monkeypatch.setattr(ActiveRun, "flush_interval_s", 3600.0)
    monkeypatch.setattr(ActiveRun, "batch_size", 10**9)
    flaky = Flaky(ws.tracking)
    run = start_run(flaky, ws.project, exp_name)
    for step in range(2500):
        run.log_metric("loss", 1 / (step + 1), step=step)
    with pytest.raises(ServiceUnavailable):
        run.flush()
    assert run.pending == 2500
    run.end()
    assert flaky.failures == 0 and run.pending == 0
    assert len(ws.runs.metric_history(run, "loss")) == 2500


# ---- search and compare ----------------------------------------------------------------------
def _make_runs(ws: mw.Workspace, exp_name: str) -> list[ActiveRun]:
    runs = []
    for i in range(5):
        with ws.start_run(
            experiment=exp_name,
            name=f"r{i}",
            params={"model": "lgbm" if i % 2 else "xgb", "depth": i},
        ) as run:
            run.log_metric("auc", 0.5 + i / 10)
        runs.append(run)
    return runs


def test_search_filter_order_and_pages(ws: mw.Workspace, exp_name: str) -> None:
    runs = _make_runs(ws, exp_name)
    with ws.start_run(experiment=exp_name + "-other") as other:
        other.log_metric("auc", 0.99)

    page = ws.runs.search("metrics.auc >= 0.6", ["metrics.auc DESC"], [exp_name], 2)
    assert [r.name for r in page.items] == ["r4", "r3"]
    assert page.next_page_token
    page2 = ws.runs.search(
        "metrics.auc >= 0.6",
        order_by=["metrics.auc DESC"],
        experiments=exp_name,
        max_results=2,
        page_token=page.next_page_token,
    )
    assert [r.name for r in page2.items] == ["r2", "r1"]
    assert page2.next_page_token is None

    lgbm = ws.runs.search("params.model = 'lgbm'", order_by=["params.depth"], experiments=exp_name)
    assert [r.name for r in lgbm.items] == ["r1", "r3"]

    every = list(ws.runs.search_all(experiments=[exp_name], order_by=["metrics.auc"], page_size=2))
    assert [r.id for r in every] == [r.id for r in runs]
    both = {r.id for r in ws.runs.search_all(experiments=[exp_name, exp_name + "-other"])}
    assert other.id in both and len(both) == 6

    rows = ws.runs.records(every)
    assert rows[0]["params.depth"] == "0" and rows[4]["metrics.auc"] == pytest.approx(0.9)

    ws.runs.delete(runs[0])
    assert runs[0].id not in {r.id for r in ws.runs.search_all(experiments=exp_name)}
    deleted = ws.runs.search(experiments=exp_name, include_deleted=True)
    assert runs[0].id in {r.id for r in deleted.items}
    ws.runs.restore(runs[0])
    assert len(list(ws.runs.search_all(experiments=exp_name))) == 5


def test_compare_two_runs(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as a:
        a.log_params({"model": "lgbm", "lr": 0.1})
        for step in range(3):
            a.log_metric("loss", 1.0 - step / 10, step=step)
    with ws.start_run(experiment=exp_name) as b:
        b.log_params({"model": "lgbm", "lr": 0.2, "extra": 1})
        b.log_metric("loss", 0.5)
    cmp = ws.runs.compare([a, b.id])
    assert [r.id for r in cmp.runs] == [a.id, b.id]
    assert cmp.param_keys == ["extra", "lr", "model"]
    assert cmp.differing_params == ["extra", "lr"]
    assert cmp.metric_keys == ["loss"]
    assert [p.step for p in cmp.histories["loss"][a.id]] == [0, 1, 2]
    assert [p.value for p in cmp.histories["loss"][b.id]] == [0.5]


# ---- speed -----------------------------------------------------------------------------------
def test_ten_thousand_metrics_do_not_slow_training(ws: mw.Workspace, exp_name: str) -> None:
    with ws.start_run(experiment=exp_name) as run:
        started = time.perf_counter()
        for step in range(10_000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        elapsed = time.perf_counter() - started
    # Typically ~10 ms; the bound leaves room for a busy 2-core CI machine.
    assert elapsed < 1.0, f"10,000 log_metric calls took {elapsed:.2f} s"
    history = ws.runs.metric_history(run, "loss")
    assert len(history) == 10_000
    assert [p.step for p in history] == list(range(10_000))
    assert ws.runs.get(run).metrics["loss"] == pytest.approx(1e-4)


# ---- the workspace itself --------------------------------------------------------------------
def test_workspace_repr_and_close(ws: mw.Workspace, exp_name: str) -> None:
    assert ws.mode in ("embedded", "remote") and ws.project == "default"
    assert ws.mode in repr(ws) and "default" in ws._repr_html_()
    run = ws.start_run(experiment=exp_name)
    run.log_metric("auc", 0.5)
    assert "RUNNING" in repr(run) and "<table>" in run._repr_html_()
    ws.close()  # ends the workspace's open runs, with their buffers flushed
    assert "closed" in repr(ws)
    assert run.info.status == "FINISHED" and run.info.metrics == {"auc": 0.5}


# ---- the module-level API (mw.start_run on the default workspace) ----------------------------
def test_module_level_start_run_uses_modelworks_home(_isolated_home: Path, exp_name: str) -> None:
    with mw.start_run(experiment=exp_name, params={"lr": 0.1}) as run:
        assert mw.active_run() is run
        run.log_metric("auc", 0.9)
        with mw.start_run(experiment=exp_name, nested=True) as child:
            assert mw.active_run() is child
    assert mw.active_run() is None
    from modelworks.client import default_workspace

    assert default_workspace().mode == "embedded"
    with mw.connect() as ws:  # the same store, found through MODELWORKS_HOME
        assert str(_isolated_home) in repr(ws)
        assert ws.runs.get(run.id).metrics == {"auc": 0.9}
        assert ws.runs.get(child.id).parent_run_id == run.id
    assert (_isolated_home / "modelworks.db").exists()


@pytest.mark.postgres
def test_module_level_start_run_goes_remote_with_modelworks_url(
    server: Any, monkeypatch: pytest.MonkeyPatch, exp_name: str
) -> None:
    from modelworks.client import default_workspace
    from modelworks.core.config import get_settings

    monkeypatch.setenv("MODELWORKS_URL", server.url)
    monkeypatch.setenv("MODELWORKS_TOKEN", server.token)
    get_settings.cache_clear()
    with mw.start_run(experiment=exp_name) as run:
        run.log_metric("auc", 0.8)
    assert default_workspace().mode == "remote"
    assert run.info.created_by == "admin" and run.info.metrics == {"auc": 0.8}
