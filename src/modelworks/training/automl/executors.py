"""Where trials run: one after another in this process, or several at once as Ray tasks.

Both executors drive the same ``Search`` through ask (``next_spec``) and tell (``tell``);
only the place a trial runs changes. Ray trials are scheduled as tasks reserving
``n_jobs`` CPUs each, as many at once as the cluster's CPUs allow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from modelworks.training.automl.search import Search
from modelworks.training.automl.splits import PreparedData
from modelworks.training.automl.trials import TrialOutcome, TrialSpec, evaluate_trial

# Trials stop themselves at the search deadline; a Ray task still running this long after
# it is cancelled.
RAY_GRACE_SECONDS = 3.0


def run_local(search: Search, data: PreparedData, report: Callable[[TrialOutcome], None]) -> None:
    while True:
        spec = search.next_spec()
        if spec is None:
            return
        outcome = evaluate_trial(spec, data)
        search.tell(outcome)
        report(outcome)


def _warm_up() -> bool:
    """Import what a trial needs, so a new Ray worker pays it before the first trial."""
    import lightgbm  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    import modelworks.training.automl.trials  # noqa: F401

    return True


class RayCluster:
    """A connection to the cluster for one run; opened before preprocessing so that the
    workers' start-up (a fresh Python importing the model libraries) overlaps it."""

    def __init__(self, address: str, cpus_per_trial: int) -> None:
        import ray

        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        # A task asking for more CPUs than the cluster has would wait forever.
        self.cpus_per_trial = max(1, min(cpus_per_trial, int(cpus)))
        self.slots = max(1, int(cpus // self.cpus_per_trial))
        warm = ray.remote(num_cpus=self.cpus_per_trial)(_warm_up)
        self.warming = [warm.remote() for _ in range(self.slots)]

    def close(self) -> None:
        import ray

        if self.started_here:
            ray.shutdown()


def run_ray(
    search: Search,
    data: PreparedData,
    report: Callable[[TrialOutcome], None],
    cluster: RayCluster,
) -> None:
    import ray

    data_ref = ray.put(data)
    remote = ray.remote(num_cpus=cluster.cpus_per_trial, max_retries=0)(evaluate_trial)
    in_flight: dict[Any, TrialSpec] = {}
    while True:
        while len(in_flight) < cluster.slots:
            spec = search.next_spec()
            if spec is None:
                break
            in_flight[remote.remote(spec, data_ref)] = spec
        if not in_flight:
            return
        # Until a trial has finished there is no model: wait up to the hard end for one.
        end = search.search_end if search.has_result() else search.hard_end
        wait = max(0.05, end - time.time() + RAY_GRACE_SECONDS)
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait)
        if not done:
            for ref, spec in in_flight.items():
                ray.cancel(ref, force=True)
                report(search.abandon(spec, "cancelled at the time budget"))
            return
        for ref in done:
            spec = in_flight.pop(ref)
            try:
                outcome: TrialOutcome = ray.get(ref)
            except Exception as exc:
                outcome = TrialOutcome(
                    spec.number, spec.family, spec.params, "failed", error=f"Ray task: {exc}"
                )
            search.tell(outcome)
            report(outcome)
