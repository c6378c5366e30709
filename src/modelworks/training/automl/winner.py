"""The winner: greedy ensemble selection over the best trials, then the refit on all rows.

Both steps respect the time left: the ensemble keeps only members that can be refitted in
it, and when even the best single model cannot, its fold models are averaged instead.
"""

# ruff: noqa: N803 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from modelworks.training.automl.columns import ColumnKinds
from modelworks.training.automl.ensemble import (
    EnsembleClassifier,
    EnsembleRegressor,
    caruana_selection,
)
from modelworks.training.automl.families import FAMILIES, build_model, refit_rounds
from modelworks.training.automl.metrics import Metric
from modelworks.training.automl.preprocessing import build_preprocessor
from modelworks.training.automl.result import TrialResult
from modelworks.training.automl.splits import PreparedData
from modelworks.training.automl.trials import TrialOutcome

REFIT_SAFETY = 1.2
ENSEMBLE_CANDIDATES = 15
ENSEMBLE_ROUNDS = 20


def member_pipeline(
    outcome: TrialOutcome, data: PreparedData, cols: ColumnKinds, seed: int, n_jobs: int
) -> Pipeline:
    family = FAMILIES[outcome.family]
    rounds = refit_rounds(outcome.rounds) if outcome.rounds else None
    model = build_model(
        outcome.family,
        data.task,
        outcome.params,
        seed=seed,
        n_jobs=n_jobs,
        cat_mask=data.arrays[family.kind][0].cat_mask,
        rounds=rounds,
    )
    return Pipeline([("preprocess", build_preprocessor(family.kind, cols)), ("model", model)])


def refit_seconds(members: list[TrialOutcome], data: PreparedData) -> float:
    scale = data.n_rows / max(1, len(data.folds[0][0]))
    kinds = {FAMILIES[m.family].kind for m in members}
    pre = sum(data.preprocess_seconds.get(k, 0.0) for k in kinds) * scale * len(members)
    return pre + sum(float(np.mean(m.stage_seconds)) * scale for m in members)


def select_members(
    ok: list[TrialOutcome], data: PreparedData, scorer: Metric, number: int, time_left: float
) -> tuple[list[TrialOutcome], list[float], TrialResult | None]:
    """The ensemble's members and weights when it beats the best single model, else the best.

    Members must be refittable in ``time_left``: while the chosen ensemble would take
    longer, its slowest member (never the best single model) leaves the pool and the
    selection runs again.
    """
    pool = ok[:ENSEMBLE_CANDIDATES]
    best = pool[0]
    start = time.perf_counter()
    y_val = data.y[data.validated_rows]
    while len(pool) >= 2 and best.loss is not None:
        preds = [c.predictions for c in pool if c.predictions is not None]
        weights, loss = caruana_selection(
            preds, lambda p: scorer.loss(y_val, p), rounds=ENSEMBLE_ROUNDS
        )
        chosen = [i for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
        if len(chosen) < 2 or loss >= best.loss - 1e-9 * abs(best.loss):
            break
        members = [pool[i] for i in chosen]
        if REFIT_SAFETY * refit_seconds(members, data) > time_left:
            slowest = max(
                (m for m in members if m is not best), key=lambda m: refit_seconds([m], data)
            )
            pool = [c for c in pool if c is not slowest]
            continue
        member_weights = [float(weights[i]) for i in chosen]
        result = TrialResult(
            number=number,
            family="ensemble",
            params={
                "members": [
                    {"trial": m.number, "family": m.family, "weight": round(w, 4)}
                    for m, w in zip(members, member_weights, strict=True)
                ]
            },
            score=scorer.from_loss(loss),
            fit_seconds=round(time.perf_counter() - start, 4),
            status="ok",
        )
        return members, member_weights, result
    return [best], [1.0], None


def refit_winner(
    members: list[TrialOutcome],
    weights: list[float],
    *,
    best: TrialOutcome,
    best_with_models: TrialOutcome | None,
    data: PreparedData,
    cols: ColumnKinds,
    fold_preprocessors: dict[str, list[Any]],
    X: pd.DataFrame,
    y: pd.Series,
    classes: list[Any] | None,
    seed: int,
    n_jobs: int,
    hard_end: float,
) -> tuple[Any, list[TrialOutcome], str | None]:
    """Fit the winner on all rows, or fall back when the time left is too short for it.

    Returns the model, the trials it is made of, and a warning when it fell back.
    """
    note: str | None = None
    left = hard_end - time.time()
    if len(members) > 1 and REFIT_SAFETY * refit_seconds(members, data) > left:
        note = (
            "The ensemble could not be refitted within the time budget; the best single "
            "model is used."
        )
        members, weights = [best], [1.0]
    fold_models = best_with_models if best_with_models is best else None
    if REFIT_SAFETY * refit_seconds(members, data) > left and fold_models is not None:
        kind = FAMILIES[best.family].kind
        pipes = [
            Pipeline([("preprocess", pre), ("model", m)])
            for pre, m in zip(fold_preprocessors[kind], fold_models.models, strict=True)
        ]
        note = (
            "The best model could not be refitted on all rows within the time budget; its "
            "models from the validation folds are averaged instead."
        )
        equal = [1.0] * len(pipes)
        if data.task == "regression":
            return EnsembleRegressor.from_fitted(pipes, equal), [best], note
        return EnsembleClassifier.from_fitted(pipes, equal, np.asarray(classes)), [best], note
    pipes = [member_pipeline(m, data, cols, seed, n_jobs) for m in members]
    with warnings.catch_warnings(), threadpool_limits(limits=n_jobs):
        warnings.simplefilter("ignore")
        if data.task != "regression":
            return EnsembleClassifier(pipes, weights).fit(X, y.to_numpy()), members, note
        target = y.to_numpy(dtype=np.float64)
        if len(pipes) == 1:
            return pipes[0].fit(X, target), members, note
        return EnsembleRegressor(pipes, weights).fit(X, target), members, note
