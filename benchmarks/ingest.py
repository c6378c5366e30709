"""CSV -> versioned Parquet dataset: Modelworks vs DuckDB's own COPY and pandas, in one run.

The input is a seeded CSV made by this script (5,000,000 rows, about 1 GB by default): ints,
floats with missing values, strings of low, medium and high cardinality, free text,
timestamps and booleans. Each side runs in a fresh child process, one after the other, so
peak memory (the child's max RSS, DuckDB's native memory included) belongs to that side only:

- duckdb:     ``COPY (SELECT * FROM read_csv(...)) TO 'x.parquet'
              (FORMAT parquet, COMPRESSION zstd)`` — the practical limit;
- pandas:     ``pd.read_csv`` + ``DataFrame.to_parquet(compression="zstd")`` (pyarrow engine);
- modelworks: ``DataService.ingest(CsvSource(path))`` into a fresh embedded store — the
              Parquet parts, the content hash, the profile, the metadata commit, all of it.

Then the profile of the ingested 5M rows through Modelworks (``profile_paths``) against
DuckDB's ``SUMMARIZE`` of the same Parquet.

Targets (issue 3): ingest <= 1.3x DuckDB's time, >= 4x faster than pandas, peak memory
<= 2 GB; profile <= 1.5x SUMMARIZE.

    python benchmarks/ingest.py                 # 5M rows; a few minutes on 2 cores
    python benchmarks/ingest.py --rows 500000   # quick look

Writes bench-results/ingest.md and bench-results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "bench-results"

# Deterministic, seeded values from hash() of the row number: the same file on every run
# and machine, whatever the thread count (random() would depend on scheduling).
GENERATE_SQL = """
COPY (
  SELECT
    i AS id,
    (hash(i, {seed}) % 100000)::BIGINT AS customer_id,
    (hash(i, {seed} + 1) % 1000)::INTEGER AS quantity,
    CASE WHEN hash(i, {seed} + 2) % 10 = 0 THEN NULL
         ELSE round((hash(i, {seed} + 3) % 1000000) / 100.0, 2) END AS amount,
    CASE WHEN hash(i, {seed} + 4) % 20 = 0 THEN NULL
         ELSE (hash(i, {seed} + 5) % 1000000) / 1000000.0 END AS score,
    ((hash(i, {seed} + 6) % 2000)::BIGINT - 1000) / 7.0 AS delta,
    ['bronze', 'silver', 'gold', 'platinum'][1 + (hash(i, {seed} + 7) % 4)::BIGINT] AS tier,
    'city_' || (hash(i, {seed} + 8) % 5000)::VARCHAR AS city,
    md5((hash(i, {seed} + 9))::VARCHAR) AS session_id,
    ['US', 'DE', 'FR', 'IN', 'BR', 'JP', 'GB', 'CA'][1 + (hash(i, {seed} + 10) % 8)::BIGINT]
      AS country,
    TIMESTAMP '2024-01-01' + to_seconds((hash(i, {seed} + 11) % 31536000)::BIGINT) AS created_at,
    DATE '2020-01-01' + (hash(i, {seed} + 12) % 1500)::INTEGER AS signup_date,
    hash(i, {seed} + 13) % 2 = 0 AS is_active,
    CASE WHEN hash(i, {seed} + 14) % 7 = 0 THEN NULL ELSE hash(i, {seed} + 15) % 3 = 0 END
      AS churned,
    'order ' || i::VARCHAR || ' for customer ' || (hash(i, {seed}) % 100000)::VARCHAR
      || ' via ' || ['web', 'app', 'phone'][1 + (hash(i, {seed} + 16) % 3)::BIGINT] AS note
  FROM range({rows}) t(i)
) TO {path} (FORMAT csv, HEADER true)
"""


def generate(path: Path, rows: int, seed: int) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(GENERATE_SQL.format(rows=rows, seed=seed, path="'" + str(path) + "'"))
    con.close()


# ---- the sides, each run in its own child process -----------------------------------------
def side_duckdb(csv: Path, work: Path) -> dict[str, Any]:
    import duckdb

    out = work / "duckdb.parquet"
    con = duckdb.connect()
    t0, c0 = time.perf_counter(), time.process_time()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{csv}')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows[0] if rows else 0,
        "bytes": out.stat().st_size,
    }


def side_pandas(csv: Path, work: Path) -> dict[str, Any]:
    import pandas as pd

    out = work / "pandas.parquet"
    t0, c0 = time.perf_counter(), time.process_time()
    df = pd.read_csv(csv)
    df.to_parquet(out, compression="zstd", engine="pyarrow")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": len(df), "bytes": out.stat().st_size}


def side_modelworks(csv: Path, work: Path) -> dict[str, Any]:
    from modelworks.core.auth import local_principal
    from modelworks.core.config import Settings
    from modelworks.core.store import Store
    from modelworks.data.service import DataService
    from modelworks.data.sources import source_from_spec

    store = Store(Settings(home=work / "mwhome"))
    service = DataService(store)
    source = source_from_spec({"kind": "csv", "path": str(csv)})
    t0, c0 = time.perf_counter(), time.process_time()
    result = service.ingest(local_principal(), "default", "bench", source)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    v = result.version
    assert v is not None
    _, paths = service.read_paths(local_principal(), "default", "bench@1")
    (work / "modelworks-paths.json").write_text(json.dumps(paths))
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": v.row_count,
        "bytes": v.size_bytes,
        "parts": len(v.files),
        "profile_seconds_inside": v.profile.seconds if v.profile else None,
    }


def side_summarize(paths: list[str]) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    listing = ", ".join(f"'{p}'" for p in paths)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = con.sql(f"SUMMARIZE SELECT * FROM read_parquet([{listing}])").fetchall()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "columns": len(rows)}


def side_profile(paths: list[str], home: Path) -> dict[str, Any]:
    from modelworks.core.config import Settings
    from modelworks.data import storage
    from modelworks.data.profile import profile_paths

    con = storage.connect(Settings(home=home))
    t0, c0 = time.perf_counter(), time.process_time()
    profile = profile_paths(con, paths)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "columns": len(profile.columns)}


def child_main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    csv = Path(args.csv)
    if args.side == "duckdb":
        out = side_duckdb(csv, work)
    elif args.side == "pandas":
        out = side_pandas(csv, work)
    elif args.side == "modelworks":
        out = side_modelworks(csv, work)
    elif args.side == "summarize":
        out = side_summarize(json.loads((work / "modelworks-paths.json").read_text()))
    elif args.side == "profile":
        out = side_profile(json.loads((work / "modelworks-paths.json").read_text()), work)
    else:
        raise SystemExit(f"unknown side {args.side}")
    # ru_maxrss is in KiB on Linux: the whole process, DuckDB's native memory included.
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_side(side: str, csv: Path, work: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, "--csv", str(csv), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise SystemExit(f"{side} failed:\n{proc.stdout}\n{proc.stderr}")


def median_of(side: str, csv: Path, work: Path, repeat: int) -> dict[str, Any]:
    return summarise([run_side(side, csv, work) for _ in range(repeat)])


def summarise(runs: list[dict[str, Any]], *, last: bool = False) -> dict[str, Any]:
    """Medians of the times, the highest peak memory; other fields from the first run (the
    last with ``last``: the Modelworks store the profile side reads is the last run's)."""
    best = dict(runs[-1] if last else runs[0])
    best["seconds"] = statistics.median(r["seconds"] for r in runs)
    best["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    best["all_seconds"] = [round(r["seconds"], 2) for r in runs]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (median)")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.side = args.child
        child_main(args)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="mw-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"input-{args.rows}-{args.seed}.csv"
    if not csv.exists():
        print(f"generating {args.rows:,} rows -> {csv} ...", flush=True)
        t0 = time.perf_counter()
        generate(csv, args.rows, args.seed)
        print(f"  {csv.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
    size_gb = csv.stat().st_size / 1e9

    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    # The two ingest sides take turns (duckdb, modelworks, duckdb, ...) rather than running
    # in blocks, so that a change in other load on a shared machine falls on both alike.
    runs: dict[str, list[dict[str, Any]]] = {"duckdb": [], "modelworks": []}
    for i in range(args.repeat):
        for side in ("duckdb", "modelworks"):
            print(f"{side} run {i + 1} ...", flush=True)
            if side == "modelworks":
                shutil.rmtree(work / "mwhome", ignore_errors=True)
            runs[side].append(run_side(side, csv, work))
            print(f"  {runs[side][-1]}")
    for side, side_runs in runs.items():
        results[side] = summarise(side_runs, last=side == "modelworks")
    if not args.skip_pandas:
        print("pandas ...", flush=True)
        results["pandas"] = median_of("pandas", csv, work, 1)
        print(f"  {results['pandas']}")
    for side in ("summarize", "profile"):
        print(f"{side} ...", flush=True)
        results[side] = median_of(side, csv, work, args.repeat)
        print(f"  {results[side]}")

    load_after = os.getloadavg()
    mw, dk = results["modelworks"], results["duckdb"]
    ingest_ratio = mw["seconds"] / dk["seconds"]
    profile_ratio = results["profile"]["seconds"] / results["summarize"]["seconds"]
    rows = [
        ("ingest time vs DuckDB COPY", ingest_ratio, "<= 1.3x", ingest_ratio <= 1.3),
        ("profile time vs DuckDB SUMMARIZE", profile_ratio, "<= 1.5x", profile_ratio <= 1.5),
        ("ingest peak memory (MB)", mw["peak_rss_mb"], "<= 2048", mw["peak_rss_mb"] <= 2048),
    ]
    if "pandas" in results:
        speedup = results["pandas"]["seconds"] / mw["seconds"]
        rows.insert(1, ("speed-up over pandas", speedup, ">= 4x", speedup >= 4))

    lines = [
        f"# Ingest benchmark — {args.rows:,} rows, {size_gb:.2f} GB CSV",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; median of {args.repeat} runs per side (pandas: 1). "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| side | seconds | CPU seconds | peak RSS (MB) | Parquet MB | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    for side in ("duckdb", "modelworks", "pandas", "summarize", "profile"):
        if side not in results:
            continue
        r = results[side]
        size = f"{r['bytes'] / 1e6:.0f}" if "bytes" in r else "—"
        lines.append(
            f"| {side} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{size} | "
            f"{r.get('all_seconds', '')} |"
        )
    lines += ["", "| check | measured | target | met? |", "|---|---|---|---|"]
    for name, value, target, ok in rows:
        lines.append(f"| {name} | {value:.2f} | {target} | {'yes' if ok else 'NO'} |")
    cpu_ingest = mw["cpu_seconds"] / dk["cpu_seconds"]
    cpu_profile = results["profile"]["cpu_seconds"] / results["summarize"]["cpu_seconds"]
    lines += [
        "",
        f"CPU time (all threads of the side's process; less sensitive to other work on the "
        f"machine than wall time): ingest {cpu_ingest:.2f}x DuckDB's, profile "
        f"{cpu_profile:.2f}x SUMMARIZE's.",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.md").write_text(table + "\n")
    (RESULTS / "ingest.json").write_text(json.dumps(results, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
