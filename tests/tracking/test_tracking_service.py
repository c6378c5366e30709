"""Tracking service rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import pytest

from modelworks.core.auth import local_principal
from modelworks.core.errors import Conflict, InvalidInput, NotFound
from modelworks.core.store import Store
from modelworks.tracking.schemas import MetricIn
from modelworks.tracking.service import TrackingService

ME = local_principal()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def svc(request: pytest.FixtureRequest, store: Store) -> TrackingService:
    if request.param == "sqlite":
        return TrackingService(store)
    return TrackingService(request.getfixturevalue("postgres_store"))


def test_latest_metric_is_highest_step_not_last_logged(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp")
    svc.log_batch(ME, run.id, metrics=[MetricIn(key="loss", value=0.5, step=5)])
    svc.log_batch(ME, run.id, metrics=[MetricIn(key="loss", value=0.9, step=1)])
    assert svc.get_run(ME, run.id).metrics == {"loss": 0.5}
    history = svc.metric_history(ME, run.id, "loss")
    assert [(p.step, p.value) for p in history] == [(1, 0.9), (5, 0.5)]


def test_nan_is_kept_as_null(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp")
    svc.log_batch(ME, run.id, metrics=[MetricIn(key="loss", value=math.nan, step=0)])
    assert svc.get_run(ME, run.id).metrics == {"loss": None}


def test_params_are_immutable_tags_are_not(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp", params={"lr": 0.1})
    svc.log_batch(ME, run.id, params={"lr": "0.1"})  # same value: fine
    with pytest.raises(Conflict, match="cannot change"):
        svc.log_batch(ME, run.id, params={"lr": "0.2", "depth": "3"})
    assert svc.get_run(ME, run.id).params == {"lr": "0.1"}  # nothing of the batch stored
    svc.log_batch(ME, run.id, tags={"t": "a"})
    svc.log_batch(ME, run.id, tags={"t": "b"})
    assert svc.get_run(ME, run.id).tags == {"t": "b"}


def test_bad_keys_are_refused(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp")
    with pytest.raises(InvalidInput):
        svc.log_batch(ME, run.id, params={"a\nb": "1"})
    with pytest.raises(InvalidInput):
        svc.log_batch(ME, run.id, tags={"../x": "1"})


def test_parent_child_runs_and_status(svc: TrackingService) -> None:
    parent = svc.create_run(ME, "default", "exp", name="parent")
    child = svc.create_run(ME, "default", "exp", parent_run_id=parent.id)
    assert child.parent_run_id == parent.id
    done = svc.update_run(ME, child.id, status="finished")
    assert done.status == "FINISHED" and done.end_time is not None
    with pytest.raises(NotFound):
        svc.create_run(ME, "default", "exp", parent_run_id="01HXXXXXXXXXXXXXXXXXXXXXXX")


def test_soft_delete_hides_and_restores(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp")
    svc.delete_run(ME, run.id)
    assert svc.search_runs(ME, "default").items == []
    assert [r.id for r in svc.search_runs(ME, "default", include_deleted=True).items] == [run.id]
    with pytest.raises(Conflict, match="restore"):
        svc.log_batch(ME, run.id, tags={"a": "b"})
    svc.restore_run(ME, run.id)
    assert [r.id for r in svc.search_runs(ME, "default").items] == [run.id]


def test_search_filter_order_and_pages(svc: TrackingService) -> None:
    ids = []
    for i in range(7):
        run = svc.create_run(ME, "default", "grid", params={"depth": i % 3})
        svc.log_batch(ME, run.id, metrics=[MetricIn(key="auc", value=i / 10, step=0)])
        ids.append(run.id)
    page = svc.search_runs(
        ME,
        "default",
        filter="metrics.auc >= 0.2 and params.depth != '0'",
        order_by=["metrics.auc DESC"],
        max_results=2,
    )
    values = [r.metrics["auc"] for r in page.items]
    assert values == [0.5, 0.4]
    rest = svc.search_runs(
        ME,
        "default",
        filter="metrics.auc >= 0.2 and params.depth != '0'",
        order_by=["metrics.auc DESC"],
        max_results=2,
        page_token=page.next_page_token,
    )
    assert [r.metrics["auc"] for r in rest.items] == [0.2]
    assert rest.next_page_token is None


def test_compare_reports_differing_params(svc: TrackingService) -> None:
    a = svc.create_run(ME, "default", "cmp", params={"lr": 0.1, "seed": 1})
    b = svc.create_run(ME, "default", "cmp", params={"lr": 0.2, "seed": 1})
    for run, v in ((a, 0.7), (b, 0.8)):
        svc.log_batch(
            ME, run.id, metrics=[MetricIn(key="acc", value=v * s, step=s) for s in range(1, 4)]
        )
    cmp = svc.compare_runs(ME, [a.id, b.id])
    assert cmp.differing_params == ["lr"]
    assert cmp.param_keys == ["lr", "seed"]
    assert len(cmp.histories["acc"][a.id]) == 3


def test_artifacts_round_trip(svc: TrackingService, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = svc.create_run(ME, "default", "art")
    svc.log_artifact(ME, run.id, "plots/a.txt", b"hello")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.json").write_text("{}")
    svc.log_artifacts(ME, run.id, tmp_path / "d", "cfg")
    assert [a.path for a in svc.list_artifacts(ME, run.id)] == ["cfg/x.json", "plots/a.txt"]
    assert svc.read_artifact(ME, run.id, "plots/a.txt") == b"hello"
    with pytest.raises(InvalidInput):
        svc.log_artifact(ME, run.id, "../evil", b"x")
    with pytest.raises(NotFound):
        svc.read_artifact(ME, run.id, "missing.txt")


def test_idempotent_batches_are_applied_once(svc: TrackingService) -> None:
    run = svc.create_run(ME, "default", "exp")
    batch = [MetricIn(key="m", value=float(i), step=i) for i in range(5)]
    for _ in range(3):  # a client resending a batch whose answer it never got
        svc.log_batch(ME, run.id, metrics=batch, idempotency_key="batch-0001")
    svc.log_batch(ME, run.id, metrics=batch, idempotency_key="batch-0002")
    assert len(svc.metric_history(ME, run.id, "m")) == 10
    with pytest.raises(InvalidInput, match="Idempotency key"):
        svc.log_batch(ME, run.id, metrics=batch, idempotency_key="bad key!")
