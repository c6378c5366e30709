"""File sources: CSV/TSV, Parquet, JSON and Excel, from a file, a folder or a glob, on the
local disk or on S3 (``s3://bucket/...``, read through fsspec: DuckDB's httpfs extension would
need a download).

CSV is read by DuckDB's own reader, but never with its type sniffer's casts, because in
DuckDB 2.0 those are quietly lossy: a sampled ``"n/a"`` widens a number column to text, a
short row is padded with NULLs, ``"3.5"`` read as BIGINT becomes 4, and a timestamp read as
DATE loses its time. So a CSV is read in two steps:

1. A sample (``sample_size`` rows) is read as text and each column gets the narrowest type
   that nearly all of its values have (:func:`choose_type`): a column of numbers with a
   stray ``"n/a"`` stays a number column and the ``"n/a"`` row is a bad row.
2. The whole file is read with every option explicit (no sniffing), ``strict_mode`` on and
   ``null_padding`` off, into DuckDB's reject tables: DOUBLE columns parsed by the reader
   (whose number parser is exactly as strict as ``TRY_CAST``), every other column as text,
   which a SQL projection then casts with a strict check. Rows the reader rejects (wrong
   number of columns, unterminated quotes, bad bytes, a DOUBLE column's value that is not a
   number) and rows whose values do not cast are bad rows.
   BOOLEAN, DATE and TIMESTAMP columns whose sampled values all have one plain spelling
   (``2024-01-05``, ``2024-01-05 10:30:00``) are parsed by the reader too, which is stricter
   than the checks; if the written data shows it refused or stretched a value, the read is
   done again with those columns as text (:func:`fast_columns`). Either way,
   with ``bad_rows="fail"`` the ingest fails naming their line numbers, with
   ``"quarantine"`` the good rows are ingested and the bad ones go to a side CSV.

Both steps stream: only the sample is ever held, and the full read is the DuckDB ``COPY``
the dataset service runs (once, or twice when the reader's own parse is undone).
"""

from __future__ import annotations

import contextlib
import csv
import glob as globlib
import io
import math
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb
import pyarrow as pa
from duckdb.func import SPECIAL
from pydantic import Field, field_validator, model_validator

from modelworks.core.errors import InvalidInput, ModelworksError, NotFound, ServiceUnavailable
from modelworks.data import storage
from modelworks.data.sources.base import Rejects, Scan, ScanContext, Source, register_source
from modelworks.data.storage import quote_identifier, sql_string

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# A column is read as a number/date/boolean when at most this share of its sampled values
# are not one; those values are then bad rows. Above it, the column is text. Declaring the
# column's type (``columns=``) overrides this either way.
STRAY_SHARE = 0.05
EXAMPLES = 5  # bad rows shown in an error and kept as examples
FAIL_REJECTS_LIMIT = 100  # rejects DuckDB keeps per file when the ingest will fail anyway
RAW_LINE_CHARS = 2000  # an unterminated quote makes the "line" the rest of the file
STRAY_VALUES_KEPT = 10_000  # distinct bad values remembered per column to find their lines

_PEEK_CHARS = 64 * 1024
_PEEK_LINES = 100
_PEEK_MAX_CHARS = 8 * 1024 * 1024
_DELIMITERS = (",", "\t", ";", "|")
_GLOB_CHARS = re.compile(r"[*?\[]")
_TYPE_NAME = re.compile(
    r"[A-Za-z][A-Za-z0-9_]*( [A-Za-z][A-Za-z0-9_]*)*(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])?"
)
_CODECS = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "latin-1": "latin-1"}
_NULLISH = {"na", "n/a", "nan", "null", "none", "nil", "-", "--", "?", "#n/a", "missing"}
Encoding = Literal["utf-8", "utf-16", "latin-1"]

# Internal column names; never shown to users.
_FILE_COL = "__mw_file"
_ROW_COL = "__mw_row"
_CAST_COL = "__mw_cast_"

# ---- locating files -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    path: str  # as DuckDB is given it: as the user wrote it locally, ``s3://...`` remotely
    size: int


@dataclass
class FileSet:
    files: list[FileRef]
    fs: AbstractFileSystem

    def open(self, ref: FileRef) -> io.BufferedIOBase:
        """The file's bytes, decompressed when its name says so (``.gz``, ``.zst``...)."""
        return self.fs.open(ref.path, "rb", compression="infer")


def locate(
    ctx: ScanContext, path: str, *, suffixes: Sequence[str], recursive: bool = False
) -> FileSet:
    """The files ``path`` names, sorted: one file, the ``suffixes`` files of a folder, or a
    glob's matches. Raises NotFound naming the path when there are none."""
    if not path.strip():
        raise InvalidInput("The source's path is empty; give a file, a folder or a glob.")
    scheme, sep, _ = path.partition("://")
    if sep:
        if scheme.lower() != "s3":
            raise InvalidInput(
                f"Cannot read {path!r}: file sources read local paths and s3:// URLs. "
                "Copy the data to a local folder or to S3 first."
            )
        fs = _s3_filesystem(ctx)
        # One registration per connection: DuckDB refuses a second one for "s3".
        if "s3" not in ctx.con.list_filesystems():
            storage.register_object_storage(ctx.con, ctx.settings)
        try:
            refs = _remote_listing(fs, path, suffixes, recursive)
        except (NotFound, InvalidInput):
            raise
        except FileNotFoundError:
            raise NotFound(f"{path!r} does not exist on S3. Check the bucket and key.")
        except PermissionError as exc:
            raise InvalidInput(
                f"S3 refused access to {path!r} ({exc}). Check MODELWORKS_S3_ACCESS_KEY_ID, "
                "MODELWORKS_S3_SECRET_ACCESS_KEY and the bucket's policy."
            )
        except Exception as exc:  # botocore and aiohttp raise many kinds when S3 is away
            raise ServiceUnavailable(
                f"Could not reach S3 to read {path!r}: {exc}. Check MODELWORKS_S3_ENDPOINT_URL "
                "and that the object store is up."
            )
    else:
        import fsspec

        fs = fsspec.filesystem("file")
        refs = _local_listing(path, suffixes, recursive)
    return FileSet(files=refs, fs=fs)


def _s3_filesystem(ctx: ScanContext) -> AbstractFileSystem:
    import fsspec

    from modelworks.core.artifacts import ArtifactStore

    try:
        return fsspec.filesystem(
            "s3", use_listings_cache=False, **ArtifactStore.s3_options(ctx.settings)
        )
    except ImportError:
        raise InvalidInput(
            "Reading s3:// paths needs s3fs: pip install 'modelworks[s3]'."
        ) from None


def _wanted(name: str, suffixes: Sequence[str]) -> bool:
    base = name.rsplit("/", 1)[-1]
    # Hidden and bookkeeping files (.DS_Store, Spark's _SUCCESS) are never data.
    if base.startswith((".", "_")):
        return False
    lowered = base.lower()
    return any(lowered.endswith(s) for s in suffixes)


def _local_listing(path: str, suffixes: Sequence[str], recursive: bool) -> list[FileRef]:
    expanded = os.path.expanduser(path)
    if _GLOB_CHARS.search(expanded):
        found = [p for p in globlib.glob(expanded, recursive=True) if os.path.isfile(p)]
        if not found:
            raise NotFound(f"No files match {path!r}. Check the pattern and the folder.")
    elif os.path.isdir(expanded):
        found = []
        if recursive:
            for root, dirs, names in os.walk(expanded):
                dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
                found += [os.path.join(root, n) for n in names if _wanted(n, suffixes)]
        else:
            found = [
                os.path.join(expanded, e.name)
                for e in os.scandir(expanded)
                if e.is_file() and _wanted(e.name, suffixes)
            ]
        if not found:
            raise NotFound(
                f"Folder {path!r} has no {' or '.join(suffixes)} files. Point the source at "
                "the files themselves or use a glob such as 'folder/*.txt'."
            )
    elif os.path.isfile(expanded):
        found = [expanded]
    else:
        raise NotFound(f"{path!r} does not exist (looked from {os.getcwd()}).")
    return [FileRef(p, os.path.getsize(p)) for p in sorted(found)]


def _remote_listing(
    fs: AbstractFileSystem, path: str, suffixes: Sequence[str], recursive: bool
) -> list[FileRef]:
    key = path.split("://", 1)[1]
    if _GLOB_CHARS.search(key):
        infos = fs.glob(key, detail=True)
        found = {n: i for n, i in infos.items() if i.get("type") == "file"}
        if not found:
            raise NotFound(f"No files match {path!r}. Check the pattern and the bucket.")
    elif fs.isdir(key):
        infos = fs.find(key, maxdepth=None if recursive else 1, detail=True)
        found = {n: i for n, i in infos.items() if _wanted(n, suffixes)}
        if not found:
            raise NotFound(
                f"Folder {path!r} has no {' or '.join(suffixes)} files. Point the source at "
                "the files themselves or use a glob."
            )
    else:
        found = {key: fs.info(key)}
    return [FileRef(f"s3://{n}", int(found[n].get("size") or 0)) for n in sorted(found)]


def unreadable(path: str, exc: OSError) -> ModelworksError:
    """The error for a file that exists but cannot be read."""
    if path.startswith("s3://"):
        return ServiceUnavailable(
            f"Could not read {path} from S3: {exc}. Check MODELWORKS_S3_ENDPOINT_URL and that "
            "the object store is up."
        )
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"{path!r} does not exist (it was removed while reading).")
    return InvalidInput(f"Cannot read {path}: {exc.strerror or exc}. Check the file.")


def _drop_empty(files: FileSet, path: str) -> FileSet:
    """Skip 0-byte files among others; fail when every file is empty."""
    kept = [f for f in files.files if f.size > 0]
    if not kept:
        which = files.files[0].path if len(files.files) == 1 else f"every file of {path!r}"
        raise InvalidInput(f"{which} is empty (0 bytes): there are no rows to ingest.")
    return FileSet(kept, files.fs)


def first_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...] | None:
    """The first row of ``sql``; the result is read to its end, as DuckDB 2.0 wants before
    the connection runs anything else."""
    rows = con.sql(sql).fetchall()
    return rows[0] if rows else None


def _file_list(refs: Sequence[FileRef]) -> str:
    return "[" + ", ".join(sql_string(r.path) for r in refs) + "]"


def _duckdb_message(exc: BaseException) -> str:
    """DuckDB's first line without its class prefix; its 'possible fixes' name DuckDB options
    our users do not set, so they are dropped."""
    text = str(exc).strip()
    text = re.sub(r"^[A-Za-z ]*Error: ", "", text)
    return text.splitlines()[0].strip() if text else type(exc).__name__


# ---- strict types ---------------------------------------------------------------------------

CANDIDATES = ("BOOLEAN", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "TIMESTAMPTZ", "TIME")
_INTEGER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "INT1", "INT2", "INT4", "INT8", "LONG", "SHORT",
    "SIGNED", "INT128",
}  # fmt: skip
_TEXT_TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"}
# Types DuckDB's CSV reader parses exactly as strictly as the checks here (CsvSource._read).
_NATIVE_TYPES = {"DOUBLE"}
# Types the reader parses more strictly than the checks, with these formats (see
# fast_columns): taken when the sample says every value fits, and undone when the data does not.
_FAST_FORMATS = {"DATE": "%Y-%m-%d", "TIMESTAMP": "%Y-%m-%d %H:%M:%S"}
_FAST_OPTIONS = {"DATE": "dateformat", "TIMESTAMP": "timestampformat"}
# The dates and times the checks take (and Python can hold); the reader also takes others.
_FAST_RANGE = "TIMESTAMP '0001-01-01' AND TIMESTAMP '9999-12-31 23:59:59.999999'"
# DuckDB's reject message for such a value, worded like the checks' own messages.
_CAST_MESSAGE = (
    "'column \"' || column_name || '\": value \"' || "
    "regexp_extract(error_message, 'Could not convert string \"(.*)\" to ''DOUBLE''', 1) || "
    "'\" does not read as a DOUBLE'"
)
_BOOLEAN_TEXT = "'true', 'false', 't', 'f', 'yes', 'no', 'y', 'n', '1', '0'"
_INT_RE = r"\s*[+-]?[0-9]+\s*"
_DATE_RE = r"\s*[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}\s*"
_TIME_RE = r"\s*[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*"
# A UTC offset after a time of day: such values are instants, not wall-clock times.
_TZ_RE = r"[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)\s*$"


@dataclass(frozen=True)
class Formats:
    date: str | None = None
    timestamp: str | None = None


def normalize_type(name: str) -> str:
    return " ".join(name.upper().split())


def check_type_names(con: duckdb.DuckDBPyConnection, columns: dict[str, str]) -> None:
    """Each declared type is a DuckDB type (checked by DuckDB itself)."""
    for col, type_name in columns.items():
        if not _TYPE_NAME.fullmatch(type_name.strip()):
            raise InvalidInput(f"columns[{col!r}]: {type_name!r} is not a type name.")
        try:
            first_row(con, f"SELECT TRY_CAST(NULL AS {type_name})")
        except duckdb.Error:
            raise InvalidInput(
                f"columns[{col!r}]: unknown type {type_name!r}. Use a DuckDB type such as "
                "VARCHAR, BIGINT, DOUBLE, BOOLEAN, DATE, TIMESTAMP or DECIMAL(18,2)."
            )


def candidate_test(value: str, type_name: str, formats: Formats) -> str:
    """SQL that is true when the non-NULL text ``value`` reads as ``type_name`` without
    loss. DuckDB's own casts are not enough: ``'3.5'::BIGINT`` is 4 and
    ``'2024-01-05 10:30'::DATE`` drops the time.

    The tests are CASE expressions rather than ORs and ANDs: DuckDB evaluates both sides of
    an OR or AND inside an aggregate (the type inference counts them), but only the branch
    a CASE takes, and a failing cast is the dearest thing in them."""
    t = normalize_type(type_name)
    if t == "BOOLEAN":
        # The plain spellings first: lower(trim()) copies every string.
        return (
            f"(CASE WHEN {value} IN ('true', 'false') THEN true "
            f"ELSE lower(trim({value})) IN ('true', 'false') END)"
        )
    if t in _INTEGER_TYPES:
        # A value that is its own integer's text ("42", "-7") needs no regular expression;
        # anything else ("+7", " 7", "3.5", "1e3") takes the full test.
        return (
            f"(CASE WHEN coalesce(TRY_CAST({value} AS {t})::VARCHAR = {value}, false) THEN true "
            f"WHEN regexp_full_match({value}, '{_INT_RE}') "
            f"THEN TRY_CAST({value} AS {t}) IS NOT NULL ELSE false END)"
        )
    if t == "DATE":
        if formats.date:
            return f"TRY_STRPTIME(trim({value}), {sql_string(formats.date)}) IS NOT NULL"
        # A date in DuckDB's own spelling ("2024-01-05": ten characters, so neither BC nor
        # a year past 9999 nor "infinity") needs no regular expression.
        return (
            f"(CASE WHEN length({value}) = 10 AND "
            f"coalesce(TRY_CAST({value} AS DATE)::VARCHAR = {value}, false) THEN true "
            f"WHEN regexp_full_match({value}, '{_DATE_RE}') "
            f"THEN TRY_CAST({value} AS DATE) IS NOT NULL ELSE false END)"
        )
    if t in ("TIMESTAMP", "DATETIME"):
        if formats.timestamp:
            return f"TRY_STRPTIME(trim({value}), {sql_string(formats.timestamp)}) IS NOT NULL"
        # A timestamp in DuckDB's own spelling has no UTC offset, so it needs no regular
        # expression; the search for an offset is the dearest part of the full test.
        return (
            f"(CASE WHEN coalesce(TRY_CAST({value} AS TIMESTAMP)::VARCHAR = {value}, false) "
            f"THEN true WHEN TRY_CAST({value} AS TIMESTAMP) IS NULL THEN false "
            f"ELSE NOT regexp_matches({value}, '{_TZ_RE}') END)"
        )
    if t in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return (
            f"(CASE WHEN regexp_matches({value}, '{_TZ_RE}') "
            f"THEN TRY_CAST({value} AS TIMESTAMPTZ) IS NOT NULL ELSE false END)"
        )
    if t == "TIME":
        return (
            f"(CASE WHEN regexp_full_match({value}, '{_TIME_RE}') "
            f"THEN TRY_CAST({value} AS TIME) IS NOT NULL ELSE false END)"
        )
    return f"TRY_CAST({value} AS {type_name}) IS NOT NULL"


def strict_cast(
    value: str, type_name: str, formats: Formats, *, declared: bool = False
) -> tuple[str, str]:
    """``(ok, cast)`` SQL for reading text ``value`` as ``type_name``: ``ok`` is true for
    NULL and for values that convert without loss, ``cast`` is the converted value."""
    t = normalize_type(type_name)
    if t in _TEXT_TYPES:
        return "TRUE", value
    if declared and t in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        # Declared instants also accept wall-clock text, read in the session's time zone.
        test = f"TRY_CAST({value} AS TIMESTAMPTZ) IS NOT NULL"
    elif t == "BOOLEAN":
        # Only true/false make a column boolean, but once it is, other spellings are fine.
        test = f"({value} IN ('true', 'false') OR lower(trim({value})) IN ({_BOOLEAN_TEXT}))"
    else:
        test = candidate_test(value, type_name, formats)
    if t == "DATE" and formats.date:
        cast = f"CAST(TRY_STRPTIME(trim({value}), {sql_string(formats.date)}) AS DATE)"
    elif t in ("TIMESTAMP", "DATETIME") and formats.timestamp:
        cast = f"TRY_STRPTIME(trim({value}), {sql_string(formats.timestamp)})"
    elif t == "BOOLEAN":
        cast = f"TRY_CAST(trim({value}) AS {t})"
    elif t in _INTEGER_TYPES or t in ("DATE", "TIME"):
        # The test above already cast the untrimmed text successfully (DuckDB's casts skip
        # surrounding white space), so trimming first would only copy every string.
        cast = f"TRY_CAST({value} AS {t})"
    else:
        cast = f"TRY_CAST({value} AS {type_name})"
    return f"({value} IS NULL OR {test})", cast


def choose_type(count: int, ok: dict[str, int]) -> str:
    """The column's type from its sample: the first candidate every value has; else the one
    most values have, when the rest are at most ``STRAY_SHARE`` of them; else text."""
    if count == 0:
        return "VARCHAR"
    for t in CANDIDATES:
        if ok[t] == count:
            return t
    best = max(CANDIDATES, key=lambda t: ok[t])  # max keeps the first (narrowest) on ties
    if ok[best] and count - ok[best] <= STRAY_SHARE * count:
        return best
    return "VARCHAR"


def fast_columns(
    con: duckdb.DuckDBPyConnection, table: str, types: dict[str, str], formats: Formats
) -> dict[str, str]:
    """Columns DuckDB's CSV reader may parse itself (lower-case name -> its type), skipping
    their text and their check: BOOLEAN, and DATE and TIMESTAMP in the one spelling
    ``_FAST_FORMATS`` gives them, when every sampled value has it.

    The reader refuses spellings the checks take (a padded ``" y "``, a fraction of a
    second, a ``T`` between date and time), so a value it refuses may still be good: such a
    read is undone and done again the slow way (:meth:`CsvRejects.doubtful`). It takes a few
    values the checks refuse (``infinity``, years past 9999): the written data's extremes show
    those, and undo the read too. What it takes otherwise, the checks take as the same value."""
    tests: dict[str, tuple[str, str]] = {}
    for name, type_name in types.items():
        t = normalize_type(type_name)
        t = "TIMESTAMP" if t == "DATETIME" else t
        v = quote_identifier(name)
        if t == "BOOLEAN":
            tests[name] = (t, f"TRY_CAST({v} AS BOOLEAN) IS NOT NULL")
        elif t in _FAST_FORMATS and not (formats.date if t == "DATE" else formats.timestamp):
            parsed = f"TRY_STRPTIME({v}, {sql_string(_FAST_FORMATS[t])})"
            tests[name] = (t, f"coalesce({parsed} BETWEEN {_FAST_RANGE}, false)")
    if not tests:
        return {}
    misses = first_row(
        con,
        "SELECT "
        + ", ".join(
            f"count_if({quote_identifier(n)} IS NOT NULL AND NOT {test})"
            for n, (_, test) in tests.items()
        )
        + f" FROM {table}",
    )
    assert misses is not None  # an aggregate without GROUP BY returns one row
    return {
        name.lower(): reader_type
        for (name, (reader_type, _)), missed in zip(tests.items(), misses, strict=True)
        if not missed
    }


def infer_types(
    con: duckdb.DuckDBPyConnection, sample_sql: str, columns: Sequence[str], formats: Formats
) -> dict[str, str]:
    """Types for text ``columns`` of the rows ``sample_sql`` selects."""
    if not columns:
        return {}
    with sample_table(con, sample_sql) as table:
        return infer_sampled_types(con, table, columns, formats)


@contextlib.contextmanager
def sample_table(con: duckdb.DuckDBPyConnection, sample_sql: str) -> Iterator[str]:
    """The rows of ``sample_sql`` read once into a temporary table (its quoted name)."""
    table = quote_identifier(f"mw_sample_{uuid.uuid4().hex[:12]}")
    con.execute(f"CREATE TEMP TABLE {table} AS {sample_sql}")
    try:
        yield table
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"DROP TABLE IF EXISTS {table}")


def infer_sampled_types(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], formats: Formats
) -> dict[str, str]:
    """Types for text ``columns`` of the sample in ``table``.

    Every candidate test is first run on a prefix of the sample. A candidate that fails
    there on more than ``STRAY_SHARE`` of the column's sampled values fails on the whole
    sample too, so :func:`choose_type` could not pick it: only the candidates left are
    counted on every sampled row. On typical data that leaves one or two per column (none
    for text), which makes the slow date and time tests nearly free."""
    if not columns:
        return {}
    counted = first_row(
        con,
        f"SELECT count(*), {', '.join(f'count({quote_identifier(c)})' for c in columns)} "
        f"FROM {table}",
    )
    assert counted is not None  # an aggregate without GROUP BY returns one row
    rows = int(counted[0])
    totals = dict(zip(columns, (int(n) for n in counted[1:]), strict=True))
    pending = {col: list(CANDIDATES) for col in columns if totals[col]}
    # Long enough that a column none of whose values is a candidate fails it more often
    # than STRAY_SHARE of the whole sample allows (unless most of the column is NULL).
    prefix = 2 * math.ceil(STRAY_SHARE * rows) + 64
    if pending and prefix < rows:
        seen = _candidate_counts(con, f"(SELECT * FROM {table} LIMIT {prefix})", pending, formats)
        pending = {
            col: [
                t for t in candidates if seen[col][0] - seen[col][1][t] <= STRAY_SHARE * totals[col]
            ]
            for col, candidates in pending.items()
        }
    counts = _candidate_counts(con, table, {c: ts for c, ts in pending.items() if ts}, formats)
    out: dict[str, str] = {}
    for col in columns:
        ok = dict.fromkeys(CANDIDATES, 0)
        if col in counts:
            ok.update(counts[col][1])
        out[col] = choose_type(totals[col], ok)
    return out


def _candidate_counts(
    con: duckdb.DuckDBPyConnection,
    table: str,
    candidates: dict[str, list[str]],
    formats: Formats,
) -> dict[str, tuple[int, dict[str, int]]]:
    """For each column: its count of values and how many of them read as each of its
    candidates (one aggregate query)."""
    if not candidates:
        return {}
    exprs: list[str] = []
    for i, (col, types) in enumerate(candidates.items()):
        v = quote_identifier(col)
        exprs.append(f"count({v}) AS n{i}")
        exprs += [
            f"count_if({v} IS NOT NULL AND {candidate_test(v, t, formats)}) AS c{i}_{j}"
            for j, t in enumerate(types)
        ]
    row = first_row(con, f"SELECT {', '.join(exprs)} FROM {table}")
    assert row is not None  # an aggregate without GROUP BY returns one row
    out: dict[str, tuple[int, dict[str, int]]] = {}
    at = 0
    for col, types in candidates.items():
        # count_if over no rows (every sampled row was bad) is NULL, not 0.
        counts = [int(c or 0) for c in row[at : at + 1 + len(types)]]
        at += 1 + len(types)
        out[col] = (counts[0], dict(zip(types, counts[1:], strict=True)))
    return out


def match_declared(declared: dict[str, str], names: Sequence[str], what: str) -> dict[str, str]:
    """Declared types keyed by the real column names (DuckDB names are case-insensitive)."""
    by_lower = {n.lower(): n for n in names}
    out: dict[str, str] = {}
    for col, type_name in declared.items():
        real = by_lower.get(col.lower())
        if real is None:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise InvalidInput(f"{col!r} is not a column of {what}; its columns: {shown}.")
        out[real] = type_name
    return out


def _article(type_name: str) -> str:
    return "an" if type_name[:1] in "AEIOU" else "a"


# ---- bad rows -------------------------------------------------------------------------------


@dataclass
class BadRow:
    file: str
    line: int
    column: str
    error: str
    raw_line: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "error": self.error,
            "raw_line": self.raw_line,
        }


class StrayLog:
    """Called by DuckDB (as a SQL function) for each row whose values do not cast; it keeps
    the values so their lines can be found afterwards, and returns false to drop the row.
    Rows that are fine return true: DuckDB need not short-circuit the ``OR`` it sits in."""

    def __init__(self) -> None:
        self.rows = 0
        self.values: dict[str, dict[str, Counter[str]]] = {}  # file -> column -> value counts
        self._lock = threading.Lock()  # DuckDB calls in from several threads

    def __call__(self, file: str, columns: list[str | None], values: list[str | None]) -> bool:
        pairs = [
            (c, v) for c, v in zip(columns, values, strict=True) if c is not None and v is not None
        ]
        if not pairs:
            return True
        with self._lock:
            self.rows += 1
            per_file = self.values.setdefault(file, {})
            for col, value in pairs:
                seen = per_file.setdefault(col, Counter())
                if value in seen or len(seen) < STRAY_VALUES_KEPT:
                    seen[value] += 1
        return False


def rejects_result(
    con: duckdb.DuckDBPyConnection, workdir: Path, kind: str, rows_sql: str, total: int
) -> Rejects:
    """Write the bad rows ``rows_sql`` selects to a side CSV and describe them."""
    workdir.mkdir(parents=True, exist_ok=True)
    side = workdir / f"rejects-{kind}-{uuid.uuid4().hex[:8]}.csv"
    con.execute(f"COPY ({rows_sql}) TO {sql_string(str(side))} (FORMAT csv, HEADER true)")
    examples = _fetch_dicts(con, f"SELECT * FROM ({rows_sql}) LIMIT {EXAMPLES}")
    return Rejects(count=total, side_file=side, examples=examples)


def _fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.sql(sql)
    names = rel.columns
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def bad_rows_error(label: str, examples: Sequence[BadRow], total: int, *, at_least: bool) -> str:
    count = f"{'at least ' if at_least else ''}{total} row{'s' if total != 1 else ''}"
    lines = [f"{label}: {count} could not be read, so nothing was ingested."]
    for bad in examples[:EXAMPLES]:
        where = f"{bad.file} line {bad.line}"
        lines.append(f"  {where}: {bad.error}")
    if total > len(examples[:EXAMPLES]):
        lines.append(f"  ... and {total - len(examples[:EXAMPLES])} more")
    hints = [
        'ingest with bad_rows="quarantine" (CLI: --bad-rows quarantine) to load the good rows '
        "and set these aside in a rejects file"
    ]
    typed = [c for b in examples if "does not read as" in b.error for c in b.column.split("; ")]
    if typed:
        hints.append(f"declare the column's type, e.g. columns={{{typed[0]!r}: 'VARCHAR'}}")
    nullish = sorted({v for b in examples for v in _quoted_values(b.error) if _is_nullish(v)})
    if nullish:
        hints.append(f"treat those values as missing with null_values={['', *nullish]!r}")
    lines.append("To go on, " + ", or ".join(hints) + "; or fix the data.")
    return "\n".join(lines)


def _quoted_values(error: str) -> list[str]:
    return re.findall(r'value "([^"]*)"', error)


def _is_nullish(value: str) -> bool:
    return value.strip().lower() in _NULLISH


# ---- CSV ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    quote: str
    escape: str
    header: bool
    skip: int
    encoding: str
    null_values: tuple[str, ...]

    def python(self) -> dict[str, Any]:
        """The same dialect for Python's csv module (used to peek and to find lines)."""
        if not self.quote:
            return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE}
        kw: dict[str, Any] = {"delimiter": self.delimiter, "quotechar": self.quote}
        if self.escape and self.escape != self.quote:
            kw.update(escapechar=self.escape, doublequote=False)
        else:
            kw.update(doublequote=self.escape == self.quote)
        return kw

    def duckdb_options(self) -> list[str]:
        opts = [
            "auto_detect = false",
            f"delim = {sql_string(self.delimiter)}",
            f"quote = {sql_string(self.quote)}",
            f"header = {str(self.header).lower()}",
            f"skip = {self.skip}",
            f"encoding = {sql_string(self.encoding)}",
            "nullstr = [" + ", ".join(sql_string(v) for v in self.null_values) + "]",
            # Rows with too few or too many fields are errors, never padded or cut.
            "strict_mode = true",
            "null_padding = false",
        ]
        if self.quote:
            opts.append(f"escape = {sql_string(self.escape)}")
        return opts


@dataclass
class Head:
    """The start of one file: enough to see its header and whether it has rows."""

    lines: list[str]  # complete physical lines below the skipped ones, with their endings
    complete: bool  # the whole file was read


@dataclass
class CsvGroup:
    """Consecutive files with the same columns: one DuckDB ``read_csv`` call."""

    files: list[FileRef]
    names: list[str]


@dataclass
class CsvPlan:
    dialect: Dialect
    groups: list[CsvGroup]
    names: list[str]  # all columns, in order: the first file's, then new ones of later files
    types: dict[str, str] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)


@register_source
class CsvSource(Source):
    """Delimited text files: a file, a folder of ``.csv`` files, or a glob; local or S3.

    >>> CsvSource(path="data/churn.csv", columns={"zip": "VARCHAR"})
    """

    kind: Literal["csv"] = "csv"
    path: str
    delimiter: str | None = Field(default=None, description="one character; None: detected")
    quote: str = Field(default='"', description='"" for files without quoting')
    escape: str | None = Field(default=None, description="None: the quote, doubled (RFC 4180)")
    header: bool = True
    names: list[str] | None = Field(default=None, description="column names, in file order")
    encoding: Encoding = "utf-8"
    columns: dict[str, str] | None = Field(
        default=None, description="declared types by column name, e.g. {'zip': 'VARCHAR'}"
    )
    null_values: list[str] | None = Field(
        default=None, description="values read as missing; default: empty fields only"
    )
    skip_rows: int = Field(default=0, ge=0, description="lines skipped before the header")
    date_format: str | None = Field(default=None, description="strptime format, e.g. %d/%m/%Y")
    timestamp_format: str | None = None
    sample_size: int = Field(default=20480, description="rows read to choose types; -1: all")
    filename: bool | str = Field(
        default=False, description="add a column with each row's file (True: 'filename')"
    )

    suffixes: ClassVar[tuple[str, ...]] = (".csv", ".csv.gz", ".csv.zst")

    @field_validator("delimiter")
    @classmethod
    def _one_delimiter(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\r\n"):
            raise ValueError("must be one character (not a line break), e.g. ',' or '\\t'")
        return value

    @field_validator("quote", "escape")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 1 or value in ("\r", "\n")):
            raise ValueError("must be one character, or '' for none")
        return value

    @field_validator("sample_size")
    @classmethod
    def _sample(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be a number of rows, or -1 for all of them")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CsvSource:
        if self.delimiter is not None and self.quote and self.delimiter == self.quote:
            raise ValueError("delimiter and quote must differ")
        if isinstance(self.filename, str) and not self.filename.strip():
            raise ValueError("filename must be True or a column name")
        return self

    # ---- reading ---------------------------------------------------------------------------
    def scan(self, ctx: ScanContext) -> Scan:
        files = _drop_empty(locate(ctx, self.path, suffixes=self.suffixes), self.path)
        heads = {ref.path: self._head(files, ref) for ref in files.files}
        dialect = self._dialect(heads[files.files[0].path])
        plan = self._plan(files, heads, dialect)
        if self.columns:
            check_type_names(ctx.con, self.columns)
            plan.types.update(match_declared(self.columns, plan.names, self.label()))
            plan.declared = set(plan.types)
        formats = Formats(self.date_format, self.timestamp_format)
        undeclared = [n for n in plan.names if n not in plan.declared]
        try:
            with sample_table(ctx.con, self._sample_sql(plan)) as table:
                plan.types.update(infer_sampled_types(ctx.con, table, undeclared, formats))
                fast = fast_columns(ctx.con, table, plan.types, formats)
        except duckdb.Error as exc:
            raise InvalidInput(f"Reading {self.label()} failed: {_duckdb_message(exc)}")
        return self._read(ctx, files, plan, formats, fast)

    def _head(self, files: FileSet, ref: FileRef) -> Head:
        """The first lines of ``ref`` decoded (a wrong encoding fails here, early)."""
        codec = _CODECS[self.encoding]
        text = ""
        complete = False
        try:
            with files.open(ref) as raw, io.TextIOWrapper(raw, codec, newline="") as handle:  # type: ignore[type-var]
                while len(text) < _PEEK_MAX_CHARS:
                    chunk = handle.read(_PEEK_CHARS)
                    if not chunk:
                        complete = True
                        break
                    text += chunk
                    if text.count("\n") + text.count("\r") > self.skip_rows + _PEEK_LINES:
                        break
        except UnicodeError as exc:
            raise self._encoding_error(ref.path, str(exc))
        except OSError as exc:
            raise unreadable(ref.path, exc)
        lines = io.StringIO(text, newline="").readlines()
        if not complete and lines:
            lines.pop()  # may be cut in the middle
        quote = self.quote
        endings = line_endings(text[:_PEEK_CHARS], quote, self.escape or quote)
        if len(endings) > 1:
            # DuckDB stops with "invalid state" on such files or, when lines are skipped,
            # returns no rows and no error at all.
            raise InvalidInput(
                f"{ref.path} mixes line endings ({' and '.join(sorted(endings))}); the CSV "
                "reader needs one kind per file. Convert it (e.g. `dos2unix FILE`) and ingest "
                "again."
            )
        return Head(lines=lines[self.skip_rows :], complete=complete)

    def _encoding_error(self, path: str, detail: str) -> InvalidInput:
        others = [e for e in _CODECS if e != self.encoding]
        return InvalidInput(
            f"{path} is not valid {self.encoding} text ({detail}). Set the file's encoding, "
            f"e.g. encoding={others[-1]!r} (or {others[0]!r}), or save it as {self.encoding}."
        )

    def _dialect(self, head: Head) -> Dialect:
        quote = self.quote
        escape = self.escape if self.escape is not None else quote
        delimiter = self.delimiter or sniff_delimiter("".join(head.lines), quote, escape)
        return Dialect(
            delimiter=delimiter,
            quote=quote,
            escape=escape,
            header=self.header,
            skip=self.skip_rows,
            encoding=self.encoding,
            null_values=tuple(self.null_values if self.null_values is not None else [""]),
        )

    def _plan(self, files: FileSet, heads: dict[str, Head], dialect: Dialect) -> CsvPlan:
        groups: list[CsvGroup] = []
        empty: list[str] = []
        for ref in files.files:
            records = parse_records(heads[ref.path].lines, dialect)
            first = records[0] if records else None
            has_rows = len(records) > (1 if dialect.header else 0)
            if first is None or not has_rows:
                empty.append(ref.path)
                continue
            file_names = self._names(first, dialect, ref.path)
            if groups and groups[-1].names == file_names:
                groups[-1].files.append(ref)
            else:
                groups.append(CsvGroup(files=[ref], names=file_names))
        if not groups:
            which = empty[0] if len(empty) == 1 else f"none of the {len(empty)} files"
            raise InvalidInput(
                f"{which} has no rows{' below its header' if dialect.header else ''}, so there "
                f"is nothing to ingest from {self.path!r}. Check the file, skip_rows and "
                "header (header=True reads the first line as column names)."
            )
        names: list[str] = []
        seen: set[str] = set()
        for group in groups:
            for name in group.names:
                if name.lower() not in seen:
                    seen.add(name.lower())
                    names.append(name)
        if self.filename:
            column = self.filename_column
            if column.lower() in seen:
                raise InvalidInput(
                    f"The data already has a column {column!r}; name the file column "
                    'differently, e.g. filename="source_file".'
                )
        return CsvPlan(dialect=dialect, groups=groups, names=names)

    def _names(self, first: list[str], dialect: Dialect, path: str) -> list[str]:
        if self.names is not None:
            if len(self.names) != len(first):
                raise InvalidInput(
                    f"names lists {len(self.names)} columns but {path} has {len(first)} "
                    f"(delimiter {dialect.delimiter!r}). Give one name per column."
                )
            return unique_names(self.names)
        if dialect.header:
            return unique_names(first)
        return [f"column{i}" for i in range(len(first))]

    @property
    def filename_column(self) -> str:
        return self.filename if isinstance(self.filename, str) else "filename"

    def _reader(
        self,
        group: CsvGroup,
        dialect: Dialect,
        *,
        extra: Sequence[str] = (),
        native: Mapping[str, str] | None = None,
    ) -> str:
        """``read_csv`` of one group: every column as text, except the ``native`` ones
        (lower-case name -> type), which DuckDB's reader parses itself."""
        native = native or {}
        pairs = [f"{sql_string(n)}: '{native.get(n.lower(), 'VARCHAR')}'" for n in group.names]
        columns = "{" + ", ".join(pairs) + "}"
        options = [*dialect.duckdb_options(), f"columns = {columns}", *extra]
        return f"read_csv({_file_list(group.files)}, {', '.join(options)})"

    def _sample_sql(self, plan: CsvPlan) -> str:
        limit = f" LIMIT {self.sample_size}" if self.sample_size > 0 else ""
        parts = [
            f"(SELECT * FROM {self._reader(g, plan.dialect, extra=['ignore_errors = true'])}"
            f"{limit})"
            for g in plan.groups
        ]
        return " UNION ALL BY NAME ".join(parts)

    def _read(
        self,
        ctx: ScanContext,
        files: FileSet,
        plan: CsvPlan,
        formats: Formats,
        fast: dict[str, str],
    ) -> Scan:
        con = ctx.con
        tag = uuid.uuid4().hex[:12]
        errors_table, scans_table, udf = (
            f"mw_rejects_{tag}",
            f"mw_reject_scans_{tag}",
            f"mw_stray_{tag}",
        )
        limit = FAIL_REJECTS_LIMIT if ctx.bad_rows == "fail" else 0
        rejects_opts = [
            "store_rejects = true",
            f"rejects_table = {sql_string(errors_table)}",
            f"rejects_scan = {sql_string(scans_table)}",
            f"rejects_limit = {limit}",
            f"filename = {sql_string(_FILE_COL)}",
        ]
        # DOUBLE columns are parsed by the reader itself: its parser accepts exactly what
        # TRY_CAST(text AS DOUBLE) accepts (the test a DOUBLE column is held to), so the
        # text need not be kept, and a value that is not a number is a reject with its line
        # number, like a row with too many fields.
        native = {
            name.lower(): "DOUBLE"
            for name in plan.names
            if normalize_type(plan.types.get(name, "VARCHAR")) in _NATIVE_TYPES
        }
        native.update(fast)
        rejects_opts += [
            f"{_FAST_OPTIONS[t]} = {sql_string(_FAST_FORMATS[t])}"
            for t in sorted(set(fast.values()) & set(_FAST_FORMATS))
        ]
        union = " UNION ALL BY NAME ".join(
            f"SELECT * FROM {self._reader(g, plan.dialect, extra=rejects_opts, native=native)}"
            for g in plan.groups
        )
        selects: list[str] = []
        casts: list[str] = []  # computed once below the check, which reads them
        checks: list[tuple[str, str, str]] = []  # (column, ok sql, value sql)
        for i, name in enumerate(plan.names):
            col = quote_identifier(name)
            type_name = plan.types.get(name, "VARCHAR")
            if name.lower() in native:
                selects.append(f"{col} AS {col}")
                continue
            ok, value = strict_cast(col, type_name, formats, declared=name in plan.declared)
            if ok != "TRUE" and value in ok:
                # The check casts the text too: name the cast once, so DuckDB computes it
                # once a value instead of once in the check and again in the result.
                cast = quote_identifier(f"{_CAST_COL}{i}")
                casts.append(f"{value} AS {cast}")
                ok, value = ok.replace(value, cast), cast
            selects.append(f"{value} AS {col}")
            if ok != "TRUE":
                checks.append((name, ok, col))
        if self.filename:
            selects.append(
                f"{quote_identifier(_FILE_COL)} AS {quote_identifier(self.filename_column)}"
            )
        strays = StrayLog()
        where = ""
        if checks:
            con.create_function(
                udf, strays, ["VARCHAR", "VARCHAR[]", "VARCHAR[]"], "BOOLEAN",
                side_effects=True, null_handling=SPECIAL,
            )  # fmt: skip
            failing = ", ".join(
                f"CASE WHEN NOT {ok} THEN {sql_string(n)} END" for n, ok, _ in checks
            )
            values = ", ".join(v for _, _, v in checks)
            all_ok = " AND ".join(ok for _, ok, _ in checks)
            where = (
                f" WHERE ({all_ok}) OR "
                f"{udf}({quote_identifier(_FILE_COL)}, [{failing}], [{values}])"
            )
        source = f"({union})"
        if casts:
            source = f"(SELECT *, {', '.join(casts)} FROM {source})"
        sql = f"SELECT {', '.join(selects)} FROM {source}{where}"
        try:
            relation = con.sql(sql)
        except duckdb.Error as exc:
            if checks:
                con.remove_function(udf)
            raise InvalidInput(f"Reading {self.label()} failed: {_duckdb_message(exc)}")

        reader = CsvRejects(
            source=self,
            ctx=ctx,
            files=files,
            plan=plan,
            strays=strays,
            errors_table=errors_table,
            scans_table=scans_table,
            limit=limit,
        )

        def close() -> None:
            for table in (errors_table, scans_table, reader.strays_table):
                _quietly(con, f"DROP TABLE IF EXISTS {quote_identifier(table)}")
            if checks:
                # The connection may be closed already when an ingest failed.
                with contextlib.suppress(duckdb.Error):
                    con.remove_function(udf)

        def retry(parts: Sequence[Path]) -> Scan | None:
            doubtful = reader.doubtful(fast, parts)
            if not doubtful:
                return None
            slow = {name: t for name, t in fast.items() if name not in doubtful}
            return self._read(ctx, files, plan, formats, slow)

        return Scan(
            relation=relation,
            rejects=reader.collect,
            close=close,
            retry=retry if fast else None,
        )


def _quietly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    # Cleanup after a failed or closed connection: there is nothing left to undo.
    with contextlib.suppress(duckdb.Error):
        con.execute(sql)


@dataclass
class CsvRejects:
    """Turns DuckDB's reject tables and the stray values into bad rows with line numbers."""

    source: CsvSource
    ctx: ScanContext
    files: FileSet
    plan: CsvPlan
    strays: StrayLog
    errors_table: str
    scans_table: str
    limit: int
    strays_table: str = field(default_factory=lambda: f"mw_strays_{uuid.uuid4().hex[:12]}")

    def collect(self) -> Rejects | None:
        con = self.ctx.con
        fail = self.ctx.bad_rows == "fail"
        reader_rows = self._reader_rejects_sql()
        if reader_rows is not None:
            self._check_encoding()
        want = EXAMPLES if fail else None
        located = self._locate_strays(want)
        self._register_strays(located)
        parts = [p for p in (reader_rows, f"SELECT * FROM {self.strays_table}") if p]
        rows_sql = (
            f'SELECT file, line, "column", error, raw_line FROM ({" UNION ALL ".join(parts)}) '
            "ORDER BY file, line"
        )
        reader_count = 0
        if reader_rows is not None:
            counted = first_row(con, f"SELECT count(*) FROM ({reader_rows})")
            reader_count = int(counted[0]) if counted else 0
        total = reader_count + self.strays.rows
        if total == 0:
            return None
        if fail:
            examples = [
                BadRow(**row)
                for row in _fetch_dicts(con, f"SELECT * FROM ({rows_sql}) LIMIT {EXAMPLES}")
            ]
            at_least = self.limit > 0 and reader_rows is not None and self._limit_reached()
            raise InvalidInput(
                bad_rows_error(self.source.label(), examples, total, at_least=at_least),
                bad_rows=[b.as_dict() for b in examples],
            )
        return rejects_result(con, self.ctx.workdir, self.source.kind, rows_sql, total)

    def doubtful(self, fast: dict[str, str], parts: Sequence[Path]) -> set[str]:
        """The ``fast`` columns (see :func:`fast_columns`) whose reading by DuckDB's reader
        cannot be trusted: it refused some value (which the checks may take), or it stopped
        keeping its refusals, or it took a date or time beyond what the checks take."""
        con = self.ctx.con
        errors = quote_identifier(self.errors_table)
        try:
            refused = con.sql(
                f"SELECT DISTINCT lower(column_name) FROM {errors} WHERE error_type = 'CAST'"
            ).fetchall()
        except duckdb.CatalogException:
            return set()  # the relation was never read
        out = {str(r[0]) for r in refused} & set(fast)
        if self.limit > 0 and self._limit_reached():
            return set(fast)
        temporal = [n for n, t in fast.items() if t in _FAST_FORMATS and n not in out]
        if temporal and parts:
            # Answered from the Parquet footers: no data is read.
            by_lower = {n.lower(): n for n in self.plan.names}
            ranges = []
            for name in temporal:
                col = quote_identifier(by_lower[name])
                low, high = f"min({col})", f"max({col})"
                ranges.append(
                    f"coalesce({low}::TIMESTAMP BETWEEN {_FAST_RANGE} AND "
                    f"{high}::TIMESTAMP BETWEEN {_FAST_RANGE}, true)"
                )
            listing = ", ".join(sql_string(str(p)) for p in parts)
            within = first_row(con, f"SELECT {', '.join(ranges)} FROM read_parquet([{listing}])")
            assert within is not None  # an aggregate without GROUP BY returns one row
            out |= {name for name, ok in zip(temporal, within, strict=True) if not ok}
        return out

    def _reader_rejects_sql(self) -> str | None:
        con = self.ctx.con
        try:
            first_row(con, f"SELECT 1 FROM {quote_identifier(self.errors_table)} LIMIT 0")
        except duckdb.CatalogException:
            return None  # the relation was never read
        message = (
            "CASE error_type "
            "WHEN 'UNQUOTED VALUE' THEN 'unterminated quote: a quoted value is never closed' "
            f"WHEN 'CAST' THEN {_CAST_MESSAGE} "
            "ELSE regexp_replace(error_message, "
            "'Expected Number of Columns: ([0-9]+) Found: ([0-9]+)', "
            "'expected \\1 columns, found \\2') END"
        )
        # DuckDB reports "too many columns" once per extra field; the last one has the count.
        per_kind = (
            "SELECT scan_id, file_id, line, error_type, "
            "arg_max(error_message, byte_position) AS error_message, "
            "string_agg(DISTINCT column_name, '; ') AS column_name, first(csv_line) AS csv_line "
            f"FROM {quote_identifier(self.errors_table)} "
            # A value that does not parse is reported once per column.
            "GROUP BY scan_id, file_id, line, error_type, "
            "CASE WHEN error_type = 'CAST' THEN column_name END"
        )
        return (
            "SELECT s.file_path AS file, CAST(e.line AS BIGINT) AS line, "
            "coalesce(string_agg(DISTINCT e.column_name, '; ' ORDER BY e.column_name), '') "
            'AS "column", '
            f"string_agg({message}, '; ' ORDER BY error_type, e.column_name) AS error, "
            f"left(rtrim(first(e.csv_line), chr(13) || chr(10)), {RAW_LINE_CHARS}) AS raw_line "
            f"FROM ({per_kind}) e JOIN {quote_identifier(self.scans_table)} s "
            "ON e.scan_id = s.scan_id AND e.file_id = s.file_id "
            "GROUP BY s.file_path, e.line"
        )

    def _limit_reached(self) -> bool:
        """Whether DuckDB stopped keeping rejects of some file (it keeps ``limit`` entries a
        file, and one row may make several: one per extra field, one per unparsable value)."""
        row = first_row(
            self.ctx.con,
            f"SELECT max(n) FROM (SELECT count(*) AS n FROM {quote_identifier(self.errors_table)} "
            "GROUP BY scan_id, file_id)",
        )
        return bool(row and row[0] is not None and int(row[0]) >= self.limit)

    def _check_encoding(self) -> None:
        row = first_row(
            self.ctx.con,
            f"SELECT s.file_path, min(e.line) FROM {quote_identifier(self.errors_table)} e "
            f"JOIN {quote_identifier(self.scans_table)} s "
            "ON e.scan_id = s.scan_id AND e.file_id = s.file_id "
            "WHERE e.error_type = 'INVALID ENCODING' GROUP BY ALL ORDER BY 1 LIMIT 1",
        )
        if row is not None:
            # Setting such rows aside would quietly drop every row with an accent in it.
            raise self.source._encoding_error(str(row[0]), f"first bad bytes on line {row[1]}")

    def _locate_strays(self, want: int | None) -> list[BadRow]:
        """Find the lines of rows whose values did not cast, by reading those files again
        with Python's csv module (DuckDB's reader has no line numbers for good rows)."""
        found: list[BadRow] = []
        if not self.strays.rows:
            return found
        types = self.plan.types
        for group in self.plan.groups:
            for ref in group.files:
                values = self.strays.values.get(ref.path)
                if not values:
                    continue
                left = None if want is None else want - len(found)
                if left is not None and left <= 0:
                    return found
                found += self._scan_file(ref, group.names, values, types, left)
        return found

    def _scan_file(
        self,
        ref: FileRef,
        names: list[str],
        values: dict[str, Counter[str]],
        types: dict[str, str],
        want: int | None,
    ) -> list[BadRow]:
        dialect = self.plan.dialect
        index = {n: i for i, n in enumerate(names)}
        checks = [(index[c], c, set(v)) for c, v in values.items() if c in index]
        expected = sum(sum(v.values()) for v in values.values())
        try:
            with (
                self.files.open(ref) as raw,
                io.TextIOWrapper(raw, _CODECS[dialect.encoding], newline="") as handle,  # type: ignore[type-var]
            ):
                return self._find_lines(ref, handle, names, checks, types, want, expected)
        except OSError as exc:
            raise unreadable(ref.path, exc)

    def _find_lines(
        self,
        ref: FileRef,
        handle: io.TextIOBase,
        names: list[str],
        checks: list[tuple[int, str, set[str]]],
        types: dict[str, str],
        want: int | None,
        expected: int,
    ) -> list[BadRow]:
        out: list[BadRow] = []
        for line, raw_line, record in numbered_records(handle, self.plan.dialect):
            if len(record) != len(names):
                continue  # DuckDB's reader rejected it already
            bad = [(c, record[i]) for i, c, vals in checks if record[i] in vals]
            if not bad:
                continue
            error = "; ".join(
                f'column "{c}": value "{v}" does not read as {_article(types[c])} {types[c]}'
                for c, v in bad
            )
            out.append(
                BadRow(
                    file=ref.path,
                    line=line,
                    column="; ".join(c for c, _ in bad),
                    error=error,
                    raw_line=raw_line[:RAW_LINE_CHARS],
                )
            )
            if (want is not None and len(out) >= want) or len(out) >= expected:
                break
        return out

    def _register_strays(self, rows: list[BadRow]) -> None:
        con = self.ctx.con
        if not rows:
            # Registering an Arrow table makes DuckDB import pandas (a third of a second):
            # not worth it for a table that stays empty, which it does on clean data.
            con.execute(
                f"CREATE TEMP TABLE {quote_identifier(self.strays_table)} (file VARCHAR, "
                'line BIGINT, "column" VARCHAR, error VARCHAR, raw_line VARCHAR)'
            )
            return
        table = pa.table(
            {
                "file": pa.array([r.file for r in rows], pa.string()),
                "line": pa.array([r.line for r in rows], pa.int64()),
                "column": pa.array([r.column for r in rows], pa.string()),
                "error": pa.array([r.error for r in rows], pa.string()),
                "raw_line": pa.array([r.raw_line for r in rows], pa.string()),
            }
        )
        view = f"{self.strays_table}_arrow"
        con.register(view, table)
        try:
            con.execute(
                f"CREATE TEMP TABLE {quote_identifier(self.strays_table)} AS SELECT * FROM {view}"
            )
        finally:
            con.unregister(view)


@register_source
class TsvSource(CsvSource):
    """Tab-separated files (``.tsv``, ``.tab``, ``.txt``); a CSV source with a tab."""

    kind: Literal["tsv"] = "tsv"  # type: ignore[assignment]  # its own kind, same reader
    delimiter: str | None = "\t"

    suffixes: ClassVar[tuple[str, ...]] = (".tsv", ".tab", ".txt", ".tsv.gz", ".tsv.zst")


def unique_names(raw: Sequence[str]) -> list[str]:
    """Header cells as column names: blanks get ``column<i>``, repeats ``name_<n>``
    (compared without case, as DuckDB compares names)."""
    seen: set[str] = set()
    out: list[str] = []
    for i, cell in enumerate(raw):
        base = cell if cell.strip() else f"column{i}"
        name, n = base, 1
        while name.lower() in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name.lower())
        out.append(name)
    return out


def parse_records(lines: Sequence[str], dialect: Dialect) -> list[list[str]]:
    """The non-blank records in ``lines`` (a file's head), parsed like DuckDB would."""
    try:
        return [r for r in csv.reader(iter(lines), **dialect.python()) if r]
    except csv.Error:
        return []


def numbered_records(
    handle: io.TextIOBase, dialect: Dialect
) -> Iterator[tuple[int, str, list[str]]]:
    """``(first line number, raw text, fields)`` of each data record, numbered like DuckDB
    numbers lines (from 1, counting skipped lines and the header)."""
    consumed: list[str] = []
    count = 0

    def physical_lines() -> Iterator[str]:
        nonlocal count
        for line in handle:
            count += 1
            consumed.append(line)
            yield line

    lines = physical_lines()
    for _ in range(dialect.skip):
        if next(lines, None) is None:
            return
    consumed.clear()
    header_pending = dialect.header
    for record in csv.reader(lines, **dialect.python()):
        start = count - len(consumed) + 1
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        if not record:
            continue
        if header_pending:
            header_pending = False
            continue
        yield start, raw, record


def sniff_delimiter(text: str, quote: str, escape: str) -> str:
    """The candidate that splits the sampled lines most consistently into the most fields.

    DuckDB's sniffer gives up on files with a few bad rows (it then reads each line as one
    column); counting fields per line is robust to them."""
    best, best_score = ",", (0.0, 0)
    for candidate in _DELIMITERS:
        if candidate == quote:
            continue
        dialect = Dialect(candidate, quote, escape, True, 0, "utf-8", ("",))
        records = parse_records(io.StringIO(text, newline="").readlines(), dialect)
        records = records[:_PEEK_LINES]
        if not records:
            continue
        width, hits = Counter(len(r) for r in records).most_common(1)[0]
        if width < 2:
            continue
        score = (hits / len(records), width)
        if score > best_score:
            best, best_score = candidate, score
    return best


def line_endings(text: str, quote: str, escape: str) -> set[str]:
    """The kinds of line endings outside quoted values (inside them any kind is data)."""
    found: set[str] = set()
    quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote and ch == quote:
            quoted = not quoted
        elif quoted and escape and escape != quote and ch == escape:
            i += 1
        elif not quoted and ch == "\r":
            if i + 1 < n and text[i + 1] == "\n":
                found.add("\\r\\n")
                i += 1
            elif i + 1 < n:
                found.add("\\r")
        elif not quoted and ch == "\n":
            found.add("\\n")
        i += 1
    return found


# ---- Parquet --------------------------------------------------------------------------------


@register_source
class ParquetSource(Source):
    """Parquet files: a file, a folder (searched recursively, Hive partitions become
    columns) or a glob; local or S3. Files with different columns are combined by name."""

    kind: Literal["parquet"] = "parquet"
    path: str
    columns: list[str] | None = Field(default=None, description="columns to keep, in order")
    filename: bool | str = False

    def scan(self, ctx: ScanContext) -> Scan:
        files = locate(ctx, self.path, suffixes=(".parquet", ".pq", ".parq"), recursive=True)
        empty = [f.path for f in files.files if f.size == 0]
        if empty:
            raise InvalidInput(
                f"{empty[0]} is empty (0 bytes), so it is not a Parquet file. Remove it or "
                "narrow the path to the other files."
            )
        options = ["union_by_name = true"]
        file_col = None
        if self.filename:
            file_col = self.filename if isinstance(self.filename, str) else "filename"
            options.append(f"filename = {sql_string(file_col)}")
        sql = f"SELECT * FROM read_parquet({_file_list(files.files)}, {', '.join(options)})"
        try:
            relation = ctx.con.sql(sql)
        except duckdb.Error as exc:
            raise InvalidInput(
                f"Cannot read {self.label()}: {_duckdb_message(exc)}. Check that every file "
                "the path names is a Parquet file."
            )
        if self.columns:
            available = [c for c in relation.columns if c != file_col]
            picked = match_declared(dict.fromkeys(self.columns, ""), available, self.label())
            keep = [quote_identifier(c) for c in picked]
            if file_col:
                keep.append(quote_identifier(file_col))
            relation = ctx.con.sql(f"SELECT {', '.join(keep)} FROM ({sql})")
        return Scan(relation=relation)


# ---- JSON -----------------------------------------------------------------------------------


@register_source
class JsonSource(Source):
    """JSON files: one array of objects, or one object per line (NDJSON); local or S3."""

    kind: Literal["json"] = "json"
    path: str
    format: Literal["auto", "array", "newline_delimited"] = "auto"
    columns: dict[str, str] | None = Field(
        default=None, description="read exactly these keys with these types"
    )
    sample_size: int = Field(default=20480, description="objects read to choose types; -1: all")
    date_format: str | None = None
    timestamp_format: str | None = None
    filename: bool | str = False

    def scan(self, ctx: ScanContext) -> Scan:
        suffixes = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")
        files = _drop_empty(locate(ctx, self.path, suffixes=suffixes), self.path)
        options = [f"format = {sql_string(self.format)}", f"sample_size = {self.sample_size}"]
        if self.columns:
            check_type_names(ctx.con, self.columns)
            struct = ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in self.columns.items())
            options.append(f"columns = {{{struct}}}")
        else:
            options.append("union_by_name = true")
        if self.date_format:
            options.append(f"dateformat = {sql_string(self.date_format)}")
        if self.timestamp_format:
            options.append(f"timestampformat = {sql_string(self.timestamp_format)}")
        if self.filename:
            name = self.filename if isinstance(self.filename, str) else "filename"
            options.append(f"filename = {sql_string(name)}")
        sql = f"SELECT * FROM read_json({_file_list(files.files)}, {', '.join(options)})"
        try:
            # Binding reads the sample, so most malformed files fail here, with a position.
            relation = ctx.con.sql(sql)
        except duckdb.Error as exc:
            raise InvalidInput(
                f"Cannot read {self.label()}: {json_position(_duckdb_message(exc))} Fix the "
                'file, or set format="array" or "newline_delimited" if the detected layout is '
                "wrong."
            )
        return Scan(relation=relation)


def json_position(message: str) -> str:
    """DuckDB 2.0 numbers JSON lines and records from 2 (a bad first line is "line 2");
    the message is corrected to count from 1 like an editor does."""
    return re.sub(
        r"\b(in line|in record/value) (\d+)\b",
        lambda m: f"{m.group(1)} {max(1, int(m.group(2)) - 1)}",
        message,
    )


# ---- Excel ----------------------------------------------------------------------------------

_Kind = Literal["BOOLEAN", "BIGINT", "DOUBLE", "TIMESTAMP", "DATE", "TIME", "VARCHAR"]


def _cell_kind(value: Any) -> _Kind:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, time):
        return "TIME"
    return "VARCHAR"


def _cell_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _native_array(values: list[Any], kinds: set[_Kind]) -> pa.Array | None:
    """An Arrow array when the column's cells share one kind (DOUBLE may mix in integers,
    TIMESTAMP dates); None when the column needs reading as text."""
    if kinds <= {"BIGINT"}:
        return pa.array(values, pa.int64())
    if kinds <= {"BIGINT", "DOUBLE"}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {"BOOLEAN"}:
        return pa.array(values, pa.bool_())
    if kinds == {"DATE"}:
        return pa.array(values, pa.date32())
    if kinds <= {"TIMESTAMP", "DATE"}:
        return pa.array(
            [
                v if v is None or isinstance(v, datetime) else datetime(v.year, v.month, v.day)
                for v in values
            ],
            pa.timestamp("us"),
        )
    if kinds == {"TIME"}:
        return pa.array(values, pa.time64("us"))
    if kinds == {"VARCHAR"}:
        return pa.array(values, pa.string())
    return None


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


@dataclass
class Sheet:
    file: str
    name: str
    names: list[str]
    rows: list[tuple[int, list[Any]]]  # (Excel row number, cells)
    too_wide: list[BadRow]


@register_source
class ExcelSource(Source):
    """Excel workbooks (``.xlsx``): one sheet, several, or all; a file, folder or glob.

    Cells keep their Excel types. A column whose cells mix types (numbers with a stray
    ``"n/a"``) is typed like a CSV column: the stray cells are bad rows.
    """

    kind: Literal["excel"] = "excel"
    path: str
    sheet: int | str | list[int | str] | None = Field(
        default=0, description="sheet name or 0-based index, a list of them, or None for all"
    )
    header_row: int | None = Field(
        default=1, ge=1, description="1-based row holding the column names; None: no header"
    )
    skip_rows: int = Field(default=0, ge=0, description="rows skipped between header and data")
    columns: dict[str, str] | None = None
    null_values: list[str] | None = Field(default=None, description="text cells read as missing")
    sheet_column: str | None = Field(default=None, description="add each row's sheet name")
    filename: bool | str = False

    def scan(self, ctx: ScanContext) -> Scan:
        files = locate(ctx, self.path, suffixes=(".xlsx", ".xlsm"))
        if self.columns:
            check_type_names(ctx.con, self.columns)
        sheets = [s for ref in files.files for s in self._read_workbook(files, ref)]
        if not any(s.rows for s in sheets):
            raise InvalidInput(
                f"{self.label()} has no rows below its header. Check sheet={self.sheet!r}, "
                "header_row and skip_rows."
            )
        con = ctx.con
        views: list[str] = []
        selects: list[str] = []
        bad: list[BadRow] = []
        for sheet in sheets:
            if not sheet.rows and not sheet.too_wide:
                continue
            view = f"mw_excel_{uuid.uuid4().hex[:12]}"
            select, sheet_bad = self._sheet_sql(con, sheet, view)
            views.append(view)
            bad += sheet.too_wide + sheet_bad
            if select:
                selects.append(select)

        def close() -> None:
            for view in views:
                with contextlib.suppress(duckdb.Error):  # the connection may be closed already
                    con.unregister(view)

        bad.sort(key=lambda b: (b.file, b.line))
        if bad and ctx.bad_rows == "fail":
            close()
            raise InvalidInput(
                bad_rows_error(self.label(), bad, len(bad), at_least=False),
                bad_rows=[b.as_dict() for b in bad[:EXAMPLES]],
            )
        rejects = self._rejects(ctx, bad) if bad else None
        relation = con.sql(" UNION ALL BY NAME ".join(selects)) if selects else None
        if relation is None:
            close()
            raise InvalidInput(f"Every row of {self.label()} is a bad row; nothing to ingest.")
        return Scan(relation=relation, rejects=lambda: rejects, close=close)

    def _read_workbook(self, files: FileSet, ref: FileRef) -> list[Sheet]:
        import zipfile

        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            with files.open(ref) as handle:
                data = handle.read()
        except OSError as exc:
            raise unreadable(ref.path, exc)
        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise InvalidInput(
                f"{ref.path} is not an .xlsx workbook ({exc}). Old .xls files must be saved "
                "as .xlsx first; CSV exports go through CsvSource."
            )
        try:
            names = list(book.sheetnames)
            wanted: list[int | str]
            if self.sheet is None:
                wanted = list(names)
            elif isinstance(self.sheet, list):
                wanted = list(self.sheet)
            else:
                wanted = [self.sheet]
            out: list[Sheet] = []
            for want in wanted:
                if isinstance(want, int):
                    if not 0 <= want < len(names):
                        raise NotFound(
                            f"{ref.path} has {len(names)} sheet(s); there is no sheet {want} "
                            f"(sheets count from 0): {', '.join(names)}."
                        )
                    title = names[want]
                elif want in names:
                    title = want
                else:
                    raise NotFound(
                        f"{ref.path} has no sheet {want!r}. Its sheets: {', '.join(names)}."
                    )
                out.append(
                    self._read_sheet(ref.path, title, book[title].iter_rows(values_only=True))
                )
            return out
        finally:
            book.close()

    def _read_sheet(self, path: str, title: str, cells: Iterator[tuple[Any, ...]]) -> Sheet:
        nulls = set(self.null_values if self.null_values is not None else [""])
        file = f"{path}#{title}"
        header: list[Any] | None = None
        rows: list[tuple[int, list[Any]]] = []
        first_data = (self.header_row or 0) + self.skip_rows + 1
        for number, row in enumerate(cells, start=1):
            values = [None if isinstance(v, str) and v.strip() in nulls else v for v in row]
            if self.header_row is not None and number == self.header_row:
                header = list(row)
            elif number >= first_data and any(v is not None for v in values):
                rows.append((number, values))
        if self.header_row is not None:
            raw = list(header or [])
            while raw and raw[-1] in (None, ""):
                raw.pop()
            names = unique_names(["" if v is None else _cell_text(v) for v in raw])
        else:
            width = max(
                (max(i for i, v in enumerate(r) if v is not None) + 1 for _, r in rows), default=0
            )
            names = [f"column{i}" for i in range(width)]
        too_wide: list[BadRow] = []
        kept: list[tuple[int, list[Any]]] = []
        for number, values in rows:
            extra = [i for i, v in enumerate(values) if i >= len(names) and v is not None]
            if extra:
                letter = _column_letter(extra[0])
                too_wide.append(
                    BadRow(
                        file=file,
                        line=number,
                        column=letter,
                        error=f"cell {letter}{number} has a value but column {letter} has no "
                        "header",
                        raw_line=_row_text(values),
                    )
                )
                continue
            kept.append((number, values + [None] * (len(names) - len(values))))
        return Sheet(file=file, name=title, names=names, rows=kept, too_wide=too_wide)

    def _sheet_sql(
        self, con: duckdb.DuckDBPyConnection, sheet: Sheet, view: str
    ) -> tuple[str | None, list[BadRow]]:
        """Register the sheet as an Arrow table; returns the SELECT of its good rows and
        its bad rows (found here: the sheet is in memory)."""
        declared = match_declared(self.columns or {}, sheet.names, sheet.file)
        arrays: dict[str, pa.Array] = {_ROW_COL: pa.array([n for n, _ in sheet.rows], pa.int64())}
        text_columns: list[str] = []
        for i, name in enumerate(sheet.names):
            values = [r[i] for _, r in sheet.rows]
            kinds = {_cell_kind(v) for v in values if v is not None}
            native = None if name in declared else _native_array(values, kinds or {"VARCHAR"})
            if native is None:
                native = pa.array(
                    [None if v is None else _cell_text(v) for v in values], pa.string()
                )
                if name not in declared:
                    text_columns.append(name)
            arrays[name] = native
        con.register(view, pa.table(arrays))
        types = dict(declared)
        types.update(infer_types(con, f"SELECT * FROM {view}", text_columns, Formats()))
        checks: list[tuple[str, str]] = []
        selects: list[str] = []
        for name in sheet.names:
            col = quote_identifier(name)
            if name in types:
                ok, value = strict_cast(col, types[name], Formats(), declared=name in declared)
                if ok != "TRUE":
                    checks.append((name, ok))
                selects.append(f"{value} AS {col}")
            else:
                selects.append(col)
        if self.sheet_column:
            selects.append(f"{sql_string(sheet.name)} AS {quote_identifier(self.sheet_column)}")
        if self.filename:
            file_col = self.filename if isinstance(self.filename, str) else "filename"
            selects.append(
                f"{sql_string(sheet.file.rsplit('#', 1)[0])} AS {quote_identifier(file_col)}"
            )
        bad: list[BadRow] = []
        where = ""
        if checks:
            all_ok = " AND ".join(ok for _, ok in checks)
            failing = ", ".join(f"CASE WHEN NOT {ok} THEN {sql_string(n)} END" for n, ok in checks)
            cells = ", ".join(quote_identifier(n) for n, _ in checks)
            rows = {n: r for n, r in sheet.rows}
            for number, cols, vals in con.sql(
                f"SELECT {_ROW_COL}, [{failing}], [{cells}] FROM {view} WHERE NOT ({all_ok})"
            ).fetchall():
                pairs = [(c, v) for c, v in zip(cols, vals, strict=True) if c is not None]
                bad.append(
                    BadRow(
                        file=sheet.file,
                        line=int(number),
                        column="; ".join(c for c, _ in pairs),
                        error="; ".join(
                            f'column "{c}": value "{v}" does not read as '
                            f"{_article(types[c])} {types[c]}"
                            for c, v in pairs
                        ),
                        raw_line=_row_text(rows[int(number)]),
                    )
                )
            where = f" WHERE {all_ok}"
        if len(bad) == len(sheet.rows):
            return None, bad
        return f"SELECT {', '.join(selects)} FROM {view}{where}", bad

    def _rejects(self, ctx: ScanContext, bad: list[BadRow]) -> Rejects:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        side = ctx.workdir / f"rejects-{self.kind}-{uuid.uuid4().hex[:8]}.csv"
        with side.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=["file", "line", "column", "error", "raw_line"])
            writer.writeheader()
            writer.writerows(b.as_dict() for b in bad)
        return Rejects(
            count=len(bad), side_file=side, examples=[b.as_dict() for b in bad[:EXAMPLES]]
        )


def _row_text(values: Sequence[Any]) -> str:
    out = io.StringIO()
    cells = list(values)
    while cells and cells[-1] is None:
        cells.pop()
    csv.writer(out, lineterminator="").writerow(["" if v is None else _cell_text(v) for v in cells])
    return out.getvalue()[:RAW_LINE_CHARS]
