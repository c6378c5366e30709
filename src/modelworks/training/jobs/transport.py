"""The jobs SDK's two transports: embedded (JobService in-process) and remote (REST).

Both implement :class:`JobsBackend`, the principal methods of
:class:`~modelworks.training.jobs.service.JobService` without the principal; they return
the same Pydantic objects and raise the same typed errors, so
:mod:`modelworks.training.jobs.client` never knows which one it talks to.

>>> backend = embedded_jobs(Store())  # doctest: +SKIP
>>> backend = RemoteJobs(HttpClient("http://127.0.0.1:8080", token="mw_..."))  # doctest: +SKIP
>>> backend.get("01J...").status  # doctest: +SKIP
'running'
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol, cast

from modelworks.core.schemas import Page
from modelworks.training.jobs.schemas import JobLogs, JobOut, Resources, resources_of
from modelworks.transport import API, HttpClient, PrincipalBound, _seg, protocol_methods

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store


class JobsBackend(Protocol):
    """Every job operation, as the SDK sees it: JobService minus the principal."""

    def submit(
        self,
        project: str,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        resources: Resources | dict[str, Any] | None = None,
        timeout_s: float | None = None,
        max_retries: int = 0,
        executor: str | None = None,
    ) -> JobOut: ...

    def get(self, job_id: str) -> JobOut: ...

    def list(
        self,
        project: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[JobOut]: ...

    def cancel(self, job_id: str) -> JobOut: ...

    def logs(self, job_id: str, offset: int = 0, limit: int = 1024 * 1024) -> JobLogs: ...


class EmbeddedJobs(PrincipalBound):
    """JobService with the principal bound; submitting starts a detached local runner."""

    methods = protocol_methods(JobsBackend)

    def __init__(self, store: Store, principal: Principal) -> None:
        self.store = store
        self.principal = principal

    @functools.cached_property
    def service(self) -> Any:
        from modelworks.training.jobs.service import JobService

        return JobService(self.store, autostart_runner=True)


def embedded_jobs(store: Store, principal: Principal | None = None) -> JobsBackend:
    """The jobs backend on ``store``, acting as ``principal`` (default: the OS user)."""
    from modelworks.core.auth import local_principal

    return cast(JobsBackend, EmbeddedJobs(store, principal or local_principal()))


class RemoteJobs:
    """The jobs backend over the REST API of a Modelworks server."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def submit(
        self,
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
        res = resources_of(resources)
        body = {
            "kind": kind,
            "spec": dict(spec or {}),
            "name": name,
            "resources": res.model_dump(),
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "executor": executor,
        }
        resp = self.http.request(
            "POST", f"{API}/projects/{_seg(project)}/jobs", idempotent=False, json_body=body
        )
        return JobOut.model_validate(resp.json())

    def get(self, job_id: str) -> JobOut:
        resp = self.http.request("GET", f"{API}/jobs/{_seg(job_id)}", idempotent=True)
        return JobOut.model_validate(resp.json())

    def list(
        self,
        project: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[JobOut]:
        params: dict[str, Any] = {"max_results": max_results}
        for key, value in (("status", status), ("kind", kind), ("page_token", page_token)):
            if value is not None:
                params[key] = value
        resp = self.http.request(
            "GET", f"{API}/projects/{_seg(project)}/jobs", idempotent=True, params=params
        )
        return Page[JobOut].model_validate(resp.json())

    def cancel(self, job_id: str) -> JobOut:
        # Cancelling twice is harmless, so a lost answer may be retried.
        resp = self.http.request("POST", f"{API}/jobs/{_seg(job_id)}/cancel", idempotent=True)
        return JobOut.model_validate(resp.json())

    def logs(self, job_id: str, offset: int = 0, limit: int = 1024 * 1024) -> JobLogs:
        resp = self.http.request(
            "GET",
            f"{API}/jobs/{_seg(job_id)}/logs",
            idempotent=True,
            params={"offset": offset, "limit": limit},
        )
        return JobLogs.model_validate(resp.json())


def jobs_backend(tracking: Any) -> JobsBackend:
    """The jobs backend beside a workspace's tracking backend (same store or server)."""
    http = getattr(tracking, "http", None)
    if isinstance(http, HttpClient):
        return cast(JobsBackend, RemoteJobs(http))
    return cast(JobsBackend, EmbeddedJobs(tracking.service.store, tracking.principal))
