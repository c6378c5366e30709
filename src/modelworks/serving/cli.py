"""``modelworks deployments ...``: named deployments of model aliases and versions.

The commands go through the SDK (``mw.connect()``), so they work on the local store and,
with ``MODELWORKS_URL`` and ``MODELWORKS_TOKEN`` set, against a server.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

import modelworks as mw
from modelworks.cli.output import JSON_OPTION_HELP, done, emit, print_record, print_table, warn
from modelworks.core.errors import InvalidInput

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name or id.")]
NameArg = Annotated[str, typer.Argument(help="The deployment's name, e.g. churn-prod.")]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        help='The config as JSON, e.g. \'{"max_batch_size": 32, "canary": {"version": '
        '"churn@4", "percent": 10}}\'.'
    ),
]

deployments_app = typer.Typer(
    name="deployments",
    help="Deploy model aliases and versions behind the server's inference endpoints.",
    no_args_is_help=True,
)
token_app = typer.Typer(name="token", help="Bearer tokens scoped to one deployment.",
                        no_args_is_help=True)  # fmt: skip
deployments_app.add_typer(token_app)


def _config(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--config is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidInput("--config must be a JSON object, e.g. '{\"max_batch_size\": 32}'.")
    return value


def _fields(d: Any) -> dict[str, Any]:
    return {
        "model": d.ref,
        "serving": f"version {d.served_version}" if d.served_version else "(not loaded yet)",
        "status": d.status,
        "last error": d.last_error,
        "config": d.config,
        "description": d.description,
        "created": d.created_at,
        "created by": d.created_by,
        "predict": f"POST /deployments/{d.name}/predict",
        "open inference": f"POST /v2/models/{d.name}/infer",
    }


@deployments_app.command("create")
def deployments_create(
    name: NameArg,
    model: Annotated[
        str, typer.Argument(help="churn@champion (follows the alias) or churn@3 (pinned).")
    ],
    config: ConfigOpt = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Create a deployment; `modelworks server` starts serving it within seconds.

    Example:
      modelworks deployments create churn-prod churn@champion
      modelworks deployments create churn-prod churn@champion --config '{"max_batch_size": 32}'
    """
    with mw.connect(project=project) as ws:
        d = ws.deployments.create(name, model, config=_config(config), description=description)
    emit(d, as_json, lambda: print_record(f"Deployment {d.name}", _fields(d)))


@deployments_app.command("list")
def deployments_list(project: ProjectOpt = "default", as_json: JsonOpt = False) -> None:
    """List the project's deployments and what they serve.

    Example:
      modelworks deployments list
    """
    with mw.connect(project=project) as ws:
        items = ws.deployments.list()
    emit(items, as_json, lambda: print_table(
        [d.model_dump() for d in items],
        [("name", "Name"), ("ref", "Model"), ("served_version", "Serving"),
         ("status", "Status"), ("last_error", "Last error"), ("updated_at", "Updated")],
        empty="No deployments yet: `modelworks deployments create NAME MODEL@ALIAS`.",
    ))  # fmt: skip


@deployments_app.command("show")
def deployments_show(name: NameArg, project: ProjectOpt = "default", as_json: JsonOpt = False
                     ) -> None:  # fmt: skip
    """Show one deployment: its model, the version it serves, config and endpoints.

    Example:
      modelworks deployments show churn-prod
    """
    with mw.connect(project=project) as ws:
        d = ws.deployments.get(name)
    emit(d, as_json, lambda: print_record(f"Deployment {d.name}", _fields(d)))


@deployments_app.command("update")
def deployments_update(
    name: NameArg,
    model: Annotated[str | None, typer.Option(help="Serve another alias or version.")] = None,
    config: ConfigOpt = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    status: Annotated[str | None, typer.Option(help="active or stopped.")] = None,
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Change what a deployment serves, its config, or stop/start it.

    Example:
      modelworks deployments update churn-prod --model churn@4
      modelworks deployments update churn-prod --config '{"max_batch_size": 16}'
      modelworks deployments update churn-prod --status stopped
    """
    with mw.connect(project=project) as ws:
        d = ws.deployments.update(
            name, model=model, config=_config(config), description=description, status=status
        )
    emit(d, as_json, lambda: done(f"Updated deployment {d.name} ({d.ref}, {d.status})."))


@deployments_app.command("delete")
def deployments_delete(name: NameArg, project: ProjectOpt = "default") -> None:
    """Delete a deployment; the server stops serving it within seconds.

    Example:
      modelworks deployments delete churn-staging
    """
    with mw.connect(project=project) as ws:
        ws.deployments.delete(name)
    done(f"Deleted deployment {name}.")


@token_app.command("create")
def token_create(
    name: NameArg,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "default",
    project: ProjectOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Create a bearer token that may call this deployment only; it is shown once.

    Example:
      modelworks deployments token create churn-prod --label checkout-service
    """
    with mw.connect(project=project) as ws:
        tok = ws.deployments.create_token(name, label)

    def render() -> None:
        typer.echo(tok.token)
        warn("Store this token now: it is not shown again.")

    emit(tok, as_json, render)


@token_app.command("list")
def token_list(name: NameArg, project: ProjectOpt = "default", as_json: JsonOpt = False) -> None:
    """List a deployment's tokens (prefixes only).

    Example:
      modelworks deployments token list churn-prod
    """
    with mw.connect(project=project) as ws:
        tokens = ws.deployments.tokens(name)
    emit(tokens, as_json, lambda: print_table(
        [t.model_dump() for t in tokens],
        [("id", "Id"), ("name", "Label"), ("prefix", "Prefix"), ("revoked", "Revoked"),
         ("created_by", "Created by"), ("created_at", "Created")],
        empty="No tokens.",
    ))  # fmt: skip


@token_app.command("revoke")
def token_revoke(
    name: NameArg,
    token_id: Annotated[str, typer.Argument(help="The token's id (see `token list`).")],
    project: ProjectOpt = "default",
) -> None:
    """Revoke a deployment token at once.

    Example:
      modelworks deployments token revoke churn-prod 01JA...
    """
    with mw.connect(project=project) as ws:
        ws.deployments.revoke_token(name, token_id)
    done(f"Revoked token {token_id} of {name}.")
