"""Trials as Ray tasks on a real local cluster reach the quality of the in-process run."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_breast_cancer

from modelworks.training.automl import run_automl

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_trials_match_local_quality(ray_cluster) -> None:
    import ray

    frame = load_breast_cancer(as_frame=True).frame
    families = ["linear", "lightgbm", "extra_trees"]
    local = run_automl(frame, "target", time_budget=8, seed=0, n_jobs=1, families=families)
    seen = []
    try:
        remote = run_automl(
            frame,
            "target",
            time_budget=20,
            seed=0,
            n_jobs=1,
            families=families,
            ray_address=ray_cluster.address,
            on_trial=seen.append,
        )
    finally:
        ray.shutdown()
    assert len(seen) >= 3
    assert {t.family for t in remote.leaderboard} >= {"linear", "lightgbm"}
    assert remote.best.score is not None and local.best.score is not None
    assert remote.best.score >= local.best.score - 0.01
    assert remote.elapsed_seconds <= 20 * 1.1
    X = frame.drop(columns="target")
    assert ((remote.model.predict(X) == frame.target).mean()) > 0.95
