"""The strict CSV checks take shortcuts for speed; each must say exactly what the full test
says. Checked here value by value against the plain regular expression and cast, and the
DOUBLE columns DuckDB's reader parses itself against TRY_CAST."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks.core.config import Settings
from modelworks.core.errors import InvalidInput
from modelworks.data import storage
from modelworks.data.sources.base import ScanContext, write_scan
from modelworks.data.sources.files import (
    CANDIDATES,
    CsvSource,
    Formats,
    candidate_test,
    choose_type,
    infer_sampled_types,
    strict_cast,
)

TRICKY = [
    "0", "5", "-5", "+5", " 5", "5 ", " 5 ", "\t7", "7\n", "007", "-0", "+0", "3.5", "3.0",
    "1e3", "1E3", "0x1F", "0b101", "1_000", "1,000", "99999999999999999999",
    "-9223372036854775808", "9223372036854775807", "9223372036854775808", "", " ", "abc",
    "true", "false", "TRUE", "False", " true ", "t", "f", "yes", "no", "y", "n", "1", "on",
    "2024-01-05", " 2024-01-05 ", "2024-1-5", "2024/01/05", "20240105", "2024-01-05 10:30",
    "2024-01-05T10:30:00Z", "2024-01-05 10:30:00+02:00", "2024-01-05 10:30:00.123456",
    "0044-03-15 (BC)", "infinity", "-infinity", "epoch", "10:30", "10:30:00", "25:00",
    "nan", "inf", "1.5", "\u0663", "\uff15", "2024-01-05 10:30:00", "2024-01-05 10:30:00 (BC)",
    "12024-01-05", "12024-01-05 10:30:00", "2024-02-30", "2024-01-05Z", "2024-01-05 10:30:00Z",
    "2024-01-05 10:30:00 +0200", "2024-01-05 10:30:00.5-05", "1970-01-01", "0001-01-01",
    "0000-01-01", "2024-01-05 00:00:00", "2024-01-05T10:30:00", "2024-01-05 10:30:00.120",
]  # fmt: skip

# The tests as they were before the shortcuts.
PLAIN_INT = r"(regexp_full_match({v}, '\s*[+-]?[0-9]+\s*') AND TRY_CAST({v} AS {t}) IS NOT NULL)"
PLAIN_DATE = (
    r"(regexp_full_match({v}, '\s*[0-9]{{4}}-[0-9]{{1,2}}-[0-9]{{1,2}}\s*') "
    "AND TRY_CAST({v} AS DATE) IS NOT NULL)"
)
PLAIN_TIMESTAMP = (
    "(TRY_CAST({v} AS TIMESTAMP) IS NOT NULL AND NOT regexp_matches({v}, "
    r"'[0-9]{{1,2}}:[0-9]{{2}}(:[0-9]{{2}}(\.[0-9]+)?)?\s*(Z|z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)\s*$'))"
)
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


@pytest.mark.parametrize(
    ("type_name", "plain"), [("DATE", PLAIN_DATE), ("TIMESTAMP", PLAIN_TIMESTAMP)]
)
def test_temporal_shortcuts_agree_with_the_full_tests(
    con: duckdb.DuckDBPyConnection, type_name: str, plain: str
) -> None:
    fast = candidate_test("x", type_name, Formats())
    rows = answers(con, fast, plain.format(v="x"))
    assert any(r[1] for r in rows) and not all(r[1] for r in rows)
    for row in rows:
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


def test_double_columns_parsed_by_the_reader_report_bad_values_like_the_checks(
    tmp_path: Path,
) -> None:
    """DOUBLE columns are parsed by DuckDB's CSV reader; its rejects read like the others."""
    path = tmp_path / "d.csv"
    good = "".join(f"{i},{i}.5,{i}.25,n{i}\n" for i in range(1, 60))
    path.write_text("id,amount,score,name\n" + good + "60,abc,xyz,n60\n61,x,2.5,n61\n")
    settings = Settings(home=tmp_path / "home")
    for bad_rows in ("fail", "quarantine"):
        con = storage.connect(settings)
        ctx = ScanContext(con=con, settings=settings, workdir=tmp_path / "w", bad_rows=bad_rows)
        try:
            scan = CsvSource(path=str(path)).scan(ctx)
            assert scan.relation is not None and scan.rejects is not None
            out = tmp_path / f"out-{bad_rows}"
            parts = storage.write_parts(con, scan.relation, out)
            if bad_rows == "fail":
                with pytest.raises(InvalidInput) as info:
                    scan.rejects()
                assert info.value.detail.startswith(f"csv {path}: 2 rows could not be read")
                assert (
                    f'{path} line 61: column "amount": value "abc" does not read as a DOUBLE; '
                    'column "score": value "xyz" does not read as a DOUBLE'
                ) in info.value.detail
                assert "columns={'amount': 'VARCHAR'}" in info.value.detail
            else:
                table = pq.read_table(parts[0])
                assert str(table.schema.field("amount").type) == "double"
                assert table.column("id").to_pylist() == list(range(1, 60))
                rejects = scan.rejects()
                assert rejects is not None and rejects.count == 2
                assert [(r["line"], r["column"]) for r in rejects.examples] == [
                    (61, "amount; score"),
                    (62, "amount"),
                ]
            if scan.close is not None:
                scan.close()
        finally:
            con.close()


def test_the_readers_double_parser_is_try_cast(tmp_path: Path) -> None:
    values = [
        "1.5", " 1.5 ", "1e3", "inf", "-inf", "nan", "NaN", "infinity", "1_000.5", "0x10",
        "1,5", ".5", "5.", "+1.5", "1.5e", "1d", "-0", "1e400", "1e-400", "\t2.5", "abc",
        "1__0", "_1", "1_", "Infinity", "+nan", "0001.000", "1 5", "\uff15", "4.9e-324",
    ]  # fmt: skip
    path = tmp_path / "v.csv"
    path.write_text("x\n" + "".join(f'"{v}"\n' for v in values))
    con = duckdb.connect()
    try:
        options = (
            "auto_detect = false, header = true, delim = ',', quote = '\"', escape = '\"', "
            "nullstr = [''], strict_mode = true"
        )
        parsed = con.sql(
            f"SELECT x FROM read_csv('{path}', {options}, columns = {{'x': 'DOUBLE'}}, "
            "store_rejects = true, rejects_table = 'rt', rejects_scan = 'rs', rejects_limit = 0)"
        ).fetchall()
        rejected = {r[0] - 2 for r in con.sql("SELECT line FROM rt").fetchall()}
        # x is selected too: alone in TRY_CAST, DuckDB would have the reader cast it.
        cast = con.sql(
            f"SELECT TRY_CAST(x AS DOUBLE), x FROM read_csv('{path}', {options}, "
            "columns = {'x': 'VARCHAR'})"
        ).fetchall()
    finally:
        con.close()
    kept = iter(parsed)
    for i, (value, _) in enumerate(cast):
        if i in rejected:
            assert value is None, values[i]
        else:
            got = next(kept)[0]
            assert got == value or (got != got and value != value), values[i]


def test_rejects_of_several_values_a_row_still_say_at_least(tmp_path: Path) -> None:
    # Two bad values a row make two rejects: DuckDB keeps 100 a file, so 50 rows are seen
    # of the 80 bad ones, and the message must not claim that 50 is all of them.
    path = tmp_path / "d.csv"
    good = "".join(f"{i},{i}.5,{i}.25\n" for i in range(1, 2001))
    bad = "".join(f"{i},x{i},y{i}\n" for i in range(2001, 2081))
    path.write_text("id,amount,score\n" + good + bad)
    settings = Settings(home=tmp_path / "home")
    con = storage.connect(settings)
    ctx = ScanContext(con=con, settings=settings, workdir=tmp_path / "w", bad_rows="fail")
    try:
        scan = CsvSource(path=str(path)).scan(ctx)
        assert scan.relation is not None and scan.rejects is not None
        storage.write_parts(con, scan.relation, tmp_path / "out")
        with pytest.raises(InvalidInput, match="at least 50 rows could not be read"):
            scan.rejects()
        if scan.close is not None:
            scan.close()
    finally:
        con.close()


def _brute_force_types(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str]
) -> dict[str, str]:
    """Every candidate counted on every sampled value: what the pruned inference must match."""
    out: dict[str, str] = {}
    for col in columns:
        v = f'"{col}"'
        tests = ", ".join(
            f"count_if({v} IS NOT NULL AND {candidate_test(v, t, Formats())})" for t in CANDIDATES
        )
        row = con.sql(f"SELECT count({v}), {tests} FROM {table}").fetchall()[0]
        out[col] = choose_type(
            int(row[0]), dict(zip(CANDIDATES, (int(c or 0) for c in row[1:]), strict=True))
        )
    return out


def test_inference_that_prunes_on_a_prefix_picks_what_counting_everything_picks() -> None:
    """Candidates are dropped when a prefix of the sample already fails them too often; the
    types must be the ones that counting every candidate on every value gives, including
    columns whose strays sit at the start, at the end, or make up just under or just over
    the share a type tolerates."""
    rows = 3000
    rng = random.Random(7)

    def column(make: Callable[[int], str | None]) -> list[str | None]:
        return [make(i) for i in range(rows)]

    def strays(share: float, at: str, good: Callable[[int], str]) -> list[str | None]:
        bad = int(rows * share)
        where = {"start": range(bad), "end": range(rows - bad, rows)}.get(at)
        chosen = set(where) if where is not None else set(rng.sample(range(rows), bad))
        return [("n/a" if i in chosen else good(i)) for i in range(rows)]

    def stamp(i: int) -> str:
        return f"2024-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00"

    data = {
        "ints": column(str),
        "floats": column(lambda i: f"{i / 7:.3f}"),
        "bools": column(lambda i: "true" if i % 3 else "false"),
        "dates": column(lambda i: f"2024-02-{1 + i % 28:02d}"),
        "stamps": column(stamp),
        "zoned": column(lambda i: stamp(i) + "+02:00"),
        "times": column(lambda i: f"{i % 24:02d}:{i % 60:02d}"),
        "text": column(lambda i: f"city_{i}"),
        "mostly_null": column(lambda i: str(i) if i % 50 == 0 else None),
        "null_then_text": column(lambda i: None if i < 2500 else f"x{i}"),
        "ints_4pct_strays_at_start": strays(0.04, "start", str),
        "ints_6pct_strays_at_start": strays(0.06, "start", str),
        "ints_6pct_strays_at_end": strays(0.06, "end", str),
        "dates_5pct_strays_spread": strays(0.05, "spread", lambda i: f"2024-03-{1 + i % 28:02d}"),
        "ints_then_floats": column(lambda i: str(i) if i < 2900 else f"{i}.5"),
        "floats_then_dates": column(lambda i: f"{i}.25" if i < 2000 else "2024-01-05"),
    }
    con = duckdb.connect()
    table = pa.table({k: pa.array(v, pa.string()) for k, v in data.items()})
    con.register("arrow_sample", table)
    con.execute("CREATE TABLE sample AS SELECT * FROM arrow_sample")
    columns = list(data)
    pruned = infer_sampled_types(con, "sample", columns, Formats())
    assert pruned == _brute_force_types(con, "sample", columns)
    # and the types are the ones a person would pick
    assert pruned["ints"] == "BIGINT" and pruned["text"] == "VARCHAR"
    assert pruned["ints_4pct_strays_at_start"] == "BIGINT"
    assert pruned["ints_6pct_strays_at_start"] == "VARCHAR"
    assert pruned["zoned"] == "TIMESTAMPTZ" and pruned["times"] == "TIME"


def _read_csv(
    path: Path, tmp_path: Path, bad_rows: str, **options: Any
) -> tuple[int, list[dict[str, Any]] | str, list[tuple[int, str]]]:
    """(COPY passes, rows or the error, rejected (line, column)s) of one CSV read the way
    the dataset service reads it."""
    settings = Settings(home=tmp_path / "home")
    con = storage.connect(settings)
    ctx = ScanContext(con=con, settings=settings, workdir=tmp_path / "w", bad_rows=bad_rows)  # type: ignore[arg-type]
    passes = 0

    def write(relation: duckdb.DuckDBPyRelation) -> list[Path]:
        nonlocal passes
        passes += 1
        out = tmp_path / f"out-{uuid.uuid4().hex[:8]}"
        return storage.write_parts(con, relation, out)

    scan = CsvSource(path=str(path), **options).scan(ctx)
    try:
        scan, parts = write_scan(scan, write)
        # As text: Python has no dates past 9999 nor infinite ones, which DuckDB keeps.
        types = [f"{f.name}: {f.type}" for f in pq.read_schema(parts[0])]
        values = con.sql(f"SELECT COLUMNS(*)::VARCHAR FROM read_parquet('{parts[0]}')")
        rows = [{"types": types}] + [
            dict(zip(values.columns, r, strict=True)) for r in values.fetchall()
        ]
        try:
            rejects = scan.rejects() if scan.rejects is not None else None
        except InvalidInput as exc:
            return passes, exc.detail, []
        found = [(int(r["line"]), str(r["column"])) for r in rejects.examples] if rejects else []
        return passes, rows, found
    finally:
        if scan.close is not None:
            scan.close()
        con.close()


GOOD_ROWS = 200  # before the tricky ones; the small sample sees only good values


def _tricky_csv(path: Path, tricky: list[tuple[str, str, str]]) -> Path:
    lines = ["flag,day,at"]
    for i in range(GOOD_ROWS):
        lines.append(f"{'true' if i % 2 else 'false'},2024-02-{1 + i % 28:02d},"
                     f"2024-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00")  # fmt: skip
    lines += [",".join(f'"{v}"' for v in row) for row in tricky]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("bad_rows", ["quarantine", "fail"])
@pytest.mark.parametrize(
    "tricky",
    [
        # spellings the reader refuses but the checks take: read again as text, all kept
        [(" y ", "2024-1-5", "2024-01-05T10:30:00"), ("YES", " 2024-01-06", "2024-01-05")],
        [("n", "2024-01-07", "2024-01-05 10:30:00.5"), ("1", "2024-01-07", " 2024-01-05 10:30:00")],
        # values the reader takes but the checks refuse (or keep differently)
        [("true", "infinity", "2024-01-05 10:30:00"), ("true", "12024-01-05", "infinity")],
        [("false", "2024-01-05", "12024-01-05 10:30:00")],
        # values nobody takes: bad rows either way, with the same lines
        [("maybe", "2024-01-05", "2024-01-05 10:30:00+02"), ("true", "x", "y")],
        [("2", "2024-13-01", "2024-01-05 25:00:00")],
    ],
)
def test_columns_the_reader_parses_itself_end_as_the_checks_would_have_them(
    tmp_path: Path, bad_rows: str, tricky: list[tuple[str, str, str]]
) -> None:
    """BOOLEAN, DATE and TIMESTAMP columns whose sample is in one plain spelling are parsed
    by DuckDB's reader, skipping their text and checks. Whatever comes later in the file,
    the rows, the values and the bad rows must be exactly those of the careful read (here
    forced by sampling every row, which sees the tricky values and so reads them as text)."""
    path = _tricky_csv(tmp_path / "t.csv", tricky)
    # Declared, so that the whole sample cannot choose other types (it would read a column
    # of dates with one "infinity" as timestamps).
    types = {"flag": "BOOLEAN", "day": "DATE", "at": "TIMESTAMP"}
    fast = _read_csv(path, tmp_path / "a", bad_rows, sample_size=50, columns=types)
    careful = _read_csv(path, tmp_path / "b", bad_rows, sample_size=-1, columns=types)
    assert careful[0] == 1  # the careful read never retries
    assert fast[1:] == careful[1:]
    assert fast[0] == 2  # the reader's parse was undone once


def test_clean_columns_are_parsed_by_the_reader_in_one_pass(tmp_path: Path) -> None:
    path = _tricky_csv(tmp_path / "t.csv", [("true", "2024-01-05", "2024-01-05 10:30:00")])
    passes, rows, bad = _read_csv(path, tmp_path, "fail")
    assert passes == 1 and bad == []
    assert isinstance(rows, list) and len(rows) == 1 + GOOD_ROWS + 1
    assert rows[0] == {"types": ["flag: bool", "day: date32[day]", "at: timestamp[us]"]}
    assert rows[-1] == {"flag": "true", "day": "2024-01-05", "at": "2024-01-05 10:30:00"}


def test_many_bad_rows_in_a_column_the_reader_parses_read_again_carefully(
    tmp_path: Path,
) -> None:
    """When the ingest will fail anyway DuckDB keeps only the first rejects of a file; the
    refusals it dropped may have been values the checks take, so the read is redone."""
    tricky = [("true", "x", "2024-01-05 10:30:00")] * 120 + [(" y ", "2024-01-05", "z")]
    path = _tricky_csv(tmp_path / "t.csv", tricky)
    fast = _read_csv(path, tmp_path / "a", "fail", sample_size=50)
    careful = _read_csv(path, tmp_path / "b", "fail", sample_size=-1, columns={"day": "DATE"})
    assert fast[0] == 2 and fast[1:] == careful[1:]
    assert isinstance(fast[1], str) and "121 rows could not be read" in fast[1]
