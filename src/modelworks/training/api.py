"""REST routes for training: thin adapters over TrainingService."""

from fastapi import APIRouter, Depends, Request

from modelworks.core.auth import Principal, Role
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.training.schemas import RunInputIn, RunInputOut
from modelworks.training.service import TrainingService

router = APIRouter(prefix="/api/v1", tags=["training"])


def training(request: Request) -> TrainingService:
    svc: TrainingService | None = getattr(request.app.state, "training", None)
    if svc is None:
        svc = request.app.state.training = TrainingService(request.app.state.store)
    return svc


@router.post(
    "/runs/{run_id}/inputs", status_code=201, response_model=RunInputOut, **auth_rule(Role.EDITOR)
)
def record_run_input(
    run_id: str,
    body: RunInputIn,
    principal: Principal = Depends(current_principal),
    svc: TrainingService = Depends(training),
) -> RunInputOut:
    """Record that the run read a dataset version (drawn in the dataset's lineage)."""
    return svc.record_input(principal, run_id, body.dataset, body.relation)


@router.get("/runs/{run_id}/inputs", response_model=list[RunInputOut], **auth_rule(Role.VIEWER))
def list_run_inputs(
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrainingService = Depends(training),
) -> list[RunInputOut]:
    """The dataset versions recorded as the run's inputs."""
    return svc.list_inputs(principal, run_id)
