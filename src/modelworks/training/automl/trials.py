"""One trial: fit a configuration on every stage, score it, stop early when it is hopeless.

``evaluate_trial`` is a pure function of its inputs (arrays, a spec), so the same code runs
in-process or as a Ray task. Pruning compares the trial's running mean loss after each
stage with a threshold the driver derives from finished trials (a percentile pruner over
folds, or over the halving stages of a holdout).
"""

# ruff: noqa: N803, N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from modelworks.training.automl.families import build_model, fit_with_validation
from modelworks.training.automl.metrics import METRICS
from modelworks.training.automl.splits import PreparedData

EARLY_STOPPING_FRACTION = 0.15


@dataclass
class TrialSpec:
    number: int
    family: str
    params: dict[str, Any]
    metric: str
    seed: int
    n_jobs: int
    deadline: float  # time.time() after which fits stop where they are
    thresholds: list[float]  # per stage: prune when the running mean loss is above it
    keep_models: bool = False
    must_finish: bool = False  # the run's first trial: not stopped between stages by time


@dataclass
class TrialOutcome:
    number: int
    family: str
    params: dict[str, Any]
    status: str  # ok, pruned, failed
    loss: float | None = None
    predictions: np.ndarray | None = None  # validation predictions on data.validated_rows
    stage_losses: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    fit_seconds: float = 0.0
    stage_seconds: list[float] = field(default_factory=list)
    error: str | None = None
    models: list[Any] = field(default_factory=list)  # per fold, when keep_models


def predict_matrix(model: Any, X: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """Probabilities over all K classes (a fold may lack one), or regression values."""
    if task == "regression":
        return np.asarray(model.predict(X), dtype=np.float64)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = proba
    return out


def _early_stopping_split(
    X: np.ndarray, y: np.ndarray, seed: int, boosting: bool, classification: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boosting stops early on rows held out of the training fold, not on the validation
    fold: stopping on the rows it is scored on would flatter boosting's validation score
    (and, through many trials, the ensemble's), most on small data. For classes the split
    is stratified and every class keeps rows to train on."""
    if not boosting:
        return X, y, X[:0], y[:0]
    order = np.random.default_rng(seed).permutation(len(y))
    if classification:
        stop_parts = []
        for c in np.unique(y):
            rows = order[y[order] == c]
            stop_parts.append(rows[: int(len(rows) * EARLY_STOPPING_FRACTION)])
        stop = np.sort(np.concatenate(stop_parts))
    else:
        stop = np.sort(order[: max(int(len(y) * EARLY_STOPPING_FRACTION), 1)])
    if len(stop) == 0:  # tiny data: nothing to spare, stop on the training rows
        return X, y, X, y
    fit = np.setdiff1d(np.arange(len(y)), stop)
    return X[fit], y[fit], X[stop], y[stop]


def evaluate_trial(spec: TrialSpec, data: PreparedData) -> TrialOutcome:
    from modelworks.training.automl.families import FAMILIES

    metric = METRICS[spec.metric]
    kind = FAMILIES[spec.family].kind
    out = TrialOutcome(spec.number, spec.family, dict(spec.params), status="ok")
    shape = (len(data.y), data.n_classes) if data.task != "regression" else (len(data.y),)
    full = np.full(shape, np.nan)
    start = time.perf_counter()
    try:
        with threadpool_limits(limits=spec.n_jobs):
            for i, stage in enumerate(data.stages):
                t0 = time.perf_counter()
                train_pos, val_pos = data.folds[stage.fold]
                arrays = data.arrays[kind][stage.fold]
                X_train = arrays.X_train[stage.train_rows]
                y_train = data.y[train_pos][stage.train_rows]
                y_val = data.y[val_pos]
                model = build_model(
                    spec.family,
                    data.task,
                    spec.params,
                    seed=spec.seed,
                    n_jobs=spec.n_jobs,
                    cat_mask=arrays.cat_mask,
                )
                X_fit, y_fit, X_stop, y_stop = _early_stopping_split(
                    X_train,
                    y_train,
                    spec.seed,
                    FAMILIES[spec.family].boosting,
                    data.task != "regression",
                )
                rounds = fit_with_validation(
                    spec.family, model, X_fit, y_fit, X_stop, y_stop, spec.deadline
                )
                pred = predict_matrix(model, arrays.X_val, data.task, data.n_classes)
                out.stage_losses.append(metric.loss(y_val, pred))
                out.stage_seconds.append(time.perf_counter() - t0)
                if stage.final:
                    full[val_pos] = pred
                    if rounds is not None:
                        out.rounds.append(rounds)
                    if spec.keep_models:
                        out.models.append(model)
                running = float(np.mean(out.stage_losses))
                last = i == len(data.stages) - 1
                if not np.isfinite(running):
                    raise ValueError("the model gave non-finite predictions")
                if not last and running > spec.thresholds[i]:
                    out.status = "pruned"
                    out.error = f"pruned after stage {i + 1} of {len(data.stages)}"
                    break
                if not last and not spec.must_finish and time.time() > spec.deadline:
                    out.status = "pruned"
                    out.error = "stopped at the time budget"
                    break
    except Exception as exc:  # a failing configuration is a result, not a crash
        out.status = "failed"
        out.error = f"{type(exc).__name__}: {exc}"
        out.models = []
    out.fit_seconds = time.perf_counter() - start
    if out.status == "ok":
        rows = data.validated_rows
        out.predictions = full[rows]
        out.loss = metric.loss(data.y[rows], out.predictions)
    else:
        out.models = []
    return out
