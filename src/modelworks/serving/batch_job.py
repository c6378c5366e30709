"""The ``batch_predict`` job kind: score a dataset version with a model version, queued.

The job runs :func:`~modelworks.serving.batch.predict_to_dataset` as the principal who
submitted it: the predictions of ``model`` on ``dataset`` become the next version of
``output``, with lineage. The spec::

    {"model": "churn@champion", "dataset": "customers@7", "output": "churn-scores",
     "keep_columns": ["customer_id"], "ignore_columns": ["churned"],
     "batch_rows": 65536, "message": ""}

It is checked at submission (:func:`validate_batch_spec`): the model version and the
dataset version resolve, the output name is valid, and the dataset has every input the
model's signature names and no column the model would not know what to do with, so a
wrong spec is refused in the form, not an hour later in the job's log.

``modelworks jobs submit batch_predict --spec '{...}'``, ``ws.jobs.submit("batch_predict",
{...})`` and the deployments section of the web UI (``/projects/P/deployments/-/batch``)
all submit it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.training.jobs.context import JobContext
    from modelworks.training.jobs.service import Submission

KIND = "batch_predict"
MAX_BATCH_ROWS = 10_000_000


class BatchPredictSpec(BaseModel):
    """What a ``batch_predict`` job scores, with what, and where the predictions go."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A model version: churn@champion, churn@3")
    dataset: str = Field(min_length=1, description="The dataset version to score: customers@7")
    output: str = Field(min_length=1, description="The dataset that gets the predictions")
    keep_columns: list[str] = Field(default_factory=list)
    ignore_columns: list[str] = Field(default_factory=list)
    batch_rows: int | None = Field(default=None, ge=1, le=MAX_BATCH_ROWS)
    message: str = Field(default="", max_length=2000)


def parse_spec(spec: dict[str, Any]) -> BatchPredictSpec:
    try:
        return BatchPredictSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"The batch_predict job's spec is not valid: {problems}.") from None


def validate_batch_spec(spec: dict[str, Any], submission: Submission | None = None) -> None:
    """The spec's shape; with ``submission``, also what it names in the project."""
    from modelworks.data.refs import check_dataset_name

    parsed = parse_spec(spec)
    check_dataset_name(parsed.output)
    if "@" not in parsed.model:
        raise InvalidInput(
            f"Say which version of {parsed.model!r} scores the rows: an alias "
            f"({parsed.model}@champion) or a number ({parsed.model}@3)."
        )
    if submission is not None:
        check_against_project(parsed, submission)


def check_against_project(spec: BatchPredictSpec, submission: Submission) -> None:
    """The model and dataset versions resolve, and the dataset's columns fit the model."""
    from modelworks.data.service import DataService
    from modelworks.registry.service import RegistryService

    version = RegistryService(submission.store).get_version(
        submission.principal, submission.project, spec.model
    )
    data = DataService(submission.store).get_version(
        submission.principal, submission.project, spec.dataset, with_profile=False
    )
    columns = [c.name for c in data.columns]
    listed = [*spec.keep_columns, *spec.ignore_columns]
    unknown = [c for c in listed if c not in columns]
    if unknown:
        raise InvalidInput(
            f"{data.ref} has no column {', '.join(map(repr, unknown))}; its columns are "
            f"{_names(columns)}."
        )
    inputs = [
        str(c["name"])
        for c in (version.signature or {}).get("inputs") or []
        if isinstance(c, dict) and "name" in c
    ]
    tensor = len(inputs) == 1 and (version.signature or {})["inputs"][0].get("shape")
    if not inputs or tensor:
        return  # no signature, or one tensor input: predict_batch decides at run time
    ignored = set(spec.ignore_columns)
    missing = [c for c in inputs if c not in columns or c in ignored]
    if missing:
        raise InvalidInput(
            f"{version.ref} needs the inputs {_names(missing)}, which {data.ref} does not "
            f"give it; its columns are {_names(columns)}."
        )
    extra = [c for c in columns if c not in inputs and c not in set(listed)]
    if extra:
        raise InvalidInput(
            f"{data.ref} has columns {version.ref} does not take: {_names(extra)}. Keep them "
            "(copied next to the predictions, e.g. an id) or ignore them (e.g. the label)."
        )


def _names(columns: list[str], limit: int = 20) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f" ... ({len(columns) - limit} more)" if len(columns) > limit else "")


def batch_predict_job(ctx: JobContext) -> dict[str, Any]:
    """Score ``dataset`` with ``model`` into the next version of ``output``."""
    from modelworks.data.service import DataService
    from modelworks.serving.batch import predict_to_dataset

    spec = parse_spec(ctx.spec)
    ctx.progress(0.0, f"reading {spec.dataset}")
    rows = (
        DataService(ctx.store)
        .get_version(ctx.principal, ctx.project, spec.dataset, with_profile=False)
        .row_count
    )
    if ctx.cancelled():
        return {"cancelled": True}
    ctx.progress(0.1, f"scoring {rows} rows of {spec.dataset} with {spec.model}")

    def scored(done: int, total: int | None) -> None:
        # 10% for reading and checking, 90% over the rows; the job's total wins over the
        # input's own count (the dataset version knows it even for CSV-backed parts).
        whole = total or rows or 0
        if whole:
            ctx.progress(0.1 + 0.9 * min(1.0, done / whole), f"scored {done} of {whole} rows")

    options: dict[str, Any] = {
        "keep_columns": spec.keep_columns,
        "ignore_columns": spec.ignore_columns,
        "progress": False,
        "on_progress": scored,
    }
    if spec.batch_rows is not None:
        options["batch_rows"] = spec.batch_rows
    if ctx.resources.get("cpus"):
        options["workers"] = max(1, int(ctx.resources["cpus"]))
    result, made = predict_to_dataset(
        ctx.store, ctx.principal, ctx.project, spec.model, spec.dataset, spec.output,
        message=spec.message, **options,
    )  # fmt: skip
    ctx.progress(1.0, f"wrote {result.rows} predictions to {made}")
    return {
        "model": spec.model,
        "input": spec.dataset,
        "output": made,
        "rows": result.rows,
        "columns": result.columns,
        "seconds": round(result.seconds, 3),
        "executor": result.executor,
    }


batch_predict_job.validate_spec = validate_batch_spec  # type: ignore[attr-defined]
