"""Validation of real Parquet files with DuckDB: results, messages, and hostile names."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks.core.config import Settings
from modelworks.data import storage, validation
from modelworks.data.expectations import (
    ExpectationSuite,
    RowCount,
    infer_suite,
    load_suite,
)
from modelworks.data.profile import profile_paths
from modelworks.data.schemas import ExpectationResult, ValidationReport
from modelworks.data.validation import validate_paths

NOW = dt.datetime(2024, 1, 3, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    # The project's own connection settings; two threads so partial aggregates get merged.
    home = tmp_path_factory.mktemp("home")
    connection = storage.connect(Settings(home=home), threads=2)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Eight rows with known problems, in two parts (the second adds a column)."""
    folder = tmp_path_factory.mktemp("people")
    first = pa.table(
        {
            "id": pa.array([1, 2, 3, 3, 4], pa.int64()),
            "age": pa.array([10, -3, 999, 50, 40], pa.int32()),
            "email": ["a@x.io", "b@x.io", "bad", "c@x.io", None],
            "plan": ["free", "pro", "pro", "gold", "free"],
            "joined": pa.array([dt.date(2023, 12, d) for d in (1, 2, 3, 4, 5)], pa.date32()),
            "seen": pa.array(
                [dt.datetime(2024, 1, 1, h) for h in range(5)], pa.timestamp("us", tz="UTC")
            ),
            "score": [0.5, 1.5, 2.5, 3.5, 4.5],
            "active": [True, False, True, True, None],
        }
    )
    second = pa.table(
        {
            "id": pa.array([None, 4, 4], pa.int64()),
            "age": pa.array([30, None, 20], pa.int32()),
            "email": ["d@x.io", "O'Brien", "e@x.io"],
            "plan": [None, "x'); DROP TABLE t; --", "free"],
            "joined": pa.array([dt.date(2023, 12, 6)] * 3, pa.date32()),
            "seen": pa.array(
                [dt.datetime(2024, 1, 1, h) for h in (5, 6, 7)], pa.timestamp("us", tz="UTC")
            ),
            "score": [5.5, 6.5, 7.5],
            "active": [False, False, True],
            'we"ird; --': [1, 1, 1],
        }
    )
    paths = [folder / "part_0.parquet", folder / "part_1.parquet"]
    pq.write_table(first, paths[0])
    pq.write_table(second, paths[1])
    return [str(p) for p in paths]


def run(
    con: duckdb.DuckDBPyConnection, paths: list[str], yaml_text: str, **kw: Any
) -> ValidationReport:
    return validate_paths(con, paths, load_suite(yaml_text), now=kw.get("now", NOW))


def one(con: duckdb.DuckDBPyConnection, paths: list[str], expectation: str) -> ExpectationResult:
    report = run(con, paths, f"expectations:\n- {expectation}\n")
    (result,) = report.results
    return result


def test_row_count(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    ok = one(con, people, "{type: row_count, min: 1, max: 8}")
    assert (ok.success, ok.observed, ok.message) == (True, 8, "8 rows")
    low = one(con, people, "{type: row_count, min: 10}")
    assert (low.success, low.message) == (False, "8 rows, expected at least 10")
    high = one(con, people, "{type: row_count, max: 5}")
    assert (high.success, high.message) == (False, "8 rows, expected at most 5")


def test_columns_and_types(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    present = one(con, people, "{type: column_present, column: 'we\"ird; --'}")
    assert present.success and present.observed is True
    missing = one(con, people, "{type: column_present, column: emails}")
    assert (missing.success, missing.observed) == (False, False)
    assert missing.message == (
        "column 'emails' is missing; the data has columns id, age, email, plan, joined, seen, "
        'score, active, we"ird; --'
    )
    assert one(con, people, "{type: column_type, column: age, dtype: int32}").success
    assert one(con, people, "{type: column_type, column: age, dtype: integer}").success
    assert one(con, people, "{type: column_type, column: age, dtype: numeric}").success
    assert one(con, people, "{type: column_type, column: score, dtype: float64}").success
    assert one(con, people, "{type: column_type, column: seen, dtype: temporal}").success
    assert one(
        con, people, "{type: column_type, column: seen, dtype: 'timestamp[us, tz=UTC]'}"
    ).success
    wrong = one(con, people, "{type: column_type, column: age, dtype: string}")
    assert (wrong.success, wrong.observed) == (False, "int32")
    assert wrong.message == "column 'age' is int32, expected string"


def test_null_rate(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    over = one(con, people, "{type: null_rate, column: email, max: 0.1}")
    assert (over.success, over.observed, over.unexpected_count) == (False, 1 / 8, 1)
    assert over.message == "column 'email': null rate 12.5% (1 of 8 rows) is above the allowed 10%"
    assert one(con, people, "{type: null_rate, column: email, max: 0.125}").success
    # A column only the second part has is null in the first part's rows.
    added = one(con, people, "{type: null_rate, column: 'we\"ird; --', max: 0.5}")
    assert (added.success, added.observed, added.unexpected_count) == (False, 5 / 8, 5)


def test_numeric_range(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    result = one(con, people, "{type: range, column: age, min: 0, max: 120}")
    assert not result.success
    assert result.observed == {"min": -3, "max": 999}
    assert (result.unexpected_count, result.unexpected_examples) == (2, [-3, 999])
    assert result.message == "column 'age': 2 values outside [0, 120], e.g. -3, 999"
    below = one(con, people, "{type: range, column: score, min: 1}")
    assert below.message == "column 'score': 1 value below 1, e.g. 0.5"
    fine = one(con, people, "{type: range, column: score, min: 0.5, max: 7.5}")
    assert (fine.success, fine.message) == (
        True,
        "column 'score': none of 8 values outside [0.5, 7.5]",
    )


def test_temporal_range(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    result = one(con, people, "{type: range, column: seen, min: '2024-01-01T05:00:00'}")
    assert not result.success
    assert result.unexpected_count == 5
    assert result.unexpected_examples == [f"2024-01-01T0{h}:00:00+00:00" for h in range(5)]
    assert result.observed == {
        "min": "2024-01-01T00:00:00+00:00",
        "max": "2024-01-01T07:00:00+00:00",
    }
    # An offset is honoured: 07:00+02:00 is 05:00 UTC.
    shifted = one(con, people, "{type: range, column: seen, max: '2024-01-01T07:00:00+02:00'}")
    assert shifted.unexpected_count == 2
    days = one(con, people, "{type: range, column: joined, min: 2023-12-02, max: 2023-12-05}")
    assert days.unexpected_examples == ["2023-12-01", "2023-12-06"]
    assert days.unexpected_count == 4


def test_range_on_the_wrong_kind_of_column_fails_with_a_reason(
    con: duckdb.DuckDBPyConnection, people: list[str]
) -> None:
    text = one(con, people, "{type: range, column: email, min: 0}")
    assert not text.success
    assert text.message == (
        "column 'email' is string; a range checks numeric columns (numbers) or timestamp and "
        "date columns (ISO dates/times)"
    )
    dates = one(con, people, "{type: range, column: age, min: 2024-01-01}")
    assert "the range bounds are dates/times" in dates.message
    numbers = one(con, people, "{type: range, column: seen, min: 0}")
    assert "give them as ISO dates/times" in numbers.message


def test_allowed_values_resist_injection(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    result = one(con, people, "{type: allowed_values, column: plan, values: [free, pro]}")
    assert not result.success
    assert result.unexpected_count == 2
    assert result.unexpected_examples == ["gold", "x'); DROP TABLE t; --"]
    assert result.observed == pytest.approx(2 / 7)
    assert result.message == (
        "column 'plan': 2 values not among 'free', 'pro', e.g. 'gold', \"x'); DROP TABLE t; --\""
    )
    everything = one(
        con,
        people,
        '{type: allowed_values, column: plan, values: [free, pro, gold, "x\'); DROP TABLE t; --"]}',
    )
    assert everything.success
    # The data is still all there: nothing in a value ran as SQL.
    assert one(con, people, "{type: row_count, min: 8, max: 8}").success


def test_allowed_values_across_types(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    numbers = one(con, people, "{type: allowed_values, column: id, values: [1, 2, '3', 4]}")
    assert numbers.success  # '3' is read as the number 3; nulls are null_rate's business
    words = one(con, people, "{type: allowed_values, column: id, values: [one, 2]}")
    assert (words.unexpected_count, words.unexpected_examples) == (6, [1, 3, 4])
    flags = one(con, people, "{type: allowed_values, column: active, values: [true]}")
    assert (flags.unexpected_count, flags.unexpected_examples) == (3, [False])
    days = one(
        con, people, "{type: allowed_values, column: joined, values: [2023-12-01, 2023-12-06]}"
    )
    assert days.unexpected_examples == ["2023-12-02", "2023-12-03", "2023-12-04", "2023-12-05"]
    assert days.unexpected_count == 4


def test_regex(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    result = one(con, people, r"{type: regex, column: email, pattern: '^[^@]+@[^@]+$'}")
    assert not result.success
    assert (result.unexpected_count, result.unexpected_examples) == (2, ["bad", "O'Brien"])
    assert result.message == (
        "column 'email': 2 values do not match '^[^@]+@[^@]+$', e.g. 'bad', \"O'Brien\""
    )
    # Not anchored: matching anywhere in the value is enough.
    assert (
        one(con, people, "{type: regex, column: email, pattern: '@x\\.io'}").unexpected_count == 2
    )
    numbers = one(con, people, "{type: regex, column: age, pattern: '^\\d+$'}")
    assert numbers.unexpected_examples == [-3]


def test_unique(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    result = one(con, people, "{type: unique, column: id}")
    assert not result.success
    assert (result.observed, result.unexpected_count, result.unexpected_examples) == (2, 5, [4, 3])
    assert (
        result.message
        == "column 'id': 5 rows share 2 duplicated values, e.g. 4 (3 rows), 3 (2 rows)"
    )
    pair = one(con, people, "{type: unique, columns: [id, 'we\"ird; --']}")
    # Only the second part has the second key; rows with a null key are not compared.
    assert (pair.unexpected_count, pair.unexpected_examples) == (2, [{"id": 4, 'we"ird; --': 1}])
    assert one(con, people, "{type: unique, column: seen}").success
    assert one(con, people, "{type: unique, columns: [id, age]}").success


def test_freshness(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    stale = one(con, people, "{type: freshness, column: seen, max_age: 1d}")
    assert (stale.success, stale.observed) == (False, "2024-01-01T07:00:00+00:00")
    assert stale.message == (
        "column 'seen': newest value 2024-01-01T07:00:00+00:00 is 1d 17h old, "
        "more than the allowed 1d"
    )
    assert one(con, people, "{type: freshness, column: seen, max_age: 2d}").success
    # A naive "now" is UTC.
    naive = validate_paths(
        con,
        people,
        load_suite("- {type: freshness, column: seen, max_age: 30m}"),
        now=dt.datetime(2024, 1, 1, 7, 30),
    )
    assert naive.success
    days = one(con, people, "{type: freshness, column: joined, max_age: 4w}")
    assert (days.success, days.observed) == (True, "2023-12-06")
    wrong = one(con, people, "{type: freshness, column: age, max_age: 1d}")
    assert wrong.message == "column 'age' is int32; freshness needs a timestamp or date column"


def test_missing_columns_fail_every_column_check(
    con: duckdb.DuckDBPyConnection, people: list[str]
) -> None:
    report = run(
        con,
        people,
        """
expectations:
- {type: null_rate, column: nope, max: 0}
- {type: range, column: nope, min: 0}
- {type: allowed_values, column: nope, values: [a]}
- {type: regex, column: nope, pattern: a}
- {type: freshness, column: nope, max_age: 1d}
- {type: column_type, column: nope, dtype: int64}
- {type: unique, columns: [id, nope, nada]}
""",
    )
    assert not report.success
    assert all(not r.success for r in report.results)
    assert all(r.message.startswith("column 'nope' is missing;") for r in report.results[:-1])
    assert report.results[-1].message.startswith("columns 'nope', 'nada' are missing;")


def test_report_success_ignores_warnings(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    report = run(
        con,
        people,
        """
expectations:
- {type: row_count, min: 1}
- {type: range, column: age, min: 0, severity: warning}
""",
    )
    assert report.success
    assert [r.success for r in report.results] == [True, False]
    assert report.results[1].expectation == {
        "type": "range",
        "column": "age",
        "min": 0,
        "severity": "warning",
    }
    assert report.evaluated_at == NOW
    assert report.summary() == (
        "1 of 2 expectations failed:\n  - column 'age': 1 value below 0, e.g. -3"
    )


def test_scalar_checks_share_one_scan(
    con: duckdb.DuckDBPyConnection, people: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[str] = []
    original = validation._Data.rows

    def counting(self: validation._Data, sql: str) -> list[tuple[Any, ...]]:
        queries.append(sql)
        rows: list[tuple[Any, ...]] = original(self, sql)
        return rows

    monkeypatch.setattr(validation._Data, "rows", counting)
    report = run(
        con,
        people,
        """
expectations:
- {type: row_count, min: 1}
- {type: null_rate, column: id, max: 0.5}
- {type: range, column: score, min: 0}
- {type: allowed_values, column: active, values: [true, false]}
- {type: regex, column: plan, pattern: '.'}
- {type: freshness, column: seen, max_age: 1w}
- {type: column_type, column: id, dtype: int64}
""",
    )
    assert report.success, report.summary()
    assert len(queries) == 1


def test_empty_data(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({"x": pa.array([], pa.int64()), "t": pa.array([], pa.timestamp("us"))}), path
    )
    report = run(
        con,
        [str(path)],
        """
expectations:
- {type: row_count, min: 1}
- {type: null_rate, column: x, max: 0}
- {type: range, column: x, min: 0}
- {type: unique, column: x}
- {type: freshness, column: t, max_age: 1d}
""",
    )
    assert report.row_count == 0
    assert [r.success for r in report.results] == [False, True, True, True, False]
    assert report.results[4].message == (
        "column 't' has no values, so how fresh the data is is unknown"
    )


def test_an_inferred_suite_passes_on_the_data_it_came_from(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "data.parquet"
    con.sql(
        f"""COPY (
            SELECT i AS id, 'user-' || i AS name,
                   CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.5 END AS amount,
                   ['a', 'b', 'c'][1 + i % 3] AS category,
                   TIMESTAMP '2024-01-01' + INTERVAL (i) MINUTE AS at,
                   i % 2 = 0 AS even
            FROM range(5000) t(i)
        ) TO '{path}' (FORMAT parquet)"""
    ).fetchall()
    suite = infer_suite(profile_paths(con, [str(path)]))
    kinds = {(type(e).__name__, getattr(e, "column", None)) for e in suite.expectations}
    assert ("Unique", "id") in kinds
    assert ("AllowedValues", "category") in kinds
    report = validate_paths(con, [str(path)], suite)
    assert report.success, report.summary()
    assert report.row_count == 5000


def test_empty_suite(con: duckdb.DuckDBPyConnection, people: list[str]) -> None:
    report = validate_paths(con, people, ExpectationSuite(expectations=[RowCount(min=0)]))
    assert report.success and report.row_count == 8
    assert validate_paths(con, people, ExpectationSuite()).results == []
