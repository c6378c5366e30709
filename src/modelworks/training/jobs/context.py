"""What a job function receives: :class:`JobContext`.

A job function is ``fn(ctx: JobContext) -> dict``. It runs in its own process (a local
worker subprocess, or a Ray job's entrypoint), acting as the principal who submitted it.
Whatever it prints goes to the job's log, like :meth:`JobContext.log`; the dict it returns
becomes the job's ``result`` (it must be JSON-ready). An exception fails the attempt (the
job is retried while ``max_retries`` allows); returning after :meth:`JobContext.cancelled`
turned true ends the job as cancelled.

>>> def my_job(ctx: JobContext) -> dict:  # doctest: +SKIP
...     for epoch in range(ctx.spec.get("epochs", 10)):
...         if ctx.cancelled():
...             return {"stopped_at": epoch}
...         ctx.progress(epoch / 10, f"epoch {epoch}")
...     return {"epochs": 10}
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.config import Settings
    from modelworks.core.store import Store

PROGRESS_EVERY_S = 0.5  # progress reaches the database at most this often (and at 100%)


class JobContext:
    """The running job: its identity and spec, the store, and the log/progress/cancel hooks.

    Attributes: ``job_id``, ``project`` (name), ``project_id``, ``kind``, ``name``, ``spec``
    (the submitted dict), ``resources`` (``{"cpus", "gpus", "memory_mb"}``), ``attempt``
    (1 for the first run, 2 for the first retry, ...), ``principal`` (who submitted it; pass
    it to service calls), ``store`` (the same store the job was submitted to), ``workdir``
    (a scratch folder of this job, kept after it ends).
    """

    def __init__(
        self,
        *,
        job_id: str,
        project: str,
        project_id: str,
        kind: str,
        name: str,
        spec: dict[str, Any],
        resources: dict[str, Any],
        attempt: int,
        principal: Principal,
        store: Store,
        workdir: Path,
        report_progress: Callable[[float, str], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self.job_id = job_id
        self.project = project
        self.project_id = project_id
        self.kind = kind
        self.name = name
        self.spec = spec
        self.resources = resources
        self.attempt = attempt
        self.principal = principal
        self.store = store
        self.workdir = workdir
        self._report_progress = report_progress
        self._cancel = cancel_event or threading.Event()
        self._last_progress = 0.0
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self.store.settings

    def log(self, message: str) -> None:
        """Write one line to the job's log, stamped with the UTC time."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            sys.stdout.write(f"{stamp} {message}\n")
            sys.stdout.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the job is (0.0-1.0), with a short message; also logged."""
        fraction = min(1.0, max(0.0, float(fraction)))
        self.log(f"[{fraction:6.1%}] {message}".rstrip())
        now = time.monotonic()
        if self._report_progress is None:
            return
        if fraction >= 1.0 or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._report_progress(fraction, message)

    def cancelled(self) -> bool:
        """True once someone asked to cancel the job: stop soon and return."""
        return self._cancel.is_set()

    def __repr__(self) -> str:
        return f"<JobContext {self.kind} job {self.job_id} attempt {self.attempt}>"
