"""Job commands: submit work to the queue, watch it, cancel it, and run the local runner."""

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelworks.cli import open_store, principal
from modelworks.cli.output import (
    JSON_OPTION_HELP,
    done,
    emit,
    err_console,
    print_json,
    print_record,
    print_table,
)
from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.training.jobs.service import JobService

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name or id.")]
JobArg = Annotated[str, typer.Argument(help="Job id.")]

jobs_app = typer.Typer(
    name="jobs",
    help="Queue training and other work; run it locally or on a Ray cluster.",
    no_args_is_help=True,
)

_COLUMNS = [
    ("id", "Id"),
    ("kind", "Kind"),
    ("name", "Name"),
    ("status", "Status"),
    ("attempt", "Attempt"),
    ("executor", "Executor"),
    ("progress", "Progress"),
    ("created_by", "Created by"),
    ("created_at", "Created"),
    ("error", "Error"),
]


@contextlib.contextmanager
def _jobs(*, autostart: bool = False) -> Iterator["JobService"]:
    from modelworks.training.jobs.service import JobService

    with open_store() as store:
        yield JobService(store, autostart_runner=autostart)


def _spec(spec: str | None, spec_file: Path | None) -> dict[str, object]:
    if spec is not None and spec_file is not None:
        raise InvalidInput("Give the spec with --spec or --spec-file, not both.")
    text = spec_file.read_text() if spec_file is not None else spec
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"The job spec is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidInput("The job spec must be a JSON object, e.g. '{\"seconds\": 2}'.")
    return value


@jobs_app.command("submit")
def jobs_submit(
    kind: Annotated[str, typer.Argument(help="Job kind: sleep, train, automl, ...")],
    spec: Annotated[str | None, typer.Option(help="The job's spec as JSON.")] = None,
    spec_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="A JSON file with the spec.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name to find the job by.")] = None,
    cpus: Annotated[float, typer.Option(min=0.01, help="CPUs the job needs.")] = 1.0,
    gpus: Annotated[float, typer.Option(min=0, help="GPUs the job needs.")] = 0.0,
    memory: Annotated[int | None, typer.Option(min=1, help="Memory the job needs, in MiB.")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds an attempt may run.")
    ] = None,
    retries: Annotated[int, typer.Option(min=0, max=100, help="Retries of a failed attempt.")] = 0,
    executor: Annotated[
        str | None, typer.Option(help="local or ray (default: ray when MODELWORKS_RAY_ADDRESS).")
    ] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Queue a job; it runs in the background and outlives this command.

    Locally it starts at once (a runner process is started if none is running); with
    MODELWORKS_RAY_ADDRESS set it goes to the Ray cluster.

    Example:
      modelworks jobs submit sleep --spec '{"seconds": 2}'
      modelworks jobs submit train --spec-file train.json --cpus 4 --timeout 3600 --retries 2
    """
    body = _spec(spec, spec_file)
    with _jobs(autostart=True) as svc:
        job = svc.submit(
            principal(),
            project,
            kind,
            body,
            name=name,
            resources={"cpus": cpus, "gpus": gpus, "memory_mb": memory},
            timeout_s=timeout,
            max_retries=retries,
            executor=executor,
        )
    emit(
        job,
        as_json,
        lambda: done(
            f"Queued {job.kind} job {job.id} on {job.executor}; follow it with "
            f"`modelworks jobs logs {job.id} --follow`."
        ),
    )


@jobs_app.command("list")
def jobs_list(
    project: ProjectOpt = "default",
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    max_results: Annotated[int, typer.Option(help="Results per page (1-10000).")] = 100,
    page_token: Annotated[
        str | None, typer.Option(help="next_page_token of the last page.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a project's jobs, newest first.

    Example:
      modelworks jobs list --status running
    """
    with _jobs() as svc:
        page = svc.list(
            principal(),
            project,
            status=status,
            kind=kind,
            max_results=max_results,
            page_token=page_token,
        )

    def render() -> None:
        print_table(
            [j.model_dump() for j in page.items],
            _COLUMNS,
            empty=f"No jobs in {project}. Try: modelworks jobs submit sleep",
        )
        if page.next_page_token:
            err_console.print(f"More results: --page-token {page.next_page_token}")

    emit(page, as_json, render)


@jobs_app.command("show")
def jobs_show(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Show one job: status, attempts, resources, result or error.

    Example:
      modelworks jobs show 01JD...
    """
    with _jobs() as svc:
        job = svc.get(principal(), job_id)
    emit(job, as_json, lambda: print_record(f"Job {job.id}", job.model_dump()))


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Cancel a job: a queued one at once, a running one is stopped (its processes killed).

    Example:
      modelworks jobs cancel 01JD...
    """
    with _jobs() as svc:
        job = svc.cancel(principal(), job_id)
    emit(job, as_json, lambda: done(f"Cancel requested for job {job.id} ({job.status})."))


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until it ends.")] = (
        False
    ),
    offset: Annotated[int, typer.Option(min=0, help="Start at this byte of the log.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's log (stdout and stderr of its attempts).

    Example:
      modelworks jobs logs 01JD... --follow
      modelworks jobs logs 01JD... --json   # {"text", "next_offset", ...}
    """
    with _jobs() as svc:
        while True:
            chunk = svc.logs(principal(), job_id, offset)
            if as_json and not follow:
                print_json(chunk)
                return
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            offset = chunk.next_offset
            if not follow or chunk.complete:
                break
            if not chunk.text:
                time.sleep(0.5)
    if follow:
        job = None
        with _jobs() as svc:
            job = svc.get(principal(), job_id)
        err_console.print(f"Job {job.id} {job.status}." + (f" {job.error}" if job.error else ""))
        if job.status != "succeeded":
            raise typer.Exit(1)


@jobs_app.command("worker")
def jobs_worker(
    forever: Annotated[
        bool, typer.Option("--forever", help="Keep waiting for jobs instead of exiting when idle.")
    ] = False,
    cpus: Annotated[
        float | None, typer.Option(min=0.01, help="CPUs to use (default: all cores).")
    ] = None,
) -> None:
    """Run the queued local jobs of this store until the queue is idle (or forever).

    Submitting a job starts one of these in the background when none runs; `modelworks
    server` runs one as well. Only one runner per MODELWORKS_HOME runs at a time.

    Example:
      modelworks jobs worker --forever
    """
    from modelworks.training.jobs.runner import JobRunner

    with open_store() as store:
        runner = JobRunner(store, max_cpus=cpus)
        try:
            runner.run(forever=forever)
        except KeyboardInterrupt:
            runner.stop()
