"""The search driver: one Optuna study per family, a cost-aware choice of which to try next.

Each family has its own seeded TPE study, warm-started with the family's default configs.
The driver asks a study for a configuration, a trial runs (in-process or on Ray), and the
driver tells the study the result, so the same loop serves both executors.

Choosing the family is a bandit over families: a family scores higher when its best loss
is close to the leader's, lower when its trials cost more or it has stopped improving, and
higher when it has been tried less (an exploration bonus). Costs are measured seconds, or,
when the run is bounded by ``max_trials`` (the reproducible mode), fixed prior costs, so
that no decision but the final deadline depends on the machine's speed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import optuna

from modelworks.training.automl.families import FAMILIES, Family, Shape
from modelworks.training.automl.metrics import Metric
from modelworks.training.automl.splits import PreparedData
from modelworks.training.automl.trials import TrialOutcome, TrialSpec

PRUNE_PERCENTILE = 70.0
PRUNE_MIN_TRIALS = 5
COST_WEIGHT = 0.3
EXPLORE_WEIGHT = 1.0
STALL_WEIGHT = 0.25
MAX_FAILURES = 2


@dataclass
class FamilyState:
    family: Family
    study: optuna.Study
    shape: Shape
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    started: int = 0
    failures: int = 0
    stalled: int = 0  # trials since the family last improved its best loss
    finished_seconds: list[float] = field(default_factory=list)  # of trials not pruned

    @property
    def best(self) -> float:
        return min(self.losses) if self.losses else math.inf

    @property
    def exhausted(self) -> bool:
        return self.failures >= MAX_FAILURES and not self.losses


class Search:
    def __init__(
        self,
        *,
        data: PreparedData,
        metric: Metric,
        families: list[str],
        seed: int,
        n_jobs: int,
        search_end: float,
        hard_end: float,
        max_trials: int | None,
        concurrent: bool = False,
        keep_models: bool = False,
    ) -> None:
        self.data = data
        self.metric = metric
        self.seed = seed
        self.n_jobs = n_jobs
        self.search_end = search_end
        self.hard_end = hard_end  # the first trial may run to here: a run needs one model
        self.max_trials = max_trials
        self.adaptive = max_trials is None
        self.keep_models = keep_models
        self.states: dict[str, FamilyState] = {}
        self.pending: dict[int, tuple[str, optuna.trial.Trial]] = {}
        self.outcomes: list[TrialOutcome] = []
        self.next_number = 0
        n_train = len(data.folds[0][0])
        for index, name in enumerate(families):
            family = FAMILIES[name]
            n_features = data.arrays[family.kind][0].X_train.shape[1]
            shape = Shape(n_rows=n_train, n_features=n_features, task=data.task)
            sampler = optuna.samplers.TPESampler(
                seed=seed * 1009 + index,
                n_startup_trials=4,
                multivariate=True,
                constant_liar=concurrent,
            )
            study = optuna.create_study(direction="minimize", sampler=sampler)
            for params in family.defaults(shape):
                study.enqueue_trial(params, skip_if_exists=True)
            self.states[name] = FamilyState(family, study, shape)

    # ---- time -----------------------------------------------------------------------
    def time_left(self) -> float:
        return self.search_end - time.time()

    def refit_estimate(self) -> float:
        """Seconds to refit the current top trials on all rows (the reserve for the end)."""
        ok = sorted((o for o in self.outcomes if o.status == "ok"), key=lambda o: o.loss or 0.0)
        scale = self.data.n_rows / max(1, len(self.data.folds[0][0]))
        total = sum(self.data.preprocess_seconds.values()) * scale
        for o in ok[:3]:
            total += float(np.mean(o.stage_seconds)) * scale
        return total

    def has_result(self) -> bool:
        return any(o.status == "ok" for o in self.outcomes)

    def should_stop(self) -> bool:
        if self.max_trials is not None and self.next_number >= self.max_trials:
            return True
        if self.next_number == 0:  # the first trial always runs, so there is a model
            return False
        return self.time_left() <= 0 or all(s.exhausted for s in self.states.values())

    # ---- choosing -------------------------------------------------------------------
    def _cost(self, state: FamilyState) -> float:
        if not self.adaptive or not state.seconds:
            measured = [
                float(np.median(s.seconds)) / s.family.prior_cost
                for s in self.states.values()
                if s.seconds
            ]
            unit = float(np.median(measured)) if (self.adaptive and measured) else 1.0
            return state.family.prior_cost * unit
        return float(np.median(state.finished_seconds or state.seconds))

    def _choose(self) -> str | None:
        live = [s for s in self.states.values() if not s.exhausted]
        if self.adaptive and any(s.seconds for s in live):
            live = [s for s in live if self._cost(s) <= max(self.time_left(), 0.0)] or []
        if not live:
            return None
        untried = [s for s in live if s.started == 0]
        if untried:
            return min(untried, key=lambda s: s.family.prior_cost).family.name
        bests = sorted(s.best for s in self.states.values() if s.losses)
        best = bests[0] if bests else 0.0
        # The scale of "close to the leader": how far the middle family is behind it.
        spread = bests[len(bests) // 2] - best if len(bests) >= 3 else 0.0
        scale = max(spread, abs(best) * 0.02, 1e-9)
        costs = {s.family.name: max(self._cost(s), 1e-3) for s in live}
        cheapest = min(costs.values())
        total = sum(s.started for s in self.states.values())

        def priority(s: FamilyState) -> float:
            gap = (s.best - best) / scale if s.losses else 3.0
            cost = math.log(costs[s.family.name] / cheapest)
            explore = math.sqrt(math.log(total + 1) / (s.started + 1))
            stall = STALL_WEIGHT * s.stalled
            return -min(gap, 10.0) - COST_WEIGHT * cost + EXPLORE_WEIGHT * explore - stall

        return max(live, key=priority).family.name

    def _thresholds(self) -> list[float]:
        n_stages = len(self.data.stages)
        out = [math.inf] * n_stages
        finished = [o for o in self.outcomes if o.status == "ok"]
        if len(finished) < PRUNE_MIN_TRIALS:
            return out
        for i in range(n_stages - 1):
            running = [float(np.mean(o.stage_losses[: i + 1])) for o in finished]
            out[i] = float(np.percentile(running, PRUNE_PERCENTILE))
        return out

    def next_spec(self) -> TrialSpec | None:
        if self.should_stop():
            return None
        name = self._choose()
        if name is None:
            return None
        state = self.states[name]
        trial = state.study.ask()
        params = state.family.space(trial, state.shape)
        number = self.next_number
        self.next_number += 1
        state.started += 1
        self.pending[number] = (name, trial)
        return TrialSpec(
            number=number,
            family=name,
            params=params,
            metric=self.metric.name,
            seed=self.seed,
            n_jobs=self.n_jobs,
            deadline=self.search_end if number else self.hard_end,
            thresholds=self._thresholds(),
            must_finish=number == 0,
            keep_models=self.keep_models,
        )

    # ---- recording ------------------------------------------------------------------
    def tell(self, outcome: TrialOutcome) -> None:
        name, trial = self.pending.pop(outcome.number)
        state = self.states[name]
        state.seconds.append(outcome.fit_seconds)
        for step, loss in enumerate(outcome.stage_losses):
            trial.report(loss, step)
        improved = outcome.loss is not None and outcome.loss < state.best - 1e-12
        state.stalled = 0 if improved else state.stalled + 1
        if outcome.status == "ok" and outcome.loss is not None:
            state.study.tell(trial, outcome.loss)
            state.losses.append(outcome.loss)
            state.finished_seconds.append(outcome.fit_seconds)
        elif outcome.status == "pruned":
            state.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            state.failures += 1
            state.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.outcomes.append(outcome)

    def abandon(self, spec: TrialSpec, reason: str) -> TrialOutcome:
        """Record a trial that never reported (cancelled at the deadline)."""
        outcome = TrialOutcome(spec.number, spec.family, spec.params, status="pruned", error=reason)
        self.tell(outcome)
        return outcome
