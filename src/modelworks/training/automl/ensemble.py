"""Weighted ensembles of fitted pipelines, and greedy ensemble selection (Caruana et al.).

``EnsembleClassifier`` is also how a single classifier is returned: its members learn
integer class codes (XGBoost needs 0..K-1) and it maps them back to the user's labels, so
``classes_`` and ``predict`` speak the target's own values.
"""

# ruff: noqa: N803 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone

from modelworks.training.trusted import register_trusted_types


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return w / w.sum()


class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Weighted average of members' class probabilities; members are trained on class codes."""

    def __init__(self, estimators: list[Any], weights: Sequence[float] | None = None) -> None:
        self.estimators = estimators
        self.weights = weights

    def fit(self, X: Any, y: Any) -> EnsembleClassifier:
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.estimators_ = [clone(e).fit(X, codes) for e in self.estimators]
        self.weights_ = _weights(self.weights, len(self.estimators_))
        return self

    @classmethod
    def from_fitted(
        cls, estimators: list[Any], weights: Sequence[float], classes: np.ndarray
    ) -> EnsembleClassifier:
        """Wrap members already fitted on class codes 0..K-1 of ``classes``."""
        model = cls(estimators=estimators, weights=list(weights))
        model.classes_ = np.asarray(classes)
        model.estimators_ = list(estimators)
        model.weights_ = _weights(weights, len(estimators))
        return model

    def predict_proba(self, X: Any) -> np.ndarray:
        k = len(self.classes_)
        total = np.zeros((len(X), k))
        for est, w in zip(self.estimators_, self.weights_, strict=True):
            proba = np.asarray(est.predict_proba(X), dtype=np.float64)
            codes = np.asarray(est.classes_, dtype=int)
            total[:, codes] += w * proba
        return total / total.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


class EnsembleRegressor(RegressorMixin, BaseEstimator):
    """Weighted average of members' predictions."""

    def __init__(self, estimators: list[Any], weights: Sequence[float] | None = None) -> None:
        self.estimators = estimators
        self.weights = weights

    def fit(self, X: Any, y: Any) -> EnsembleRegressor:
        self.estimators_ = [clone(e).fit(X, y) for e in self.estimators]
        self.weights_ = _weights(self.weights, len(self.estimators_))
        return self

    @classmethod
    def from_fitted(cls, estimators: list[Any], weights: Sequence[float]) -> EnsembleRegressor:
        model = cls(estimators=estimators, weights=list(weights))
        model.estimators_ = list(estimators)
        model.weights_ = _weights(weights, len(estimators))
        return model

    def predict(self, X: Any) -> np.ndarray:
        preds = [np.asarray(e.predict(X), dtype=np.float64) for e in self.estimators_]
        return np.asarray(np.tensordot(self.weights_, np.vstack(preds), axes=1))


register_trusted_types(EnsembleClassifier, EnsembleRegressor)


def caruana_selection(
    predictions: Sequence[np.ndarray],
    loss: Callable[[np.ndarray], float],
    *,
    rounds: int = 25,
) -> tuple[np.ndarray, float]:
    """Greedy forward selection with replacement over stored validation predictions.

    Starts from the best single model and adds, each round, the member whose addition
    lowers the ensemble's loss most (a member may be added again, which raises its weight).
    Returns the weights (counts / rounds) and the ensemble's loss.
    """
    n = len(predictions)
    counts = np.zeros(n, dtype=np.int64)
    single = [loss(p) for p in predictions]
    first = int(np.argmin(single))
    counts[first] = 1
    current = predictions[first].astype(np.float64)
    best_loss = single[first]
    best_counts = counts.copy()
    for step in range(2, rounds + 1):
        trials = [loss((current * (step - 1) + p) / step) for p in predictions]
        pick = int(np.argmin(trials))
        counts[pick] += 1
        current = (current * (step - 1) + predictions[pick]) / step
        if trials[pick] < best_loss - 1e-12:
            best_loss = trials[pick]
            best_counts = counts.copy()
    return best_counts / best_counts.sum(), float(best_loss)
