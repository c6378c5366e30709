"""On PostgreSQL, runners claim with FOR UPDATE SKIP LOCKED: no job ever runs twice."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelworks.core.audit import AuditRecord
from modelworks.core.auth import local_principal
from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.training.jobs.runner import JobRunner
from modelworks.training.jobs.service import JobService

pytestmark = pytest.mark.postgres


def test_concurrent_claims_never_take_one_job_twice(tmp_path: Path, postgres_url: str) -> None:
    stores = [Store(Settings(home=tmp_path / f"h{i}", database_url=postgres_url)) for i in range(6)]
    try:
        svc = JobService(stores[0])
        ids = {
            svc.submit(local_principal(), "default", "sleep", {"seconds": 0}).id for _ in range(40)
        }
        claimed: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(stores))

        def claim_all(store: Store, name: str) -> None:
            mine = JobService(store)
            barrier.wait()
            while (job := mine.claim_next(name, free_cpus=64)) is not None:
                with lock:
                    claimed.append(job.id)

        threads = [
            threading.Thread(target=claim_all, args=(s, f"runner-{i}"))
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(claimed) == sorted(ids)  # every job once, none twice
        jobs = [svc.get(local_principal(), i) for i in ids]
        assert {(j.status, j.attempt) for j in jobs} == {("running", 1)}
        assert len({j.worker for j in jobs}) > 1  # the runners really competed
    finally:
        for s in stores:
            s.close()


def test_two_runners_on_one_database_run_each_job_once(tmp_path: Path, postgres_url: str) -> None:
    # Two runners as on two machines (each its own MODELWORKS_HOME and lock), one database.
    a = Store(Settings(home=tmp_path / "host-a", database_url=postgres_url))
    b = Store(Settings(home=tmp_path / "host-b", database_url=postgres_url))
    try:
        svc = JobService(a)
        ids = [
            svc.submit(local_principal(), "default", "sleep", {"seconds": 0.2, "steps": 1}).id
            for _ in range(6)
        ]
        runners = [JobRunner(s, max_cpus=2, poll_s=0.05, name=n) for s, n in ((a, "a"), (b, "b"))]
        threads = [threading.Thread(target=r.run, kwargs={"idle_exit_s": 1.0}) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        jobs = [svc.get(local_principal(), i) for i in ids]
        assert [(j.status, j.attempt) for j in jobs] == [("succeeded", 1)] * 6
        with a.read() as s:
            starts: Counter[Any] = Counter(
                s.scalars(
                    select(AuditRecord.object_id).where(
                        AuditRecord.action == "job.start", AuditRecord.object_id.in_(ids)
                    )
                )
            )
        assert starts == Counter({i: 1 for i in ids})
    finally:
        a.close()
        b.close()
