"""Pydantic shapes for experiment tracking: the contract of the SDK, REST and CLI."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelworks.core.errors import InvalidInput
from modelworks.tracking.models import RUN_STATUSES

KEY_PATTERN = r"^[A-Za-z0-9_\-./: ]{1,250}$"
_KEY_RE = re.compile(KEY_PATTERN)


def check_key(kind: str, key: object) -> str:
    """The one rule for metric, param and tag keys (the SDK checks early, the service always)."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InvalidInput(
            f"{kind} key {key!r} is not valid: use 1-250 letters, digits, spaces and "
            "'_', '-', '.', '/', ':'."
        )
    if ".." in key.split("/"):
        raise InvalidInput(f"{kind} key {key!r} must not contain a '..' segment.")
    return key


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    project_id: str
    name: str
    description: str
    tags: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    run_count: int | None = None


class ExperimentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class ExperimentUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    tags: dict[str, str] | None = None


class MetricIn(BaseModel):
    key: str = Field(pattern=KEY_PATTERN)
    value: float | None
    step: int = 0
    timestamp_ms: int | None = None

    @field_validator("value")
    @classmethod
    def _nan_is_null(cls, v: float | None) -> float | None:
        return None if v is not None and math.isnan(v) else v


class MetricPoint(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")

    key: str
    value: float | None
    step: int
    timestamp_ms: int


class LogBatch(BaseModel):
    metrics: list[MetricIn] = Field(default_factory=list, max_length=100_000)
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


class RunCreate(BaseModel):
    experiment: str = Field(min_length=1, max_length=200, description="Experiment name or id.")
    name: str | None = Field(default=None, max_length=200)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    parent_run_id: str | None = None
    system_info: dict[str, Any] = Field(default_factory=dict)


class RunUpdate(BaseModel):
    status: str | None = None
    end_time: datetime | None = None
    name: str | None = Field(default=None, max_length=200)
    description: str | None = None

    @field_validator("status")
    @classmethod
    def _known_status(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}")
        return v.upper() if v else v


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    path: str
    sha256: str
    size: int
    created_at: datetime


class RunOut(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")

    id: str
    experiment_id: str
    experiment_name: str
    project_id: str
    name: str
    status: str
    start_time: datetime
    end_time: datetime | None
    parent_run_id: str | None
    created_by: str
    description: str
    system_info: dict[str, Any]
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float | None]
    deleted: bool = False

    @property
    def duration_s(self) -> float | None:
        return (self.end_time - self.start_time).total_seconds() if self.end_time else None


class RunSearch(BaseModel):
    experiments: list[str] | None = Field(
        default=None, description="Experiment names or ids; all experiments when omitted."
    )
    filter: str | None = Field(default=None, max_length=10_000)
    order_by: list[str] | None = None
    max_results: int = Field(default=100, ge=1, le=10_000)
    page_token: str | None = None
    include_deleted: bool = False


class RunCompare(BaseModel):
    run_ids: list[str] = Field(min_length=1, max_length=100)
    metric_keys: list[str] | None = None


class RunComparison(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")

    runs: list[RunOut]
    param_keys: list[str]
    differing_params: list[str]
    metric_keys: list[str]
    histories: dict[str, dict[str, list[MetricPoint]]] = Field(
        description="metric key -> run id -> points"
    )
