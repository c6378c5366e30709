"""The holdout with successive halving on larger data, and the refit fallbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from modelworks.training.automl import EnsembleClassifier, run_automl, splits, winner


def _frame(n: int) -> pd.DataFrame:
    X, y = make_classification(n_samples=n, n_features=6, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    frame["y"] = y
    return frame


def test_folds_by_size() -> None:
    y = np.array([0, 1] * 50)
    folds, holdout = splits.choose_folds(y, "binary", seed=0)
    assert len(folds) == 5 and not holdout
    y = np.array([0, 1] * 1500)
    folds, holdout = splits.choose_folds(y, "binary", seed=0)
    assert len(folds) == 3 and not holdout
    y = np.array([1] * 37 + [0] * 3)  # the rarer class has 3 rows: 3 folds
    assert len(splits.choose_folds(y, "binary", seed=0)[0]) == 3


def test_large_data_uses_a_holdout_and_a_halving_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splits, "HOLDOUT_ROWS", 300)
    monkeypatch.setattr(splits, "HALVING_ROWS", 200)
    frame = _frame(400)
    y = frame["y"].to_numpy()
    folds, holdout = splits.choose_folds(y, "binary", seed=0)
    assert holdout and len(folds) == 1 and len(folds[0][1]) == 80
    stages = splits.make_stages(folds, holdout, seed=0)
    assert [s.final for s in stages] == [False, True]
    assert len(stages[0].train_rows) == 320 // 4
    result = run_automl(
        frame, "y", time_budget=30, n_jobs=1, families=["linear", "lightgbm"], max_trials=4
    )
    assert result.best.score is not None and result.best.score > 0.9


def test_a_trial_worse_than_the_threshold_is_pruned_after_its_first_stage() -> None:
    from modelworks.training.automl.columns import inspect_columns
    from modelworks.training.automl.trials import TrialSpec, evaluate_trial

    frame = _frame(200)
    cols = inspect_columns(frame, "y", "binary").kinds
    y = frame["y"].to_numpy()
    data, _ = splits.prepare(frame.drop(columns="y"), y, "binary", 2, cols, {"linear"}, seed=0)
    spec = TrialSpec(
        number=0,
        family="linear",
        params={"C": 1.0},
        metric="roc_auc",
        seed=0,
        n_jobs=1,
        deadline=float("inf"),
        thresholds=[-1.0] + [float("inf")] * 4,  # any AUC loss (-AUC) is above -1.0
    )
    out = evaluate_trial(spec, data)
    assert out.status == "pruned" and out.error == "pruned after stage 1 of 5"
    assert out.loss is None and len(out.stage_losses) == 1
    spec.thresholds = [float("inf")] * 5
    out = evaluate_trial(spec, data)
    assert out.status == "ok" and out.predictions is not None
    assert out.predictions.shape == (200, 2) and len(out.stage_losses) == 5


def test_falls_back_to_fold_models_when_the_refit_cannot_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(winner, "refit_seconds", lambda members, data: 1e9)
    frame = _frame(200)
    result = run_automl(
        frame, "y", time_budget=30, n_jobs=1, families=["linear", "lightgbm"], max_trials=3
    )
    assert any("models from the validation folds" in w for w in result.warnings)
    assert isinstance(result.model, EnsembleClassifier)
    assert len(result.model.estimators_) == 5  # one per fold
    proba = result.model.predict_proba(frame.drop(columns="y"))
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
