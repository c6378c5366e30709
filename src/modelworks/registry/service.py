"""RegistryService: registered models, versions, aliases, stages, approvals, cards, lineage.

A version is made from a run's logged package (``register_run``: no bytes are copied, the
version lists the run's content-addressed objects) or from a package folder
(``register_package``: each file goes into the artifact store). Either way its
``model.yaml`` is read and its files checked against the checksums it lists, so a version
that exists is a package that loads.

Aliases (``churn@champion``) are moved under a lock on the model's row — ``SELECT ... FOR
UPDATE`` on PostgreSQL, the write lock every SQLite transaction takes — so two clients moving
the same alias at once are applied one after the other: both land in the audit trail, the
second with the first's version as its ``from``. A project may protect aliases: an editor's
move of one becomes a request that a maintainer (someone else) approves or rejects.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelworks.core import audit, lineage
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import (
    AlreadyExists,
    Conflict,
    CorruptData,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from modelworks.core.ids import new_id, utcnow
from modelworks.core.schemas import Page, check_page_size, decode_page_token, encode_page_token
from modelworks.core.store import Store
from modelworks.governance.access import authorize, require_project, role_in
from modelworks.governance.models import Project
from modelworks.registry.models import (
    STAGES,
    AliasRequest,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RegistryPolicy,
)
from modelworks.registry.refs import check_alias, check_model_name, parse_model_ref
from modelworks.registry.schemas import (
    CARD_FIELDS,
    AliasOut,
    AliasRequestOut,
    LineageEdgeOut,
    LineageNodeOut,
    ModelLineageOut,
    ModelOut,
    PolicyOut,
    VersionOut,
)
from modelworks.tracking.service import TrackingService
from modelworks.training.package import META_FILE, PackageMeta, verify_package

MAX_TAGS = 100


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {str(k): str(v) for k, v in (tags or {}).items()}
    if len(out) > MAX_TAGS:
        raise InvalidInput(f"At most {MAX_TAGS} tags; got {len(out)}.")
    for k, v in out.items():
        if not k or len(k) > 250 or len(v) > 5000:
            raise InvalidInput(
                f"Tag {k!r} is not valid: keys need 1-250 characters, values at most 5000."
            )
    return out


def version_node(model: str, v: ModelVersion) -> lineage.Node:
    return lineage.Node("model_version", v.id, f"{model}@{v.version}")


class RegistryService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._tracking = TrackingService(store)

    # ---- helpers -----------------------------------------------------------------------
    def _model(
        self,
        s: Session,
        proj: Project,
        name: str,
        *,
        include_deleted: bool = False,
        lock: bool = False,
    ) -> RegisteredModel:
        stmt = select(RegisteredModel).where(
            RegisteredModel.project_id == proj.id, RegisteredModel.name == name
        )
        if lock:
            stmt = stmt.with_for_update()
        model = s.scalar(stmt)
        if model is None or (model.deleted_at is not None and not include_deleted):
            hint = (
                f" It was deleted; restore it with `modelworks models restore {name}`."
                if model is not None
                else " List models with `modelworks models list`, or register one with "
                "`modelworks models register NAME --run RUN_ID`."
            )
            raise NotFound(f"Model {name!r} does not exist in project {proj.name!r}.{hint}")
        return model

    def _aliases(self, s: Session, model: RegisteredModel) -> dict[str, int]:
        rows = s.execute(
            select(ModelAlias.alias, ModelAlias.version)
            .where(ModelAlias.model_id == model.id)
            .order_by(ModelAlias.alias)
        ).all()
        return {str(a): int(v) for a, v in rows}

    def _model_out(self, s: Session, model: RegisteredModel) -> ModelOut:
        return ModelOut(
            id=model.id,
            project_id=model.project_id,
            name=model.name,
            description=model.description,
            tags=dict(model.tags or {}),
            latest_version=model.latest_version,
            aliases=self._aliases(s, model),
            created_by=model.created_by,
            created_at=model.created_at,
            updated_at=model.updated_at,
            deleted=model.deleted_at is not None,
        )

    def _version_out(self, s: Session, model: RegisteredModel, v: ModelVersion) -> VersionOut:
        aliases = [a for a, n in self._aliases(s, model).items() if n == v.version]
        meta = v.meta or {}
        return VersionOut(
            id=v.id,
            model_id=model.id,
            model=model.name,
            version=v.version,
            ref=f"{model.name}@{v.version}",
            stage=v.stage,
            aliases=aliases,
            description=v.description,
            tags=dict(v.tags or {}),
            source=dict(v.source or {}),
            run_id=v.run_id,
            flavor=str(meta.get("flavor", "")),
            task=str(meta.get("task", "")),
            signature=meta.get("signature"),
            classes=meta.get("classes"),
            frameworks=dict(meta.get("frameworks") or {}),
            metrics=dict(meta.get("metrics") or {}),
            params=dict(meta.get("params") or {}),
            files=dict(v.files or {}),
            card=dict(v.card or {}),
            has_importance=v.importance is not None,
            created_by=v.created_by,
            created_at=v.created_at,
            updated_at=v.updated_at,
            deleted=v.deleted_at is not None,
        )

    def _resolve(
        self, s: Session, proj: Project, ref: str, *, lock: bool = False
    ) -> tuple[RegisteredModel, ModelVersion]:
        parsed = parse_model_ref(ref)
        model = self._model(s, proj, parsed.name, lock=lock)
        number = parsed.number
        if parsed.selector == "latest":
            v = s.scalar(
                select(ModelVersion)
                .where(ModelVersion.model_id == model.id, ModelVersion.deleted_at.is_(None))
                .order_by(ModelVersion.version.desc())
                .limit(1)
            )
            if v is None:
                raise NotFound(
                    f"Model {model.name!r} has no versions yet; register one with "
                    f"`modelworks models register {model.name} --run RUN_ID`."
                )
            return model, v
        if number is None:
            alias = s.scalar(
                select(ModelAlias).where(
                    ModelAlias.model_id == model.id, ModelAlias.alias == parsed.selector
                )
            )
            if alias is None:
                known = ", ".join(self._aliases(s, model)) or "none yet"
                raise NotFound(
                    f"Model {model.name!r} has no alias {parsed.selector!r} (aliases: {known}). "
                    f"Set it with `modelworks models alias set {model.name} "
                    f"{parsed.selector} VERSION`."
                )
            number = alias.version
        v = s.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == number
            )
        )
        if v is None:
            raise NotFound(
                f"Model {model.name!r} has no version {number} (latest is "
                f"{model.latest_version}). List them with `modelworks models versions "
                f"{model.name}`."
            )
        return model, v

    # ---- registered models -------------------------------------------------------------
    def create_model(
        self,
        principal: Principal,
        project: str,
        name: str,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> ModelOut:
        check_model_name(name)
        tags_ = _check_tags(tags)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Registering a model")
            model = self._create(s, principal, proj, name, description, tags_)
            return self._model_out(s, model)

    def _create(
        self,
        s: Session,
        principal: Principal,
        proj: Project,
        name: str,
        description: str,
        tags: dict[str, str],
    ) -> RegisteredModel:
        existing = s.scalar(
            select(RegisteredModel).where(
                RegisteredModel.project_id == proj.id, RegisteredModel.name == name
            )
        )
        if existing is not None:
            state = " (deleted; restore it or pick another name)" if existing.deleted_at else ""
            raise AlreadyExists(f"Model {name!r} already exists in project {proj.name!r}{state}.")
        now = utcnow()
        model = RegisteredModel(
            id=new_id(),
            project_id=proj.id,
            name=name,
            description=description,
            tags=tags,
            latest_version=0,
            created_by=principal.actor,
            created_at=now,
            updated_at=now,
        )
        s.add(model)
        try:
            with s.begin_nested():
                s.flush()
        except IntegrityError:
            raise AlreadyExists(f"Model {name!r} already exists in project {proj.name!r}.")
        audit.record(
            s, principal, "model.create", "registered_model", model.id, project_id=proj.id,
            changes={"name": name},
        )  # fmt: skip
        return model

    def get_model(self, principal: Principal, project: str, name: str) -> ModelOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading models")
            return self._model_out(s, self._model(s, proj, name, include_deleted=True))

    def list_models(
        self,
        principal: Principal,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelOut]:
        check_page_size(max_results)
        offset = decode_page_token(page_token)
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Listing models")
            stmt = select(RegisteredModel).where(RegisteredModel.project_id == proj.id)
            if not include_deleted:
                stmt = stmt.where(RegisteredModel.deleted_at.is_(None))
            rows = s.scalars(
                stmt.order_by(RegisteredModel.updated_at.desc(), RegisteredModel.id.desc())
                .offset(offset)
                .limit(max_results + 1)
            ).all()
            items = [self._model_out(s, m) for m in rows[:max_results]]
            token = encode_page_token(offset + max_results) if len(rows) > max_results else None
            return Page[ModelOut](items=items, next_page_token=token)

    def update_model(
        self,
        principal: Principal,
        project: str,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelOut:
        tags_ = None if tags is None else _check_tags(tags)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Updating a model")
            model = self._model(s, proj, name)
            changes: dict[str, Any] = {}
            if description is not None and description != model.description:
                changes["description"] = description
                model.description = description
            if tags_ is not None and tags_ != model.tags:
                changes["tags"] = tags_
                model.tags = tags_
            if changes:
                model.updated_at = utcnow()
                audit.record(
                    s, principal, "model.update", "registered_model", model.id,
                    project_id=proj.id, changes=changes,
                )  # fmt: skip
            return self._model_out(s, model)

    def delete_model(self, principal: Principal, project: str, name: str) -> ModelOut:
        """Soft delete: the model and its versions disappear from lists; restore undoes it."""
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Deleting a model")
            model = self._model(s, proj, name)
            model.deleted_at = model.updated_at = utcnow()
            audit.record(s, principal, "model.delete", "registered_model", model.id,
                         project_id=proj.id)  # fmt: skip
            return self._model_out(s, model)

    def restore_model(self, principal: Principal, project: str, name: str) -> ModelOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Restoring a model")
            model = self._model(s, proj, name, include_deleted=True)
            model.deleted_at = None
            model.updated_at = utcnow()
            audit.record(s, principal, "model.restore", "registered_model", model.id,
                         project_id=proj.id)  # fmt: skip
            return self._model_out(s, model)

    # ---- versions ----------------------------------------------------------------------
    def register_run(
        self,
        principal: Principal,
        project: str,
        name: str,
        run_id: str,
        *,
        artifact_path: str = "model",
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut:
        """A new version of ``name`` (created if new) from the package the run logged."""
        check_model_name(name)
        tags_ = _check_tags(tags)
        run = self._tracking.get_run(principal, run_id)
        prefix = artifact_path.strip("/")
        arts = self._tracking.list_artifacts(principal, run.id, prefix)
        files = {
            a.path[len(prefix) + 1 :]: {"sha256": a.sha256, "size": a.size}
            for a in arts
            if a.path.startswith(prefix + "/")
        }
        if META_FILE not in files:
            raise NotFound(
                f"Run {run.id} has no model package under {prefix!r} (no {prefix}/{META_FILE}). "
                "Log one with mw.log_model(run, model) or ws.train/ws.automl, or name the "
                "folder with --path."
            )
        meta = self._meta_from_object(str(files[META_FILE]["sha256"]), f"run {run.id}:{prefix}")
        _check_manifest(meta, files, f"run {run.id}'s {prefix}/")
        source = {"kind": "run", "run_id": run.id, "path": prefix}
        with self.store.transaction() as s:
            proj = require_project(s, principal, run.project_id, Role.EDITOR, "Registering models")
            if proj.name != project and proj.id != project:
                raise InvalidInput(
                    f"Run {run.id} belongs to project {proj.name!r}, not {project!r}; register "
                    f"it in {proj.name!r}."
                )
            model, v = self._add_version(
                s, principal, proj, name, meta, files, source, run.id, description, tags_
            )
            lineage.record(
                s, proj.id, lineage.Node("run", run.id, f"run {run.name or run.id}"),
                version_node(model.name, v), "registered_as", {"path": prefix},
            )  # fmt: skip
            return self._version_out(s, model, v)

    def register_package(
        self,
        principal: Principal,
        project: str,
        name: str,
        package_dir: str | os.PathLike[str],
        *,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> VersionOut:
        """A new version of ``name`` from a package folder on this machine (verified first)."""
        check_model_name(name)
        tags_ = _check_tags(tags)
        root = Path(package_dir)
        meta = verify_package(root)
        files: dict[str, dict[str, Any]] = {}
        for rel in [*meta.files, META_FILE]:
            info = self.store.artifacts.put_file(root / rel)
            files[rel] = {"sha256": info.sha256, "size": info.size}
        src = {"kind": "package", **dict(source or {})}
        run_id = meta.lineage.get("run_id")
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Registering models")
            model, v = self._add_version(
                s, principal, proj, name, meta, files, src, None, description, tags_
            )
            if run_id:
                v.source = {**src, "run_id": run_id}
            return self._version_out(s, model, v)

    def _meta_from_object(self, sha256: str, where: str) -> PackageMeta:
        try:
            raw = yaml.safe_load(self.store.artifacts.get_bytes(sha256))
            return PackageMeta.model_validate(raw)
        except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
            raise CorruptData(f"{where}/{META_FILE} is not a valid package description: {exc}")

    def _add_version(
        self,
        s: Session,
        principal: Principal,
        proj: Project,
        name: str,
        meta: PackageMeta,
        files: dict[str, dict[str, Any]],
        source: dict[str, Any],
        run_id: str | None,
        description: str,
        tags: dict[str, str],
    ) -> tuple[RegisteredModel, ModelVersion]:
        model = s.scalar(
            select(RegisteredModel).where(
                RegisteredModel.project_id == proj.id, RegisteredModel.name == name
            )
        )
        if model is None:
            model = self._create(s, principal, proj, name, "", {})
        elif model.deleted_at is not None:
            raise Conflict(
                f"Model {name!r} is deleted; restore it with `modelworks models restore {name}` "
                "before adding versions."
            )
        # One statement bumps the counter, so concurrent registrations get distinct numbers.
        number = s.execute(
            update(RegisteredModel)
            .where(RegisteredModel.id == model.id)
            .values(latest_version=RegisteredModel.latest_version + 1, updated_at=utcnow())
            .returning(RegisteredModel.latest_version)
        ).scalar_one()
        s.refresh(model)
        now = utcnow()
        v = ModelVersion(
            id=new_id(),
            model_id=model.id,
            project_id=proj.id,
            version=int(number),
            stage="none",
            description=description,
            tags=tags,
            source=source,
            run_id=run_id,
            meta=meta.model_dump(mode="json"),
            files=files,
            card={},
            created_by=principal.actor,
            created_at=now,
            updated_at=now,
        )
        s.add(v)
        s.flush()
        audit.record(
            s, principal, "model.version.create", "model_version", v.id, project_id=proj.id,
            changes={"model": name, "version": v.version, "source": source,
                     "flavor": meta.flavor, "task": meta.task},
        )  # fmt: skip
        return model, v

    def get_version(self, principal: Principal, project: str, ref: str) -> VersionOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading models")
            model, v = self._resolve(s, proj, ref)
            return self._version_out(s, model, v)

    def list_versions(
        self, principal: Principal, project: str, name: str, *, include_deleted: bool = False
    ) -> list[VersionOut]:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading models")
            model = self._model(s, proj, name, include_deleted=True)
            stmt = select(ModelVersion).where(ModelVersion.model_id == model.id)
            if not include_deleted:
                stmt = stmt.where(ModelVersion.deleted_at.is_(None))
            rows = s.scalars(stmt.order_by(ModelVersion.version.desc())).all()
            return [self._version_out(s, model, v) for v in rows]

    def update_version(
        self,
        principal: Principal,
        project: str,
        ref: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        card: Mapping[str, str] | None = None,
    ) -> VersionOut:
        """Change a version's description, tags or model-card fields (see CARD_FIELDS)."""
        tags_ = None if tags is None else _check_tags(tags)
        if card is not None:
            unknown = sorted(set(card) - set(CARD_FIELDS))
            if unknown:
                raise InvalidInput(
                    f"Unknown model card field(s) {', '.join(unknown)}; the fields are "
                    f"{', '.join(CARD_FIELDS)}."
                )
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Updating a model")
            model, v = self._resolve(s, proj, ref)
            changes: dict[str, Any] = {}
            if description is not None and description != v.description:
                v.description = changes["description"] = description
            if tags_ is not None and tags_ != v.tags:
                v.tags = changes["tags"] = tags_
            if card is not None:
                merged = {**(v.card or {}), **{k: str(val) for k, val in card.items()}}
                merged = {k: val for k, val in merged.items() if val}
                if merged != v.card:
                    v.card = changes["card"] = merged
            if changes:
                v.updated_at = utcnow()
                audit.record(
                    s, principal, "model.version.update", "model_version", v.id,
                    project_id=proj.id, changes={"ref": f"{model.name}@{v.version}", **changes},
                )  # fmt: skip
            return self._version_out(s, model, v)

    def set_stage(self, principal: Principal, project: str, ref: str, stage: str) -> VersionOut:
        if stage not in STAGES:
            raise InvalidInput(f"Unknown stage {stage!r}; use one of: {', '.join(STAGES)}.")
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Changing a stage")
            need = Role.MAINTAINER if stage == "production" else Role.EDITOR
            authorize(s, principal, proj, need, f"Moving a version to {stage}")
            model, v = self._resolve(s, proj, ref, lock=True)
            if v.stage != stage:
                before, v.stage = v.stage, stage
                v.updated_at = utcnow()
                audit.record(
                    s, principal, "model.version.stage", "model_version", v.id,
                    project_id=proj.id,
                    changes={"ref": f"{model.name}@{v.version}", "from": before, "to": stage},
                )  # fmt: skip
            return self._version_out(s, model, v)

    def delete_version(self, principal: Principal, project: str, ref: str) -> VersionOut:
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.MAINTAINER, "Deleting a version")
            model, v = self._resolve(s, proj, ref, lock=True)
            held = [a for a, n in self._aliases(s, model).items() if n == v.version]
            if held:
                raise Conflict(
                    f"{model.name}@{v.version} holds the alias(es) {', '.join(held)}; move or "
                    "delete them first (`modelworks models alias set/delete`)."
                )
            v.deleted_at = v.updated_at = utcnow()
            audit.record(s, principal, "model.version.delete", "model_version", v.id,
                         project_id=proj.id,
                         changes={"ref": f"{model.name}@{v.version}"})  # fmt: skip
            return self._version_out(s, model, v)

    def set_importance(
        self, principal: Principal, project: str, ref: str, importance: dict[str, Any]
    ) -> VersionOut:
        """Store a version's global importance (see modelworks.evaluation.explain)."""
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Explaining a model")
            model, v = self._resolve(s, proj, ref)
            v.importance = importance
            v.updated_at = utcnow()
            audit.record(s, principal, "model.version.importance", "model_version", v.id,
                         project_id=proj.id,
                         changes={"ref": f"{model.name}@{v.version}"})  # fmt: skip
            return self._version_out(s, model, v)

    def get_importance(self, principal: Principal, project: str, ref: str) -> dict[str, Any]:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading models")
            model, v = self._resolve(s, proj, ref)
            if v.importance is None:
                raise NotFound(
                    f"{model.name}@{v.version} has no stored importance yet; compute it with "
                    f"`modelworks models explain {model.name}@{v.version} --dataset DATASET`."
                )
            return dict(v.importance)

    # ---- package bytes -----------------------------------------------------------------
    def download_package(
        self, principal: Principal, project: str, ref: str, dest: str | os.PathLike[str]
    ) -> Path:
        """Write the version's package into ``dest`` (must not exist), verified."""
        version = self.get_version(principal, project, ref)
        target = Path(dest)
        if target.exists() and any(target.iterdir()):
            raise AlreadyExists(f"{target} exists and is not empty; pick a new folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            for rel, info in version.files.items():
                self.store.artifacts.download(str(info["sha256"]), tmp / rel)
            verify_package(tmp)
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def package_file(self, principal: Principal, project: str, ref: str, path: str) -> str:
        """The sha256 of one file of the version's package (for REST downloads)."""
        version = self.get_version(principal, project, ref)
        info = version.files.get(path)
        if info is None:
            raise NotFound(
                f"{version.ref} has no file {path!r}; its files: {', '.join(version.files)}."
            )
        return str(info["sha256"])

    # ---- aliases -----------------------------------------------------------------------
    def set_alias(
        self,
        principal: Principal,
        project: str,
        name: str,
        alias: str,
        version: int | str,
        *,
        reason: str = "",
    ) -> AliasOut:
        """Point ``name@alias`` at a version (a number, or a ref such as ``name@challenger``).

        On a protected alias an editor's move becomes a pending request (status
        ``pending_approval``); a maintainer's move applies at once.
        """
        check_alias(alias)
        target_ref = f"{name}@{version}" if isinstance(version, int) or str(version).isdigit() \
            else str(version)  # fmt: skip
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Moving an alias")
            model = self._model(s, proj, name, lock=True)
            target_model, v = self._resolve(s, proj, target_ref)
            if target_model.id != model.id:
                raise InvalidInput(
                    f"{target_ref} is a version of {target_model.name!r}, not of {name!r}."
                )
            if v.deleted_at is not None:
                raise Conflict(f"{name}@{v.version} is deleted; an alias cannot point at it.")
            if alias in self._protected(s, proj) and (role_in(s, principal, proj.id) or 0) < (
                Role.MAINTAINER
            ):
                req = AliasRequest(
                    id=new_id(), project_id=proj.id, model_id=model.id, alias=alias,
                    version_id=v.id, version=v.version, status="pending", reason=reason,
                    requested_by=principal.actor, requested_at=utcnow(),
                )  # fmt: skip
                s.add(req)
                s.flush()
                audit.record(
                    s, principal, "model.alias.request", "alias_request", req.id,
                    project_id=proj.id,
                    changes={"model": name, "alias": alias, "version": v.version},
                    note=reason or None,
                )  # fmt: skip
                current = self._aliases(s, model).get(alias)
                return AliasOut(
                    model=name, alias=alias, version=v.version, previous_version=current,
                    status="pending_approval", request_id=req.id,
                    updated_by=principal.actor, updated_at=req.requested_at,
                )  # fmt: skip
            return self._move(s, principal, proj, model, alias, v, reason)

    def _move(
        self,
        s: Session,
        principal: Principal,
        proj: Project,
        model: RegisteredModel,
        alias: str,
        v: ModelVersion,
        note: str = "",
        approval: str | None = None,
    ) -> AliasOut:
        row = s.scalar(
            select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
        )
        previous = row.version if row is not None else None
        now = utcnow()
        if row is not None and row.version_id == v.id:
            return AliasOut(
                model=model.name, alias=alias, version=v.version, previous_version=previous,
                status="unchanged", updated_by=row.updated_by, updated_at=row.updated_at,
            )  # fmt: skip
        if row is None:
            row = ModelAlias(
                id=new_id(),
                model_id=model.id,
                alias=alias,
                version_id=v.id,
                version=v.version,
                updated_by=principal.actor,
                updated_at=now,
            )
            s.add(row)  # fmt: skip
        else:
            row.version_id, row.version = v.id, v.version
            row.updated_by, row.updated_at = principal.actor, now
        model.updated_at = now
        changes: dict[str, Any] = {"model": model.name, "alias": alias, "from": previous,
                                   "to": v.version}  # fmt: skip
        if approval:
            changes["approval_request"] = approval
        audit.record(
            s, principal, "model.alias.set", "registered_model", model.id, project_id=proj.id,
            changes=changes, note=note or None,
        )  # fmt: skip
        return AliasOut(
            model=model.name, alias=alias, version=v.version, previous_version=previous,
            status="moved", request_id=approval, updated_by=principal.actor, updated_at=now,
        )  # fmt: skip

    def delete_alias(self, principal: Principal, project: str, name: str, alias: str) -> None:
        check_alias(alias)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Deleting an alias")
            model = self._model(s, proj, name, lock=True)
            if alias in self._protected(s, proj):
                authorize(s, principal, proj, Role.MAINTAINER, f"Deleting protected alias {alias}")
            row = s.scalar(
                select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
            )
            if row is None:
                raise NotFound(f"Model {name!r} has no alias {alias!r}.")
            s.delete(row)
            audit.record(
                s, principal, "model.alias.delete", "registered_model", model.id,
                project_id=proj.id, changes={"alias": alias, "from": row.version},
            )  # fmt: skip

    # ---- approval policy ---------------------------------------------------------------
    def _protected(self, s: Session, proj: Project) -> list[str]:
        policy = s.get(RegistryPolicy, proj.id)
        return list(policy.protected_aliases) if policy is not None else []

    def get_policy(self, principal: Principal, project: str) -> PolicyOut:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading the policy")
            return PolicyOut(project=proj.name, protected_aliases=self._protected(s, proj))

    def set_policy(
        self, principal: Principal, project: str, protected_aliases: list[str]
    ) -> PolicyOut:
        """Which aliases need a maintainer's approval to move (admins set it)."""
        aliases = sorted({check_alias(a) for a in protected_aliases})
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.ADMIN, "Setting the model policy")
            policy = s.get(RegistryPolicy, proj.id)
            before = list(policy.protected_aliases) if policy is not None else []
            if policy is None:
                policy = RegistryPolicy(
                    project_id=proj.id,
                    protected_aliases=aliases,
                    updated_by=principal.actor,
                    updated_at=utcnow(),
                )
                s.add(policy)  # fmt: skip
            else:
                policy.protected_aliases = aliases
                policy.updated_by, policy.updated_at = principal.actor, utcnow()
            audit.record(
                s, principal, "model.policy.set", "project", proj.id, project_id=proj.id,
                changes={"protected_aliases": {"from": before, "to": aliases}},
            )  # fmt: skip
            return PolicyOut(project=proj.name, protected_aliases=aliases)

    def _request_out(self, s: Session, req: AliasRequest) -> AliasRequestOut:
        model = s.get(RegisteredModel, req.model_id)
        return AliasRequestOut(
            id=req.id, model=model.name if model else req.model_id, alias=req.alias,
            version=req.version, status=req.status,
            reason=req.reason, requested_by=req.requested_by, requested_at=req.requested_at,
            decided_by=req.decided_by, decided_at=req.decided_at,
            decision_note=req.decision_note,
        )  # fmt: skip

    def list_requests(
        self, principal: Principal, project: str, *, status: str | None = "pending"
    ) -> list[AliasRequestOut]:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading requests")
            stmt = select(AliasRequest).where(AliasRequest.project_id == proj.id)
            if status:
                stmt = stmt.where(AliasRequest.status == status)
            rows = s.scalars(stmt.order_by(AliasRequest.requested_at.desc())).all()
            return [self._request_out(s, r) for r in rows]

    def decide_request(
        self, principal: Principal, project: str, request_id: str, *, approve: bool, note: str = ""
    ) -> AliasRequestOut:
        """Approve (the alias moves now) or reject a pending alias move. Maintainers only,
        and never one's own request: the point is a second pair of eyes."""
        with self.store.transaction() as s:
            proj = require_project(
                s, principal, project, Role.MAINTAINER, "Deciding an alias request"
            )
            req = s.get(AliasRequest, request_id)
            if req is None or req.project_id != proj.id:
                raise NotFound(
                    f"Alias request {request_id!r} does not exist in project {proj.name!r}; "
                    "list them with `modelworks models requests`."
                )
            model = s.scalar(
                select(RegisteredModel).where(RegisteredModel.id == req.model_id).with_for_update()
            )
            if req.status != "pending":
                raise Conflict(f"Alias request {req.id} is already {req.status}.")
            if req.requested_by == principal.actor:
                raise PermissionDenied(
                    "You cannot decide your own alias request; another maintainer must."
                )
            assert model is not None
            req.status = "approved" if approve else "rejected"
            req.decided_by, req.decided_at, req.decision_note = principal.actor, utcnow(), note
            audit.record(
                s, principal, f"model.alias.{'approve' if approve else 'reject'}",
                "alias_request", req.id, project_id=proj.id,
                changes={"model": model.name, "alias": req.alias, "version": req.version,
                         "requested_by": req.requested_by},
                note=note or None,
            )  # fmt: skip
            if approve:
                v = s.get(ModelVersion, req.version_id)
                assert v is not None
                self._move(s, principal, proj, model, req.alias, v, note, approval=req.id)
            return self._request_out(s, req)

    # ---- lineage and counts ------------------------------------------------------------
    def lineage(
        self, principal: Principal, project: str, ref: str, *, depth: int = 10
    ) -> ModelLineageOut:
        """Dataset versions -> run -> this version -> deployments (what later issues add)."""
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading lineage")
            model, v = self._resolve(s, proj, ref)
            start = version_node(model.name, v)
            nodes: dict[tuple[str, str], lineage.Node] = {}
            edges = []
            graph = lineage.walk(s, proj.id, start, direction="both", depth=depth)
            nodes.update(graph.nodes)
            edges.extend(graph.edges)
            if v.run_id:  # the run's inputs, even when the run was not registered by an edge
                up = lineage.walk(
                    s, proj.id, lineage.Node("run", v.run_id, ""), direction="up", depth=depth
                )
                for key, node in up.nodes.items():
                    nodes.setdefault(key, node)
                known = {e.id for e in edges}
                edges.extend(e for e in up.edges if e.id not in known)
        datasets = sorted(
            {
                e.parent_label
                for e in edges
                if e.parent_type == "dataset_version" and e.relation == "trained_on"
            }
        )
        return ModelLineageOut(
            ref=f"{model.name}@{v.version}",
            nodes=[LineageNodeOut(type=n.type, id=n.id, label=n.label) for n in nodes.values()],
            edges=[
                LineageEdgeOut(
                    parent=LineageNodeOut(type=e.parent_type, id=e.parent_id, label=e.parent_label),
                    child=LineageNodeOut(type=e.child_type, id=e.child_id, label=e.child_label),
                    relation=e.relation,
                )
                for e in edges
            ],
            datasets=datasets,
        )

    def count_versions(self, principal: Principal, project: str) -> int:
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading models")
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(ModelVersion)
                    .where(ModelVersion.project_id == proj.id, ModelVersion.deleted_at.is_(None))
                )
                or 0
            )


def _check_manifest(meta: PackageMeta, files: dict[str, dict[str, Any]], where: str) -> None:
    """The stored objects are the files model.yaml lists, with the same checksums."""
    problems = []
    for rel, sha in meta.files.items():
        got = files.get(rel)
        if got is None:
            problems.append(f"{rel} is missing")
        elif got["sha256"] != sha:
            problems.append(f"{rel} does not match its checksum")
    problems += [f"{rel} is not part of the package" for rel in files
                 if rel != META_FILE and rel not in meta.files]  # fmt: skip
    if problems:
        raise CorruptData(
            f"The package in {where} failed verification: {'; '.join(problems)}. Log the model "
            "again before registering it."
        )
