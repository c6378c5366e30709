"""EvaluationService: evaluate, compare and explain registered model versions on dataset
versions, and keep the results.

The computations are :mod:`modelworks.evaluation`'s (metrics, bootstrap intervals, slices,
paired tests, SHAP); this service feeds them a version's package and a dataset version's
rows, stores what they return (the full result as JSON, plots as PNG objects in the
artifact store) linked to both, and records the link in the lineage graph
(``dataset_version --evaluated_on--> model_version``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from modelworks.core import audit, lineage
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.governance.access import require_project
from modelworks.registry.models import ModelComparison, ModelEvaluation, ModelVersion
from modelworks.registry.schemas import ComparisonOut, EvaluationOut, VersionOut
from modelworks.registry.service import RegistryService
from modelworks.tracking.service import TrackingService
from modelworks.training.signature import validate_input

if TYPE_CHECKING:
    from modelworks.data.schemas import VersionOut as DatasetVersionOut
    from modelworks.training.package import ModelPackage

MAX_EXPLAIN_ROWS = 100


class EvaluationService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = RegistryService(store)
        self._data = DataService(store)
        self._tracking = TrackingService(store)

    # ---- inputs ------------------------------------------------------------------------
    def load(self, principal: Principal, project: str, ref: str) -> tuple[VersionOut, ModelPackage]:
        """The version and its package, loaded from a verified local copy (cached by id)."""
        from modelworks.registry.package_cache import cached_package

        version = self.registry.get_version(principal, project, ref)
        pkg = cached_package(
            self.store.settings.home_path,
            version.id,
            lambda folder: self.registry.download_package(principal, project, version.ref, folder),
        )
        return version, pkg

    def _target(self, principal: Principal, version: VersionOut, target: str | None) -> str:
        if target:
            return target
        found = version.params.get("target")
        if not found and version.run_id:
            run = self._tracking.get_run(principal, version.run_id)
            found = run.params.get("target")
        if not found:
            raise InvalidInput(
                f"Which column holds the true values? {version.ref} does not record its "
                "target; pass target= (--target in the CLI)."
            )
        return str(found)

    def _rows(
        self, principal: Principal, project: str, dataset: str, max_rows: int | None = None
    ) -> tuple[DatasetVersionOut, pd.DataFrame]:
        import pyarrow.parquet as pq

        info, paths = self._data.read_paths(principal, project, dataset)
        tables = []
        left = max_rows
        for path in paths:
            table = pq.read_table(path)
            if left is not None:
                table = table.slice(0, left)
                left -= table.num_rows
            tables.append(table)
            if left is not None and left <= 0:
                break
        import pyarrow as pa

        frame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
        return info, frame

    def _split(
        self,
        version: VersionOut,
        pkg: ModelPackage,
        frame: pd.DataFrame,
        dataset: str,
        target: str,
        ignore: Sequence[str],
    ) -> tuple[pd.DataFrame, pd.Series]:
        if target not in frame.columns:
            close = difflib.get_close_matches(target, [str(c) for c in frame.columns], n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidInput(f"The target {target!r} is not a column of {dataset}.{hint}")
        drop = [target, *[c for c in ignore if c in frame.columns]]
        feats = frame.drop(columns=drop)
        if pkg.signature is not None:
            try:
                feats = validate_input(pkg.signature, feats)  # type: ignore[assignment,unused-ignore]
            except InvalidInput as exc:
                raise InvalidInput(
                    f"{dataset} does not fit {version.ref}: {exc.detail} Pass the columns "
                    "that are not model inputs (ids, slice columns) with ignore=[...] "
                    "(--ignore in the CLI).",
                    **exc.extra,
                ) from None
        y = frame[target]
        if y.isna().any():
            raise InvalidInput(
                f"The target {target!r} of {dataset} has {int(y.isna().sum())} missing values; "
                "drop those rows (a transform) before evaluating."
            )
        return feats, y

    @staticmethod
    def _predict(pkg: ModelPackage, feats: pd.DataFrame) -> dict[str, Any]:
        if pkg.task in ("binary", "multiclass"):
            try:
                proba = pkg.predict_proba(feats)
            except (InvalidInput, AttributeError, NotImplementedError):
                return {"y_pred": pkg.predict(feats)}
            classes = list(pkg.classes or range(proba.shape[1]))
            y_pred = _label_array(classes)[np.argmax(proba, axis=1)]
            if proba.ndim == 2 and proba.shape[1] == 2:
                return {"y_pred": y_pred, "y_proba": proba[:, 1]}
            return {"y_pred": y_pred, "y_proba": proba}
        return {"y_pred": pkg.predict(feats)}

    @staticmethod
    def _task(pkg: ModelPackage) -> str:
        if pkg.task not in ("binary", "multiclass", "regression"):
            raise InvalidInput(
                f"Models of task {pkg.task!r} cannot be evaluated; evaluation covers binary, "
                "multiclass and regression models."
            )
        return pkg.task

    @staticmethod
    def _labels(pkg: ModelPackage, y: pd.Series) -> np.ndarray[Any, Any]:
        """True labels in the classes' own type (a dataset may store 1 as '1' or 1.0)."""
        classes = pkg.classes
        values = y.to_numpy()
        if not classes:
            return values
        # Map each distinct value once (not each row): a million labels cost one pass.
        codes, uniques = pd.factorize(values)
        by_text = {str(c): c for c in classes}
        mapped = [by_text.get(str(u), by_text.get(str(u).removesuffix(".0"), u)) for u in uniques]
        return _label_array(mapped)[codes]

    # ---- evaluation --------------------------------------------------------------------
    def evaluate(
        self,
        principal: Principal,
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
        """Evaluate ``ref`` on the dataset version ``dataset`` and store the result."""
        from modelworks.evaluation.metrics import evaluate_predictions
        from modelworks.evaluation.plots import plots_for

        version, pkg = self.load(principal, project, ref)
        task = self._task(pkg)
        target = self._target(principal, version, target)
        data_info, frame = self._rows(principal, project, dataset)
        missing = [c for c in slice_by if c not in frame.columns]
        if missing:
            raise InvalidInput(
                f"Slice column(s) {', '.join(map(repr, missing))} are not in {data_info.ref}."
            )
        inputs = set(pkg.signature.input_names) if pkg.signature else set()
        ignore_all = [*ignore, *[c for c in slice_by if c not in inputs]]
        feats, y = self._split(version, pkg, frame, data_info.ref, target, ignore_all)
        preds = self._predict(pkg, feats)
        classes = [c for c in pkg.classes] if pkg.classes and task != "regression" else None
        y_true = self._labels(pkg, y) if classes else y.to_numpy()
        result = evaluate_predictions(
            task,  # type: ignore[arg-type,unused-ignore]
            y_true,
            y_pred=preds.get("y_pred"),
            y_proba=preds.get("y_proba"),
            classes=classes,
            threshold=threshold,
            bootstrap=bootstrap,
            seed=seed,
            slices={c: frame[c].to_numpy() for c in slice_by} or None,
        )
        plots = {name: self.store.artifacts.put_bytes(png).sha256
                 for name, png in plots_for(result).items()}  # fmt: skip
        body = result.model_dump(mode="json")
        headline = str(body.get("headline") or "")
        value = body.get("metrics", {}).get(headline)
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Evaluating models")
            row = ModelEvaluation(
                id=new_id(), project_id=proj.id, model_id=version.model_id, version_id=version.id,
                dataset_version_id=data_info.id, dataset=data_info.ref, target=target, task=task,
                headline=headline, headline_value=None if value is None else float(value),
                result=body, plots=plots, created_by=principal.actor, created_at=utcnow(),
            )  # fmt: skip
            s.add(row)
            lineage.record(
                s, proj.id, lineage.Node("dataset_version", data_info.id, data_info.ref),
                lineage.Node("model_version", version.id, version.ref), "evaluated_on",
                {"evaluation": row.id, headline: value},
            )  # fmt: skip
            audit.record(
                s, principal, "model.evaluate", "model_version", version.id, project_id=proj.id,
                changes={"evaluation": row.id, "dataset": data_info.ref, headline: value},
            )  # fmt: skip
            return self._evaluation_out(row, version)

    def _evaluation_out(self, row: ModelEvaluation, version: VersionOut | None = None
                        ) -> EvaluationOut:  # fmt: skip
        model, number = (version.model, version.version) if version else self._names(row)
        return EvaluationOut(
            id=row.id, model=model, version=number, ref=f"{model}@{number}",
            dataset=row.dataset, dataset_version_id=row.dataset_version_id, target=row.target,
            task=row.task, headline=row.headline, headline_value=row.headline_value,
            result=row.result, plots=dict(row.plots or {}), created_by=row.created_by,
            created_at=row.created_at,
        )  # fmt: skip

    def _names(self, row: ModelEvaluation) -> tuple[str, int]:
        from modelworks.registry.models import RegisteredModel

        with self.store.read() as s:
            v = s.get(ModelVersion, row.version_id)
            m = s.get(RegisteredModel, row.model_id)
            return (m.name if m else row.model_id, v.version if v else 0)

    def list_evaluations(
        self, principal: Principal, project: str, ref: str, *, limit: int = 50
    ) -> list[EvaluationOut]:
        """Evaluations of one version, newest first."""
        version = self.registry.get_version(principal, project, ref)
        with self.store.read() as s:
            require_project(s, principal, project, Role.VIEWER, "Reading evaluations")
            rows = s.scalars(
                select(ModelEvaluation)
                .where(ModelEvaluation.version_id == version.id)
                .order_by(ModelEvaluation.created_at.desc(), ModelEvaluation.id.desc())
                .limit(limit)
            ).all()
            return [self._evaluation_out(r, version) for r in rows]

    def get_evaluation(self, principal: Principal, project: str, evaluation_id: str
                       ) -> EvaluationOut:  # fmt: skip
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading evaluations")
            row = s.get(ModelEvaluation, evaluation_id)
            if row is None or row.project_id != proj.id:
                raise NotFound(f"Evaluation {evaluation_id!r} does not exist in {proj.name!r}.")
            s.expunge(row)
        return self._evaluation_out(row)

    def plot(self, principal: Principal, project: str, kind: str, object_id: str, name: str
             ) -> bytes:  # fmt: skip
        """A stored plot (PNG) of an evaluation or a comparison."""
        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading evaluations")
            row: ModelEvaluation | ModelComparison | None = (
                s.get(ModelEvaluation, object_id)
                if kind == "evaluation"
                else s.get(ModelComparison, object_id)
            )
            if row is None or row.project_id != proj.id:
                raise NotFound(f"{kind.capitalize()} {object_id!r} does not exist.")
            sha = (row.plots or {}).get(name)
            if sha is None:
                raise NotFound(
                    f"{kind.capitalize()} {object_id} has no plot {name!r}; it has: "
                    f"{', '.join(row.plots or {}) or 'none'}."
                )
        return self.store.artifacts.get_bytes(sha)

    # ---- comparison --------------------------------------------------------------------
    def compare(
        self,
        principal: Principal,
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
        """Champion vs challenger on the same rows: paired tests, a verdict, a report."""
        from modelworks.evaluation.plots import comparison_png
        from modelworks.evaluation.stats import compare_predictions

        refs = [r if "@" in r else f"{name}@{r}" for r in (champion, challenger)]
        (v_a, pkg_a), (v_b, pkg_b) = (self.load(principal, project, r) for r in refs)
        if v_a.model_id != v_b.model_id:
            raise InvalidInput(f"{v_a.ref} and {v_b.ref} are versions of different models.")
        task = self._task(pkg_a)
        if self._task(pkg_b) != task:
            raise InvalidInput(f"{v_a.ref} is a {task} model but {v_b.ref} is {pkg_b.task}.")
        target = self._target(principal, v_a, target)
        data_info, frame = self._rows(principal, project, dataset)
        feats_a, y = self._split(v_a, pkg_a, frame, data_info.ref, target, ignore)
        feats_b, _ = self._split(v_b, pkg_b, frame, data_info.ref, target, ignore)
        classes = list(pkg_a.classes) if pkg_a.classes and task != "regression" else None
        y_true = self._labels(pkg_a, y) if classes else y.to_numpy()
        result = compare_predictions(
            task,  # type: ignore[arg-type,unused-ignore]
            y_true,
            champion=self._predict(pkg_a, feats_a),
            challenger=self._predict(pkg_b, feats_b),
            classes=classes,
            alpha=alpha,
            n_resamples=n_resamples,
            seed=seed,
        )
        plots = {"comparison.png": self.store.artifacts.put_bytes(comparison_png(result)).sha256}
        body = result.model_dump(mode="json")
        with self.store.transaction() as s:
            proj = require_project(s, principal, project, Role.EDITOR, "Comparing models")
            row = ModelComparison(
                id=new_id(), project_id=proj.id, model_id=v_a.model_id,
                champion_version_id=v_a.id, challenger_version_id=v_b.id, champion=v_a.ref,
                challenger=v_b.ref, dataset_version_id=data_info.id, dataset=data_info.ref,
                verdict=str(body["verdict"]), p_value=body.get("p_value"), result=body,
                plots=plots, created_by=principal.actor, created_at=utcnow(),
            )  # fmt: skip
            s.add(row)
            audit.record(
                s, principal, "model.compare", "registered_model", v_a.model_id,
                project_id=proj.id,
                changes={"comparison": row.id, "champion": v_a.ref, "challenger": v_b.ref,
                         "dataset": data_info.ref, "verdict": row.verdict,
                         "p_value": row.p_value},
            )  # fmt: skip
            return self._comparison_out(row, v_a.model)

    @staticmethod
    def _comparison_out(row: ModelComparison, model: str) -> ComparisonOut:
        return ComparisonOut(
            id=row.id, model=model, champion=row.champion, challenger=row.challenger,
            dataset=row.dataset, verdict=row.verdict, p_value=row.p_value, result=row.result,
            plots=dict(row.plots or {}), created_by=row.created_by, created_at=row.created_at,
        )  # fmt: skip

    def list_comparisons(self, principal: Principal, project: str, name: str, *, limit: int = 50
                         ) -> list[ComparisonOut]:  # fmt: skip
        model = self.registry.get_model(principal, project, name)
        with self.store.read() as s:
            require_project(s, principal, project, Role.VIEWER, "Reading comparisons")
            rows = s.scalars(
                select(ModelComparison)
                .where(ModelComparison.model_id == model.id)
                .order_by(ModelComparison.created_at.desc(), ModelComparison.id.desc())
                .limit(limit)
            ).all()
            return [self._comparison_out(r, model.name) for r in rows]

    def get_comparison(self, principal: Principal, project: str, comparison_id: str
                       ) -> ComparisonOut:  # fmt: skip
        from modelworks.registry.models import RegisteredModel

        with self.store.read() as s:
            proj = require_project(s, principal, project, Role.VIEWER, "Reading comparisons")
            row = s.get(ModelComparison, comparison_id)
            if row is None or row.project_id != proj.id:
                raise NotFound(f"Comparison {comparison_id!r} does not exist in {proj.name!r}.")
            model = s.get(RegisteredModel, row.model_id)
            return self._comparison_out(row, model.name if model else row.model_id)

    # ---- explanations ------------------------------------------------------------------
    def explain_global(
        self,
        principal: Principal,
        project: str,
        ref: str,
        dataset: str,
        *,
        target: str | None = None,
        ignore: Sequence[str] = (),
        max_rows: int = 2000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Permutation importance (and mean |SHAP| where the model allows) on a sample of
        ``dataset``; stored with the version and returned."""
        from modelworks.evaluation.explain import global_importance
        from modelworks.evaluation.explain_plots import importance_png

        version, pkg = self.load(principal, project, ref)
        target = self._target(principal, version, target)
        data_info, frame = self._rows(principal, project, dataset)
        if len(frame) > max_rows:
            frame = frame.sample(n=max_rows, random_state=seed)
        feats, y = self._split(version, pkg, frame, data_info.ref, target, ignore)
        y_true = self._labels(pkg, y) if pkg.classes and pkg.task != "regression" else y
        result = global_importance(pkg, feats, y_true, task=pkg.task, max_rows=max_rows, seed=seed)
        body = result.model_dump(mode="json")
        body["dataset"] = data_info.ref
        body["plot"] = self.store.artifacts.put_bytes(importance_png(result)).sha256
        self.registry.set_importance(principal, project, version.ref, body)
        return body

    def explain_rows(
        self,
        principal: Principal,
        project: str,
        ref: str,
        rows: list[dict[str, Any]],
        *,
        background: str | None = None,
        class_index: int | None = None,
    ) -> list[dict[str, Any]]:
        """SHAP values (with the base value) for up to 100 rows given as records."""
        from modelworks.evaluation.explain import explain_rows

        if not rows:
            raise InvalidInput("Give at least one row to explain, as a list of records.")
        if len(rows) > MAX_EXPLAIN_ROWS:
            raise InvalidInput(
                f"At most {MAX_EXPLAIN_ROWS} rows per explanation request; got {len(rows)}."
            )
        _, pkg = self.load(principal, project, ref)
        frame = pd.DataFrame.from_records(rows)
        bg = None
        if background is not None:
            _, bg_frame = self._rows(principal, project, background, max_rows=5000)
            names = pkg.signature.input_names if pkg.signature else list(frame.columns)
            bg = bg_frame[[c for c in names if c in bg_frame.columns]]
            if len(bg) > 100:
                bg = bg.sample(n=100, random_state=0)
        out = explain_rows(pkg, frame, background=bg, class_index=class_index)
        return [e.model_dump(mode="json") for e in out]

    def importance_plot(self, principal: Principal, project: str, ref: str) -> bytes:
        body = self.registry.get_importance(principal, project, ref)
        sha = body.get("plot")
        if not sha:
            raise NotFound(f"{ref} has no importance plot; run `modelworks models explain`.")
        return self.store.artifacts.get_bytes(str(sha))


def _label_array(labels: Sequence[Any]) -> np.ndarray[Any, Any]:
    """Numeric labels as a numeric array (fast to compare and sort), others as objects
    (so ``1`` and ``"1"`` never merge into one string type)."""
    numeric = np.asarray(labels)
    if numeric.dtype.kind in "iufb":
        return numeric
    table = np.empty(len(labels), dtype=object)
    table[:] = list(labels)
    return table
