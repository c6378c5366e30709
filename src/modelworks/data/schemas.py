"""The data layer's contract: what services return and REST/SDK/CLI/UI show."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

IngestMode = Literal["replace", "append"]
SchemaPolicy = Literal["strict", "additive", "any"]
BadRows = Literal["fail", "quarantine"]


class ColumnSchema(BaseModel):
    name: str
    type: str  # Arrow type name: int64, double, string, bool, timestamp[us], date32[day] ...
    nullable: bool = True


class PartFile(BaseModel):
    """One Parquet part of a version, stored in the artifact store under its sha256."""

    sha256: str
    size: int
    rows: int


class SchemaChanges(BaseModel):
    """What changed since the previous version of the dataset."""

    added: list[ColumnSchema] = Field(default_factory=list)
    removed: list[ColumnSchema] = Field(default_factory=list)
    retyped: list[dict[str, str]] = Field(default_factory=list)  # {"name", "from", "to"}

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.retyped)


class Histogram(BaseModel):
    """``len(edges) == len(counts) + 1``; temporal edges are ISO strings."""

    edges: list[float | str]
    counts: list[int]


class TopValue(BaseModel):
    value: Any
    count: int


ColumnKind = Literal["numeric", "string", "boolean", "temporal", "other"]


class ColumnProfile(BaseModel):
    name: str
    type: str
    kind: ColumnKind
    count: int  # non-null values
    nulls: int
    null_rate: float
    distinct: int | None = None  # approximate for large columns
    min: Any = None  # numbers, or ISO strings for temporal columns
    max: Any = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, Any] | None = None  # {"0.01": .., "0.05": .., "0.25": .., ...}
    top_values: list[TopValue] = Field(default_factory=list)
    histogram: Histogram | None = None


class Profile(BaseModel):
    row_count: int
    columns: list[ColumnProfile]
    engine: str  # e.g. "duckdb 2.0.0"
    seconds: float = 0.0

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


class ExpectationResult(BaseModel):
    expectation: dict[str, Any]  # the expectation as written in the suite
    success: bool
    observed: Any = None  # e.g. the null rate, the min, the row count
    unexpected_count: int = 0
    unexpected_examples: list[Any] = Field(default_factory=list)
    message: str = ""


class ValidationReport(BaseModel):
    success: bool
    row_count: int
    results: list[ExpectationResult]
    evaluated_at: datetime

    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> str:
        failed = self.failures()
        if not failed:
            return f"All {len(self.results)} expectations passed."
        lines = [f"{len(failed)} of {len(self.results)} expectations failed:"]
        lines += [f"  - {r.message}" for r in failed]
        return "\n".join(lines)


class RejectsOut(BaseModel):
    """Rows a CSV ingest set aside (``bad_rows="quarantine"``) instead of failing."""

    count: int
    sha256: str | None = None  # the side file (CSV: line, error, raw line) in the artifact store
    size: int = 0
    examples: list[dict[str, Any]] = Field(default_factory=list)


class DatasetOut(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    schema_policy: SchemaPolicy
    latest_version: int | None  # None until a ready version exists
    version_count: int
    has_expectations: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class VersionOut(BaseModel):
    id: str
    dataset_id: str
    dataset: str
    project_id: str
    version: int
    ref: str  # "name@N"
    status: Literal["ready", "quarantined"]
    mode: IngestMode
    parent_version: int | None
    files: list[PartFile]
    columns: list[ColumnSchema]
    row_count: int
    size_bytes: int
    content_hash: str
    source: dict[str, Any]
    recipe: dict[str, Any] | None
    schema_changes: SchemaChanges
    tags: list[str] = Field(default_factory=list)
    profile: Profile | None = None
    rejects: RejectsOut | None = None
    validation_success: bool | None = None
    message: str
    created_by: str
    created_at: datetime


class IngestResult(BaseModel):
    """What one ingest did. ``version`` is None when there was nothing new to ingest
    (an incremental or stream source with no new rows)."""

    version: VersionOut | None
    rows: int  # rows added by this ingest
    rejects: RejectsOut | None = None
    validation: ValidationReport | None = None
    seconds: float = 0.0
    message: str = ""


class PreviewOut(BaseModel):
    ref: str
    columns: list[ColumnSchema]
    rows: list[list[Any]]  # JSON-safe values; timestamps as ISO strings
    offset: int
    limit: int
    total: int


class ValidationRunOut(BaseModel):
    id: str
    ref: str
    trigger: Literal["ingest", "manual"]
    success: bool
    report: ValidationReport
    created_by: str
    created_at: datetime


class LineageNodeOut(BaseModel):
    type: str
    id: str
    label: str


class LineageEdgeOut(BaseModel):
    parent: LineageNodeOut
    child: LineageNodeOut
    relation: str
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class LineageOut(BaseModel):
    root: LineageNodeOut
    nodes: list[LineageNodeOut]
    edges: list[LineageEdgeOut]


class RebuildResult(BaseModel):
    ref: str
    identical: bool
    expected_hash: str
    rebuilt_hash: str
    rows: int
    message: str
    written: str | None = None  # the ref of the new version, when the rebuild was stored
