"""How every command prints: JSON for scripts, Rich tables and panels for people.

Data goes to stdout; messages, warnings and errors go to stderr, so that
``modelworks ... --json | jq`` always receives clean JSON.
"""

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from modelworks.core.errors import ModelworksError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JSON_OPTION_HELP = "Print JSON (the API's shapes) instead of a table."


def jsonable(data: Any) -> Any:
    """Pydantic models (and containers of them) as plain JSON-ready values."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, Mapping):
        return {str(k): jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [jsonable(v) for v in data]
    if isinstance(data, datetime):
        return data.isoformat()
    return data


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout, unstyled and never wrapped."""
    sys.stdout.write(json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fmt(value: Any) -> str:
    """One cell's text: times to the second, floats compact, ``None`` as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str) if value else "-"
    return str(value)


def print_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    title: str | None = None,
    empty: str = "Nothing to show.",
) -> None:
    """A Rich table of ``rows``; ``columns`` are (key, header) pairs."""
    rows = list(rows)
    if not rows:
        err_console.print(f"[dim]{escape(empty)}[/dim]")
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for i, (key, header) in enumerate(columns):
        # Ids are copied whole: keep them on one line; other cells fold when space is short.
        table.add_column(header, overflow="fold", no_wrap=i == 0 or key == "id")
    for row in rows:
        table.add_row(*(escape(fmt(row.get(key))) for key, _ in columns))
    console.print(table)


def print_record(title: str, fields: Mapping[str, Any]) -> None:
    """One object as a key-value panel."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in fields.items():
        grid.add_row(escape(key), escape(fmt(value)))
    console.print(Panel(grid, title=escape(title), title_align="left", expand=False))


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON when asked, otherwise call the human renderer."""
    if as_json:
        print_json(data)
    else:
        render()


def done(message: str) -> None:
    """A short confirmation for people (stderr, so JSON on stdout stays clean)."""
    err_console.print(f"[green]✓[/green] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/yellow] {escape(message)}", soft_wrap=True)


def report_error(err: ModelworksError) -> NoReturn:
    """Print the error's detail in red on stderr and exit with its exit code."""
    err_console.print(f"[red]Error: {escape(err.detail)}[/red]", soft_wrap=True)
    raise typer.Exit(err.exit_code)
