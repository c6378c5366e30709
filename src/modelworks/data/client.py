"""The data SDK: ``ws.datasets`` and the dataset versions it hands out.

Same API on both transports (:mod:`modelworks.data.transport`). Reading is always local:
a version's Parquet parts are verified files on this machine (remote workspaces download
each part once into ``MODELWORKS_HOME/cache/objects``), read by pyarrow, pandas, Polars or
DuckDB.

>>> v = ws.datasets.ingest(df, "churn", message="January export")  # doctest: +SKIP
>>> v = ws.datasets.get("churn@latest")  # doctest: +SKIP
>>> v.ref, v.row_count  # doctest: +SKIP
('churn@3', 10000)
>>> v.to_pandas().head()  # doctest: +SKIP
>>> v.to_duckdb().filter("tenure > 12").count("*")  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import html
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from modelworks.core.errors import InvalidInput
from modelworks.core.html_tables import html_table

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from modelworks.client import Workspace
    from modelworks.core.schemas import Page
    from modelworks.data.schemas import (
        BadRows,
        ColumnSchema,
        DatasetOut,
        IngestMode,
        IngestResult,
        LineageOut,
        PartFile,
        PreviewOut,
        Profile,
        RebuildResult,
        RejectsOut,
        SchemaChanges,
        SchemaPolicy,
        ValidationRunOut,
        VersionOut,
    )
    from modelworks.data.sources.base import Source
    from modelworks.data.transport import DataBackend, FileFormat

__all__ = ["DatasetVersion", "Datasets", "Preview"]


def _ref(ref: str | DatasetVersion) -> str:
    return ref.ref if isinstance(ref, DatasetVersion) else ref


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover - the loop always returns


class Preview:
    """One page of a version's rows, as the server shows them (JSON-safe values).

    >>> ws.datasets.get("churn").preview(limit=5)  # doctest: +SKIP
    """

    def __init__(self, out: PreviewOut) -> None:
        self.out = out

    @property
    def ref(self) -> str:
        return self.out.ref

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.out.columns]

    @property
    def rows(self) -> list[list[Any]]:
        return self.out.rows

    @property
    def total(self) -> int:
        return self.out.total

    def __len__(self) -> int:
        return len(self.out.rows)

    def records(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.out.rows]

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.out.rows, columns=self.columns)

    def _span(self) -> str:
        if not self.out.rows:
            return f"no rows from offset {self.out.offset} of {self.total}"
        last = self.out.offset + len(self.out.rows)
        return f"rows {self.out.offset + 1}-{last} of {self.total}"

    def __repr__(self) -> str:
        return f"<Preview {self.ref} {self._span()}: {self.columns}>"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r)
            + "</tr>"
            for r in self.out.rows
        )  # fmt: skip
        caption = f"{self.ref}: {self._span()}"
        return (
            f"<table><caption>{html.escape(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


class DatasetVersion:
    """One immutable version of a dataset: its metadata, and readers for its rows.

    It is pinned to its number: a version fetched as ``churn@latest`` keeps reading the
    same rows after newer versions arrive (``.ref`` is ``churn@N``).

    >>> v = ws.datasets.get("churn@golden")  # doctest: +SKIP
    >>> v.columns, v.profile.column("tenure").mean  # doctest: +SKIP
    >>> df = v.to_polars()  # doctest: +SKIP
    """

    def __init__(
        self,
        datasets: Datasets,
        info: VersionOut,
        ingest_result: IngestResult | None = None,
    ) -> None:
        self._datasets = datasets
        self.info = info
        # What the ingest that made this version reported (rows added, rejects, validation),
        # when the version object came from ws.datasets.ingest().
        self.ingest_result = ingest_result
        self._profile: Profile | None = info.profile
        self._paths: list[str] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    # -- metadata
    @property
    def ref(self) -> str:
        """``name@N``: the exact version, whatever reference fetched it."""
        return self.info.ref

    @property
    def dataset(self) -> str:
        return self.info.dataset

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def status(self) -> Literal["ready", "quarantined"]:
        return self.info.status

    @property
    def mode(self) -> IngestMode:
        return self.info.mode

    @property
    def row_count(self) -> int:
        return self.info.row_count

    @property
    def size_bytes(self) -> int:
        return self.info.size_bytes

    @property
    def columns(self) -> list[ColumnSchema]:
        return self.info.columns

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.info.columns]

    @property
    def schema_changes(self) -> SchemaChanges:
        """Columns added, removed or retyped since the previous version."""
        return self.info.schema_changes

    @property
    def tags(self) -> list[str]:
        return self.info.tags

    @property
    def files(self) -> list[PartFile]:
        return self.info.files

    @property
    def content_hash(self) -> str:
        return self.info.content_hash

    @property
    def source(self) -> dict[str, Any]:
        return self.info.source

    @property
    def recipe(self) -> dict[str, Any] | None:
        return self.info.recipe

    @property
    def rejects(self) -> RejectsOut | None:
        return self.info.rejects

    @property
    def validation_success(self) -> bool | None:
        return self.info.validation_success

    @property
    def message(self) -> str:
        return self.info.message

    @property
    def created_by(self) -> str:
        return self.info.created_by

    @property
    def created_at(self) -> datetime:
        return self.info.created_at

    @property
    def profile(self) -> Profile:
        """Per-column statistics (fetched on first use when the listing left them out)."""
        if self._profile is None:
            self._profile = self._datasets.profile(self.ref)
        return self._profile

    def refresh(self) -> DatasetVersion:
        """The same version fetched again (its tags may have moved)."""
        return self._datasets.get(self.ref)

    # -- reading
    def paths(self) -> list[str]:
        """Local paths of the version's verified Parquet parts, in read order."""
        with self._lock:
            if self._paths is None:
                _, self._paths = self._datasets._backend.read_paths(
                    self._datasets._ws.project, self.ref
                )
            return list(self._paths)

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows as a pyarrow Table (columns a later append added are null before it)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if columns is not None:
            self._check_columns(columns)
        tables = [pq.read_table(p) for p in self.paths()]
        # Parts are read as written and stacked by name, as DuckDB's union_by_name does.
        table = (
            tables[0]
            if len(tables) == 1
            else pa.concat_tables(tables, promote_options="permissive")
        )
        return table.select(list(columns)) if columns is not None else table

    def to_pandas(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows as a pandas DataFrame; ``frame.attrs["modelworks.dataset"]`` is ``name@N``,
        so autologging records which version a model was trained on."""
        frame = self.to_arrow(columns).to_pandas()
        frame.attrs["modelworks.dataset"] = self.ref
        return frame

    def to_polars(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """All rows as a Polars DataFrame."""
        import polars as pl

        return cast("pl.DataFrame", pl.from_arrow(self.to_arrow(columns)))  # Table -> frame

    def to_duckdb(self, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        """A lazy DuckDB relation over the parts: filter, join and aggregate without loading
        everything. With no ``con``, a new in-memory connection is made (with the store's
        memory limit) and kept alive as long as this version object.

        >>> v.to_duckdb().filter("tenure > 12").aggregate("avg(charges)")  # doctest: +SKIP
        """
        from modelworks.data import storage

        if con is None:
            con = storage.connect(self._datasets._backend.settings)
            self._con = con  # a relation needs its connection open
        return storage.relation_of(con, self.paths())

    def preview(
        self, limit: int = 20, offset: int = 0, columns: Sequence[str] | None = None
    ) -> Preview:
        """A page of rows, computed where the data lives (no full download)."""
        return self._datasets.preview(self.ref, limit=limit, offset=offset, columns=columns)

    def _check_columns(self, columns: Sequence[str]) -> None:
        known = self.column_names
        missing = [c for c in columns if c not in known]
        if missing:
            raise InvalidInput(
                f"{self.ref} has no column(s) {', '.join(map(repr, missing))}; it has "
                f"{', '.join(known)}."
            )

    # -- shortcuts to ws.datasets for this version
    def tag(self, tag: str) -> DatasetVersion:
        return self._datasets.tag(self.ref, tag)

    def validate(self, suite: Mapping[str, Any] | str | None = None) -> ValidationRunOut:
        return self._datasets.validate(self.ref, suite)

    def lineage(
        self, direction: Literal["up", "down", "both"] = "both", depth: int = 10
    ) -> LineageOut:
        return self._datasets.lineage(self.ref, direction=direction, depth=depth)

    # -- display
    def __repr__(self) -> str:
        flag = "" if self.status == "ready" else f" {self.status}"
        return (
            f"<DatasetVersion {self.ref}{flag} rows={self.row_count} "
            f"columns={len(self.columns)} size={_human_bytes(self.size_bytes)}>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetVersion) and other.info.id == self.info.id

    def __hash__(self) -> int:
        return hash(self.info.id)

    def _repr_html_(self) -> str:
        i = self.info
        rows: list[tuple[str, Any]] = [
            ("ref", i.ref),
            ("status", i.status),
            ("rows", f"{i.row_count:,}"),
            ("size", _human_bytes(i.size_bytes)),
            ("parts", len(i.files)),
            ("mode", i.mode),
            ("tags", ", ".join(i.tags)),
            ("message", i.message),
            ("created", f"{i.created_at:%Y-%m-%d %H:%M:%S} by {i.created_by}"),
        ]
        if i.validation_success is not None:
            rows.append(("validation", "passed" if i.validation_success else "failed"))
        if i.rejects is not None:
            rows.append(("rejected rows", i.rejects.count))
        changes = i.schema_changes
        if not changes.empty:
            parts = [f"+{c.name}" for c in changes.added] + [f"-{c.name}" for c in changes.removed]
            parts += [f"{r.get('name')}: {r.get('from')} -> {r.get('to')}" for r in changes.retyped]
            rows.append(("schema changes", ", ".join(parts)))
        meta = html_table(f"Dataset version {i.ref}", rows)
        stats = {c.name: c for c in (self._profile.columns if self._profile else [])}
        head = "<tr><th>column</th><th>type</th><th>nulls</th><th>distinct</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.type)}</td>"
            f"<td>{_pct(stats[c.name].null_rate) if c.name in stats else ''}</td>"
            f"<td>{stats[c.name].distinct if c.name in stats else ''}</td></tr>"
            for c in i.columns
        )
        return f"{meta}<table><caption>Columns</caption>{head}{body}</table>"


def _pct(rate: float) -> str:
    return f"{rate:.1%}"


class Datasets:
    """Versioned datasets of the workspace's project: ``ws.datasets``.

    >>> ws.datasets.ingest("data/churn.csv", "churn")  # doctest: +SKIP
    >>> ws.datasets.ingest(df, "churn", mode="append")  # doctest: +SKIP
    >>> ws.datasets.ingest({"kind": "sql", "url": "${secret:DB}", "table": "t"}, "t")
    ... # doctest: +SKIP
    >>> ws.datasets.tag("churn@2", "golden")  # doctest: +SKIP
    >>> ws.datasets.get("churn@golden").to_pandas()  # doctest: +SKIP
    """

    def __init__(self, workspace: Workspace, backend: DataBackend | None) -> None:
        self._ws = workspace
        self._data = backend

    @property
    def _backend(self) -> DataBackend:
        if self._data is None:
            raise InvalidInput(
                "This workspace was made without a data backend; open it with mw.connect()."
            )
        return self._data

    def _version(self, info: VersionOut, result: IngestResult | None = None) -> DatasetVersion:
        return DatasetVersion(self, info, result)

    # -- writing
    def ingest(
        self,
        data: Any,
        name: str,
        *,
        mode: IngestMode = "replace",
        bad_rows: BadRows = "fail",
        message: str = "",
        format: FileFormat | None = None,
        create: bool = True,
    ) -> DatasetVersion | None:
        """Read ``data`` into a new version of dataset ``name`` (created on first use).

        ``data`` is a source (``CsvSource(...)`` or its spec as a dict, read where the
        service runs: on the server for a remote workspace, with ``${secret:NAME}``
        references resolved there), a pandas or Polars DataFrame or pyarrow Table, or the
        path of a local CSV, TSV, Parquet, JSON or Excel file (``format`` when the name does
        not say; a remote workspace uploads it). ``mode="append"`` keeps the previous rows
        and adds these; ``bad_rows="quarantine"`` sets malformed CSV rows aside instead of
        failing.

        Returns the new version (its ``ingest_result`` says what the ingest did), or None
        when the source had nothing new (an incremental source already read to its end).
        """
        from modelworks.data.sources.base import Source

        backend = self._backend
        project = self._ws.project
        if isinstance(data, (str, os.PathLike)):
            result = backend.ingest_file(
                project, name, data, format=format, mode=mode, bad_rows=bad_rows,
                create=create, message=message,
            )  # fmt: skip
        else:
            if format is not None:
                raise InvalidInput("format= applies to file paths only; a source names its own.")
            source: Source | dict[str, Any]
            if isinstance(data, (Source, dict)):
                source = data
            else:
                from modelworks.data.sources.frames import FrameSource

                source = FrameSource.of(data)  # says what it accepts when it cannot
            result = backend.ingest(
                project, name, source, mode=mode, bad_rows=bad_rows, create=create,
                message=message,
            )  # fmt: skip
        return self._version(result.version, result) if result.version is not None else None

    # -- datasets
    def create(
        self, name: str, description: str = "", schema_policy: SchemaPolicy = "additive"
    ) -> DatasetOut:
        """An empty dataset (ingest creates one on first use too); ``schema_policy`` says
        which schema changes later versions may make: strict, additive or any."""
        return self._backend.create_dataset(self._ws.project, name, description, schema_policy)

    def info(self, name: str) -> DatasetOut:
        """The dataset itself: description, policy, latest version, counts."""
        return self._backend.get_dataset(self._ws.project, name)

    def list(
        self,
        *,
        include_deleted: bool = False,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[DatasetOut]:
        """One page of datasets, most recently changed first; see :meth:`list_all`."""
        return self._backend.list_datasets(
            self._ws.project,
            include_deleted=include_deleted,
            max_results=max_results,
            page_token=page_token,
        )

    def list_all(self, *, include_deleted: bool = False) -> Iterator[DatasetOut]:
        """Every dataset, fetching pages as the iteration goes."""
        token: str | None = None
        while True:
            page = self.list(include_deleted=include_deleted, max_results=1000, page_token=token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        schema_policy: SchemaPolicy | None = None,
    ) -> DatasetOut:
        return self._backend.update_dataset(
            self._ws.project, name, description=description, schema_policy=schema_policy
        )

    def delete(self, name: str) -> DatasetOut:
        """Soft delete: hidden from lists and references; versions and bytes are kept."""
        return self._backend.delete_dataset(self._ws.project, name)

    def restore(self, name: str) -> DatasetOut:
        """Undo :meth:`delete`."""
        return self._backend.restore_dataset(self._ws.project, name)

    # -- versions
    def get(self, ref: str | DatasetVersion) -> DatasetVersion:
        """A version by reference: ``churn`` or ``churn@latest`` (newest ready version),
        ``churn@3``, ``churn@golden`` (a tag)."""
        return self._version(self._backend.get_version(self._ws.project, _ref(ref)))

    def versions(self, name: str) -> builtins.list[DatasetVersion]:
        """Every version, newest first (profiles are fetched when first asked for)."""
        return [self._version(v) for v in self._backend.list_versions(self._ws.project, name)]

    def tag(self, ref: str | DatasetVersion, tag: str) -> DatasetVersion:
        """Point ``tag`` at a version, moving it if it pointed elsewhere."""
        return self._version(self._backend.tag_version(self._ws.project, _ref(ref), tag))

    def untag(self, name: str, tag: str) -> DatasetOut:
        return self._backend.untag(self._ws.project, name, tag)

    def preview(
        self,
        ref: str | DatasetVersion,
        *,
        limit: int = 20,
        offset: int = 0,
        columns: Sequence[str] | None = None,
    ) -> Preview:
        return Preview(
            self._backend.preview(
                self._ws.project, _ref(ref), offset=offset, limit=limit, columns=columns
            )
        )

    def profile(self, ref: str | DatasetVersion) -> Profile:
        return self._backend.profile(self._ws.project, _ref(ref))

    # -- expectations and validation
    def expectations(self, name: str) -> dict[str, Any] | None:
        """The dataset's expectation suite (run at every ingest), or None."""
        return self._backend.get_expectations(self._ws.project, name)

    def set_expectations(
        self, name: str, suite: Mapping[str, Any] | str | os.PathLike[str] | None
    ) -> DatasetOut:
        """Store the suite every ingest runs: a dict, YAML or JSON text, or the path of a
        YAML/JSON file; None removes it."""
        return self._backend.set_expectations(self._ws.project, name, _suite(suite))

    def infer_expectations(self, ref: str | DatasetVersion) -> dict[str, Any]:
        """A suite inferred from a version's profile, to review and then store."""
        return self._backend.infer_expectations(self._ws.project, _ref(ref))

    def validate(
        self,
        ref: str | DatasetVersion,
        suite: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    ) -> ValidationRunOut:
        """Run ``suite`` (default: the dataset's own) on a version; the result is stored."""
        return self._backend.validate(self._ws.project, _ref(ref), _suite(suite))

    def validations(
        self, ref: str | DatasetVersion, limit: int = 50
    ) -> builtins.list[ValidationRunOut]:
        """Stored validation results of a version, newest first."""
        return self._backend.list_validations(self._ws.project, _ref(ref), limit=limit)

    def lineage(
        self,
        ref: str | DatasetVersion,
        *,
        direction: Literal["up", "down", "both"] = "both",
        depth: int = 10,
    ) -> LineageOut:
        """Where a version came from (``up``) and what was made from it (``down``)."""
        return self._backend.lineage(self._ws.project, _ref(ref), direction=direction, depth=depth)

    # -- transforms
    def sql(
        self, sql: str, output: str, *, mode: IngestMode = "replace", message: str = ""
    ) -> DatasetVersion | None:
        """A new version of ``output`` from a DuckDB SELECT over dataset references in
        double quotes; the query and the versions it read are kept as its recipe.

        >>> ws.datasets.sql('SELECT * FROM "churn@3" WHERE tenure > 12', "churn-long")
        ... # doctest: +SKIP
        """
        result = self._backend.sql(self._ws.project, sql, output, mode=mode, message=message)
        return self._version(result.version, result) if result.version is not None else None

    def clean(
        self,
        ref: str | DatasetVersion,
        steps: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        output: str | None = None,
        *,
        message: str = "",
    ) -> DatasetVersion | None:
        """A new version from cleaning steps (deduplicate, coerce, impute, clip, rename,
        filter ...) applied to ``ref``, written to ``output`` (default: a new version of
        ``ref``'s own dataset). ``steps`` is a list of steps or ``{"steps": [...]}``.

        >>> ws.datasets.clean("churn@3", [{"op": "deduplicate"}], output="churn-clean")
        ... # doctest: +SKIP
        """
        result = self._backend.clean(self._ws.project, _ref(ref), steps, output, message=message)
        return self._version(result.version, result) if result.version is not None else None

    def rebuild(self, ref: str | DatasetVersion, *, write: bool = False) -> RebuildResult:
        """Re-run a version's recipe and compare the result with the stored rows."""
        return self._backend.rebuild(self._ws.project, _ref(ref), write=write)

    def __repr__(self) -> str:
        return f"<Datasets of project {self._ws.project!r} ({self._ws.mode})>"


def _suite(suite: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """A suite as the service takes it (its JSON form) from a dict, YAML text or a file."""
    if suite is None or isinstance(suite, dict):
        return suite
    if isinstance(suite, Mapping):
        return dict(suite)
    from modelworks.data.expectations import load_suite, suite_to_json

    text = os.fspath(suite)
    if isinstance(suite, os.PathLike) or (
        "\n" not in text and text.lower().endswith((".yml", ".yaml", ".json"))
    ):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InvalidInput(f"Expectation suite file {text!r} does not exist.")
        text = path.read_text(encoding="utf-8")
    # The YAML edge of the expectations module: its errors name the line and the field.
    return suite_to_json(load_suite(text))
