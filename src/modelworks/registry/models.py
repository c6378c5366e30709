"""Tables of the registry: registered models, their versions, aliases, alias approval
requests, the per-project approval policy, and stored evaluations and comparisons.

A version's package is not copied: its files are objects of the content-addressed artifact
store, listed in ``files`` (path -> sha256), so a version made from a run shares the run's
bytes and a package imported twice is stored once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow

STAGES = ("none", "staging", "production", "archived")
REQUEST_STATUSES = ("pending", "approved", "rejected", "cancelled")


class RegisteredModel(Base):
    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    latest_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id"), nullable=False, index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    stage: Mapped[str] = mapped_column(String(16), nullable=False, default="none")
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    # Where the package came from: {"kind": "run", "run_id", "path"} or {"kind": "package"}.
    source: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(26), nullable=True, index=True)
    # The package's model.yaml as parsed (flavor, task, signature, classes, frameworks...).
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # path inside the package -> {"sha256", "size"}; the bytes live in the artifact store.
    files: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    # Filled-in model card fields (intended use, limitations, ...).
    card: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    # Global importance (permutation / SHAP) computed for this version, when known.
    importance: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id"), nullable=False, index=True
    )
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class RegistryPolicy(Base):
    """Per project: aliases whose moves need a maintainer's approval."""

    __tablename__ = "registry_policies"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    protected_aliases: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    updated_by: Mapped[str] = mapped_column(String(200), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AliasRequest(Base):
    """A request to move a protected alias, waiting for a maintainer."""

    __tablename__ = "alias_requests"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id"), nullable=False, index=True
    )
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    requested_by: Mapped[str] = mapped_column(String(200), nullable=False)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, nullable=False, default="")


class ModelEvaluation(Base):
    """One evaluation of a model version on a dataset version (the full result as JSON)."""

    __tablename__ = "model_evaluations"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id"), nullable=False, index=True
    )
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id"), nullable=False, index=True
    )
    dataset_version_id: Mapped[str] = mapped_column(String(26), nullable=False, index=True)
    dataset: Mapped[str] = mapped_column(String(300), nullable=False)
    target: Mapped[str] = mapped_column(String(300), nullable=False)
    task: Mapped[str] = mapped_column(String(16), nullable=False)
    headline: Mapped[str] = mapped_column(String(64), nullable=False)
    headline_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    # plot file name -> sha256 of the PNG in the artifact store
    plots: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ModelComparison(Base):
    """Champion vs challenger on the same dataset version, with paired tests."""

    __tablename__ = "model_comparisons"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id"), nullable=False, index=True
    )
    champion_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id"), nullable=False
    )
    challenger_version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id"), nullable=False
    )
    champion: Mapped[str] = mapped_column(String(300), nullable=False)
    challenger: Mapped[str] = mapped_column(String(300), nullable=False)
    dataset_version_id: Mapped[str] = mapped_column(String(26), nullable=False)
    dataset: Mapped[str] = mapped_column(String(300), nullable=False)
    verdict: Mapped[str] = mapped_column(String(40), nullable=False)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    plots: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
