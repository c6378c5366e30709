"""Tables for datasets, their immutable versions, tags, source cursors and validation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow

VERSION_STATUSES = ("ready", "quarantined")
SCHEMA_POLICIES = ("strict", "additive", "any")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    schema_policy: Mapped[str] = mapped_column(String(16), nullable=False, default="additive")
    # The expectation suite run at every ingest (YAML-equivalent JSON), or None.
    expectations: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    latest_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    version_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DatasetVersion(Base):
    """One immutable version: Parquet parts in the artifact store plus what describes them."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), nullable=False, index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ready")
    mode: Mapped[str] = mapped_column(String(16), nullable=False, default="replace")
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # [{"sha256", "size", "rows"}] in read order; appended versions share their parents' parts.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    # [{"name", "type", "nullable"}] with Arrow type names.
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    row_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    # {"kind", "params"}: what the data came from; secrets only by reference.
    source: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # How to make this version again (`modelworks data rebuild`), or None for raw ingests.
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    schema_changes: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # {"count", "sha256", "size"} of the side file that quarantined bad rows, if any.
    rejects: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    validation_success: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DatasetTag(Base):
    __tablename__ = "dataset_tags"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SourceCursor(Base):
    """Where an incremental or stream source stopped; moved in the same transaction as the
    version that holds the rows up to it, so a crash can neither lose nor repeat rows."""

    __tablename__ = "source_cursors"
    __table_args__ = (UniqueConstraint("dataset_id", "source_key"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), nullable=False, index=True)
    source_key: Mapped[str] = mapped_column(String(64), nullable=False)
    position: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ValidationRun(Base):
    __tablename__ = "validation_runs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=False, index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # "ingest" or "manual"
    success: Mapped[bool] = mapped_column(Boolean, nullable=False)
    suite: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
