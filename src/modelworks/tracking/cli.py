"""Tracking commands: experiments, and the runs logged to them."""

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelworks.cli import open_store, principal
from modelworks.cli.output import (
    JSON_OPTION_HELP,
    console,
    done,
    emit,
    err_console,
    print_record,
    print_table,
)

if TYPE_CHECKING:
    from modelworks.core.schemas import Page
    from modelworks.tracking.schemas import ExperimentOut, RunOut
    from modelworks.tracking.service import TrackingService

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name or id.")]
ExperimentArg = Annotated[str, typer.Argument(help="Experiment name or id.")]
RunArg = Annotated[str, typer.Argument(help="Run id.")]
MaxResultsOpt = Annotated[int, typer.Option(help="Results per page (1-10000).")]
PageTokenOpt = Annotated[
    str | None, typer.Option(help="The next_page_token printed with the previous page.")
]
OrderByOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--order-by",
        help="Sort key, repeatable: e.g. 'metrics.accuracy DESC', 'start_time', 'params.lr'.",
    ),
]
DeletedOpt = Annotated[bool, typer.Option("--deleted", help="Include deleted ones.")]

experiments_app = typer.Typer(
    name="experiments", help="Group runs into experiments.", no_args_is_help=True
)
runs_app = typer.Typer(
    name="runs", help="Find, inspect and compare tracked runs.", no_args_is_help=True
)

METRIC_COLUMNS_SHOWN = 5


@contextlib.contextmanager
def _tracking() -> Iterator["TrackingService"]:
    """The tracking service on the local store."""
    from modelworks.tracking.service import TrackingService

    with open_store() as store:
        yield TrackingService(store)


def _parse_tags(pairs: Sequence[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint="--tag")
        tags[key] = value
    return tags


def _more(page: "Page[Any]") -> None:
    if page.next_page_token:
        err_console.print(f"More results: --page-token {page.next_page_token}", soft_wrap=True)


# ---- experiments ------------------------------------------------------------------------
_EXPERIMENT_COLUMNS = [
    ("name", "Name"),
    ("id", "Id"),
    ("run_count", "Runs"),
    ("created_by", "Created by"),
    ("created_at", "Created"),
    ("deleted", "Deleted"),
    ("description", "Description"),
]


def _show_experiment(exp: "ExperimentOut") -> None:
    print_record(f"Experiment {exp.name}", exp.model_dump())


@experiments_app.command("create")
def experiments_create(
    name: Annotated[str, typer.Argument(help="Experiment name, unique in the project.")],
    project: ProjectOpt = "default",
    description: Annotated[str, typer.Option(help="What the experiment is about.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an experiment (runs also create theirs on first use).

    Example:
      modelworks experiments create churn-baseline --tag team=growth
    """
    tags = _parse_tags(tag)
    with _tracking() as svc:
        exp = svc.create_experiment(principal(), project, name, description, tags)
    emit(exp, as_json, lambda: done(f"Created experiment {exp.name} ({exp.id}) in {project}."))


@experiments_app.command("list")
def experiments_list(
    project: ProjectOpt = "default",
    deleted: DeletedOpt = False,
    max_results: MaxResultsOpt = 1000,
    page_token: PageTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a project's experiments, newest first.

    Example:
      modelworks experiments list -p default --json
    """
    with _tracking() as svc:
        page = svc.list_experiments(
            principal(),
            project,
            include_deleted=deleted,
            max_results=max_results,
            page_token=page_token,
        )

    def render() -> None:
        print_table(
            [e.model_dump() for e in page.items],
            _EXPERIMENT_COLUMNS,
            empty=f"No experiments in {project}. Create one: modelworks experiments create NAME",
        )
        _more(page)

    emit(page, as_json, render)


@experiments_app.command("show")
def experiments_show(
    experiment: ExperimentArg, project: ProjectOpt = "default", as_json: JsonOpt = False
) -> None:
    """Show one experiment and its number of runs.

    Example:
      modelworks experiments show quickstart
    """
    with _tracking() as svc:
        exp = svc.get_experiment(principal(), project, experiment)
    emit(exp, as_json, lambda: _show_experiment(exp))


@experiments_app.command("rename")
def experiments_rename(
    experiment: ExperimentArg,
    new_name: Annotated[str, typer.Argument(help="The new name.")],
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Rename an experiment; its runs and id stay the same.

    Example:
      modelworks experiments rename churn-baseline churn-v1
    """
    with _tracking() as svc:
        exp = svc.update_experiment(principal(), project, experiment, name=new_name)
    emit(exp, as_json, lambda: done(f"Renamed experiment {experiment} to {exp.name}."))


@experiments_app.command("delete")
def experiments_delete(
    experiment: ExperimentArg, project: ProjectOpt = "default", as_json: JsonOpt = False
) -> None:
    """Delete an experiment (soft: it and its runs are hidden and can be restored).

    Example:
      modelworks experiments delete churn-v1
    """
    with _tracking() as svc:
        exp = svc.delete_experiment(principal(), project, experiment)
    emit(
        exp,
        as_json,
        lambda: done(
            f"Deleted experiment {exp.name}; undo with `modelworks experiments restore {exp.id}`."
        ),
    )


@experiments_app.command("restore")
def experiments_restore(
    experiment: ExperimentArg, project: ProjectOpt = "default", as_json: JsonOpt = False
) -> None:
    """Restore a deleted experiment and its runs.

    Example:
      modelworks experiments restore churn-v1
    """
    with _tracking() as svc:
        exp = svc.restore_experiment(principal(), project, experiment)
    emit(exp, as_json, lambda: done(f"Restored experiment {exp.name}."))


# ---- runs -------------------------------------------------------------------------------
def _run_rows(runs: Sequence["RunOut"]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    metric_keys: list[str] = []
    for run in runs:
        metric_keys.extend(k for k in run.metrics if k not in metric_keys)
    # As many metric columns as the terminal has room for (about 11 characters each).
    room = max(1, (console.width - 80) // 11 + 1)
    shown = metric_keys[: min(room, METRIC_COLUMNS_SHOWN)]
    columns = [("id", "Run id"), ("name", "Name")]
    if len({run.experiment_id for run in runs}) > 1:
        columns.append(("experiment_name", "Experiment"))
    columns += [("status", "Status"), ("start_time", "Started"), ("duration", "Duration")]
    columns += [(f"metrics.{k}", k) for k in shown]
    rows = []
    for run in runs:
        row: dict[str, Any] = run.model_dump()
        row["duration"] = f"{run.duration_s:.1f}s" if run.duration_s is not None else None
        for k in shown:
            row[f"metrics.{k}"] = run.metrics.get(k)
        rows.append(row)
    return rows, columns


def _print_runs(page: "Page[RunOut]") -> None:
    rows, columns = _run_rows(page.items)
    print_table(rows, columns, empty="No runs match.")
    _more(page)


def _search(
    project: str,
    experiments: Sequence[str] | None,
    filter_: str | None,
    order_by: Sequence[str] | None,
    max_results: int,
    page_token: str | None,
    deleted: bool,
    as_json: bool,
) -> None:
    with _tracking() as svc:
        page = svc.search_runs(
            principal(),
            project,
            experiments=experiments,
            filter=filter_,
            order_by=order_by,
            max_results=max_results,
            page_token=page_token,
            include_deleted=deleted,
        )
    emit(page, as_json, lambda: _print_runs(page))


@runs_app.command("list")
def runs_list(
    experiment: ExperimentArg,
    project: ProjectOpt = "default",
    order_by: OrderByOpt = None,
    deleted: DeletedOpt = False,
    max_results: MaxResultsOpt = 100,
    page_token: PageTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the runs of one experiment, newest first.

    Example:
      modelworks runs list quickstart --order-by 'metrics.accuracy DESC'
    """
    _search(project, [experiment], None, order_by, max_results, page_token, deleted, as_json)


@runs_app.command("search")
def runs_search(
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            "-f",
            help="e.g. \"metrics.accuracy > 0.9 AND params.model = 'rf' AND status = 'FINISHED'\".",
        ),
    ] = None,
    order_by: OrderByOpt = None,
    experiment: Annotated[
        list[str] | None,
        typer.Option(
            "--experiment", "-e", help="Experiment name or id, repeatable (default: all)."
        ),
    ] = None,
    project: ProjectOpt = "default",
    deleted: DeletedOpt = False,
    max_results: MaxResultsOpt = 100,
    page_token: PageTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search runs across experiments with a filter over metrics, params, tags and attributes.

    Example:
      modelworks runs search -f "metrics.f1 > 0.9 and params.C = '1.0'" --order-by 'metrics.f1 DESC'
    """
    _search(project, experiment, filter_, order_by, max_results, page_token, deleted, as_json)


@runs_app.command("show")
def runs_show(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Show a run: status, params, latest metrics and tags.

    Example:
      modelworks runs show 01J9Z3K4T5V6W7X8Y9Z0ABCDEF
    """
    with _tracking() as svc:
        run = svc.get_run(principal(), run_id)

    def render() -> None:
        info = run.model_dump(exclude={"params", "metrics", "tags", "system_info"})
        info["duration"] = f"{run.duration_s:.1f}s" if run.duration_s is not None else None
        print_record(f"Run {run.name}", info)
        for title, values in (("Params", run.params), ("Metrics", run.metrics), ("Tags", run.tags)):
            if values:
                print_record(title, values)

    emit(run, as_json, render)


@runs_app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metric to compare, repeatable.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare runs side by side: params (differences marked) and latest metrics.

    Example:
      modelworks runs compare RUN_A RUN_B --metric accuracy
    """
    with _tracking() as svc:
        cmp = svc.compare_runs(principal(), run_ids, metric)

    def render() -> None:
        columns = [("key", "")] + [(r.id, f"{r.name} (…{r.id[-6:]})") for r in cmp.runs]
        rows: list[dict[str, Any]] = []
        for key in cmp.param_keys:
            mark = " *" if key in cmp.differing_params else ""
            rows.append(
                {"key": f"params.{key}{mark}", **{r.id: r.params.get(key) for r in cmp.runs}}
            )
        for key in cmp.metric_keys:
            rows.append({"key": f"metrics.{key}", **{r.id: r.metrics.get(key) for r in cmp.runs}})
        print_table(rows, columns, title="Comparison (* = params that differ)")

    emit(cmp, as_json, render)


@runs_app.command("delete")
def runs_delete(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Delete a run (soft: restore it with `runs restore`).

    Example:
      modelworks runs delete 01J9Z3K4T5V6W7X8Y9Z0ABCDEF
    """
    with _tracking() as svc:
        run = svc.delete_run(principal(), run_id)
    emit(run, as_json, lambda: done(f"Deleted run {run.id}; undo with `modelworks runs restore`."))


@runs_app.command("restore")
def runs_restore(run_id: RunArg, as_json: JsonOpt = False) -> None:
    """Restore a deleted run.

    Example:
      modelworks runs restore 01J9Z3K4T5V6W7X8Y9Z0ABCDEF
    """
    with _tracking() as svc:
        run = svc.restore_run(principal(), run_id)
    emit(run, as_json, lambda: done(f"Restored run {run.id}."))


@runs_app.command("metrics")
def runs_metrics(
    run_id: RunArg,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", "-k", help="Metric key, repeatable (default: every metric)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the full history (every step) of a run's metrics.

    Example:
      modelworks runs metrics 01J9Z3K4T5V6W7X8Y9Z0ABCDEF --key val_accuracy
    """
    with _tracking() as svc:
        keys = list(key) if key else sorted(svc.get_run(principal(), run_id).metrics)
        histories = {k: svc.metric_history(principal(), run_id, k) for k in keys}

    def render() -> None:
        rows = [
            {**p.model_dump(), "time": datetime.fromtimestamp(p.timestamp_ms / 1000, UTC)}
            for points in histories.values()
            for p in points
        ]
        print_table(
            rows,
            [("key", "Metric"), ("step", "Step"), ("value", "Value"), ("time", "Logged")],
            empty="The run has no metrics.",
        )

    emit(histories, as_json, render)


@runs_app.command("artifacts")
def runs_artifacts(
    run_id: RunArg,
    prefix: Annotated[str | None, typer.Option(help="Only paths under this folder.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a run's artifacts with their sizes and sha256 checksums.

    Example:
      modelworks runs artifacts 01J9Z3K4T5V6W7X8Y9Z0ABCDEF
    """
    with _tracking() as svc:
        artifacts = svc.list_artifacts(principal(), run_id, prefix)
    emit(
        artifacts,
        as_json,
        lambda: print_table(
            [{**a.model_dump(), "sha256": f"{a.sha256[:16]}…"} for a in artifacts],
            [("path", "Path"), ("size", "Bytes"), ("sha256", "sha256"), ("created_at", "Logged")],
            empty="The run has no artifacts.",
        ),
    )


@runs_app.command("download")
def runs_download(
    run_id: RunArg,
    path: Annotated[str, typer.Argument(help="Artifact path, as listed by `runs artifacts`.")],
    dest: Annotated[
        Path | None,
        typer.Option("--dest", "-o", help="Where to write the file (default: its name, here)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download one artifact; its checksum is verified on the way.

    Example:
      modelworks runs download 01J9Z3K4T5V6W7X8Y9Z0ABCDEF confusion_matrix.csv -o cm.csv
    """
    target = dest if dest is not None else Path(Path(path).name)
    with _tracking() as svc:
        written = svc.download_artifact(principal(), run_id, path, target)
    emit(
        {"run_id": run_id, "path": path, "written_to": str(written)},
        as_json,
        lambda: done(f"Downloaded {path} to {written}."),
    )
