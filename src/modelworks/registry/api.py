"""REST routes for the registry: thin adapters over RegistryService.

A version is addressed by its reference in one path segment,
``/projects/{project}/model-versions/{ref}`` with ``ref`` = ``churn@3``, ``churn@champion``,
``churn@latest`` or ``churn``, URL-encoded by clients.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput
from modelworks.core.schemas import Page
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.schemas import (
    AliasOut,
    AliasRequestOut,
    ComparisonOut,
    EvaluationOut,
    ModelCard,
    ModelLineageOut,
    ModelOut,
    PolicyOut,
    Stage,
    VersionOut,
)
from modelworks.registry.service import RegistryService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal

router = APIRouter(prefix="/api/v1", tags=["registry"])
P = "/projects/{project}"
M = P + "/models/{name}"
V = P + "/model-versions/{ref}"
UPLOAD_PATH = r"/api/v1/projects/[^/]+/models/[^/]+/versions/package"


def registry(request: Request) -> RegistryService:
    svc: RegistryService | None = getattr(request.app.state, "registry", None)
    if svc is None:
        svc = request.app.state.registry = RegistryService(request.app.state.store)
    return svc


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelIn(_In):
    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class ModelPatch(_In):
    description: str | None = None
    tags: dict[str, str] | None = None


class RegisterRunIn(_In):
    run_id: str
    artifact_path: str = "model"
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class VersionPatch(_In):
    description: str | None = None
    tags: dict[str, str] | None = None
    card: dict[str, str] | None = None


class StageIn(_In):
    stage: Stage


class AliasIn(_In):
    version: str = Field(description="A version number, or a reference such as churn@challenger")
    reason: str = ""


class PolicyIn(_In):
    protected_aliases: list[str]


class DecisionIn(_In):
    note: str = ""


# ---- models -------------------------------------------------------------------------------
@router.post(P + "/models", status_code=201, response_model=ModelOut, **auth_rule(Role.EDITOR))
def create_model(
    project: str,
    body: ModelIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelOut:
    return svc.create_model(principal, project, body.name, body.description, body.tags)


@router.get(P + "/models", response_model=Page[ModelOut], **auth_rule(Role.VIEWER))
def list_models(
    project: str,
    include_deleted: bool = False,
    max_results: int = 100,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> Page[ModelOut]:
    return svc.list_models(
        principal,
        project,
        include_deleted=include_deleted,
        max_results=max_results,
        page_token=page_token,
    )


@router.get(M, response_model=ModelOut, **auth_rule(Role.VIEWER))
def get_model(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelOut:
    return svc.get_model(principal, project, name)


@router.patch(M, response_model=ModelOut, **auth_rule(Role.EDITOR))
def update_model(
    project: str,
    name: str,
    body: ModelPatch,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelOut:
    return svc.update_model(principal, project, name, description=body.description, tags=body.tags)


@router.delete(M, response_model=ModelOut, **auth_rule(Role.MAINTAINER))
def delete_model(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelOut:
    return svc.delete_model(principal, project, name)


@router.post(M + "/restore", response_model=ModelOut, **auth_rule(Role.MAINTAINER))
def restore_model(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelOut:
    return svc.restore_model(principal, project, name)


# ---- versions -----------------------------------------------------------------------------
@router.get(M + "/versions", response_model=list[VersionOut], **auth_rule(Role.VIEWER))
def list_versions(
    project: str,
    name: str,
    include_deleted: bool = False,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> list[VersionOut]:
    return svc.list_versions(principal, project, name, include_deleted=include_deleted)


@router.post(M + "/versions", status_code=201, response_model=VersionOut, **auth_rule(Role.EDITOR))
def register_run(
    project: str,
    name: str,
    body: RegisterRunIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    """A new version from the package a run logged (the model is created if new)."""
    return svc.register_run(
        principal, project, name, body.run_id, artifact_path=body.artifact_path,
        description=body.description, tags=body.tags,
    )  # fmt: skip


@router.put(
    M + "/versions/package", status_code=201, response_model=VersionOut,
    **auth_rule(Role.EDITOR),
)  # fmt: skip
async def upload_package(
    project: str,
    name: str,
    request: Request,
    description: str = "",
    tags: str = Query("{}", description="JSON object of tags"),
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    """A new version from a package tarball sent as the raw body (``modelworks models
    export --format tar``); extracted safely and verified before anything is stored."""
    from starlette.concurrency import run_in_threadpool

    from modelworks.data.source_policy import upload_root
    from modelworks.registry.export import import_package

    try:
        tag_map = json.loads(tags)
        if not isinstance(tag_map, dict):
            raise ValueError
    except ValueError:
        raise InvalidInput('tags must be a JSON object, e.g. {"team": "risk"}.') from None
    base = Path(upload_root(svc.store.settings))
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="package-", dir=base))
    try:
        archive = folder / "package.tar.gz"
        with open(archive, "wb") as out:
            async for chunk in request.stream():
                await run_in_threadpool(out.write, chunk)
        await run_in_threadpool(import_package, archive, folder / "package")
        result: VersionOut = await run_in_threadpool(
            lambda: svc.register_package(
                principal, project, name, folder / "package", description=description,
                tags=tag_map, source={"uploaded": True},
            )
        )  # fmt: skip
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.get(V, response_model=VersionOut, **auth_rule(Role.VIEWER))
def get_version(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    return svc.get_version(principal, project, ref)


@router.patch(V, response_model=VersionOut, **auth_rule(Role.EDITOR))
def update_version(
    project: str,
    ref: str,
    body: VersionPatch,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    return svc.update_version(
        principal, project, ref, description=body.description, tags=body.tags, card=body.card
    )


@router.put(V + "/stage", response_model=VersionOut, **auth_rule(Role.EDITOR))
def set_stage(
    project: str,
    ref: str,
    body: StageIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    """Move the version to a lifecycle stage (production needs a maintainer)."""
    return svc.set_stage(principal, project, ref, body.stage)


@router.delete(V, response_model=VersionOut, **auth_rule(Role.MAINTAINER))
def delete_version(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> VersionOut:
    return svc.delete_version(principal, project, ref)


@router.get(V + "/files/{path:path}", **auth_rule(Role.VIEWER))
def download_file(
    project: str,
    ref: str,
    path: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> StreamingResponse:
    """One file of the version's package, checked against its sha256 (sent as the ETag)."""
    sha = svc.package_file(principal, project, ref, path)
    stream = svc.store.artifacts.open_verified(sha)

    def chunks() -> Iterator[bytes]:
        with stream:
            while block := stream.read(1024 * 1024):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"ETag": f'"{sha}"', "X-Content-Type-Options": "nosniff"},
    )


@router.get(V + "/lineage", response_model=ModelLineageOut, **auth_rule(Role.VIEWER))
def version_lineage(
    project: str,
    ref: str,
    depth: int = 10,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelLineageOut:
    return svc.lineage(principal, project, ref, depth=depth)


@router.get(V + "/card", response_model=ModelCard, **auth_rule(Role.VIEWER))
def version_card(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> ModelCard:
    from modelworks.registry.card import model_card

    return model_card(svc, principal, project, ref)


@router.get(V + "/importance", **auth_rule(Role.VIEWER))
def version_importance(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> dict[str, Any]:
    return svc.get_importance(principal, project, ref)


# ---- aliases and approvals ----------------------------------------------------------------
@router.put(M + "/aliases/{alias}", response_model=AliasOut, **auth_rule(Role.EDITOR))
def set_alias(
    project: str,
    name: str,
    alias: str,
    body: AliasIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> AliasOut:
    """Point the alias at a version; on a protected alias an editor's move is a request."""
    version: int | str = int(body.version) if body.version.isdigit() else body.version
    return svc.set_alias(principal, project, name, alias, version, reason=body.reason)


@router.delete(M + "/aliases/{alias}", status_code=204, **auth_rule(Role.EDITOR))
def delete_alias(
    project: str,
    name: str,
    alias: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> None:
    svc.delete_alias(principal, project, name, alias)


@router.get(P + "/model-policy", response_model=PolicyOut, **auth_rule(Role.VIEWER))
def get_policy(
    project: str,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> PolicyOut:
    return svc.get_policy(principal, project)


@router.put(P + "/model-policy", response_model=PolicyOut, **auth_rule(Role.ADMIN))
def set_policy(
    project: str,
    body: PolicyIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> PolicyOut:
    return svc.set_policy(principal, project, body.protected_aliases)


@router.get(P + "/alias-requests", response_model=list[AliasRequestOut], **auth_rule(Role.VIEWER))
def list_requests(
    project: str,
    status: str = "pending",
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> list[AliasRequestOut]:
    return svc.list_requests(principal, project, status=status or None)


@router.post(
    P + "/alias-requests/{request_id}/approve",
    response_model=AliasRequestOut,
    **auth_rule(Role.MAINTAINER),
)
def approve_request(
    project: str,
    request_id: str,
    body: DecisionIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> AliasRequestOut:
    return svc.decide_request(principal, project, request_id, approve=True, note=body.note)


@router.post(
    P + "/alias-requests/{request_id}/reject",
    response_model=AliasRequestOut,
    **auth_rule(Role.MAINTAINER),
)
def reject_request(
    project: str,
    request_id: str,
    body: DecisionIn,
    principal: Principal = Depends(current_principal),
    svc: RegistryService = Depends(registry),
) -> AliasRequestOut:
    return svc.decide_request(principal, project, request_id, approve=False, note=body.note)


# ---- evaluations, comparisons and explanations -------------------------------------------------
def evaluations(request: Request) -> EvaluationService:
    svc: EvaluationService | None = getattr(request.app.state, "evaluations", None)
    if svc is None:
        svc = request.app.state.evaluations = EvaluationService(request.app.state.store)
    return svc


class EvaluateIn(_In):
    dataset: str = Field(description="A dataset version, e.g. churn@3")
    target: str | None = Field(None, description="Default: the target the model trained on")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    slice_by: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    bootstrap: int = Field(1000, ge=0, le=10_000)
    seed: int = 0


class CompareIn(_In):
    dataset: str
    champion: str = "champion"
    challenger: str = "challenger"
    target: str | None = None
    ignore: list[str] = Field(default_factory=list)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    n_resamples: int = Field(1000, ge=100, le=10_000)
    seed: int = 0


class ImportanceIn(_In):
    dataset: str
    target: str | None = None
    ignore: list[str] = Field(default_factory=list)
    max_rows: int = Field(2000, ge=10, le=100_000)
    seed: int = 0


class ExplainIn(_In):
    rows: list[dict[str, Any]] = Field(description="Up to 100 records with the model's inputs")
    background: str | None = Field(None, description="A dataset version to draw baselines from")
    class_index: int | None = None


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.post(
    V + "/evaluations", status_code=201, response_model=EvaluationOut, **auth_rule(Role.EDITOR)
)
def evaluate(
    project: str,
    ref: str,
    body: EvaluateIn,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> EvaluationOut:
    """Evaluate the version on a dataset version (metrics, intervals, slices, plots)."""
    return svc.evaluate(
        principal, project, ref, body.dataset, target=body.target, threshold=body.threshold,
        slice_by=body.slice_by, ignore=body.ignore, bootstrap=body.bootstrap, seed=body.seed,
    )  # fmt: skip


@router.get(V + "/evaluations", response_model=list[EvaluationOut], **auth_rule(Role.VIEWER))
def list_evaluations(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> list[EvaluationOut]:
    return svc.list_evaluations(principal, project, ref)


@router.get(P + "/evaluations/{evaluation_id}", response_model=EvaluationOut,
            **auth_rule(Role.VIEWER))  # fmt: skip
def get_evaluation(
    project: str,
    evaluation_id: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> EvaluationOut:
    return svc.get_evaluation(principal, project, evaluation_id)


@router.get(P + "/evaluations/{evaluation_id}/plots/{name}", **auth_rule(Role.VIEWER))
def evaluation_plot(
    project: str,
    evaluation_id: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    return _png(svc.plot(principal, project, "evaluation", evaluation_id, name))


@router.post(
    M + "/comparisons", status_code=201, response_model=ComparisonOut, **auth_rule(Role.EDITOR)
)
def compare(
    project: str,
    name: str,
    body: CompareIn,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> ComparisonOut:
    """Champion vs challenger on one dataset version, with paired tests and a verdict."""
    return svc.compare(
        principal, project, name, body.dataset, champion=body.champion,
        challenger=body.challenger, target=body.target, ignore=body.ignore, alpha=body.alpha,
        n_resamples=body.n_resamples, seed=body.seed,
    )  # fmt: skip


@router.get(M + "/comparisons", response_model=list[ComparisonOut], **auth_rule(Role.VIEWER))
def list_comparisons(
    project: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> list[ComparisonOut]:
    return svc.list_comparisons(principal, project, name)


@router.get(P + "/comparisons/{comparison_id}", response_model=ComparisonOut,
            **auth_rule(Role.VIEWER))  # fmt: skip
def get_comparison(
    project: str,
    comparison_id: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> ComparisonOut:
    return svc.get_comparison(principal, project, comparison_id)


@router.get(P + "/comparisons/{comparison_id}/plots/{name}", **auth_rule(Role.VIEWER))
def comparison_plot(
    project: str,
    comparison_id: str,
    name: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    return _png(svc.plot(principal, project, "comparison", comparison_id, name))


@router.post(V + "/importance", **auth_rule(Role.EDITOR))
def compute_importance(
    project: str,
    ref: str,
    body: ImportanceIn,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> dict[str, Any]:
    """Compute (and store with the version) permutation and SHAP importance."""
    return svc.explain_global(
        principal, project, ref, body.dataset, target=body.target, ignore=body.ignore,
        max_rows=body.max_rows, seed=body.seed,
    )  # fmt: skip


@router.get(V + "/importance.png", **auth_rule(Role.VIEWER))
def importance_plot(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    return _png(svc.importance_plot(principal, project, ref))


@router.post(V + "/explain", **auth_rule(Role.VIEWER))
def explain(
    project: str,
    ref: str,
    body: ExplainIn,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> list[dict[str, Any]]:
    """SHAP values with the base value for each given row (at most 100)."""
    return svc.explain_rows(
        principal, project, ref, body.rows, background=body.background,
        class_index=body.class_index,
    )  # fmt: skip
