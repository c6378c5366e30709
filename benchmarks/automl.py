"""Modelworks AutoML vs FLAML, side by side on the same data, budgets, seeds and cores.

For each dataset (shipped with scikit-learn or generated here, seeded), time budget and
seed, each system runs in a fresh child process, one at a time, on the same training split
with ``n_jobs=2``, and is scored on the same held-out quarter: ROC AUC for binary tasks,
log loss for multiclass, RMSE for regression (each system optimises that same metric).

The normalised score puts both systems on one scale per dataset: 0 is a constant
predictor (AUC 0.5, the prior's log loss, the mean's RMSE), 1 is the better of the two
systems on that run; the table gives its mean per budget, and the wins.

    python benchmarks/automl.py                      # 9 datasets x 30 s, 120 s x 2 seeds: ~80 min
    python benchmarks/automl.py --quick              # smoke test: 3 datasets x 5 s, one seed
    python benchmarks/automl.py --budgets 30 --seeds 0 --datasets breast_cancer,wine

Writes bench-results/automl.md and bench-results/automl.json.
"""

# ruff: noqa: N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MARK = "AUTOML-BENCH-RESULT "
N_JOBS = 2
TEST_FRACTION = 0.25
METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
GREATER = {"roc_auc": True, "log_loss": False, "rmse": False}


# ---- datasets (all seeded: the same rows on every machine) ---------------------------------
def _sklearn(loader: str) -> Callable[[], tuple[pd.DataFrame, str]]:
    def load() -> tuple[pd.DataFrame, str]:
        from sklearn import datasets

        frame = getattr(datasets, loader)(as_frame=True).frame
        frame.columns = [str(c) for c in frame.columns]
        return frame, "target"

    return load


def _inject(frame: pd.DataFrame, rng: np.random.Generator, cols: list[str], rate: float) -> None:
    for c in cols:
        frame.loc[rng.random(len(frame)) < rate, c] = np.nan


def classification_with_categories() -> tuple[pd.DataFrame, str]:
    """Binary; 12 numeric columns (some missing), 3 categoricals carrying part of the signal."""
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(7)
    X, y = make_classification(
        n_samples=3000, n_features=12, n_informative=6, flip_y=0.05, random_state=7
    )
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(12)])
    frame["city"] = np.where(rng.random(3000) < 0.7, np.where(y == 1, "north", "south"), "east")
    frame["plan"] = pd.Series(rng.choice(["a", "b", "c", "d", "e"], 3000)).astype("category")
    frame["segment"] = [f"s{(int(v * 3) + i % 3) % 9}" for i, v in enumerate(X[:, 0])]
    _inject(frame, rng, ["x0", "x3", "x5", "city", "segment"], 0.1)
    frame["target"] = y
    return frame, "target"


def regression_with_categories() -> tuple[pd.DataFrame, str]:
    """Regression; numeric columns with missing values, categoricals with their own effects."""
    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"x{i}" for i in range(8)])
    shop = rng.choice([f"shop{i}" for i in range(20)], n)
    tier = rng.choice(["gold", "silver", "bronze"], n)
    effect = {f"shop{i}": rng.normal(scale=2.0) for i in range(20)}
    y = (
        3 * frame.x0
        + np.sin(2 * frame.x1) * 2
        + frame.x2 * frame.x3
        + np.array([effect[s] for s in shop])
        + np.select([tier == "gold", tier == "silver"], [3.0, 1.0], 0.0)
        + rng.normal(scale=1.0, size=n)
    )
    frame["shop"], frame["tier"] = shop, tier
    _inject(frame, rng, ["x1", "x4", "shop"], 0.1)
    frame["target"] = y
    return frame, "target"


def multiclass_synthetic() -> tuple[pd.DataFrame, str]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=4000,
        n_features=20,
        n_informative=10,
        n_classes=4,
        n_clusters_per_class=2,
        flip_y=0.03,
        random_state=3,
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
    frame["target"] = y
    return frame, "target"


WORDS_GOOD = ["great", "excellent", "fast", "friendly", "helpful", "perfect", "lovely", "smooth"]
WORDS_BAD = ["slow", "broken", "rude", "late", "awful", "missing", "damaged", "confusing"]
WORDS_ANY = [
    "the",
    "order",
    "item",
    "delivery",
    "box",
    "price",
    "support",
    "app",
    "store",
    "product",
    "was",
    "and",
    "it",
]


def text_and_dates() -> tuple[pd.DataFrame, str]:
    """Binary; a free-text review, an order timestamp, amounts; weekend orders fail more."""
    rng = np.random.default_rng(5)
    n = 2500
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 730 * 24, n), unit="h")
    amount = rng.lognormal(3, 1, n)
    latent = rng.normal(size=n)
    weekend = (when.dayofweek >= 5).astype(float)
    score = latent + 0.8 * weekend - 0.3 * np.log(amount) + 0.5 * (when.hour < 7)
    y = (score + rng.normal(scale=0.5, size=n) > 0.2).astype(int)
    reviews = []
    for s in latent:
        bag = list(rng.choice(WORDS_ANY, 6))
        tone = WORDS_BAD if s + rng.normal(scale=0.7) > 0 else WORDS_GOOD
        bag += list(rng.choice(tone, 2))
        rng.shuffle(bag)
        reviews.append(" ".join(bag))
    frame = pd.DataFrame(
        {
            "review": reviews,
            "ordered_at": when.astype(str),
            "amount": amount,
            "channel": rng.choice(["web", "app", "phone"], n),
            "target": y,
        }
    )
    return frame, "target"


DATASETS: dict[str, tuple[str, Callable[[], tuple[pd.DataFrame, str]]]] = {
    "breast_cancer": ("binary", _sklearn("load_breast_cancer")),
    "wine": ("multiclass", _sklearn("load_wine")),
    "iris": ("multiclass", _sklearn("load_iris")),
    "digits": ("multiclass", _sklearn("load_digits")),
    "diabetes": ("regression", _sklearn("load_diabetes")),
    "cls_categorical_missing": ("binary", classification_with_categories),
    "reg_categorical_missing": ("regression", regression_with_categories),
    "multiclass_synthetic": ("multiclass", multiclass_synthetic),
    "text_datetime": ("binary", text_and_dates),
}
QUICK_DATASETS = ["breast_cancer", "wine", "diabetes"]


def split(name: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    from sklearn.model_selection import train_test_split

    task, load = DATASETS[name]
    frame, target = load()
    train, test = train_test_split(
        frame,
        test_size=TEST_FRACTION,
        random_state=1000 + seed,
        stratify=frame[target] if task != "regression" else None,
    )
    return train.reset_index(drop=True), test.reset_index(drop=True), target, task


def score(task: str, y: np.ndarray, pred: np.ndarray, classes: list[Any]) -> float:
    from sklearn import metrics

    if task == "binary":
        return float(metrics.roc_auc_score(y, pred[:, 1]))
    if task == "multiclass":
        p = np.clip(pred, 1e-15, 1)
        return float(metrics.log_loss(y, p / p.sum(axis=1, keepdims=True), labels=classes))
    return float(metrics.root_mean_squared_error(y, pred))


def baseline(task: str, train: np.ndarray, test: np.ndarray) -> float:
    """The constant predictor's score: the zero of the normalised scale."""
    if task == "binary":
        return 0.5
    if task == "multiclass":
        classes, counts = np.unique(train, return_counts=True)
        prior = np.tile(counts / counts.sum(), (len(test), 1))
        return score(task, test, prior, list(classes))
    return float(np.sqrt(np.mean((test - train.mean()) ** 2)))


# ---- one run in a child process ------------------------------------------------------------
def run_modelworks(
    train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, budget: float, seed: int
) -> dict[str, Any]:
    from modelworks.training.automl import run_automl

    result = run_automl(
        train, target, task=task, metric=METRIC[task], time_budget=budget, seed=seed, n_jobs=N_JOBS
    )
    X_test = test.drop(columns=[target])
    pred = (
        result.model.predict(X_test) if task == "regression" else result.model.predict_proba(X_test)
    )
    return {
        "pred": pred,
        "classes": result.classes,
        "trials": len(result.leaderboard),
        "best": result.best.family,
    }


def run_flaml(
    train: pd.DataFrame, test: pd.DataFrame, target: str, task: str, budget: float, seed: int
) -> dict[str, Any]:
    from flaml import AutoML

    automl = AutoML()
    automl.fit(
        X_train=train.drop(columns=[target]),
        y_train=train[target],
        task="regression" if task == "regression" else "classification",
        metric=METRIC[task],
        time_budget=budget,
        n_jobs=N_JOBS,
        seed=seed,
        verbose=0,
    )
    X_test = test.drop(columns=[target])
    pred = automl.predict(X_test) if task == "regression" else automl.predict_proba(X_test)
    classes = None if task == "regression" else list(automl.classes_)
    # Trials per learner (FLAML's own counter; config_history keeps only the improvements).
    per_learner = getattr(automl, "_iter_per_learner", None) or {}
    trials = sum(per_learner.values()) or len(automl.config_history or {})
    return {"pred": pred, "classes": classes, "trials": trials, "best": automl.best_estimator}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")
    train, test, target, task = split(spec["dataset"], spec["seed"])
    runner = run_modelworks if spec["system"] == "modelworks" else run_flaml
    start = time.perf_counter()
    out = runner(train, test, target, task, spec["budget"], spec["seed"])
    elapsed = time.perf_counter() - start
    y_train, y_test = train[target].to_numpy(), test[target].to_numpy()
    pred = np.asarray(out["pred"], dtype=np.float64)
    if task != "regression":
        # Order probability columns by the sorted labels, the order the scorer expects.
        classes = list(out["classes"])
        order = np.argsort(np.asarray(classes))
        pred, classes = pred[:, order], sorted(classes)
    else:
        classes = []
    return {
        **spec,
        "task": task,
        "metric": METRIC[task],
        "score": score(task, y_test, pred, classes),
        "baseline": baseline(task, y_train, y_test),
        "elapsed": round(elapsed, 2),
        "trials": out["trials"],
        "best": str(out["best"]),
    }


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(N_JOBS), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    timeout = spec["budget"] * 3 + 120
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    return {**spec, "error": (proc.stderr or proc.stdout)[-1500:]}


# ---- report ----------------------------------------------------------------------------------
def normalised(rows: list[dict[str, Any]]) -> None:
    """Add ``norm``: 0 for the constant predictor, 1 for the better system on that run."""
    groups: dict[tuple[str, float, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "score" in r:
            groups.setdefault((r["dataset"], r["budget"], r["seed"]), []).append(r)
    for group in groups.values():
        greater = GREATER[group[0]["metric"]]
        best = (max if greater else min)(r["score"] for r in group)
        for r in group:
            gap = best - r["baseline"]
            r["norm"] = (r["score"] - r["baseline"]) / gap if gap else 1.0


def report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    normalised(rows)
    ok = pd.DataFrame([r for r in rows if "score" in r])
    lines = [
        "# AutoML: Modelworks vs FLAML",
        "",
        f"{meta['machine']}; n_jobs={N_JOBS} for both; held-out quarter of each dataset; "
        f"seeds {meta['seeds']}; each run in a fresh process, one at a time.",
        "",
    ]
    failed = [r for r in rows if "score" not in r]
    if ok.empty:
        return "\n".join([*lines, "No run finished.", *[str(f) for f in failed]])
    for budget in sorted(ok.budget.unique()):
        part = ok[ok.budget == budget]
        lines += [
            f"## Budget {budget:g} s",
            "",
            "| dataset | metric | Modelworks | FLAML | winner | Modelworks s / trials / best | "
            "FLAML s / trials / best |",
            "|---|---|---|---|---|---|---|",
        ]
        wins = {"modelworks": 0, "flaml": 0, "tie": 0}
        for dataset in part.dataset.unique():
            d = part[part.dataset == dataset]
            metric = d.metric.iloc[0]
            cells: dict[str, Any] = {}
            for system in ("modelworks", "flaml"):
                s = d[d.system == system]
                cells[system] = s
            mw, fl = cells["modelworks"], cells["flaml"]
            if mw.empty or fl.empty:
                continue
            a, b = mw.score.mean(), fl.score.mean()
            if abs(a - b) < 1e-9:
                winner = "tie"
            else:
                winner = "modelworks" if (a > b) == GREATER[metric] else "flaml"
            wins[winner] += 1

            def info(s: pd.DataFrame) -> str:
                return f"{s.elapsed.mean():.1f} / {s.trials.mean():.0f} / {s.best.iloc[0]}"

            lines.append(
                f"| {dataset} | {metric} | {a:.5f} | {b:.5f} | {winner} | {info(mw)} | {info(fl)} |"
            )
        means = part.groupby("system").norm.mean()
        lines += [
            "",
            f"Wins: Modelworks {wins['modelworks']}, FLAML {wins['flaml']}, ties {wins['tie']}. "
            f"Mean normalised score: Modelworks {means.get('modelworks', float('nan')):.4f}, "
            f"FLAML {means.get('flaml', float('nan')):.4f}.",
            "",
        ]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [
            f"- {f['system']} {f['dataset']} {f['budget']} s seed {f['seed']}: "
            f"{str(f.get('error'))[-300:]!r}"
            for f in failed
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="30,120", help="comma-separated seconds")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated names")
    parser.add_argument("--systems", default="modelworks,flaml")
    parser.add_argument("--quick", action="store_true", help="3 datasets, 5 s, seed 0")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(child(json.loads(args.child))), flush=True)
        return
    budgets = [float(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = args.datasets.split(",")
    if args.quick:
        budgets, seeds = [5.0], [0]
        datasets = [d for d in datasets if d in QUICK_DATASETS] or QUICK_DATASETS
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {', '.join(DATASETS)}")
    systems = args.systems.split(",")
    rows = []
    total = len(budgets) * len(seeds) * len(datasets) * len(systems)
    for budget in budgets:
        for seed in seeds:
            for dataset in datasets:
                for system in systems:
                    spec = {"dataset": dataset, "budget": budget, "seed": seed, "system": system}
                    row = launch(spec)
                    rows.append(row)
                    shown = (
                        f"{row['score']:.5f} in {row['elapsed']:.1f} s"
                        if "score" in row
                        else ("FAILED " + str(row.get("error"))[-300:])
                    )
                    print(
                        f"[{len(rows)}/{total}] {system:10s} {dataset:24s} {budget:5g}s "
                        f"seed {seed}: {shown}",
                        flush=True,
                    )
    meta = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "seeds": seeds,
        "budgets": budgets,
    }
    text = report(rows, meta)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "automl.md").write_text(text + "\n")
    (out / "automl.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
