"""The registry's contract: what RegistryService returns and REST/SDK/CLI/UI show."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Stage = Literal["none", "staging", "production", "archived"]
RequestStatus = Literal["pending", "approved", "rejected", "cancelled"]

CARD_FIELDS: dict[str, str] = {
    "intended_use": "What the model is for, and for whom.",
    "out_of_scope": "Uses it was not made or checked for.",
    "limitations": "Known weaknesses, populations or inputs where it does worse.",
    "ethical_considerations": "Risks of harm, fairness checks done, sensitive features.",
    "caveats": "Anything else a user of its predictions should know.",
}


class ModelOut(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    tags: dict[str, str]
    latest_version: int
    aliases: dict[str, int] = Field(default_factory=dict, description="alias -> version")
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class VersionOut(BaseModel):
    id: str
    model_id: str
    model: str
    version: int
    ref: str  # name@version
    stage: Stage
    aliases: list[str] = Field(default_factory=list)
    description: str
    tags: dict[str, str]
    source: dict[str, Any]
    run_id: str | None
    flavor: str
    task: str
    signature: dict[str, Any] | None = None
    classes: list[Any] | None = None
    frameworks: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)
    card: dict[str, str] = Field(default_factory=dict)
    has_importance: bool = False
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


class AliasOut(BaseModel):
    model: str
    alias: str
    version: int
    previous_version: int | None = None
    status: Literal["moved", "pending_approval", "unchanged"] = "moved"
    request_id: str | None = None
    updated_by: str
    updated_at: datetime


class AliasRequestOut(BaseModel):
    id: str
    model: str
    alias: str
    version: int
    status: RequestStatus
    reason: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str = ""


class PolicyOut(BaseModel):
    project: str
    protected_aliases: list[str]


class LineageNodeOut(BaseModel):
    type: str
    id: str
    label: str


class LineageEdgeOut(BaseModel):
    parent: LineageNodeOut
    child: LineageNodeOut
    relation: str


class ModelLineageOut(BaseModel):
    ref: str
    nodes: list[LineageNodeOut]
    edges: list[LineageEdgeOut]
    datasets: list[str] = Field(default_factory=list, description="dataset versions trained on")


class ModelCard(BaseModel):
    ref: str
    markdown: str
    fields: dict[str, str]


class EvaluationOut(BaseModel):
    id: str
    model: str
    version: int
    ref: str
    dataset: str
    dataset_version_id: str
    target: str
    task: str
    headline: str
    headline_value: float | None
    result: dict[str, Any]
    plots: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    created_by: str
    created_at: datetime


class ComparisonOut(BaseModel):
    id: str
    model: str
    champion: str
    challenger: str
    dataset: str
    verdict: str
    p_value: float | None
    result: dict[str, Any]
    plots: dict[str, str] = Field(default_factory=dict)
    created_by: str
    created_at: datetime
