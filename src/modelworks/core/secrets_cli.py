"""``modelworks secrets``: the values connectors refer to as ``${secret:NAME}``.

A value is read from a hidden prompt or from stdin, never from the command line: arguments
are visible to every user of the machine (``ps``) and stay in the shell's history.
"""

import os
import sys
from typing import Annotated

import typer

from modelworks.cli.output import JSON_OPTION_HELP, done, emit, print_table, report_error, warn
from modelworks.core import secrets
from modelworks.core.errors import InvalidInput, ModelworksError, NotFound

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
NameArg = Annotated[
    str, typer.Argument(help="The secret's name: letters, digits and '_', starting with a letter.")
]
# MODELWORKS_SECRET_KEY is the server's session-signing key (a setting), not a connector
# secret; it is never listed, so that nobody is invited to refer to it.
_SETTING_NAMES = {"KEY"}

secrets_app = typer.Typer(
    name="secrets",
    help="Store the passwords and tokens that sources refer to as ${secret:NAME}.",
    no_args_is_help=True,
)


@secrets_app.command("set")
def set_secret(
    name: NameArg,
    from_stdin: Annotated[
        bool,
        typer.Option("--from-stdin", help="Read the value from stdin instead of a prompt."),
    ] = False,
) -> None:
    """Store a secret, readable only by you (MODELWORKS_HOME/secrets/NAME, mode 0600).

    The value is asked for without echo, or read from stdin with --from-stdin (one trailing
    newline is dropped). Sources then refer to it as ${secret:NAME}.

    Example:
      modelworks secrets set pg_pw
      printf %s "$PG_PASSWORD" | modelworks secrets set pg_pw --from-stdin
    """
    try:
        secrets.check_name(name)
        if from_stdin:
            value = sys.stdin.read().rstrip("\r\n")
        else:
            value = typer.prompt(
                f"Value of secret {name}", hide_input=True, confirmation_prompt=True
            )
        if not value:
            raise InvalidInput(f"The value for secret {name!r} is empty; nothing was stored.")
        path = secrets.store(name, value)
    except ModelworksError as err:
        report_error(err)
    done(f"Secret {name!r} stored in {path}. Refer to it as ${{secret:{name}}}.")
    _warn_if_shadowed(name)


@secrets_app.command("list")
def list_secrets(as_json: JsonOpt = False) -> None:
    """List secret names (never values): stored ones and those set in the environment.

    Example:
      modelworks secrets list --json
    """
    rows = [{"name": n, "source": "file"} for n in secrets.names()]
    rows += [{"name": n, "source": "environment"} for n in _environment_names()]
    emit(
        rows,
        as_json,
        lambda: print_table(
            rows,
            [("name", "Name"), ("source", "Set in")],
            empty="No secrets. Add one with `modelworks secrets set NAME`.",
        ),
    )


@secrets_app.command("delete")
def delete_secret(name: NameArg) -> None:
    """Delete a stored secret. Sources that refer to it fail until it is set again.

    Example:
      modelworks secrets delete pg_pw
    """
    try:
        if not secrets.delete(name):
            raise NotFound(
                f"No stored secret {name!r}; `modelworks secrets list` shows the stored ones."
            )
    except ModelworksError as err:
        report_error(err)
    done(f"Secret {name!r} deleted.")
    _warn_if_shadowed(name)


def _environment_names() -> list[str]:
    prefix = secrets.ENV_PREFIX
    found = set()
    for var in os.environ:
        name = var[len(prefix) :]
        if var.startswith(prefix) and secrets.NAME.match(name) and name not in _SETTING_NAMES:
            found.add(name)
    return sorted(found)


def _warn_if_shadowed(name: str) -> None:
    # The environment wins over the file, which would make `set` look like it did nothing.
    for var in (secrets.ENV_PREFIX + name.upper(), secrets.ENV_PREFIX + name):
        if var in os.environ:
            warn(f"{var} is set in the environment and is used instead of the stored value.")
            return
