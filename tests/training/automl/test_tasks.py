"""Each task type end to end on scikit-learn's bundled data, with a budget of a few seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split

from modelworks.training.automl import AutoMLResult, TrialResult, run_automl

FAST = ["linear", "lightgbm", "extra_trees"]


def _frame(loader: str) -> pd.DataFrame:
    return getattr(datasets, loader)(as_frame=True).frame


def test_binary_on_breast_cancer_scores_well_on_held_out_rows() -> None:
    frame = _frame("load_breast_cancer")
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame.target)
    result = run_automl(train, "target", time_budget=4, seed=0, n_jobs=2, families=FAST)
    assert isinstance(result, AutoMLResult)
    assert (result.task, result.metric, result.greater_is_better) == ("binary", "roc_auc", True)
    assert result.classes == [0, 1]
    proba = result.model.predict_proba(test.drop(columns="target"))
    assert proba.shape == (len(test), 2)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test.target, proba[:, 1]) > 0.97
    assert list(result.model.classes_) == [0, 1]
    assert result.best.score is not None and result.best.score > 0.97
    assert result.best.status == "ok"


def test_multiclass_on_iris_takes_string_labels() -> None:
    frame = _frame("load_iris")
    frame["target"] = np.array(["setosa", "versicolor", "virginica"])[frame.target]
    result = run_automl(frame, "target", time_budget=4, seed=0, n_jobs=2, families=FAST)
    assert (result.task, result.metric, result.greater_is_better) == (
        "multiclass",
        "log_loss",
        False,
    )
    assert result.classes == ["setosa", "versicolor", "virginica"]
    X = frame.drop(columns="target")
    assert (result.model.predict(X) == frame.target).mean() > 0.95
    assert np.allclose(result.model.predict_proba(X).sum(axis=1), 1.0)
    assert result.best.score is not None and result.best.score < 0.3


def test_regression_on_diabetes_with_a_chosen_metric() -> None:
    frame = _frame("load_diabetes")
    result = run_automl(
        frame, "target", metric="r2", time_budget=4, seed=0, n_jobs=2, families=FAST
    )
    assert (result.task, result.metric, result.greater_is_better) == ("regression", "r2", True)
    assert result.classes is None
    pred = result.model.predict(frame.drop(columns="target"))
    assert pred.shape == (len(frame),)
    assert result.best.score is not None and result.best.score > 0.35


def test_leaderboard_frame_repr_and_trial_callback() -> None:
    frame = _frame("load_wine")
    seen: list[TrialResult] = []
    result = run_automl(
        frame,
        "target",
        time_budget=4,
        seed=0,
        n_jobs=2,
        families=["linear", "lightgbm"],
        on_trial=seen.append,
        progress=True,
    )
    board = result.leaderboard_frame()
    assert list(board.columns) == [
        "rank",
        "number",
        "family",
        "score",
        "status",
        "fit_seconds",
        "params",
        "error",
    ]
    assert len(board) == len(result.leaderboard) == len(seen)
    assert {t.number for t in seen} == set(board.number)
    assert set(board.status) <= {"ok", "pruned", "failed"}
    ok = board[board.status == "ok"].score.tolist()
    assert ok == sorted(ok)  # log loss: best (lowest) first
    assert result.best is result.leaderboard[0]
    assert "AutoMLResult(task='multiclass'" in repr(result)
    assert result.feature_columns == [c for c in frame.columns if c != "target"]


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss", "balanced_accuracy"])
def test_other_classification_metrics(metric: str) -> None:
    frame = _frame("load_breast_cancer")
    result = run_automl(
        frame, "target", metric=metric, time_budget=2, n_jobs=1, families=["linear"], max_trials=2
    )
    assert result.metric == metric
    assert result.best.score is not None
