"""The registry in the SDK: ``ws.models``.

>>> v = ws.models.register("churn", run=run.id)               # doctest: +SKIP
>>> ws.models.set_alias("churn", "champion", v.version)        # doctest: +SKIP
>>> model = ws.models.load("churn@champion")                   # doctest: +SKIP
>>> model.predict_proba(frame)                                 # doctest: +SKIP
>>> print(ws.models.card("churn@champion").markdown)           # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.client import Workspace
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
    from modelworks.registry.transport import RegistryBackend
    from modelworks.training.package import ModelPackage, PackageMeta

ExportFormat = Literal["folder", "tar", "onnx"]


class Models:
    """Registered models of the workspace's project."""

    def __init__(self, workspace: Workspace, backend: RegistryBackend | None) -> None:
        self._ws = workspace
        self._registry = backend

    @property
    def backend(self) -> RegistryBackend:
        if self._registry is None:
            raise InvalidInput(
                "This workspace was made without a registry backend; open it with mw.connect()."
            )
        return self._registry

    @property
    def _p(self) -> str:
        return self._ws.project

    # -- models
    def create(
        self, name: str, description: str = "", tags: Mapping[str, Any] | None = None
    ) -> ModelOut:
        return self.backend.create_model(self._p, name, description, tags)

    def get(self, name: str) -> ModelOut:
        return self.backend.get_model(self._p, name)

    def list(self, *, include_deleted: bool = False, page_token: str | None = None
             ) -> Page[ModelOut]:  # fmt: skip
        return self.backend.list_models(
            self._p, include_deleted=include_deleted, page_token=page_token
        )

    def list_all(self) -> Iterator[ModelOut]:
        token: str | None = None
        while True:
            page = self.list(page_token=token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelOut:
        return self.backend.update_model(self._p, name, description=description, tags=tags)

    def delete(self, name: str) -> ModelOut:
        return self.backend.delete_model(self._p, name)

    def restore(self, name: str) -> ModelOut:
        return self.backend.restore_model(self._p, name)

    # -- versions
    def register(
        self,
        name: str,
        *,
        run: Any = None,
        package: str | os.PathLike[str] | None = None,
        artifact_path: str = "model",
        description: str = "",
        tags: Mapping[str, Any] | None = None,
    ) -> VersionOut:
        """A new version of ``name`` from a run's logged package (``run=``, a run or its id)
        or from a package folder or tarball on this machine (``package=``)."""
        if (run is None) == (package is None):
            raise InvalidInput("Pass exactly one of run= (a run or its id) or package= (a path).")
        if run is not None:
            run_id = run if isinstance(run, str) else str(run.id)
            return self.backend.register_run(
                self._p, name, run_id, artifact_path=artifact_path,
                description=description, tags=tags,
            )  # fmt: skip
        path = Path(str(package))
        if path.is_file():  # a tarball: unpack (safely) and verify first
            import tempfile

            from modelworks.registry.export import import_package

            with tempfile.TemporaryDirectory(prefix="modelworks-import-") as tmp:
                import_package(path, Path(tmp) / "package")
                return self.backend.register_package(
                    self._p, name, Path(tmp) / "package", description=description, tags=tags
                )
        return self.backend.register_package(
            self._p, name, path, description=description, tags=tags
        )

    def version(self, ref: str) -> VersionOut:
        """One version: ``churn@3``, ``churn@champion``, ``churn@latest`` or ``churn``."""
        return self.backend.get_version(self._p, ref)

    def versions(self, name: str, *, include_deleted: bool = False) -> builtins.list[VersionOut]:
        return self.backend.list_versions(self._p, name, include_deleted=include_deleted)

    def update_version(
        self,
        ref: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        card: Mapping[str, str] | None = None,
    ) -> VersionOut:
        """Description, tags, or model card fields (intended_use, limitations, ...)."""
        return self.backend.update_version(
            self._p, ref, description=description, tags=tags, card=card
        )

    def set_stage(self, ref: str, stage: str) -> VersionOut:
        return self.backend.set_stage(self._p, ref, stage)

    def delete_version(self, ref: str) -> VersionOut:
        return self.backend.delete_version(self._p, ref)

    # -- aliases
    def set_alias(self, name: str, alias: str, version: int | str, *, reason: str = ""
                  ) -> AliasOut:  # fmt: skip
        """Point ``name@alias`` at ``version`` (a number or a reference). On a protected
        alias an editor gets ``status='pending_approval'`` until a maintainer approves."""
        return self.backend.set_alias(self._p, name, alias, version, reason=reason)

    def delete_alias(self, name: str, alias: str) -> None:
        self.backend.delete_alias(self._p, name, alias)

    def policy(self) -> PolicyOut:
        return self.backend.get_policy(self._p)

    def set_policy(self, protected_aliases: builtins.list[str]) -> PolicyOut:
        return self.backend.set_policy(self._p, protected_aliases)

    def requests(self, status: str | None = "pending") -> builtins.list[AliasRequestOut]:
        return self.backend.list_requests(self._p, status=status)

    def approve(self, request_id: str, note: str = "") -> AliasRequestOut:
        return self.backend.decide_request(self._p, request_id, approve=True, note=note)

    def reject(self, request_id: str, note: str = "") -> AliasRequestOut:
        return self.backend.decide_request(self._p, request_id, approve=False, note=note)

    # -- what is known about a version
    def card(self, ref: str) -> ModelCard:
        return self.backend.card(self._p, ref)

    def lineage(self, ref: str, *, depth: int = 10) -> ModelLineageOut:
        return self.backend.lineage(self._p, ref, depth=depth)

    def importance(self, ref: str) -> dict[str, Any]:
        return self.backend.get_importance(self._p, ref)

    # -- evaluation, comparison, explanations
    def evaluate(
        self,
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
        """Evaluate a version on a dataset version; the result is stored with both.

        ``target`` defaults to the column the model was trained to predict; ``slice_by``
        columns get metrics per value (and the worst slices); ``ignore`` names columns of
        the dataset that are not model inputs (ids...).

        >>> ev = ws.models.evaluate("churn@champion", "churn@7", slice_by=["country"])
        ... # doctest: +SKIP
        >>> ev.result["metrics"]["roc_auc"], ev.result["intervals"]["roc_auc"]  # doctest: +SKIP
        """
        return self.backend.evaluate(
            self._p, ref, dataset, target=target, threshold=threshold, slice_by=slice_by,
            ignore=ignore, bootstrap=bootstrap, seed=seed,
        )  # fmt: skip

    def evaluations(self, ref: str) -> builtins.list[EvaluationOut]:
        return self.backend.list_evaluations(self._p, ref)

    def evaluation(self, evaluation_id: str) -> EvaluationOut:
        return self.backend.get_evaluation(self._p, evaluation_id)

    def plot(self, result: EvaluationOut | ComparisonOut | str, name: str) -> bytes:
        """A stored plot (PNG bytes) of an evaluation or comparison, e.g. ``"roc.png"``."""
        from modelworks.registry.schemas import ComparisonOut

        kind = "comparison" if isinstance(result, ComparisonOut) else "evaluation"
        object_id = result if isinstance(result, str) else result.id
        return self.backend.plot(self._p, kind, object_id, name)

    def compare(
        self,
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
        """Champion vs challenger on the same rows: McNemar, DeLong and a paired bootstrap,
        with a verdict and its p-value.

        >>> cmp = ws.models.compare("churn", "churn@7")  # doctest: +SKIP
        >>> cmp.verdict, cmp.p_value  # doctest: +SKIP
        """
        return self.backend.compare(
            self._p, name, dataset, champion=champion, challenger=challenger, target=target,
            ignore=ignore, alpha=alpha, n_resamples=n_resamples, seed=seed,
        )  # fmt: skip

    def comparisons(self, name: str) -> builtins.list[ComparisonOut]:
        return self.backend.list_comparisons(self._p, name)

    def explain(
        self,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        ignore: Sequence[str] = (),
        max_rows: int = 2000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Global importance (permutation, and SHAP where the model allows) on a sample of
        ``dataset``, stored with the version."""
        return self.backend.explain_global(
            self._p, ref, dataset, target=target, ignore=ignore, max_rows=max_rows, seed=seed
        )

    def explain_rows(
        self,
        ref: str,
        rows: Any,
        *,
        background: str | None = None,
        class_index: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """SHAP values with the base value for each row (a DataFrame or a list of records).

        >>> [e["contributions"][0] for e in ws.models.explain_rows("churn@3", frame.head(2))]
        ... # doctest: +SKIP
        """
        import pandas as pd

        records = rows.to_dict(orient="records") if isinstance(rows, pd.DataFrame) else rows
        return self.backend.explain_rows(
            self._p, ref, list(records), background=background, class_index=class_index
        )

    # -- bytes
    def download(self, ref: str, dest: str | os.PathLike[str]) -> Path:
        """The version's package into the folder ``dest``, verified."""
        return self.backend.download_package(self._p, ref, dest)

    def load(self, ref: str, *, trust: bool = False) -> ModelPackage:
        """Load a version for predictions; its package is cached (and re-verified) under
        ``$MODELWORKS_HOME/cache/models``."""
        from modelworks.core.config import get_settings
        from modelworks.registry.package_cache import cached_package

        version = self.version(ref)
        return cached_package(
            get_settings().home_path,
            version.id,
            lambda folder: self.download(version.ref, folder),
            trust=trust,
        )

    def export(
        self, ref: str, dest: str | os.PathLike[str], *, format: ExportFormat = "folder"
    ) -> Path | PackageMeta:
        """A copy of the version's package: a folder, a ``.tar.gz``, or a folder with an
        ONNX model added (where the flavor converts)."""
        import tempfile

        from modelworks.registry import export

        target = Path(dest)
        with tempfile.TemporaryDirectory(prefix="modelworks-export-") as tmp:
            pkg = self.download(ref, Path(tmp) / "package")
            if format == "folder":
                return export.export_folder(pkg, target)
            if format == "tar":
                return export.export_tarball(pkg, target)
            if format == "onnx":
                from modelworks.registry.onnx_export import export_onnx

                return export_onnx(pkg, target)
        raise InvalidInput(f"Unknown export format {format!r}; use folder, tar or onnx.")

    def package(self, ref: str, dest: str | os.PathLike[str], *, port: int = 8080) -> Path:
        """A deployable folder: the package, pinned requirements.txt and a Dockerfile."""
        import tempfile

        from modelworks.registry.export import build_deployable

        version = self.version(ref)
        with tempfile.TemporaryDirectory(prefix="modelworks-package-") as tmp:
            pkg = self.download(version.ref, Path(tmp) / "package")
            return build_deployable(
                pkg, Path(dest), model_name=version.model, version=version.version, port=port
            )
