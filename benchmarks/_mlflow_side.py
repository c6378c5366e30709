"""The MLflow half of ``benchmarks/tracking.py``, run under the Python that has MLflow.

MLflow lives in its own environment (``.venv-bench``) so that its pins never touch the
project's; ``tracking.py`` runs this script there as a subprocess and reads one JSON
object from the last line of its stdout. The workload itself is defined once, in
``tracking.py``, and imported from it here, so both sides do exactly the same work.

Usage (normally called by ``tracking.py``, not by hand)::

    python benchmarks/_mlflow_side.py log --uri sqlite:////tmp/x/mlflow.db --runs 40
    python benchmarks/_mlflow_side.py search --uri sqlite:////tmp/x/s.db --populate 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# The workload is defined once, in tracking.py beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tracking import (
    LOG_EXPERIMENT,
    METRIC_KEYS,
    PARAM_KEYS,
    SEARCH_EXPERIMENT,
    SEARCH_FILTER,
    SEARCH_ORDER_BY,
    STEPS,
    logging_calls,
    metric_value,
    param_value,
    search_metrics,
    search_params,
    time_search,
)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def bench_logging(uri: str, runs: int) -> dict[str, Any]:
    """``runs`` runs, every param and metric logged with its own call, as a training loop does."""
    client = _client(uri)
    exp_id = _experiment_id(client, LOG_EXPERIMENT)
    run_ids = []
    start = time.perf_counter()
    for r in range(runs):
        run_id = client.create_run(exp_id, run_name=f"run-{r}").info.run_id
        for key in PARAM_KEYS:
            client.log_param(run_id, key, param_value(r, key))
        for step in range(STEPS):
            for key in METRIC_KEYS:
                client.log_metric(run_id, key, metric_value(r, key, step), step=step)
        client.set_terminated(run_id)
        run_ids.append(run_id)
    seconds = time.perf_counter() - start
    # Check outside the clock that everything landed.
    last = client.get_run(run_ids[-1])
    history = client.get_metric_history(run_ids[-1], METRIC_KEYS[0])
    ok = (
        len(last.data.params) == len(PARAM_KEYS)
        and len(last.data.metrics) == len(METRIC_KEYS)
        and len(history) == STEPS
        and last.info.status == "FINISHED"
    )
    calls = runs * logging_calls()
    return {
        "runs": runs,
        "calls": calls,
        "seconds": seconds,
        "calls_per_s": calls / seconds,
        "verified": ok,
    }


def populate(uri: str, runs: int) -> dict[str, Any]:
    """Set up the search data with the fast path (one ``log_batch`` per run)."""
    from mlflow.entities import Metric, Param

    client = _client(uri)
    exp_id = _experiment_id(client, SEARCH_EXPERIMENT)
    start = time.perf_counter()
    now = int(time.time() * 1000)
    for r in range(runs):
        run_id = client.create_run(exp_id, run_name=f"s-{r}").info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in search_metrics(r).items()],
            params=[Param(k, v) for k, v in search_params(r).items()],
        )
        client.set_terminated(run_id)
    return {"runs": runs, "seconds": time.perf_counter() - start}


def bench_search(uri: str, repeat: int) -> dict[str, Any]:
    """Time the filtered, ordered search; one untimed warm-up call first."""
    client = _client(uri)
    exp_id = client.get_experiment_by_name(SEARCH_EXPERIMENT).experiment_id

    def once() -> list[Any]:
        return list(
            client.search_runs(
                [exp_id],
                filter_string=SEARCH_FILTER,
                order_by=[SEARCH_ORDER_BY],
                max_results=1000,
            )
        )

    return time_search(once, lambda r: r.data.params["label"], repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    log = sub.add_parser("log", help="time per-call logging")
    log.add_argument("--uri", required=True)
    log.add_argument("--runs", type=int, required=True)
    search = sub.add_parser("search", help="populate (optionally) and time the search")
    search.add_argument("--uri", required=True)
    search.add_argument("--populate", type=int, default=0, help="runs to create first")
    search.add_argument("--repeat", type=int, default=7)
    sub.add_parser("version", help="print the MLflow version")
    args = parser.parse_args()

    import mlflow

    out: dict[str, Any] = {"mlflow_version": mlflow.__version__}
    if args.command == "log":
        out.update(bench_logging(args.uri, args.runs))
    elif args.command == "search":
        if args.populate:
            out["populate"] = populate(args.uri, args.populate)
        out.update(bench_search(args.uri, args.repeat))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
