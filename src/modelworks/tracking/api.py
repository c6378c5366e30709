"""REST routes for tracking: thin adapters over TrackingService."""

from collections.abc import Iterator
from typing import Annotated, BinaryIO, cast

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from modelworks.core.auth import Principal, Role
from modelworks.core.schemas import Page
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal, tracking
from modelworks.tracking.schemas import (
    ArtifactOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentUpdate,
    LogBatch,
    MetricPoint,
    RunCompare,
    RunComparison,
    RunCreate,
    RunOut,
    RunSearch,
    RunUpdate,
)
from modelworks.tracking.service import TrackingService

router = APIRouter(prefix="/api/v1", tags=["tracking"])
P = "/projects/{project}"


@router.get(P + "/experiments", response_model=Page[ExperimentOut], **auth_rule(Role.VIEWER))
def list_experiments(
    project: str,
    include_deleted: bool = False,
    max_results: int = Query(1000, ge=1, le=10_000),
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Page[ExperimentOut]:
    return svc.list_experiments(
        principal,
        project,
        include_deleted=include_deleted,
        max_results=max_results,
        page_token=page_token,
    )


@router.post(
    P + "/experiments", status_code=201, response_model=ExperimentOut, **auth_rule(Role.EDITOR)
)
def create_experiment(
    project: str,
    body: ExperimentCreate,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ExperimentOut:
    return svc.create_experiment(principal, project, body.name, body.description, body.tags)


@router.get(P + "/experiments/{experiment}", response_model=ExperimentOut, **auth_rule(Role.VIEWER))
def get_experiment(
    project: str,
    experiment: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ExperimentOut:
    return svc.get_experiment(principal, project, experiment)


@router.patch(
    P + "/experiments/{experiment}", response_model=ExperimentOut, **auth_rule(Role.EDITOR)
)
def update_experiment(
    project: str,
    experiment: str,
    body: ExperimentUpdate,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ExperimentOut:
    return svc.update_experiment(
        principal,
        project,
        experiment,
        name=body.name,
        description=body.description,
        tags=body.tags,
    )


@router.delete(
    P + "/experiments/{experiment}", response_model=ExperimentOut, **auth_rule(Role.MAINTAINER)
)
def delete_experiment(
    project: str,
    experiment: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ExperimentOut:
    return svc.delete_experiment(principal, project, experiment)


@router.post(
    P + "/experiments/{experiment}/restore",
    response_model=ExperimentOut,
    **auth_rule(Role.MAINTAINER),
)
def restore_experiment(
    project: str,
    experiment: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ExperimentOut:
    return svc.restore_experiment(principal, project, experiment)


@router.post(P + "/runs", status_code=201, response_model=RunOut, **auth_rule(Role.EDITOR))
def create_run(
    project: str,
    body: RunCreate,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunOut:
    return svc.create_run(
        principal,
        project,
        body.experiment,
        name=body.name,
        description=body.description,
        tags=body.tags,
        params=body.params,
        parent_run_id=body.parent_run_id,
        system_info=body.system_info,
    )


@router.post(P + "/runs/search", response_model=Page[RunOut], **auth_rule(Role.VIEWER))
def search_runs(
    project: str,
    body: RunSearch,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Page[RunOut]:
    return svc.search_runs(
        principal,
        project,
        experiments=body.experiments,
        filter=body.filter,
        order_by=body.order_by,
        max_results=body.max_results,
        page_token=body.page_token,
        include_deleted=body.include_deleted,
    )


@router.get("/runs/{run_id}", response_model=RunOut, **auth_rule(Role.VIEWER))
def get_run(
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunOut:
    return svc.get_run(principal, run_id)


@router.patch("/runs/{run_id}", response_model=RunOut, **auth_rule(Role.EDITOR))
def update_run(
    run_id: str,
    body: RunUpdate,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunOut:
    return svc.update_run(
        principal,
        run_id,
        status=body.status,
        end_time=body.end_time,
        name=body.name,
        description=body.description,
    )


@router.delete("/runs/{run_id}", response_model=RunOut, **auth_rule(Role.MAINTAINER))
def delete_run(
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunOut:
    return svc.delete_run(principal, run_id)


@router.post("/runs/{run_id}/restore", response_model=RunOut, **auth_rule(Role.MAINTAINER))
def restore_run(
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunOut:
    return svc.restore_run(principal, run_id)


@router.post("/runs/{run_id}/log-batch", status_code=204, **auth_rule(Role.EDITOR))
def log_batch(
    run_id: str,
    body: LogBatch,
    idempotency_key: Annotated[str | None, Header()] = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    """Log a batch. Send an ``Idempotency-Key`` header to make retries safe: a batch whose
    key was already applied is accepted again without being stored twice."""
    svc.log_batch(
        principal,
        run_id,
        metrics=body.metrics,
        params=body.params,
        tags=body.tags,
        idempotency_key=idempotency_key,
    )
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/metrics/{key:path}", response_model=list[MetricPoint], **auth_rule(Role.VIEWER)
)
def metric_history(
    run_id: str,
    key: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> list[MetricPoint]:
    return svc.metric_history(principal, run_id, key)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactOut], **auth_rule(Role.VIEWER))
def list_artifacts(
    run_id: str,
    prefix: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> list[ArtifactOut]:
    return svc.list_artifacts(principal, run_id, prefix)


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=201,
    response_model=ArtifactOut,
    **auth_rule(Role.EDITOR),
)
async def upload_artifact(
    run_id: str,
    path: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> ArtifactOut:
    """Upload one file as the raw request body; streamed to disk, never held in memory."""
    import tempfile

    from starlette.concurrency import run_in_threadpool

    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        async for chunk in request.stream():
            await run_in_threadpool(spool.write, chunk)
        spool.seek(0)
        source = cast(BinaryIO, spool)
        return await run_in_threadpool(svc.log_artifact, principal, run_id, path, source)


@router.get("/runs/{run_id}/artifacts/{path:path}", **auth_rule(Role.VIEWER))
def download_artifact(
    run_id: str,
    path: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> StreamingResponse:
    """The artifact's bytes, checked against their sha256 (also sent as the ETag)."""
    import mimetypes

    info = svc.artifact_info(principal, run_id, path)
    stream = svc.store.artifacts.open_verified(info.sha256)

    def chunks() -> Iterator[bytes]:
        with stream:
            while block := stream.read(1024 * 1024):
                yield block

    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    name = path.rsplit("/", 1)[-1].replace('"', "")
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Content-Length": str(info.size),
            "ETag": f'"{info.sha256}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.post("/runs/compare", response_model=RunComparison, **auth_rule(Role.VIEWER))
def compare_runs(
    body: RunCompare,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> RunComparison:
    return svc.compare_runs(principal, body.run_ids, body.metric_keys)
