"""The local executor: :class:`JobRunner` claims queued jobs and runs each attempt in its
own process group (``python -m modelworks.training.jobs.worker <job_id>``).

- Concurrency is bounded by the machine: the CPUs (and GPUs) the running jobs asked for
  never add up to more than it has.
- A job's stdout and stderr go to ``MODELWORKS_HOME/jobs/<id>/job.log`` as they are
  written (``logs`` reads it while the job runs); when an attempt ends the file is kept in
  the artifact store.
- Cancelling and timeouts kill the whole process group (SIGTERM, then SIGKILL).
- One runner per MODELWORKS_HOME holds ``jobs/runner.lock``. The server runs one in a
  thread for its lifetime; in embedded mode, submitting a job starts a detached runner
  process (:func:`ensure_local_runner`) that drains the queue and exits when idle, so jobs
  outlive the program that submitted them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from modelworks.core.ids import utcnow
from modelworks.core.store import Store
from modelworks.training.jobs.models import FINAL_STATUSES
from modelworks.training.jobs.schemas import JobOut
from modelworks.training.jobs.service import (
    STALE_AFTER_S,
    JobService,
    host_name,
    jobs_dir,
    local_gpu_ids,
    store_env,
)

KILL_GRACE_S = 3.0
HOUSEKEEPING_EVERY_S = 5.0
IDLE_EXIT_S = 3.0


@dataclass
class _Child:
    job: JobOut
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    ending: str | None = None  # why the runner killed it: "cancelled" or "timeout"
    gpus: dict[str, float] = field(default_factory=dict)  # device id -> share of it


def runner_lock(store: Store) -> FileLock:
    path = jobs_dir(store) / "runner.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


class JobRunner:
    """Runs queued local jobs of ``store``.

    ``max_cpus`` / ``max_gpus`` default to the machine's. ``lock=False`` lets several
    runners share one MODELWORKS_HOME (tests of concurrent claims).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_cpus: float | None = None,
        max_gpus: float | None = None,
        poll_s: float = 0.2,
        stale_after_s: float = STALE_AFTER_S,
        lock: bool = True,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.svc = JobService(store)
        self.max_cpus = float(max_cpus if max_cpus is not None else (os.cpu_count() or 1))
        self.gpu_ids = local_gpu_ids()
        if max_gpus is not None:
            self.gpu_ids = self.gpu_ids[: int(max_gpus)]
        self.max_gpus = float(len(self.gpu_ids))
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self.worker = name or f"{host_name()}:{os.getpid()}:{id(self) % 100_000}"
        self._lock = runner_lock(store) if lock else None
        self._children: dict[str, _Child] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_housekeeping = 0.0
        self.started = 0  # attempts started by this runner

    # ---- lifecycle -------------------------------------------------------------------------
    def run(self, *, forever: bool = False, idle_exit_s: float = IDLE_EXIT_S) -> None:
        """Run jobs until stopped (``forever``) or until nothing is queued or running for
        ``idle_exit_s``. Without ``forever``, returns at once if another runner holds the
        lock of this MODELWORKS_HOME."""
        while not self._stop.is_set():
            if not self._acquire(wait=forever):
                return
            try:
                started = self._loop(forever=forever, idle_exit_s=idle_exit_s)
            finally:
                self._shutdown_children()
                self._release()
            # A job submitted while we were letting go saw the lock still held and started
            # no runner: look once more after releasing it. (A round that started nothing
            # means what is queued does not fit this runner: stop there.)
            if forever or self._stop.is_set() or not started or not self.svc.has_queued_local():
                return

    def start(self) -> JobRunner:
        """Run forever in a daemon thread (the server's runner)."""
        self._thread = threading.Thread(
            target=self.run, kwargs={"forever": True}, name="modelworks-job-runner", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running attempts are killed and put back in the queue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _acquire(self, *, wait: bool) -> bool:
        if self._lock is None:
            return True
        while not self._stop.is_set():
            try:
                self._lock.acquire(timeout=0)
                return True
            except Timeout:
                if not wait:
                    return False
                self._stop.wait(1.0)
        return False

    def _release(self) -> None:
        if self._lock is not None and self._lock.is_locked:
            self._lock.release()

    def _loop(self, *, forever: bool, idle_exit_s: float) -> int:
        """Tick until stopped or idle; returns how many attempts it started."""
        idle_since = time.monotonic()
        before = self.started
        while not self._stop.is_set():
            try:
                busy = self.tick()
            except Exception as exc:  # the database is away for a moment: keep trying
                print(f"modelworks: job runner: {exc}", file=sys.stderr, flush=True)
                self._stop.wait(min(5.0, self.poll_s * 10))
                continue
            if busy:
                idle_since = time.monotonic()
            elif not forever and time.monotonic() - idle_since >= idle_exit_s:
                break
            self._stop.wait(self.poll_s)
        return self.started - before

    # ---- one pass ------------------------------------------------------------------------
    def tick(self) -> bool:
        """Check running children, do housekeeping, start what fits. True if busy."""
        states = self.svc.job_states(self._children) if self._children else {}
        for child in list(self._children.values()):
            self._check(child, states.get(child.job.id))
        now = time.monotonic()
        if now - self._last_housekeeping >= HOUSEKEEPING_EVERY_S:
            self._last_housekeeping = now
            self._housekeeping()
        while not self._stop.is_set():
            used_cpus = sum(float(c.job.resources.cpus) for c in self._children.values())
            used_gpus = sum(float(c.job.resources.gpus) for c in self._children.values())
            job = self.svc.claim_next(
                self.worker,
                free_cpus=self.max_cpus - used_cpus,
                free_gpus=self.max_gpus - used_gpus,
                fits=lambda res: self._assign_gpus(float(res.get("gpus") or 0)) is not None,
            )
            if job is None or not self._spawn(job):
                break
        return bool(self._children)

    def _housekeeping(self) -> None:
        try:
            for job in self.svc.recover_stale(self.stale_after_s):
                child = self._children.get(job.id)
                if child is not None:  # ours but silent: it must not run on beside a retry
                    self._kill(child)
            if self.store.settings.ray_address:
                self.svc.reconcile_ray()
        except Exception as exc:  # never let housekeeping stop the runner
            print(f"modelworks: job housekeeping failed: {exc}", file=sys.stderr, flush=True)

    def _spawn(self, job: JobOut) -> bool:
        """Start the claimed attempt's worker process; False if it had to be put back."""
        gpus = self._assign_gpus(float(job.resources.gpus))
        if gpus is None:  # cannot happen after claim's fits(); never run it on a busy GPU
            self.svc.release(job.id, job.attempt)
            return False
        folder = jobs_dir(self.store) / job.id
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "job.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed when the child ends
        stamp = utcnow().strftime("%Y-%m-%d %H:%M:%S")
        devices = f" with GPUs {','.join(gpus)}" if gpus else ""
        log.write(
            f"=== attempt {job.attempt} on {self.worker}{devices} at {stamp} UTC ===\n".encode()
        )
        log.flush()
        env = {**os.environ, **store_env(self.store), "PYTHONUNBUFFERED": "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        cmd = [sys.executable, "-m", "modelworks.training.jobs.worker", job.id]
        cmd += ["--attempt", str(job.attempt)]
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
                env=env,
                cwd=str(folder),
            )
        except OSError as exc:
            log.close()
            self.svc.finish(job.id, job.attempt, "failed", error=f"Cannot start a worker: {exc}")
            return True
        self._children[job.id] = _Child(job, proc, log, log_path, gpus=gpus)
        self.started += 1
        self.svc.set_process(job.id, job.attempt, str(proc.pid), str(log_path))
        return True

    def _assign_gpus(self, need: float) -> dict[str, float] | None:
        """Devices for a job asking for ``need`` GPUs: whole free devices for 1 or more, a
        share of one device for a fraction. None if they are not free as one piece."""
        if need <= 0:
            return {}
        load = dict.fromkeys(self.gpu_ids, 0.0)
        for child in self._children.values():
            for device, share in child.gpus.items():
                load[device] = load.get(device, 0.0) + share
        if need < 1:
            fits = [d for d in self.gpu_ids if load[d] + need <= 1 + 1e-9]
            fits.sort(key=lambda d: -load[d])  # pack fractions onto busy devices first
            return {fits[0]: need} if fits else None
        free = [d for d in self.gpu_ids if load[d] == 0]
        whole = math.ceil(need - 1e-9)
        return dict.fromkeys(free[:whole], 1.0) if len(free) >= whole else None

    def _check(self, child: _Child, state: tuple[str, int, bool] | None) -> None:
        rc = child.proc.poll()
        if rc is not None:
            self._ended(child, rc)
            return
        if state is None or state[1] != child.job.attempt or state[0] in FINAL_STATUSES:
            self._kill(child)  # ended elsewhere (recovered, timed out): stop this copy
            return
        if state[2]:
            child.ending = "cancelled"
            self._kill(child)
            return
        timeout = child.job.timeout_s
        if timeout and time.monotonic() - child.started > timeout:
            child.ending = "timeout"
            self._kill(child)

    def _kill(self, child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGTERM)
        try:
            rc = child.proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            rc = child.proc.wait()
        self._ended(child, rc)

    def _ended(self, child: _Child, rc: int) -> None:
        self._children.pop(child.job.id, None)
        job = child.job
        note: str | None = None
        if child.ending == "cancelled":
            self.svc.finish(job.id, job.attempt, "cancelled", error="Cancelled.")
            note = "cancelled: the process group was killed"
        elif child.ending == "timeout":
            msg = f"Timed out after {job.timeout_s:g} s."
            self.svc.finish(job.id, job.attempt, "failed", error=msg)
            note = msg.lower() + " The process group was killed."
        elif child.ending != "released":
            # The worker reports its own end; if it could not (crashed, killed), we do.
            self.svc.finish(
                job.id,
                job.attempt,
                "failed",
                error=f"The worker process exited with code {rc} before reporting; see the log.",
            )
        if note:
            child.log.write(f"=== {note} ===\n".encode())
        child.log.close()
        try:
            self.svc.save_log(job.id, child.log_path)
        except Exception as exc:
            print(f"modelworks: keeping the log of job {job.id} failed: {exc}", file=sys.stderr)

    def _shutdown_children(self) -> None:
        for child in list(self._children.values()):
            child.ending = "released"
            self._kill(child)
            self.svc.release(child.job.id, child.job.attempt)


# ---- embedded mode: a detached runner process -------------------------------------------------
def ensure_local_runner(store: Store) -> subprocess.Popen[bytes] | None:
    """Start a detached runner (``modelworks jobs worker``) unless one holds the lock.

    Called after the job was committed; the runner checks the queue again after letting go
    of the lock, so a job is never left without a runner."""
    lock = runner_lock(store)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None  # a runner is active and will see the job
    lock.release()
    folder = jobs_dir(store)
    env = {**os.environ, **store_env(store), "PYTHONUNBUFFERED": "1"}
    with open(folder / "runner.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modelworks.cli.main", "jobs", "worker"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the submitting process and its terminal
            env=env,
            cwd=str(folder),
            close_fds=True,
        )


def runner_lifespan(store: Store) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that runs a :class:`JobRunner` thread while the server is up."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        runner = JobRunner(store).start()
        try:
            yield
        finally:
            runner.stop()

    return lifespan
