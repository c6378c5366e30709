"""What an AutoML run returns: every trial, the winner, and the fitted model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class TrialResult:
    """One configuration tried. ``score`` is in the metric's own units (None unless ok)."""

    number: int
    family: str
    params: dict[str, Any]
    score: float | None
    fit_seconds: float
    status: str  # "ok", "pruned" or "failed"
    error: str | None = None

    def __repr__(self) -> str:
        score = "-" if self.score is None else f"{self.score:.5g}"
        return (
            f"TrialResult(#{self.number} {self.family} {self.status} score={score} "
            f"{self.fit_seconds:.2f}s)"
        )


@dataclass
class AutoMLResult:
    """The outcome of ``run_automl``.

    ``model`` is one fitted scikit-learn estimator that takes the raw frame without the
    target. ``leaderboard`` lists every trial, best first (pruned and failed ones last);
    when the ensemble won, it is on the board too, as family ``"ensemble"``.
    """

    task: str
    metric: str
    greater_is_better: bool
    best: TrialResult
    leaderboard: list[TrialResult]
    model: Any
    classes: list[Any] | None
    feature_columns: list[str]
    warnings: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def leaderboard_frame(self) -> pd.DataFrame:
        rows = [
            {
                "rank": i + 1,
                "number": t.number,
                "family": t.family,
                "score": np.nan if t.score is None else t.score,
                "status": t.status,
                "fit_seconds": t.fit_seconds,
                "params": t.params,
                "error": t.error,
            }
            for i, t in enumerate(self.leaderboard)
        ]
        return pd.DataFrame(
            rows,
            columns=[
                "rank",
                "number",
                "family",
                "score",
                "status",
                "fit_seconds",
                "params",
                "error",
            ],
        )

    def __repr__(self) -> str:
        ok = sum(t.status == "ok" for t in self.leaderboard)
        score = "-" if self.best.score is None else f"{self.best.score:.5g}"
        lines = [
            f"AutoMLResult(task={self.task!r}, metric={self.metric!r}, best={self.best.family} "
            f"{score}, trials={len(self.leaderboard)} ({ok} ok), "
            f"elapsed={self.elapsed_seconds:.1f}s)"
        ]
        for t in self.leaderboard[:5]:
            lines.append(f"  {t!r}")
        if self.warnings:
            lines.append(f"  warnings: {len(self.warnings)}")
        return "\n".join(lines)


def sort_leaderboard(trials: list[TrialResult], greater_is_better: bool) -> list[TrialResult]:
    """Ok trials best first (ties by trial number), then pruned, then failed."""
    order = {"ok": 0, "pruned": 1, "failed": 2}

    def key(t: TrialResult) -> tuple[int, float, int]:
        score = t.score if t.score is not None else 0.0
        return (order.get(t.status, 3), -score if greater_is_better else score, t.number)

    return sorted(trials, key=key)
