"""Built-in cleansing steps, compiled to one DuckDB query over a dataset version.

Steps are small Pydantic models told apart by ``op`` (the JSON form REST, CLI and recipes
use: ``{"op": "impute", "columns": ["age"], "strategy": "median"}``). A list of steps
compiles to a chain of CTEs, one per step, each reading the one before.

Statistics a step needs (means, medians, modes, quantiles) are computed once, when the
version is made, from the data as the earlier steps left it, and returned as ``computed``:
the recipe stores them, and a rebuild compiles the same query from the steps and those
numbers without recomputing anything. So a rebuild depends on nothing but the input bytes
and the recipe.

Row order is the input's: a row number taken over the input in read order (the cleaning
query runs on one thread, where DuckDB scans Parquet in order) travels with every row, and
steps that reorder rows (deduplicate) sort back by it, which also makes "keep the first
occurrence" well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Annotated, Any, Literal

import duckdb
from duckdb.sqltypes import DuckDBPyType
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError

from modelworks.core.errors import InvalidInput
from modelworks.data.sources.base import Scan, ScanContext, Source
from modelworks.data.storage import quote_identifier as q
from modelworks.data.storage import sql_string
from modelworks.data.transforms import parse_tree, sandbox, stream_from_sandbox, walk_tree

ROW = "__mw_row"  # the input row number carried through the steps
INTEGER_TYPES = frozenset(
    {"tinyint", "smallint", "integer", "bigint", "hugeint"}
    | {"utinyint", "usmallint", "uinteger", "ubigint", "uhugeint"}
)
FLOAT_TYPES = frozenset({"float", "double"})
TEMPORAL_TYPES = frozenset(
    {"date", "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp with time zone"}
)
# Friendly names for coerce, including the Arrow names dataset schemas show.
TYPE_ALIASES = {
    "int": "BIGINT",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "int16": "SMALLINT",
    "int8": "TINYINT",
    "float": "DOUBLE",
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "str": "VARCHAR",
    "string": "VARCHAR",
    "large_string": "VARCHAR",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMP",
    "timestamp[us]": "TIMESTAMP",
    "timestamp[ns]": "TIMESTAMP_NS",
    "timestamp[ms]": "TIMESTAMP_MS",
    "timestamp[s]": "TIMESTAMP_S",
    "date32[day]": "DATE",
}

Columns = Annotated[list[str], Field(min_length=1)]


class Compiler:
    """Builds the step chain over a view, and computes or replays step statistics."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, view: str, computed: Mapping[str, Any] | None
    ) -> None:
        self.con = con
        self.replaying = computed is not None
        self.computed: dict[str, Any] = dict(computed or {})
        if ROW in con.sql(f"SELECT * FROM {q(view)}").columns:
            raise InvalidInput(f"The input has a column named {ROW!r}, which cleaning reserves.")
        self.ctes = [f"s0 AS (SELECT *, row_number() OVER () AS {ROW} FROM {q(view)})"]
        self.reordered = False

    @property
    def current(self) -> str:
        return f"s{len(self.ctes) - 1}"

    def query(self, tail: str) -> str:
        return "WITH " + ",\n".join(self.ctes) + "\n" + tail

    def columns(self) -> dict[str, DuckDBPyType]:
        """The columns (and their types) as the steps so far leave them."""
        rel = self.con.sql(self.query(f"SELECT * FROM {self.current}"))
        return {c: t for c, t in zip(rel.columns, rel.types, strict=True) if c != ROW}

    def add(self, body: str) -> None:
        """Add a step: ``body`` is a query over :attr:`current`, the previous step."""
        self.ctes.append(f"s{len(self.ctes)} AS ({body})")
        self.con.sql(self.query(f"SELECT * FROM {self.current}"))  # bind now: errors name the step

    def replace(self, exprs: Mapping[str, str]) -> None:
        if exprs:
            items = ", ".join(f"{e} AS {q(name)}" for name, e in exprs.items())
            self.add(f"SELECT * REPLACE ({items}) FROM {self.current}")

    def stat(self, step: int, key: str, compute: Callable[[], Any]) -> Any:
        """A statistic of step ``step``: computed now, or the value the recipe stored."""
        slot = self.computed.setdefault(str(step), {})
        if self.replaying:
            if key not in slot:
                raise InvalidInput(
                    f"The recipe has no computed value {key!r} for step {step + 1}; it was "
                    "edited or made by another version of Modelworks. Run the cleaning again."
                )
            return slot[key]
        slot[key] = compute()
        return slot[key]

    def fetch(self, select: str) -> tuple[Any, ...]:
        rows = self.con.sql(self.query(f"SELECT {select} FROM {self.current}")).fetchall()
        return tuple(rows[0])

    def final_sql(self) -> str:
        order = f" ORDER BY {ROW}" if self.reordered else ""
        return self.query(f"SELECT * EXCLUDE ({ROW}) FROM {self.current}{order}")


def _require(step: str, wanted: Sequence[str], cols: Mapping[str, Any]) -> None:
    missing = [c for c in wanted if c not in cols]
    if missing:
        raise InvalidInput(
            f"{step}: no column(s) {', '.join(map(repr, missing))} at this step; the columns "
            f"are {', '.join(cols) or 'none'}."
        )


def _kind(t: DuckDBPyType) -> str:
    tid = str(t.id)
    if tid in INTEGER_TYPES or tid == "decimal":
        return "exact"
    if tid in FLOAT_TYPES:
        return "float"
    if tid == "varchar":
        return "string"
    if tid in TEMPORAL_TYPES:
        return "temporal"
    return "other"


def _require_numeric(step: str, name: str, t: DuckDBPyType) -> None:
    if _kind(t) not in ("exact", "float"):
        raise InvalidInput(
            f"{step}: column {name!r} is {t}, not a number. Coerce it first, e.g. "
            f'{{"op": "coerce", "columns": {{"{name}": "double"}}}}.'
        )


def _literal(value: Any, sql_type: str) -> str:
    """``value`` typed as ``sql_type``; text through a cast so doubles keep every bit."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)  # shortest text that parses back to the same double
    else:
        text = str(value)
    return f"CAST({sql_string(text)} AS {sql_type})"


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _first_float(c: Compiler, select: str) -> float | None:
    return _float(c.fetch(select)[0])


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def label(self, index: int) -> str:
        return f"Step {index + 1} ({getattr(self, 'op', '?')})"

    def apply(self, c: Compiler, index: int) -> None:
        raise NotImplementedError


class Deduplicate(_Step):
    """Drop repeated rows (equal in ``columns``, default all), keeping the first or last."""

    op: Literal["deduplicate"] = "deduplicate"
    columns: list[str] | None = None
    keep: Literal["first", "last"] = "first"

    def apply(self, c: Compiler, index: int) -> None:
        cols = c.columns()
        keys = self.columns or list(cols)
        _require(self.label(index), keys, cols)
        direction = "ASC" if self.keep == "first" else "DESC"
        partition = ", ".join(q(k) for k in keys)
        c.add(
            f"SELECT * FROM {c.current} QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {ROW} {direction}) = 1"
        )
        c.reordered = True


class Coerce(_Step):
    """Cast columns to types (``int``, ``double``, ``string``, ``date`` or any DuckDB type);
    values that do not convert become NULL (``errors="null"``) or stop the step."""

    op: Literal["coerce"] = "coerce"
    columns: Annotated[dict[str, str], Field(min_length=1)]
    errors: Literal["null", "fail"] = "null"

    def apply(self, c: Compiler, index: int) -> None:
        _require(self.label(index), list(self.columns), c.columns())
        cast = "TRY_CAST" if self.errors == "null" else "CAST"
        c.replace(
            {
                name: f"{cast}({q(name)} AS {duckdb_type(t, self.label(index))})"
                for name, t in self.columns.items()
            }
        )


def duckdb_type(name: str, where: str = "coerce") -> str:
    """The canonical DuckDB spelling of a type name (so user text never reaches the SQL)."""
    wanted = TYPE_ALIASES.get(name.strip().lower(), name.strip())
    try:
        return str(duckdb.type(wanted))
    except duckdb.Error:
        known = ", ".join(sorted({*TYPE_ALIASES, "double", "varchar", "date", "decimal(p,s)"}))
        raise InvalidInput(
            f"{where}: {name!r} is not a type. Use one of {known}, or a DuckDB type name."
        ) from None


class Impute(_Step):
    """Fill missing values with the column's mean, median or most frequent value, or a
    constant. Mean and median turn integer columns into doubles (as pandas does)."""

    op: Literal["impute"] = "impute"
    columns: Columns
    strategy: Literal["mean", "median", "mode", "constant"] = "mean"
    value: Any = None

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        if self.strategy == "constant" and self.value is None:
            raise InvalidInput(f"{label}: strategy 'constant' needs a value, e.g. value: 0.")
        cols = c.columns()
        _require(label, self.columns, cols)
        exprs: dict[str, str] = {}
        for name in self.columns:
            column, target, value = self._fill(c, index, name, cols[name])
            if value is None:
                raise InvalidInput(
                    f"{label}: column {name!r} has no values to take a {self.strategy} from; "
                    "use strategy 'constant' with a value."
                )
            exprs[name] = f"COALESCE({column}, {_literal(value, target)})"
        c.replace(exprs)

    def _fill(self, c: Compiler, index: int, name: str, t: DuckDBPyType) -> tuple[str, str, Any]:
        """The column expression, the type to fill in and the fill value."""
        if self.strategy == "constant":
            return q(name), str(t), self.value
        if self.strategy == "mode":
            return q(name), str(t), c.stat(index, name, partial(self._mode, c, name))
        _require_numeric(self.label(index), name, t)
        agg = (
            f"avg({q(name)})::DOUBLE"
            if self.strategy == "mean"
            else f"quantile_cont({q(name)}::DOUBLE, 0.5)"
        )
        value = c.stat(index, name, partial(_first_float, c, agg))
        if _kind(t) == "float":
            return q(name), str(t), value
        return f"CAST({q(name)} AS DOUBLE)", "DOUBLE", value

    @staticmethod
    def _mode(c: Compiler, name: str) -> str | None:
        # Most frequent non-null value; ties go to the smallest, so the choice is stable.
        # Kept as text: cast back to the column's type it is exactly the value again.
        col = q(name)
        rows = c.con.sql(
            c.query(
                f"SELECT CAST({col} AS VARCHAR) FROM {c.current} WHERE {col} IS NOT NULL "
                f"GROUP BY {col} ORDER BY count(*) DESC, {col} ASC LIMIT 1"
            )
        ).fetchall()
        return str(rows[0][0]) if rows else None


class Clip(_Step):
    """Limit numbers to bounds: quantiles of the column (``lower``/``upper``), Tukey's fences
    (``iqr``: Q1 - k*IQR, Q3 + k*IQR) or fixed ``min``/``max``. NULLs stay NULL; integer
    columns clipped at fractional bounds become doubles (as pandas does)."""

    op: Literal["clip"] = "clip"
    columns: Columns
    method: Literal["quantile", "iqr", "bounds"] = "quantile"
    lower: float = Field(default=0.01, ge=0, le=1)
    upper: float = Field(default=0.99, ge=0, le=1)
    k: float = Field(default=1.5, gt=0)
    min: int | float | None = None
    max: int | float | None = None

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        if self.method == "quantile" and self.lower >= self.upper:
            raise InvalidInput(f"{label}: lower ({self.lower}) must be below upper ({self.upper}).")
        if self.method == "bounds":
            if self.min is None and self.max is None:
                raise InvalidInput(f"{label}: method 'bounds' needs min, max or both.")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise InvalidInput(f"{label}: min ({self.min}) is above max ({self.max}).")
        cols = c.columns()
        _require(label, self.columns, cols)
        exprs: dict[str, str] = {}
        for name in self.columns:
            t = cols[name]
            _require_numeric(label, name, t)
            if self.method == "bounds":
                lo, hi = self.min, self.max
            else:
                bounds = c.stat(index, name, partial(self._bounds, c, name))
                lo, hi = bounds["lower"], bounds["upper"]
            exprs[name] = _clip_expr(name, t, lo, hi)
        c.replace(exprs)

    def _bounds(self, c: Compiler, name: str) -> dict[str, float | None]:
        col = f"{q(name)}::DOUBLE"
        if self.method == "quantile":
            lo, hi = c.fetch(
                f"quantile_cont({col}, {float(self.lower)!r}), "
                f"quantile_cont({col}, {float(self.upper)!r})"
            )
            return {"lower": _float(lo), "upper": _float(hi)}
        q1, q3 = c.fetch(f"quantile_cont({col}, 0.25), quantile_cont({col}, 0.75)")
        if q1 is None or q3 is None:
            return {"lower": None, "upper": None}
        spread = float(q3) - float(q1)
        return {"lower": float(q1) - self.k * spread, "upper": float(q3) + self.k * spread}


def _clip_expr(name: str, t: DuckDBPyType, lo: Any, hi: Any) -> str:
    exact = _kind(t) == "exact"
    whole = all(v is None or isinstance(v, int) for v in (lo, hi))
    target = str(t) if (not exact or whole) else "DOUBLE"
    col = q(name)
    cases = []
    if lo is not None:
        cases.append(f"WHEN {col} < {_literal(lo, target)} THEN {_literal(lo, target)}")
    if hi is not None:
        cases.append(f"WHEN {col} > {_literal(hi, target)} THEN {_literal(hi, target)}")
    if not cases:  # no values to take quantiles from: nothing to clip
        return col
    # CASE, not GREATEST/LEAST: those skip NULLs and would turn a missing value into a bound.
    return f"CASE {' '.join(cases)} ELSE CAST({col} AS {target}) END"


class NormalizeText(_Step):
    """Tidy text: drop accents, collapse runs of whitespace, trim, lower-case."""

    op: Literal["normalize_text"] = "normalize_text"
    columns: Columns
    lower: bool = True
    strip: bool = True
    collapse_whitespace: bool = True
    remove_accents: bool = False

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        cols = c.columns()
        _require(label, self.columns, cols)
        exprs: dict[str, str] = {}
        for name in self.columns:
            if _kind(cols[name]) != "string":
                raise InvalidInput(f"{label}: column {name!r} is {cols[name]}, not text.")
            e = q(name)
            if self.remove_accents:
                e = f"strip_accents({e})"
            if self.collapse_whitespace:
                e = rf"regexp_replace({e}, '\s+', ' ', 'g')"
            if self.strip:
                e = rf"regexp_replace({e}, '^\s+|\s+$', '', 'g')"
            if self.lower:
                e = f"lower({e})"
            exprs[name] = e
        c.replace(exprs)


class ParseDates(_Step):
    """Turn text into timestamps (or dates): ISO 8601 by default, or strptime ``format``(s)
    such as ``"%d/%m/%Y"``. Text that does not parse becomes NULL unless ``errors="fail"``."""

    op: Literal["parse_dates"] = "parse_dates"
    columns: Columns
    format: str | Annotated[list[str], Field(min_length=1)] | None = None
    to: Literal["timestamp", "date"] = "timestamp"
    errors: Literal["null", "fail"] = "null"

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        cols = c.columns()
        _require(label, self.columns, cols)
        target = "DATE" if self.to == "date" else "TIMESTAMP"
        lenient = self.errors == "null"
        cast = "TRY_CAST" if lenient else "CAST"
        exprs: dict[str, str] = {}
        for name in self.columns:
            kind = _kind(cols[name])
            col = q(name)
            if kind == "string" and self.format is not None:
                formats = [self.format] if isinstance(self.format, str) else self.format
                fmt = (
                    sql_string(formats[0])
                    if len(formats) == 1
                    else "[" + ", ".join(sql_string(f) for f in formats) + "]"
                )
                parsed = f"{'try_strptime' if lenient else 'strptime'}({col}, {fmt})"
                exprs[name] = f"CAST({parsed} AS DATE)" if self.to == "date" else parsed
            elif kind in ("string", "temporal"):
                exprs[name] = f"{cast}({col} AS {target})"
            else:
                raise InvalidInput(
                    f"{label}: column {name!r} is {cols[name]}; only text (or dates) can be "
                    "parsed as dates."
                )
        c.replace(exprs)


class DropNulls(_Step):
    """Drop rows with a missing value in any of ``columns`` (default: any column)."""

    op: Literal["drop_nulls"] = "drop_nulls"
    columns: list[str] | None = None

    def apply(self, c: Compiler, index: int) -> None:
        cols = c.columns()
        keys = self.columns or list(cols)
        _require(self.label(index), keys, cols)
        where = " AND ".join(f"{q(k)} IS NOT NULL" for k in keys)
        c.add(f"SELECT * FROM {c.current} WHERE {where}")


class Rename(_Step):
    """Rename columns: ``mapping`` is ``{old: new}``."""

    op: Literal["rename"] = "rename"
    mapping: Annotated[dict[str, str], Field(min_length=1)]

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        cols = c.columns()
        _require(label, list(self.mapping), cols)
        after = [self.mapping.get(name, name) for name in cols]
        clashes = sorted({n for n in after if after.count(n) > 1 or not n or n == ROW})
        if clashes:
            raise InvalidInput(
                f"{label}: renaming would give duplicate or empty column names: "
                f"{', '.join(map(repr, clashes))}."
            )
        items = ", ".join(f"{q(old)} AS {q(new)}" for old, new in self.mapping.items())
        c.add(f"SELECT * RENAME ({items}) FROM {c.current}")


class DropColumns(_Step):
    """Remove columns."""

    op: Literal["drop_columns"] = "drop_columns"
    columns: Columns

    def apply(self, c: Compiler, index: int) -> None:
        label = self.label(index)
        cols = c.columns()
        _require(label, self.columns, cols)
        if set(cols) <= set(self.columns):
            raise InvalidInput(f"{label}: this would drop every column; keep at least one.")
        c.add(f"SELECT * EXCLUDE ({', '.join(q(n) for n in self.columns)}) FROM {c.current}")


class Filter(_Step):
    """Keep rows where ``where`` (a SQL boolean expression over the columns) is true."""

    op: Literal["filter"] = "filter"
    where: Annotated[str, Field(min_length=1)]

    def apply(self, c: Compiler, index: int) -> None:
        c.add(
            f"SELECT * FROM {c.current} WHERE ({filter_expression(self.where, self.label(index))})"
        )


def filter_expression(where: str, label: str = "filter") -> str:
    """``where`` re-printed by DuckDB's parser once it is known to be one plain expression.

    Parsed as an expression (not spliced into a query), so ``x > 1) OR (1=1`` or a second
    statement cannot get through; subqueries are refused because a filter may only look at
    the row's own columns (and a subquery could read other tables).
    """
    try:
        canonical = str(duckdb.SQLExpression(where))
    except duckdb.Error as exc:
        raise InvalidInput(
            f"{label}: {where!r} is not a SQL expression ({str(exc).strip().splitlines()[0]}). "
            "Write a condition on the columns, e.g. \"age >= 18 AND country = 'FR'\"."
        ) from None
    tree = parse_tree(f"SELECT * FROM t WHERE {canonical}")
    if any(node.get("class") == "SUBQUERY" for node in walk_tree(tree)):
        raise InvalidInput(
            f"{label}: subqueries are not allowed in a filter; it may only use the row's "
            "columns. Use a SQL transform to combine datasets."
        )
    return canonical


CleanStep = Annotated[
    Deduplicate
    | Coerce
    | Impute
    | Clip
    | NormalizeText
    | ParseDates
    | DropNulls
    | Rename
    | DropColumns
    | Filter,
    Field(discriminator="op"),
]
_STEPS: TypeAdapter[list[CleanStep]] = TypeAdapter(list[CleanStep])
OPS = (
    "deduplicate, coerce, impute, clip, normalize_text, parse_dates, drop_nulls, rename, "
    "drop_columns, filter"
)


def parse_steps(steps: Any) -> list[CleanStep]:
    """Steps from models or their JSON form (a list, or ``{"steps": [...]}``)."""
    if isinstance(steps, Mapping) and "steps" in steps:
        steps = steps["steps"]
    if isinstance(steps, BaseModel | Mapping):
        steps = [steps]
    if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
        raise InvalidInput(
            f'Cleaning needs a list of steps, e.g. [{{"op": "deduplicate"}}]. Steps: {OPS}.'
        )
    raw = [s.model_dump() if isinstance(s, BaseModel) else s for s in steps]
    try:
        return _STEPS.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors()[:5])
        raise InvalidInput(f"The cleaning steps are not valid: {problems}. Steps: {OPS}.") from None


def _problem(error: Any) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    where = f"step {int(loc[0]) + 1}" if loc and loc[0].isdigit() else "steps"
    field = ".".join(loc[2:]) if len(loc) > 2 else ""
    return f"{where}{(' ' + field) if field else ''}: {error.get('msg', 'invalid')}"


def compile_steps(
    con: duckdb.DuckDBPyConnection,
    view: str,
    steps: Sequence[CleanStep],
    computed: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The query that applies ``steps`` to ``view``, and the statistics it bakes in.

    ``computed=None`` computes them from the data (a new version); a recipe's ``computed``
    replays them (a rebuild).
    """
    c = Compiler(con, view, computed)
    for index, step in enumerate(steps):
        try:
            step.apply(c, index)
        except duckdb.Error as exc:
            raise InvalidInput(
                f"{step.label(index)} failed: {str(exc).strip().splitlines()[0]}"
            ) from None
    return c.final_sql(), {k: v for k, v in c.computed.items() if v}


class CleanSource(Source):
    """Rows of one version after cleaning steps; stored with the steps and the query."""

    kind: Literal["clean_transform"] = "clean_transform"
    input: str  # the pinned version, e.g. churn@3
    steps: list[dict[str, Any]]
    sql: str  # the compiled query (for people reading the version; rebuilds recompile)
    _paths: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def over(
        cls, input_ref: str, steps: list[dict[str, Any]], sql: str, paths: Sequence[str]
    ) -> CleanSource:
        src = cls(input=input_ref, steps=steps, sql=sql)
        src._paths = list(paths)
        return src

    def scan(self, ctx: ScanContext) -> Scan:
        if not self._paths:
            raise InvalidInput(
                "This cleaning was not given its input version; run it through "
                "TransformService.clean (or `modelworks data clean`)."
            )
        box = sandbox(ctx.settings, {self.input: self._paths})
        try:
            relation = stream_from_sandbox(ctx, box, self.sql)
        except duckdb.Error as exc:
            box.close()
            raise InvalidInput(f"Cleaning {self.input} failed: {str(exc).strip()}") from None
        except BaseException:
            box.close()
            raise
        return Scan(relation=relation, close=box.close)

    def label(self) -> str:
        return f"cleaning of {self.input} ({len(self.steps)} steps)"
