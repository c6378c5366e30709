"""Profiles of dataset versions: per-column statistics computed by DuckDB in two scans.

Speed is the point (a profile is computed on every ingest), so the work is laid out around
scans of the Parquet parts, not around columns:

1. One ungrouped ``SELECT`` computes every scalar statistic of every column: counts, distinct
   counts, min/max, mean/std, approximate quantiles (one t-digest per column for all seven
   quantiles) and ``approx_top_k`` candidates for string columns.
2. One more ``SELECT`` computes what needs the first scan's answers: equal-width histograms
   (``histogram(x, bounds)`` with bounds from the observed min/max) and exact value counts:
   of every value for low-cardinality strings and numbers, and of the candidates for strings
   with many distinct values (``histogram(CASE WHEN x IN (...) THEN x END)``, so a column of
   ids never builds a hash table of every value).

Top values are exact counts. They are the true top ten whenever a column has few distinct
values; for many distinct values they are the heavy hitters ``approx_top_k`` finds. Values seen
once are never listed for a column with more than ten distinct values (any of them would do),
and a column of nearly unique values (ids, hashes, free text) is not read a second time at
all. Boolean top values come straight from scan 1 (``count_if``). Small data (up to
``EXACT_DISTINCT_ROWS`` rows) gets exact distinct counts; larger data HyperLogLog estimates and
top-value candidates from a random sample, so on large data which near-tied values make the
list can vary between runs, but every count shown is exact.

A float column holding NaN or infinity (its min or max says so) costs one more, narrow scan
for its finite range: its histogram spans and counts only the finite values.

Temporal columns are profiled as microseconds since the epoch (``epoch_us``) and reported as
ISO strings, which also keeps time-zone-aware timestamps away from Python's time-zone database.
Histogram bins are closed on the right, ``[min, e1], (e1, e2], ..., (e19, max]``, which is how
DuckDB's ``histogram(x, bounds)`` counts; ``std`` is the sample standard deviation (n - 1).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from modelworks.data import storage
from modelworks.data.schemas import ColumnKind, ColumnProfile, Histogram, Profile, TopValue

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
TOP_K = 10
# Numbers with at most this many distinct values also get top values (labels, ratings, flags).
LOW_CARDINALITY = 20
# Up to this many rows distinct counts are exact (cheap there, and what people expect of small
# data) and top-value candidates come from every row. Above it distinct counts are HyperLogLog
# estimates (typically within a few percent) and candidates come from a random sample of about
# this many rows: enough to find any value that makes up more than a fraction of a percent.
EXACT_DISTINCT_ROWS = 200_000
# Strings with at most this many distinct values get every value counted exactly in scan 2.
STRING_VALUE_COUNTS = 1_000
# A string column with more distinct values is only re-read in scan 2 (to count its candidates)
# when estimates say at least this share of its values are repeats. A column of nearly unique
# values (ids, hashes, free text) is then not read twice: those are the most expensive columns
# to read, and no value can stand out in them. DuckDB's HyperLogLog was seen to undercount
# 3M unique 64-character strings by 7%, hence the margin; the price is that a value making up
# less than about a tenth of an otherwise unique column goes unreported.
REPEATS_MIN_SHARE = 0.10
# Longer strings are cut in min/max and top values so a column of documents keeps profiles small.
MAX_TEXT = 200

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INPUT = "mw_profile_input"


def profile_paths(con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> Profile:
    """Profile the Parquet parts of one version (read as one table, columns unioned by name)."""
    started = time.perf_counter()
    schema = storage.arrow_schema(paths)
    relation = storage.relation_of(con, paths)
    rows = sum(storage.part_rows(Path(p)) for p in paths)
    plan = _Plan(
        exact_distinct=rows <= EXACT_DISTINCT_ROWS,
        sample=None if rows <= EXACT_DISTINCT_ROWS else EXACT_DISTINCT_ROWS / rows,
    )
    columns = [_Column(f.name, f.type, kind_of(f.type), plan) for f in schema]

    first = _Query()
    row_count_slot = first.add("count(*)")
    for column in columns:
        column.plan_scalars(first)
    values = _run(relation, first)
    row_count = int(values[row_count_slot] or 0)
    for column in columns:
        column.read_scalars(values, row_count)

    # Only where a float column holds NaN or infinity (its min or max says so): histograms
    # need the finite range, which costs a scan, so it is not paid for in every profile.
    finite = _Query()
    for column in columns:
        column.plan_finite_range(finite)
    if finite.expressions:
        values = _run(relation, finite)
        for column in columns:
            column.read_finite_range(values)

    second = _Query()
    for column in columns:
        column.plan_distributions(second)
    if second.expressions:
        values = _run(relation, second)
        for column in columns:
            column.read_distributions(values)

    return Profile(
        row_count=row_count,
        columns=[c.result(row_count) for c in columns],
        engine=f"duckdb {duckdb.__version__}",
        seconds=time.perf_counter() - started,
    )


def json_safe(value: Any) -> Any:
    """``value`` (as DuckDB or pyarrow hands it to Python) as something ``json.dumps`` accepts.

    Dates and times become ISO 8601 strings, durations ISO 8601 durations (``P1DT2H``),
    decimals numbers (integral ones ints, so no digits are lost), bytes base64, and NaN or
    infinity ``None``: JSON has no spelling for them, and a preview shows them as missing.
    Lists, tuples and dicts are converted element by element (dict keys become strings).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return json_safe(item())
    return str(value)


def _iso_duration(value: dt.timedelta) -> str:
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    out = f"{sign}P"
    if value.days:
        out += f"{value.days}D"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or value.microseconds or not (value.days or clock):
        frac = f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".")
        clock += f"{frac}S"
    return out + ("T" + clock if clock else "")


def kind_of(arrow_type: pa.DataType) -> ColumnKind:
    if pa.types.is_dictionary(arrow_type):
        return kind_of(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    ):
        return "numeric"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "string"
    if (
        pa.types.is_timestamp(arrow_type)
        or pa.types.is_date(arrow_type)
        or pa.types.is_time(arrow_type)
    ):
        return "temporal"
    return "other"


class _Query:
    """The select list of one scan; each statistic remembers its slot in the result row."""

    def __init__(self) -> None:
        self.expressions: list[str] = []

    def add(self, expression: str) -> int:
        self.expressions.append(expression)
        return len(self.expressions) - 1


def _run(relation: duckdb.DuckDBPyRelation, query: _Query) -> tuple[Any, ...]:
    select = ", ".join(query.expressions)
    result = relation.query(_INPUT, f"SELECT {select} FROM {_INPUT}")
    if result is None:  # only statements that write return None; this one reads
        raise RuntimeError("DuckDB returned no result for a profile query")
    return result.fetchall()[0]


@dataclass(frozen=True)
class _Plan:
    """How thoroughly this profile counts, chosen from the row count before scanning."""

    exact_distinct: bool
    sample: float | None  # share of rows approx_top_k sees; None: every row


@dataclass
class _Column:
    """One column's plan (which statistics go in which scan) and what came back."""

    name: str
    arrow_type: pa.DataType
    kind: ColumnKind
    plan: _Plan
    slots: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    distinct: int | None = None
    top_values: list[TopValue] = field(default_factory=list)
    histogram: Histogram | None = None
    edges: list[float] = field(default_factory=list)  # histogram bounds, in SQL units

    @property
    def sql(self) -> str:
        return storage.quote_identifier(self.name)

    @property
    def value_sql(self) -> str:
        """The column as the statistics read it: temporal values as epoch microseconds."""
        if self.kind == "temporal":
            return f"epoch_us({self.sql})"
        return self.sql

    @property
    def is_float(self) -> bool:
        return bool(pa.types.is_floating(self.arrow_type))

    @property
    def nonfinite(self) -> bool:
        """Whether this float column holds NaN or infinity (DuckDB sorts NaN above +inf)."""
        if not self.is_float or not self.count:
            return False
        low, high = self.stats.get("min"), self.stats.get("max")
        return not all(v is not None and math.isfinite(v) for v in (low, high))

    # ---- scan 1 ----------------------------------------------------------------------------

    def plan_scalars(self, query: _Query) -> None:
        self.slots["count"] = query.add(f"count({self.sql})")
        if self.kind == "other":
            return
        x = self.value_sql
        exact = self.plan.exact_distinct
        distinct = "count(DISTINCT {})" if exact else "approx_count_distinct({})"
        self.slots["distinct"] = query.add(distinct.format(self.sql))
        self.slots["min"] = query.add(f"min({x})")
        self.slots["max"] = query.add(f"max({x})")
        if self.kind == "numeric":
            self.slots["mean"] = query.add(f"avg({x})::DOUBLE")
            self.slots["std"] = query.add(f"stddev_samp({x})::DOUBLE")
        if self.kind in ("numeric", "temporal"):
            levels = ", ".join(repr(q) for q in QUANTILES)
            self.slots["quantiles"] = query.add(f"approx_quantile({x}, [{levels}])")
        if self.kind == "string":
            # A sample keeps this cheap on large data; the counts come from every row (scan 2).
            sample = self.plan.sample
            sampled = x if sample is None else f"CASE WHEN random() < {sample!r} THEN {x} END"
            self.slots["candidates"] = query.add(f"approx_top_k({sampled}, {TOP_K})")
        if self.kind == "boolean":
            self.slots["trues"] = query.add(f"count_if({x})")

    def read_scalars(self, values: Sequence[Any], row_count: int) -> None:
        self.stats = {key: values[slot] for key, slot in self.slots.items()}
        self.count = int(self.stats["count"] or 0)
        if "distinct" in self.stats:
            # HyperLogLog can overshoot; there are never more distinct values than values.
            approx = int(self.stats["distinct"] or 0)
            self.distinct = min(approx, self.count) if self.count else 0
            if self.count and not self.distinct:
                self.distinct = 1
        if self.kind == "boolean" and self.count:
            trues = int(self.stats["trues"] or 0)
            counts = [
                TopValue(value=True, count=trues),
                TopValue(value=False, count=self.count - trues),
            ]
            self.top_values = sorted(
                (c for c in counts if c.count), key=lambda c: (-c.count, c.value)
            )

    def plan_finite_range(self, query: _Query) -> None:
        if self.nonfinite:
            x = f"CASE WHEN isfinite({self.sql}) THEN {self.sql} END"
            self.slots["finite_min"] = query.add(f"min({x})")
            self.slots["finite_max"] = query.add(f"max({x})")
            self.slots["finite_count"] = query.add(f"count_if(isfinite({self.sql}))")

    def read_finite_range(self, values: Sequence[Any]) -> None:
        for key in ("finite_min", "finite_max", "finite_count"):
            if key in self.slots:
                self.stats[key] = values[self.slots[key]]

    # ---- scan 2 ----------------------------------------------------------------------------

    def plan_distributions(self, query: _Query) -> None:
        if not self.count:
            return
        if self.kind in ("numeric", "temporal"):
            self._plan_histogram(query)
        if (
            self.kind == "numeric"
            and self.distinct is not None
            and self.distinct <= LOW_CARDINALITY
        ):
            self.slots["value_counts"] = query.add(f"histogram({self.sql})")
        if self.kind == "string":
            self._plan_string_counts(query)

    def _plan_string_counts(self, query: _Query) -> None:
        distinct = self.distinct or 0
        if distinct <= STRING_VALUE_COUNTS:
            self.slots["value_counts"] = query.add(f"histogram({self.sql})")
            return
        repeats = self.count - distinct
        if self.plan.exact_distinct and not repeats:
            return
        if not self.plan.exact_distinct and repeats < REPEATS_MIN_SHARE * self.count:
            return
        candidates = [c for c in self.stats.get("candidates") or [] if c is not None]
        if candidates:
            listing = ", ".join(storage.sql_string(c) for c in candidates)
            # A CASE, not an aggregate FILTER: DuckDB runs the CASE form about 4x faster.
            self.slots["value_counts"] = query.add(
                f"histogram(CASE WHEN {self.sql} IN ({listing}) THEN {self.sql} END)"
            )

    def _plan_histogram(self, query: _Query) -> None:
        low, high = self._histogram_range()
        if low is None or high is None:
            return
        counted = int(self.stats["finite_count"] or 0) if self.nonfinite else self.count
        if low == high:
            # One value: a single bin of zero width, rather than inventing a range around it.
            self.edges = [low, high]
            self.histogram = Histogram(edges=self._edge_values(self.edges), counts=[counted])
            return
        width = (high - low) / HISTOGRAM_BINS
        edges = [low + width * i for i in range(HISTOGRAM_BINS)] + [high]
        if self.kind == "temporal":
            edges = [float(round(e)) for e in edges]
        self.edges = edges
        # ``histogram(x, bounds)`` counts x <= bound in the first bound that holds, and values
        # above the last bound under +inf: passing only the inner edges makes the bins
        # [min, e1], (e1, e2], ..., (e19, max] without depending on float rounding at max.
        inner = edges[1:-1]
        if self.kind == "temporal":
            bounds = ", ".join(str(int(e)) for e in inner)
            query_bounds = f"[{bounds}]::BIGINT[]"
            x = self.value_sql
        else:
            bounds = ", ".join(repr(e) for e in inner)
            query_bounds = f"[{bounds}]::DOUBLE[]"
            x = f"{self.sql}::DOUBLE"
            if self.nonfinite:  # NaN and infinity belong to no bin
                x = f"CASE WHEN isfinite({self.sql}) THEN {x} END"
        self.slots["histogram"] = query.add(f"histogram({x}, {query_bounds})")

    def _histogram_range(self) -> tuple[float | None, float | None]:
        low, high = self.stats.get("min"), self.stats.get("max")
        if self.nonfinite:
            low, high = self.stats.get("finite_min"), self.stats.get("finite_max")
        if low is None or high is None:
            return None, None
        return float(low), float(high)

    def read_distributions(self, values: Sequence[Any]) -> None:
        if "histogram" in self.slots:
            counted: dict[Any, int] = dict(values[self.slots["histogram"]] or {})
            inner = self.edges[1:-1]
            counts: list[int] = []
            for bound in inner:
                key: Any = int(bound) if self.kind == "temporal" else bound
                counts.append(int(counted.pop(key, 0)))
            counts.append(sum(int(v) for v in counted.values()))  # the last bin: above e19
            self.histogram = Histogram(edges=self._edge_values(self.edges), counts=counts)
        if "value_counts" in self.slots:
            counted = dict(values[self.slots["value_counts"]] or {})
            ranked = sorted(counted.items(), key=lambda kv: (-int(kv[1]), _sort_key(kv[0])))
            if (self.distinct or 0) > TOP_K:
                # Values seen once tie with every other such value: any of them would be "top".
                ranked = [(v, n) for v, n in ranked if int(n) > 1]
            self.top_values = [
                TopValue(value=_shorten(json_safe(v)), count=int(n)) for v, n in ranked[:TOP_K]
            ]

    # ---- result ----------------------------------------------------------------------------

    def result(self, row_count: int) -> ColumnProfile:
        nulls = row_count - self.count
        profile = ColumnProfile(
            name=self.name,
            type=str(self.arrow_type),
            kind=self.kind,
            count=self.count,
            nulls=nulls,
            null_rate=nulls / row_count if row_count else 0.0,
            distinct=self.distinct,
            top_values=self.top_values,
            histogram=self.histogram,
        )
        if self.kind == "other" or not self.count:
            return profile
        profile.min = self._value(self.stats.get("min"))
        profile.max = self._value(self.stats.get("max"))
        if self.kind == "numeric":
            profile.mean = json_safe(self.stats.get("mean"))
            profile.std = json_safe(self.stats.get("std"))
        if self.kind in ("numeric", "temporal"):
            levels = self.stats.get("quantiles") or []
            profile.quantiles = {
                f"{q:g}": self._value(v) for q, v in zip(QUANTILES, levels, strict=False)
            }
        return profile

    def _value(self, value: Any) -> Any:
        """A statistic in the units people read: ISO strings for temporal columns."""
        if value is None:
            return None
        if self.kind == "temporal":
            return iso_from_epoch_us(int(value), self.arrow_type)
        if self.kind == "string":
            return _shorten(value)
        return json_safe(value)

    def _edge_values(self, edges: Sequence[float]) -> list[float | str]:
        if self.kind == "temporal":
            # Edges fall between dates, so they are timestamps even for a date column.
            moment = pa.timestamp("us", tz=getattr(self.arrow_type, "tz", None))
            kind_type = self.arrow_type if pa.types.is_time(self.arrow_type) else moment
            return [iso_from_epoch_us(int(e), kind_type) for e in edges]
        return list(edges)


def iso_from_epoch_us(us: int, arrow_type: pa.DataType) -> str:
    try:
        if pa.types.is_date(arrow_type):
            return (_EPOCH + dt.timedelta(microseconds=us)).date().isoformat()
        if pa.types.is_time(arrow_type):
            return (_EPOCH + dt.timedelta(microseconds=us)).time().isoformat()
        if getattr(arrow_type, "tz", None):
            return (_EPOCH_UTC + dt.timedelta(microseconds=us)).isoformat()
        return (_EPOCH + dt.timedelta(microseconds=us)).isoformat()
    except OverflowError:
        # Beyond Python's year 9999; DuckDB can hold such values, so say what it is.
        return f"{us} microseconds since 1970-01-01"


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Ties in top values break by value, so the same data always gives the same profile."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))
