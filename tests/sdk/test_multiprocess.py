"""Many processes log to one embedded store at once, and nothing is lost."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

import modelworks as mw
from modelworks.core.config import Settings

PROCESSES = 8
POINTS = 2000

# The worker lives in a module of its own so that spawned processes can import it.
WORKER = """
import modelworks as mw


def log_points(args):
    index, points = args
    with mw.start_run(experiment="parallel", name=f"worker-{index}") as run:
        run.log_param("worker", index)
        for step in range(points):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    return run.id
"""


@pytest.mark.slow
def test_processes_share_one_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_home: Path
) -> None:
    (tmp_path / "mw_parallel_worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mw_parallel_worker

    ws = mw.connect(settings=Settings(home=_isolated_home))  # migrate once, up front
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        run_ids = pool.map(mw_parallel_worker.log_points, [(i, POINTS) for i in range(PROCESSES)])
    sys.modules.pop("mw_parallel_worker", None)

    assert len(set(run_ids)) == PROCESSES
    total = 0
    for run_id in run_ids:
        run = ws.runs.get(run_id)
        assert run.status == "FINISHED"
        history = ws.runs.metric_history(run_id, "loss")
        assert [p.step for p in history] == list(range(POINTS))
        total += len(history)
    assert total == PROCESSES * POINTS
    runs = list(ws.runs.search_all(experiments="parallel"))
    assert sorted(r.params["worker"] for r in runs) == sorted(str(i) for i in range(PROCESSES))
    ws.close()
