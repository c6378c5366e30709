"""Modelworks vs MLflow experiment tracking, side by side in one run, on the same work.

Logging: RUNS runs x (10 params + 5 metrics x 100 steps) = 510 calls a run, each param and
each metric point logged with its own call, as a training loop does; embedded (no server)
and over HTTP to a local server. A run's time includes creating it and ending it, and for
Modelworks the final flush: the clock stops once everything is durably stored.

Search: 1,000 runs with 3 params and 3 metrics each (set up with the batch APIs), then one
filtered, ordered search that returns about a quarter of them; median of several calls.

MLflow runs in its own environment (``.venv-bench``, see benchmarks/README.md) through
``_mlflow_side.py``; Modelworks runs in this process. The two never run at the same time.

    python benchmarks/tracking.py            # full size; about 10 minutes on 2 cores
    python benchmarks/tracking.py --quick    # smoke test; under a minute

Writes bench-results/tracking.md and bench-results/tracking.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---- the workload, shared with _mlflow_side.py (keep this part free of heavy imports) ----
LOG_EXPERIMENT = "bench-logging"
SEARCH_EXPERIMENT = "bench-search"
PARAM_KEYS = [f"p{i}" for i in range(10)]
METRIC_KEYS = [f"m{i}" for i in range(5)]
STEPS = 100
SEARCH_FILTER = "metrics.m0 > 0.5 and params.p0 = 'a'"
SEARCH_ORDER_BY = "metrics.m1 DESC"


def logging_calls() -> int:
    """Logging calls in one run: one per param, one per metric point."""
    return len(PARAM_KEYS) + len(METRIC_KEYS) * STEPS


def param_value(run: int, key: str) -> str:
    return f"{key}-value-{run % 7}"


def metric_value(run: int, key: str, step: int) -> float:
    return ((run * 31 + int(key[1:]) * 17 + step * 7) % 1000) / 1000.0


def search_params(run: int) -> dict[str, str]:
    return {"p0": "ab"[run % 2], "p1": str(run % 10), "label": f"run-{run:05d}"}


def search_metrics(run: int) -> dict[str, float]:
    # 37, 53 and 1000 are coprime, so m0 and m1 take distinct values: the order is total.
    return {
        "m0": ((run * 37) % 1000) / 1000.0,
        "m1": ((run * 53) % 1000) / 1000.0,
        "m2": run / 1000.0,
    }


# ---- targets -----------------------------------------------------------------------------
TARGET_LOG_EMBEDDED = 20.0
TARGET_LOG_HTTP = 5.0
TARGET_SEARCH = 5.0

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "bench-password-not-secret"


# ---- processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def server_process(
    cmd: list[str], *, env: dict[str, str], health_url: str, log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group, wait until it answers, stop it after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health_url} did not answer in 180 s:\n{_tail(log)}")
            time.sleep(0.25)
        yield proc
    finally:
        # The group holds the server and any worker it forked (mlflow server starts uvicorn).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- MLflow side (a subprocess in the MLflow environment) -------------------------------
def find_mlflow_python(given: str | None) -> str:
    """The interpreter that has MLflow: --mlflow-python, .venv-bench, or this one."""
    candidates = (
        [given] if given else [str(REPO / ".venv-bench" / "bin" / "python"), sys.executable]
    )
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import mlflow"], capture_output=True, text=True, check=False
            )
            if probe.returncode == 0:
                return python
    sys.exit(
        "MLflow was not found. Install it in its own environment:\n"
        "  python3 -m venv .venv-bench && .venv-bench/bin/pip install -r "
        "benchmarks/requirements-mlflow.txt\n"
        "or pass --mlflow-python PATH (see benchmarks/README.md)."
    )


@dataclass
class MlflowSide:
    python: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            # No phoning home from the benchmark (there is no network here anyway).
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # MLflow 3 refuses the file store unless asked; it is still its embedded store.
            "MLFLOW_ALLOW_FILE_STORE": "true",
        }

    def call(self, *args: str) -> dict[str, Any]:
        cmd = [self.python, str(Path(__file__).with_name("_mlflow_side.py")), *args]
        proc = subprocess.run(
            cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            said = proc.stderr[-4000:] + proc.stdout[-2000:]
            raise RuntimeError(f"MLflow side failed ({' '.join(args)}):\n{said}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    @contextlib.contextmanager
    def server(self, db: Path) -> Iterator[str]:
        port = free_port()
        cmd = [
            self.python, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{db}",
            "--default-artifact-root", str(self.workdir / "mlartifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        with server_process(
            cmd,
            env=self.env,
            health_url=f"{url}/health",
            log=self.workdir / f"mlflow-server-{port}.log",
            cwd=self.workdir,
        ):
            yield url


# ---- Modelworks side (this process) ------------------------------------------------------
def mw_embedded(home: Path) -> Any:
    import modelworks as mw
    from modelworks.core.config import Settings

    return mw.connect(settings=Settings(home=home))


def mw_token(home: Path) -> str:
    """An API token for the site admin, made in-process on the store the server will use."""
    from modelworks.core.config import Settings
    from modelworks.core.store import Store
    from modelworks.governance.service import GovernanceService

    store = Store(Settings(home=home))
    try:
        gov = GovernanceService(store)
        gov.bootstrap_admin(ADMIN_USER, ADMIN_PASSWORD)
        principal = gov.authenticate_password(ADMIN_USER, ADMIN_PASSWORD)
        return gov.create_token(principal, "benchmark", expires_in_days=1).token
    finally:
        store.close()


@contextlib.contextmanager
def mw_server(home: Path, logdir: Path) -> Iterator[tuple[str, str]]:
    token = mw_token(home)
    port = free_port()
    env = {
        **os.environ,
        "MODELWORKS_HOME": str(home),
        "MODELWORKS_ADMIN_USER": ADMIN_USER,
        "MODELWORKS_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    cmd = [sys.executable, "-m", "modelworks.cli.main", "server", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with server_process(
        cmd, env=env, health_url=f"{url}/readyz", log=logdir / f"mw-server-{port}.log", cwd=home
    ):
        yield url, token


def mw_remote(url: str, token: str) -> Any:
    import modelworks as mw

    return mw.connect(url, token=token)


def mw_bench_logging(ws: Any, runs: int) -> dict[str, Any]:
    """The same loop as _mlflow_side.bench_logging, through the Modelworks SDK."""
    last_id = ""
    start = time.perf_counter()
    for r in range(runs):
        with ws.start_run(experiment=LOG_EXPERIMENT, name=f"run-{r}") as run:
            for key in PARAM_KEYS:
                run.log_param(key, param_value(r, key))
            for step in range(STEPS):
                for key in METRIC_KEYS:
                    run.log_metric(key, metric_value(r, key, step), step=step)
            last_id = run.id
    seconds = time.perf_counter() - start
    last = ws.runs.get(last_id)
    history = ws.runs.metric_history(last_id, METRIC_KEYS[0])
    ok = (
        len(last.params) == len(PARAM_KEYS)
        and len(last.metrics) == len(METRIC_KEYS)
        and len(history) == STEPS
        and last.status == "FINISHED"
    )
    calls = runs * logging_calls()
    return {
        "runs": runs,
        "calls": calls,
        "seconds": seconds,
        "calls_per_s": calls / seconds,
        "verified": ok,
    }


def mw_populate(ws: Any, runs: int) -> dict[str, Any]:
    start = time.perf_counter()
    for r in range(runs):
        # Params go in with the run's creation, metrics in one buffered batch.
        with ws.start_run(SEARCH_EXPERIMENT, f"s-{r}", params=search_params(r)) as run:
            run.log_metrics(search_metrics(r), step=0)
    return {"runs": runs, "seconds": time.perf_counter() - start}


def time_search(
    once: Callable[[], list[Any]], label: Callable[[Any], str], repeat: int
) -> dict[str, Any]:
    """Median of ``repeat`` timed calls after one untimed warm-up (both sides use this)."""
    once()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        found = once()
        times.append(time.perf_counter() - start)
    return {
        "count": len(found),
        "labels": [label(r) for r in found],
        "median_s": statistics.median(times),
        "times_s": times,
    }


def mw_bench_search(ws: Any, repeat: int) -> dict[str, Any]:
    def once() -> list[Any]:
        page = ws.runs.search(
            SEARCH_FILTER, [SEARCH_ORDER_BY], [SEARCH_EXPERIMENT], max_results=1000
        )
        return list(page.items)

    return time_search(once, lambda r: r.params["label"], repeat)


# ---- the report --------------------------------------------------------------------------
@dataclass
class Row:
    operation: str
    mlflow: str
    modelworks: str
    ratio: float
    target: float
    note: str = ""

    @property
    def met(self) -> bool:
        return self.ratio >= self.target


def _rate(res: dict[str, Any]) -> str:
    return f"{res['calls_per_s']:,.0f} calls/s ({res['runs']} runs, {res['seconds']:.1f} s)"


def _latency(res: dict[str, Any]) -> str:
    return f"{res['median_s'] * 1000:,.1f} ms ({res['count']} runs)"


def log_row(op: str, ml: dict[str, Any], mw: dict[str, Any], target: float) -> Row:
    return Row(op, _rate(ml), _rate(mw), mw["calls_per_s"] / ml["calls_per_s"], target)


def search_row(op: str, ml: dict[str, Any], mw: dict[str, Any]) -> Row:
    same = ml["labels"] == mw["labels"]
    note = "" if same else " (results differ!)"
    return Row(op, _latency(ml), _latency(mw), ml["median_s"] / mw["median_s"], TARGET_SEARCH, note)


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        "# Tracking: Modelworks vs MLflow",
        "",
        f"MLflow {meta['mlflow_version']}, Modelworks {meta['modelworks_version']}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs; "
        f"load average {meta['load_before'][0]:.2f} before, {meta['load_after'][0]:.2f} after.",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Logging: {meta['calls_per_run']} calls a run, one call each "
        f"({len(PARAM_KEYS)} params + {len(METRIC_KEYS)} metrics x {STEPS} steps), run start and "
        "end included; throughput compares sides that ran different run counts fairly.",
        f"Search: `{SEARCH_FILTER}` ordered by `{SEARCH_ORDER_BY}`, max_results 1000, over "
        f"{meta['search_runs']} runs; median of {meta['repeat']} calls after one warm-up.",
        "",
        "| operation | MLflow | Modelworks | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.operation} | {r.mlflow} | {r.modelworks} | {r.ratio:,.1f}x{r.note} "
            f"| >= {r.target:g}x | {'yes' if r.met else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


# ---- main --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Modelworks vs MLflow tracking benchmark.")
    p.add_argument("--runs", type=int, default=200, help="runs for Modelworks logging")
    p.add_argument(
        "--mlflow-runs",
        type=int,
        default=40,
        help="runs for MLflow embedded logging (about 2.5 ms a call on SQLite)",
    )
    p.add_argument(
        "--mlflow-http-runs",
        type=int,
        default=20,
        help="runs for MLflow logging over HTTP (about 13 ms a call)",
    )
    p.add_argument("--search-runs", type=int, default=1000, help="runs to search over")
    p.add_argument("--repeat", type=int, default=7, help="timed search calls (median)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--skip-http", action="store_true", help="embedded only, no servers")
    p.add_argument("--skip-file-store", action="store_true", help="skip MLflow's file store")
    p.add_argument("--mlflow-python", help="Python with MLflow (default: .venv-bench)")
    p.add_argument("--workdir", type=Path, help="keep the stores here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the results")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.mlflow_runs, args.mlflow_http_runs = 5, 3, 2
        args.search_runs, args.repeat = 100, 3
    args.mlflow_runs = min(args.mlflow_runs, args.runs)
    args.mlflow_http_runs = min(args.mlflow_http_runs, args.runs)
    return args


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import modelworks

    python = find_mlflow_python(args.mlflow_python)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ml = MlflowSide(python, work)
    version = ml.call("version")["mlflow_version"]
    loads: dict[str, list[float]] = {}
    results: dict[str, Any] = {}
    rows: list[Row] = []

    def phase(name: str) -> None:
        loads[name] = list(os.getloadavg())
        say(f"{name} (load {loads[name][0]:.2f})")

    load_before = list(os.getloadavg())
    say(f"MLflow {version} via {python}; stores in {work}")

    # -- logging, embedded
    phase(f"MLflow logging, embedded SQLite, {args.mlflow_runs} runs")
    results["mlflow_log_sqlite"] = ml.call(
        "log", "--uri", f"sqlite:///{work / 'ml-log.db'}", "--runs", str(args.mlflow_runs)
    )
    if not args.skip_file_store:
        phase(f"MLflow logging, embedded file store, {args.mlflow_runs} runs")
        results["mlflow_log_file"] = ml.call(
            "log", "--uri", (work / "ml-log-files").as_uri(), "--runs", str(args.mlflow_runs)
        )
    phase(f"Modelworks logging, embedded, {args.runs} runs")
    ws = mw_embedded(work / "mw-log")
    results["mw_log_embedded"] = mw_bench_logging(ws, args.runs)
    ws.close()
    rows.append(
        log_row(
            "log, embedded (MLflow SQLite, its default)",
            results["mlflow_log_sqlite"],
            results["mw_log_embedded"],
            TARGET_LOG_EMBEDDED,
        )
    )
    if "mlflow_log_file" in results:
        rows.append(
            log_row(
                "log, embedded (MLflow file store, opt-in)",
                results["mlflow_log_file"],
                results["mw_log_embedded"],
                TARGET_LOG_EMBEDDED,
            )
        )

    # -- logging, over HTTP
    if not args.skip_http:
        phase(f"MLflow logging over HTTP, {args.mlflow_http_runs} runs")
        with ml.server(work / "ml-http.db") as url:
            results["mlflow_log_http"] = ml.call(
                "log", "--uri", url, "--runs", str(args.mlflow_http_runs)
            )
        phase(f"Modelworks logging over HTTP, {args.runs} runs")
        (work / "mw-http").mkdir(exist_ok=True)
        with mw_server(work / "mw-http", work) as (url, token):
            ws = mw_remote(url, token)
            results["mw_log_http"] = mw_bench_logging(ws, args.runs)
            ws.close()
        rows.append(
            log_row(
                "log, over HTTP (SQLite behind a local server)",
                results["mlflow_log_http"],
                results["mw_log_http"],
                TARGET_LOG_HTTP,
            )
        )

    # -- search
    n, rep = str(args.search_runs), str(args.repeat)
    phase(f"MLflow search over {n} runs, embedded SQLite")
    ml_db = work / "ml-search.db"
    results["mlflow_search_sqlite"] = ml.call(
        "search", "--uri", f"sqlite:///{ml_db}", "--populate", n, "--repeat", rep
    )
    if not args.skip_file_store:
        phase(f"MLflow search over {n} runs, embedded file store")
        results["mlflow_search_file"] = ml.call(
            "search", "--uri", (work / "ml-search-files").as_uri(), "--populate", n, "--repeat", rep
        )
    phase(f"Modelworks search over {n} runs, embedded")
    mw_home = work / "mw-search"
    ws = mw_embedded(mw_home)
    results["mw_populate"] = mw_populate(ws, args.search_runs)
    results["mw_search_embedded"] = mw_bench_search(ws, args.repeat)
    ws.close()
    rows.append(
        search_row(
            "search, embedded (MLflow SQLite)",
            results["mlflow_search_sqlite"],
            results["mw_search_embedded"],
        )
    )
    if "mlflow_search_file" in results:
        rows.append(
            search_row(
                "search, embedded (MLflow file store)",
                results["mlflow_search_file"],
                results["mw_search_embedded"],
            )
        )
    if not args.skip_http:
        phase("MLflow search over HTTP (same SQLite store)")
        with ml.server(ml_db) as url:
            results["mlflow_search_http"] = ml.call("search", "--uri", url, "--repeat", rep)
        phase("Modelworks search over HTTP (same store)")
        with mw_server(mw_home, work) as (url, token):
            ws = mw_remote(url, token)
            results["mw_search_http"] = mw_bench_search(ws, args.repeat)
            ws.close()
        rows.append(
            search_row(
                "search, over HTTP", results["mlflow_search_http"], results["mw_search_http"]
            )
        )

    meta = {
        "mlflow_version": version,
        "mlflow_python": python,
        "modelworks_version": modelworks.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "load_by_phase": loads,
        "command": " ".join(["python", "benchmarks/tracking.py", *(argv or sys.argv[1:])]),
        "calls_per_run": logging_calls(),
        "search_runs": args.search_runs,
        "repeat": args.repeat,
        "workdir": str(work),
    }
    checks = {
        k: v["verified"] for k, v in results.items() if isinstance(v, dict) and "verified" in v
    }
    search_counts = {k: v["count"] for k, v in results.items() if "count" in v}
    table = markdown(rows, meta)
    problems = [f"{k}: data did not land" for k, ok in checks.items() if not ok]
    problems += [
        f"{r.operation}: MLflow and Modelworks found different runs" for r in rows if r.note
    ]
    if len(set(search_counts.values())) > 1:
        problems.append(f"search counts differ: {search_counts}")
    if problems:
        table += f"\nCHECKS FAILED: {problems}\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking.md").write_text(table)
    for v in results.values():
        v.pop("labels", None)
    report = {
        "meta": meta,
        "checks": checks,
        "search_counts": search_counts,
        "rows": [{**r.__dict__, "met": r.met} for r in rows],
        "results": results,
    }
    (args.out / "tracking.json").write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {args.out / 'tracking.md'} and {args.out / 'tracking.json'}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
