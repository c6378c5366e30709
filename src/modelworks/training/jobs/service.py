"""Job service: the one implementation of the job queue's rules.

REST, CLI and SDK call the principal methods (``submit``, ``get``, ``list``, ``cancel``,
``logs``): each is one transaction, authorised by the caller's role in the job's project
(editor to submit and cancel, viewer to read), and each mutation leaves one audit record in
that transaction. The runner and the worker call the system methods (``claim_next``,
``begin``, ``heartbeat``, ``finish``, ``recover_stale``, ...), which move a job through

    queued -> running -> succeeded | failed | cancelled
                  \\-> queued again (a failed attempt while max_retries allows)

Every transition of a running job names the attempt it belongs to and happens only if the
job is still in that attempt, so a worker that lost its job (timed out, recovered after a
stale heartbeat, cancelled) can never overwrite what happened since.
"""

from __future__ import annotations

import builtins
import inspect
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from modelworks.core import audit
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from modelworks.core.ids import new_id, utcnow
from modelworks.core.schemas import Page, check_page_size, decode_page_token, encode_page_token
from modelworks.core.store import Store
from modelworks.governance.access import authorize, require_project
from modelworks.governance.models import Project
from modelworks.training.jobs import kinds, ray_executor
from modelworks.training.jobs.models import EXECUTORS, FINAL_STATUSES, JOB_STATUSES, Job
from modelworks.training.jobs.schemas import JobLogs, JobOut, Resources, resources_of

SYSTEM = Principal(username="system:jobs", via="system")
STALE_AFTER_S = 60.0  # a running job without a heartbeat for this long lost its worker
MAX_LOG_CHUNK = 1024 * 1024
LOG_SETTLE_S = 10.0


def host_name() -> str:
    return socket.gethostname()


def jobs_dir(store: Store) -> Path:
    return store.settings.home_path / "jobs"


def store_env(store: Store) -> dict[str, str]:
    """Environment variables that make a worker process open this same store."""
    s = store.settings
    env = {
        "MODELWORKS_HOME": str(s.home_path),
        "MODELWORKS_DATABASE_URL": s.effective_database_url,
        "MODELWORKS_ARTIFACT_URL": s.effective_artifact_url,
    }
    optional = {
        "MODELWORKS_S3_ENDPOINT_URL": s.s3_endpoint_url,
        "MODELWORKS_S3_REGION": s.s3_region,
        "MODELWORKS_S3_ACCESS_KEY_ID": s.s3_access_key_id,
        "MODELWORKS_S3_SECRET_ACCESS_KEY": (
            s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None
        ),
        "MODELWORKS_RAY_ADDRESS": s.ray_address,
        "MODELWORKS_RAY_DASHBOARD_URL": s.ray_dashboard_url,
    }
    env.update({k: v for k, v in optional.items() if v})
    return env


def local_gpu_ids() -> list[str]:
    """The GPUs this machine offers to local jobs: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"],  # noqa: S607 - found on PATH like a user would
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(lines))]


def local_gpu_count() -> int:
    return len(local_gpu_ids())


def _job_out(job: Job, project: Project | str) -> JobOut:
    return JobOut(
        id=job.id,
        project_id=job.project_id,
        project=project if isinstance(project, str) else project.name,
        kind=job.kind,
        name=job.name,
        spec=job.spec or {},
        status=job.status,
        resources=Resources(**(job.resources or {})),
        executor=job.executor,
        max_retries=job.max_retries,
        attempt=job.attempt,
        timeout_s=job.timeout_s,
        cancel_requested=job.cancel_requested,
        external_id=job.external_id,
        worker=job.worker,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        progress=job.progress,
        progress_message=job.progress_message,
        error=job.error,
        result=job.result,
        log_sha256=job.log_sha256,
    )


def _utf8_len(lead: int) -> int:
    return 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _cut(data: bytes, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of ``data`` (at least one character), never splitting a UTF-8
    character; and whether anything is left after them."""
    if len(data) <= limit:
        return data, False
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # data[end] continues a character
        end -= 1
    if end == 0:
        end = min(len(data), _utf8_len(data[0]))
    return data[:end], len(data) > end


@dataclass(frozen=True)
class Submission:
    """What a kind's ``validate_spec(spec, submission)`` may look at: who submits, where."""

    store: Store
    principal: Principal
    project: str


class JobService:
    """The job queue. ``autostart_runner``: submitting a local job starts a detached local
    runner when none is running (embedded mode; the server runs its own)."""

    def __init__(self, store: Store, *, autostart_runner: bool = False) -> None:
        self.store = store
        self.autostart_runner = autostart_runner

    # ---- principal calls -----------------------------------------------------------------
    def _job(
        self, s: Session, principal: Principal, job_id: str, need: Role, action: str
    ) -> tuple[Job, Project]:
        row = s.execute(
            select(Job, Project).join(Project, Project.id == Job.project_id).where(Job.id == job_id)
        ).one_or_none()
        if row is None:
            raise NotFound(f"Job {job_id!r} does not exist; find jobs with `modelworks jobs list`.")
        job, project = row
        authorize(s, principal, project, need, action)
        return job, project

    def submit(
        self,
        principal: Principal,
        project: str,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        resources: Resources | dict[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int = 0,
        executor: str | None = None,
    ) -> JobOut:
        """Queue a job of ``kind`` (see :data:`~modelworks.training.jobs.kinds.KINDS`).

        ``executor`` defaults to ``ray`` when MODELWORKS_RAY_ADDRESS is set, else ``local``.
        """
        if not isinstance(spec or {}, dict):
            raise InvalidInput("A job's spec is a JSON object (a dict).")
        try:
            spec = json.loads(json.dumps(spec or {}, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"A job's spec must be plain JSON: {exc}.") from None
        res = resources_of(resources)
        executor = executor or ("ray" if self.store.settings.ray_address else "local")
        if executor not in EXECUTORS:
            raise InvalidInput(f"Executor {executor!r} is not known; use local or ray.")
        if executor == "ray" and not self.store.settings.ray_address:
            raise InvalidInput(
                "The ray executor needs a cluster: set MODELWORKS_RAY_ADDRESS "
                "(and MODELWORKS_RAY_DASHBOARD_URL if its job API is not on port 8265)."
            )
        if timeout_s is not None and timeout_s <= 0:
            raise InvalidInput(f"timeout_s must be positive; got {timeout_s}.")
        if not 0 <= max_retries <= 100:
            raise InvalidInput(f"max_retries must be between 0 and 100; got {max_retries}.")
        if name is not None and not 1 <= len(name) <= 200:
            raise InvalidInput("A job name has 1 to 200 characters.")
        target = kinds.entrypoint(kind)
        fn = kinds.resolve(kind, target)
        validate = getattr(fn, "validate_spec", None)
        if callable(validate):
            # A validator taking a second argument also gets the submission (store, caller,
            # project), so it can check the spec against what the project holds.
            if len(inspect.signature(validate).parameters) > 1:
                validate(spec, Submission(self.store, principal, project))
            else:
                validate(spec)
        if executor == "local":
            self._check_local_fit(res)
        with self.store.transaction() as s:
            p = require_project(s, principal, project, Role.EDITOR, "Submitting jobs")
            job_id = new_id()
            job = Job(
                id=job_id,
                project_id=p.id,
                kind=kind,
                entrypoint=target,
                name=(name or f"{kind}-{job_id[-8:].lower()}")[:200],
                spec=spec,
                status="queued",
                resources=res.model_dump(),
                executor=executor,
                max_retries=max_retries,
                attempt=0,
                timeout_s=timeout_s,
                cancel_requested=False,
                created_by=principal.actor,
                principal={
                    "username": principal.username,
                    "user_id": principal.user_id,
                    "superuser": principal.superuser,
                    "via": principal.via,
                },
                created_at=utcnow(),
            )
            s.add(job)
            s.flush()
            audit.record(
                s,
                principal,
                "job.submit",
                "job",
                job.id,
                project_id=p.id,
                changes={"kind": kind, "executor": executor, "resources": job.resources},
            )
            out = _job_out(job, p)
        if executor == "ray":
            return self._submit_to_ray(job_id) or out
        if self.autostart_runner:
            from modelworks.training.jobs.runner import ensure_local_runner

            ensure_local_runner(self.store)
        return out

    def _check_local_fit(self, res: Resources) -> None:
        cores = os.cpu_count() or 1
        if res.cpus > cores:
            raise InvalidInput(
                f"The job asks for {res.cpus:g} CPUs but this machine has {cores}; ask for "
                "fewer, or run it on a Ray cluster (MODELWORKS_RAY_ADDRESS)."
            )
        if res.gpus > 0 and res.gpus > local_gpu_count():
            raise InvalidInput(
                f"The job asks for {res.gpus:g} GPUs but this machine has "
                f"{local_gpu_count()}; run it on a Ray cluster (MODELWORKS_RAY_ADDRESS)."
            )

    def get(self, principal: Principal, job_id: str) -> JobOut:
        with self.store.read() as s:
            job, p = self._job(s, principal, job_id, Role.VIEWER, "Reading jobs")
            out = _job_out(job, p)
        if out.executor == "ray" and not out.done:
            self.reconcile_ray(job_id)
            with self.store.read() as s:
                job, p = self._job(s, principal, job_id, Role.VIEWER, "Reading jobs")
                out = _job_out(job, p)
        return out

    def list(
        self,
        principal: Principal,
        project: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[JobOut]:
        """The project's jobs, newest first, optionally of one status and kind."""
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        if status is not None and status not in JOB_STATUSES:
            raise InvalidInput(
                f"Job status {status!r} is not valid; use {', '.join(JOB_STATUSES)}."
            )
        with self.store.read() as s:
            p = require_project(s, principal, project, Role.VIEWER, "Listing jobs")
            stmt = select(Job).where(Job.project_id == p.id)
            if status is not None:
                stmt = stmt.where(Job.status == status)
            if kind is not None:
                stmt = stmt.where(Job.kind == kind)
            rows = s.scalars(
                stmt.order_by(Job.created_at.desc(), Job.id.desc())
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            items = [_job_out(j, p) for j in rows[:max_results]]
            nxt = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return Page[JobOut](items=items, next_page_token=nxt)

    def cancel(self, principal: Principal, job_id: str) -> JobOut:
        """Cancel a job: a queued one at once; a running one is stopped by its runner (local)
        or by Ray. Cancelling a cancelled job does nothing; a finished one is a conflict."""
        with self.store.transaction() as s:
            job, p = self._job(s, principal, job_id, Role.EDITOR, "Cancelling jobs")
            if job.status == "cancelled":
                return _job_out(job, p)
            if job.status in FINAL_STATUSES:
                raise Conflict(f"Job {job_id} already {job.status}; there is nothing to cancel.")
            job.cancel_requested = True
            if job.status == "queued" and job.executor == "local":
                job.status = "cancelled"
                job.finished_at = utcnow()
            audit.record(s, principal, "job.cancel", "job", job.id, project_id=p.id, changes={})
            out = _job_out(job, p)
            attempt, sid = job.attempt, job.external_id
        if out.executor == "ray":
            if sid:
                ray_executor.stop(self.store.settings, sid)
            self.finish(job_id, attempt, "cancelled", error="Cancelled.")
            return self.get(principal, job_id)
        return out

    def logs(
        self, principal: Principal, job_id: str, offset: int = 0, limit: int = MAX_LOG_CHUNK
    ) -> JobLogs:
        """The job's log from byte ``offset`` (at most ``limit`` bytes); poll again from
        ``next_offset`` to follow a running job."""
        if offset < 0:
            raise InvalidInput(f"offset must be 0 or more; got {offset}.")
        limit = max(1, min(limit, MAX_LOG_CHUNK))
        with self.store.read() as s:
            job, _ = self._job(s, principal, job_id, Role.VIEWER, "Reading job logs")
            status, executor, sid = job.status, job.executor, job.external_id
            path, sha, finished = job.log_path, job.log_sha256, job.finished_at
        if executor == "ray":
            return self._ray_logs(job_id, status, sid, sha, offset, limit)
        # A local log is whole once its runner kept it in the artifact store (the worker
        # reports its end a moment before its process exits), or surely a while after.
        settled = bool(sha) or (
            finished is not None and (utcnow() - finished).total_seconds() > LOG_SETTLE_S
        )
        data = b""
        if path and Path(path).is_file():
            with open(path, "rb") as f:
                f.seek(offset)
                chunk, more = _cut(f.read(limit + 4), limit)
            return self._log_slice(job_id, status, offset, chunk, more, settled)
        if sha:
            data = self.store.artifacts.get_bytes(sha)
        chunk, more = _cut(data[offset : offset + limit + 4], limit)
        return self._log_slice(job_id, status, offset, chunk, more, settled)

    def _ray_logs(
        self, job_id: str, status: str, sid: str | None, sha: str | None, offset: int, limit: int
    ) -> JobLogs:
        """A Ray job's log comes from Ray; once Ray too has seen it end, it is kept in the
        artifact store (a cluster forgets its jobs) and read from there."""
        settled = True
        if sha:
            data = self.store.artifacts.get_bytes(sha)
        elif sid:
            ended = status in FINAL_STATUSES and (
                ray_executor.status(self.store.settings, sid)[0] in FINAL_STATUSES
            )
            data = ray_executor.logs(self.store.settings, sid).encode()
            settled = ended
            if ended:
                info = self.store.artifacts.put_bytes(data)
                with self.store.transaction() as s:
                    job = s.get(Job, job_id)
                    if job is not None and job.external_id == sid:
                        job.log_sha256 = info.sha256
        else:
            data = b""  # cancelled before it ever reached Ray
        chunk, more = _cut(data[offset : offset + limit + 4], limit)
        return self._log_slice(job_id, status, offset, chunk, more, settled)

    @staticmethod
    def _log_slice(
        job_id: str, status: str, offset: int, chunk: bytes, more: bool, settled: bool
    ) -> JobLogs:
        return JobLogs(
            job_id=job_id,
            status=status,
            offset=offset,
            next_offset=offset + len(chunk),
            text=chunk.decode("utf-8", errors="replace"),
            complete=status in FINAL_STATUSES and settled and not more,
        )

    # ---- system calls: the runner and the worker -----------------------------------------
    def claim_next(
        self,
        worker: str,
        *,
        free_cpus: float,
        free_gpus: float = 0.0,
        fits: Callable[[dict[str, Any]], bool] | None = None,
    ) -> JobOut | None:
        """Atomically take the oldest queued local job that fits in the free resources and
        mark it running (a new attempt). PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so runners
        never wait on each other nor take the same job; SQLite: the write lock of the
        transaction (``BEGIN IMMEDIATE``)."""
        if not self.has_queued_local():
            return None  # the common case, answered without taking SQLite's write lock
        pg = self.store.db.dialect == "postgresql"
        with self.store.transaction() as s:
            candidates = s.execute(
                select(Job.id, Job.resources)
                .where(Job.status == "queued", Job.executor == "local")
                .order_by(Job.created_at, Job.id)
                .limit(50)
            ).all()
            for job_id, res in candidates:
                res = res or {}
                if float(res.get("cpus") or 1) > free_cpus + 1e-9:
                    continue
                if float(res.get("gpus") or 0) > free_gpus + 1e-9:
                    continue
                if fits is not None and not fits(res):
                    continue
                # Lock just this row; one another runner holds is skipped, not waited for.
                stmt: Select[Any] = select(Job).where(Job.id == job_id, Job.status == "queued")
                if pg:
                    stmt = stmt.with_for_update(skip_locked=True)
                job = s.scalar(stmt)
                if job is None:
                    continue
                now = utcnow()
                job.status = "running"
                job.attempt += 1
                job.started_at = now
                job.heartbeat_at = now
                job.worker = worker
                job.external_id = None
                job.error = None
                job.progress = None
                job.progress_message = None
                audit.record(
                    s,
                    SYSTEM,
                    "job.start",
                    "job",
                    job.id,
                    project_id=job.project_id,
                    changes={"attempt": job.attempt, "worker": worker},
                )
                project = s.get(Project, job.project_id)
                assert project is not None
                return _job_out(job, project)
        return None

    def set_process(self, job_id: str, attempt: int, external_id: str, log_path: str) -> None:
        """Record the worker process (pid) and the log file of a claimed attempt."""
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None and job.attempt == attempt:
                job.external_id = external_id
                job.log_path = log_path

    def begin(self, job_id: str, attempt: int | None, worker: str) -> JobOut | None:
        """The worker starts an attempt: a local job is already running (claimed); a Ray job
        goes from queued to running here. None if the attempt is no longer the job's."""
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"Job {job_id!r} does not exist in this store.")
            attempt = job.attempt if attempt is None else attempt
            if job.attempt != attempt or job.status in FINAL_STATUSES:
                return None
            if job.status == "queued":
                if job.executor != "ray":
                    return None  # a local job is claimed by a runner, never begun directly
                now = utcnow()
                job.status = "running"
                job.started_at = now
                job.heartbeat_at = now
                job.worker = worker
                audit.record(
                    s,
                    SYSTEM,
                    "job.start",
                    "job",
                    job.id,
                    project_id=job.project_id,
                    changes={"attempt": job.attempt, "worker": worker},
                )
            project = s.get(Project, job.project_id)
            assert project is not None
            return _job_out(job, project)

    def heartbeat(
        self, job_id: str, attempt: int, progress: tuple[float, str] | None = None
    ) -> bool | None:
        """The worker is alive. Returns whether a cancel was requested, or None if the
        attempt is no longer running (the worker should stop)."""
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or job.attempt != attempt or job.status != "running":
                return None
            job.heartbeat_at = utcnow()
            if progress is not None:
                job.progress, job.progress_message = progress[0], progress[1][:2000]
            return job.cancel_requested

    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: str,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> JobOut | None:
        """End an attempt with ``outcome`` (succeeded, failed or cancelled). A failed attempt
        is queued again while ``attempt <= max_retries`` (and no cancel was asked for).
        Returns the job, or None when the attempt was already ended by someone else."""
        if outcome not in FINAL_STATUSES:
            raise InvalidInput(f"An attempt ends succeeded, failed or cancelled; not {outcome!r}.")
        resubmit = False
        with self.store.transaction() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.attempt != attempt:
                return None
            # A Ray attempt may end before it started (Ray could not run it); a local one is
            # queued again only by this method, so a queued local job's attempt has ended.
            if not (job.status == "running" or (job.status == "queued" and job.executor == "ray")):
                return None
            if outcome == "failed" and job.cancel_requested:
                outcome, error = "cancelled", error or "Cancelled."
            retry = outcome == "failed" and job.attempt <= job.max_retries
            now = utcnow()
            job.error = error[:20_000] if error else None
            if retry:
                job.status = "queued"
                job.worker = None
                job.heartbeat_at = None
                resubmit = job.executor == "ray"
            else:
                job.status = outcome
                job.finished_at = now
                job.result = result if outcome == "succeeded" else job.result
                if outcome == "succeeded":
                    job.progress = 1.0
            audit.record(
                s,
                SYSTEM,
                "job.retry" if retry else f"job.{outcome}",
                "job",
                job.id,
                project_id=job.project_id,
                changes={"attempt": attempt, "error": (error or "")[:500]},
            )
            project = s.get(Project, job.project_id)
            assert project is not None
            out = _job_out(job, project)
        if resubmit:
            return self._submit_to_ray(job_id) or out
        return out

    def release(self, job_id: str, attempt: int) -> None:
        """Put a running attempt back in the queue without counting it (its runner stopped)."""
        with self.store.transaction() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.attempt != attempt or job.status != "running":
                return
            if job.cancel_requested:
                job.status, job.finished_at, job.error = "cancelled", utcnow(), "Cancelled."
            else:
                job.status, job.attempt, job.worker, job.heartbeat_at = (
                    "queued",
                    attempt - 1,
                    None,
                    None,
                )
            audit.record(
                s,
                SYSTEM,
                "job.release",
                "job",
                job.id,
                project_id=job.project_id,
                changes={"attempt": attempt},
            )

    def save_log(self, job_id: str, path: Path) -> str | None:
        """Keep the log file in the artifact store; returns its sha256."""
        if not path.is_file():
            return None
        info = self.store.artifacts.put_file(path)
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.log_sha256 = info.sha256
                job.log_path = str(path)
        return info.sha256

    def recover_stale(self, stale_after_s: float = STALE_AFTER_S) -> builtins.list[JobOut]:
        """Running jobs whose worker stopped sending heartbeats: requeued while retries
        remain, else failed (cancelled if a cancel was asked for)."""
        cutoff = utcnow() - timedelta(seconds=stale_after_s)
        with self.store.read() as s:
            stale = [
                (j.id, j.attempt, j.heartbeat_at)
                for j in s.scalars(
                    select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
                )
            ]
        out: builtins.list[JobOut] = []
        for job_id, attempt, beat in stale:
            msg = (
                f"The worker stopped sending heartbeats (last at {beat:%Y-%m-%d %H:%M:%S} UTC); "
                "it probably died."
            )
            with self.store.read() as s:
                job = s.get(Job, job_id)
                if job is None or job.heartbeat_at is None or job.heartbeat_at >= cutoff:
                    continue
                executor, sid = job.executor, job.external_id
            if executor == "ray" and sid:
                ray_executor.stop(self.store.settings, sid)
            done = self.finish(job_id, attempt, "failed", error=msg)
            if done is not None:
                out.append(done)
        return out

    def job_states(self, job_ids: Iterable[str]) -> dict[str, tuple[str, int, bool]]:
        """id -> (status, attempt, cancel requested), in one read (the runner's checks)."""
        ids = builtins.list(job_ids)
        if not ids:
            return {}
        with self.store.read() as s:
            rows = s.execute(
                select(Job.id, Job.status, Job.attempt, Job.cancel_requested).where(Job.id.in_(ids))
            ).all()
        return {str(r[0]): (str(r[1]), int(r[2]), bool(r[3])) for r in rows}

    def job_state(self, job_id: str) -> tuple[str, int, bool] | None:
        """(status, attempt, cancel requested) of a job, for the runner's checks."""
        with self.store.read() as s:
            row = s.execute(
                select(Job.status, Job.attempt, Job.cancel_requested).where(Job.id == job_id)
            ).one_or_none()
        return None if row is None else (str(row[0]), int(row[1]), bool(row[2]))

    def has_queued_local(self) -> bool:
        with self.store.read() as s:
            found = s.scalar(
                select(Job.id).where(Job.status == "queued", Job.executor == "local").limit(1)
            )
        return found is not None

    # ---- ray -----------------------------------------------------------------------------
    def _submit_to_ray(self, job_id: str) -> JobOut | None:
        """Submit the job's next attempt to Ray (the job is queued)."""
        with self.store.transaction() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.status != "queued" or job.executor != "ray":
                return None
            job.attempt += 1
            attempt, resources = job.attempt, dict(job.resources or {})
        local = urlsplit_host(ray_executor.dashboard_url(self.store.settings)) in LOCAL_HOSTS
        try:
            sid = ray_executor.submit(
                self.store.settings,
                job_id,
                attempt,
                resources,
                store_env(self.store),
                # A cluster on this machine runs this machine's Python (with Modelworks).
                python=sys.executable if local else "python",
            )
        except ServiceUnavailable as exc:
            self.finish(job_id, attempt, "failed", error=exc.detail)
            raise
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None and job.attempt == attempt:
                job.external_id = sid
        with self.store.read() as s:
            job = s.get(Job, job_id)
            project = s.get(Project, job.project_id) if job else None
            return _job_out(job, project) if job and project else None

    def reconcile_ray(self, job_id: str | None = None) -> None:
        """Settle Ray jobs from Ray's own status: ones that died without reporting, and
        ones past their timeout (stopped, then failed)."""
        with self.store.read() as s:
            stmt = select(Job).where(Job.executor == "ray", Job.status.in_(("queued", "running")))
            if job_id is not None:
                stmt = stmt.where(Job.id == job_id)
            rows = [
                (j.id, j.attempt, j.external_id, j.started_at, j.timeout_s, j.status)
                for j in s.scalars(stmt)
            ]
        now = utcnow()
        for jid, attempt, sid, started, timeout_s, status in rows:
            if not sid:
                continue
            late = bool(timeout_s and started and (now - started).total_seconds() > timeout_s)
            if status == "running" and late:
                ray_executor.stop(self.store.settings, sid)
                self.finish(jid, attempt, "failed", error=f"Timed out after {timeout_s:g} s.")
                continue
            try:
                ray_status, message = ray_executor.status(self.store.settings, sid)
            except Exception as exc:  # Ray unreachable now: try again later
                print(f"modelworks: Ray status of {sid}: {exc}", file=sys.stderr, flush=True)
                continue
            if ray_status in FINAL_STATUSES:
                # The worker reports its own end first; Ray's word settles a job that died.
                state = self.job_state(jid)
                if state is not None and state[1] == attempt and state[0] not in FINAL_STATUSES:
                    outcome = "cancelled" if ray_status == "cancelled" else "failed"
                    self.finish(
                        jid,
                        attempt,
                        outcome,
                        error=f"Ray ended the job ({ray_status}) before it reported: {message}",
                    )


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", host_name()})


def urlsplit_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""
