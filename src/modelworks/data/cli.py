"""Data commands: ingest sources into versioned datasets, inspect, validate, transform them.

Every command is a thin adapter over :class:`~modelworks.data.service.DataService` (and
:class:`~modelworks.data.transform_service.TransformService`): it builds the arguments,
makes one service call as the local principal and prints the result.
"""

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.filesize import decimal as human_size
from rich.markup import escape
from rich.tree import Tree

from modelworks.cli import open_store, principal
from modelworks.cli.output import (
    JSON_OPTION_HELP,
    console,
    done,
    emit,
    err_console,
    fmt,
    print_json,
    print_record,
    print_table,
    warn,
)
from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    from modelworks.core.schemas import Page
    from modelworks.data.schemas import (
        DatasetOut,
        ExpectationResult,
        IngestResult,
        LineageNodeOut,
        LineageOut,
        RejectsOut,
        ValidationReport,
        VersionOut,
    )
    from modelworks.data.service import DataService
    from modelworks.data.sources.base import Source
    from modelworks.data.transform_service import TransformService

# A check ran and the data did not pass it: validation failed, or a rebuild differs. Kept
# apart from 2 (invalid input) so that scripts can tell "the data is bad" from "the command
# or the suite file is wrong".
CHECK_FAILED = 9

# The choices as Typer reads them at run time. They repeat the data layer's own aliases
# (data.schemas, data.transport) so that starting the CLI does not build the data schemas;
# tests/cli/test_data_cli.py checks that they stay the same.
IngestMode = Literal["replace", "append"]
BadRows = Literal["fail", "quarantine"]
SchemaPolicy = Literal["strict", "additive", "any"]
FileFormat = Literal["csv", "tsv", "parquet", "json", "excel"]
Direction = Literal["up", "down", "both"]
Paging = Literal["none", "next_link", "page", "offset", "cursor"]

JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        help="Project name or id (default: MODELWORKS_PROJECT, else 'default').",
        show_default=False,
    ),
]
MessageOpt = Annotated[
    str, typer.Option("--message", "-m", help="What this version is, for the history.")
]
NameArg = Annotated[str, typer.Argument(help="Dataset name.")]
RefArg = Annotated[
    str,
    typer.Argument(help="Dataset reference: NAME (latest), NAME@3, NAME@latest or NAME@TAG."),
]

data_app = typer.Typer(
    name="data",
    help="Ingest, version, validate and transform datasets.",
    no_args_is_help=True,
)
expectations_app = typer.Typer(
    name="expectations",
    help="Manage the expectation suite checked at every ingest of a dataset.",
    no_args_is_help=True,
)
data_app.add_typer(expectations_app)


@contextlib.contextmanager
def _data() -> Iterator["DataService"]:
    """The dataset service on the local store."""
    from modelworks.data.service import DataService

    with open_store() as store:
        yield DataService(store)


def _project(project: str | None) -> str:
    from modelworks.core.config import get_settings

    return project or get_settings().project


@contextlib.contextmanager
def _working(description: str, *, quiet: bool = False) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long call runs; people only."""
    if quiet or not err_console.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        progress.add_task(escape(description), total=None)
        yield


def _read_text(path: str, what: str) -> str:
    """A file's text, or standard input for ``-``; a missing file is a clear error."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(
            f"Cannot read the {what} {path!r}: {exc.strerror or exc}. Check the path."
        ) from None


def _load_mapping(path: str, what: str) -> Any:
    """A YAML or JSON file (JSON is YAML) as Python values."""
    import yaml

    text = _read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"The {what} {path!r} is not valid YAML{where}: {problem}.") from None


def _count(n: int, noun: str) -> str:
    """``1 row``, ``1,200 rows``, ``2 batches``."""
    plural = noun + ("es" if noun.endswith(("ch", "s")) else "s")
    return f"{n:,} {noun if n == 1 else plural}"


def _source_text(source: dict[str, Any]) -> str:
    """A source's stored parameters as a short phrase: ``csv data/churn.csv``."""
    params = source.get("params", {})
    main = next(
        (str(params[k]) for k in ("path", "url", "table", "query", "stream") if k in params), ""
    )
    return f"{source.get('kind', '?')} {main}".strip()


# ---- ingest -----------------------------------------------------------------------------
def _file_spec(path: str, file_format: FileFormat | None) -> dict[str, Any]:
    """The file source for a path, glob or URL; the format from ``--format`` or its ending."""
    from modelworks.data import transport

    try:
        kind = transport.file_format(path, file_format)
    except InvalidInput:
        raise InvalidInput(
            f"Cannot tell the format of {path!r} from its name (known endings: "
            f"{', '.join(transport.FORMAT_BY_SUFFIX)}). Give it with --format, or describe "
            "the source in a file with --spec."
        ) from None
    if "://" not in path:
        # Stored with the version: absolute, so lineage and rebuilds do not depend on the
        # folder the command ran in (as the SDK's ingest_file does).
        path = os.path.abspath(os.path.expanduser(path))
    return {"kind": kind, "path": path}


def _only_with(flag: str, given: dict[str, Any]) -> None:
    """Options that belong to another kind of source are mistakes, not silently ignored."""
    stray = [name for name, value in given.items() if value not in (None, False)]
    if stray:
        raise typer.BadParameter(f"{', '.join(stray)} can only be used with {flag}.")


def build_source_spec(
    source: str | None,
    *,
    file_format: FileFormat | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    no_header: bool = False,
    sql: str | None = None,
    table: str | None = None,
    query: str | None = None,
    cursor_column: str | None = None,
    chunk_rows: int | None = None,
    http: str | None = None,
    records_path: str | None = None,
    auth_secret: str | None = None,
    auth_header: str | None = None,
    pagination: Paging | None = None,
    redis: str | None = None,
    nats: str | None = None,
    stream: str | None = None,
    spec: str | None = None,
) -> dict[str, Any]:
    """The source spec (``{"kind": ..., ...}``) the ingest options describe."""
    chosen = [
        flag
        for flag, value in (
            ("SOURCE", source),
            ("--sql", sql),
            ("--http", http),
            ("--redis", redis),
            ("--nats", nats),
            ("--spec", spec),
        )
        if value
    ]
    if len(chosen) != 1:
        what = "several: " + ", ".join(chosen) if chosen else "none"
        raise typer.BadParameter(
            f"Give exactly one source: a file path or URL (SOURCE), --sql, --http, --redis, "
            f"--nats or --spec; got {what}."
        )
    file_opts = {
        "--format": file_format,
        "--delimiter": delimiter,
        "--encoding": encoding,
        "--no-header": no_header,
    }
    sql_opts = {
        "--table": table,
        "--query": query,
        "--cursor-column": cursor_column,
        "--chunk-rows": chunk_rows,
    }
    http_opts = {
        "--records-path": records_path,
        "--auth-secret": auth_secret,
        "--auth-header": auth_header,
        "--pagination": pagination,
    }
    stream_opts = {"--stream": stream}
    kind = chosen[0]
    if kind != "SOURCE":
        _only_with("a file SOURCE", file_opts)
    if kind != "--sql":
        _only_with("--sql", sql_opts)
    if kind != "--http":
        _only_with("--http", http_opts)
    if kind not in ("--redis", "--nats"):
        _only_with("--redis or --nats", stream_opts)

    if spec:
        loaded = _load_mapping(spec, "source spec")
        if not isinstance(loaded, dict) or "kind" not in loaded:
            raise InvalidInput(
                f"The source spec {spec!r} must be a mapping with a 'kind', e.g. "
                "{kind: csv, path: data/churn.csv}."
            )
        return loaded
    if source:
        spec_out = _file_spec(source, file_format)
        if spec_out["kind"] not in ("csv", "tsv"):
            _only_with(
                "CSV or TSV files",
                {"--delimiter": delimiter, "--encoding": encoding, "--no-header": no_header},
            )
        if delimiter is not None:
            spec_out["delimiter"] = delimiter
        if encoding is not None:
            spec_out["encoding"] = encoding
        if no_header:
            spec_out["header"] = False
        return spec_out
    if sql:
        if bool(table) == bool(query):
            raise typer.BadParameter("--sql needs exactly one of --table or --query.")
        return _drop_none(
            {
                "kind": "sql",
                "url": sql,
                "table": table,
                "query": query,
                "cursor_column": cursor_column,
                "chunk_rows": chunk_rows,
            }
        )
    if http:
        return _drop_none(
            {
                "kind": "http",
                "url": http,
                "records_path": records_path,
                "auth_secret": auth_secret,
                "auth_header": auth_header or ("Authorization" if auth_secret else None),
                "pagination": {"type": pagination} if pagination else None,
            }
        )
    if not stream:
        raise typer.BadParameter(f"{chosen[0]} needs --stream (the stream to read).")
    if redis:
        return {"kind": "redis_stream", "url": redis, "stream": stream}
    return {"kind": "nats_jetstream", "url": nats, "stream": stream}


def _drop_none(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if v is not None}


def _rejects_location(rejects: "RejectsOut") -> str:
    """Where the side file of rejected rows can be read."""
    if rejects.sha256 is None:
        return "not kept"
    from modelworks.core.artifacts import ArtifactStore
    from modelworks.core.config import get_settings

    artifacts = ArtifactStore.from_settings(get_settings())
    return artifacts.local_path(rejects.sha256) or f"artifact {rejects.sha256}"


def _print_rejects(rejects: "RejectsOut") -> None:
    warn(
        f"{_count(rejects.count, 'bad row')} set aside (--bad-rows quarantine); the good rows "
        f"were stored. All rejects (line, error, raw line): {_rejects_location(rejects)}"
    )
    print_table(
        rejects.examples,
        [(key, key.replace("_", " ").capitalize()) for key in _keys(rejects.examples)],
        title="First rejected rows",
    )


def _keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return keys


def _print_validation(report: "ValidationReport") -> None:
    (done if report.success else warn)(f"Validation: {report.summary()}")


def _print_ingest(result: "IngestResult", verb: str = "Ingested") -> None:
    version = result.version
    if version is None:
        done(result.message or "Nothing new to ingest; no version was made.")
        if result.rejects:
            _print_rejects(result.rejects)
        return
    held = (
        f"; {version.ref} holds {_count(version.row_count, 'row')} in all"
        if version.mode == "append" and version.row_count != result.rows
        else ""
    )
    done(
        f"{verb} {_count(result.rows, 'row')} into {version.ref}{held} "
        f"({_count(len(version.files), 'part')}, "
        f"{human_size(version.size_bytes)}, {result.seconds:.1f} s)."
    )
    changes = version.schema_changes
    if not changes.empty:
        parts = [f"added {c.name} ({c.type})" for c in changes.added]
        parts += [f"removed {c.name} ({c.type})" for c in changes.removed]
        parts += [f"{r['name']} {r['from']} -> {r['to']}" for r in changes.retyped]
        err_console.print(f"Schema changes: {escape('; '.join(parts))}", soft_wrap=True)
    if result.rejects:
        _print_rejects(result.rejects)
    if result.validation is not None:
        _print_validation(result.validation)
    if version.status == "quarantined":
        warn(
            f"{version.ref} failed validation and is quarantined: it is not the latest version. "
            f"Inspect it with `modelworks data validate {version.ref}`."
        )
    if result.message:
        err_console.print(escape(result.message), soft_wrap=True)


@data_app.command("ingest")
def ingest(
    name: Annotated[str, typer.Argument(help="Dataset to add a version to (made if new).")],
    source: Annotated[
        str | None,
        typer.Argument(
            help="File path, glob or s3:// URL; the format comes from the ending "
            "(.csv .tsv .parquet .json .ndjson .jsonl .xlsx).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        IngestMode | None,
        typer.Option(
            help="replace: the version holds only the new rows; append: the previous "
            "version's rows plus the new ones. Default: replace, or append for sources that "
            "resume (--cursor-column, streams).",
            show_default=False,
        ),
    ] = None,
    bad_rows: Annotated[
        BadRows,
        typer.Option(
            help="fail: a malformed CSV row stops the ingest; quarantine: such rows are set "
            "aside in a side file and the rest is stored."
        ),
    ] = "fail",
    message: MessageOpt = "",
    no_create: Annotated[
        bool, typer.Option("--no-create", help="Fail if the dataset does not exist yet.")
    ] = False,
    file_format: Annotated[
        FileFormat | None,
        typer.Option(
            "--format",
            help="File format, when the file's name does not tell.",
            rich_help_panel="Files",
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="CSV field separator (default: detected).", rich_help_panel="Files"),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="CSV text encoding: utf-8 (the default), utf-16 or latin-1.",
            rich_help_panel="Files",
        ),
    ] = None,
    no_header: Annotated[
        bool,
        typer.Option(
            "--no-header",
            help="The CSV has no header line; columns are named column0, column1, ...",
            rich_help_panel="Files",
        ),
    ] = False,
    sql: Annotated[
        str | None,
        typer.Option(
            "--sql",
            help="Database URL (SQLAlchemy), e.g. 'postgresql://app:${secret:PG}@db/shop'.",
            rich_help_panel="SQL",
        ),
    ] = None,
    table: Annotated[str | None, typer.Option(help="Table to read.", rich_help_panel="SQL")] = None,
    query: Annotated[
        str | None, typer.Option(help="SELECT to run instead of a table.", rich_help_panel="SQL")
    ] = None,
    cursor_column: Annotated[
        str | None,
        typer.Option(
            help="Read only rows whose value here is above the last ingest's (incremental).",
            rich_help_panel="SQL",
        ),
    ] = None,
    chunk_rows: Annotated[
        int | None,
        typer.Option(min=1, help="Rows fetched per round trip.", rich_help_panel="SQL"),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option("--http", help="JSON API URL to read records from.", rich_help_panel="HTTP"),
    ] = None,
    records_path: Annotated[
        str | None,
        typer.Option(
            help="Where the records are in the response, e.g. data.items.",
            rich_help_panel="HTTP",
        ),
    ] = None,
    auth_secret: Annotated[
        str | None,
        typer.Option(
            help="Secret holding the API token (see `modelworks secrets set`), sent as "
            "'Authorization: Bearer <token>'.",
            rich_help_panel="HTTP",
        ),
    ] = None,
    auth_header: Annotated[
        str | None,
        typer.Option(
            help="Header to send the --auth-secret in, instead of Authorization.",
            rich_help_panel="HTTP",
        ),
    ] = None,
    pagination: Annotated[
        Paging | None,
        typer.Option(
            help="How the API pages (default: none). Tune it further with --spec.",
            rich_help_panel="HTTP",
            show_default=False,
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option("--redis", help="Redis URL of a stream.", rich_help_panel="Streams"),
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="NATS URL of a JetStream stream.", rich_help_panel="Streams"),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(help="Stream key (Redis) or stream name (NATS).", rich_help_panel="Streams"),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep reading: append a version per batch until Ctrl-C.",
            rich_help_panel="Streams",
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="With --follow: seconds to wait after a poll that found nothing new.",
            rich_help_panel="Streams",
        ),
    ] = 1.0,
    max_batches: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Follow until this many versions were made (implies --follow).",
            rich_help_panel="Streams",
        ),
    ] = None,
    spec: Annotated[
        str | None,
        typer.Option(
            "--spec",
            help="YAML or JSON file describing any source, e.g. {kind: csv, path: x.csv}.",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read a file, a database table, an API or a stream into a new dataset version.

    Versions are immutable; NAME means its latest version, NAME@3 version 3. Put passwords
    and tokens in secrets and refer to them as ${secret:NAME}: only the reference is stored.

    Example:
      modelworks data ingest churn data/churn.csv --message "January export"
    """
    from modelworks.data.sources.base import source_from_spec

    follow = follow or max_batches is not None
    if follow and not (redis or nats):
        raise typer.BadParameter("--follow and --max-batches go with --redis or --nats.")
    if follow and (mode == "replace" or message or no_create):
        raise typer.BadParameter(
            "--follow appends a version per batch as the stream decides: leave out --mode "
            "replace, --message and --no-create."
        )
    src = source_from_spec(
        build_source_spec(
            source,
            file_format=file_format,
            delimiter=delimiter,
            encoding=encoding,
            no_header=no_header,
            sql=sql,
            table=table,
            query=query,
            cursor_column=cursor_column,
            chunk_rows=chunk_rows,
            http=http,
            records_path=records_path,
            auth_secret=auth_secret,
            auth_header=auth_header,
            pagination=pagination,
            redis=redis,
            nats=nats,
            stream=stream,
            spec=spec,
        )
    )
    chosen_mode: IngestMode = mode or ("append" if src.resumable else "replace")
    proj = _project(project)
    if follow:
        _follow(proj, name, src, bad_rows, interval, max_batches, as_json)
        return
    with _data() as svc, _working(f"Ingesting {src.label()} into {name}", quiet=as_json):
        result = svc.ingest(
            principal(),
            proj,
            name,
            src,
            mode=chosen_mode,
            bad_rows=bad_rows,
            create=not no_create,
            message=message,
        )
    emit(result, as_json, lambda: _print_ingest(result))


def _follow(
    project: str,
    name: str,
    src: "Source",
    bad_rows: BadRows,
    interval: float,
    max_batches: int | None,
    as_json: bool,
) -> None:
    """Append a version per batch of a stream until Ctrl-C (or ``max_batches``)."""
    from dataclasses import asdict

    from modelworks.data.stream_consumer import consume

    if not as_json:
        err_console.print(
            f"Following {escape(src.label())} into {escape(name)}: a version per batch. "
            "Ctrl-C stops after the batch in progress.",
            soft_wrap=True,
        )
    with _data() as svc:
        stats = consume(
            svc,
            principal(),
            project,
            name,
            src,
            interval=interval,
            max_batches=max_batches,
            bad_rows=bad_rows,
            on_batch=None if as_json else _print_ingest,
        )
    last = f"; latest is {name}@{stats.last_version}" if stats.last_version else ""
    emit(
        asdict(stats),
        as_json,
        lambda: done(
            f"Stopped ({stats.stopped}): {_count(stats.batches, 'batch')}, "
            f"{_count(stats.rows, 'row')} in "
            f"{stats.seconds:.1f} s{last}."
        ),
    )


# ---- datasets ---------------------------------------------------------------------------
_DATASET_COLUMNS = [
    ("name", "Name"),
    ("latest_version", "Latest"),
    ("version_count", "Versions"),
    ("schema_policy", "Schema policy"),
    ("has_expectations", "Expectations"),
    ("updated_at", "Updated"),
    ("deleted", "Deleted"),
    ("description", "Description"),
]
_VERSION_COLUMNS = [
    ("version", "Version"),
    ("status", "Status"),
    ("rows", "Rows"),
    ("size", "Size"),
    ("mode", "Mode"),
    ("tags", "Tags"),
    ("source", "Source"),
    ("created_at", "Created"),
    ("message", "Message"),
]


def _more(page: "Page[Any]") -> None:
    if page.next_page_token:
        err_console.print(f"More results: --page-token {page.next_page_token}", soft_wrap=True)


@data_app.command("create")
def create(
    name: NameArg,
    description: Annotated[str, typer.Option(help="What the dataset holds.")] = "",
    schema_policy: Annotated[
        SchemaPolicy,
        typer.Option(
            help="strict: no schema changes; additive: new columns and widening types; "
            "any: every change allowed (and recorded)."
        ),
    ] = "additive",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty dataset, to set its policy before the first ingest (ingest also creates).

    Example:
      modelworks data create churn --schema-policy strict --description "Monthly churn export"
    """
    with _data() as svc:
        ds = svc.create_dataset(principal(), _project(project), name, description, schema_policy)
    emit(ds, as_json, lambda: done(f"Created dataset {ds.name} ({ds.schema_policy} schema)."))


@data_app.command("list")
def list_datasets(
    project: ProjectOpt = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include deleted ones.")] = False,
    max_results: Annotated[int, typer.Option(help="Results per page (1-10000).")] = 100,
    page_token: Annotated[
        str | None, typer.Option(help="The next_page_token printed with the previous page.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List a project's datasets, most recently changed first.

    Example:
      modelworks data list --project default
    """
    proj = _project(project)
    with _data() as svc:
        page = svc.list_datasets(
            principal(),
            proj,
            include_deleted=deleted,
            max_results=max_results,
            page_token=page_token,
        )

    def render() -> None:
        print_table(
            [d.model_dump() for d in page.items],
            _DATASET_COLUMNS,
            empty=f"No datasets in {proj}. Make one: modelworks data ingest NAME FILE.csv",
        )
        _more(page)

    emit(page, as_json, render)


def _version_row(v: "VersionOut") -> dict[str, Any]:
    return {
        **v.model_dump(),
        "rows": f"{v.row_count:,}",
        "size": human_size(v.size_bytes),
        "tags": ", ".join(v.tags) or None,
        "source": "recipe: " + v.recipe.get("kind", "?") if v.recipe else _source_text(v.source),
    }


def _print_dataset(ds: "DatasetOut", versions: Sequence["VersionOut"]) -> None:
    print_record(f"Dataset {ds.name}", ds.model_dump())
    print_table(
        [_version_row(v) for v in versions],
        _VERSION_COLUMNS,
        title="Versions",
        empty=f"{ds.name} has no versions yet. Add one: modelworks data ingest {ds.name} FILE",
    )


def _print_version(v: "VersionOut") -> None:
    info: dict[str, Any] = {
        "ref": v.ref,
        "id": v.id,
        "status": v.status,
        "mode": v.mode,
        "appended to": f"{v.dataset}@{v.parent_version}" if v.parent_version else None,
        "rows": f"{v.row_count:,}",
        "size": f"{human_size(v.size_bytes)} in {_count(len(v.files), 'Parquet part')}",
        "content hash": v.content_hash,
        "source": _source_text(v.source),
        "source params": v.source.get("params"),
        "tags": ", ".join(v.tags) or None,
        "validation": {None: None, True: "passed", False: "failed"}[v.validation_success],
        "rejected rows": v.rejects.count if v.rejects else None,
        "message": v.message or None,
        "created by": v.created_by,
        "created": v.created_at,
    }
    print_record(f"Version {v.ref}", {k: val for k, val in info.items() if val is not None})
    print_table(
        [c.model_dump() for c in v.columns],
        [("name", "Column"), ("type", "Type"), ("nullable", "Nullable")],
        title="Schema",
    )
    changes = v.schema_changes
    if not changes.empty:
        rows = [{"change": "added", "column": c.name, "type": c.type} for c in changes.added]
        rows += [{"change": "removed", "column": c.name, "type": c.type} for c in changes.removed]
        rows += [
            {"change": "retyped", "column": r["name"], "type": f"{r['from']} -> {r['to']}"}
            for r in changes.retyped
        ]
        print_table(
            rows,
            [("change", "Change"), ("column", "Column"), ("type", "Type")],
            title="Schema changes since the previous version",
        )
    if v.recipe:
        print_record("Recipe (rebuild with `modelworks data rebuild`)", v.recipe)


@data_app.command("show")
def show(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME|REF",
            help="A dataset name (the dataset and its versions) or a reference such as "
            "churn@3 or churn@golden (one version: schema, source, recipe).",
        ),
    ],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset and its versions, or one version in detail.

    Example:
      modelworks data show churn@latest
    """
    proj = _project(project)
    with _data() as svc:
        if "@" in target:
            version = svc.get_version(principal(), proj, target, with_profile=False)
            emit(version, as_json, lambda: _print_version(version))
            return
        ds = svc.get_dataset(principal(), proj, target)
        versions = svc.list_versions(principal(), proj, target)
    emit({"dataset": ds, "versions": versions}, as_json, lambda: _print_dataset(ds, versions))


@data_app.command("preview")
def preview(
    ref: RefArg,
    offset: Annotated[int, typer.Option(min=0, help="Rows to skip.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to show.")] = 20,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--columns",
            "-c",
            help="Columns to show, comma-separated or repeated (default: all).",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show rows of a dataset version as a table.

    Example:
      modelworks data preview churn@2 --limit 10 --columns customer_id,tenure,churned
    """
    chosen = [c.strip() for value in columns or () for c in value.split(",") if c.strip()]
    with _data() as svc:
        out = svc.preview(
            principal(), _project(project), ref, offset=offset, limit=limit, columns=chosen or None
        )

    def render() -> None:
        names = [c.name for c in out.columns]
        print_table(
            [dict(zip(names, row, strict=True)) for row in out.rows],
            [(n, n) for n in names],
            title=out.ref,
            empty=f"{out.ref} has {_count(out.total, 'row')}; none from offset {out.offset}.",
        )
        if out.rows:
            last = out.offset + len(out.rows)
            more = f" Next: --offset {last}" if last < out.total else ""
            err_console.print(f"Rows {out.offset + 1:,}-{last:,} of {out.total:,}.{more}")

    emit(out, as_json, render)


@data_app.command("profile")
def profile(ref: RefArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Show per-column statistics of a version: type, nulls, distinct, min, max, mean, std.

    Example:
      modelworks data profile churn@latest
    """
    proj = _project(project)
    with _data() as svc:
        version = svc.get_version(principal(), proj, ref)
        # Every ingest stores a profile; older versions without one get it computed now.
        prof = version.profile or svc.profile(principal(), proj, version.ref)

    def render() -> None:
        rows = [{**c.model_dump(), "null_pct": f"{c.null_rate * 100:.1f}%"} for c in prof.columns]
        print_table(
            rows,
            [
                ("name", "Column"),
                ("type", "Type"),
                ("null_pct", "Nulls"),
                ("distinct", "Distinct"),
                ("min", "Min"),
                ("max", "Max"),
                ("mean", "Mean"),
                ("std", "Std"),
            ],
            title=f"{version.ref}: {_count(prof.row_count, 'row')}",
        )

    emit(prof, as_json, render)


# ---- validation and expectations --------------------------------------------------------
def _suite_json(path: str) -> dict[str, Any]:
    """An expectation suite file (YAML; ``-`` for stdin) in the JSON form the service stores."""
    return _parse_suite(_read_text(path, "expectation suite"))


def _parse_suite(text: str) -> dict[str, Any]:
    from modelworks.data.expectations import load_suite, suite_to_json

    return suite_to_json(load_suite(text))


def _suite_yaml(suite: dict[str, Any]) -> str:
    from modelworks.data.expectations import dump_suite, suite_from_json

    return dump_suite(suite_from_json(suite))


def _expectation_text(expectation: dict[str, Any]) -> str:
    """``range tenure (min=0, max=72)``: the kind, the column(s), the settings."""
    e = dict(expectation)
    e.pop("description", None)
    kind = e.pop("type", "?")
    severity = e.pop("severity", "error")
    cols = e.pop("column", None) or ", ".join(e.pop("columns", None) or [])
    settings = ", ".join(f"{k}={fmt(v)}" for k, v in e.items())
    return " ".join(
        part
        for part in (
            kind,
            cols,
            f"({settings})" if settings else "",
            "[warning]" if severity == "warning" else "",
        )
        if part
    )


def _mark(result: "ExpectationResult") -> str:
    if result.success:
        return "✓"
    # A failed warning is reported but does not fail the validation.
    return "!" if result.expectation.get("severity") == "warning" else "✗"


def _print_report(report: "ValidationReport", ref: str) -> None:
    rows = [
        {
            "ok": _mark(r),
            "expectation": _expectation_text(r.expectation),
            "observed": r.observed,
            "unexpected": r.unexpected_count or None,
            "message": r.message,
        }
        for r in report.results
    ]
    print_table(
        rows,
        [
            ("ok", ""),
            ("expectation", "Expectation"),
            ("observed", "Observed"),
            ("unexpected", "Unexpected rows"),
            ("message", "Message"),
        ],
        title=f"Validation of {ref} ({_count(report.row_count, 'row')})",
        empty="The suite has no expectations.",
    )


@data_app.command("validate")
def validate(
    ref: RefArg,
    suite: Annotated[
        str | None,
        typer.Option(
            "--suite",
            help="Expectation suite (YAML) to check instead of the dataset's own.",
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a version against expectations; exits 9 when any expectation fails.

    Without --suite, the dataset's own suite (see `data expectations`) is checked. The
    result is stored with the version either way.

    Example:
      modelworks data validate churn@latest --suite expectations.yaml || echo "bad data"
    """
    suite_json = _suite_json(suite) if suite else None
    with _data() as svc, _working(f"Validating {ref}", quiet=as_json):
        run = svc.validate(principal(), _project(project), ref, suite_json)

    def render() -> None:
        _print_report(run.report, run.ref)
        _print_validation(run.report)

    emit(run, as_json, render)
    if not run.success:
        raise typer.Exit(CHECK_FAILED)


@data_app.command("validations")
def validations(
    ref: RefArg,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Results to show.")] = 20,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the stored validation results of a version, newest first.

    Example:
      modelworks data validations churn@latest
    """
    with _data() as svc:
        runs = svc.list_validations(principal(), _project(project), ref, limit=limit)

    def render() -> None:
        rows = [
            {
                **r.model_dump(),
                "failed": len(r.report.failures()),
                "checked": len(r.report.results),
            }
            for r in runs
        ]
        print_table(
            rows,
            [
                ("created_at", "When"),
                ("ref", "Version"),
                ("trigger", "Trigger"),
                ("success", "Passed"),
                ("failed", "Failed"),
                ("checked", "Expectations"),
                ("created_by", "By"),
            ],
            empty=f"{ref} was never validated. Run `modelworks data validate {ref}`.",
        )

    emit(runs, as_json, render)


@expectations_app.command("infer")
def expectations_infer(
    ref: RefArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the suite to this YAML file."),
    ] = None,
    save: Annotated[
        bool,
        typer.Option("--save", help="Make it the dataset's suite, checked at every ingest."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose an expectation suite from a version's profile (types, nulls, ranges, values).

    Prints the YAML unless -o is given; review it before --save, since it describes the data
    as it is, not as it should be.

    Example:
      modelworks data expectations infer churn@latest -o expectations.yaml
    """
    from modelworks.data.refs import parse_ref

    proj = _project(project)
    with _data() as svc:
        suite = svc.infer_expectations(principal(), proj, ref)
        if save:
            svc.set_expectations(principal(), proj, parse_ref(ref).name, suite)
    text = _suite_yaml(suite)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        done(f"Wrote {len(suite.get('expectations', []))} expectations to {output}.")
    if save:
        done(f"Saved them as the expectations of {parse_ref(ref).name}.")
    if as_json:
        print_json({"suite": suite})  # the REST API's shape
    elif output is None:
        typer.echo(text, nl=False)


@expectations_app.command("show")
def expectations_show(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Print a dataset's expectation suite as YAML (JSON with --json).

    Example:
      modelworks data expectations show churn > expectations.yaml
    """
    with _data() as svc:
        suite = svc.get_expectations(principal(), _project(project), name)
    if as_json:
        print_json({"suite": suite})  # the REST API's shape; null when there is none
    elif suite is None:
        err_console.print(
            f"{escape(name)} has no expectations. Propose some with "
            f"`modelworks data expectations infer {escape(name)} --save`.",
            soft_wrap=True,
        )
    else:
        typer.echo(_suite_yaml(suite), nl=False)


@expectations_app.command("set")
def expectations_set(
    name: NameArg,
    file: Annotated[str, typer.Argument(help="Suite as YAML; - reads standard input.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a YAML file the dataset's expectation suite, checked at every ingest.

    Example:
      modelworks data expectations set churn expectations.yaml
    """
    suite = _suite_json(file)
    with _data() as svc:
        ds = svc.set_expectations(principal(), _project(project), name, suite)
    count = len(suite.get("expectations", []))
    emit(ds, as_json, lambda: done(f"Set {count} expectations on {ds.name}."))


@expectations_app.command("clear")
def expectations_clear(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a dataset's expectation suite; ingests are no longer checked.

    Example:
      modelworks data expectations clear churn
    """
    with _data() as svc:
        ds = svc.set_expectations(principal(), _project(project), name, None)
    emit(ds, as_json, lambda: done(f"Removed the expectations of {ds.name}."))


def edit_text(text: str, suffix: str = ".yaml") -> str:
    """``text`` after the user edited it in $VISUAL / $EDITOR (default vi; notepad on Windows)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    editor = editor or ("notepad" if os.name == "nt" else "vi")
    fd, name = tempfile.mkstemp(prefix="modelworks-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            # The editor is the user's own setting, run on their own file, as in git or click.
            code = subprocess.call([*shlex.split(editor), str(path)])  # noqa: S603
        except OSError as exc:
            raise InvalidInput(
                f"Cannot start the editor {editor!r}: {exc.strerror or exc}. Set EDITOR to "
                "one that exists, e.g. EDITOR=nano."
            ) from None
        if code != 0:
            raise InvalidInput(f"The editor {editor!r} exited with code {code}; nothing saved.")
        return path.read_text(encoding="utf-8")
    finally:
        path.unlink(missing_ok=True)


@expectations_app.command("edit")
def expectations_edit(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Edit a dataset's expectation suite in $EDITOR; it is checked before it is saved.

    With no suite yet, the editor opens on one inferred from the latest version.

    Example:
      EDITOR=nano modelworks data expectations edit churn
    """
    proj = _project(project)
    with _data() as svc:
        current = svc.get_expectations(principal(), proj, name)
        start = current if current is not None else svc.infer_expectations(principal(), proj, name)
    before = _suite_yaml(start)
    after = edit_text(before)
    if after == before and current is not None:
        done("No changes; nothing saved.")
        return
    try:
        suite = _parse_suite(after)
    except InvalidInput as exc:
        kept = Path(tempfile.gettempdir()) / f"modelworks-{name}-expectations.yaml"
        kept.write_text(after, encoding="utf-8")
        raise InvalidInput(
            f"{exc.detail} Nothing was saved; your edit is kept in {kept}. Fix it and run "
            f"`modelworks data expectations set {name} {kept}`."
        ) from None
    with _data() as svc:
        ds = svc.set_expectations(principal(), proj, name, suite)
    count = len(suite.get("expectations", []))
    emit(ds, as_json, lambda: done(f"Saved {count} expectations on {ds.name}."))


# ---- transforms -------------------------------------------------------------------------
@data_app.command("transform")
def transform(
    output: Annotated[str, typer.Option("--output", "-o", help="Dataset to write the result to.")],
    sql: Annotated[
        str | None,
        typer.Option(
            "--sql",
            help='DuckDB SELECT over dataset refs in double quotes, e.g. FROM "churn@3".',
        ),
    ] = None,
    sql_file: Annotated[
        str | None, typer.Option("--sql-file", help="Read the SELECT from this file.")
    ] = None,
    mode: Annotated[
        IngestMode,
        typer.Option(help="replace, or append the rows to the output's latest version."),
    ] = "replace",
    message: MessageOpt = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new dataset version from a SQL query over dataset versions.

    The query and the exact versions it read are stored as the version's recipe, so
    `data rebuild` can make it again and `data lineage` shows where it came from.

    Example:
      modelworks data transform --sql 'SELECT * FROM "churn@3" WHERE tenure > 12' -o churn-long
    """
    if bool(sql) == bool(sql_file):
        raise typer.BadParameter("Give the query with exactly one of --sql or --sql-file.")
    text = sql or _read_text(str(sql_file), "SQL file")
    with _transforms() as tx, _working(f"Running the query into {output}", quiet=as_json):
        result = tx.sql(principal(), _project(project), text, output, mode=mode, message=message)
    emit(result, as_json, lambda: _print_ingest(result, "Wrote"))


@contextlib.contextmanager
def _transforms() -> Iterator["TransformService"]:
    """The transform service on the local store."""
    from modelworks.data.transform_service import TransformService

    with open_store() as store:
        yield TransformService(store)


@data_app.command("clean")
def clean(
    ref: RefArg,
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="YAML list of cleaning steps, e.g. '- op: deduplicate'; - reads standard input.",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Dataset to write to (default: a new version of REF's own)."
        ),
    ] = None,
    message: MessageOpt = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply cleaning steps (deduplicate, coerce, impute, clip, filter ...) to a version.

    Steps: deduplicate, coerce, impute, clip, normalize_text, parse_dates, drop_nulls,
    rename, drop_columns and filter. Statistics a step needs (a median, quantiles) are
    stored with the recipe, so `data rebuild` makes the same bytes again.

    Example:
      modelworks data clean churn@3 --steps cleaning.yaml --output churn-clean
    """
    loaded = _load_mapping(steps, "steps file")
    with _transforms() as tx, _working(f"Cleaning {ref}", quiet=as_json):
        result = tx.clean(
            principal(), _project(project), ref, loaded, output=output, message=message
        )
    emit(result, as_json, lambda: _print_ingest(result, "Wrote"))


@data_app.command("rebuild")
def rebuild(
    ref: RefArg,
    write: Annotated[
        bool,
        typer.Option("--write", help="Also store the rebuilt rows as a new version."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run a version's recipe and compare; exits 9 when the result is not identical.

    Example:
      modelworks data rebuild churn-long@1
    """
    with _transforms() as tx, _working(f"Rebuilding {ref}", quiet=as_json):
        result = tx.rebuild(principal(), _project(project), ref, write=write)

    def render() -> None:
        # The service's message holds the row count, both hashes and, when they differ, why.
        (done if result.identical else warn)(result.message)

    emit(result, as_json, render)
    if not result.identical:
        raise typer.Exit(CHECK_FAILED)


# ---- lineage ----------------------------------------------------------------------------
def _node_text(node: "LineageNodeOut", relation: str | None = None) -> str:
    kind = "" if node.type == "dataset_version" else f"[dim]{escape(node.type)}:[/dim] "
    how = f"  [dim]({escape(relation)})[/dim]" if relation else ""
    return f"{kind}[bold]{escape(node.label)}[/bold]{how}"


def lineage_tree(graph: "LineageOut", direction: str) -> Tree:
    """The graph as a tree from its root: what it was made from, what was made from it."""
    ups: dict[tuple[str, str], list[Any]] = {}
    downs: dict[tuple[str, str], list[Any]] = {}
    for edge in graph.edges:
        ups.setdefault((edge.child.type, edge.child.id), []).append(edge)
        downs.setdefault((edge.parent.type, edge.parent.id), []).append(edge)

    def grow(branch: Tree, key: tuple[str, str], upward: bool, seen: frozenset[Any]) -> None:
        for edge in (ups if upward else downs).get(key, []):
            node = edge.parent if upward else edge.child
            nkey = (node.type, node.id)
            sub = branch.add(_node_text(node, edge.relation))
            if nkey not in seen:  # a diamond is drawn twice; a cycle is not followed
                grow(sub, nkey, upward, seen | {nkey})

    root_key = (graph.root.type, graph.root.id)
    tree = Tree(_node_text(graph.root))
    for upward, title in ((True, "made from"), (False, "used by")):
        if direction == ("down" if upward else "up"):
            continue
        branch = tree.add(f"[italic]{title}[/italic]") if direction == "both" else tree
        if not (ups if upward else downs).get(root_key):
            branch.add("[dim]nothing recorded[/dim]")
        grow(branch, root_key, upward, frozenset({root_key}))
    return tree


@data_app.command("lineage")
def lineage(
    ref: RefArg,
    direction: Annotated[
        Direction,
        typer.Option(
            help="up: what it was made from; down: what was made from it; both.",
        ),
    ] = "both",
    depth: Annotated[int, typer.Option(min=1, max=50, help="How many steps to follow.")] = 10,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show where a version came from and what was made from it, as a tree.

    Example:
      modelworks data lineage churn-long@1 --direction up
    """
    with _data() as svc:
        graph = svc.lineage(
            principal(),
            _project(project),
            ref,
            direction=direction,
            depth=depth,
        )
    emit(graph, as_json, lambda: console.print(lineage_tree(graph, direction)))


# ---- tags and dataset settings ----------------------------------------------------------
@data_app.command("tag")
def tag(
    ref: RefArg,
    tag_name: Annotated[str, typer.Argument(metavar="TAG", help="Tag name, e.g. golden.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point a tag at a version (moving it if it pointed elsewhere); use it as NAME@TAG.

    Example:
      modelworks data tag churn@3 golden
    """
    with _data() as svc:
        version = svc.tag_version(principal(), _project(project), ref, tag_name)
    emit(
        version,
        as_json,
        lambda: done(f"{version.dataset}@{tag_name} now means {version.ref}."),
    )


@data_app.command("untag")
def untag(
    name: NameArg,
    tag_name: Annotated[str, typer.Argument(metavar="TAG", help="The tag to remove.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a tag from a dataset; the version it named stays.

    Example:
      modelworks data untag churn golden
    """
    with _data() as svc:
        ds = svc.untag(principal(), _project(project), name, tag_name)
    emit(ds, as_json, lambda: done(f"Removed tag {tag_name} from {ds.name}."))


@data_app.command("update")
def update(
    name: NameArg,
    description: Annotated[
        str | None, typer.Option(help="What the dataset holds.", show_default=False)
    ] = None,
    schema_policy: Annotated[
        SchemaPolicy | None,
        typer.Option(
            help="strict: no schema changes; additive: new columns and widening types; "
            "any: every change allowed (and recorded).",
            show_default=False,
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a dataset's description or schema policy.

    Example:
      modelworks data update churn --schema-policy strict --description "Monthly churn export"
    """
    if description is None and schema_policy is None:
        raise typer.BadParameter("Give --description and/or --schema-policy.")
    with _data() as svc:
        ds = svc.update_dataset(
            principal(),
            _project(project),
            name,
            description=description,
            schema_policy=schema_policy,
        )
    emit(ds, as_json, lambda: done(f"Updated {ds.name} (schema policy: {ds.schema_policy})."))


@data_app.command("delete")
def delete(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a dataset (soft: its versions are kept and `data restore` brings it back).

    Example:
      modelworks data delete churn-old
    """
    with _data() as svc:
        ds = svc.delete_dataset(principal(), _project(project), name)
    emit(
        ds,
        as_json,
        lambda: done(f"Deleted {ds.name}; undo with `modelworks data restore {ds.name}`."),
    )


@data_app.command("restore")
def restore(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Restore a deleted dataset with all its versions.

    Example:
      modelworks data restore churn-old
    """
    with _data() as svc:
        ds = svc.restore_dataset(principal(), _project(project), name)
    emit(ds, as_json, lambda: done(f"Restored {ds.name}."))
