"""The ray executor against a real local Ray cluster (``ray start --head``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelworks.core.auth import local_principal
from modelworks.core.config import Settings
from modelworks.core.store import Store
from modelworks.training.jobs import ray_executor
from modelworks.training.jobs.service import JobService

from .conftest import wait_until

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_store(tmp_path: Path, ray_cluster: Any) -> Iterator[Store]:
    # The cluster runs on this machine, so its workers open the same SQLite store.
    store = Store(
        Settings(
            home=tmp_path / "ray-home",
            ray_address=ray_cluster.address,
            ray_dashboard_url=ray_cluster.dashboard_url,
        )
    )
    yield store
    store.close()


def test_dashboard_url_defaults_to_the_ray_host() -> None:
    assert ray_executor.dashboard_url(Settings(ray_address="10.0.0.5:6379")) == (
        "http://10.0.0.5:8265"
    )
    assert ray_executor.dashboard_url(Settings(ray_address="ray://head:10001")) == (
        "http://head:8265"
    )
    given = Settings(ray_address="x:1", ray_dashboard_url="http://d:9000/")
    assert ray_executor.dashboard_url(given) == "http://d:9000"


def test_a_job_runs_on_ray_and_retries_there(ray_store: Store) -> None:
    svc, me = JobService(ray_store), local_principal()
    job = svc.submit(me, "default", "sleep", {"seconds": 1, "steps": 2, "fail": 1}, max_retries=1)
    assert job.executor == "ray" and job.external_id == ray_executor.submission_id(job.id, 1)
    done = wait_until(lambda: svc.get(me, job.id), lambda j: j.done, timeout=180)
    assert (done.status, done.attempt) == ("succeeded", 2), done.error
    assert done.external_id == ray_executor.submission_id(job.id, 2)
    sid = done.external_id
    deadline = time.monotonic() + 60  # the worker reports before its process has exited
    while ray_executor.status(ray_store.settings, sid)[0] != "succeeded":
        assert time.monotonic() < deadline, "Ray never saw the job succeed"
        time.sleep(0.5)
    text = svc.logs(me, job.id).text  # the second attempt's log, from Ray
    assert "step 2/2" in text and "attempt 2" in text
    kept = svc.get(me, job.id).log_sha256  # Ray has seen it end: the log is kept
    assert kept and ray_store.artifacts.get_bytes(kept).decode() == text
    assert svc.logs(me, job.id).complete


def test_a_ray_job_can_be_cancelled(ray_store: Store) -> None:
    svc, me = JobService(ray_store), local_principal()
    job = svc.submit(me, "default", "sleep", {"seconds": 120, "steps": 1})
    wait_until(lambda: svc.get(me, job.id), lambda j: j.status == "running", timeout=180)
    out = svc.cancel(me, job.id)
    assert out.status == "cancelled"
    deadline = time.monotonic() + 60
    while ray_executor.status(ray_store.settings, out.external_id or "")[0] != "cancelled":
        assert time.monotonic() < deadline, "Ray never stopped the job"
        time.sleep(0.5)
    assert svc.get(me, job.id).status == "cancelled"


def test_ray_timeouts_and_jobs_that_die_on_the_cluster(ray_store: Store) -> None:
    svc, me = JobService(ray_store), local_principal()
    slow = svc.submit(me, "default", "sleep", {"seconds": 120, "steps": 1}, timeout_s=2)
    doomed = svc.submit(me, "default", "sleep", {"seconds": 120, "steps": 1})
    wait_until(lambda: svc.get(me, doomed.id), lambda j: j.status == "running", timeout=180)
    # Stopped behind Modelworks' back: the worker dies without a word; Ray's status settles it.
    ray_executor.client(ray_store.settings).stop_job(doomed.external_id)
    dead = wait_until(lambda: svc.get(me, doomed.id), lambda j: j.done, timeout=60)
    assert dead.status == "cancelled" and dead.error and "before it reported" in dead.error
    late = wait_until(lambda: svc.get(me, slow.id), lambda j: j.done, timeout=180)
    assert (late.status, late.error) == ("failed", "Timed out after 2 s.")
