"""Batch inference: predict_batch (Parquet in, Parquet out) vs the model's own predict_proba.

One run, on seeded synthetic binary data with 20 features: a scikit-learn
HistGradientBoostingClassifier is trained on 50,000 rows and saved as a Modelworks package;
``--rows`` other rows (1,000,000 by default) are written to a Parquet file. Then, best of
``--repeat`` (3) runs per side, taking turns:

- raw: ``model.predict_proba`` in this process, on the rows already read into memory as a
  DataFrame (the read is not timed): what scoring costs with nothing around it;
- batch: ``predict_batch(package, input.parquet, output.parquet)``, end to end (reading in
  batches of ``--batch-rows``, the signature check, scoring on ``--workers`` threads, the
  labels and both probabilities written to Parquet, the rename), in a fresh child process
  whose peak resident memory (``VmHWM``) is the memory figure. The child's resident memory
  just before the call (Python, the libraries, the loaded model) is shown too, so the share
  of the batch work itself is plain.

The raw side's peak memory is measured the same way, in a child process that reads the
rows into memory and scores them, for comparison.

Targets (issue "Serving and batch inference"): batch throughput >= 0.7x the raw
predict_proba rows/s; batch peak memory < 1 GB.

    python benchmarks/batch_predict.py                   # 1M rows: a few minutes on 2 cores
    python benchmarks/batch_predict.py --rows 200000     # quick look

Writes bench-results/batch_predict.md and bench-results/batch_predict.json.
"""

# ruff: noqa: N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "bench-results"
FEATURES = 20
TRAIN_ROWS = 50_000
RATIO_TARGET = 0.7  # batch rows/s >= 0.7x raw predict_proba rows/s
MEMORY_TARGET = 1 << 30  # batch peak RSS < 1 GB
MB = 1 << 20

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


def columns() -> list[str]:
    return [f"f{i:02d}" for i in range(FEATURES)]


def prepare(work: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """Train and save the model; write the rows to score. Returns (package, input)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.ensemble import HistGradientBoostingClassifier

    from modelworks.training.package import save_package

    X, y = make_data(TRAIN_ROWS, seed + 1)
    train = pd.DataFrame(X, columns=columns())
    model = HistGradientBoostingClassifier(random_state=seed).fit(train, y)
    package = work / "package"
    save_package(model, package, input_example=train.head())
    source = work / "input.parquet"
    step = 250_000  # written in slices: the parent never holds the whole input either
    schema = pa.schema([(c, pa.float64()) for c in columns()])
    with pq.ParquetWriter(source, schema) as writer:
        for start in range(0, rows, step):
            X, _ = make_data(min(step, rows - start), seed + 2 + start)
            writer.write_table(pa.Table.from_pandas(pd.DataFrame(X, columns=columns()),
                                                    preserve_index=False))  # fmt: skip
    return package, source


# ---- the two sides, each in a child process --------------------------------------------------
def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec. Not ``ru_maxrss``:
    Linux carries it over from the parent through fork and exec, so a child of a parent
    holding the rows in memory would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all its threads together."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def child_batch(args: argparse.Namespace) -> Row:
    from modelworks.serving.batch import predict_batch
    from modelworks.training.package import load_package

    pkg = load_package(args.package)
    before = current_rss()
    output = Path(args.output)
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = predict_batch(pkg, args.input, output, batch_rows=args.batch_rows,
                           workers=args.workers, progress=False, overwrite=True)  # fmt: skip
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"seconds": seconds, "cpu": cpu, "rows": result.rows, "batches": result.batches,
            "rss_before": before, "peak_rss": peak_rss()}  # fmt: skip


def child_raw(args: argparse.Namespace) -> Row:
    import pyarrow.parquet as pq

    from modelworks.training.package import load_package

    model = load_package(args.package).model
    before = current_rss()
    frame = pq.read_table(args.input).to_pandas()
    t0 = time.perf_counter()
    proba = model.predict_proba(frame)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": len(proba), "rss_before": before, "peak_rss": peak_rss()}


def run_child(side: str, package: Path, source: Path, output: Path, args: argparse.Namespace
              ) -> Row:  # fmt: skip
    cmd = [sys.executable, __file__, "--child", side, "--package", str(package),
           "--input", str(source), "--output", str(output),
           "--batch-rows", str(args.batch_rows)]  # fmt: skip
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {side} child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_in_process(package: Path, source: Path, repeat: int) -> list[tuple[float, float]]:
    """The model's own predict_proba on the rows in memory: (seconds, CPU seconds) a run."""
    import pyarrow.parquet as pq

    from modelworks.training.package import load_package

    model = load_package(package).model
    frame = pq.read_table(source).to_pandas()
    runs = []
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        model.predict_proba(frame)
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    return runs


def check_output(package: Path, source: Path, output: Path, sample: int = 10_000) -> None:
    """The batch output holds the model's own probabilities for the first rows."""
    import pyarrow.parquet as pq

    from modelworks.training.package import load_package

    model = load_package(package).model
    frame = pq.ParquetFile(source).read_row_group(0).to_pandas().head(sample)
    got = pq.ParquetFile(output).read_row_group(0).to_pandas().head(sample)
    expected = model.predict_proba(frame)
    np.testing.assert_allclose(got[["probability_0", "probability_1"]].to_numpy(), expected)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), model.predict(frame))


# ---- report --------------------------------------------------------------------------------
def measure(args: argparse.Namespace, work: Path) -> tuple[list[Row], Row]:
    package, source = prepare(work, args.rows, args.seed)
    output = work / "predictions.parquet"
    raw_runs: list[tuple[float, float]] = []
    batch_runs: list[Row] = []
    for _ in range(args.repeat):  # taking turns, so other load on the machine hits both alike
        raw_runs += raw_in_process(package, source, 1)
        batch_runs.append(run_child("batch", package, source, output, args))
    check_output(package, source, output)
    raw_mem = run_child("raw", package, source, output, args)
    raw_best = min(raw_runs)
    batch_best = min(batch_runs, key=lambda r: r["seconds"])
    raw_rate = args.rows / raw_best[0]
    batch_rate = args.rows / batch_best["seconds"]
    ratio = batch_rate / raw_rate
    peak = max(r["peak_rss"] for r in batch_runs)
    rows = [
        {
            "side": "raw: HistGradientBoostingClassifier.predict_proba, rows in memory",
            "seconds": raw_best[0], "cpu": raw_best[1], "rows_per_s": raw_rate, "ratio": 1.0,
            "peak_rss_mb": raw_mem["peak_rss"] / MB, "rss_before_mb": raw_mem["rss_before"] / MB,
            "runs": [t for t, _ in raw_runs], "target": "", "met": "",
        },
        {
            "side": f"predict_batch: Parquet -> Parquet (batches of {args.batch_rows:,}, "
            f"{args.workers or os.cpu_count()} workers)",
            "seconds": batch_best["seconds"], "cpu": batch_best["cpu"], "rows_per_s": batch_rate,
            "ratio": ratio, "peak_rss_mb": peak / MB,
            "rss_before_mb": batch_best["rss_before"] / MB,
            "runs": [r["seconds"] for r in batch_runs],
            "target": f">= {RATIO_TARGET}x, < 1 GB",
            "met": "yes" if ratio >= RATIO_TARGET and peak < MEMORY_TARGET else "no",
        },
    ]  # fmt: skip
    info = {"batches": batch_best["batches"], "input_mb": source.stat().st_size / MB,
            "output_mb": output.stat().st_size / MB}  # fmt: skip
    return rows, info


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| side | seconds | CPU s | rows/s | ratio | peak RSS | RSS before the call | target "
        "| met | runs (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["runs"])
        lines.append(
            f"| {r['side']} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r['rows_per_s']:,.0f} "
            f"| {r['ratio']:.2f}x "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['rss_before_mb']:,.0f} MB | {r['target']} "
            f"| {r['met']} | {runs} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (best)")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--seed", type=int, default=0)
    # the child processes' side of the measurement
    parser.add_argument("--child", choices=["batch", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = child_batch(args) if args.child == "batch" else child_raw(args)
        print(json.dumps(out))
        return

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mw-bench-batch-"))
    try:
        rows, info = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    lines = [
        f"# Batch inference benchmark — {args.rows:,} rows x {FEATURES} features",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}; best of {args.repeat} runs per side, taking turns. "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        f"Model: HistGradientBoostingClassifier trained on {TRAIN_ROWS:,} rows. Input "
        f"{info['input_mb']:.0f} MB of Parquet; output {info['output_mb']:.0f} MB (prediction, "
        f"probability_0, probability_1), written in {info['batches']} row groups. The batch "
        "side's output was checked against the model's own predict/predict_proba. CPU s: "
        "user + system CPU time of the best run (all threads), which other load on the "
        "machine changes less than the wall time.",
        "",
        *table(rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_predict.md").write_text(text)
    (RESULTS / "batch_predict.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "info": info}, indent=2)
    )


if __name__ == "__main__":
    main()
