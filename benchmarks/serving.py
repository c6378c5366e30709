"""Online serving: Modelworks' model server vs ``mlflow models serve``, same model, same load.

One run, on 127.0.0.1: a scikit-learn HistGradientBoostingClassifier trained on 50,000 x 20
seeded synthetic rows is saved as a Modelworks package and as an MLflow model, each served
by its own server process (``modelworks serve PACKAGE`` and ``mlflow models serve -m DIR
--env-manager local``, one worker each). One load generator (asyncio + httpx) sends
single-row requests at concurrency 1, 8 and 32 for ``--seconds`` each, to one server at a
time, and records throughput and latency percentiles. The in-process ``predict_proba`` of
one row is timed too.

Targets (issue "Serving and batch inference"): throughput >= 5x MLflow's at concurrency 32;
p99 below MLflow's at every level; at concurrency 1, p50 <= in-process predict_proba + 1 ms.

    python benchmarks/serving.py                   # about 2 minutes
    python benchmarks/serving.py --seconds 5 --levels 1,8

Writes bench-results/serving.md and bench-results/serving.json.
"""

# ruff: noqa: N806 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "bench-results"
FEATURES = 20
TRAIN_ROWS = 50_000
Row = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(seed: int) -> tuple[Any, Any]:
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(
        n_samples=TRAIN_ROWS, n_features=FEATURES, n_informative=12, random_state=seed
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(FEATURES)])
    return HistGradientBoostingClassifier(random_state=seed).fit(frame, y), frame


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def load(
    url: str, body: Callable[[int], Any], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    """Closed-loop load: ``concurrency`` clients each send one request after another."""
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await client.post(url, content=body(i),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors


def measure(
    side: str, url: str, body: Callable[[int], Any], levels: list[int], seconds: float
) -> list[Row]:
    rows = []
    asyncio.run(load(url, body, 1, 1.0))  # warm up connections and code paths
    for c in levels:
        lat, errors = asyncio.run(load(url, body, c, seconds))
        ms = np.asarray(lat) * 1000
        rows.append({
            "side": side, "concurrency": c, "requests": len(lat), "errors": errors,
            "rps": len(lat) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        })  # fmt: skip
        print(f"  {side} c={c}: {rows[-1]['rps']:.0f} req/s, p50 {rows[-1]['p50_ms']:.2f} ms, "
              f"p99 {rows[-1]['p99_ms']:.2f} ms, {errors} errors", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    import mlflow.sklearn

    from modelworks.training.package import save_package

    print(f"training HistGradientBoostingClassifier on {TRAIN_ROWS:,} x {FEATURES} ...")
    model, frame = train(args.seed)
    rows = frame.sample(n=1000, random_state=args.seed)
    records = rows.to_dict(orient="records")
    columns = list(frame.columns)
    one = rows.head(1)
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        model.predict_proba(one)
        times.append(time.perf_counter() - t0)
    in_process_ms = float(np.median(times) * 1000)
    print(f"in-process predict_proba, one row: p50 {in_process_ms:.3f} ms")

    mw_bodies = [json.dumps({"records": [r]}).encode() for r in records]
    ml_bodies = [
        json.dumps({"dataframe_split": {"columns": columns, "data": [list(r.values())]}}).encode()
        for r in records
    ]
    results: list[Row] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        save_package(model, Path(tmp) / "package", input_example=frame.head())
        mlflow.sklearn.save_model(
            model,
            str(Path(tmp) / "mlflow-model"),
            # MLflow 3 saves with skops too and asks which types to trust, as Modelworks does.
            skops_trusted_types=[
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
            ],
        )
        env = {**os.environ, "MODELWORKS_HOME": str(Path(tmp) / "home")}

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelworks.cli.main", "serve", str(Path(tmp) / "package"),
             "--port", str(port), "--name", "bench"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            url = f"http://127.0.0.1:{port}/deployments/bench/predict"
            results += measure("Modelworks", url, lambda i: mw_bodies[i % len(mw_bodies)],
                               levels, args.seconds)  # fmt: skip
        finally:
            stop(proc)

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m",
             str(Path(tmp) / "mlflow-model"), "-p", str(port), "-h", "127.0.0.1",
             "--env-manager", "local", "-w", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}/ping", proc)
            url = f"http://127.0.0.1:{port}/invocations"
            results += measure("MLflow", url, lambda i: ml_bodies[i % len(ml_bodies)],
                               levels, args.seconds)  # fmt: skip
        finally:
            stop(proc)
    load_after = os.getloadavg()

    by = {(r["side"], r["concurrency"]): r for r in results}
    lines = [
        "# Serving benchmark — Modelworks vs mlflow models serve",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores; one worker per server; "
        f"single-row requests, {args.seconds:g} s per level, closed loop. Load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. In-process predict_proba of "
        f"one row: p50 {in_process_ms:.3f} ms.",
        "",
        "| concurrency | side | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c in levels:
        for side in ("Modelworks", "MLflow"):
            r = by[(side, c)]
            lines.append(f"| {c} | {side} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['errors']} |")  # fmt: skip
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    top = max(levels)
    ratio = by[("Modelworks", top)]["rps"] / by[("MLflow", top)]["rps"]
    lines.append(f"| throughput >= 5x MLflow at concurrency {top} | {ratio:.2f}x | "
                 f"{'yes' if ratio >= 5 else 'NO'} |")  # fmt: skip
    for c in levels:
        a, b = by[("Modelworks", c)]["p99_ms"], by[("MLflow", c)]["p99_ms"]
        lines.append(f"| p99 below MLflow's at concurrency {c} | {a:.2f} vs {b:.2f} ms | "
                     f"{'yes' if a < b else 'NO'} |")  # fmt: skip
    if 1 in levels:
        p50 = by[("Modelworks", 1)]["p50_ms"]
        met = "yes" if p50 <= in_process_ms + 1 else "NO"
        lines.append(f"| p50 at concurrency 1 <= predict_proba + 1 ms | {p50:.2f} vs "
                     f"{in_process_ms + 1:.2f} ms | {met} |")  # fmt: skip
    text = "\n".join(lines)
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.md").write_text(text + "\n")
    (RESULTS / "serving.json").write_text(
        json.dumps(
            {"args": vars(args), "in_process_ms": in_process_ms, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
