"""Deployments' contract: what DeploymentService returns and REST/SDK/CLI/UI show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class DeploymentOut(BaseModel):
    id: str
    project_id: str
    name: str
    model: str
    selector: str
    ref: str  # model@selector, e.g. churn@champion
    description: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: str
    served_version: int | None = None
    last_error: str | None = None
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class DeploymentTokenOut(BaseModel):
    id: str
    deployment: str
    name: str
    prefix: str
    created_by: str
    created_at: datetime
    revoked: bool = False
    token: str | None = Field(None, description="The token itself: shown once, at creation")
