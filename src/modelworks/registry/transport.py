"""The registry SDK's two transports: RegistryService in this process, or its REST routes.

Both implement :class:`RegistryBackend` (the service's methods minus the principal) and
return the same Pydantic objects, so :mod:`modelworks.registry.client` never knows which one
it talks to. Package bytes travel as files: embedded, straight out of the artifact store;
remote, one download per file checked against its sha256, and uploads as one tarball.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx
from pydantic import TypeAdapter

from modelworks.core.errors import AlreadyExists, CorruptData, ServiceUnavailable
from modelworks.core.schemas import Page
from modelworks.registry.schemas import (
    AliasOut,
    AliasRequestOut,
    ComparisonOut,
    EvaluationOut,
    ModelCard,
    ModelLineageOut,
    ModelOut,
    PolicyOut,
    VersionOut,
)
from modelworks.transport import API, DOWNLOAD_CHUNK, HttpClient, _seg

if TYPE_CHECKING:
    from modelworks.core.auth import Principal
    from modelworks.core.store import Store

_VERSIONS = TypeAdapter(list[VersionOut])
_REQUESTS = TypeAdapter(list[AliasRequestOut])
_EVALUATIONS = TypeAdapter(list[EvaluationOut])
_COMPARISONS = TypeAdapter(list[ComparisonOut])


class RegistryBackend(Protocol):
    """RegistryService (and EvaluationService) minus the principal, as the SDK sees it."""

    def create_model(
        self, project: str, name: str, description: str = "", tags: Mapping[str, Any] | None = None
    ) -> ModelOut: ...

    def get_model(self, project: str, name: str) -> ModelOut: ...

    def list_models(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelOut]: ...

    def update_model(
        self,
        project: str,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelOut: ...

    def delete_model(self, project: str, name: str) -> ModelOut: ...

    def restore_model(self, project: str, name: str) -> ModelOut: ...

    def register_run(
        self,
        project: str,
        name: str,
        run_id: str,
        *,
        artifact_path: str = "model",
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut: ...

    def register_package(
        self,
        project: str,
        name: str,
        package_dir: str | os.PathLike[str],
        *,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut: ...

    def get_version(self, project: str, ref: str) -> VersionOut: ...

    def list_versions(
        self, project: str, name: str, *, include_deleted: bool = False
    ) -> list[VersionOut]: ...

    def update_version(
        self,
        project: str,
        ref: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        card: Mapping[str, str] | None = None,
    ) -> VersionOut: ...

    def set_stage(self, project: str, ref: str, stage: str) -> VersionOut: ...

    def delete_version(self, project: str, ref: str) -> VersionOut: ...

    def download_package(self, project: str, ref: str, dest: str | os.PathLike[str]) -> Path: ...

    def set_alias(
        self, project: str, name: str, alias: str, version: int | str, *, reason: str = ""
    ) -> AliasOut: ...

    def delete_alias(self, project: str, name: str, alias: str) -> None: ...

    def get_policy(self, project: str) -> PolicyOut: ...

    def set_policy(self, project: str, protected_aliases: list[str]) -> PolicyOut: ...

    def list_requests(
        self, project: str, *, status: str | None = "pending"
    ) -> list[AliasRequestOut]: ...

    def decide_request(
        self, project: str, request_id: str, *, approve: bool, note: str = ""
    ) -> AliasRequestOut: ...

    def lineage(self, project: str, ref: str, *, depth: int = 10) -> ModelLineageOut: ...

    def card(self, project: str, ref: str) -> ModelCard: ...

    def get_importance(self, project: str, ref: str) -> dict[str, Any]: ...

    def evaluate(
        self,
        project: str,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        threshold: float = 0.5,
        slice_by: Sequence[str] = (),
        ignore: Sequence[str] = (),
        bootstrap: int = 1000,
        seed: int = 0,
    ) -> EvaluationOut: ...

    def list_evaluations(self, project: str, ref: str) -> list[EvaluationOut]: ...

    def get_evaluation(self, project: str, evaluation_id: str) -> EvaluationOut: ...

    def plot(self, project: str, kind: str, object_id: str, name: str) -> bytes: ...

    def compare(
        self,
        project: str,
        name: str,
        dataset: str,
        *,
        champion: str = "champion",
        challenger: str = "challenger",
        target: str | None = None,
        ignore: Sequence[str] = (),
        alpha: float = 0.05,
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> ComparisonOut: ...

    def list_comparisons(self, project: str, name: str) -> list[ComparisonOut]: ...

    def get_comparison(self, project: str, comparison_id: str) -> ComparisonOut: ...

    def explain_global(
        self,
        project: str,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        ignore: Sequence[str] = (),
        max_rows: int = 2000,
        seed: int = 0,
    ) -> dict[str, Any]: ...

    def explain_rows(
        self,
        project: str,
        ref: str,
        rows: list[dict[str, Any]],
        *,
        background: str | None = None,
        class_index: int | None = None,
    ) -> list[dict[str, Any]]: ...


_METHODS = frozenset(
    n for n, v in vars(RegistryBackend).items() if callable(v) and not n.startswith("_")
)
# Served by EvaluationService rather than RegistryService.
_EVALUATION_METHODS = frozenset(
    {"evaluate", "list_evaluations", "get_evaluation", "plot", "compare", "list_comparisons",
     "get_comparison", "explain_global", "explain_rows"}
)  # fmt: skip


class EmbeddedRegistry:
    """The registry services with the principal bound: every call runs in this process."""

    def __init__(self, store: Store, principal: Principal) -> None:
        from modelworks.registry.evaluations import EvaluationService

        self.store = store
        self.principal = principal
        self.evaluations = EvaluationService(store)
        self.service = self.evaluations.registry

    def card(self, project: str, ref: str) -> ModelCard:
        from modelworks.registry.card import model_card

        return model_card(self.service, self.principal, project, ref)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in _METHODS:
            raise AttributeError(name)
        owner = self.evaluations if name in _EVALUATION_METHODS else self.service
        bound = functools.partial(getattr(owner, name), self.principal)
        setattr(self, name, bound)
        return bound


def embedded_registry(store: Store, principal: Principal | None = None) -> RegistryBackend:
    from modelworks.core.auth import local_principal

    return cast(RegistryBackend, EmbeddedRegistry(store, principal or local_principal()))


class RemoteRegistry:
    """The registry routes of a Modelworks server."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def _p(self, project: str) -> str:
        return f"{API}/projects/{_seg(project)}"

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.request("GET", path, idempotent=True, params=params)

    def _send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, path, idempotent=method != "POST", json_body=body)

    # -- models
    def create_model(
        self, project: str, name: str, description: str = "", tags: Mapping[str, Any] | None = None
    ) -> ModelOut:
        body = {"name": name, "description": description, "tags": dict(tags or {})}
        return ModelOut.model_validate_json(
            self._send("POST", f"{self._p(project)}/models", body).content
        )

    def get_model(self, project: str, name: str) -> ModelOut:
        resp = self._get(f"{self._p(project)}/models/{_seg(name)}")
        return ModelOut.model_validate_json(resp.content)

    def list_models(
        self,
        project: str,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelOut]:
        params: dict[str, Any] = {"include_deleted": include_deleted, "max_results": max_results}
        if page_token:
            params["page_token"] = page_token
        resp = self._get(f"{self._p(project)}/models", params)
        return Page[ModelOut].model_validate_json(resp.content)

    def update_model(
        self,
        project: str,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelOut:
        body = {"description": description, "tags": None if tags is None else dict(tags)}
        resp = self._send("PATCH", f"{self._p(project)}/models/{_seg(name)}", body)
        return ModelOut.model_validate_json(resp.content)

    def delete_model(self, project: str, name: str) -> ModelOut:
        resp = self._send("DELETE", f"{self._p(project)}/models/{_seg(name)}")
        return ModelOut.model_validate_json(resp.content)

    def restore_model(self, project: str, name: str) -> ModelOut:
        resp = self._send("POST", f"{self._p(project)}/models/{_seg(name)}/restore")
        return ModelOut.model_validate_json(resp.content)

    # -- versions
    def register_run(
        self,
        project: str,
        name: str,
        run_id: str,
        *,
        artifact_path: str = "model",
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut:
        body = {
            "run_id": run_id,
            "artifact_path": artifact_path,
            "description": description,
            "tags": dict(tags or {}),
        }
        resp = self._send("POST", f"{self._p(project)}/models/{_seg(name)}/versions", body)
        return VersionOut.model_validate_json(resp.content)

    def register_package(
        self,
        project: str,
        name: str,
        package_dir: str | os.PathLike[str],
        *,
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut:
        """Upload the package as one verified tarball; the server checks it again."""
        import json

        from modelworks.registry.export import export_tarball

        with tempfile.TemporaryDirectory(prefix="modelworks-upload-") as tmp:
            archive = export_tarball(Path(package_dir), Path(tmp) / "package.tar.gz")
            params = {"description": description, "tags": json.dumps(dict(tags or {}))}
            resp = self.http.request(
                "PUT",
                f"{self._p(project)}/models/{_seg(name)}/versions/package",
                idempotent=False,
                params=params,
                content=lambda: open(archive, "rb"),  # noqa: SIM115 - the client closes it
                headers={"Content-Type": "application/gzip"},
            )
        return VersionOut.model_validate_json(resp.content)

    def _v(self, project: str, ref: str) -> str:
        return f"{self._p(project)}/model-versions/{_seg(ref)}"

    def get_version(self, project: str, ref: str) -> VersionOut:
        return VersionOut.model_validate_json(self._get(self._v(project, ref)).content)

    def list_versions(
        self, project: str, name: str, *, include_deleted: bool = False
    ) -> list[VersionOut]:
        resp = self._get(
            f"{self._p(project)}/models/{_seg(name)}/versions",
            {"include_deleted": include_deleted},
        )
        return _VERSIONS.validate_json(resp.content)

    def update_version(
        self,
        project: str,
        ref: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        card: Mapping[str, str] | None = None,
    ) -> VersionOut:
        body = {
            "description": description,
            "tags": None if tags is None else dict(tags),
            "card": None if card is None else dict(card),
        }
        resp = self._send("PATCH", self._v(project, ref), body)
        return VersionOut.model_validate_json(resp.content)

    def set_stage(self, project: str, ref: str, stage: str) -> VersionOut:
        resp = self._send("PUT", f"{self._v(project, ref)}/stage", {"stage": stage})
        return VersionOut.model_validate_json(resp.content)

    def delete_version(self, project: str, ref: str) -> VersionOut:
        return VersionOut.model_validate_json(self._send("DELETE", self._v(project, ref)).content)

    def download_package(self, project: str, ref: str, dest: str | os.PathLike[str]) -> Path:
        """Each file streamed and checked against its sha256; the folder appears whole."""
        from modelworks.training.package import verify_package

        version = self.get_version(project, ref)
        target = Path(dest)
        if target.exists() and any(target.iterdir()):
            raise AlreadyExists(f"{target} exists and is not empty; pick a new folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            for rel, info in version.files.items():
                self._download_file(project, version.ref, rel, str(info["sha256"]), tmp / rel)
            verify_package(tmp)
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _download_file(self, project: str, ref: str, rel: str, sha256: str, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        url = f"{self._v(project, ref)}/files/{rel}"
        with self.http.stream("GET", url) as resp, open(out, "wb") as fh:
            try:
                for chunk in resp.iter_bytes(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
            except httpx.TransportError as exc:
                raise ServiceUnavailable(
                    f"The download of {rel} of {ref} broke off ({exc}); try again."
                ) from exc
        if digest.hexdigest() != sha256:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            raise CorruptData(
                f"{rel} of {ref} arrived with sha256 {digest.hexdigest()[:12]}..., not "
                f"{sha256[:12]}...; nothing was kept. Try again."
            )

    # -- aliases and approvals
    def set_alias(
        self, project: str, name: str, alias: str, version: int | str, *, reason: str = ""
    ) -> AliasOut:
        body = {"version": str(version), "reason": reason}
        resp = self._send(
            "PUT", f"{self._p(project)}/models/{_seg(name)}/aliases/{_seg(alias)}", body
        )
        return AliasOut.model_validate_json(resp.content)

    def delete_alias(self, project: str, name: str, alias: str) -> None:
        self._send("DELETE", f"{self._p(project)}/models/{_seg(name)}/aliases/{_seg(alias)}")

    def get_policy(self, project: str) -> PolicyOut:
        return PolicyOut.model_validate_json(self._get(f"{self._p(project)}/model-policy").content)

    def set_policy(self, project: str, protected_aliases: list[str]) -> PolicyOut:
        body = {"protected_aliases": list(protected_aliases)}
        resp = self._send("PUT", f"{self._p(project)}/model-policy", body)
        return PolicyOut.model_validate_json(resp.content)

    def list_requests(
        self, project: str, *, status: str | None = "pending"
    ) -> list[AliasRequestOut]:
        params = {"status": status} if status else {"status": ""}
        resp = self._get(f"{self._p(project)}/alias-requests", params)
        return _REQUESTS.validate_json(resp.content)

    def decide_request(
        self, project: str, request_id: str, *, approve: bool, note: str = ""
    ) -> AliasRequestOut:
        action = "approve" if approve else "reject"
        resp = self._send(
            "POST",
            f"{self._p(project)}/alias-requests/{_seg(request_id)}/{action}",
            {"note": note},
        )
        return AliasRequestOut.model_validate_json(resp.content)

    # -- lineage, card, importance
    def lineage(self, project: str, ref: str, *, depth: int = 10) -> ModelLineageOut:
        resp = self._get(f"{self._v(project, ref)}/lineage", {"depth": depth})
        return ModelLineageOut.model_validate_json(resp.content)

    def card(self, project: str, ref: str) -> ModelCard:
        return ModelCard.model_validate_json(self._get(f"{self._v(project, ref)}/card").content)

    def get_importance(self, project: str, ref: str) -> dict[str, Any]:
        return dict(self._get(f"{self._v(project, ref)}/importance").json())

    # -- evaluations, comparisons, explanations
    def evaluate(
        self,
        project: str,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        threshold: float = 0.5,
        slice_by: Sequence[str] = (),
        ignore: Sequence[str] = (),
        bootstrap: int = 1000,
        seed: int = 0,
    ) -> EvaluationOut:
        body = {
            "dataset": dataset, "target": target, "threshold": threshold,
            "slice_by": list(slice_by), "ignore": list(ignore), "bootstrap": bootstrap,
            "seed": seed,
        }  # fmt: skip
        resp = self._send("POST", f"{self._v(project, ref)}/evaluations", body)
        return EvaluationOut.model_validate_json(resp.content)

    def list_evaluations(self, project: str, ref: str) -> list[EvaluationOut]:
        return _EVALUATIONS.validate_json(self._get(f"{self._v(project, ref)}/evaluations").content)

    def get_evaluation(self, project: str, evaluation_id: str) -> EvaluationOut:
        resp = self._get(f"{self._p(project)}/evaluations/{_seg(evaluation_id)}")
        return EvaluationOut.model_validate_json(resp.content)

    def plot(self, project: str, kind: str, object_id: str, name: str) -> bytes:
        folder = "evaluations" if kind == "evaluation" else "comparisons"
        resp = self._get(f"{self._p(project)}/{folder}/{_seg(object_id)}/plots/{_seg(name)}")
        return resp.content

    def compare(
        self,
        project: str,
        name: str,
        dataset: str,
        *,
        champion: str = "champion",
        challenger: str = "challenger",
        target: str | None = None,
        ignore: Sequence[str] = (),
        alpha: float = 0.05,
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> ComparisonOut:
        body = {
            "dataset": dataset, "champion": champion, "challenger": challenger,
            "target": target, "ignore": list(ignore), "alpha": alpha,
            "n_resamples": n_resamples, "seed": seed,
        }  # fmt: skip
        resp = self._send("POST", f"{self._p(project)}/models/{_seg(name)}/comparisons", body)
        return ComparisonOut.model_validate_json(resp.content)

    def list_comparisons(self, project: str, name: str) -> list[ComparisonOut]:
        resp = self._get(f"{self._p(project)}/models/{_seg(name)}/comparisons")
        return _COMPARISONS.validate_json(resp.content)

    def get_comparison(self, project: str, comparison_id: str) -> ComparisonOut:
        resp = self._get(f"{self._p(project)}/comparisons/{_seg(comparison_id)}")
        return ComparisonOut.model_validate_json(resp.content)

    def explain_global(
        self,
        project: str,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        ignore: Sequence[str] = (),
        max_rows: int = 2000,
        seed: int = 0,
    ) -> dict[str, Any]:
        body = {"dataset": dataset, "target": target, "ignore": list(ignore),
                "max_rows": max_rows, "seed": seed}  # fmt: skip
        return dict(self._send("POST", f"{self._v(project, ref)}/importance", body).json())

    def explain_rows(
        self,
        project: str,
        ref: str,
        rows: list[dict[str, Any]],
        *,
        background: str | None = None,
        class_index: int | None = None,
    ) -> list[dict[str, Any]]:
        body = {"rows": rows, "background": background, "class_index": class_index}
        return list(self._send("POST", f"{self._v(project, ref)}/explain", body).json())
