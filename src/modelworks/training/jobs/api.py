"""REST routes for jobs: thin adapters over JobService."""

from fastapi import APIRouter, Depends, Query, Request

from modelworks.core.auth import Principal, Role
from modelworks.core.schemas import Page
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.training.jobs.schemas import JobLogs, JobOut, JobStatus, JobSubmit
from modelworks.training.jobs.service import MAX_LOG_CHUNK, JobService

router = APIRouter(prefix="/api/v1", tags=["jobs"])


def jobs(request: Request) -> JobService:
    svc: JobService = request.app.state.jobs
    return svc


@router.post(
    "/projects/{project}/jobs", status_code=201, response_model=JobOut, **auth_rule(Role.EDITOR)
)
def submit_job(
    project: str,
    body: JobSubmit,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> JobOut:
    return svc.submit(
        principal,
        project,
        body.kind,
        body.spec,
        name=body.name,
        resources=body.resources,
        timeout_s=body.timeout_s,
        max_retries=body.max_retries,
        executor=body.executor,
    )


@router.get("/projects/{project}/jobs", response_model=Page[JobOut], **auth_rule(Role.VIEWER))
def list_jobs(
    project: str,
    status: JobStatus | None = None,
    kind: str | None = None,
    max_results: int = Query(100, ge=1, le=10_000),
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> Page[JobOut]:
    return svc.list(
        principal, project, status=status, kind=kind, max_results=max_results, page_token=page_token
    )


@router.get("/jobs/{job_id}", response_model=JobOut, **auth_rule(Role.VIEWER))
def get_job(
    job_id: str,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> JobOut:
    return svc.get(principal, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, **auth_rule(Role.EDITOR))
def cancel_job(
    job_id: str,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> JobOut:
    return svc.cancel(principal, job_id)


@router.get("/jobs/{job_id}/logs", response_model=JobLogs, **auth_rule(Role.VIEWER))
def job_logs(
    job_id: str,
    offset: int = Query(0, ge=0),
    limit: int = Query(MAX_LOG_CHUNK, ge=1, le=MAX_LOG_CHUNK),
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> JobLogs:
    return svc.logs(principal, job_id, offset, limit)
