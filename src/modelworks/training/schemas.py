"""Training's request and response shapes (REST, SDK and CLI share them)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
