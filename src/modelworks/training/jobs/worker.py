"""One attempt of one job, in its own process: ``python -m modelworks.training.jobs.worker
<job_id> [--attempt N]``.

The local runner starts it as a subprocess (its stdout and stderr are the job's log); on a
Ray cluster it is the Ray job's entrypoint. It opens the store named by the environment,
runs the kind's function with a :class:`JobContext`, and reports the end of the attempt
itself. A thread beats the heartbeat, carries progress to the database, and notices a
cancel request (``ctx.cancelled()``) or that the attempt is no longer the job's (it was
timed out or recovered elsewhere), in which case the process exits at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

from modelworks.core.auth import Principal
from modelworks.core.store import Store
from modelworks.training.jobs import kinds
from modelworks.training.jobs.context import JobContext
from modelworks.training.jobs.schemas import JobOut
from modelworks.training.jobs.service import JobService, host_name, jobs_dir

HEARTBEAT_S = 1.0
LOST_EXIT = 3  # the attempt was taken away (timed out, recovered, cancelled)
TIMEOUT_EXIT = 124


class _Watcher:
    """Heartbeats, progress, cancel requests and (on Ray) the timeout, from one thread."""

    def __init__(self, svc: JobService, job: JobOut, cancel: threading.Event) -> None:
        self.svc = svc
        self.job = job
        self.cancel = cancel
        self.pending: tuple[float, str] | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="modelworks-job-watch", daemon=True)

    def report_progress(self, fraction: float, message: str) -> None:
        with self.lock:
            self.pending = (fraction, message)
        if fraction >= 1.0:
            self.beat()

    def beat(self) -> None:
        with self.lock:
            progress, self.pending = self.pending, None
        try:
            state = self.svc.heartbeat(self.job.id, self.job.attempt, progress)
        except Exception as exc:  # the database is briefly away: keep running, beat later
            print(f"modelworks: heartbeat failed: {exc}", file=sys.stderr, flush=True)
            return
        if state is None:
            print(
                "modelworks: this attempt is no longer the job's (timed out, recovered or "
                "cancelled elsewhere); stopping.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(LOST_EXIT)
        if state:
            self.cancel.set()

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self.beat()
            timeout = self.job.timeout_s
            # The local runner enforces timeouts by killing the process group; on Ray the
            # worker is the only one there to do it.
            if self.job.executor == "ray" and timeout and time.monotonic() - self.started > timeout:
                msg = f"Timed out after {timeout:g} s."
                print(f"modelworks: {msg}", file=sys.stderr, flush=True)
                self.svc.finish(self.job.id, self.job.attempt, "failed", error=msg)
                os._exit(TIMEOUT_EXIT)


def _principal(svc: JobService, data: dict[str, Any]) -> Principal:
    """Who the job acts as: the submitter, reloaded (a disabled user's jobs fail)."""
    user_id = data.get("user_id")
    if user_id:
        from modelworks.governance.service import GovernanceService

        found = GovernanceService(svc.store).principal_for_user_id(str(user_id), via="job")
        return found
    return Principal(
        username=str(data.get("username") or "local"),
        superuser=bool(data.get("superuser")),
        via=str(data.get("via") or "local"),
    )


def run_attempt(store: Store, job_id: str, attempt: int | None = None) -> int:
    """Run one attempt of ``job_id`` in this process; returns the exit code."""
    from modelworks.training.jobs.models import Job

    svc = JobService(store)
    job = svc.begin(job_id, attempt, host_name())
    if job is None:
        print(f"modelworks: job {job_id} is not waiting for this attempt; nothing to do.")
        return 0
    with store.read() as s:
        row = s.get(Job, job_id)
        principal_data = dict(row.principal or {}) if row is not None else {}
        target = row.entrypoint if row is not None else None
    cancel = threading.Event()
    watcher = _Watcher(svc, job, cancel)
    watcher.thread.start()
    workdir = jobs_dir(store) / job.id / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        ctx = JobContext(
            job_id=job.id,
            project=job.project,
            project_id=job.project_id,
            kind=job.kind,
            name=job.name,
            spec=job.spec,
            resources=job.resources.model_dump(),
            attempt=job.attempt,
            principal=_principal(svc, principal_data),
            store=store,
            workdir=workdir,
            report_progress=watcher.report_progress,
            cancel_event=cancel,
        )
        ctx.log(f"job {job.id} ({job.kind}) attempt {job.attempt} on {host_name()}")
        fn = kinds.resolve(job.kind, target)
        result = fn(ctx) or {}
        if not isinstance(result, dict):
            raise TypeError(f"a job function returns a dict; {job.kind} returned {result!r}")
        result = json.loads(json.dumps(result, default=str))
    except BaseException as exc:  # every way out of the function ends the attempt
        watcher.stop.set()
        traceback.print_exc()
        sys.stdout.flush()
        if isinstance(exc, KeyboardInterrupt) or cancel.is_set():
            svc.finish(job.id, job.attempt, "cancelled", error="Cancelled.")
            return 1
        svc.finish(job.id, job.attempt, "failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    watcher.stop.set()
    outcome = "cancelled" if cancel.is_set() else "succeeded"
    ctx.log(f"job {job.id} {outcome}")
    svc.finish(
        job.id,
        job.attempt,
        outcome,
        result=result,
        error="Cancelled." if outcome == "cancelled" else None,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelworks.training.jobs.worker")
    parser.add_argument("job_id")
    parser.add_argument("--attempt", type=int, default=None)
    args = parser.parse_args(argv)
    store = Store()
    try:
        return run_attempt(store, args.job_id, args.attempt)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
