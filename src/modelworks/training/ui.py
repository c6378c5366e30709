"""Training pages: a project's jobs, one job with its live log, and the dataset page's form.

Thin adapters over :class:`~modelworks.training.jobs.service.JobService`, rendered in the
shared layout of :mod:`modelworks.server.pages`; the app includes :data:`router`. The job
page follows a queued or running job with ``static/js/jobs.js``, which polls the REST API
(``/api/v1/jobs/{id}`` and its ``/logs?offset=``); the "Train a model" form on a dataset
version's page (:func:`train_choices`) submits a ``train`` or ``automl`` job through the
same API with ``static/js/train.js``. No job rule lives here.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import NotFound
from modelworks.core.ids import utcnow
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.server.pages import page_router, render, segment
from modelworks.training.jobs.api import jobs
from modelworks.training.jobs.models import JOB_STATUSES
from modelworks.training.jobs.schemas import JobOut, JobStatus
from modelworks.training.jobs.service import JobService

JOBS_PAGE_SIZE = 50
LOG_CHUNK = 256 * 1024  # the log the page is rendered with; the script fetches the rest

# The choices of the form. They name what automl/families.py (FAMILIES) and
# automl/metrics.py (METRICS) define; importing those here would load scikit-learn with
# every page. tests/browser/test_training_ui.py checks that the lists agree.
MODELS = (
    "lightgbm",
    "xgboost",
    "hist_gradient_boosting",
    "random_forest",
    "extra_trees",
    "linear",
    "mlp",
)
METRICS = (
    ("Classification", ("roc_auc", "log_loss", "accuracy", "balanced_accuracy", "f1")),
    ("Regression", ("rmse", "mse", "mae", "r2")),
)
DEFAULT_TIME_BUDGET_S = 60

router = page_router()


@dataclass(frozen=True)
class TrainChoices:
    models: tuple[str, ...] = MODELS
    metrics: tuple[tuple[str, tuple[str, ...]], ...] = METRICS
    time_budget: int = DEFAULT_TIME_BUDGET_S


def train_choices() -> TrainChoices:
    """What the "Train a model" form offers (the dataset version page renders it)."""
    return TrainChoices()


def jobs_href(project: str) -> str:
    return f"/projects/{segment(project)}/jobs"


def job_href(project: str, job_id: str) -> str:
    return f"{jobs_href(project)}/{segment(job_id)}"


def duration_s(job: JobOut, now: datetime | None = None) -> float | None:
    """How long the job ran: to its end, or until now while it runs."""
    if job.started_at is None:
        return None
    end = job.finished_at or (None if job.done else (now or utcnow()))
    return None if end is None else max(0.0, (end - job.started_at).total_seconds())


@router.get("/projects/{project}/jobs", **auth_rule(Role.VIEWER))
def jobs_page(
    request: Request,
    project: str,
    status: JobStatus | None = None,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> Response:
    page = svc.list(
        principal, project, status=status, max_results=JOBS_PAGE_SIZE, page_token=page_token
    )
    keep = {"status": status} if status else {}
    next_link = (
        "?" + urlencode({**keep, "page_token": page.next_page_token})
        if page.next_page_token
        else None
    )
    now = utcnow()
    return render(
        request,
        principal,
        "jobs.html",
        project=project,
        area="jobs",
        title="Jobs",
        jobs=page.items,
        durations={j.id: duration_s(j, now) for j in page.items},
        statuses=JOB_STATUSES,
        status_filter=status or "",
        next_link=next_link,
        first_link=("?" + urlencode(keep)) if page_token else None,
        job_href=lambda job_id: job_href(project, job_id),
    )


@router.get("/projects/{project}/jobs/{job_id}", **auth_rule(Role.VIEWER))
def job_page(
    request: Request,
    project: str,
    job_id: str,
    principal: Principal = Depends(current_principal),
    svc: JobService = Depends(jobs),
) -> Response:
    job = svc.get(principal, job_id)
    if project not in (job.project, job.project_id):
        raise NotFound(
            f"Job {job_id!r} is not in project {project!r}; "
            f"it is at {job_href(job.project, job.id)}."
        )
    log = svc.logs(principal, job_id, 0, LOG_CHUNK)
    run_id = (job.result or {}).get("run_id")
    return render(
        request,
        principal,
        "job.html",
        project=job.project,
        area="jobs",
        title=job.name,
        job=job,
        duration=duration_s(job),
        log=log,
        run_href=f"/runs/{segment(run_id)}" if isinstance(run_id, str) and run_id else None,
        result_items=sorted((job.result or {}).items()),
        spec_json=json.dumps(job.spec, indent=2, sort_keys=True, ensure_ascii=False),
        jobs_href=jobs_href(job.project),
    )
