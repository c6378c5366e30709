"""Training's request and response shapes (REST, SDK and CLI share them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunInputIn(BaseModel):
    """A dataset version a run read: ``{"dataset": "churn@3"}``."""

    dataset: str = Field(min_length=1, max_length=300, description="A version ref: name@N.")
    relation: str = Field(
        default="trained_on", description="How the run used it: trained_on, evaluated_on, ..."
    )


class RunInputOut(BaseModel):
    run_id: str
    dataset: str  # the resolved ref, name@N
    dataset_version_id: str
    relation: str


class TrainSpec(BaseModel):
    """A ``train`` job: what ``ws.train`` takes, as JSON."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="A dataset version ref, e.g. churn@latest.")
    target: str = Field(min_length=1)
    model: str = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    task: str | None = None
    experiment: str = "training"
    run_name: str | None = None
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    features: list[str] | None = None


class AutoMLSpec(BaseModel):
    """An ``automl`` job: what ``ws.automl.fit`` takes, as JSON."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="A dataset version ref, e.g. churn@latest.")
    target: str = Field(min_length=1)
    time_budget: float = Field(default=60.0, gt=0)
    metric: str | None = None
    task: str | None = None
    seed: int = 0
    families: list[str] | None = None
    experiment: str = "automl"
    run_name: str | None = None
    max_trials: int | None = Field(default=None, ge=1)
