"""Expectation suites: what a dataset's versions must satisfy, written by people as YAML.

A suite is a list of expectations, each a small Pydantic model told apart by its ``type``
field, plus what an ingest does when one with ``severity: error`` fails (``on_failure``).
``load_suite`` and ``dump_suite`` are the YAML edge (errors name the line and the field),
``suite_to_json``/``suite_from_json`` the REST/database edge, and ``infer_suite`` writes a
first suite from a profile for people to edit. Evaluation lives in ``validation.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

import duckdb
import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from modelworks.core.errors import InvalidInput
from modelworks.data.schemas import ColumnProfile, Profile

Severity = Literal["error", "warning"]
OnFailure = Literal["fail", "quarantine", "warn"]
Scalar = StrictBool | StrictInt | FiniteFloat | StrictStr
Bound = StrictInt | FiniteFloat | StrictStr

# Type families a column_type expectation may name instead of one Arrow type.
TYPE_FAMILIES: dict[str, str] = {
    "integer": "any signed or unsigned integer (int8 ... uint64)",
    "float": "any floating point type (halffloat, float, double)",
    "numeric": "integers, floating point and decimals",
    "string": "string, large_string, string_view and dictionary-encoded strings",
    "boolean": "bool",
    "temporal": "timestamps, dates and times of day",
}

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_WHOLE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")

YAML_HEADER = """\
# Modelworks expectation suite: what every version of this dataset must satisfy.
# Each expectation has a `type`: column_present, column_type, null_rate, range,
# allowed_values, regex, unique, row_count or freshness; and optionally a `severity`
# (error, the default, or warning: reported but never failing) and a `description`.
# on_failure says what an ingest does when an error fails: fail, quarantine or warn.
"""


class _Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity = "error"
    description: str | None = None


class ColumnPresent(_Expectation):
    """The column exists (its values may all be null)."""

    type: Literal["column_present"] = "column_present"
    column: str


class ColumnType(_Expectation):
    """The column exists with this Arrow type (``int64``, ``timestamp[us]``) or type family."""

    type: Literal["column_type"] = "column_type"
    column: str
    dtype: str

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        value = value.strip()
        if value in TYPE_FAMILIES or canonical_type(value) is not None:
            return value
        families = ", ".join(TYPE_FAMILIES)
        raise ValueError(
            f"unknown type {value!r}: use an Arrow type name such as int64, double, string, "
            f"bool, timestamp[us] or date32[day], or one of the families {families}"
        )


class NullRate(_Expectation):
    """At most ``max`` (a fraction, 0 to 1) of the rows are null in the column."""

    type: Literal["null_rate"] = "null_rate"
    column: str
    max: float = Field(ge=0.0, le=1.0)


class Range(_Expectation):
    """Every non-null value lies in [min, max]: numbers, or ISO dates/times for temporal
    columns (times without an offset are read as UTC)."""

    type: Literal["range"] = "range"
    column: str
    min: Bound | None = None
    max: Bound | None = None

    @field_validator("min", "max", mode="before")
    @classmethod
    def _iso_bounds(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-01-31 as a date; keep the suite's bounds as ISO text.
        if isinstance(value, bool):
            raise ValueError("a range bound is a number or an ISO date/time, not true/false")
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        if isinstance(value, str) and parse_instant(value) is None:
            raise ValueError(
                f"{value!r} is neither a number nor an ISO date/time "
                "(like 2024-01-31 or 2024-01-31T12:00:00)"
            )
        return value

    @model_validator(mode="after")
    def _some_bound(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None:
            if isinstance(self.min, str) != isinstance(self.max, str):
                raise ValueError("min and max must both be numbers or both be dates/times")
            low, high = _comparable(self.min), _comparable(self.max)
            if low > high:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class AllowedValues(_Expectation):
    """Every non-null value is one of ``values`` (nulls are null_rate's business)."""

    type: Literal["allowed_values"] = "allowed_values"
    column: str
    values: list[Scalar] = Field(min_length=1)

    @field_validator("values", mode="before")
    @classmethod
    def _iso_values(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v for v in value]
        return value


class Regex(_Expectation):
    """Every non-null value matches ``pattern`` somewhere (as ``re.search`` does); anchor it
    with ``^...$`` to match whole values. DuckDB evaluates it with RE2, so look-arounds and
    backreferences are not available."""

    type: Literal["regex"] = "regex"
    column: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"pattern {value!r} is not a valid regular expression: {exc}"
            ) from None
        reason = _re2_problem(value)
        if reason is not None:
            raise ValueError(
                f"pattern {value!r} is not supported by DuckDB's RE2 engine "
                f"(no look-arounds or backreferences): {reason}"
            )
        return value


class Unique(_Expectation):
    """No two rows share a value of ``column`` (or of the ``columns`` together).
    Rows where a key is null are not compared, as in a SQL UNIQUE constraint."""

    type: Literal["unique"] = "unique"
    column: str | None = None
    columns: list[str] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> Unique:
        if (self.column is None) == (self.columns is None):
            raise ValueError("give either column (one name) or columns (a list of names)")
        if self.columns is not None and not self.columns:
            raise ValueError("columns must name at least one column")
        return self

    @property
    def keys(self) -> list[str]:
        return [self.column] if self.column is not None else list(self.columns or [])


class RowCount(_Expectation):
    """The number of rows lies in [min, max]."""

    type: Literal["row_count"] = "row_count"
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> RowCount:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Freshness(_Expectation):
    """The newest value of a timestamp or date column is at most ``max_age`` old
    (``90s``, ``30m``, ``1h``, ``2d``, ``1w``, or combined like ``1h30m``)."""

    type: Literal["freshness"] = "freshness"
    column: str
    max_age: str

    @field_validator("max_age")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @property
    def max_age_delta(self) -> dt.timedelta:
        return parse_duration(self.max_age)


Expectation = Annotated[
    ColumnPresent
    | ColumnType
    | NullRate
    | Range
    | AllowedValues
    | Regex
    | Unique
    | RowCount
    | Freshness,
    Field(discriminator="type"),
]
EXPECTATION_TYPES = (
    "column_present",
    "column_type",
    "null_rate",
    "range",
    "allowed_values",
    "regex",
    "unique",
    "row_count",
    "freshness",
)


class ExpectationSuite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expectations: list[Expectation] = Field(default_factory=list)
    on_failure: OnFailure = "fail"


# ---- helpers shared with validation ----------------------------------------------------------


def parse_duration(text: str) -> dt.timedelta:
    """``"1h30m"`` -> 1:30:00. Raises ValueError saying the accepted spelling."""
    if not isinstance(text, str) or not _DURATION_WHOLE.fullmatch(text.lower()):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (s, m, h, d or w), "
            "like 90s, 30m, 1h, 2d or 1h30m"
        )
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text.lower()))
    return dt.timedelta(seconds=seconds)


def parse_instant(text: str) -> dt.datetime | None:
    """An ISO date or date-time as an aware UTC datetime (no offset means UTC), else None."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _re2_problem(pattern: str) -> str | None:
    """Why DuckDB (RE2) rejects ``pattern``, or None when it compiles there too."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
    except duckdb.Error as exc:
        # Only the text leaves this block: an exception kept alive would keep its frame,
        # and with it the connection, alive too.
        return str(exc).splitlines()[0]
    finally:
        con.close()
    return None


def canonical_type(name: str) -> str | None:
    """The Arrow type name ``name`` stands for (``float64`` -> ``double``), or None if unknown.

    Parametrised names pyarrow has no alias for (``decimal128(10, 2)``,
    ``list<element: int64>``, ``timestamp[us, tz=UTC]``) are taken as written.
    """
    try:
        return str(pa.type_for_alias(name))
    except (ValueError, KeyError):
        pass
    if any(ch in name for ch in "([<"):
        return name
    return None


def type_matches(arrow_type: pa.DataType, dtype: str) -> bool:
    """Whether a column of ``arrow_type`` satisfies ``column_type``'s ``dtype``."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if dtype == "integer":
        return bool(pa.types.is_integer(t))
    if dtype == "float":
        return bool(pa.types.is_floating(t))
    if dtype == "numeric":
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))
    if dtype == "string":
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or _is_view(t))
    if dtype == "boolean":
        return bool(pa.types.is_boolean(t))
    if dtype == "temporal":
        return bool(pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t))
    wanted = canonical_type(dtype) or dtype
    return _squash(str(arrow_type)) == _squash(wanted)


def _is_view(t: pa.DataType) -> bool:
    return bool(pa.types.is_string_view(t))


def _squash(name: str) -> str:
    return re.sub(r"\s+", "", name)


def _comparable(bound: int | float | str) -> Any:
    return parse_instant(bound) if isinstance(bound, str) else bound


# ---- YAML and JSON ---------------------------------------------------------------------------


def load_suite(yaml_text: str) -> ExpectationSuite:
    """Parse a suite from YAML. Errors name the line and the field, and say what to fix.

    An empty document is an empty suite; a bare list is read as the ``expectations`` list.
    """
    # Composed once and constructed from the node tree, which also gives each field its line.
    try:
        loader = yaml.SafeLoader(yaml_text)
        try:
            tree = loader.get_single_node()
            data = loader.construct_document(tree) if tree is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise InvalidInput(_yaml_problem(exc)) from None
    if tree is None or data is None:
        return ExpectationSuite()
    if isinstance(data, list):
        data = {"expectations": data}
        key = yaml.ScalarNode("tag:yaml.org,2002:str", "expectations", tree.start_mark)
        tree = yaml.MappingNode("tag:yaml.org,2002:map", [(key, tree)], tree.start_mark)
    if not isinstance(data, dict):
        raise InvalidInput(
            "An expectation suite is a YAML mapping with an 'expectations' list "
            f"(and optionally on_failure), not a {type(data).__name__}. Start it with "
            "'expectations:' and list one '- type: ...' entry per expectation."
        )
    try:
        return ExpectationSuite.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_problem(exc, tree)) from None


def dump_suite(suite: ExpectationSuite) -> str:
    """The suite as readable YAML (with a header comment) that ``load_suite`` reads back."""
    body = {
        "on_failure": suite.on_failure,
        "expectations": [_readable(e) for e in suite.expectations],
    }
    text = yaml.dump(body, Dumper=_SuiteDumper, sort_keys=False, allow_unicode=True, width=100)
    return YAML_HEADER + text


class _SuiteDumper(yaml.SafeDumper):
    """Block style for expectations (one setting per line, easy to edit), flow style for
    lists of plain values (``values: [a, b, c]``, ``columns: [a, b]``)."""


# Characters PyYAML would write raw (with allow_unicode) but read back as line breaks or
# reject: strings holding them are written double-quoted, where the emitter escapes them.
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = '"' if _UNSAFE_TEXT.search(data) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_SuiteDumper.add_representer(list, _represent_list)
_SuiteDumper.add_representer(str, _represent_str)


def suite_to_json(suite: ExpectationSuite) -> dict[str, Any]:
    return suite.model_dump(mode="json", exclude_none=True)


def suite_from_json(data: dict[str, Any]) -> ExpectationSuite:
    try:
        return ExpectationSuite.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_problem(exc, None)) from None


def expectation_json(expectation: Expectation) -> dict[str, Any]:
    """One expectation as JSON, keys in reading order (type, columns, settings, severity)."""
    return _readable(expectation, keep_defaults=True)


def _readable(expectation: Expectation, *, keep_defaults: bool = False) -> dict[str, Any]:
    raw = expectation.model_dump(mode="json", exclude_none=True)
    if not keep_defaults and raw.get("severity") == "error":
        del raw["severity"]
    first = ["type", "column", "columns"]
    last = ["severity", "description"]
    order = first + [k for k in raw if k not in first + last] + last
    return {k: raw[k] for k in order if k in raw}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"The expectation suite is not valid YAML: it contains the control character "
            f"#x{exc.character:04x} at position {exc.position}, which YAML does not allow. "
            "Remove it, or write it as an escape inside double quotes."
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    hint = "Check the indentation and quote values that contain ':' or '#'."
    if "another document" in problem:
        hint = "A suite is one YAML document: remove the '---' separator and what follows it."
    return f"The expectation suite is not valid YAML{where}: {problem}. {hint}"


def _validation_problem(exc: ValidationError, tree: yaml.Node | None) -> str:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        node_loc = tuple(p for p in loc if not (isinstance(p, str) and p in EXPECTATION_TYPES))
        if error["type"] == "union_tag_invalid":
            node_loc += ("type",)  # point at the misspelt type, not at the whole entry
        field = _field_name(node_loc)
        line = _line_of(tree, node_loc) if tree is not None else None
        where = f"line {line}, {field}" if line else field
        problems.append(f"{where}: {_explain(error)}")
    head = "The expectation suite is not valid"
    if len(problems) > 1:
        head += f" ({len(problems)} problems)"
    return f"{head}: " + "; ".join(problems)


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "the suite"


def _explain(error: Any) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind == "missing":
        return "is required; add it"
    if kind == "extra_forbidden":
        return "is not a setting of this expectation; remove it or check its spelling"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag", "")
        return f"unknown type {tag!r}; use one of " + ", ".join(EXPECTATION_TYPES)
    if kind == "union_tag_not_found":
        return "has no 'type'; add type: one of " + ", ".join(EXPECTATION_TYPES)
    if kind == "literal_error" and error["loc"] and error["loc"][-1] == "on_failure":
        return "must be fail, quarantine or warn"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return message


def _line_of(tree: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    node = tree
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is not None:
                key = next(k for k, v in node.value if v is child)
                line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
            if child is not None:
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


# ---- inference -------------------------------------------------------------------------------

# Low-cardinality string columns get allowed_values (the top values must cover every row).
ALLOWED_VALUES_MAX_DISTINCT = 20
# Distinct counts in a profile are HyperLogLog estimates (about 2% off for millions of values),
# so a column is proposed as unique when its estimate is within 1% of the row count and it has
# no nulls; validation then checks uniqueness exactly. The estimate can miss a unique column
# (no expectation is proposed) or, rarely, propose one with a few duplicates: the first
# validation then fails it and lists the duplicates, and people edit the suite.
UNIQUE_MIN_RATIO = 0.99


def infer_suite(profile: Profile) -> ExpectationSuite:
    """A first suite from a profile: types, null rates, numeric ranges, categories, keys."""
    expectations: list[Expectation] = [RowCount(min=1)]
    for column in profile.columns:
        expectations.append(ColumnType(column=column.name, dtype=column.type))
        expectations.append(NullRate(column=column.name, max=_null_slack(column.null_rate)))
        if column.kind == "numeric" and _finite(column.min) and _finite(column.max):
            expectations.append(Range(column=column.name, min=column.min, max=column.max))
        if _is_categorical(column):
            values = [t.value for t in column.top_values]
            expectations.append(AllowedValues(column=column.name, values=values))
        if _looks_unique(column, profile.row_count):
            expectations.append(Unique(column=column.name))
    return ExpectationSuite(expectations=expectations)


def _null_slack(observed: float) -> float:
    if observed <= 0:
        return 0.0
    # Rounded up to 4 places, so the bound is readable and still holds for the data seen
    # (the inner round keeps float noise like 0.16000000000000003 from rounding up to 0.1601).
    return min(1.0, math.ceil(round((observed * 1.5 + 0.01) * 10_000, 6)) / 10_000)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_categorical(column: ColumnProfile) -> bool:
    if column.kind != "string" or not column.count or column.distinct is None:
        return False
    if column.distinct > ALLOWED_VALUES_MAX_DISTINCT:
        return False
    values = [t.value for t in column.top_values]
    if not all(isinstance(v, str) and not v.endswith("…") for v in values):
        return False  # a shortened long text is not a category
    return sum(t.count for t in column.top_values) == column.count


def _looks_unique(column: ColumnProfile, row_count: int) -> bool:
    arrow_type = _arrow_type(column.type)
    if arrow_type is None or not (pa.types.is_integer(arrow_type) or column.kind == "string"):
        return False
    if not column.count or column.count != row_count or column.distinct is None:
        return False
    return column.distinct >= UNIQUE_MIN_RATIO * row_count


def _arrow_type(name: str) -> pa.DataType | None:
    try:
        return pa.type_for_alias(name)
    except (ValueError, KeyError):
        return None
