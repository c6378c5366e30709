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

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pandas as pd
from threadpoolctl import threadpool_limits

from modelworks.core.errors import InvalidInput
from modelworks.training.automl.executors import RayCluster, run_local, run_ray
from modelworks.training.automl.families import FAMILIES, model_threads
from modelworks.training.automl.inputs import read_inputs
from modelworks.training.automl.metrics import Metric
from modelworks.training.automl.progress import BudgetProgress
from modelworks.training.automl.result import AutoMLResult, TrialResult, sort_leaderboard
from modelworks.training.automl.search import Search
from modelworks.training.automl.splits import prepare
from modelworks.training.automl.trials import TrialOutcome
from modelworks.training.automl.winner import REFIT_SAFETY, refit_winner, select_members

MIN_RESERVE_FRACTION = 0.05
ENSEMBLE_FRACTION = 0.04  # of the budget, kept for ensemble selection
RESERVE_CAP_SECONDS = 3.0  # neither fixed reserve needs more on long budgets
OVERRUN_ALLOWED = 0.05  # fraction of the budget the refit may run past it


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fixed_reserve(fraction: float, budget: float) -> float:
    return min(fraction * budget, RESERVE_CAP_SECONDS)


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
    inputs = read_inputs(frame, target, task, metric, families)
    scorer, notes, names = inputs.scorer, inputs.notes, inputs.families
    threads = max(1, n_jobs or (1 if ray_address else _cpu_count()))

    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cluster = RayCluster(ray_address, threads) if ray_address else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with threadpool_limits(limits=threads):
                data, fold_preprocessors = prepare(
                    inputs.X,
                    inputs.y,
                    inputs.task,
                    len(inputs.classes or []),
                    inputs.columns,
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
            search_end=budget_end - 2 * _fixed_reserve(MIN_RESERVE_FRACTION, time_budget),
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
                reserve = _fixed_reserve(ENSEMBLE_FRACTION, time_budget) + max(
                    _fixed_reserve(MIN_RESERVE_FRACTION, time_budget),
                    REFIT_SAFETY * search.refit_estimate(),
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
            members, weights, ensemble = select_members(
                ok, data, scorer, search.next_number, hard_end - time.time()
            )
            model, used, fallback_note = refit_winner(
                members,
                weights,
                best=ok[0],
                best_with_models=best_models.get("trial"),
                data=data,
                cols=inputs.columns,
                fold_preprocessors=fold_preprocessors,
                X=inputs.X,
                y=inputs.target,
                classes=inputs.classes,
                seed=seed,
                n_jobs=threads,
                hard_end=hard_end,
            )
            if fallback_note:
                notes.append(fallback_note)
            if ensemble is not None and len(used) > 1:
                results.append(ensemble)
                if on_trial is not None:
                    on_trial(ensemble)
                best_result = ensemble
            else:
                best_result = next(r for r in results if r.number == used[0].number)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
        if cluster is not None:
            cluster.close()
    board = sort_leaderboard(results, scorer.greater_is_better)
    if best_result.family != "ensemble":
        best_result = next(r for r in board if r.number == best_result.number)
    return AutoMLResult(
        task=inputs.task,
        metric=scorer.name,
        greater_is_better=scorer.greater_is_better,
        best=best_result,
        leaderboard=board,
        model=model,
        classes=inputs.classes,
        feature_columns=inputs.feature_columns,
        warnings=notes,
        elapsed_seconds=round(time.time() - started, 3),
    )
