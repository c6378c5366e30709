"""The strict CSV checks take shortcuts for speed; each must say exactly what the full test
says. Checked here value by value against the plain regular expression and cast."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from modelworks.data.sources.files import Formats, candidate_test, strict_cast

TRICKY = [
    "0", "5", "-5", "+5", " 5", "5 ", " 5 ", "\t7", "7\n", "007", "-0", "+0", "3.5", "3.0",
    "1e3", "1E3", "0x1F", "0b101", "1_000", "1,000", "99999999999999999999",
    "-9223372036854775808", "9223372036854775807", "9223372036854775808", "", " ", "abc",
    "true", "false", "TRUE", "False", " true ", "t", "f", "yes", "no", "y", "n", "1", "on",
    "2024-01-05", " 2024-01-05 ", "2024-1-5", "2024/01/05", "20240105", "2024-01-05 10:30",
    "2024-01-05T10:30:00Z", "2024-01-05 10:30:00+02:00", "2024-01-05 10:30:00.123456",
    "0044-03-15 (BC)", "infinity", "-infinity", "epoch", "10:30", "10:30:00", "25:00",
    "nan", "inf", "1.5", "\u0663", "\uff15",
]  # fmt: skip

# The tests as they were before the shortcuts.
PLAIN_INT = r"(regexp_full_match({v}, '\s*[+-]?[0-9]+\s*') AND TRY_CAST({v} AS {t}) IS NOT NULL)"
PLAIN_BOOL = "lower(trim({v})) IN ('true', 'false')"
PLAIN_BOOL_ANY = "lower(trim({v})) IN ('true', 'false', 't', 'f', 'yes', 'no', 'y', 'n', '1', '0')"


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    values = ", ".join("(" + "'" + v.replace("'", "''") + "')" for v in TRICKY)
    connection.execute(f"CREATE TABLE t AS SELECT * FROM (VALUES {values}) v(x)")
    yield connection
    connection.close()


def answers(con: duckdb.DuckDBPyConnection, *exprs: str) -> list[tuple[object, ...]]:
    return con.sql(f"SELECT x, {', '.join(exprs)} FROM t ORDER BY x").fetchall()


@pytest.mark.parametrize("type_name", ["BIGINT", "INTEGER", "SMALLINT", "UBIGINT", "HUGEINT"])
def test_integer_shortcut_agrees_with_the_full_test(
    con: duckdb.DuckDBPyConnection, type_name: str
) -> None:
    fast = candidate_test("x", type_name, Formats())
    plain = PLAIN_INT.format(v="x", t=type_name)
    for row in answers(con, fast, plain):
        assert row[1] == row[2], row


def test_boolean_shortcuts_agree_with_the_full_tests(con: duckdb.DuckDBPyConnection) -> None:
    fast = candidate_test("x", "BOOLEAN", Formats())
    ok, _ = strict_cast("x", "BOOLEAN", Formats())
    for row in answers(con, fast, PLAIN_BOOL.format(v="x"), ok, PLAIN_BOOL_ANY.format(v="x")):
        assert row[1] == row[2] and row[3] == row[4], row


@pytest.mark.parametrize("type_name", ["BIGINT", "INTEGER", "DATE", "TIME"])
def test_untrimmed_casts_read_the_same_values(
    con: duckdb.DuckDBPyConnection, type_name: str
) -> None:
    """Where the check passes, the value cast without trim() is the trimmed one."""
    ok, value = strict_cast("x", type_name, Formats())
    assert "trim" not in value
    rows = answers(con, ok, value, f"TRY_CAST(trim(x) AS {type_name})")
    assert any(r[1] for r in rows)  # the list has good values of every type
    for row in rows:
        if row[1]:
            assert row[2] == row[3], row
