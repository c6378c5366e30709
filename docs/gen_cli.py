"""Generate docs/cli.md, the command reference, from the commands' own help.

    python docs/gen_cli.py           # rewrite docs/cli.md
    python docs/gen_cli.py --check   # exit 1, with a short diff, when docs/cli.md is stale

The page is a fixed preamble (PREAMBLE below) followed by one section per command, walked
from the Click tree of ``modelworks.cli.main:app`` in the order the commands are registered:
usage, the help text (the docstring without its "Example(s):" block), a table of arguments
and options, and the example as a bash block. Hidden commands and options are left out.
Nothing here depends on the terminal, the environment or the clock, so the output is the
same on every machine; tests/cli/test_cli_reference.py fails when the file is out of date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import enum
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import typer.main

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
PROG = "modelworks"
STALE = "docs/cli.md is out of date: run python docs/gen_cli.py"
DIFF_LINES_SHOWN = 40

# Hand-written; the generated sections follow it. (The exit-code table's rows are long.)
PREAMBLE = """\
# Command reference

`modelworks` is installed with the package (`pip install -e .`). This page lists every
command and option; it is generated from the commands' own help, so
`modelworks COMMAND --help` (or `-h`) says the same in the terminal.

How every command behaves:

- **Where it acts.** Commands open the store named by the environment —
  `MODELWORKS_HOME` (default `~/.modelworks`), or `MODELWORKS_DATABASE_URL` and
  `MODELWORKS_ARTIFACT_URL` — and act as the local OS user, who is a site administrator on
  that store (the audit trail records them as `local:<user>`). Run them on the machine
  that hosts the server's store, with the same settings, to administer a server. Remote
  clients use the SDK or the REST API.
- **Projects.** Tracking commands work in the project `default` unless given
  `--project NAME` (`-p`); data commands in the project `MODELWORKS_PROJECT` names
  (default `default`) unless given `--project`.
- **Output.** Data goes to stdout: a table or panel for people, or with `--json` the same
  JSON shapes as the REST API, for scripts (`modelworks runs search --json | jq ...`).
  Confirmations, hints ("More results: --page-token ...") and errors go to stderr.
- **Paging.** Listings print one page (`--max-results`); when more remain, stderr says
  which `--page-token` to pass for the next one (in `--json` output it is
  `next_page_token`).
- **Errors.** A failed command prints `Error: ...` (what was wrong and what to do) on
  stderr and exits with a code that says what kind of failure it was:

| exit code | meaning |
|---|---|
| 0 | success |
| 1 | unexpected internal error |
| 2 | invalid input or usage (a bad filter, a missing argument, an unknown option, a payload over the size limit) |
| 3 | not found (or a project you are not a member of) |
| 4 | already exists, or conflicts with the current state (e.g. a param logged with another value) |
| 5 | permission denied |
| 6 | authentication required or failed |
| 7 | integrity check failed (stored bytes do not match their checksum, or the audit chain is broken) |
| 8 | a service is unavailable (e.g. the database cannot be reached) |
| 9 | a check ran and the data did not pass it: `data validate` found a failing expectation, or `data rebuild` made different bytes |

The filter and order-by syntax of `runs search` and `runs list` is described in
[tracking.md](tracking.md#the-filter-language); sources, refs, expectation suites and
transforms of the `data` commands in [data.md](data.md).

Training and AutoML (`train`, `automl`, `notebook`) are described in
[training.md](training.md); queued jobs and their runners (`jobs`) in [jobs.md](jobs.md).
"""  # noqa: E501

OPTIONS_HEADER = ["| argument / option | | meaning |", "|---|---|---|"]
COMMANDS_HEADER = ["| command | what it does |", "|---|---|"]

# "Example:" or "Examples:" alone on a line starts the examples at the end of a docstring.
EXAMPLE_LABEL = re.compile(r"^(Examples?):\s*$")
# Something that reads like an HTML tag (<token>, <NAME>) would vanish in Markdown.
TAG_LIKE = re.compile(r"<([A-Za-z_][^<>\s]*)>")
CODE_SPAN = re.compile(r"(`[^`]*`)")
# Click's type names, as `--help` printed them before Typer chose its own.
TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", uuid.UUID: "UUID"}
DATETIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


# ---- text ------------------------------------------------------------------------------------
def _plain(text: str, cmd: Any) -> str:
    """Help text as the terminal shows it: Rich markup applied, so ``\\[x]`` reads ``[x]``."""
    if getattr(cmd, "rich_markup_mode", None) in ("rich", "markdown"):
        try:
            from rich.errors import MarkupError
            from rich.markup import render as rich_render
        except ImportError:  # without Rich, Typer prints the text as it is
            return text
        try:
            return rich_render(text).plain
        except MarkupError:  # not markup after all: take it literally
            pass
    return text.replace("\\[", "[")


def _md(text: str) -> str:
    """Escape what Markdown would swallow in running text (code spans are left alone)."""
    parts = CODE_SPAN.split(text)
    return "".join(p if i % 2 else TAG_LIKE.sub(r"\\<\1\\>", p) for i, p in enumerate(parts))


def _cell(text: str) -> str:
    """Text for a table cell: one line, pipes escaped."""
    return " ".join(_md(text).split()).replace("|", "\\|")


def _code_cell(text: str) -> str:
    """Code for a table cell; GitHub splits cells at pipes even inside backticks."""
    escaped = text.replace("|", "\\|")
    return f"`{escaped}`"


def _split_help(cmd: Any) -> tuple[list[str], str, list[str]]:
    """The help text's lines, the examples' label and the examples' lines (dedented)."""
    raw = cmd.help or ""
    if getattr(cmd, "epilog", None):
        raw = f"{raw}\n\n{cmd.epilog}"
    lines = _plain(textwrap.dedent(raw), cmd).strip("\n").splitlines()
    lines = [ln.rstrip() for ln in lines if ln.strip() != "\b"]
    for i, line in enumerate(lines):
        match = EXAMPLE_LABEL.match(line)
        if match is None:
            continue
        body = lines[i + 1 :]
        end = len(body)  # examples run to the end, or to an unindented paragraph after them
        for j in range(1, len(body)):
            if body[j] and not body[j][0].isspace() and not body[j - 1].strip():
                end = j
                break
        help_lines = lines[:i] + (["", *body[end:]] if body[end:] else [])
        examples = textwrap.dedent("\n".join(body[:end])).strip("\n").splitlines()
        return _trim(help_lines), match.group(1), examples
    return _trim(lines), "", []


def _trim(lines: list[str]) -> list[str]:
    """Without blank lines at either end, or more than one in a row."""
    lines = [ln for i, ln in enumerate(lines) if ln.strip() or (i and lines[i - 1].strip())]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return lines


def _summary(cmd: Any) -> str:
    """One line for a table of commands: the short help, or the help's first paragraph."""
    if cmd.short_help:
        return _plain(cmd.short_help, cmd)
    help_lines, _, _ = _split_help(cmd)
    first: list[str] = []
    for line in help_lines:
        if not line.strip():
            break
        first.append(line.strip())
    return " ".join(first)


# ---- parameters ------------------------------------------------------------------------------
def _type_name(param: Any) -> str:
    """The option's value placeholder: TEXT, INTEGER, PATH, [a|b] ..."""
    if param.metavar is not None:
        return str(param.metavar)
    desc = getattr(param, "type_descriptor", None)
    if desc is None:  # a plain Click parameter
        return str(param.make_metavar(None))
    choices = desc.choices
    if choices is not None:
        values = [c.value if isinstance(c, enum.Enum) else c for c in choices]
        return "[" + "|".join(str(v) for v in values) + "]"
    if desc.is_path:
        return str(desc.path_type).upper()
    annotation = desc.annotation
    if get_origin(annotation) in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        names = [TYPE_NAMES.get(a, getattr(a, "__name__", str(a)).upper()) for a in args]
        return " ".join(dict.fromkeys(names)) if names else "TEXT"
    if annotation is dt.datetime:
        formats = desc.parameter_info.formats or DATETIME_FORMATS
        return "[" + "|".join(formats) + "]"
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def _default(param: Any) -> str | None:
    """The default as `--help` shows it; None where there is none worth showing."""
    if param.show_default is False:
        return None
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if callable(value):
        return "(dynamic)"
    if getattr(param, "is_flag", False):
        secondary = getattr(param, "secondary_opts", [])
        if not secondary:
            return None  # a plain flag is off unless given
        opts = param.opts if value else secondary
        return str(opts[0]).lstrip("-")
    if isinstance(value, list | tuple):
        value = ", ".join(str(v.value if isinstance(v, enum.Enum) else v) for v in value)
    elif isinstance(value, enum.Enum):
        value = value.value
    if not value:
        return None  # None, 0, "" and empty lists say nothing a reader needs
    return str(value)


def _range(param: Any) -> str | None:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None and high is None:
        return None
    if low is None:
        return f"x<={high}"
    if high is None:
        return f"x>={low}"
    return f"{low}<=x<={high}"


def _param_row(param: Any, cmd: Any) -> str:
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        if param.nargs != 1:
            name += "..."
        names = _code_cell(name)
    else:
        opts = sorted(param.opts, key=lambda o: len(o) - len(o.lstrip("-/+")))
        if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
            opts[-1] = f"{opts[-1]} {_type_name(param)}"
        names = ", ".join(_code_cell(o) for o in opts)
        if param.secondary_opts:
            names += " / " + ", ".join(_code_cell(o) for o in param.secondary_opts)
    facts = []
    default = _default(param)
    if default is not None:
        facts.append(f"default: {_code_cell(default)}")
    described_range = _range(param)
    if described_range is not None:
        facts.append(f"range: {_code_cell(described_range)}")
    if param.required:
        facts.append("required")
    if getattr(param, "multiple", False):
        facts.append("repeatable")
    envvar = param.envvar if getattr(param, "show_envvar", True) else None
    if envvar:
        names_env = envvar if isinstance(envvar, str) else ", ".join(envvar)
        facts.append(f"env: {_code_cell(names_env)}")
    meaning = _cell(_plain(param.help or "", cmd))
    return f"| {names} | {'; '.join(facts)} | {meaning} |"


def _visible_params(cmd: Any) -> list[Any]:
    """Arguments, then options (as `--help` lists them), each in declaration order."""
    shown = [p for p in cmd.params if not getattr(p, "hidden", False)]
    return sorted(shown, key=lambda p: p.param_type_name != "argument")


def _usage(cmd: Any, path: str) -> str:
    pieces = [path, "[OPTIONS]"]
    for param in cmd.params:
        if param.param_type_name != "argument" or getattr(param, "hidden", False):
            continue
        name = param.metavar or param.name.upper()
        if not param.required:
            name = f"[{name}]"
        pieces.append(name + ("..." if param.nargs != 1 else ""))
    if _is_group(cmd):
        pieces.append(getattr(cmd, "subcommand_metavar", None) or "COMMAND [ARGS]...")
    return " ".join(pieces)


# ---- commands --------------------------------------------------------------------------------
def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands") and hasattr(cmd, "list_commands")


def _children(cmd: Any) -> list[tuple[str, Any]]:
    ctx = cmd.context_class(cmd, info_name=cmd.name)
    found = ((name, cmd.get_command(ctx, name)) for name in cmd.list_commands(ctx))
    return [(name, sub) for name, sub in found if sub is not None and not sub.hidden]


def _section(cmd: Any, path: str, level: int) -> Iterator[str]:
    help_lines, label, examples = _split_help(cmd)
    yield f"{'#' * level} `{path}`"
    yield ""
    yield "```text"
    yield _usage(cmd, path)
    yield "```"
    if help_lines:
        yield ""
        yield from (_md(line) for line in help_lines)
    params = _visible_params(cmd)
    if params:
        yield ""
        yield from OPTIONS_HEADER
        yield from (_param_row(p, cmd) for p in params)
    if _is_group(cmd):
        children = _children(cmd)
        if children:
            yield ""
            yield from COMMANDS_HEADER
            for name, sub in children:
                yield f"| `{path} {name}` | {_cell(_summary(sub))} |"
    if examples:
        yield ""
        yield f"{label}:"
        yield ""
        yield "```bash"
        yield from examples
        yield "```"
    yield ""
    if _is_group(cmd):
        for name, sub in _children(cmd):
            yield from _section(sub, f"{path} {name}", min(level + 1, 4))


def render() -> str:
    """The whole page, as docs/cli.md should hold it."""
    from modelworks.cli.main import app

    root = typer.main.get_command(app)
    body = "\n".join(_section(root, PROG, 2)).rstrip("\n")
    return f"{PREAMBLE}\n{body}\n"


def check(path: Path = CLI_MD) -> str | None:
    """None when the file matches what would be generated; else a short diff summary."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    wanted = render()
    if current == wanted:
        return None
    diff = list(
        difflib.unified_diff(
            current.splitlines(), wanted.splitlines(), "docs/cli.md", "generated", lineterm=""
        )
    )
    removed = sum(1 for ln in diff if ln.startswith("-") and not ln.startswith("---"))
    added = sum(1 for ln in diff if ln.startswith("+") and not ln.startswith("+++"))
    shown = diff[:DIFF_LINES_SHOWN]
    more = len(diff) - len(shown)
    tail = [f"... {more} more diff lines"] if more > 0 else []
    return "\n".join([f"{added} lines to add, {removed} to remove:", *shown, *tail])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/cli.md from the CLI's help.")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if docs/cli.md is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        problem = check()
        if problem is None:
            print("docs/cli.md is up to date.")
            return 0
        print(f"{STALE}\n{problem}", file=sys.stderr)
        return 1
    CLI_MD.write_text(render(), encoding="utf-8", newline="\n")
    print(f"Wrote {CLI_MD.relative_to(ROOT)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
