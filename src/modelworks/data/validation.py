"""Validation: evaluate an expectation suite over a version's Parquet parts with DuckDB.

Every statistic the expectations need (null counts, out-of-range counts, regex misses, the
newest timestamp, ...) goes into one ungrouped ``SELECT``, so a suite costs one scan however
many expectations it has. Only two things run afterwards, and only where needed: a ``unique``
expectation's ``GROUP BY`` (uniqueness cannot be a scalar aggregate), and, for an expectation
that failed, a ``LIMIT``-ed query for a few example values.

Column names and values reach SQL only through ``storage.quote_identifier`` and
``storage.sql_string`` (numbers are validated finite ints and floats), so a suite cannot inject
SQL. A column that is missing, or of a type an expectation cannot check, fails that
expectation with a message instead of raising.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from modelworks.data import storage
from modelworks.data.expectations import (
    AllowedValues,
    ColumnPresent,
    ColumnType,
    Expectation,
    ExpectationSuite,
    Freshness,
    NullRate,
    Range,
    Regex,
    RowCount,
    Unique,
    expectation_json,
    parse_instant,
    type_matches,
)
from modelworks.data.profile import iso_from_epoch_us, json_safe, kind_of
from modelworks.data.schemas import ExpectationResult, ValidationReport

EXAMPLES = 5
_INPUT = "mw_validation_input"
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def validate_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    suite: ExpectationSuite,
    *,
    now: dt.datetime | None = None,
) -> ValidationReport:
    """Evaluate ``suite`` over the parts at ``paths``.

    ``now`` is the moment freshness is measured from (default: the current time; a naive
    datetime is taken as UTC, as are naive timestamps in the data). The report succeeds when
    no expectation with severity ``error`` failed.
    """
    evaluated_at = _as_utc(now) if now is not None else dt.datetime.now(dt.UTC)
    schema = storage.arrow_schema(paths)
    data = _Data(
        relation=storage.relation_of(con, paths),
        types={f.name: f.type for f in schema},
        now=evaluated_at,
    )
    checks = [_check_for(e, data) for e in suite.expectations]
    rows = data.add("count(*)")
    for check in checks:
        check.plan()
    values = data.scan()
    data.row_count = int(values[rows] or 0)
    results = [check.finish(values) for check in checks]
    failed_errors = [
        r
        for r, e in zip(results, suite.expectations, strict=True)
        if not r.success and e.severity == "error"
    ]
    return ValidationReport(
        success=not failed_errors,
        row_count=data.row_count,
        results=results,
        evaluated_at=evaluated_at,
    )


class _Data:
    """The version being validated and the select list of its one scan."""

    def __init__(
        self, relation: duckdb.DuckDBPyRelation, types: dict[str, pa.DataType], now: dt.datetime
    ) -> None:
        self.relation = relation
        self.types = types
        self.now = now
        self.row_count = 0
        self.expressions: list[str] = []

    def add(self, expression: str) -> int:
        self.expressions.append(expression)
        return len(self.expressions) - 1

    def scan(self) -> tuple[Any, ...]:
        return self.rows(f"SELECT {', '.join(self.expressions)} FROM {_INPUT}")[0]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql``, which reads the version as the table ``mw_validation_input``."""
        result = self.relation.query(_INPUT, sql)
        if result is None:  # only statements that write return None; these read
            raise RuntimeError("DuckDB returned no result for a validation query")
        return result.fetchall()

    def missing(self, columns: Sequence[str]) -> list[str]:
        return [c for c in columns if c not in self.types]

    def describe_columns(self) -> str:
        names = list(self.types)
        if not names:
            return "the data has no columns"
        shown = ", ".join(names[:20])
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        return f"the data has columns {shown}{more}"


class _Check:
    """One expectation: what it adds to the scan, and how its result reads."""

    columns: Sequence[str] = ()

    def __init__(self, expectation: Expectation, data: _Data) -> None:
        self.expectation = expectation
        self.data = data
        self.slots: dict[str, int] = {}
        self.problem: str | None = None  # set in plan() when the check cannot run

    def plan(self) -> None:
        missing = self.data.missing(self.columns)
        if missing:
            names = ", ".join(repr(m) for m in missing)
            noun = "column" if len(missing) == 1 else "columns"
            verb = "is" if len(missing) == 1 else "are"
            self.problem = f"{noun} {names} {verb} missing; {self.data.describe_columns()}"
            return
        self.problem = self.unsupported()
        if self.problem is None:
            self.add_aggregates()

    def unsupported(self) -> str | None:
        """Why this expectation cannot apply to the column's type, if it cannot."""
        return None

    def add_aggregates(self) -> None:
        """Add the expressions this check reads to the shared scan."""

    def finish(self, values: Sequence[Any]) -> ExpectationResult:
        if self.problem is not None:
            return self.result(False, message=self.problem)
        return self.evaluate({k: values[i] for k, i in self.slots.items()})

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        raise NotImplementedError

    def result(
        self,
        success: bool,
        *,
        message: str,
        observed: Any = None,
        unexpected_count: int = 0,
        examples: Sequence[Any] = (),
    ) -> ExpectationResult:
        return ExpectationResult(
            expectation=expectation_json(self.expectation),
            success=success,
            observed=json_safe(observed),
            unexpected_count=unexpected_count,
            unexpected_examples=[json_safe(e) for e in examples],
            message=message,
        )

    def add(self, key: str, expression: str) -> None:
        self.slots[key] = self.data.add(expression)


class _ColumnCheck(_Check):
    """A check of one column's values; ``value_sql`` reads it as the checks compare it."""

    column: str

    def __init__(self, expectation: Expectation, data: _Data, column: str) -> None:
        super().__init__(expectation, data)
        self.column = column
        self.columns = [column]

    @property
    def arrow_type(self) -> pa.DataType:
        return self.data.types[self.column]

    @property
    def sql(self) -> str:
        return storage.quote_identifier(self.column)

    @property
    def is_instant(self) -> bool:
        """Timestamps and dates: compared as microseconds since the epoch (UTC)."""
        t = self.arrow_type
        return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))

    @property
    def value_sql(self) -> str:
        return f"epoch_us({self.sql})" if self.is_instant else self.sql

    def shown(self, value: Any) -> Any:
        """A value read through ``value_sql`` as people read it."""
        if value is not None and self.is_instant:
            return iso_from_epoch_us(int(value), self.arrow_type)
        return json_safe(value)

    def examples(self, condition: str) -> list[Any]:
        """Up to EXAMPLES distinct values where ``condition`` holds, in data order."""
        rows = self.data.rows(
            f"SELECT {self.value_sql} FROM {_INPUT} WHERE {condition} LIMIT {EXAMPLES * 20}"
        )
        out: list[Any] = []
        for (value,) in rows:
            shown = self.shown(value)
            if shown not in out:
                out.append(shown)
            if len(out) == EXAMPLES:
                break
        return out

    @property
    def label(self) -> str:
        return f"column {self.column!r}"


class _ColumnPresentCheck(_ColumnCheck):
    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        return self.result(True, observed=True, message=f"{self.label} is present")

    def finish(self, values: Sequence[Any]) -> ExpectationResult:
        if self.problem is not None:
            return self.result(False, observed=False, message=self.problem)
        return super().finish(values)


class _ColumnTypeCheck(_ColumnCheck):
    expectation: ColumnType

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        actual = str(self.arrow_type)
        wanted = self.expectation.dtype
        if type_matches(self.arrow_type, wanted):
            return self.result(True, observed=actual, message=f"{self.label} is {actual}")
        return self.result(
            False,
            observed=actual,
            message=f"{self.label} is {actual}, expected {wanted}",
        )


class _NullRateCheck(_ColumnCheck):
    expectation: NullRate

    def add_aggregates(self) -> None:
        self.add("count", f"count({self.sql})")

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        rows = self.data.row_count
        nulls = rows - int(stats["count"] or 0)
        rate = nulls / rows if rows else 0.0
        limit = self.expectation.max
        detail = f"null rate {_pct(rate)} ({nulls:,} of {rows:,} rows)"
        if rate <= limit + 1e-12:
            return self.result(
                True,
                observed=rate,
                unexpected_count=nulls,
                message=f"{self.label}: {detail}, at most {_pct(limit)} allowed",
            )
        return self.result(
            False,
            observed=rate,
            unexpected_count=nulls,
            message=f"{self.label}: {detail} is above the allowed {_pct(limit)}",
        )


class _RangeCheck(_ColumnCheck):
    expectation: Range

    def unsupported(self) -> str | None:
        bounds = [b for b in (self.expectation.min, self.expectation.max) if b is not None]
        dated = isinstance(bounds[0], str)
        kind = kind_of(self.arrow_type)
        if dated and not self.is_instant:
            return (
                f"{self.label} is {self.arrow_type}, but the range bounds are dates/times; "
                "give numbers, or check a timestamp or date column"
            )
        if not dated and self.is_instant:
            return (
                f"{self.label} is {self.arrow_type}, but the range bounds are numbers; "
                "give them as ISO dates/times, like 2024-01-31 or 2024-01-31T12:00:00"
            )
        if not dated and kind != "numeric":
            return (
                f"{self.label} is {self.arrow_type}; a range checks numeric columns "
                "(numbers) or timestamp and date columns (ISO dates/times)"
            )
        return None

    def _literal(self, bound: int | float | str) -> str:
        if isinstance(bound, str):
            instant = parse_instant(bound)
            if instant is None:  # the model validated it; kept for the type checker
                raise ValueError(f"not an ISO date/time: {bound!r}")
            return str(_epoch_us(instant))
        return repr(bound)

    @property
    def condition(self) -> str:
        parts = []
        if self.expectation.min is not None:
            parts.append(f"{self.value_sql} < {self._literal(self.expectation.min)}")
        if self.expectation.max is not None:
            parts.append(f"{self.value_sql} > {self._literal(self.expectation.max)}")
        return "(" + " OR ".join(parts) + ")"

    def add_aggregates(self) -> None:
        self.add("min", f"min({self.value_sql})")
        self.add("max", f"max({self.value_sql})")
        self.add("count", f"count({self.sql})")
        self.add("outside", f"count_if({self.condition})")

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        observed = {"min": self.shown(stats["min"]), "max": self.shown(stats["max"])}
        outside = int(stats["outside"] or 0)
        low, high = self.expectation.min, self.expectation.max
        if low is not None and high is not None:
            where = f"outside [{low}, {high}]"
        elif low is not None:
            where = f"below {low}"
        else:
            where = f"above {high}"
        if not outside:
            count = int(stats["count"] or 0)
            return self.result(
                True,
                observed=observed,
                message=f"{self.label}: none of {count:,} values {where}",
            )
        examples = self.examples(self.condition)
        return self.result(
            False,
            observed=observed,
            unexpected_count=outside,
            examples=examples,
            message=f"{self.label}: {_values(outside)} {where}, e.g. {_show_all(examples)}",
        )


class _AllowedValuesCheck(_ColumnCheck):
    expectation: AllowedValues

    @property
    def condition(self) -> str:
        left, literals = self._comparable()
        if not literals:
            return f"{self.sql} IS NOT NULL"
        # IS NOT TRUE, not NOT: a NULL from the comparison must count as unexpected.
        return f"({self.sql} IS NOT NULL AND ({left} IN ({', '.join(literals)})) IS NOT TRUE)"

    def _comparable(self) -> tuple[str, list[str]]:
        """The column as compared and the allowed values it can equal, as SQL.

        Values that can never equal a value of this column's type (a word in a numeric
        column) are left out: they allow nothing, so leaving them out changes nothing.
        """
        kind = kind_of(self.arrow_type)
        out: list[str] = []
        for value in self.expectation.values:
            literal = _allowed_literal(value, kind, self.is_instant)
            if literal is not None and literal not in out:
                out.append(literal)
        if self.is_instant:
            return self.value_sql, out
        if kind in ("numeric", "boolean", "string"):
            return self.sql, out
        return f"CAST({self.sql} AS VARCHAR)", out

    def add_aggregates(self) -> None:
        self.add("count", f"count({self.sql})")
        self.add("unexpected", f"count_if({self.condition})")

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        count = int(stats["count"] or 0)
        unexpected = int(stats["unexpected"] or 0)
        rate = unexpected / count if count else 0.0
        allowed = _show_all(self.expectation.values, limit=10)
        if not unexpected:
            return self.result(
                True,
                observed=rate,
                message=f"{self.label}: all {count:,} values are among {allowed}",
            )
        examples = self.examples(self.condition)
        return self.result(
            False,
            observed=rate,
            unexpected_count=unexpected,
            examples=examples,
            message=(
                f"{self.label}: {_values(unexpected)} not among {allowed}, "
                f"e.g. {_show_all(examples)}"
            ),
        )


class _RegexCheck(_ColumnCheck):
    expectation: Regex

    @property
    def condition(self) -> str:
        pattern = storage.sql_string(self.expectation.pattern)
        text = self.sql if kind_of(self.arrow_type) == "string" else f"CAST({self.sql} AS VARCHAR)"
        return f"({self.sql} IS NOT NULL AND NOT regexp_matches({text}, {pattern}))"

    def add_aggregates(self) -> None:
        self.add("count", f"count({self.sql})")
        self.add("unexpected", f"count_if({self.condition})")

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        count = int(stats["count"] or 0)
        unexpected = int(stats["unexpected"] or 0)
        rate = unexpected / count if count else 0.0
        pattern = self.expectation.pattern
        if not unexpected:
            return self.result(
                True,
                observed=rate,
                message=f"{self.label}: all {count:,} values match {pattern!r}",
            )
        examples = self.examples(self.condition)
        return self.result(
            False,
            observed=rate,
            unexpected_count=unexpected,
            examples=examples,
            message=(
                f"{self.label}: {_values(unexpected)} do not match {pattern!r}, "
                f"e.g. {_show_all(examples)}"
            ),
        )


class _UniqueCheck(_Check):
    """Exact uniqueness, by a GROUP BY after the scan (the profile's distinct is approximate)."""

    expectation: Unique

    def __init__(self, expectation: Unique, data: _Data) -> None:
        super().__init__(expectation, data)
        self.columns = expectation.keys

    def _key_sql(self, column: str) -> str:
        t = self.data.types[column]
        quoted = storage.quote_identifier(column)
        instant = pa.types.is_timestamp(t) or pa.types.is_date(t)
        return f"epoch_us({quoted})" if instant else quoted

    def _shown(self, column: str, value: Any) -> Any:
        t = self.data.types[column]
        if value is not None and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
            return iso_from_epoch_us(int(value), t)
        return json_safe(value)

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        keys = [self._key_sql(c) for c in self.columns]
        aliases = [f"k{i}" for i in range(len(keys))]
        selected = ", ".join(f"{k} AS {a}" for k, a in zip(keys, aliases, strict=True))
        listing = ", ".join(aliases)
        not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
        rows = self.data.rows(
            f"WITH dup AS (SELECT {selected}, count(*) AS n FROM {_INPUT} WHERE {not_null} "
            f"GROUP BY ALL HAVING count(*) > 1) "
            f"SELECT {listing}, n, count(*) OVER (), sum(n) OVER () FROM dup "
            f"ORDER BY n DESC, {listing} LIMIT {EXAMPLES}"
        )
        label = (
            f"column {self.columns[0]!r}"
            if len(self.columns) == 1
            else "columns " + ", ".join(repr(c) for c in self.columns)
        )
        if not rows:
            return self.result(True, observed=0, message=f"{label}: no two rows share a value")
        width = len(self.columns)
        examples: list[Any] = []
        shown: list[str] = []
        for row in rows:
            parts = [self._shown(c, v) for c, v in zip(self.columns, row[:width], strict=True)]
            example = parts[0] if width == 1 else dict(zip(self.columns, parts, strict=True))
            examples.append(example)
            shown.append(f"{_show(example)} ({int(row[width]):,} rows)")
        groups, duplicated = int(rows[0][width + 1]), int(rows[0][width + 2])
        noun = "value" if groups == 1 else "values"
        return self.result(
            False,
            observed=groups,
            unexpected_count=duplicated,
            examples=examples,
            message=(
                f"{label}: {duplicated:,} rows share {groups:,} duplicated {noun}, "
                f"e.g. {', '.join(shown)}"
            ),
        )


class _RowCountCheck(_Check):
    expectation: RowCount

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        rows = self.data.row_count
        low, high = self.expectation.min, self.expectation.max
        if low is not None and rows < low:
            return self.result(
                False, observed=rows, message=f"{rows:,} rows, expected at least {low:,}"
            )
        if high is not None and rows > high:
            return self.result(
                False, observed=rows, message=f"{rows:,} rows, expected at most {high:,}"
            )
        return self.result(True, observed=rows, message=f"{rows:,} rows")


class _FreshnessCheck(_ColumnCheck):
    expectation: Freshness

    def unsupported(self) -> str | None:
        if self.is_instant:
            return None
        return f"{self.label} is {self.arrow_type}; freshness needs a timestamp or date column"

    def add_aggregates(self) -> None:
        self.add("latest", f"max({self.value_sql})")

    def evaluate(self, stats: dict[str, Any]) -> ExpectationResult:
        allowed = self.expectation.max_age
        if stats["latest"] is None:
            return self.result(
                False, message=f"{self.label} has no values, so how fresh the data is is unknown"
            )
        latest_us = int(stats["latest"])
        latest = self.shown(latest_us)
        age = self.data.now - (_EPOCH_UTC + dt.timedelta(microseconds=latest_us))
        if age < dt.timedelta(0):
            return self.result(
                True,
                observed=latest,
                message=f"{self.label}: newest value {latest} is {_age(-age)} in the future",
            )
        if age <= self.expectation.max_age_delta:
            return self.result(
                True,
                observed=latest,
                message=f"{self.label}: newest value {latest} is {_age(age)} old "
                f"(at most {allowed} allowed)",
            )
        return self.result(
            False,
            observed=latest,
            message=f"{self.label}: newest value {latest} is {_age(age)} old, "
            f"more than the allowed {allowed}",
        )


def _check_for(expectation: Expectation, data: _Data) -> _Check:
    if isinstance(expectation, ColumnPresent):
        return _ColumnPresentCheck(expectation, data, expectation.column)
    if isinstance(expectation, ColumnType):
        return _ColumnTypeCheck(expectation, data, expectation.column)
    if isinstance(expectation, NullRate):
        return _NullRateCheck(expectation, data, expectation.column)
    if isinstance(expectation, Range):
        return _RangeCheck(expectation, data, expectation.column)
    if isinstance(expectation, AllowedValues):
        return _AllowedValuesCheck(expectation, data, expectation.column)
    if isinstance(expectation, Regex):
        return _RegexCheck(expectation, data, expectation.column)
    if isinstance(expectation, Unique):
        return _UniqueCheck(expectation, data)
    if isinstance(expectation, RowCount):
        return _RowCountCheck(expectation, data)
    return _FreshnessCheck(expectation, data, expectation.column)


# ---- literals and wording --------------------------------------------------------------------


def _allowed_literal(value: bool | int | float | str, kind: str, instant: bool) -> str | None:
    """``value`` as a SQL literal comparable with a column of ``kind``, or None if none is."""
    if instant:
        moment = parse_instant(value) if isinstance(value, str) else None
        return str(_epoch_us(moment)) if moment is not None else None
    if kind == "string" or kind not in ("numeric", "boolean"):
        if isinstance(value, bool):
            return storage.sql_string("true" if value else "false")
        return storage.sql_string(str(value))
    if kind == "boolean":
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().upper()
        return None
    # numeric
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return repr(value)
    for parse in (int, float):
        try:
            number = parse(value.strip())
        except ValueError:
            continue
        if math.isfinite(number):
            return repr(number)
    return None


def _epoch_us(moment: dt.datetime) -> int:
    delta = moment - _EPOCH_UTC
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _as_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _pct(rate: float) -> str:
    return f"{rate * 100:.4g}%"


def _values(n: int) -> str:
    return f"{n:,} value" if n == 1 else f"{n:,} values"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _show_all(values: Sequence[Any], limit: int = EXAMPLES) -> str:
    shown = ", ".join(_show(v) for v in values[:limit])
    if len(values) > limit:
        shown += f" (and {len(values) - limit} more)"
    return shown


def _age(age: dt.timedelta) -> str:
    """A short age for messages: 3d 2h, 45m, 12s."""
    seconds = int(age.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts[:2]) or "0s"
