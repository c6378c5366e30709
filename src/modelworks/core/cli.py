"""Commands for the installation itself: ``config show``, ``db upgrade``, ``db current``."""

from typing import Annotated

import typer

from modelworks.cli import open_store
from modelworks.cli.output import JSON_OPTION_HELP, done, emit, print_record

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]

config_app = typer.Typer(
    name="config", help="Inspect the effective configuration.", no_args_is_help=True
)
db_app = typer.Typer(name="db", help="Manage the metadata database schema.", no_args_is_help=True)


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Show the effective settings, with secrets masked.

    Every setting comes from a MODELWORKS_<NAME> environment variable or its default.

    Example:
      modelworks config show --json
    """
    from modelworks.core.config import get_settings

    described = get_settings().describe()
    emit(described, as_json, lambda: print_record("Modelworks settings", described))


def _revisions(migrate: bool) -> dict[str, str | None]:
    from modelworks.core.database import current_revision, head_revision

    with open_store(migrate=migrate) as store:
        current = current_revision(store.db.engine)
        head = head_revision(store.db.engine)
        return {
            "database_url": store.settings.describe()["database_url"],
            "current": current,
            "head": head,
        }


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply pending migrations and print the schema revision.

    Safe to run any number of times and from several processes at once.

    Example:
      modelworks db upgrade
    """
    info = _revisions(migrate=True)
    emit(info, as_json, lambda: done(f"Database is at revision {info['current']} (latest)."))


@db_app.command("current")
def db_current(as_json: JsonOpt = False) -> None:
    """Show the database's schema revision and the latest one, without changing anything.

    Example:
      modelworks db current
    """
    info = _revisions(migrate=False)
    up_to_date = info["current"] == info["head"]

    def render() -> None:
        print_record(
            "Database schema",
            {**info, "up to date": up_to_date},
        )
        if not up_to_date:
            typer.echo("Run `modelworks db upgrade` to apply pending migrations.", err=True)

    emit({**info, "up_to_date": up_to_date}, as_json, render)
