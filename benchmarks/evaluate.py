"""Evaluation speed: all metrics + bootstrap intervals vs the model's own predict_proba.

One run, on seeded synthetic binary data with 20 features: a LightGBM model (100 trees) is
trained on 50,000 rows, then on ``--rows`` other rows (1,000,000 by default) the script
times, best of ``--repeat`` (3) with ``time.perf_counter``, taking turns:

- ``predict_proba``: the model's own scoring of the rows (LightGBM, ``n_jobs=2``);
- ``evaluate_predictions``: every binary metric, curves, the threshold sweep and
  ``--resamples`` (1,000) bootstrap resamples for the intervals, on those predictions;
- the same without intervals (``bootstrap=0``), for reference.

Then, on ``--shap-rows`` (10,000) rows of the same kind of model, TreeExplainer SHAP values
computed by calling shap directly and through Modelworks (``evaluation.explain.shap_values``,
on the fitted model and on the model loaded from its package).

Targets (issue "Evaluation, model registry and explanations"): the evaluation takes at most
2x the time of ``predict_proba``; Modelworks' SHAP at most 1.5x shap's own.

    python benchmarks/evaluate.py                                # 1M rows: about a minute
    python benchmarks/evaluate.py --rows 200000 --resamples 200  # quick look

Writes bench-results/evaluate.md and bench-results/evaluate.json.
"""

# ruff: noqa: N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "bench-results"
FEATURES = 20
TRAIN_ROWS = 50_000
TREES = 100
N_JOBS = 2
METRICS_TARGET = 2.0  # evaluate_predictions <= 2x predict_proba

Row = dict[str, Any]


# ---- data and model ------------------------------------------------------------------------
def make_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded binary data: a linear signal, two interactions and a threshold effect."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES))
    w = np.linspace(1.0, -1.0, FEATURES) * (np.arange(FEATURES) < 12)
    logit = X @ w + 0.8 * X[:, 0] * X[:, 1] - 0.6 * X[:, 2] * X[:, 3] + 1.5 * (X[:, 4] > 1)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(logit - 0.5)))).astype(np.int64)
    return X, y


def train_model(seed: int) -> Any:
    from lightgbm import LGBMClassifier

    X, y = make_data(TRAIN_ROWS, seed + 1)
    model = LGBMClassifier(n_estimators=TREES, n_jobs=N_JOBS, random_state=seed, verbose=-1)
    return model.fit(X, y)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ---- metrics: evaluate_predictions vs predict_proba ----------------------------------------
def measure_metrics(args: argparse.Namespace) -> list[Row]:
    """Rows of the metrics table: the model's scoring, then the evaluation, best of N."""
    from modelworks.evaluation.metrics import evaluate_predictions

    print(f"training LightGBM ({TREES} trees) on {TRAIN_ROWS:,} rows ...", flush=True)
    model = train_model(args.seed)
    X, y = make_data(args.rows, args.seed)
    times: dict[str, list[float]] = {"predict": [], "evaluate": [], "evaluate_no_ci": []}
    result = None
    for i in range(args.repeat):  # taking turns, so other load on the machine hits all alike
        seconds, proba = timed(lambda: model.predict_proba(X)[:, 1])
        times["predict"].append(seconds)
        with_ci = partial(
            evaluate_predictions,
            "binary",
            y,
            y_proba=proba,
            bootstrap=args.resamples,
            seed=args.seed,
        )
        seconds, result = timed(with_ci)
        times["evaluate"].append(seconds)
        seconds, _ = timed(partial(evaluate_predictions, "binary", y, y_proba=proba, bootstrap=0))
        times["evaluate_no_ci"].append(seconds)
        print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    assert result is not None
    best = {k: min(v) for k, v in times.items()}
    ratio = best["evaluate"] / best["predict"]
    auc_low, auc_high = result.intervals["roc_auc"]
    print(
        f"  ROC AUC {result.metrics['roc_auc']:.4f} [{auc_low:.4f}, {auc_high:.4f}], "
        f"F1 {result.metrics['f1']:.4f}, {len(result.metrics)} metrics, "
        f"{len(result.intervals)} intervals"
    )
    return [
        {
            "side": f"LightGBM predict_proba ({TREES} trees, {FEATURES} features, n_jobs={N_JOBS})",
            "seconds": best["predict"],
            "ratio": 1.0,
            "target": "",
            "met": None,
            "runs": times["predict"],
        },
        {
            "side": f"evaluate_predictions, all metrics + {args.resamples:,} bootstrap resamples",
            "seconds": best["evaluate"],
            "ratio": ratio,
            "target": f"<= {METRICS_TARGET:g}x",
            "met": ratio <= METRICS_TARGET,
            "runs": times["evaluate"],
        },
        {
            "side": "evaluate_predictions, no intervals (bootstrap=0), for reference",
            "seconds": best["evaluate_no_ci"],
            "ratio": best["evaluate_no_ci"] / best["predict"],
            "target": "",
            "met": None,
            "runs": times["evaluate_no_ci"],
        },
    ]


# ---- end to end: a stored evaluation of a registered version ---------------------------------
def measure_end_to_end(args: argparse.Namespace) -> list[Row]:
    """``EvaluationService.evaluate`` on a registered version and a dataset version of
    ``--rows`` rows (read, signature check, predict, metrics, intervals, plots, store) vs
    the package's own ``predict_proba`` on the same rows."""
    import tempfile

    import pandas as pd

    from modelworks.core.auth import local_principal
    from modelworks.core.config import Settings
    from modelworks.core.store import Store
    from modelworks.data.service import DataService
    from modelworks.data.sources.frames import FrameSource
    from modelworks.registry.evaluations import EvaluationService
    from modelworks.training.package import save_package

    me = local_principal()
    names = [f"f{i}" for i in range(FEATURES)]
    Xt, yt = make_data(TRAIN_ROWS, args.seed + 1)
    model = train_model(args.seed).fit(pd.DataFrame(Xt, columns=names), yt)
    X, y = make_data(args.rows, args.seed)
    frame = pd.DataFrame(X, columns=names)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Settings(home=Path(tmp) / "home"))
        try:
            svc = EvaluationService(store)
            save_package(model, Path(tmp) / "pkg", input_example=frame.head(),
                         params={"target": "y"})  # fmt: skip
            svc.registry.register_package(me, "default", "bench", Path(tmp) / "pkg")
            print(f"ingesting {args.rows:,} rows as a dataset version ...", flush=True)
            DataService(store).ingest(me, "default", "bench-data",
                                      FrameSource.of(frame.assign(y=y)))  # fmt: skip
            _, pkg = svc.load(me, "default", "bench@1")
            times: dict[str, list[float]] = {"predict": [], "evaluate": []}
            for i in range(args.repeat):
                seconds, _ = timed(lambda: pkg.predict_proba(frame))
                times["predict"].append(seconds)
                seconds, _ = timed(
                    lambda: svc.evaluate(
                        me,
                        "default",
                        "bench@1",
                        "bench-data@1",
                        bootstrap=args.resamples,
                        seed=args.seed,
                    )
                )
                times["evaluate"].append(seconds)
                done = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                print(f"  end-to-end run {i + 1}: {done}")
        finally:
            store.close()
    best = {k: min(v) for k, v in times.items()}
    ratio = best["evaluate"] / best["predict"]
    return [
        {
            "side": "the package's predict_proba (signature check + LightGBM)",
            "seconds": best["predict"],
            "ratio": 1.0,
            "target": "",
            "met": None,
            "runs": times["predict"],
        },
        {
            "side": f"EvaluationService.evaluate: read the dataset version, predict, all "
            f"metrics + {args.resamples:,} resamples, plots, store",
            "seconds": best["evaluate"],
            "ratio": ratio,
            "target": f"<= {METRICS_TARGET:g}x",
            "met": ratio <= METRICS_TARGET,
            "runs": times["evaluate"],
        },
    ]


# ---- explanations: Modelworks' SHAP vs calling shap directly ---------------------------------
SHAP_ROWS = 10_000
SHAP_TARGET = 1.5  # modelworks shap_values <= 1.5x shap.TreeExplainer(model).shap_values


def measure_shap(args: argparse.Namespace) -> list[Row]:
    """TreeExplainer on the same LightGBM model and rows: shap called directly, Modelworks'
    ``shap_values`` on the fitted model, and on the model loaded back from its package."""
    import tempfile

    import pandas as pd
    import shap

    from modelworks.evaluation.explain import shap_values
    from modelworks.training.package import load_package, save_package

    model = train_model(args.seed)
    X, _ = make_data(args.shap_rows, args.seed + 2)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(FEATURES)])
    with tempfile.TemporaryDirectory() as tmp:
        named = train_model(args.seed)  # the same model, fitted on named columns
        Xt, yt = make_data(TRAIN_ROWS, args.seed + 1)
        named.fit(pd.DataFrame(Xt, columns=frame.columns), yt)
        save_package(named, Path(tmp) / "pkg", input_example=frame.head())
        pkg = load_package(Path(tmp) / "pkg")
        times: dict[str, list[float]] = {"direct": [], "modelworks": [], "package": []}
        for i in range(args.repeat):
            seconds, direct = timed(lambda: shap.TreeExplainer(named).shap_values(frame))
            times["direct"].append(seconds)
            seconds, ours = timed(lambda: shap_values(named, frame))
            times["modelworks"].append(seconds)
            seconds, _ = timed(lambda: shap_values(pkg, frame))
            times["package"].append(seconds)
            print(
                f"  shap run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
            )
        diff = float(np.max(np.abs(np.asarray(ours.values) - np.asarray(direct))))
        print(f"  largest difference between the two: {diff:.3g}")
    del model
    best = {k: min(v) for k, v in times.items()}
    return [
        {
            "side": f"shap.TreeExplainer(model).shap_values, {args.shap_rows:,} rows",
            "seconds": best["direct"],
            "ratio": 1.0,
            "target": "",
            "met": None,
            "runs": times["direct"],
        },
        {
            "side": "modelworks shap_values(model, rows)",
            "seconds": best["modelworks"],
            "ratio": best["modelworks"] / best["direct"],
            "target": f"<= {SHAP_TARGET:g}x",
            "met": best["modelworks"] / best["direct"] <= SHAP_TARGET,
            "runs": times["modelworks"],
        },
        {
            "side": "modelworks shap_values(package, rows) (model loaded from its package)",
            "seconds": best["package"],
            "ratio": best["package"] / best["direct"],
            "target": f"<= {SHAP_TARGET:g}x",
            "met": best["package"] / best["direct"] <= SHAP_TARGET,
            "runs": times["package"],
        },
    ]


def table(title: str, rows: list[Row]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| side | seconds | ratio | target | met | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        runs = ", ".join(f"{s:.2f}" for s in r["runs"])
        lines.append(
            f"| {r['side']} | {r['seconds']:.2f} | {r['ratio']:.2f}x | {r['target']} | {met} | "
            f"{runs} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (best)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shap-rows", type=int, default=SHAP_ROWS)
    parser.add_argument("--skip-shap", action="store_true", help="only the metrics section")
    args = parser.parse_args()

    load_before = os.getloadavg()
    sections: dict[str, list[Row]] = {
        f"Metrics: evaluate_predictions vs predict_proba, {args.rows:,} rows": measure_metrics(
            args
        ),
    }
    sections[f"End to end: a stored evaluation of a registered version, {args.rows:,} rows"] = (
        measure_end_to_end(args)
    )
    if not args.skip_shap:
        sections[f"Explanations: TreeExplainer SHAP, {args.shap_rows:,} rows"] = measure_shap(args)
    load_after = os.getloadavg()
    lines = [
        f"# Evaluation benchmark — {args.rows:,} rows",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; best of {args.repeat} runs per side, taking "
        f"turns. Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
    ]
    for title, rows in sections.items():
        lines += [*table(title, rows), ""]
    text = "\n".join(lines)
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluate.md").write_text(text)
    (RESULTS / "evaluate.json").write_text(
        json.dumps({"args": vars(args), "sections": sections}, indent=2)
    )


if __name__ == "__main__":
    main()
