"""Profiles of dataset versions: per-column statistics computed by DuckDB in one full scan.

Speed is the point (a profile is computed on every ingest), so the work is laid out around
scans of the Parquet parts, not around columns:

0. Min and max of every column but booleans, which DuckDB answers from the Parquet footers
   without reading the data. Footers leave NaN out, so float columns are read, narrowly, to
   count it, except in parts whose NaN counts the caller knows (an ingest has them from the
   writer). Knowing the extremes first is what lets one scan do the rest.
1. One ungrouped ``SELECT`` computes every other scalar statistic of every column: counts,
   distinct counts, mean/std, approximate quantiles (one t-digest per column for all seven
   quantiles), equal-width histograms (running counts of ``x <= edge``, the edges from step 0)
   and ``approx_top_k`` candidates for string columns.
2. One more ``SELECT``, over only the columns that need it, counts values exactly (one
   grouping set each): every value of low-cardinality strings and numbers, and the
   candidates of strings with many distinct values (grouped by
   ``CASE WHEN x IN (...) THEN x END``, so a column of ids never builds a hash table of
   every value).

Top values are exact counts. They are the true top ten whenever a column has few distinct
values; for many distinct values they are the heavy hitters ``approx_top_k`` finds. Values seen
once are never listed for a column with more than ten distinct values (any of them would do),
and a column of nearly unique values (ids, hashes, free text) is not read a second time at
all. Boolean top values come straight from scan 1 (``count_if``). Small data (up to
``EXACT_DISTINCT_ROWS`` rows) gets exact distinct counts and quantile digests of every row.
Larger data gets HyperLogLog distinct estimates, and its quantiles and top-value candidates
come from a sample of about ``EXACT_DISTINCT_ROWS`` rows (those whose position in their part
hashes below the sampling share: the same rows every time), which keeps the cost of both
nearly flat however large the data; near-tied values may still swap places in the top-value
list, but every count shown is exact. Counts, nulls, min/max, mean/std and histograms always
come from every row.

A float column holding NaN or infinity (its min or max says so) costs one more, narrow scan
for its finite range: its histogram spans and counts only the finite values.

Temporal columns are profiled as microseconds since the epoch (``epoch_us``) and reported as
ISO strings, which also keeps time-zone-aware timestamps away from Python's time-zone database.
Histogram bins are closed on the right, ``[min, e1], (e1, e2], ..., (e19, max]`` (each the
difference of two running counts of ``x <= edge``, which is also how DuckDB's
``histogram(x, bounds)`` counts); ``std`` is the sample standard deviation (n - 1).
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
_BOUNDS_PART_QUERIES = 64  # above this many parts, min/max come from one scan instead


def profile_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    *,
    float_counts: Mapping[str, Mapping[str, storage.FloatCounts]] | None = None,
) -> Profile:
    """Profile the Parquet parts of one version (read as one table, columns unioned by name).

    ``float_counts`` are NaN counts already known, by part path (as in ``paths``) and then
    column name, as :func:`storage.write_parts` returns them. A part's float columns found
    there without NaN get their min and max from its footer, like every other column; the
    others are read to count their NaN. The profile is the same either way, only cheaper."""
    started = time.perf_counter()
    schema = storage.arrow_schema(paths)
    rows = sum(storage.part_rows(Path(p)) for p in paths)
    plan = _Plan(
        exact_distinct=rows <= EXACT_DISTINCT_ROWS,
        sample=None if rows <= EXACT_DISTINCT_ROWS else EXACT_DISTINCT_ROWS / rows,
    )
    columns = [_Column(f.name, f.type, kind_of(f.type), plan) for f in schema]
    relation = _input(con, paths, schema, plan)

    # Minima and maxima first: the Parquet footers answer them without reading the data
    # (DuckDB reads the values only where the statistics cannot answer), and knowing them
    # lets one scan compute the histograms along with everything else.
    bounds = _bounds(con, paths, columns, float_counts or {})
    for column, (low, high) in zip(columns, bounds, strict=True):
        column.stats["min"], column.stats["max"] = low, high

    # Only where a float column holds NaN or infinity (its min or max says so): histograms
    # need the finite range, which costs a scan, so it is not paid for in every profile.
    finite = _Query()
    for column in columns:
        column.plan_finite_range(finite)
    if finite.expressions:
        values = _run(relation, finite)
        for column in columns:
            column.read_finite_range(values)

    first = _Query()
    row_count_slot = first.add("count(*)")
    for column in columns:
        column.plan_scalars(first)
    values = _run(relation, first)
    row_count = int(values[row_count_slot] or 0)
    for column in columns:
        column.read_scalars(values, row_count)

    second = _Query()
    for column in columns:
        column.plan_distributions(second)
    if second.expressions:
        counted = _count_values(relation, second)
        for column in columns:
            column.read_distributions(counted)

    return Profile(
        row_count=row_count,
        columns=[c.result(row_count) for c in columns],
        engine=f"duckdb {duckdb.__version__}",
        seconds=time.perf_counter() - started,
    )


def _input(
    con: duckdb.DuckDBPyConnection, paths: Sequence[str], schema: pa.Schema, plan: _Plan
) -> duckdb.DuckDBPyRelation:
    """The parts as one relation; on large data with a column that marks the sample.

    The sample is every row whose position in its part hashes below the sampling share:
    uniform, independent of the values, the same rows on every run, and decided once per
    row rather than once per statistic that uses it."""
    if plan.sample is None or not paths:
        return storage.relation_of(con, paths)
    listing = ", ".join(storage.sql_string(p) for p in paths)
    if "file_row_number" in {f.name.lower() for f in schema}:
        # A data column has the name DuckDB gives row positions: a random sample instead.
        source = f"read_parquet([{listing}], union_by_name = true)"
        return con.sql(f"SELECT *, random() < {plan.sample!r} AS {plan.flag} FROM {source}")
    threshold = min(int(plan.sample * 2**64), 2**64 - 1)
    source = f"read_parquet([{listing}], union_by_name = true, file_row_number = true)"
    return con.sql(
        f"SELECT * EXCLUDE (file_row_number), hash(file_row_number) < {threshold}::UBIGINT "
        f"AS {plan.flag} FROM {source}"
    )


def _bounds(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    columns: Sequence[_Column],
    float_counts: Mapping[str, Mapping[str, storage.FloatCounts]],
) -> list[tuple[Any, Any]]:
    """Each column's (min, max), in the units the statistics use (epoch microseconds for
    temporal columns); (None, None) for booleans and other kinds, which scan 1 handles.

    DuckDB answers min and max of a single Parquet file from its footer, but not of several
    files read by name, so several parts are asked one by one (up to a limit) and their
    answers combined."""
    wanted = [c for c in columns if c.kind in ("numeric", "temporal", "string")]
    out: dict[str, tuple[Any, Any]] = {}
    if wanted and paths:
        groups: list[tuple[str, list[_Column]]]
        if len(paths) == 1 or len(paths) > _BOUNDS_PART_QUERIES:
            groups = [("", wanted)]
        else:
            groups = []
            for path in paths:
                present = {f.name for f in storage.arrow_schema([path])}
                groups.append((path, [c for c in wanted if c.name in present]))
        try:
            found = [
                _part_bounds(con, paths, path, cols, _known_counts(paths, path, float_counts))
                for path, cols in groups
            ]
            for column in wanted:
                pairs = [f[column.name] for f in found if column.name in f]
                lows = [low for low, _ in pairs if low is not None]
                highs = [high for _, high in pairs if high is not None]
                # DuckDB sorts NaN above every number; Python's min and max would not.
                out[column.name] = (
                    min(lows, key=_nan_last) if lows else None,
                    max(highs, key=_nan_last) if highs else None,
                )
        except TypeError:  # parts typed the column differently: ask the union instead
            known = _known_counts(paths, "", float_counts)
            found = [_part_bounds(con, paths, "", wanted, known)]
            out = dict(found[0])
    return [out.get(c.name, (None, None)) for c in columns]


def _known_counts(
    paths: Sequence[str],
    path: str,
    float_counts: Mapping[str, Mapping[str, storage.FloatCounts]],
) -> dict[str, storage.FloatCounts]:
    """The float counts known for one part (``path``), or for all of them (``path=""``): a
    column's counts over several parts are their sums, known only if every part's are."""
    parts = [path] if path else list(paths)
    known = [float_counts.get(p) or {} for p in parts]
    if not known:
        return {}
    out: dict[str, storage.FloatCounts] = {}
    for name in known[0]:
        each = [k[name] for k in known if name in k]
        if len(each) == len(known):
            out[name] = storage.FloatCounts(
                values=sum(c.values for c in each), nans=sum(c.nans for c in each)
            )
    return out


def _nan_last(value: Any) -> tuple[bool, Any]:
    return (isinstance(value, float) and math.isnan(value), 0.0 if value != value else value)


def _part_bounds(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    path: str,
    columns: Sequence[_Column],
    known: Mapping[str, storage.FloatCounts],
) -> dict[str, tuple[Any, Any]]:
    """Min and max of ``columns`` in one part (``path``), or in all of them (``path=""``).

    Parquet statistics leave NaN out of float columns, whereas NaN is the largest float to
    DuckDB (and in every other statistic of the profile), so NaN is counted and put back.
    Float columns whose counts are ``known`` (by column name) need no counting: those without
    NaN are answered from the footers, those with some are read (DuckDB does not answer from
    statistics it knows miss NaN), and those that are all null or all NaN need no query.
    The others are read to count their NaN.

    Each group is a query of its own because DuckDB answers a query from the footers only if
    it can for every column named, and otherwise reads them all: a float column with NaN, or
    with a row group of nulls only (which has no min and max), would make it read the rest."""
    floats = {c.name: c for c in columns if c.is_float}
    unknown = [c for c in floats.values() if c.name not in known]
    clean: list[_Column] = []  # known to hold no NaN
    with_nan: list[_Column] = []  # known to hold NaN and other values
    for name, counts in known.items():
        if name in floats and counts.values and counts.nans < counts.values:
            (with_nan if counts.nans else clean).append(floats[name])
    source = storage.relation_of(con, [path] if path else paths)
    out = _min_max(source, [c for c in columns if c.name not in floats])
    out.update(_min_max(source, clean))
    out.update(_min_max(source, with_nan))
    for name, counts in known.items():
        if name in floats:
            low, high = out.get(name, (None, None))
            out[name] = _with_nan(low, high, counts.values, counts.nans)
    if unknown:
        exprs: list[str] = []
        for column in unknown:
            x = column.sql
            exprs += [f"min({x})", f"max({x})", f"count({x})", f"count_if(isnan({x}))"]
        row = _fetch_row(source, exprs)
        for i, column in enumerate(unknown):
            low, high, count, nans = row[4 * i : 4 * i + 4]
            out[column.name] = _with_nan(low, high, count, nans)
    return out


def _min_max(
    source: duckdb.DuckDBPyRelation, columns: Sequence[_Column]
) -> dict[str, tuple[Any, Any]]:
    """(min, max) of each column in one query (temporal ones in epoch microseconds)."""
    if not columns:
        return {}
    exprs: list[str] = []
    for column in columns:
        if column.kind == "temporal":
            exprs += [f"epoch_us(min({column.sql}))", f"epoch_us(max({column.sql}))"]
        else:
            exprs += [f"min({column.sql})", f"max({column.sql})"]
    row = _fetch_row(source, exprs)
    return {c.name: (row[2 * i], row[2 * i + 1]) for i, c in enumerate(columns)}


def _with_nan(low: Any, high: Any, count: int | None, nans: int | None) -> tuple[Any, Any]:
    """A float column's (min, max) with its NaN put back: NaN is the largest value, and the
    smallest too where every non-null value is NaN (``count`` counts the non-null values)."""
    if nans:
        high = math.nan
        if nans == count:
            low = math.nan
    return low, high


def _fetch_row(relation: duckdb.DuckDBPyRelation, exprs: Sequence[str]) -> tuple[Any, ...]:
    result = relation.query(_INPUT, f"SELECT {', '.join(exprs)} FROM {_INPUT}")
    if result is None:  # only statements that write return None; this one reads
        raise RuntimeError("DuckDB returned no result for a profile query")
    return result.fetchall()[0]


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


def _count_values(relation: duckdb.DuckDBPyRelation, query: _Query) -> list[dict[Any, int]]:
    """How often each non-NULL value of each of ``query``'s expressions occurs, in one scan.

    One grouping set per expression: DuckDB counts them all in one pass over the data, in
    about half the time its ``histogram`` aggregate takes (a map per value), and the result
    is small (the expressions are low-cardinality columns or a column's few candidates)."""
    names = [f"v{i}" for i in range(len(query.expressions))]
    inner = ", ".join(f"{e} AS {n}" for e, n in zip(query.expressions, names, strict=True))
    flags = ", ".join(f"GROUPING({n})" for n in names)
    sets = ", ".join(f"({n})" for n in names)
    result = relation.query(
        _INPUT,
        f"SELECT {', '.join(names)}, {flags}, count(*) FROM (SELECT {inner} FROM {_INPUT}) "
        f"GROUP BY GROUPING SETS ({sets})",
    )
    if result is None:  # only statements that write return None; this one reads
        raise RuntimeError("DuckDB returned no result for a profile query")
    width = len(names)
    out: list[dict[Any, int]] = [{} for _ in names]
    for row in result.fetchall():
        # The set a row counts is the one expression it is grouped by (GROUPING() = 0).
        i = row[width : 2 * width].index(0)
        if row[i] is not None:
            out[i][row[i]] = int(row[-1])
    return out


@dataclass(frozen=True)
class _Plan:
    """How thoroughly this profile counts, chosen from the row count before scanning."""

    exact_distinct: bool
    sample: float | None  # share of rows quantiles and approx_top_k see; None: every row
    flag: str = field(default_factory=lambda: f"__mw_sampled_{uuid.uuid4().hex[:8]}")

    def sampled(self, x: str) -> str:
        """``x`` on the rows of the sample, NULL elsewhere (``x`` itself without a sample)."""
        return x if self.sample is None else f"CASE WHEN {self.flag} THEN {x} END"


@dataclass
class _Column:
    """One column's plan (which statistics go in which scan) and what came back."""

    name: str
    arrow_type: pa.DataType
    kind: ColumnKind
    plan: _Plan
    slots: dict[str, int] = field(default_factory=dict)  # scan 1
    finite_slots: dict[str, int] = field(default_factory=dict)  # the finite-range scan
    value_slots: dict[str, int] = field(default_factory=dict)  # scan 2
    stats: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    distinct: int | None = None
    top_values: list[TopValue] = field(default_factory=list)
    histogram: Histogram | None = None
    edges: list[float] = field(default_factory=list)  # histogram bounds, in SQL units
    cumulative_slots: list[int] = field(default_factory=list)  # scan 1: x <= each inner edge

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
        low, high = self.stats.get("min"), self.stats.get("max")
        if not self.is_float or low is None or high is None:
            return False
        return not (math.isfinite(low) and math.isfinite(high))

    # ---- scan 1 ----------------------------------------------------------------------------

    def plan_scalars(self, query: _Query) -> None:
        """Everything but exact value counts, in one scan. Min and max are known already
        (:func:`_bounds`), except for booleans; histograms use them as bounds."""
        self.slots["count"] = query.add(f"count({self.sql})")
        if self.kind == "other":
            return
        x = self.value_sql
        exact = self.plan.exact_distinct
        distinct = "count(DISTINCT {})" if exact else "approx_count_distinct({})"
        self.slots["distinct"] = query.add(distinct.format(self.sql))
        if self.kind == "boolean":
            self.slots["min"] = query.add(f"min({x})")
            self.slots["max"] = query.add(f"max({x})")
            self.slots["trues"] = query.add(f"count_if({x})")
        if self.kind == "numeric":
            # Sums of the values' distances from a point of their range, not avg() and
            # stddev_samp(): the latter updates its running state with a division per value
            # (a sixth of this scan). Cancellation cannot hurt: with the point inside the
            # range, every |x - shift| is at most sqrt(n) standard deviations (Samuelson),
            # so the variance loses at most about n * 1e-16 of itself.
            d = f"({x}::DOUBLE - {self._shift()!r})"
            self.slots["sum"] = query.add(f"sum({d})")
            self.slots["sum_squares"] = query.add(f"sum({d} * {d})")
        if self.kind in ("numeric", "temporal"):
            levels = ", ".join(repr(q) for q in QUANTILES)
            # On large data a t-digest of a sample of about EXACT_DISTINCT_ROWS rows: the
            # ranks it misses by are far below the digest's own error, at a fraction of
            # the cost of digesting every row.
            self.slots["quantiles"] = query.add(
                f"approx_quantile({self.plan.sampled(x)}, [{levels}])"
            )
            self._plan_histogram(query)
        if self.kind == "string":
            # A sample keeps this cheap on large data; the counts come from every row (scan 2).
            self.slots["candidates"] = query.add(f"approx_top_k({self.plan.sampled(x)}, {TOP_K})")

    def _shift(self) -> float:
        """The middle of the column's finite range (0 when it has none)."""
        low, high = self._histogram_range()
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            return 0.0
        return low / 2 + high / 2  # halves first: low + high may overflow

    def read_scalars(self, values: Sequence[Any], row_count: int) -> None:
        self.stats.update({key: values[slot] for key, slot in self.slots.items()})
        self.count = int(self.stats["count"] or 0)
        if "sum" in self.stats:
            self.stats["mean"], self.stats["std"] = self._moments()
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
        if self.cumulative_slots:
            # Running counts of x <= e1, ..., x <= e19; each bin is the difference of two.
            below = [int(values[slot] or 0) for slot in self.cumulative_slots]
            binned = int(self.stats["finite_count"] or 0) if self.nonfinite else self.count
            running = [0, *below, binned]
            counts_ = [running[i + 1] - running[i] for i in range(len(running) - 1)]
            self.histogram = Histogram(edges=self._edge_values(self.edges), counts=counts_)
        elif len(self.edges) == 2 and self.count:
            # One value: a single bin of zero width, rather than inventing a range around it.
            counted_ = int(self.stats["finite_count"] or 0) if self.nonfinite else self.count
            self.histogram = Histogram(edges=self._edge_values(self.edges), counts=[counted_])

    def _moments(self) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation from the shifted sums (None where undefined,
        NaN or infinity where the values hold them, as avg() and stddev_samp() give)."""
        n, total, squares = self.count, self.stats["sum"], self.stats["sum_squares"]
        if not n or total is None or squares is None:
            return None, None
        shift = self._shift()
        mean = shift + total / n
        if n == 1:
            return mean, None
        variance = (squares - total * total / n) / (n - 1)
        if math.isnan(variance) or math.isinf(total) or math.isinf(squares):
            return mean, math.nan
        return mean, math.sqrt(max(variance, 0.0))

    def plan_finite_range(self, query: _Query) -> None:
        if self.nonfinite:
            x = f"CASE WHEN isfinite({self.sql}) THEN {self.sql} END"
            self.finite_slots["finite_min"] = query.add(f"min({x})")
            self.finite_slots["finite_max"] = query.add(f"max({x})")
            self.finite_slots["finite_count"] = query.add(f"count_if(isfinite({self.sql}))")

    def read_finite_range(self, values: Sequence[Any]) -> None:
        for key, slot in self.finite_slots.items():
            self.stats[key] = values[slot]

    # ---- scan 2 ----------------------------------------------------------------------------

    def plan_distributions(self, query: _Query) -> None:
        if not self.count:
            return
        if (
            self.kind == "numeric"
            and self.distinct is not None
            and self.distinct <= LOW_CARDINALITY
        ):
            self.value_slots["value_counts"] = query.add(self.sql)
        if self.kind == "string":
            self._plan_string_counts(query)

    def _plan_string_counts(self, query: _Query) -> None:
        distinct = self.distinct or 0
        if distinct <= STRING_VALUE_COUNTS:
            self.value_slots["value_counts"] = query.add(self.sql)
            return
        repeats = self.count - distinct
        if self.plan.exact_distinct and not repeats:
            return
        if not self.plan.exact_distinct and repeats < REPEATS_MIN_SHARE * self.count:
            return
        candidates = [c for c in self.stats.get("candidates") or [] if c is not None]
        if candidates:
            listing = ", ".join(storage.sql_string(c) for c in candidates)
            self.value_slots["value_counts"] = query.add(
                f"CASE WHEN {self.sql} IN ({listing}) THEN {self.sql} END"
            )

    def _plan_histogram(self, query: _Query) -> None:
        low, high = self._histogram_range()
        if low is None or high is None:
            return
        if low == high:
            self.edges = [low, high]  # one bin; its count is the column's (read_scalars)
            return
        width = (high - low) / HISTOGRAM_BINS
        edges = [low + width * i for i in range(HISTOGRAM_BINS)] + [high]
        if self.kind == "temporal":
            edges = [float(round(e)) for e in edges]
        self.edges = edges
        # The bins are [min, e1], (e1, e2], ..., (e19, max]: counting x <= e for each inner
        # edge gives them by difference, the last one from the count of values, so nothing
        # depends on float rounding at max. Nineteen comparisons and counts a value cost
        # about half what ``histogram(x, bounds)`` does (a search and a map per value).
        inner = edges[1:-1]
        if self.kind == "temporal":
            x = self.value_sql
            bounds = [f"{int(e)}::BIGINT" for e in inner]
        else:
            x = f"{self.sql}::DOUBLE"
            if self.nonfinite:  # NaN and infinity belong to no bin
                x = f"CASE WHEN isfinite({self.sql}) THEN {x} END"
            bounds = [f"{e!r}::DOUBLE" for e in inner]
        self.cumulative_slots = [query.add(f"count_if({x} <= {b})") for b in bounds]

    def _histogram_range(self) -> tuple[float | None, float | None]:
        low, high = self.stats.get("min"), self.stats.get("max")
        if self.nonfinite:
            low, high = self.stats.get("finite_min"), self.stats.get("finite_max")
        if low is None or high is None:
            return None, None
        return float(low), float(high)

    def read_distributions(self, counted: Sequence[dict[Any, int]]) -> None:
        if "value_counts" in self.value_slots:
            ranked = sorted(
                counted[self.value_slots["value_counts"]].items(),
                key=lambda kv: (-int(kv[1]), _sort_key(kv[0])),
            )
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
