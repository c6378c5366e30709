"""The torch MLP family: trained with torch, fitted state in NumPy only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

pytest.importorskip("torch")

from modelworks.training.automl import TorchMLPClassifier, TorchMLPRegressor, run_automl


def _plain(value: object) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, np.ndarray | int | float | str | bool | type(None))


def test_classifier_learns_and_keeps_only_numpy_state() -> None:
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = TorchMLPClassifier(hidden_size=32, max_epochs=60, random_state=0).fit(X, y)
    assert (model.predict(X) == y).mean() > 0.9
    assert all(_plain(v) for v in vars(model).values())
    assert all(isinstance(w, np.ndarray) for w in model.coefs_ + model.intercepts_)
    again = TorchMLPClassifier(hidden_size=32, max_epochs=60, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.predict_proba(X), again.predict_proba(X))


def test_regressor_scales_the_target_back() -> None:
    X, y = load_diabetes(return_X_y=True)
    model = TorchMLPRegressor(hidden_size=32, max_epochs=40, random_state=0).fit(X, y)
    pred = model.predict(X)
    assert abs(pred.mean() - y.mean()) < 0.2 * y.std()
    assert all(_plain(v) for v in vars(model).values())


def test_mlp_family_in_a_run() -> None:
    frame = load_iris(as_frame=True).frame
    result = run_automl(
        frame, "target", time_budget=30, seed=0, n_jobs=1, families=["mlp"], max_trials=2
    )
    assert {t.family for t in result.leaderboard} == {"mlp"}
    assert result.best.score is not None and result.best.score < 0.5
