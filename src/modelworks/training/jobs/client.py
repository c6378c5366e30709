"""``ws.jobs``: submit work to the queue and watch it, on either transport.

>>> job = ws.jobs.submit("sleep", {"seconds": 2})  # doctest: +SKIP
>>> for line in ws.jobs.follow(job):  # doctest: +SKIP
...     print(line)
>>> ws.jobs.wait(job, timeout=60).status  # doctest: +SKIP
'succeeded'
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelworks.core.errors import ModelworksError
from modelworks.core.schemas import Page
from modelworks.training.jobs.schemas import JobOut, resources_of
from modelworks.training.jobs.transport import JobsBackend, jobs_backend

if TYPE_CHECKING:
    from modelworks.client import Workspace

JobRef = JobOut | str


class JobTimeout(ModelworksError):
    """``wait`` gave up before the job ended (the job itself goes on)."""

    status_code = 504
    code = "job_wait_timeout"
    title = "Job still running"
    exit_code = 9


def _job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


class Jobs:
    """The jobs of the workspace's project.

    On an embedded workspace a submitted job runs in a detached local runner process, so it
    keeps running after this program exits; on a remote one the server runs it (or Ray).
    """

    def __init__(self, workspace: Workspace, backend: JobsBackend | None = None) -> None:
        self._ws = workspace
        self._backend = backend

    @property
    def backend(self) -> JobsBackend:
        if self._backend is None:
            self._backend = jobs_backend(self._ws.tracking)
        return self._backend

    def submit(
        self,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
        memory_mb: int | None = None,
        timeout_s: float | None = None,
        max_retries: int = 0,
        executor: str | None = None,
    ) -> JobOut:
        """Queue a job of ``kind`` with its ``spec``; returns it (``status='queued'``)."""
        return self.backend.submit(
            self._ws.project,
            kind,
            spec,
            name=name,
            resources=resources_of({"cpus": cpus, "gpus": gpus, "memory_mb": memory_mb}),
            timeout_s=timeout_s,
            max_retries=max_retries,
            executor=executor,
        )

    def get(self, job: JobRef) -> JobOut:
        return self.backend.get(_job_id(job))

    def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> builtins.list[JobOut]:
        """The project's jobs, newest first (one page; see ``list_page`` for the token)."""
        return self.list_page(
            status=status, kind=kind, max_results=max_results, page_token=page_token
        ).items

    def list_page(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[JobOut]:
        """One page of the project's jobs, with the ``next_page_token`` of the next."""
        return self.backend.list(
            self._ws.project,
            status=status,
            kind=kind,
            max_results=max_results,
            page_token=page_token,
        )

    def cancel(self, job: JobRef) -> JobOut:
        return self.backend.cancel(_job_id(job))

    def logs(self, job: JobRef, offset: int = 0) -> tuple[str, int]:
        """The log from byte ``offset``: ``(text, next_offset)``."""
        chunk = self.backend.logs(_job_id(job), offset)
        return chunk.text, chunk.next_offset

    def wait(self, job: JobRef, timeout: float | None = None, poll_s: float = 0.5) -> JobOut:
        """Block until the job ends; returns it. Raises JobTimeout after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.get(job)
            if current.done:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(
                    f"Job {current.id} is still {current.status} after {timeout:g} s; "
                    "it goes on running. Wait again, or cancel it."
                )
            time.sleep(poll_s)

    def follow(self, job: JobRef, poll_s: float = 0.5) -> Iterator[str]:
        """Yield the job's log line by line as it is written, until the job ends."""
        job_id, offset, pending = _job_id(job), 0, ""
        while True:
            chunk = self.backend.logs(job_id, offset)
            offset = chunk.next_offset
            pending += chunk.text
            *lines, pending = pending.split("\n")
            yield from lines
            if chunk.complete:
                if pending:
                    yield pending
                return
            if not chunk.text:
                time.sleep(poll_s)

    def __repr__(self) -> str:
        return f"<Jobs of project {self._ws.project!r}>"
