"""Fixtures for the job queue: a store with its service, a runner thread, a waiting helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelworks.core.auth import Principal, local_principal
from modelworks.core.store import Store
from modelworks.training.jobs.runner import JobRunner
from modelworks.training.jobs.schemas import JobOut
from modelworks.training.jobs.service import JobService

WaitFor = Callable[..., JobOut]


@pytest.fixture
def me() -> Principal:
    return local_principal()


@pytest.fixture
def svc(store: Store) -> JobService:
    return JobService(store)


@pytest.fixture
def start_runner(store: Store) -> Iterator[Callable[..., JobRunner]]:
    """``start_runner(max_cpus=...)`` runs a JobRunner thread on ``store`` for the test."""
    runners: list[JobRunner] = []

    def start(**kwargs: Any) -> JobRunner:
        kwargs.setdefault("poll_s", 0.1)
        runner = JobRunner(kwargs.pop("on", store), **kwargs).start()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.stop()


def wait_until(
    get: Callable[[], JobOut], done: Callable[[JobOut], bool], timeout: float = 60.0
) -> JobOut:
    deadline = time.monotonic() + timeout
    while True:
        job = get()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} still {job.status} after {timeout} s: {job}")
        time.sleep(0.1)


@pytest.fixture
def wait_for(svc: JobService, me: Principal) -> WaitFor:
    """``wait_for(job_id, status=None, timeout=60)``: the job once it ends (or has status)."""

    def wait(job_id: str, status: str | None = None, timeout: float = 60.0) -> JobOut:
        return wait_until(
            lambda: svc.get(me, job_id),
            (lambda j: j.status == status) if status else (lambda j: j.done),
            timeout,
        )

    return wait
