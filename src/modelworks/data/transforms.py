"""SQL and Python transforms: sources that make a dataset version out of other versions.

A transform is written like any ingest: its source hands
:meth:`~modelworks.data.service.DataService.write_version` a DuckDB relation, and the
transform service passes the input versions as lineage parents and a recipe that makes the
same bytes again (``modelworks data rebuild``).

User SQL never runs on the writer's connection. It runs in a *sandbox*: a second DuckDB
connection whose only readable files are the input versions' Parquet parts (DuckDB's
``allowed_paths`` with external access switched off, configuration locked), and whose rows
stream to the writer as Arrow. The static checks in :func:`check_select` exist to give clear
errors early; the sandbox is what guarantees a query cannot read ``/etc/passwd``, another
project's parts or a Python variable, whatever the parser lets through.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import duckdb
import pyarrow as pa
from pydantic import PrivateAttr

from modelworks.core.errors import InvalidInput, ModelworksError
from modelworks.data import storage
from modelworks.data.refs import parse_ref
from modelworks.data.sources.base import Scan, ScanContext, Source
from modelworks.data.sources.frames import to_arrow_table

if typing.TYPE_CHECKING:
    from modelworks.core.config import Settings

ENGINE = f"duckdb {duckdb.__version__}"
# Table functions that make rows without reading anything; every other one (read_csv,
# read_parquet, glob, query, ...) could read outside the input versions.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Rows handed from the sandbox to the writer per Arrow batch (one Parquet row group).
STREAM_BATCH_ROWS = 122_880

InputFormat = Literal["pandas", "arrow", "polars"]


# ---- the sandbox ---------------------------------------------------------------------------
def sandbox(settings: Settings, views: Mapping[str, Sequence[str]]) -> duckdb.DuckDBPyConnection:
    """A deterministic DuckDB connection that can read only the given versions.

    ``views`` maps a view name (``churn@latest``, exactly as a query writes it) to the local
    Parquet parts of the version it stands for.
    """
    con = storage.connect(settings, threads=1)
    try:
        # Lossless Arrow keeps HUGEINT, UUID... as themselves on the way to the writer.
        con.execute("SET arrow_lossless_conversion = true")
        for name, paths in views.items():
            storage.relation_of(con, list(paths)).create_view(name)
        allowed = sorted({p for paths in views.values() for p in paths})
        listing = ", ".join(storage.sql_string(p) for p in allowed)
        con.execute(f"SET allowed_paths = [{listing}]")
        con.execute("SET enable_external_access = false")  # cannot be switched back on
        # No `FROM some_dataframe` picking up a Python variable of the calling frame.
        con.execute("SET python_enable_replacements = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def stream_from_sandbox(
    ctx: ScanContext, box: duckdb.DuckDBPyConnection, sql: str
) -> duckdb.DuckDBPyRelation:
    """The rows of ``sql`` (run in ``box``) as a relation on the writer's connection."""
    reader = box.sql(sql).to_arrow_reader(STREAM_BATCH_ROWS)
    return ctx.con.from_arrow(reader)


# ---- SQL: what a transform may say -------------------------------------------------------
def check_select(sql: str) -> list[str]:
    """Check that ``sql`` is one read-only query over dataset versions; return the refs it
    reads (``"churn@latest"``...) as written, in order of first appearance.

    Refs are found with DuckDB's own parser (``json_serialize_sql``), not a regex: the parser
    already knows string literals, comments, quoted identifiers and nesting, so
    ``'"churn@3"'`` inside a string or a comment is never mistaken for a table, and a ref
    inside a subquery or CTE is never missed. Every table a query names is either such a ref
    or a CTE; anything else (a file name, ``read_csv``, a schema-qualified table) is refused.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInput('A SQL transform needs a query, e.g. SELECT * FROM "churn@latest".')
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidInput(f"The query does not parse: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise InvalidInput(
            f"A transform is one query; this SQL holds {len(statements)} statements. "
            "Remove the extra ones (and any trailing ';' followed by more SQL)."
        )
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI:  # a PIVOT without IN (...) expands to several
        raise InvalidInput(
            "A PIVOT in a transform must list its values, so the columns it makes are known "
            "from the query alone: PIVOT \"churn@3\" ON plan IN ('basic', 'pro') USING sum(x)."
        )
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise InvalidInput(
            f"Only SELECT (or WITH ... SELECT) queries can be transforms; this is a {name} "
            "statement. A transform reads dataset versions and its result becomes a new version: "
            "there is nothing to create, copy, attach, install, load or set."
        )
    tree = parse_tree(sql)
    ctes = {name.lower() for name in _cte_names(tree)}
    found: list[tuple[int, str]] = []
    for node in walk_tree(tree):
        node_type = node.get("type")
        if node_type == "TABLE_FUNCTION":
            fn = (node.get("function") or {}).get("function_name", "?")
            if str(fn).lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise InvalidInput(
                    f"{fn}(...) is not allowed in a transform: a transform may only read "
                    "dataset versions (and make rows with range, generate_series or unnest). "
                    'Ingest a file as a dataset first, then refer to it as "name@latest".'
                )
        elif node_type == "BASE_TABLE":
            found.extend((int(node.get("query_location") or 0), r) for r in _table_ref(node, ctes))
    return list(dict.fromkeys(ref for _, ref in sorted(found)))


def _table_ref(node: Mapping[str, Any], ctes: set[str]) -> list[str]:
    name = str(node.get("table_name", ""))
    if node.get("schema_name") or node.get("catalog_name"):
        qualified = ".".join(
            str(p) for p in (node.get("catalog_name"), node.get("schema_name"), name) if p
        )
        raise InvalidInput(
            f"Table {qualified!r} is not a dataset version. Refer to datasets as "
            '"name@version" in double quotes, e.g. "churn@3" or "churn@latest".'
        )
    if "@" in name:
        parse_ref(name)  # a clear error for "churn@" or a bad name
        return [name]
    if name.lower() in ctes:  # DuckDB matches unquoted and quoted names case-insensitively
        return []
    raise InvalidInput(
        f'Table {name!r} is not a dataset version. Refer to datasets as "name@version" in '
        f'double quotes, e.g. "{_suggest(name)}@latest" or "{_suggest(name)}@3".'
    )


def _suggest(name: str) -> str:
    return name if name and "/" not in name and "." not in name else "churn"


def parse_tree(sql: str) -> dict[str, Any]:
    """The statement as DuckDB's own parser reads it (``json_serialize_sql``), as JSON."""
    con = duckdb.connect(":memory:")
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    finally:
        con.close()
    tree: dict[str, Any] = json.loads(raw)
    if tree.get("error"):
        raise InvalidInput(
            f"The query does not parse: {tree.get('error_message', 'unknown error')}"
        )
    return tree


def walk_tree(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the serialized statement, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _cte_names(tree: Mapping[str, Any]) -> Iterator[str]:
    for node in walk_tree(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map") or []:
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    yield entry["key"]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def sql_error(exc: duckdb.Error, inputs: Mapping[str, str]) -> InvalidInput:
    """DuckDB's message, with the refs the query could read."""
    known = (
        ", ".join(f'"{ref}" ({pinned})' for ref, pinned in inputs.items())
        if inputs
        else 'none (refer to a dataset as "name@latest")'
    )
    return InvalidInput(
        f"The transform query failed: {str(exc).strip()}\nDataset versions it can read: {known}."
    )


# ---- SQL transform source ---------------------------------------------------------------
class SqlTransformSource(Source):
    """Rows of one SELECT over dataset versions; stored with the SQL and the pinned inputs."""

    kind: Literal["sql_transform"] = "sql_transform"
    sql: str
    inputs: dict[str, str]  # ref as written in the SQL -> the version it resolved to
    _paths: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @classmethod
    def over(
        cls, sql: str, inputs: Mapping[str, str], paths: Mapping[str, Sequence[str]]
    ) -> SqlTransformSource:
        src = cls(sql=sql, inputs=dict(inputs))
        src._paths = {ref: list(p) for ref, p in paths.items()}
        return src

    def scan(self, ctx: ScanContext) -> Scan:
        missing = [ref for ref in self.inputs if ref not in self._paths]
        if missing:
            raise InvalidInput(
                "This SQL transform was not given its input versions; run it through "
                "TransformService.sql (or `modelworks data transform`)."
            )
        box = sandbox(ctx.settings, self._paths)
        try:
            relation = stream_from_sandbox(ctx, box, self.sql)
        except duckdb.Error as exc:
            box.close()
            raise sql_error(exc, self.inputs) from None
        except BaseException:
            box.close()
            raise
        return Scan(relation=relation, close=box.close)

    def label(self) -> str:
        reads = ", ".join(sorted(set(self.inputs.values()))) or "no datasets"
        return f"SQL transform over {reads}"


# ---- Python transforms ------------------------------------------------------------------
def function_name(fn: Callable[..., Any]) -> str:
    """``module:qualname``, the name a rebuild imports the function by."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}:{qualname}"


def source_sha256(fn: Callable[..., Any]) -> str | None:
    """The sha256 of the function's own source text, or None when Python cannot show it."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def rebuild_obstacle(fn: Callable[..., Any]) -> str | None:
    """Why a later rebuild could not import ``fn`` again (a sentence), or None when it can."""
    name = function_name(fn)
    if not inspect.isfunction(fn):
        return (
            f"{name} is not a plain function (a functools.partial, a method or a callable "
            "object); wrap the call in a function defined at the top level of a module."
        )
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "") or ""
    if module in (None, "__main__", "__mp_main__"):
        return (
            f"{name} is defined in a script or notebook (__main__), which a rebuild cannot "
            "import; move it into a module."
        )
    if "<lambda>" in qualname:
        return f"{name} is a lambda; define it with def at the top level of a module."
    if "<locals>" in qualname:
        return f"{name} is defined inside another function; move it to the top level of a module."
    if source_sha256(fn) is None:
        return f"Python cannot read the source of {name}, so a changed function would go unnoticed."
    try:
        found = import_function(name)
    except InvalidInput as exc:
        return exc.detail
    if found is not fn:
        return f"{name} names a different object than the function that ran."
    return None


def import_function(name: str) -> Callable[..., Any]:
    """The function a recipe names as ``module:qualname``."""
    module_name, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"Cannot import module {module_name!r} for the transform function {name} ({exc}). "
            "Install or add to the path the code that defined it, then rebuild again."
        ) from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidInput(
                f"Module {module_name!r} has no {qualname!r} any more, so the transform function "
                f"{name} cannot run again. Restore it, then rebuild again."
            )
    if not callable(obj):
        raise InvalidInput(f"{name} is not a function; a Python transform needs one.")
    return typing.cast("Callable[..., Any]", obj)


def input_formats(fn: Callable[..., Any], count: int) -> list[InputFormat]:
    """What each argument is handed as: pandas by default, Arrow or Polars when annotated."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ["pandas"] * count
    try:
        signature.bind(*range(count))
    except TypeError:
        raise InvalidInput(
            f"The transform function {function_name(fn)}{signature} cannot take {count} "
            f"table(s); it is called with one DataFrame per input, in the order given."
        ) from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to what is written
        hints = {}
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    rest = next(
        (p for p in signature.parameters.values() if p.kind == inspect.Parameter.VAR_POSITIONAL),
        None,
    )
    formats: list[InputFormat] = []
    for i in range(count):
        param = positional[i] if i < len(positional) else rest
        annotation = hints.get(param.name, param.annotation) if param is not None else None
        formats.append(_format_of(annotation))
    return formats


def _format_of(annotation: Any) -> InputFormat:
    if annotation is pa.Table or annotation in ("pa.Table", "pyarrow.Table"):
        return "arrow"
    module = getattr(annotation, "__module__", "") or ""
    if module.startswith("polars") and getattr(annotation, "__name__", "") == "DataFrame":
        return "polars"
    if annotation in ("pl.DataFrame", "polars.DataFrame"):
        return "polars"
    return "pandas"


def _as_format(table: pa.Table, fmt: InputFormat) -> Any:
    if fmt == "arrow":
        return table
    if fmt == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()


class PythonTransformSource(Source):
    """Rows a Python function made from input versions; stored with the function's name."""

    kind: Literal["python_transform"] = "python_transform"
    function: str
    inputs: dict[str, str]  # ref as given -> the version it resolved to
    args: list[str]  # the pinned versions, in call order
    _fn: Callable[..., Any] | None = PrivateAttr(default=None)
    _paths: list[list[str]] = PrivateAttr(default_factory=list)

    @classmethod
    def calling(
        cls,
        fn: Callable[..., Any],
        inputs: Mapping[str, str],
        args: Sequence[str],
        paths: Sequence[Sequence[str]],
    ) -> PythonTransformSource:
        src = cls(function=function_name(fn), inputs=dict(inputs), args=list(args))
        src._fn = fn
        src._paths = [list(p) for p in paths]
        return src

    def scan(self, ctx: ScanContext) -> Scan:
        fn = self._fn
        if fn is None or len(self._paths) != len(self.args):
            raise InvalidInput(
                "This Python transform was not given its function and inputs; run it through "
                "TransformService.python."
            )
        formats = input_formats(fn, len(self.args))
        frames = [
            _as_format(storage.relation_of(ctx.con, paths).to_arrow_table(), fmt)
            for paths, fmt in zip(self._paths, formats, strict=True)
        ]
        try:
            result = fn(*frames)
        except ModelworksError:
            raise
        except Exception as exc:
            # Chained, not swallowed: the cause keeps the traceback of the user's own code.
            raise InvalidInput(
                f"The transform function {self.function} raised {type(exc).__name__}: {exc}. "
                "Fix the function and run the transform again."
            ) from exc
        try:
            table = to_arrow_table(result)
        except InvalidInput:
            raise InvalidInput(
                f"The transform function {self.function} returned a {type(result).__name__}; "
                "return a pandas or Polars DataFrame or a pyarrow Table."
            ) from None
        return Scan(relation=ctx.con.from_arrow(table))

    def label(self) -> str:
        return f"Python transform {self.function}"
