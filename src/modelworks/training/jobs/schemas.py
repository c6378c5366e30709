"""Pydantic shapes for jobs: the contract of the SDK, REST and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelworks.core.errors import InvalidInput

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Executor = Literal["local", "ray"]


class Resources(BaseModel):
    """What one attempt of a job needs: CPUs and GPUs (fractions allowed), memory in MiB."""

    model_config = ConfigDict(extra="forbid")

    cpus: float = Field(default=1.0, gt=0, le=1024)
    gpus: float = Field(default=0.0, ge=0, le=64)
    memory_mb: int | None = Field(default=None, ge=1)


def resources_of(value: Resources | dict[str, Any] | None) -> Resources:
    """``value`` as Resources; InvalidInput naming the field when it does not fit."""
    if isinstance(value, Resources):
        return value
    try:
        return Resources.model_validate(value or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'resources'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"The job's resources are not valid: {problems}.") from None


class JobSubmit(BaseModel):
    kind: str = Field(min_length=1, max_length=100)
    spec: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, max_length=200)
    resources: Resources = Field(default_factory=Resources)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0, le=100)
    executor: Executor | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    project_id: str
    project: str
    kind: str
    name: str
    spec: dict[str, Any]
    status: JobStatus
    resources: Resources
    executor: Executor
    max_retries: int
    attempt: int
    timeout_s: float | None
    cancel_requested: bool
    external_id: str | None
    worker: str | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress: float | None
    progress_message: str | None
    error: str | None
    result: dict[str, Any] | None
    log_sha256: str | None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class JobLogs(BaseModel):
    """A slice of a job's log: ``text`` from byte ``offset``; ask again from ``next_offset``."""

    job_id: str
    status: JobStatus
    offset: int
    next_offset: int
    text: str
    complete: bool = Field(
        description="The job has finished and its whole log up to next_offset was returned."
    )
