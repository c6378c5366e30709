"""``run_automl``: from a raw frame to one fitted estimator under a time budget.

The steps, and what each costs in the budget: check the input and type the columns; split
and preprocess once per fold; search (the bulk of the budget, ended early enough to leave a
reserve for the refit); choose a greedy ensemble when it beats the best single model on
the validation predictions; refit the winner on all rows. When the refit would not fit in
what is left, the run falls back to the single best model, then to the models the best
trial already trained on its folds, and says so in ``warnings``.

Reproducibility: with the same seed, ``ray_address=None``, the same ``n_jobs`` and a
``max_trials`` that ends the search before the clock does, two runs give the same
leaderboard order and the same predictions: in that mode the family choice uses fixed
prior costs instead of measured seconds. A run that ends on the clock repeats its first
trials, but how many it gets to depends on the machine.
"""

# ruff: noqa: N803, N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from modelworks.core.errors import InvalidInput
from modelworks.training.automl.columns import ColumnKinds, check_target, inspect_columns
from modelworks.training.automl.ensemble import (
    EnsembleClassifier,
    EnsembleRegressor,
    caruana_selection,
)
from modelworks.training.automl.executors import RayCluster, run_local, run_ray
from modelworks.training.automl.families import (
    FAMILIES,
    available_families,
    build_model,
    model_threads,
    refit_rounds,
)
from modelworks.training.automl.metrics import Metric, resolve_metric, resolve_task
from modelworks.training.automl.mlp import torch_available
from modelworks.training.automl.preprocessing import build_preprocessor
from modelworks.training.automl.progress import BudgetProgress
from modelworks.training.automl.result import AutoMLResult, TrialResult, sort_leaderboard
from modelworks.training.automl.search import Search
from modelworks.training.automl.splits import PreparedData, prepare
from modelworks.training.automl.trials import TrialOutcome

MIN_RESERVE_FRACTION = 0.05
ENSEMBLE_FRACTION = 0.04  # of the budget, kept for ensemble selection
REFIT_SAFETY = 1.2
ENSEMBLE_CANDIDATES = 15
ENSEMBLE_ROUNDS = 20
OVERRUN_ALLOWED = 0.05  # fraction of the budget the refit may run past it


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _encode_target(y: pd.Series, task: str, target: str) -> tuple[np.ndarray, list[Any] | None]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise InvalidInput(
                f"Target {target!r} has dtype {y.dtype}, which is not a number: a regression "
                "needs a numeric target. Use task='binary' or 'multiclass' for labels."
            )
        return y.to_numpy(dtype=np.float64), None
    try:
        classes, codes = np.unique(y.to_numpy(), return_inverse=True)
    except TypeError:
        raise InvalidInput(
            f"Target {target!r} mixes value types (e.g. numbers and strings); cast it to one "
            "type, e.g. frame[target].astype(str)."
        )
    if len(classes) < 2:
        raise InvalidInput(
            f"Target {target!r} has a single class ({classes[0]!r}); classification needs at "
            "least two. Check the filter that built the frame, or use task='regression'."
        )
    if task == "binary" and len(classes) > 2:
        raise InvalidInput(
            f"Target {target!r} has {len(classes)} classes, not 2; use task='multiclass'."
        )
    counts = np.bincount(codes)
    if counts.min() < 2:
        lonely = [repr(c) for c, n in zip(classes, counts, strict=True) if n < 2]
        raise InvalidInput(
            f"Target {target!r} has classes with a single row ({', '.join(lonely[:5])}); "
            "cross-validation needs at least 2 rows per class. Drop those rows or merge rare "
            "classes."
        )
    return codes.astype(np.int64), list(classes.tolist())


def _families(requested: Sequence[str] | None) -> list[str]:
    available = available_families()
    if requested is None:
        return available
    names = list(dict.fromkeys(requested))
    for name in names:
        if name not in FAMILIES:
            raise InvalidInput(f"Unknown model family {name!r}; use some of {', '.join(FAMILIES)}.")
        if name == "mlp" and not torch_available():
            raise InvalidInput("The 'mlp' family needs torch: pip install 'modelworks[torch]'.")
    if not names:
        raise InvalidInput(f"families is empty; give some of {', '.join(FAMILIES)}, or None.")
    return names


def _trial_result(outcome: TrialOutcome, metric: Metric) -> TrialResult:
    score = None if outcome.loss is None else metric.from_loss(outcome.loss)
    return TrialResult(
        number=outcome.number,
        family=outcome.family,
        params=dict(outcome.params),
        score=score,
        fit_seconds=round(outcome.fit_seconds, 4),
        status=outcome.status,
        error=outcome.error,
    )


def _member_pipeline(
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


def _refit_seconds(members: list[TrialOutcome], data: PreparedData) -> float:
    scale = data.n_rows / max(1, len(data.folds[0][0]))
    kinds = {FAMILIES[m.family].kind for m in members}
    pre = sum(data.preprocess_seconds.get(k, 0.0) for k in kinds) * scale * len(members)
    return pre + sum(float(np.mean(m.stage_seconds)) * scale for m in members)


def run_automl(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str | None = None,
    metric: str | None = None,
    time_budget: float = 60.0,
    seed: int = 0,
    n_jobs: int | None = None,
    families: Sequence[str] | None = None,
    ray_address: str | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    progress: bool = False,
    max_trials: int | None = None,
) -> AutoMLResult:
    """Search model families and their settings on ``frame`` to predict ``target``.

    Returns an ``AutoMLResult`` whose ``model`` is one fitted estimator over the raw frame
    without the target. Wall time stays within ``time_budget`` plus 10 %. ``max_trials``
    caps the number of trials (and makes a run reproducible, see the module docstring).
    ``on_trial`` is called after every trial, and once more for the ensemble when it wins.
    """
    started = time.time()
    if not time_budget or time_budget <= 0:
        raise InvalidInput(
            f"time_budget must be a positive number of seconds; got {time_budget!r}."
        )
    if max_trials is not None and max_trials < 1:
        raise InvalidInput(f"max_trials must be at least 1; got {max_trials}.")
    budget_end = started + float(time_budget)
    check_target(frame, target)
    notes: list[str] = []
    labelled = frame[frame[target].notna()]
    if len(labelled) < len(frame):
        notes.append(f"{len(frame) - len(labelled)} rows with a null target were left out.")
    task_name = resolve_task(task, labelled[target])
    scorer = resolve_metric(metric, task_name)
    y, classes = _encode_target(labelled[target], task_name, target)
    inspected = inspect_columns(labelled, target, task_name)
    notes += inspected.warnings
    cols = inspected.kinds
    feature_columns = [c for c in labelled.columns if c in set(cols.all)]
    X = labelled[feature_columns]
    names = _families(families)
    threads = max(1, n_jobs or (1 if ray_address else _cpu_count()))

    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cluster = RayCluster(ray_address, threads) if ray_address else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with threadpool_limits(limits=threads):
                data, fold_preprocessors = prepare(
                    X,
                    y,
                    task_name,
                    len(classes or []),
                    cols,
                    {FAMILIES[n].kind for n in names},
                    seed,
                )
        width = max(a[0].X_train.shape[1] for a in data.arrays.values())
        threads = model_threads(threads, data.n_rows, width)
        search = Search(
            data=data,
            metric=scorer,
            families=names,
            seed=seed,
            n_jobs=threads,
            search_end=budget_end - (MIN_RESERVE_FRACTION + ENSEMBLE_FRACTION) * time_budget,
            hard_end=budget_end,
            max_trials=max_trials,
            concurrent=ray_address is not None,
            keep_models=ray_address is None,
        )
        best_models: dict[str, Any] = {}
        results: list[TrialResult] = []

        with BudgetProgress(time_budget, progress) as bar:

            def report(outcome: TrialOutcome) -> None:
                result = _trial_result(outcome, scorer)
                results.append(result)
                ok = [o for o in search.outcomes if o.status == "ok" and o.loss is not None]
                best = min(ok, key=lambda o: o.loss or 0.0) if ok else None
                if best is outcome and outcome.models:
                    previous = best_models.get("trial")
                    if previous is not None:
                        previous.models = []  # only the best trial's fold models are kept
                    best_models["trial"] = outcome
                elif best is not outcome:
                    outcome.models = []
                reserve = ENSEMBLE_FRACTION * time_budget + max(
                    MIN_RESERVE_FRACTION * time_budget, REFIT_SAFETY * search.refit_estimate()
                )
                search.search_end = budget_end - reserve
                if best is not None:
                    bar.update(
                        f"{len(results)} trials, best {scorer.name} "
                        f"{scorer.from_loss(best.loss or 0.0):.5g} ({best.family})"
                    )
                if on_trial is not None:
                    on_trial(result)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if cluster is not None:
                    run_ray(search, data, report, cluster)
                else:
                    run_local(search, data, report)

            ok = sorted(
                (o for o in search.outcomes if o.status == "ok" and o.predictions is not None),
                key=lambda o: (o.loss, o.number),
            )
            if not ok:
                errors = "; ".join(sorted({r.error or r.status for r in results}))[:500]
                raise InvalidInput(
                    f"No trial finished within the time budget of {time_budget:g} s "
                    f"({len(results)} tried: {errors or 'none started'}). Give a larger "
                    "time_budget, or check the data."
                )
            hard_end = budget_end + OVERRUN_ALLOWED * time_budget
            members, weights, ensemble = _select(
                ok, data, scorer, search.next_number, hard_end - time.time()
            )
            model, fallback_note = _refit(
                members,
                weights,
                ok[0],
                best_models.get("trial"),
                data,
                cols,
                fold_preprocessors,
                X,
                labelled[target],
                classes,
                seed,
                threads,
                budget_end + OVERRUN_ALLOWED * time_budget,
            )
            if fallback_note:
                notes.append(fallback_note)
            if ensemble is not None and len(members) > 1:
                results.append(ensemble)
                if on_trial is not None:
                    on_trial(ensemble)
                best_result = ensemble
            else:
                best_result = next(r for r in results if r.number == members[0].number)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
        if cluster is not None:
            cluster.close()
    board = sort_leaderboard(results, scorer.greater_is_better)
    if best_result.family != "ensemble":
        best_result = next(r for r in board if r.number == best_result.number)
    return AutoMLResult(
        task=task_name,
        metric=scorer.name,
        greater_is_better=scorer.greater_is_better,
        best=best_result,
        leaderboard=board,
        model=model,
        classes=classes,
        feature_columns=feature_columns,
        warnings=notes,
        elapsed_seconds=round(time.time() - started, 3),
    )


def _select(
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
        if REFIT_SAFETY * _refit_seconds(members, data) > time_left:
            slowest = max(
                (m for m in members if m is not best), key=lambda m: _refit_seconds([m], data)
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


def _refit(
    members: list[TrialOutcome],
    weights: list[float],
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
) -> tuple[Any, str | None]:
    """Fit the winner on all rows, or fall back when the time left is too short for it."""
    note: str | None = None
    left = hard_end - time.time()
    if len(members) > 1 and REFIT_SAFETY * _refit_seconds(members, data) > left:
        note = (
            "The ensemble could not be refitted within the time budget; the best single "
            "model is used."
        )
        members, weights = [best], [1.0]
    fold_models = best_with_models if best_with_models is best else None
    if REFIT_SAFETY * _refit_seconds(members, data) > left and fold_models is not None:
        kind = FAMILIES[best.family].kind
        pipes = [
            Pipeline([("preprocess", pre), ("model", m)])
            for pre, m in zip(fold_preprocessors[kind], fold_models.models, strict=True)
        ]
        note = (
            "The best model could not be refitted on all rows within the time budget; its "
            "models from the validation folds are averaged instead."
        )
        if data.task == "regression":
            return EnsembleRegressor.from_fitted(pipes, [1.0] * len(pipes)), note
        return EnsembleClassifier.from_fitted(pipes, [1.0] * len(pipes), np.asarray(classes)), note
    pipes = [_member_pipeline(m, data, cols, seed, n_jobs) for m in members]
    with warnings.catch_warnings(), threadpool_limits(limits=n_jobs):
        warnings.simplefilter("ignore")
        if data.task != "regression":
            return EnsembleClassifier(pipes, weights).fit(X, y.to_numpy()), note
        target = y.to_numpy(dtype=np.float64)
        if len(pipes) == 1:
            return pipes[0].fit(X, target), note
        return EnsembleRegressor(pipes, weights).fit(X, target), note
