"""REST routes to manage deployments: thin adapters over DeploymentService.

The inference routes themselves (``/v2/models/{name}/infer``, ``/deployments/{name}/predict``)
are the model app's (:mod:`modelworks.serving.model_app`), mounted by the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from modelworks.core.auth import Principal, Role
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.serving.schemas import DeploymentOut, DeploymentTokenOut
from modelworks.serving.service import DeploymentService

router = APIRouter(prefix="/api/v1", tags=["deployments"])
P = "/projects/{project}/deployments"
D = P + "/{name}"


def deployments(request: Request) -> DeploymentService:
    svc: DeploymentService | None = getattr(request.app.state, "deployments", None)
    if svc is None:
        svc = request.app.state.deployments = DeploymentService(request.app.state.store)
    return svc


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentIn(_In):
    name: str
    model: str = Field(description="churn@champion (follows the alias) or churn@3 (pinned)")
    config: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class DeploymentPatch(_In):
    model: str | None = None
    config: dict[str, Any] | None = None
    description: str | None = None
    status: str | None = Field(None, description="active or stopped")


class TokenIn(_In):
    name: str = "default"


@router.post(P, status_code=201, response_model=DeploymentOut, **auth_rule(Role.MAINTAINER))
def create_deployment(
    project: str,
    body: DeploymentIn,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> DeploymentOut:
    return svc.create(
        principal, project, body.name, body.model, config=body.config,
        description=body.description,
    )  # fmt: skip


@router.get(P, response_model=list[DeploymentOut], **auth_rule(Role.VIEWER))
def list_deployments(
    project: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> list[DeploymentOut]:
    return svc.list(principal, project)


@router.get(D, response_model=DeploymentOut, **auth_rule(Role.VIEWER))
def get_deployment(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> DeploymentOut:
    return svc.get(principal, project, name)


@router.patch(D, response_model=DeploymentOut, **auth_rule(Role.MAINTAINER))
def update_deployment(
    project: str,
    name: str,
    body: DeploymentPatch,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> DeploymentOut:
    return svc.update(
        principal, project, name, model=body.model, config=body.config,
        description=body.description, status=body.status,
    )  # fmt: skip


@router.delete(D, response_model=DeploymentOut, **auth_rule(Role.MAINTAINER))
def delete_deployment(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> DeploymentOut:
    return svc.delete(principal, project, name)


@router.post(
    D + "/tokens", status_code=201, response_model=DeploymentTokenOut,
    **auth_rule(Role.MAINTAINER),
)  # fmt: skip
def create_token(
    project: str,
    name: str,
    body: TokenIn,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> DeploymentTokenOut:
    """A bearer token for this deployment's inference routes only; the token is shown once."""
    return svc.create_token(principal, project, name, body.name)


@router.get(D + "/tokens", response_model=list[DeploymentTokenOut], **auth_rule(Role.MAINTAINER))
def list_tokens(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> list[DeploymentTokenOut]:
    return svc.list_tokens(principal, project, name)


@router.delete(D + "/tokens/{token_id}", status_code=204, **auth_rule(Role.MAINTAINER))
def revoke_token(
    project: str,
    name: str,
    token_id: str,
    principal: Principal = Depends(current_principal),
    svc: DeploymentService = Depends(deployments),
) -> None:
    svc.revoke_token(principal, project, name, token_id)
