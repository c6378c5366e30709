"""Tasks and metrics: what AutoML optimises and in which direction.

Every model's validation output is a prediction matrix: class probabilities (n x K) for
classification, a vector of values for regression. Each metric scores that matrix, so the
search, the ensemble selection and the leaderboard all read predictions the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from modelworks.core.errors import InvalidInput

TASKS = ("binary", "multiclass", "regression")
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
_EPS = 1e-15


@dataclass(frozen=True)
class Metric:
    """A scoring rule over predictions; ``loss`` turns any score into lower-is-better."""

    name: str
    greater_is_better: bool
    tasks: tuple[str, ...]
    fn: Callable[[np.ndarray, np.ndarray], float]

    def score(self, y_true: np.ndarray, pred: np.ndarray) -> float:
        return float(self.fn(y_true, pred))

    def loss(self, y_true: np.ndarray, pred: np.ndarray) -> float:
        value = self.score(y_true, pred)
        return -value if self.greater_is_better else value

    def from_loss(self, loss: float) -> float:
        return -loss if self.greater_is_better else loss


def _labels(pred: np.ndarray) -> np.ndarray:
    return np.asarray(pred).argmax(axis=1)


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties averaged): the same value as scikit-learn's,
    without its input checks, which dominate the cost in ensemble selection's many calls."""
    from scipy.stats import rankdata

    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return _binary_auc(np.asarray(y), p[:, 1])
    return float(
        skm.roc_auc_score(
            y, p / p.sum(axis=1, keepdims=True), multi_class="ovr", labels=range(p.shape[1])
        )
    )


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), np.asarray(y, dtype=int)])))


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, dtype=np.float64) - p) ** 2)))


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    average = "binary" if p.shape[1] == 2 else "macro"
    return float(skm.f1_score(y, _labels(p), average=average))


_CLS = ("binary", "multiclass")
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", True, _CLS, _roc_auc),
        Metric("log_loss", False, _CLS, _log_loss),
        Metric("accuracy", True, _CLS, lambda y, p: skm.accuracy_score(y, _labels(p))),
        Metric(
            "balanced_accuracy", True, _CLS, lambda y, p: skm.balanced_accuracy_score(y, _labels(p))
        ),
        Metric("f1", True, _CLS, _f1),
        Metric("rmse", False, ("regression",), _rmse),
        Metric("mse", False, ("regression",), lambda y, p: skm.mean_squared_error(y, p)),
        Metric("mae", False, ("regression",), lambda y, p: skm.mean_absolute_error(y, p)),
        Metric("r2", True, ("regression",), lambda y, p: skm.r2_score(y, p)),
    )
}


def infer_task(y: pd.Series) -> str:
    """Binary for two values, multiclass for a few labels, regression for numbers.

    Integers with at most 20 distinct values (and fewer than a twentieth of the rows) are
    read as classes; floats are classes only when every value is whole and there are few.
    """
    values = y.dropna()
    n_unique = int(values.nunique())
    if n_unique <= 2:
        return "binary"
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "multiclass"
    few = n_unique <= 20 and n_unique <= max(3, len(values) // 20)
    if pd.api.types.is_integer_dtype(values) and few:
        return "multiclass"
    if pd.api.types.is_float_dtype(values) and few and bool((values % 1 == 0).all()):
        return "multiclass"
    return "regression"


def resolve_task(task: str | None, y: pd.Series) -> str:
    if task is None:
        return infer_task(y)
    if task not in TASKS:
        raise InvalidInput(
            f"Unknown task {task!r}; use one of {', '.join(TASKS)} (or None to infer it)."
        )
    return task


def resolve_metric(metric: str | None, task: str) -> Metric:
    name = metric or DEFAULT_METRIC[task]
    found = METRICS.get(name)
    if found is None:
        raise InvalidInput(f"Unknown metric {name!r}; use one of {', '.join(sorted(METRICS))}.")
    if task not in found.tasks:
        allowed = sorted(m.name for m in METRICS.values() if task in m.tasks)
        raise InvalidInput(
            f"Metric {name!r} does not apply to a {task} task; use one of {', '.join(allowed)}."
        )
    return found
