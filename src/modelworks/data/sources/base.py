"""The source contract every connector implements.

A source's fields are its parameters; they are stored with each version it makes (so they
must never hold a secret's value: secrets are written as ``${secret:NAME}`` references and
expanded only inside :meth:`Source.scan`). ``scan`` returns a DuckDB relation, which the
dataset service writes to Parquet in one streaming ``COPY``; file sources hand DuckDB its own
readers (``read_csv``...), others an Arrow ``RecordBatchReader`` over what they fetch.

Sources that resume (incremental SQL, streams) read the position the previous ingest
stored (``ctx.cursor``) and return the new one in :attr:`Scan.cursor`; the service stores it
in the same transaction as the version, so a crash can neither lose nor repeat rows.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelworks.core.errors import InvalidInput

if TYPE_CHECKING:
    import duckdb

    from modelworks.core.config import Settings
    from modelworks.data.schemas import BadRows

SOURCE_KINDS: dict[str, type[Source]] = {}
Written = TypeVar("Written", bound=Sequence[Path])


@dataclass
class ScanContext:
    con: duckdb.DuckDBPyConnection
    settings: Settings
    workdir: Path  # private scratch folder for this ingest; removed afterwards
    cursor: dict[str, Any] | None = None  # position stored by the last ingest of this source
    bad_rows: BadRows = "fail"


@dataclass
class Rejects:
    """Rows set aside instead of failing the ingest (``bad_rows="quarantine"``)."""

    count: int
    side_file: Path | None = None  # CSV with line number, error and the raw line
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Scan:
    """What a source hands the writer. ``relation=None`` means there is nothing new."""

    relation: duckdb.DuckDBPyRelation | None
    cursor: dict[str, Any] | None = None  # the new position, stored with the version
    # Called after the relation was written (e.g. to read DuckDB's reject table).
    rejects: Callable[[], Rejects | None] | None = None
    # Called when the ingest ends, committed or not (close clients, drop temp tables).
    close: Callable[[], None] | None = None
    # Called after the relation was written, with the parts: a scan to write instead when
    # this one took a shortcut that the written data shows was not safe to take (CSV: the
    # reader's own parsing refused or stretched a value), else None.
    retry: Callable[[Sequence[Path]], Scan | None] | None = None
    message: str = ""


def write_scan(
    scan: Scan, write: Callable[[duckdb.DuckDBPyRelation], Written]
) -> tuple[Scan, Written]:
    """Write ``scan``'s relation with ``write``; while the scan asks to be read again
    (:attr:`Scan.retry`), close it and write the scan it offers instead. Returns the scan
    whose rows were kept (its ``rejects`` and ``close`` are the ones to call) and what
    ``write`` returned for it."""
    if scan.relation is None:
        raise ValueError("a scan with nothing to write")
    written = write(scan.relation)
    while scan.retry is not None and (again := scan.retry(written)) is not None:
        if scan.close is not None:
            scan.close()
        scan = again
        if scan.relation is None:
            raise ValueError("a retry with nothing to write")
        try:
            written = write(scan.relation)
        except BaseException:
            if scan.close is not None:
                scan.close()
            raise
    return scan, written


class Source(BaseModel, ABC):
    """Base class of connectors. Subclasses set ``kind`` and implement :meth:`scan`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    resumable: ClassVar[bool] = False  # True when scan() honours ctx.cursor

    @abstractmethod
    def scan(self, ctx: ScanContext) -> Scan:
        """Start reading: return a relation over the rows to ingest."""

    def describe(self) -> dict[str, Any]:
        """The parameters stored with each version (secret references, never values)."""
        return self.model_dump(mode="json", exclude_none=True)

    def label(self) -> str:
        """A short human name for lineage graphs, e.g. ``csv data/churn.csv``."""
        params = self.describe()
        main = next(
            (str(params[k]) for k in ("path", "url", "table", "query", "stream") if k in params),
            "",
        )
        return f"{self.kind} {main}".strip()

    def identity(self) -> dict[str, Any]:
        """What identifies the stream of rows (for cursors and lineage); by default all
        parameters. Sources whose tuning knobs (chunk sizes...) must not start a new cursor
        override this."""
        return self.describe()

    @property
    def source_key(self) -> str:
        raw = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make a connector available to :func:`source_from_spec`."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} must give `kind` a string default")
    SOURCE_KINDS[kind] = cls
    return cls


def source_from_spec(spec: dict[str, Any] | Source) -> Source:
    """A connector from its JSON form, e.g. ``{"kind": "csv", "path": "data/*.csv"}``."""
    if isinstance(spec, Source):
        return spec
    _load_builtin_sources()
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in SOURCE_KINDS:
        known = ", ".join(sorted(SOURCE_KINDS))
        raise InvalidInput(f"Unknown source kind {kind!r}. Known kinds: {known}.")
    try:
        return SOURCE_KINDS[kind].model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'source'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"The {kind} source's parameters are not valid: {problems}.") from None


def _load_builtin_sources() -> None:
    """Import the built-in connectors so they register themselves."""
    import importlib

    for module in ("files", "sql", "http", "streams", "frames"):
        try:
            importlib.import_module(f"modelworks.data.sources.{module}")
        except ModuleNotFoundError as exc:  # a connector whose optional extra is missing
            if exc.name and exc.name.startswith("modelworks."):
                raise
