"""Authorisation: what role a principal holds in a project, and the checks services call."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import NotFound, PermissionDenied
from modelworks.governance.models import Membership, Project


def role_in(session: Session, principal: Principal, project_id: str) -> Role | None:
    if principal.superuser:
        return Role.ADMIN
    if principal.user_id is None:
        return None
    value = session.scalar(
        select(Membership.role).where(
            Membership.project_id == project_id, Membership.user_id == principal.user_id
        )
    )
    return Role(value) if value is not None else None


def find_project(session: Session, name_or_id: str) -> Project:
    project = session.scalar(
        select(Project).where(
            (Project.name == name_or_id) | (Project.id == name_or_id),
            Project.deleted_at.is_(None),
        )
    )
    if project is None:
        raise NotFound(
            f"Project {name_or_id!r} does not exist. "
            "List projects with `modelworks projects list`, or create it with "
            f"`modelworks projects create {name_or_id}`."
        )
    return project


def authorize(
    session: Session, principal: Principal, project: Project, need: Role, action: str
) -> Role:
    """Raise PermissionDenied unless the principal holds ``need`` or more in ``project``."""
    have = role_in(session, principal, project.id)
    if have is None:
        # Do not reveal that a project exists to someone who is not a member of it.
        raise NotFound(f"Project {project.name!r} does not exist or you are not a member of it.")
    if have < need:
        raise PermissionDenied(
            f"{action} in project {project.name!r} needs the {need.label} role; "
            f"{principal.username} has {have.label}. Ask a project admin to grant it "
            f"(`modelworks projects members set {project.name} {principal.username} "
            f"{need.label}`)."
        )
    return have


def require_project(
    session: Session, principal: Principal, name_or_id: str, need: Role, action: str
) -> Project:
    project = find_project(session, name_or_id)
    authorize(session, principal, project, need, action)
    return project


def require_superuser(principal: Principal, action: str) -> None:
    if not principal.superuser:
        raise PermissionDenied(
            f"{action} needs a site administrator; {principal.username} is not one."
        )
