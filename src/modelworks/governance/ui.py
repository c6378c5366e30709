"""Governance pages: a project's members and recent audit trail, and the site audit log.

Thin adapters over :class:`~modelworks.governance.service.GovernanceService`, rendered in
the shared layout of :mod:`modelworks.server.pages`; the shell
(:mod:`modelworks.server.ui`) includes :data:`router`.
"""

from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import PermissionDenied
from modelworks.governance.service import GovernanceService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal, governance
from modelworks.server.pages import page_router, render

router = page_router()


@router.get("/projects/{project}/governance", **auth_rule(Role.VIEWER))
def governance_page(
    request: Request,
    project: str,
    principal: Principal = Depends(current_principal),
    gov: GovernanceService = Depends(governance),
) -> Response:
    info = gov.get_project(principal, project)
    members = gov.list_members(principal, project)
    try:
        records = gov.list_audit(principal, project=project, max_results=50).items
    except PermissionDenied:
        records = None  # only project admins read the project's audit trail
    return render(
        request,
        principal,
        "governance.html",
        project=project,
        area="governance",
        title=f"Governance · {info.name}",
        info=info,
        members=members,
        records=records,
    )


@router.get("/audit", **auth_rule("superuser"))
def audit_page(
    request: Request,
    actor: str = "",
    action: str = "",
    object_id: str = "",
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    gov: GovernanceService = Depends(governance),
) -> Response:
    page = gov.list_audit(
        principal,
        actor=actor or None,
        action=action or None,
        object_id=object_id or None,
        max_results=100,
        page_token=page_token,
    )
    filters = {"actor": actor, "action": action, "object_id": object_id}
    next_link = (
        "?" + urlencode({**filters, "page_token": page.next_page_token})
        if page.next_page_token
        else None
    )
    return render(
        request,
        principal,
        "audit.html",
        area="audit",
        title="Audit log",
        records=page.items,
        filters=filters,
        next_link=next_link,
    )
