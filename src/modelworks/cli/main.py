"""The ``modelworks`` root command: mounts every domain's commands.

Errors raised by services (:class:`ModelworksError`) are caught once, here, and become a
red ``Error: ...`` line on stderr and the error's exit code; never a traceback.
"""

import os
import secrets
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from modelworks import __version__
from modelworks.cli import open_store
from modelworks.cli.output import JSON_OPTION_HELP, emit, err_console, print_json, report_error
from modelworks.core.cli import config_app, db_app
from modelworks.core.errors import ModelworksError
from modelworks.core.secrets_cli import secrets_app
from modelworks.data.cli import data_app
from modelworks.governance.cli import audit_app, projects_app, tokens_app, users_app
from modelworks.registry.cli import models_app
from modelworks.serving.batch_cli import predict
from modelworks.serving.cli import deployments_app
from modelworks.serving.serve_cli import serve
from modelworks.tracking.cli import experiments_app, runs_app
from modelworks.training.cli import automl, notebook, train
from modelworks.training.jobs.cli import jobs_app

if TYPE_CHECKING:
    from typer import _click  # Typer vendors Click since 0.22; only its Context type is used

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]


class ModelworksGroup(TyperGroup):
    """The root group: turns service errors into a message and an exit code."""

    def invoke(self, ctx: "_click.Context") -> Any:
        try:
            return super().invoke(ctx)
        except ModelworksError as err:
            report_error(err)


app = typer.Typer(
    name="modelworks",
    cls=ModelworksGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA = "Data"
TRACKING = "Tracking"
GOVERNANCE = "Governance"
OPERATIONS = "Operations"
TRAINING = "Training"
REGISTRY = "Models"

app.add_typer(data_app, rich_help_panel=DATA)
app.add_typer(experiments_app, rich_help_panel=TRACKING)
app.add_typer(runs_app, rich_help_panel=TRACKING)
app.add_typer(jobs_app, rich_help_panel=TRAINING)
app.command(rich_help_panel=TRAINING)(train)
app.command(rich_help_panel=TRAINING)(automl)
app.command(rich_help_panel=TRAINING)(notebook)
app.add_typer(models_app, rich_help_panel=REGISTRY)
app.add_typer(deployments_app, rich_help_panel=REGISTRY)
app.command(rich_help_panel=REGISTRY)(serve)
app.command(rich_help_panel=REGISTRY)(predict)
app.add_typer(users_app, rich_help_panel=GOVERNANCE)
app.add_typer(tokens_app, rich_help_panel=GOVERNANCE)
app.add_typer(projects_app, rich_help_panel=GOVERNANCE)
app.add_typer(audit_app, rich_help_panel=GOVERNANCE)
app.add_typer(secrets_app, rich_help_panel=OPERATIONS)
app.add_typer(config_app, rich_help_panel=OPERATIONS)
app.add_typer(db_app, rich_help_panel=OPERATIONS)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"modelworks {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Modelworks: version data, track experiments, govern who does what, all from one store.

    Works embedded with nothing to configure: data lives in MODELWORKS_HOME
    (default ~/.modelworks). Add --json to any command that prints data.

    New here? Run `modelworks quickstart`, then `modelworks server`.
    """


@app.command(rich_help_panel="Get started")
def quickstart(as_json: JsonOpt = False) -> None:
    """Train a small scikit-learn model and track it, to see Modelworks end to end.

    Uses a dataset shipped with scikit-learn (nothing is downloaded) and logs params,
    per-epoch metrics, final scores and a confusion matrix to the experiment 'quickstart'.

    Example:
      modelworks quickstart
    """
    from modelworks.quickstart import print_summary, run_quickstart

    result = run_quickstart(show_progress=not as_json)
    emit(result, as_json, lambda: print_summary(result))


@app.command(rich_help_panel=OPERATIONS)
def server(
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the REST API and web UI.

    On first start, with no users yet, creates a site admin named MODELWORKS_ADMIN_USER
    (default admin) with the password MODELWORKS_ADMIN_PASSWORD, or a generated one that
    is printed once.

    Example:
      MODELWORKS_ADMIN_PASSWORD=change-me-now modelworks server --port 8080
    """
    import uvicorn

    from modelworks.governance.service import GovernanceService
    from modelworks.server.app import create_app

    with open_store() as store:
        username = os.environ.get("MODELWORKS_ADMIN_USER") or "admin"
        given = os.environ.get("MODELWORKS_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        admin = GovernanceService(store).bootstrap_admin(username, password)
        if admin is not None:
            err_console.print(f"[green]Created site admin[/green] {admin.username!r}.")
            if not given:
                err_console.print(
                    f"Password: [bold]{password}[/bold]  (shown once; change it with "
                    f"`modelworks users set-password {admin.username}`)",
                    soft_wrap=True,
                )
    err_console.print(f"Modelworks UI and API on http://{host}:{port} (API docs at /docs)")
    if workers == 1:
        uvicorn.run(create_app(), host=host, port=port, log_level="info")
    else:
        uvicorn.run(
            "modelworks.server.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
        )


@app.command(rich_help_panel=OPERATIONS)
def version(as_json: JsonOpt = False) -> None:
    """Print the installed Modelworks version.

    Example:
      modelworks version --json
    """
    import platform

    info = {"modelworks": __version__, "python": platform.python_version()}
    if as_json:
        print_json(info)
    else:
        typer.echo(f"modelworks {__version__} (Python {info['python']})")


if __name__ == "__main__":  # pragma: no cover
    app()
