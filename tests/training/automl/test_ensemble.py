"""Greedy ensemble selection, the ensemble estimators, and the ensemble path of a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from modelworks.training.automl import EnsembleClassifier, EnsembleRegressor, run_automl
from modelworks.training.automl.ensemble import caruana_selection


def test_caruana_prefers_the_blend_of_complementary_models() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0])
    over = y + np.array([1.0, -1.0, 1.0, -1.0])
    under = y - np.array([1.0, -1.0, 1.0, -1.0])
    bad = y + 5
    weights, loss = caruana_selection(
        [over, under, bad], lambda p: float(np.mean((p - y) ** 2)), rounds=10
    )
    assert weights[2] == 0
    assert abs(weights[0] - weights[1]) < 1e-9
    assert loss == 0.0


def test_caruana_keeps_a_single_model_that_cannot_be_improved() -> None:
    y = np.arange(5.0)
    weights, loss = caruana_selection(
        [y.copy(), y + 1], lambda p: float(np.mean((p - y) ** 2)), rounds=5
    )
    assert weights.tolist() == [1.0, 0.0] and loss == 0.0


def test_ensemble_classifier_maps_codes_back_to_labels() -> None:
    X, y = make_classification(n_samples=200, random_state=0)
    labels = np.where(y == 1, "yes", "no")
    model = EnsembleClassifier(
        [LogisticRegression(), DecisionTreeClassifier(max_depth=3, random_state=0)], [0.7, 0.3]
    ).fit(X, labels)
    assert list(model.classes_) == ["no", "yes"]
    proba = model.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1)
    assert set(model.predict(X)) == {"no", "yes"}
    assert np.allclose(model.weights_, [0.7, 0.3])


def test_ensemble_regressor_averages_with_weights() -> None:
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    model = EnsembleRegressor([LinearRegression(), LinearRegression()], [1, 3]).fit(X, y)
    np.testing.assert_allclose(model.predict(X), LinearRegression().fit(X, y).predict(X))


def test_run_returns_an_ensemble_when_it_beats_the_best_single_model() -> None:
    # A linear signal plus an interaction: linear models and trees each get part of it.
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"x{i}" for i in range(6)])
    logit = frame.sum(axis=1) + 2 * np.sign(frame.x0 * frame.x1)
    frame["y"] = (logit + rng.normal(scale=1.0, size=n) > 0).astype(int)
    result = run_automl(
        frame,
        "y",
        time_budget=60,
        seed=0,
        n_jobs=1,
        families=["linear", "lightgbm", "extra_trees"],
        max_trials=6,
    )
    assert result.best.family == "ensemble"
    members = result.best.params["members"]
    assert len(members) >= 2 and abs(sum(m["weight"] for m in members) - 1) < 1e-3
    singles = [t.score for t in result.leaderboard if t.family != "ensemble" and t.score]
    assert result.best.score is not None and result.best.score > max(singles)
    assert isinstance(result.model, EnsembleClassifier)
    assert len(result.model.estimators_) == len(members)
    assert result.model.predict_proba(frame.drop(columns="y")).shape == (n, 2)
