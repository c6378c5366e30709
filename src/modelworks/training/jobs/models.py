"""The ``jobs`` table: one row per queued unit of work and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelworks.core.database import Base, JSONType, UTCDateTime
from modelworks.core.ids import new_id, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EXECUTORS = ("local", "ray")


class Job(Base):
    __tablename__ = "jobs"
    # The runner's claim scans queued jobs of one executor oldest first.
    __table_args__ = (Index("ix_jobs_status_executor_created", "status", "executor", "created_at"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(100), nullable=False)
    # The kind's "module:function" when it was submitted: what the worker imports.
    entrypoint: Mapped[str] = mapped_column(String(300), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    # {"cpus": float, "gpus": float, "memory_mb": int | None}
    resources: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    executor: Mapped[str] = mapped_column(String(16), nullable=False, default="local")
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # The worker process id (local) or the Ray submission id (ray) of the current attempt.
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    # {"username", "user_id", "superuser", "via"}: who the job acts as when it runs.
    principal: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # Where the log is written while the job runs, and the artifact it is kept in afterwards.
    log_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    log_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
