"""``ws.automl.fit(...)``: the AutoML engine on a dataset version, tracked as runs.

The search is one parent run; every trial becomes a child run (params, score, status) as
it finishes, logged from a background thread so tracking never eats the time budget; the
winner is saved as a model package (its preprocessing included) in the parent run, with
the leaderboard next to it. Like :mod:`modelworks.training.trainer`, this runs wherever
the user's Python runs and talks to the store through the workspace.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.client import Workspace
    from modelworks.data.client import DatasetVersion
    from modelworks.tracking.client import ActiveRun
    from modelworks.training.automl.result import AutoMLResult, TrialResult

MODEL_ARTIFACT = "model"
# Time kept back from the engine for what follows the search: saving the package (skops
# writes it and reads it back to prove it loads), uploading it and the leaderboard, ending
# the runs. Measured at 1-3 s on 2 busy cores; a share of the budget, within bounds.
RESERVE_SHARE = 0.12
RESERVE_MIN_S, RESERVE_MAX_S = 1.0, 15.0


@dataclass
class AutoMLRun:
    """An AutoML search as tracked: the parent run, the engine's result, the dataset."""

    run_id: str
    dataset: str | None
    result: AutoMLResult
    elapsed_seconds: float
    test_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> Any:
        return self.result.model

    @property
    def best(self) -> TrialResult:
        return self.result.best

    @property
    def leaderboard(self) -> list[TrialResult]:
        return self.result.leaderboard

    def leaderboard_frame(self) -> pd.DataFrame:
        return self.result.leaderboard_frame()

    def predict(self, frame: pd.DataFrame) -> Any:
        return self.result.model.predict(frame[self.result.feature_columns])

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        return self.result.model.predict_proba(frame[self.result.feature_columns])

    def __repr__(self) -> str:
        return f"<AutoMLRun run={self.run_id} dataset={self.dataset}>\n{self.result!r}"

    def _repr_html_(self) -> str:
        from modelworks.core.html_tables import html_grid, html_table

        r = self.result
        head = html_table(
            "AutoML",
            [
                ("run", self.run_id),
                ("dataset", self.dataset or "-"),
                ("task", r.task),
                ("metric", r.metric),
                ("best", f"{r.best.family} {_fmt(r.best.score)}"),
                ("trials", len(r.leaderboard)),
                ("seconds", f"{self.elapsed_seconds:.1f}"),
            ],
        )
        rows = [
            (i + 1, t.family, _fmt(t.score), t.status, f"{t.fit_seconds:.2f}")
            for i, t in enumerate(r.leaderboard[:20])
        ]
        board = html_grid("Leaderboard", ["rank", "family", r.metric, "status", "seconds"], rows)
        return head + board


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.5g}"


class _TrialLogger:
    """Logs each trial as a child run from a background thread, in the order they finish."""

    def __init__(self, ws: Workspace, experiment: str, parent: ActiveRun, metric: str) -> None:
        self.ws, self.experiment, self.parent, self.metric = ws, experiment, parent, metric
        self.items: queue.Queue[TrialResult | None] = queue.Queue()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._drain, name="modelworks-automl-trials")
        self.thread.daemon = True
        self.thread.start()

    def __call__(self, trial: TrialResult) -> None:
        self.items.put(trial)

    def _drain(self) -> None:
        while (trial := self.items.get()) is not None:
            try:
                self._log(trial)
            except Exception as exc:  # a trial's record must not stop the search
                self.errors.append(f"trial {trial.number}: {exc}")

    def _log(self, trial: TrialResult) -> None:
        from modelworks.tracking.client import start_run

        # The run stack is per thread: the child is active in this logger thread only, so
        # it never becomes the active run of the thread the user's code runs in.
        child = start_run(
            self.ws.tracking,
            self.ws.project,
            self.experiment,
            name=f"{trial.family}-{trial.number}",
            tags={"mw.automl.status": trial.status, "mw.automl.family": trial.family},
            params={"family": trial.family, **_flat(trial.params)},
            parent=self.parent.id,
            workspace=self.ws,
        )
        metrics = {"fit_seconds": trial.fit_seconds}
        if trial.score is not None and math.isfinite(trial.score):
            metrics[self.metric] = trial.score
        child.log_metrics(metrics)
        if trial.error:
            child.set_tags({"mw.automl.error": trial.error[:1000]})
        child.end("FAILED" if trial.status == "failed" else "FINISHED")

    def close(self) -> None:
        self.items.put(None)
        self.thread.join()


def _flat(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[str(key)] = "None" if value is None else value
        else:
            out[str(key)] = json.dumps(value, default=str)[:500]
    return out


def fit_automl(
    ws: Workspace,
    dataset: str | DatasetVersion | pd.DataFrame,
    target: str,
    *,
    time_budget: float = 60.0,
    metric: str | None = None,
    task: str | None = None,
    seed: int = 0,
    families: Sequence[str] | None = None,
    experiment: str = "automl",
    run_name: str | None = None,
    ray_address: str | None = None,
    max_trials: int | None = None,
    test_data: str | DatasetVersion | pd.DataFrame | None = None,
    progress: bool = False,
) -> AutoMLRun:
    """Run AutoML on a dataset version and track it; see :class:`AutoMLRun`.

    ``time_budget`` bounds the search and packaging (seconds, wall clock). ``test_data``
    (rows the search never saw) scores the winner: ``test_*`` metrics on the parent run.
    """
    from modelworks.training.autolog import log_model
    from modelworks.training.automl.columns import check_target
    from modelworks.training.automl.engine import run_automl
    from modelworks.training.automl.metrics import resolve_metric, resolve_task
    from modelworks.training.trainer import autolog_paused, load_frame, tracked_run

    started = time.monotonic()
    if not isinstance(time_budget, int | float) or not time_budget > 0:
        raise InvalidInput(f"time_budget must be a positive number of seconds; got {time_budget}.")
    frame, ref = load_frame(ws, dataset)
    check_target(frame, target)  # raises, naming close column names
    # The metric's name, known before any trial, so every child run logs its score under it.
    metric_name = resolve_metric(metric, resolve_task(task, frame[target].dropna())).name
    reserve = min(RESERVE_MAX_S, max(RESERVE_MIN_S, RESERVE_SHARE * time_budget))
    tags = {"mw.source": "modelworks automl", "mw.automl": "search"}
    with tracked_run(ws, experiment=experiment, name=run_name or "automl", tags=tags) as run:
        if ref:
            run.log_input(ref)
        run.log_params(
            {
                "target": target,
                "time_budget": time_budget,
                "metric": metric or "default",
                "task": task or "auto",
                "seed": seed,
                "families": ",".join(families) if families else "all",
                "executor": "ray" if ray_address else "local",
                **({"dataset": ref} if ref else {}),
            }
        )
        engine_budget = time_budget - (time.monotonic() - started) - reserve
        if engine_budget <= 0:
            raise InvalidInput(
                f"time_budget={time_budget} s is used up before the search starts (loading "
                "the data took longer); give a larger budget."
            )
        trials = _TrialLogger(ws, experiment, run, metric_name)
        try:
            with autolog_paused():
                result = run_automl(
                    frame,
                    target,
                    task=task,
                    metric=metric,
                    time_budget=engine_budget,
                    seed=seed,
                    families=families,
                    ray_address=ray_address,
                    on_trial=trials,
                    progress=progress,
                    max_trials=max_trials,
                )
        finally:
            trials.close()
        _log_outcome(run, result, trials.errors)
        test_metrics = _score_test(ws, run, result, target, test_data)
        log_model(
            run,
            result.model,
            MODEL_ARTIFACT,
            input_example=frame[result.feature_columns].head(5),
            task=result.task,
            metrics={
                **({f"val_{result.metric}": result.best.score} if result.best.score else {}),
                **test_metrics,
            },
            params={"family": result.best.family, **_flat(result.best.params)},
            lineage={"dataset": ref} if ref else None,
        )
    return AutoMLRun(
        run_id=run.id,
        dataset=ref,
        result=result,
        elapsed_seconds=time.monotonic() - started,
        test_metrics=test_metrics,
    )


def _score_test(
    ws: Workspace,
    run: ActiveRun,
    result: AutoMLResult,
    target: str,
    test_data: str | DatasetVersion | pd.DataFrame | None,
) -> dict[str, float]:
    from modelworks.training.trainer import holdout_metrics, load_frame

    if test_data is None:
        return {}
    frame, ref = load_frame(ws, test_data)
    if target not in frame.columns:
        raise InvalidInput(f"test_data has no target column {target!r}.")
    frame = frame[frame[target].notna()]
    scores = holdout_metrics(
        result.model, frame[result.feature_columns], frame[target], result.task
    )
    run.log_metrics(scores)
    if ref:
        run.log_input(ref, relation="evaluated_on")
    return scores


def _log_outcome(run: ActiveRun, result: AutoMLResult, errors: list[str]) -> None:
    best = result.best
    metrics: dict[str, float] = {
        "n_trials": float(len(result.leaderboard)),
        "search_seconds": float(result.elapsed_seconds),
    }
    if best.score is not None and math.isfinite(best.score):
        metrics[f"best_{result.metric}"] = best.score
    run.log_metrics(metrics)
    run.set_tags(
        {"mw.automl.best_family": best.family, "mw.task": result.task, "mw.metric": result.metric}
    )
    board = result.leaderboard_frame()
    run.log_text(board.drop(columns=["params"]).to_csv(index=False), "leaderboard.csv")
    run.log_dict(
        {
            "task": result.task,
            "metric": result.metric,
            "greater_is_better": result.greater_is_better,
            "best": {"family": best.family, "score": best.score, "params": best.params},
            "trials": [
                {
                    "number": t.number,
                    "family": t.family,
                    "score": t.score,
                    "status": t.status,
                    "fit_seconds": t.fit_seconds,
                    "params": t.params,
                    "error": t.error,
                }
                for t in result.leaderboard
            ],
        },
        "leaderboard.json",
    )
    notes = [*result.warnings, *errors]
    if notes:
        run.log_dict({"warnings": notes}, "warnings.json")
