"""TrainingService: what training records in the store beyond the run itself.

Training code runs wherever the user's Python runs (a notebook, a job worker, a Ray task)
and talks to the store through the SDK; the one rule it needs on the server side is the
link from a run to the dataset versions it trained on, which lands in the lineage graph
(``dataset_version --trained_on--> run``) so ``modelworks data lineage churn@3`` shows the
runs, and later the models, made from it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from modelworks.core import audit, lineage
from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput
from modelworks.core.store import Store
from modelworks.data.service import DataService
from modelworks.governance.access import require_project
from modelworks.tracking.service import TrackingService
from modelworks.training.schemas import AutoMLSpec, RunInputOut, TrainSpec

if TYPE_CHECKING:
    from modelworks.client import Workspace
    from modelworks.training.jobs.context import JobContext
    from modelworks.training.jobs.service import Submission

SpecT = TypeVar("SpecT", bound=BaseModel)

RELATION = re.compile(r"[a-z][a-z_]{1,39}")


class TrainingService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._tracking = TrackingService(store)
        self._data = DataService(store)

    def record_input(
        self, principal: Principal, run_id: str, dataset: str, relation: str = "trained_on"
    ) -> RunInputOut:
        """Record that run ``run_id`` read the dataset version ``dataset`` (``name@N``)."""
        if not RELATION.fullmatch(relation):
            raise InvalidInput(
                f"relation {relation!r} is not valid: use lower-case letters and underscores, "
                "2-40 characters, such as trained_on or evaluated_on."
            )
        run = self._tracking.get_run(principal, run_id)
        version = self._data.get_version(principal, run.project_id, dataset, with_profile=False)
        ref = version.ref
        with self.store.transaction() as s:
            proj = require_project(s, principal, run.project_id, Role.EDITOR, "Logging run inputs")
            lineage.record(
                s,
                proj.id,
                lineage.Node("dataset_version", version.id, ref),
                lineage.Node("run", run.id, f"run {run.name or run.id}"),
                relation,
                {"experiment": run.experiment_name},
            )
            audit.record(
                s, principal, "run.input", "run", run.id, project_id=proj.id,
                changes={"dataset": ref, "relation": relation},
            )  # fmt: skip
        return RunInputOut(
            run_id=run.id, dataset=ref, dataset_version_id=version.id, relation=relation
        )

    def list_inputs(self, principal: Principal, run_id: str) -> list[RunInputOut]:
        """The dataset versions recorded as inputs of run ``run_id``, oldest first."""
        run = self._tracking.get_run(principal, run_id)
        with self.store.read() as s:
            proj = require_project(s, principal, run.project_id, Role.VIEWER, "Reading runs")
            graph = lineage.walk(
                s, proj.id, lineage.Node("run", run.id, run.name), direction="up", depth=1
            )
        return [
            RunInputOut(
                run_id=run.id,
                dataset=edge.parent_label,
                dataset_version_id=edge.parent_id,
                relation=edge.relation,
            )
            for edge in graph.edges
            if edge.parent_type == "dataset_version" and edge.child_id == run.id
        ]


# ---- job kinds: training and AutoML run as queued jobs (see modelworks.training.jobs) -------
def _spec(model: type[SpecT], ctx: JobContext) -> SpecT:
    _validator(model, ctx.kind)(ctx.spec)  # the shape again: the dataset was checked at submit
    return model.model_validate(ctx.spec)


def job_workspace(ctx: JobContext) -> Workspace:
    """A workspace on the job's store, acting as the principal who submitted the job."""
    from modelworks.client import Workspace
    from modelworks.data.transport import embedded_data
    from modelworks.registry.transport import embedded_registry
    from modelworks.training.transport import embedded_training
    from modelworks.transport import embedded_tracking

    return Workspace(
        embedded_tracking(ctx.store, ctx.principal),
        data=embedded_data(ctx.store, ctx.principal),
        training=embedded_training(ctx.store, ctx.principal),
        registry=embedded_registry(ctx.store, ctx.principal),
        project=ctx.project,
        mode="embedded",
        location=f"job {ctx.job_id}",
    )


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    """The ``train`` job kind: ``ws.train`` with the spec's arguments."""
    from modelworks.training.trainer import train

    spec = _spec(TrainSpec, ctx)
    ctx.log(f"Training {spec.model} on {spec.dataset} to predict {spec.target!r}")
    ws = job_workspace(ctx)
    result = train(ws, **spec.model_dump())
    ctx.progress(1.0, f"run {result.run_id}: " + _scores(result.metrics))
    return {
        "run_id": result.run_id,
        "dataset": result.dataset,
        "model": result.model_name,
        "task": result.task,
        "metrics": result.metrics,
        "warnings": result.warnings,
    }


def run_automl_job(ctx: JobContext) -> dict[str, Any]:
    """The ``automl`` job kind: ``ws.automl.fit`` with the spec's arguments; trials go to
    the job's log as they finish. On a Ray cluster (MODELWORKS_RAY_ADDRESS) the trials run
    as Ray tasks."""
    from modelworks.training.automl_run import fit_automl

    spec = _spec(AutoMLSpec, ctx)
    ctx.log(f"AutoML on {spec.dataset} to predict {spec.target!r} within {spec.time_budget:g} s")
    ws = job_workspace(ctx)
    found = fit_automl(ws, ray_address=ctx.settings.ray_address, **spec.model_dump())
    best = found.best
    ctx.progress(1.0, f"run {found.run_id}: best {best.family} {best.score}")
    return {
        "run_id": found.run_id,
        "dataset": found.dataset,
        "task": found.result.task,
        "metric": found.result.metric,
        "best_family": best.family,
        "best_score": best.score,
        "trials": len(found.leaderboard),
        "warnings": found.result.warnings,
    }


def _scores(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _validator(model: type[BaseModel], kind: str) -> Any:
    def validate_spec(spec: dict[str, Any], submission: Submission | None = None) -> None:
        try:
            parsed = model.model_validate(spec)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"The {kind} job's spec is not valid: {problems}.") from None
        if submission is not None:
            _check_against_dataset(kind, parsed, submission)

    return validate_spec


def _check_against_dataset(kind: str, spec: BaseModel, submission: Submission) -> None:
    """The dataset version exists and has the target (and features); known model names."""
    import difflib

    dataset = str(getattr(spec, "dataset"))  # noqa: B009 - both spec models have it
    target = str(getattr(spec, "target"))  # noqa: B009
    version = DataService(submission.store).get_version(
        submission.principal, submission.project, dataset, with_profile=False
    )
    names = [c.name for c in version.columns]
    if target not in names:
        close = difflib.get_close_matches(target, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InvalidInput(
            f"The {kind} job's target {target!r} is not a column of {version.ref}.{hint} "
            f"Columns: {', '.join(names[:30])}{' ...' if len(names) > 30 else ''}."
        )
    features = getattr(spec, "features", None) or []
    missing = [f for f in features if f not in names]
    if missing:
        raise InvalidInput(f"features not in {version.ref}: {', '.join(map(repr, missing))}.")
    from modelworks.training.automl.families import FAMILIES

    model = getattr(spec, "model", None)
    if model is not None and model not in FAMILIES:
        raise InvalidInput(f"Unknown model {model!r}; use one of {', '.join(FAMILIES)}.")
    unknown = [f for f in getattr(spec, "families", None) or [] if f not in FAMILIES]
    if unknown:
        raise InvalidInput(
            f"Unknown model families {', '.join(map(repr, unknown))}; use some of "
            f"{', '.join(FAMILIES)}."
        )


# The jobs service calls these at submission, so a bad spec is refused before it queues.
run_train_job.validate_spec = _validator(TrainSpec, "train")  # type: ignore[attr-defined]
run_automl_job.validate_spec = _validator(AutoMLSpec, "automl")  # type: ignore[attr-defined]
