"""DeploymentService: named deployments that point at a model alias or version, and the
bearer tokens scoped to one deployment.

A deployment names what to serve (``churn@champion``: follow the alias; ``churn@3``: pin a
version) and how (batching, limits, canary, shadow: see
:class:`modelworks.serving.host.DeploymentConfig`). The serving side
(:mod:`modelworks.serving.manager`) resolves the reference, loads the version and swaps it
in when the alias moves; it reports back what it serves with :meth:`mark_served`.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelworks.core import audit
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import AlreadyExists, InvalidInput, NotFound
from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.governance.access import require_project
from modelworks.governance.models import Project
from modelworks.registry.refs import parse_model_ref
from modelworks.registry.service import RegistryService
from modelworks.serving.models import Deployment, DeploymentToken
from modelworks.serving.schemas import DeploymentOut, DeploymentTokenOut

DEPLOYMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TOKEN_PREFIX = "mwd_"  # noqa: S105 - a public marker, not a secret


def check_deployment_name(name: str) -> str:
    if not isinstance(name, str) or not DEPLOYMENT_NAME.match(name):
        raise InvalidInput(
            f"Deployment name {name!r} is not valid: use lower-case letters, digits and '-', "
            "starting with a letter or digit (at most 63 characters), e.g. 'churn-prod'."
        )
    return name


def check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config as DeploymentConfig sees it (defaults filled in), or a clear error."""
    from pydantic import ValidationError

    from modelworks.serving.host import DeploymentConfig

    try:
        return DeploymentConfig.model_validate(dict(config or {})).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"The deployment config is not valid: {problems}.") from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def deployment_out(d: Deployment) -> DeploymentOut:
    return DeploymentOut(
        id=d.id, project_id=d.project_id, name=d.name, model=d.model, selector=d.selector,
        ref=f"{d.model}@{d.selector}", description=d.description, config=dict(d.config or {}),
        status=d.status, served_version=d.served_version, last_error=d.last_error,
        created_by=d.created_by, created_at=d.created_at, updated_at=d.updated_at,
        deleted=d.deleted_at is not None,
    )  # fmt: skip


class DeploymentService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = RegistryService(store)

    def _get(self, s: Session, proj: Project, name: str) -> Deployment:
        d = s.scalar(select(Deployment).where(Deployment.name == name))
        if d is None or d.project_id != proj.id or d.deleted_at is not None:
            raise NotFound(
                f"Deployment {name!r} does not exist in project {proj.name!r}. List them with "
                "`modelworks deployments list`."
            )
        return d

    def _check_ref(self, principal: Principal, project: str, ref: str) -> tuple[str, str]:
        parsed = parse_model_ref(ref)
        if "@" not in ref:
            raise InvalidInput(
                f"Say which version {ref!r} should serve: an alias (e.g. {ref}@champion, "
                f"followed when it moves) or a version number (e.g. {ref}@3, pinned)."
            )
        self.registry.get_version(principal, project, ref)  # it must resolve now
        return parsed.name, parsed.selector

    def _check_rollout(self, principal: Principal, project: str, cfg: Mapping[str, Any]) -> None:
        """The canary's and the shadow's versions must resolve now, not fail at load time."""
        for role in ("canary", "shadow"):
            part = cfg.get(role)
            if not part:
                continue
            ref = str(part["version"])
            try:
                self.registry.get_version(principal, project, ref)
            except NotFound as exc:
                raise InvalidInput(
                    f"The {role} version {ref!r} does not resolve: {exc.detail} Give a model "
                    f"version such as churn@4 (see `modelworks models versions NAME`)."
                ) from None

    def create(
        self,
        principal: Principal,
        project: str,
        name: str,
        model: str,
        *,
        config: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> DeploymentOut:
        """A deployment serving ``model`` (``churn@champion`` follows the alias)."""
        check_deployment_name(name)
        cfg = check_config(config)
        model_name, selector = self._check_ref(principal, project, model)
        self._check_rollout(principal, project, cfg)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Deploying a model")
            if s.scalar(select(Deployment.id).where(Deployment.name == name)):
                raise AlreadyExists(
                    f"A deployment named {name!r} already exists (names are unique across the "
                    "server); pick another or update it with `modelworks deployments update`."
                )
            now = utcnow()
            d = Deployment(
                id=new_id(), project_id=proj.id, name=name, model=model_name, selector=selector,
                description=description, config=cfg, status="active", created_by=principal.actor,
                created_at=now, updated_at=now,
            )  # fmt: skip
            s.add(d)
            try:
                with s.begin_nested():
                    s.flush()
            except IntegrityError:
                raise AlreadyExists(f"A deployment named {name!r} already exists.")
            audit.record(
                s, principal, "deployment.create", "deployment", d.id, project_id=proj.id,
                changes={"name": name, "model": f"{model_name}@{selector}", "config": cfg},
            )  # fmt: skip
            return deployment_out(d)

    def get(self, principal: Principal, project: str, name: str) -> DeploymentOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading deployments")
            return deployment_out(self._get(s, proj, name))

    def list(self, principal: Principal, project: str) -> list[DeploymentOut]:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Listing deployments")
            rows = s.scalars(
                select(Deployment)
                .where(Deployment.project_id == proj.id, Deployment.deleted_at.is_(None))
                .order_by(Deployment.name)
            ).all()
            return [deployment_out(d) for d in rows]

    def update(
        self,
        principal: Principal,
        project: str,
        name: str,
        *,
        model: str | None = None,
        config: Mapping[str, Any] | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> DeploymentOut:
        """Point at another alias or version, change the config, or stop/start it."""
        if status is not None and status not in ("active", "stopped"):
            raise InvalidInput(f"status must be 'active' or 'stopped'; got {status!r}.")
        target = self._check_ref(principal, project, model) if model is not None else None
        cfg = check_config(config) if config is not None else None
        if cfg is not None:
            self._check_rollout(principal, project, cfg)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Updating deployments")
            d = self._get(s, proj, name)
            changes: dict[str, Any] = {}
            if target is not None and (d.model, d.selector) != target:
                changes["model"] = {"from": f"{d.model}@{d.selector}", "to": "@".join(target)}
                d.model, d.selector = target
            if cfg is not None and cfg != d.config:
                changes["config"] = cfg
                d.config = cfg
            if description is not None and description != d.description:
                d.description = changes["description"] = description
            if status is not None and status != d.status:
                changes["status"] = {"from": d.status, "to": status}
                d.status = status
            if changes:
                d.updated_at = utcnow()
                audit.record(s, principal, "deployment.update", "deployment", d.id,
                             project_id=proj.id, changes=changes)  # fmt: skip
            return deployment_out(d)

    def delete(self, principal: Principal, project: str, name: str) -> DeploymentOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Deleting deployments")
            d = self._get(s, proj, name)
            d.deleted_at = d.updated_at = utcnow()
            d.status = "stopped"
            # The name is free again: keep the row under a name no one can choose.
            d.name = f"deleted:{d.id}"
            audit.record(s, principal, "deployment.delete", "deployment", d.id,
                         project_id=proj.id, changes={"name": name})  # fmt: skip
            return deployment_out(d)

    # ---- tokens ------------------------------------------------------------------------
    def create_token(
        self, principal: Principal, project: str, name: str, label: str = "default"
    ) -> DeploymentTokenOut:
        """A bearer token for this deployment's inference routes only; shown once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Creating tokens")
            d = self._get(s, proj, name)
            row = DeploymentToken(
                id=new_id(), deployment_id=d.id, name=label, token_hash=hash_token(token),
                prefix=token[:12], created_by=principal.actor, created_at=utcnow(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            audit.record(
                s, principal, "deployment.token.create", "deployment", d.id,
                project_id=proj.id, changes={"token": row.id, "name": label},
            )  # fmt: skip
            return DeploymentTokenOut(
                id=row.id, deployment=d.name, name=label, prefix=row.prefix,
                created_by=row.created_by, created_at=row.created_at, token=token,
            )  # fmt: skip

    def list_tokens(self, principal: Principal, project: str, name: str
                    ) -> builtins.list[DeploymentTokenOut]:  # fmt: skip
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Listing tokens")
            d = self._get(s, proj, name)
            rows = s.scalars(
                select(DeploymentToken)
                .where(DeploymentToken.deployment_id == d.id)
                .order_by(DeploymentToken.created_at)
            ).all()
            return [
                DeploymentTokenOut(
                    id=r.id,
                    deployment=d.name,
                    name=r.name,
                    prefix=r.prefix,
                    created_by=r.created_by,
                    created_at=r.created_at,
                    revoked=r.revoked_at is not None,
                )
                for r in rows
            ]

    def revoke_token(self, principal: Principal, project: str, name: str, token_id: str) -> None:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Revoking tokens")
            d = self._get(s, proj, name)
            row = s.get(DeploymentToken, token_id)
            if row is None or row.deployment_id != d.id:
                raise NotFound(f"Deployment {name!r} has no token {token_id!r}.")
            row.revoked_at = utcnow()
            audit.record(s, principal, "deployment.token.revoke", "deployment", d.id,
                         project_id=proj.id, changes={"token": token_id})  # fmt: skip

    def token_hashes(self, principal: Principal, project: str, name: str) -> set[str]:
        """The sha256 of the deployment's live tokens, for a server that serves it alone
        (``modelworks serve NAME``); a maintainer's to read, like the tokens."""
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Serving a deployment")
            d = self._get(s, proj, name)
            return set(
                s.scalars(
                    select(DeploymentToken.token_hash).where(
                        DeploymentToken.deployment_id == d.id,
                        DeploymentToken.revoked_at.is_(None),
                    )
                )
            )

    def check_token(self, token: str | None, deployment: str) -> bool:
        """Whether ``token`` may call ``deployment`` (a live token scoped to it)."""
        if not token or not token.startswith(TOKEN_PREFIX):
            return False
        with self.store.read() as s:
            row = s.execute(
                select(DeploymentToken.revoked_at, Deployment.name)
                .join(Deployment, Deployment.id == DeploymentToken.deployment_id)
                .where(DeploymentToken.token_hash == hash_token(token))
            ).first()
        return row is not None and row[0] is None and row[1] == deployment

    # ---- for the serving side ----------------------------------------------------------
    def active(self) -> builtins.list[DeploymentOut]:
        """Every active deployment on the site (the serving side runs as the system)."""
        with self.store.read() as s:
            rows = s.scalars(
                select(Deployment).where(
                    Deployment.deleted_at.is_(None), Deployment.status == "active"
                )
            ).all()
            return [deployment_out(d) for d in rows]

    def mark_served(
        self, deployment_id: str, version: int | None, version_id: str | None, error: str | None
    ) -> None:
        """What the serving side loaded (or why it could not); not audited (no principal)."""
        with self.store.transaction() as s:
            d = s.get(Deployment, deployment_id)
            if d is None:
                return
            if version is not None:
                d.served_version, d.served_version_id = version, version_id
            d.last_error = error
