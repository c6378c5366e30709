"""File sources against real DuckDB, real files in tmp_path and a real S3 (moto) server.

Each test scans a source the way the dataset service does: ``scan``, one ``write_parts``
COPY, then ``rejects()`` and ``close()``; the Parquet written is read back with pyarrow.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks.core.config import Settings
from modelworks.core.errors import InvalidInput, NotFound
from modelworks.data import storage
from modelworks.data.schemas import BadRows
from modelworks.data.sources.base import (
    Rejects,
    ScanContext,
    Source,
    source_from_spec,
    write_scan,
)
from modelworks.data.sources.files import (
    CsvSource,
    ExcelSource,
    JsonSource,
    ParquetSource,
    TsvSource,
    choose_type,
)


@dataclass
class Result:
    table: pa.Table
    rejects: Rejects | None

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    def column(self, name: str) -> list[Any]:
        values: list[Any] = self.table.column(name).to_pylist()
        return values

    def types(self) -> dict[str, str]:
        return {f.name: str(f.type) for f in self.table.schema}


def ingest(
    src: Source, settings: Settings, tmp_path: Path, *, bad_rows: BadRows = "fail"
) -> Result:
    """What DataService.ingest does with a source, minus the catalog."""
    con = storage.connect(settings)
    ctx = ScanContext(con=con, settings=settings, workdir=tmp_path / "w", bad_rows=bad_rows)
    try:
        scan = src.scan(ctx)
        try:
            out = tmp_path / f"out-{uuid.uuid4().hex[:8]}"
            scan, parts = write_scan(scan, lambda rel: storage.write_parts(con, rel, out))
            table = pa.concat_tables([pq.read_table(p) for p in parts])
            rejects = scan.rejects() if scan.rejects is not None else None
        finally:
            if scan.close is not None:
                scan.close()
    finally:
        con.close()
    return Result(table.replace_schema_metadata(None), rejects)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def side_rows(rejects: Rejects) -> list[dict[str, str]]:
    assert rejects.side_file is not None
    with rejects.side_file.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def numbers_csv(rows: int, bad: dict[int, str] | None = None) -> str:
    """``id,amount,name`` with ``amount = id * 10``; ``bad`` replaces whole data rows by
    their 1-based data-row number (the file line is that number + 1)."""
    lines = ["id,amount,name"]
    for i in range(1, rows + 1):
        lines.append((bad or {}).get(i, f"{i},{i * 10},n{i}"))
    return "\n".join(lines) + "\n"


# ---- CSV: reading -------------------------------------------------------------------------


def test_csv_types_values_label_and_describe(settings: Settings, tmp_path: Path) -> None:
    path = write(
        tmp_path / "churn.csv",
        "id,score,active,signup,seen_at,seen_utc,city\n"
        "1,0.5,true,2024-01-05,2024-01-05 10:30:00,2024-01-05T10:30:00Z,Paris\n"
        "2,1.25,false,2024-02-29,2024-02-29 00:00:01,2024-02-29T00:00:01+02:00,\n"
        '3,-3,true,2023-12-31,2023-12-31 23:59:59,2023-12-31T23:59:59Z,"Rio, BR"\n',
    )
    src = CsvSource(path=str(path))
    result = ingest(src, settings, tmp_path)
    assert result.types() == {
        "id": "int64",
        "score": "double",
        "active": "bool",
        "signup": "date32[day]",
        "seen_at": "timestamp[us]",
        "seen_utc": "timestamp[us, tz=UTC]",
        "city": "string",
    }
    assert result.column("id") == [1, 2, 3]
    assert result.column("score") == [0.5, 1.25, -3.0]
    assert result.column("active") == [True, False, True]
    assert result.column("signup") == [
        dt.date(2024, 1, 5),
        dt.date(2024, 2, 29),
        dt.date(2023, 12, 31),
    ]
    assert result.column("seen_at")[0] == dt.datetime(2024, 1, 5, 10, 30)
    utc = result.column("seen_utc")
    assert utc[1] == dt.datetime(2024, 2, 28, 22, 0, 1, tzinfo=dt.UTC)
    assert result.column("city") == ["Paris", None, "Rio, BR"]
    assert result.rejects is None
    assert src.label() == f"csv {path}"
    described = src.describe()
    assert described["kind"] == "csv" and described["path"] == str(path)
    assert json.loads(json.dumps(described)) == described


def test_csv_relative_path_is_kept_as_given(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "data" / "churn.csv", "a,b\n1,x\n")
    monkeypatch.chdir(tmp_path)
    src = CsvSource(path="data/churn.csv", filename=True)
    assert src.label() == "csv data/churn.csv"
    assert src.describe()["path"] == "data/churn.csv"
    result = ingest(src, settings, tmp_path)
    assert result.rows() == [{"a": 1, "b": "x", "filename": "data/churn.csv"}]


def test_csv_delimiters_detected_and_tsv_kind(settings: Settings, tmp_path: Path) -> None:
    semi = write(tmp_path / "eu.csv", "id;price;label\n1;2,5;a,b\n2;3,0;c\n")
    result = ingest(CsvSource(path=str(semi)), settings, tmp_path)
    # Decimal commas are not numbers: the column stays text rather than losing digits.
    assert result.rows() == [
        {"id": 1, "price": "2,5", "label": "a,b"},
        {"id": 2, "price": "3,0", "label": "c"},
    ]
    pipe = write(tmp_path / "p.csv", "a|b\n1|x\n2|y\n")
    assert ingest(CsvSource(path=str(pipe)), settings, tmp_path).column("b") == ["x", "y"]

    tsv = write(tmp_path / "t.tsv", 'id\tquote\n1\tsay "hi", ok\n2\tplain\n')
    src = source_from_spec({"kind": "tsv", "path": str(tsv)})
    assert isinstance(src, TsvSource) and isinstance(src, CsvSource)
    assert src.delimiter == "\t"
    assert ingest(src, settings, tmp_path).column("quote") == ['say "hi", ok', "plain"]
    # An explicit delimiter wins over detection (here wrongly: the rows have more fields).
    forced = CsvSource(path=str(semi), delimiter=",")
    with pytest.raises(InvalidInput, match="line 2: expected 1 columns, found 3\n"):
        ingest(forced, settings, tmp_path)


def test_csv_quotes_escapes_and_embedded_newlines(settings: Settings, tmp_path: Path) -> None:
    rfc = write(
        tmp_path / "q.csv",
        'id,text\n1,"a, ""quoted"" word"\n2,"two\nlines"\n3,plain\n',
    )
    result = ingest(CsvSource(path=str(rfc)), settings, tmp_path)
    assert result.column("text") == ['a, "quoted" word', "two\nlines", "plain"]

    backslash = write(tmp_path / "b.csv", 'id,text\n1,"say \\"hi\\""\n2,"c,d"\n')
    src = CsvSource(path=str(backslash), escape="\\")
    assert ingest(src, settings, tmp_path).column("text") == ['say "hi"', "c,d"]

    single = write(tmp_path / "s.csv", "id,text\n1,'a,b'\n2,'it''s'\n")
    src = CsvSource(path=str(single), quote="'")
    assert ingest(src, settings, tmp_path).column("text") == ["a,b", "it's"]

    unquoted = write(tmp_path / "u.csv", 'id,text\n1,"raw\n')
    src = CsvSource(path=str(unquoted), quote="")
    assert ingest(src, settings, tmp_path).column("text") == ['"raw']


def test_csv_header_options_names_skip_nulls_and_formats(
    settings: Settings, tmp_path: Path
) -> None:
    bare = write(tmp_path / "bare.csv", "1,x\n2,y\n")
    result = ingest(CsvSource(path=str(bare), header=False), settings, tmp_path)
    assert result.rows() == [{"column0": 1, "column1": "x"}, {"column0": 2, "column1": "y"}]
    named = CsvSource(path=str(bare), header=False, names=["id", "code"])
    assert ingest(named, settings, tmp_path).table.column_names == ["id", "code"]
    with pytest.raises(InvalidInput, match=r"names lists 3 columns but .* has 2"):
        ingest(CsvSource(path=str(bare), header=False, names=["a", "b", "c"]), settings, tmp_path)

    report = write(
        tmp_path / "report.csv",
        "exported by tool v2\n\n"
        "day,when,amount,Amount\n"
        "05/01/2024,05/01/2024 13:45,NA,1\n"
        "06/01/2024,06/01/2024 08:00,12,2\n",
    )
    src = CsvSource(
        path=str(report),
        skip_rows=2,
        null_values=["", "NA"],
        date_format="%d/%m/%Y",
        timestamp_format="%d/%m/%Y %H:%M",
    )
    result = ingest(src, settings, tmp_path)
    # Repeated names (compared without case, like DuckDB) get a suffix.
    assert result.table.column_names == ["day", "when", "amount", "Amount_1"]
    assert result.column("day") == [dt.date(2024, 1, 5), dt.date(2024, 1, 6)]
    assert result.column("when") == [dt.datetime(2024, 1, 5, 13, 45), dt.datetime(2024, 1, 6, 8)]
    assert result.column("amount") == [None, 12]


def test_csv_declared_column_types(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "zip.csv", "zip,amount,ok\n02134,10,yes\n10001,11,no\n")
    src = CsvSource(
        path=str(path), columns={"ZIP": "varchar", "amount": "DECIMAL(10,2)", "ok": "BOOLEAN"}
    )
    result = ingest(src, settings, tmp_path)
    assert result.column("zip") == ["02134", "10001"]
    assert str(result.table.schema.field("amount").type) == "decimal128(10, 2)"
    assert result.column("ok") == [True, False]
    with pytest.raises(InvalidInput, match=r"columns\['zip'\]: unknown type 'NUMBERZ'"):
        ingest(CsvSource(path=str(path), columns={"zip": "NUMBERZ"}), settings, tmp_path)
    with pytest.raises(
        InvalidInput,
        match=r"'zipcode' is not a column of csv .*zip\.csv; its columns: zip, amount, ok\.",
    ):
        ingest(CsvSource(path=str(path), columns={"zipcode": "VARCHAR"}), settings, tmp_path)
    with pytest.raises(InvalidInput, match="not a type name"):
        ingest(
            CsvSource(path=str(path), columns={"zip": "int); DROP TABLE x; --"}), settings, tmp_path
        )


def test_csv_encodings(settings: Settings, tmp_path: Path) -> None:
    text = "id,name\n1,Zoë\n2,Ångström\n"
    latin = write(tmp_path / "latin.csv", text, "latin-1")
    src = CsvSource(path=str(latin), encoding="latin-1")
    assert ingest(src, settings, tmp_path).column("name") == ["Zoë", "Ångström"]
    utf16 = write(tmp_path / "u16.csv", text, "utf-16")
    src = CsvSource(path=str(utf16), encoding="utf-16")
    assert ingest(src, settings, tmp_path).column("name") == ["Zoë", "Ångström"]
    bom = write(tmp_path / "bom.csv", "\ufeff" + text)
    assert ingest(CsvSource(path=str(bom)), settings, tmp_path).table.column_names == ["id", "name"]


@pytest.mark.parametrize("bad_rows", ["fail", "quarantine"])
def test_csv_wrong_encoding_fails_with_a_hint(
    settings: Settings, tmp_path: Path, bad_rows: BadRows
) -> None:
    early = write(tmp_path / "early.csv", "id,name\n1,Zoë\n", "latin-1")
    with pytest.raises(InvalidInput, match=r"early\.csv is not valid utf-8 .*encoding='latin-1'"):
        ingest(CsvSource(path=str(early)), settings, tmp_path, bad_rows=bad_rows)
    # Past the first 64 KB only DuckDB's reader sees the bad bytes; quarantining them would
    # quietly drop every row with an accent, so both modes fail.
    body = "".join(f"{i},name{i}\n" for i in range(10_000))
    late = write(tmp_path / "late.csv", "id,name\n" + body + "10000,Zoë\n", "latin-1")
    with pytest.raises(InvalidInput, match=r"late\.csv is not valid utf-8 .*line 10002"):
        ingest(CsvSource(path=str(late)), settings, tmp_path, bad_rows=bad_rows)


def test_csv_folder_glob_union_by_name_and_filename(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    write(folder / "2024-01-02.csv", "id,amount\n3,30\n")
    write(folder / "2024-01-01.csv", "id,amount\n1,10\n2,20\n")
    write(folder / "2024-01-03.csv", "amount,id,note\n40,4,late\n")
    write(folder / "notes.txt", "not,data\n")
    write(folder / ".hidden.csv", "id\n999\n")
    write(folder / "sub" / "2024-02-01.csv", "id,amount\n5,50\n")

    result = ingest(CsvSource(path=str(folder), filename="source_file"), settings, tmp_path)
    assert result.table.column_names == ["id", "amount", "note", "source_file"]
    assert result.column("id") == [1, 2, 3, 4]  # files in name order; no subfolder, no hidden
    assert result.column("note") == [None, None, None, "late"]
    assert [Path(p).name for p in result.column("source_file")] == [
        "2024-01-01.csv", "2024-01-01.csv", "2024-01-02.csv", "2024-01-03.csv",
    ]  # fmt: skip

    globbed = ingest(CsvSource(path=str(folder / "2024-01-0[12].csv")), settings, tmp_path)
    assert globbed.column("id") == [1, 2, 3]
    recursive = ingest(CsvSource(path=str(folder / "**" / "*.csv")), settings, tmp_path)
    assert recursive.column("id") == [1, 2, 3, 4, 5]

    with pytest.raises(InvalidInput, match="already has a column 'amount'"):
        ingest(CsvSource(path=str(folder), filename="amount"), settings, tmp_path)


def test_csv_gzip_and_crlf(settings: Settings, tmp_path: Path) -> None:
    gz = tmp_path / "z.csv.gz"
    gz.write_bytes(gzip.compress(b"id,name\n1,a\n2,b\n"))
    assert ingest(CsvSource(path=str(gz)), settings, tmp_path).column("name") == ["a", "b"]

    crlf = write(tmp_path / "win.csv", "id,v\r\n1,2\r\n2,x\r\n3,4\r\n")
    with pytest.raises(InvalidInput, match=r"win\.csv line 3: column \"v\""):
        ingest(CsvSource(path=str(crlf), columns={"v": "BIGINT"}), settings, tmp_path)


# ---- CSV: strictness ----------------------------------------------------------------------


def test_duckdb_alone_would_widen_pad_and_round(tmp_path: Path) -> None:
    """The quirks the CSV source exists to avoid, shown on plain DuckDB 2.0."""
    path = write(
        tmp_path / "q.csv",
        numbers_csv(30, {10: "10,abc,n10", 20: "20,200"}) + "31,3.5,n31\n",
    )
    con = duckdb.connect()
    try:
        # One short row and the sniffer gives up on the dialect: each line is one value.
        collapsed = con.sql(f"DESCRIBE SELECT * FROM read_csv('{path}')").fetchall()
        assert [(r[0], r[1]) for r in collapsed] == [("id,amount,name", "VARCHAR")]
        widened = con.sql(
            f"DESCRIBE SELECT * FROM read_csv('{path}', null_padding = true)"
        ).fetchall()
        assert dict((r[0], r[1]) for r in widened)["amount"] == "VARCHAR"
        padded = con.sql(
            f"SELECT name FROM read_csv('{path}', null_padding = true) WHERE id = 20"
        ).fetchall()
        assert padded == [(None,)]
        rounded = con.sql(
            f"SELECT amount FROM read_csv('{path}', types = {{'amount': 'BIGINT'}}, "
            "ignore_errors = true) WHERE id = 31"
        ).fetchall()
        assert rounded == [(4,)]
    finally:
        con.close()


def test_csv_bad_rows_fail_with_line_numbers(settings: Settings, tmp_path: Path) -> None:
    path = write(
        tmp_path / "orders.csv",
        numbers_csv(
            60,
            {
                7: "7,70,n7,extra",  # too many fields (line 8)
                12: "12,120",  # too few: never padded with NULL (line 13)
                30: "30,abc,n30",  # a stray in a number column (line 31)
            },
        ),
    )
    with pytest.raises(InvalidInput) as info:
        ingest(CsvSource(path=str(path)), settings, tmp_path)
    message = info.value.detail
    assert message.startswith(f"csv {path}: 3 rows could not be read, so nothing was ingested.")
    assert f"{path} line 8: expected 3 columns, found 4" in message
    assert f"{path} line 13: expected 3 columns, found 2" in message
    assert f'{path} line 31: column "amount": value "abc" does not read as a BIGINT' in message
    assert 'bad_rows="quarantine"' in message and "--bad-rows quarantine" in message
    assert "columns={'amount': 'VARCHAR'}" in message
    assert [b["line"] for b in info.value.extra["bad_rows"]] == [8, 13, 31]


def test_csv_many_bad_rows_fail_fast_to_read(settings: Settings, tmp_path: Path) -> None:
    # A wrong delimiter makes every row bad; DuckDB keeps only the first rejects per file.
    path = write(tmp_path / "wide.csv", "a,b\n" + "1,2,3\n" * 500)
    with pytest.raises(InvalidInput) as info:
        ingest(CsvSource(path=str(path), delimiter=","), settings, tmp_path)
    assert "at least 100 rows could not be read" in info.value.detail
    assert "... and 95 more" in info.value.detail
    result = ingest(CsvSource(path=str(path)), settings, tmp_path, bad_rows="quarantine")
    assert result.table.num_rows == 0
    assert result.rejects is not None and result.rejects.count == 500
    assert len(side_rows(result.rejects)) == 500


def test_csv_no_widening_no_rounding_no_truncation(settings: Settings, tmp_path: Path) -> None:
    # "3.5" after the sample: DuckDB's BIGINT cast would store 4.
    rounded = write(tmp_path / "r.csv", numbers_csv(50, {45: "45,3.5,n45"}))
    with pytest.raises(
        InvalidInput, match=r'line 46: column "amount": value "3.5" does not read as a BIGINT'
    ):
        ingest(CsvSource(path=str(rounded), sample_size=10), settings, tmp_path)
    # A declared BIGINT is just as strict.
    with pytest.raises(InvalidInput, match="line 46"):
        ingest(CsvSource(path=str(rounded), columns={"amount": "BIGINT"}), settings, tmp_path)
    # A time of day after the sample: DuckDB's DATE cast would drop it.
    dates = "day\n" + "".join(f"2024-01-{d:02d}\n" for d in range(1, 21)) + "2024-01-21 10:30\n"
    truncated = write(tmp_path / "d.csv", dates)
    with pytest.raises(InvalidInput, match=r'line 22: column "day": value "2024-01-21 10:30"'):
        ingest(CsvSource(path=str(truncated), sample_size=5), settings, tmp_path)
    # Within the sample the time widens the column to TIMESTAMP instead; nothing is lost.
    result = ingest(CsvSource(path=str(truncated)), settings, tmp_path)
    assert result.types() == {"day": "timestamp[us]"}
    assert result.column("day")[-1] == dt.datetime(2024, 1, 21, 10, 30)


def test_csv_stray_share_decides_text_or_number(settings: Settings, tmp_path: Path) -> None:
    others = dict.fromkeys(("BOOLEAN", "DATE", "TIMESTAMP", "TIMESTAMPTZ", "TIME"), 0)
    assert choose_type(100, others | {"BIGINT": 95, "DOUBLE": 95}) == "BIGINT"
    assert choose_type(100, others | {"BIGINT": 94, "DOUBLE": 94}) == "VARCHAR"
    assert choose_type(100, others | {"BIGINT": 90, "DOUBLE": 100}) == "DOUBLE"
    assert choose_type(0, {}) == "VARCHAR"
    # Chromosome names are mostly numbers but "X" and "Y" are a tenth of them: text.
    genes = "chrom,pos\n" + "".join(f"{c},{i}\n" for i, c in enumerate([*range(1, 19), "X", "Y"]))
    result = ingest(CsvSource(path=str(write(tmp_path / "g.csv", genes))), settings, tmp_path)
    assert result.types() == {"chrom": "string", "pos": "int64"}
    assert result.column("chrom")[-2:] == ["X", "Y"]


def test_csv_null_like_strays_suggest_null_values(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "na.csv", numbers_csv(40, {3: "3,N/A,n3"}))
    with pytest.raises(InvalidInput, match=r"null_values=\['', 'N/A'\]"):
        ingest(CsvSource(path=str(path)), settings, tmp_path)
    result = ingest(CsvSource(path=str(path), null_values=["", "N/A"]), settings, tmp_path)
    assert result.column("amount")[:4] == [10, 20, None, 40]


def test_csv_unterminated_quote_fails_naming_its_line(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "u.csv", 'id,name\n1,a\n2,"never closed\n3,c\n4,d\n')
    with pytest.raises(InvalidInput) as info:
        ingest(CsvSource(path=str(path)), settings, tmp_path)
    assert f"{path} line 3: unterminated quote" in info.value.detail
    result = ingest(CsvSource(path=str(path)), settings, tmp_path, bad_rows="quarantine")
    assert result.column("id") == [1]  # the open quote swallowed the rest of the file
    assert result.rejects is not None and result.rejects.count == 1
    assert side_rows(result.rejects)[0]["raw_line"].startswith('2,"never closed')


def test_csv_quarantine_keeps_exactly_the_good_rows(settings: Settings, tmp_path: Path) -> None:
    bad = {
        5: "5,50,n5,x",
        9: "9,ninety,n9",
        17: "17,170",
        41: "41,4.5,n41",
        42: '42,"4,2",n42',
    }
    path = write(tmp_path / "orders.csv", numbers_csv(50, bad))
    # Types come from the first 30 rows, so "4.5" and "4,2" are strays found after them.
    src = CsvSource(path=str(path), sample_size=30)
    result = ingest(src, settings, tmp_path, bad_rows="quarantine")
    good = [i for i in range(1, 51) if i not in bad]
    assert result.column("id") == good
    assert result.column("amount") == [i * 10 for i in good]
    assert result.types()["amount"] == "int64"

    rejects = result.rejects
    assert rejects is not None and rejects.count == 5
    assert rejects.side_file is not None and rejects.side_file.parent == tmp_path / "w"
    rows = side_rows(rejects)
    assert list(rows[0]) == ["file", "line", "column", "error", "raw_line"]
    assert [int(r["line"]) for r in rows] == [6, 10, 18, 42, 43]
    assert [r["raw_line"] for r in rows] == [bad[5], bad[9], bad[17], bad[41], bad[42]]
    assert {r["file"] for r in rows} == {str(path)}
    assert rows[1]["column"] == "amount"
    assert rows[1]["error"] == 'column "amount": value "ninety" does not read as a BIGINT'
    assert rows[2]["error"] == "expected 3 columns, found 2"
    assert len(rejects.examples) == 5
    assert rejects.examples[0]["line"] == 6


def test_csv_quarantine_across_files_and_a_large_file(settings: Settings, tmp_path: Path) -> None:
    n = 200_000
    write(tmp_path / "big" / "a.csv", numbers_csv(n, {n: f"{n},oops,n{n}"}))
    write(tmp_path / "big" / "b.csv", numbers_csv(3, {2: "2,20"}))
    src = CsvSource(path=str(tmp_path / "big" / "*.csv"))
    result = ingest(src, settings, tmp_path, bad_rows="quarantine")
    assert result.table.num_rows == (n - 1) + 2
    assert result.rejects is not None and result.rejects.count == 2
    got = [(Path(r["file"]).name, int(r["line"])) for r in side_rows(result.rejects)]
    assert got == [("a.csv", n + 1), ("b.csv", 3)]


def test_csv_quarantine_with_nothing_bad_returns_none(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "ok.csv", numbers_csv(3))
    result = ingest(CsvSource(path=str(path)), settings, tmp_path, bad_rows="quarantine")
    assert result.table.num_rows == 3 and result.rejects is None


def test_csv_mixed_line_endings_fail(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.csv", "skip me\nid,name\r\n1,a\r\n2,b\r\n")
    with pytest.raises(InvalidInput, match=r"mixed\.csv mixes line endings \(\\n and \\r\\n\)"):
        ingest(CsvSource(path=str(path), skip_rows=1), settings, tmp_path)
    # A line feed inside a quoted value of a Windows file is data, not a line ending.
    ok = write(tmp_path / "excel.csv", 'id,note\r\n1,"two\nlines"\r\n2,x\r\n')
    assert ingest(CsvSource(path=str(ok)), settings, tmp_path).column("note") == ["two\nlines", "x"]


# ---- CSV: nothing to read -----------------------------------------------------------------


def test_csv_empty_header_only_and_missing(settings: Settings, tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(InvalidInput, match=r"empty\.csv is empty \(0 bytes\)"):
        ingest(CsvSource(path=str(empty)), settings, tmp_path)
    header = write(tmp_path / "header.csv", "id,name\n\n")
    with pytest.raises(InvalidInput, match=r"header\.csv has no rows below its header"):
        ingest(CsvSource(path=str(header)), settings, tmp_path)
    with pytest.raises(NotFound, match=r"'.*nope\.csv' does not exist"):
        ingest(CsvSource(path=str(tmp_path / "nope.csv")), settings, tmp_path)
    with pytest.raises(NotFound, match=r"No files match '.*\*\.parquet'"):
        ingest(CsvSource(path=str(tmp_path / "*.parquet")), settings, tmp_path)
    write(tmp_path / "docs" / "readme.md", "hello")
    with pytest.raises(NotFound, match=r"Folder '.*docs' has no \.csv"):
        ingest(CsvSource(path=str(tmp_path / "docs")), settings, tmp_path)
    with pytest.raises(InvalidInput, match="file sources read local paths and s3:// URLs"):
        ingest(CsvSource(path="https://example.com/x.csv"), settings, tmp_path)

    # Empty and header-only files among others are skipped.
    write(tmp_path / "mix" / "a.csv", "")
    write(tmp_path / "mix" / "b.csv", "id,name\n")
    write(tmp_path / "mix" / "c.csv", "id,name\n7,g\n")
    result = ingest(CsvSource(path=str(tmp_path / "mix")), settings, tmp_path)
    assert result.rows() == [{"id": 7, "name": "g"}]
    write(tmp_path / "hollow" / "a.csv", "")
    write(tmp_path / "hollow" / "b.csv", "id\n")
    with pytest.raises(InvalidInput, match=r"b\.csv has no rows"):
        ingest(CsvSource(path=str(tmp_path / "hollow")), settings, tmp_path)


def test_csv_parameters_are_validated() -> None:
    with pytest.raises(InvalidInput, match=r"delimiter: .*one character"):
        source_from_spec({"kind": "csv", "path": "x.csv", "delimiter": ";;"})
    with pytest.raises(InvalidInput, match="sample_size"):
        source_from_spec({"kind": "csv", "path": "x.csv", "sample_size": 0})
    with pytest.raises(InvalidInput, match="encoding"):
        source_from_spec({"kind": "csv", "path": "x.csv", "encoding": "cp1252"})
    with pytest.raises(InvalidInput, match="delimiter and quote must differ"):
        source_from_spec({"kind": "csv", "path": "x.csv", "delimiter": "'", "quote": "'"})
    src = source_from_spec({"kind": "csv", "path": "x.csv", "columns": {"a": "INT"}})
    assert isinstance(src, CsvSource) and src.columns == {"a": "INT"}


# ---- Parquet ------------------------------------------------------------------------------


def test_parquet_file_folder_glob_columns(settings: Settings, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "year=2023").mkdir(parents=True)
    (lake / "year=2024").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2], "v": [0.5, 1.5]}), lake / "year=2023" / "p0.parquet")
    pq.write_table(
        pa.table({"id": [3], "v": [2.5], "extra": ["x"]}), lake / "year=2024" / "p0.parquet"
    )
    (lake / "_SUCCESS").write_text("")

    one = ingest(ParquetSource(path=str(lake / "year=2023" / "p0.parquet")), settings, tmp_path)
    assert one.rows() == [{"id": 1, "v": 0.5, "year": 2023}, {"id": 2, "v": 1.5, "year": 2023}]

    folder = ingest(ParquetSource(path=str(lake)), settings, tmp_path)
    assert folder.column("id") == [1, 2, 3]
    assert folder.column("extra") == [None, None, "x"]
    assert folder.column("year") == [2023, 2023, 2024]

    picked = ParquetSource(path=str(lake / "*" / "*.parquet"), columns=["V", "id"], filename=True)
    result = ingest(picked, settings, tmp_path)
    assert result.table.column_names == ["v", "id", "filename"]
    assert Path(result.column("filename")[2]).parent.name == "year=2024"

    with pytest.raises(
        InvalidInput,
        match=r"'nope' is not a column of parquet .*; its columns: id, v, extra, year\.",
    ):
        ingest(ParquetSource(path=str(lake), columns=["nope"]), settings, tmp_path)
    fake = write(tmp_path / "fake.parquet", "not parquet at all")
    with pytest.raises(InvalidInput, match=r"Cannot read parquet .*fake\.parquet"):
        ingest(ParquetSource(path=str(fake)), settings, tmp_path)
    (tmp_path / "no_parquet").mkdir()
    with pytest.raises(NotFound, match=r"has no \.parquet"):
        ingest(ParquetSource(path=str(tmp_path / "no_parquet")), settings, tmp_path)


# ---- JSON ---------------------------------------------------------------------------------


def test_json_array_and_ndjson(settings: Settings, tmp_path: Path) -> None:
    array = write(tmp_path / "a.json", json.dumps([{"id": 1, "tag": "x"}, {"id": 2, "tag": "y"}]))
    assert ingest(JsonSource(path=str(array)), settings, tmp_path).rows() == [
        {"id": 1, "tag": "x"},
        {"id": 2, "tag": "y"},
    ]
    nd = write(tmp_path / "b.ndjson", '{"id": 3, "tag": "z", "ok": true}\n{"id": 4}\n')
    src = JsonSource(path=str(nd), format="newline_delimited")
    assert ingest(src, settings, tmp_path).rows() == [
        {"id": 3, "tag": "z", "ok": True},
        {"id": 4, "tag": None, "ok": None},
    ]
    both = ingest(JsonSource(path=str(tmp_path / "*.*json"), filename=True), settings, tmp_path)
    assert both.column("id") == [1, 2, 3, 4]
    assert both.table.column_names == ["id", "tag", "ok", "filename"]
    typed = JsonSource(path=str(nd), columns={"id": "VARCHAR", "ok": "BOOLEAN"})
    assert ingest(typed, settings, tmp_path).rows() == [
        {"id": "3", "ok": True},
        {"id": "4", "ok": None},
    ]


def test_json_malformed_and_empty(settings: Settings, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.ndjson", '{"id": 1}\n{"id": 2,, }\n{"id": 3}\n')
    with pytest.raises(InvalidInput) as info:
        ingest(JsonSource(path=str(bad)), settings, tmp_path)
    assert info.value.detail.startswith(
        f'Cannot read json {bad}: Malformed JSON in file "{bad}", at byte 10 in line 2: '
        "unexpected character."
    )
    first = write(tmp_path / "first.json", '[{"id": 1,, }, {"id": 2}]')
    with pytest.raises(InvalidInput, match="in record/value 1: unexpected character"):
        ingest(JsonSource(path=str(first), format="array"), settings, tmp_path)
    empty = write(tmp_path / "empty.json", "")
    with pytest.raises(InvalidInput, match=r"empty\.json is empty \(0 bytes\)"):
        ingest(JsonSource(path=str(empty)), settings, tmp_path)
    with pytest.raises(NotFound):
        ingest(JsonSource(path=str(tmp_path / "none.json")), settings, tmp_path)


# ---- Excel --------------------------------------------------------------------------------


def workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    first = True
    for title, rows in sheets.items():
        sheet = book.active if first else book.create_sheet()
        assert sheet is not None
        sheet.title = title
        first = False
        for row in rows:
            sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def test_excel_sheets_header_row_skip_rows_and_types(settings: Settings, tmp_path: Path) -> None:
    path = workbook(
        tmp_path / "sales.xlsx",
        {
            "summary": [["Quarterly report"], [], ["region", "units"], ["(text)", "(count)"],
                        ["north", 10], ["south", 12]],
            "detail": [["day", "units", "price", "paid", "note"],
                       [dt.datetime(2024, 1, 5), 3, 1.5, True, None],
                       [dt.datetime(2024, 1, 6, 12), 4, 2, False, "late"]],
        },
    )  # fmt: skip
    summary = ExcelSource(path=str(path), sheet="summary", header_row=3, skip_rows=1)
    assert ingest(summary, settings, tmp_path).rows() == [
        {"region": "north", "units": 10},
        {"region": "south", "units": 12},
    ]
    detail = ingest(ExcelSource(path=str(path), sheet=1), settings, tmp_path)
    assert detail.types() == {
        "day": "timestamp[us]",
        "units": "int64",
        "price": "double",
        "paid": "bool",
        "note": "string",
    }
    assert detail.rows()[1] == {
        "day": dt.datetime(2024, 1, 6, 12),
        "units": 4,
        "price": 2.0,
        "paid": False,
        "note": "late",
    }
    both = ExcelSource(
        path=str(path), sheet=None, header_row=None, sheet_column="sheet", filename=True
    )
    result = ingest(both, settings, tmp_path)
    assert result.table.num_rows == 5 + 3  # blank rows are skipped
    assert set(result.column("sheet")) == {"summary", "detail"}
    assert set(result.column("filename")) == {str(path)}
    assert source_from_spec({"kind": "excel", "path": str(path)}).label() == f"excel {path}"


def test_excel_mixed_cells_fail_or_quarantine(settings: Settings, tmp_path: Path) -> None:
    rows: list[list[Any]] = [["id", "amount", "code"]]
    rows += [[i, i * 1.5, f"c{i}"] for i in range(1, 41)]
    rows[10][1] = "n/a"  # Excel row 11
    rows[20] = [20, 30.0, "c20", "stray"]  # Excel row 21: a cell beyond the header
    path = workbook(tmp_path / "m.xlsx", {"data": rows})
    with pytest.raises(InvalidInput) as info:
        ingest(ExcelSource(path=str(path)), settings, tmp_path)
    message = info.value.detail
    assert f'{path}#data line 11: column "amount": value "n/a" does not read as a DOUBLE' in message
    assert f"{path}#data line 21: cell D21 has a value but column D has no header" in message
    assert "null_values=['', 'n/a']" in message

    result = ingest(ExcelSource(path=str(path)), settings, tmp_path, bad_rows="quarantine")
    assert result.types()["amount"] == "double"
    assert result.table.num_rows == 38
    assert 10 not in result.column("id") and 20 not in result.column("id")
    assert result.rejects is not None and result.rejects.count == 2
    assert [int(r["line"]) for r in side_rows(result.rejects)] == [11, 21]
    assert side_rows(result.rejects)[0]["raw_line"] == "10,n/a,c10"

    as_text = ExcelSource(path=str(path), columns={"amount": "VARCHAR"}, header_row=1)
    with pytest.raises(InvalidInput, match="cell D21"):
        ingest(as_text, settings, tmp_path)
    nulls = ExcelSource(path=str(path), null_values=["", "n/a"])
    with pytest.raises(InvalidInput, match="1 row could not be read"):
        ingest(nulls, settings, tmp_path)


def test_excel_errors(settings: Settings, tmp_path: Path) -> None:
    path = workbook(tmp_path / "one.xlsx", {"only": [["a"], [1]]})
    with pytest.raises(NotFound, match=r"has no sheet 'other'\. Its sheets: only"):
        ingest(ExcelSource(path=str(path), sheet="other"), settings, tmp_path)
    with pytest.raises(NotFound, match="there is no sheet 3"):
        ingest(ExcelSource(path=str(path), sheet=3), settings, tmp_path)
    fake = write(tmp_path / "fake.xlsx", "id,name\n1,a\n")
    with pytest.raises(InvalidInput, match=r"fake\.xlsx is not an \.xlsx workbook"):
        ingest(ExcelSource(path=str(fake)), settings, tmp_path)
    header_only = workbook(tmp_path / "h.xlsx", {"s": [["a", "b"]]})
    with pytest.raises(InvalidInput, match="has no rows below its header"):
        ingest(ExcelSource(path=str(header_only)), settings, tmp_path)


# ---- S3 -----------------------------------------------------------------------------------


@pytest.fixture
def s3_settings(tmp_path: Path, s3_endpoint: str) -> Settings:
    return Settings(
        home=tmp_path / "mwhome",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        s3_region="us-east-1",
    )


def put(endpoint: str, bucket: str, key: str, body: bytes) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.mark.s3
def test_s3_csv_glob_folder_and_quarantine(
    s3_settings: Settings, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    put(s3_endpoint, s3_bucket, "raw/2024-01-01.csv", numbers_csv(30).encode())
    put(s3_endpoint, s3_bucket, "raw/2024-01-02.csv", numbers_csv(30, {4: "4,four,n4"}).encode())
    put(s3_endpoint, s3_bucket, "raw/readme.txt", b"not data")

    src = CsvSource(path=f"s3://{s3_bucket}/raw/*.csv", filename=True)
    with pytest.raises(InvalidInput, match=rf"s3://{s3_bucket}/raw/2024-01-02\.csv line 5"):
        ingest(src, s3_settings, tmp_path)
    result = ingest(src, s3_settings, tmp_path, bad_rows="quarantine")
    assert result.table.num_rows == 59
    assert result.column("filename")[0] == f"s3://{s3_bucket}/raw/2024-01-01.csv"
    assert result.rejects is not None
    assert side_rows(result.rejects)[0]["raw_line"] == "4,four,n4"

    folder = ingest(
        CsvSource(path=f"s3://{s3_bucket}/raw"), s3_settings, tmp_path, bad_rows="quarantine"
    )
    assert folder.table.num_rows == 59

    with pytest.raises(NotFound, match="does not exist on S3"):
        ingest(CsvSource(path=f"s3://{s3_bucket}/raw/missing.csv"), s3_settings, tmp_path)
    with pytest.raises(NotFound, match="No files match"):
        ingest(CsvSource(path=f"s3://{s3_bucket}/none/*.csv"), s3_settings, tmp_path)


@pytest.mark.s3
def test_s3_parquet_json_and_excel(
    s3_settings: Settings, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    for i in range(2):
        local = tmp_path / f"p{i}.parquet"
        pq.write_table(pa.table({"id": [i * 10, i * 10 + 1]}), local)
        put(s3_endpoint, s3_bucket, f"lake/part-{i}.parquet", local.read_bytes())
    result = ingest(ParquetSource(path=f"s3://{s3_bucket}/lake"), s3_settings, tmp_path)
    assert result.column("id") == [0, 1, 10, 11]
    globbed = ingest(ParquetSource(path=f"s3://{s3_bucket}/lake/*.parquet"), s3_settings, tmp_path)
    assert globbed.column("id") == [0, 1, 10, 11]

    put(s3_endpoint, s3_bucket, "events.ndjson", b'{"e": "a"}\n{"e": "b"}\n')
    events = ingest(JsonSource(path=f"s3://{s3_bucket}/events.ndjson"), s3_settings, tmp_path)
    assert events.column("e") == ["a", "b"]

    book = workbook(tmp_path / "b.xlsx", {"s": [["k"], ["v"]]})
    put(s3_endpoint, s3_bucket, "books/b.xlsx", book.read_bytes())
    sheet = ingest(ExcelSource(path=f"s3://{s3_bucket}/books/b.xlsx"), s3_settings, tmp_path)
    assert sheet.rows() == [{"k": "v"}]


# ---- through the dataset service ----------------------------------------------------------


def test_service_ingests_csv_end_to_end(store: Any, tmp_path: Path) -> None:
    from modelworks.core.auth import local_principal
    from modelworks.data.service import DataService

    service = DataService(store)
    principal = local_principal()
    path = write(tmp_path / "orders.csv", numbers_csv(40, {8: "8,eighty,n8", 9: "9,90"}))

    with pytest.raises(InvalidInput) as info:
        service.ingest(principal, "default", "orders", CsvSource(path=str(path)))
    assert f'{path} line 9: column "amount"' in info.value.detail
    assert f"{path} line 10: expected 3 columns, found 2" in info.value.detail

    result = service.ingest(
        principal, "default", "orders", CsvSource(path=str(path)), bad_rows="quarantine"
    )
    assert result.rows == 38
    assert result.version is not None
    assert [c.name for c in result.version.columns] == ["id", "amount", "name"]
    assert result.rejects is not None and result.rejects.count == 2
    assert [e["line"] for e in result.rejects.examples] == [9, 10]
    assert result.rejects.sha256  # the side file is kept in the artifact store

    spec = {"kind": "csv", "path": str(path), "columns": {"amount": "VARCHAR"}}
    again = service.ingest(principal, "default", "orders_text", spec, bad_rows="quarantine")
    assert again.rows == 39  # only the short row is left out now

    header = write(tmp_path / "header.csv", "id,name\n")
    with pytest.raises(InvalidInput, match="has no rows below its header"):
        service.ingest(principal, "default", "empty", CsvSource(path=str(header)))
