"""Where dataset bytes live: Parquet parts written by DuckDB, adopted into the artifact store.

A version is an ordered list of Parquet parts, each an artifact-store object keyed by its
sha256. Writing goes through one DuckDB ``COPY ... TO`` (zstd level 1, row groups of 122,880
rows), which streams: a source never has to fit in memory. Each write makes one part, so a
version has a part per ingest or append it holds; inside a part the row groups are what
readers split work by. The writer also hands back each float column's NaN count, which the
version's profile needs and would otherwise have to read every float value for.
Reading hands DuckDB, pyarrow or Polars local file paths: on a local store the objects
themselves (hashed once per process before first use), on object storage verified copies in
``HOME/cache/objects``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from modelworks.core.artifacts import ObjectInfo, hash_and_sync
from modelworks.core.errors import CorruptData
from modelworks.data.schemas import ColumnSchema, PartFile

if TYPE_CHECKING:
    from modelworks.core.artifacts import ArtifactStore
    from modelworks.core.config import Settings

# zstd at level 1: on typical tables its files are within a few percent of level 3's (DuckDB's
# default) and writing them takes a fifth less CPU, which an ingest spends on one pass anyway.
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 122880"
_verified: dict[str, tuple[int, int]] = {}
_verified_lock = threading.Lock()


def connect(settings: Settings, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the project's limits and spill folder.

    ``threads=1`` makes results (and so written Parquet bytes) independent of scheduling,
    which recipes that must rebuild bit for bit rely on.
    """
    spill = settings.home_path / "tmp" / "duckdb"
    spill.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "memory_limit": settings.duckdb_memory_limit,
        "temp_directory": str(spill),
        "preserve_insertion_order": True,
        # Nothing is ever downloaded at run time: extensions come only with the wheel.
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET enable_progress_bar = false")  # a session option, not a config key
    return con


def register_object_storage(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Let DuckDB read ``s3://`` paths through fsspec (s3fs) with the configured endpoint."""
    import fsspec

    from modelworks.core.artifacts import ArtifactStore

    options = ArtifactStore.s3_options(settings)
    con.register_filesystem(fsspec.filesystem("s3", use_listings_cache=False, **options))


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class FloatCounts:
    """How many of a float column's values in one part are non-null, and how many are NaN.

    Parquet statistics leave NaN out of a float column's min and max, so a profile needs these
    to put NaN back; the writer counts them anyway (``RETURN_STATS``), which saves the profile
    a scan of every float value."""

    values: int
    nans: int


class WrittenParts(list[Path]):
    """The parts :func:`write_parts` wrote, in read order: a list of their paths, as callers
    that only read them expect, carrying ``float_counts``: for each part (by its path as a
    string) the :class:`FloatCounts` of each top-level float column, by column name."""

    def __init__(
        self, paths: Iterable[Path], float_counts: dict[str, dict[str, FloatCounts]]
    ) -> None:
        super().__init__(paths)
        self.float_counts = float_counts


def write_parts(
    con: duckdb.DuckDBPyConnection,
    relation: duckdb.DuckDBPyRelation,
    out_dir: Path,
) -> WrittenParts:
    """Write ``relation`` as zstd Parquet into ``out_dir``; returns the part, with the NaN
    counts of its float columns as the writer saw them (no extra scan).

    One COPY writes one part. DuckDB 2.0 can roll its output into several files
    (``FILE_SIZE_BYTES``), but with more than one thread that loses the order of rows coming
    from a streamed source, which would make the same data hash differently; so a version
    grows by parts through appends instead (each append adds its own part).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    view = "mw_write_input"
    target = out_dir / "part_0.parquet"
    con.register(view, relation)
    try:
        # RETURN_STATS changes what COPY returns (a row of statistics per file), not the bytes
        # it writes, so a version's content hash is the same with or without it.
        result = con.execute(
            f"COPY (SELECT * FROM {view}) TO {sql_string(str(target))} "
            f"({PARQUET_OPTIONS}, RETURN_STATS)"
        )
        fields = [d[0] for d in result.description or ()]
        written = [dict(zip(fields, row, strict=True)) for row in result.fetchall()]
    finally:
        con.unregister(view)
    # The COPY reports the file it wrote (one, even for no rows) with its statistics.
    paths = [Path(w["filename"]) for w in written]
    counts = {
        str(p): _float_counts(p, w["column_statistics"] or {})
        for p, w in zip(paths, written, strict=True)
    }
    return WrittenParts(paths, counts)


def _float_counts(path: Path, statistics: dict[str, dict[str, str]]) -> dict[str, FloatCounts]:
    """The float columns' counts from one file's ``RETURN_STATS`` column statistics.

    Those are keyed by the column's quoted name (nested fields as ``"s"."a"``) and hold strings;
    a column without ``nan_count`` (an empty file has none) is left out, so its profile counts
    NaN by reading, as for parts written before."""
    out: dict[str, FloatCounts] = {}
    for f in pq.read_schema(path):
        if not pa.types.is_floating(f.type):
            continue
        stats = statistics.get(quote_identifier(f.name), {})
        if not {"nan_count", "num_values", "null_count"} <= stats.keys():
            continue
        out[f.name] = FloatCounts(
            values=int(stats["num_values"]) - int(stats["null_count"]),
            nans=int(stats["nan_count"]),
        )
    return out


def part_rows(path: Path) -> int:
    return int(pq.read_metadata(path).num_rows)


def arrow_schema(paths: Sequence[str | Path]) -> pa.Schema:
    """The schema of a version: the first part's, widened by columns later parts add."""
    schemas = [pq.read_schema(p) for p in paths]
    if not schemas:
        return pa.schema([])
    if len(schemas) == 1:
        return schemas[0]
    return pa.unify_schemas(schemas, promote_options="permissive")


def columns_of(schema: pa.Schema) -> list[ColumnSchema]:
    return [ColumnSchema(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


def content_hash(files: Sequence[PartFile]) -> str:
    """The version's identity: a hash over its parts' hashes, in read order."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.sha256}:{f.size}:{f.rows}\n".encode())
    return digest.hexdigest()


class BackgroundHashes:
    """The sha256 of written parts, computed on a thread (which also syncs them to disk)
    while the ingest checks, validates and profiles them: DuckDB leaves a little of two
    cores free there, and the sync waits on the disk, not on a core."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mw-part-hash")
        self._done = self._pool.submit(lambda: [hash_and_sync(p) for p in paths])

    def result(self) -> list[ObjectInfo]:
        return self._done.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def publish_parts(
    artifacts: ArtifactStore,
    paths: Sequence[Path],
    hashed: Sequence[ObjectInfo] | None = None,
) -> list[PartFile]:
    """Adopt written parts into the artifact store (moved, not copied, when local);
    ``hashed``, one per part, is what :class:`BackgroundHashes` computed of them."""
    out: list[PartFile] = []
    for i, path in enumerate(paths):
        rows = part_rows(path)
        info = artifacts.adopt_file(path, hashed=hashed[i] if hashed else None)
        out.append(PartFile(sha256=info.sha256, size=info.size, rows=rows))
        if artifacts.is_local:
            _remember_verified(artifacts, info.sha256)
    return out


def cache_path(settings: Settings, sha256: str) -> Path:
    """Where a verified local copy of a remote object is kept."""
    return settings.home_path / "cache" / "objects" / sha256[:2] / sha256


def readable_paths(
    artifacts: ArtifactStore, settings: Settings, files: Sequence[PartFile | dict[str, Any]]
) -> list[str]:
    """Local paths of a version's parts, each checked against its sha256 before first use."""
    paths: list[str] = []
    for f in files:
        part = f if isinstance(f, PartFile) else PartFile.model_validate(f)
        local = artifacts.local_path(part.sha256)
        if local is not None:
            _verify_local(artifacts, part.sha256, local)
            paths.append(local)
            continue
        target = cache_path(settings, part.sha256)
        if not (target.is_file() and target.stat().st_size == part.size):
            artifacts.download(part.sha256, target)  # verifies while copying
        paths.append(str(target))
    return paths


def _verify_local(artifacts: ArtifactStore, sha256: str, path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise artifacts._not_found(sha256) from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _verified_lock:
        if _verified.get(sha256) == stamp:
            return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != sha256:
        raise CorruptData(
            f"Dataset part {sha256[:12]} is damaged on disk (its bytes hash to {actual[:12]}). "
            "Restore it from a backup or ingest the data again."
        )
    with _verified_lock:
        _verified[sha256] = stamp


def _remember_verified(artifacts: ArtifactStore, sha256: str) -> None:
    path = artifacts.local_path(sha256)
    if path is None:
        return
    st = os.stat(path)
    with _verified_lock:
        _verified[sha256] = (st.st_mtime_ns, st.st_size)


def relation_of(con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> duckdb.DuckDBPyRelation:
    """A DuckDB relation over a version's parts (columns added by later parts read as NULL)."""
    if not paths:
        raise ValueError("a version has at least one part")
    listing = ", ".join(sql_string(p) for p in paths)
    return con.sql(f"SELECT * FROM read_parquet([{listing}], union_by_name = true)")
