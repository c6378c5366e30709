"""REST routes for governance: login, tokens, users, projects, members, audit."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from modelworks.core.auth import Principal, Role
from modelworks.core.schemas import Page
from modelworks.governance.schemas import (
    AuditRecordOut,
    AuditVerifyOut,
    MemberOut,
    MemberSet,
    ProjectCreate,
    ProjectOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    WhoAmI,
)
from modelworks.governance.service import GovernanceService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal, ensure_csrf_token, governance, superuser

router = APIRouter(prefix="/api/v1", tags=["governance"])


class LoginIn(BaseModel):
    username: str
    password: str


class LoginOut(BaseModel):
    username: str
    csrf_token: str


@router.post("/auth/login", response_model=LoginOut, **auth_rule("public"))
def login(
    body: LoginIn, request: Request, svc: GovernanceService = Depends(governance)
) -> LoginOut:
    principal = svc.authenticate_password(body.username, body.password)
    request.session.clear()
    request.session["user_id"] = principal.user_id
    csrf = ensure_csrf_token(request)
    return LoginOut(username=principal.username, csrf_token=csrf)


@router.post("/auth/logout", status_code=204, **auth_rule("public"))
def logout(request: Request) -> Response:
    request.session.clear()
    return Response(status_code=204)


@router.get("/auth/whoami", response_model=WhoAmI, **auth_rule("authenticated"))
def whoami(principal: Principal = Depends(current_principal)) -> WhoAmI:
    return WhoAmI(
        username=principal.username,
        user_id=principal.user_id,
        superuser=principal.superuser,
        via=principal.via,
    )


@router.get("/tokens", response_model=list[TokenOut], **auth_rule("authenticated"))
def list_tokens(
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> list[TokenOut]:
    return svc.list_tokens(principal)


@router.post("/tokens", status_code=201, response_model=TokenCreated, **auth_rule("authenticated"))
def create_token(
    body: TokenCreate,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> TokenCreated:
    return svc.create_token(principal, body.name, expires_in_days=body.expires_in_days)


@router.delete("/tokens/{token_id}", response_model=TokenOut, **auth_rule("authenticated"))
def revoke_token(
    token_id: str,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> TokenOut:
    return svc.revoke_token(principal, token_id)


@router.get("/users", response_model=list[UserOut], **auth_rule("superuser"))
def list_users(
    principal: Principal = Depends(superuser), svc: GovernanceService = Depends(governance)
) -> list[UserOut]:
    return svc.list_users(principal)


@router.post("/users", status_code=201, response_model=UserOut, **auth_rule("superuser"))
def create_user(
    body: UserCreate,
    principal: Principal = Depends(superuser),
    svc: GovernanceService = Depends(governance),
) -> UserOut:
    return svc.create_user(
        principal, body.username, body.password, email=body.email, is_admin=body.is_admin
    )


@router.post("/users/{username}/disable", response_model=UserOut, **auth_rule("superuser"))
def disable_user(
    username: str,
    principal: Principal = Depends(superuser),
    svc: GovernanceService = Depends(governance),
) -> UserOut:
    return svc.disable_user(principal, username)


@router.get("/projects", response_model=list[ProjectOut], **auth_rule("authenticated"))
def list_projects(
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> list[ProjectOut]:
    return svc.list_projects(principal)


@router.post("/projects", status_code=201, response_model=ProjectOut, **auth_rule("authenticated"))
def create_project(
    body: ProjectCreate,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> ProjectOut:
    return svc.create_project(principal, body.name, body.description)


@router.get("/projects/{project}", response_model=ProjectOut, **auth_rule(Role.VIEWER))
def get_project(
    project: str,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> ProjectOut:
    return svc.get_project(principal, project)


@router.delete("/projects/{project}", status_code=204, **auth_rule(Role.ADMIN))
def delete_project(
    project: str,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> Response:
    svc.delete_project(principal, project)
    return Response(status_code=204)


@router.get("/projects/{project}/members", response_model=list[MemberOut], **auth_rule(Role.VIEWER))
def list_members(
    project: str,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> list[MemberOut]:
    return svc.list_members(principal, project)


@router.put("/projects/{project}/members", response_model=MemberOut, **auth_rule(Role.ADMIN))
def set_member(
    project: str,
    body: MemberSet,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> MemberOut:
    return svc.set_member(principal, project, body.username, body.role)


@router.delete("/projects/{project}/members/{username}", status_code=204, **auth_rule(Role.ADMIN))
def remove_member(
    project: str,
    username: str,
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> Response:
    svc.remove_member(principal, project, username)
    return Response(status_code=204)


class AuditQuery(BaseModel):
    """The audit-trail filters, shared by the project and the site-wide listing."""

    actor: str | None = None
    object_id: str | None = None
    action: str | None = Field(default=None, description="An action, or a prefix ending in '*'.")
    since: datetime | None = None
    until: datetime | None = None
    max_results: int = Field(default=100, ge=1, le=10_000)
    page_token: str | None = None


@router.get(
    "/projects/{project}/audit", response_model=Page[AuditRecordOut], **auth_rule(Role.ADMIN)
)
def project_audit(
    project: str,
    query: Annotated[AuditQuery, Query()],
    principal: Principal = Depends(current_principal),
    svc: GovernanceService = Depends(governance),
) -> Page[AuditRecordOut]:
    return svc.list_audit(principal, project=project, **query.model_dump())


@router.get("/audit", response_model=Page[AuditRecordOut], **auth_rule("superuser"))
def audit_list(
    query: Annotated[AuditQuery, Query()],
    principal: Principal = Depends(superuser),
    svc: GovernanceService = Depends(governance),
) -> Page[AuditRecordOut]:
    return svc.list_audit(principal, **query.model_dump())


@router.get("/audit/verify", response_model=AuditVerifyOut, **auth_rule("superuser"))
def audit_verify(
    principal: Principal = Depends(superuser), svc: GovernanceService = Depends(governance)
) -> AuditVerifyOut:
    return svc.verify_audit(principal)
