"""Helpers the serving tests share: a small churn table and rows as a JSON body holds them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def churn_frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "charges": rng.normal(60, 20, n).round(2),
            "plan": rng.choice(["basic", "pro", "max"], n),
        }
    )
    score = 0.05 * X["tenure"] - 0.03 * X["charges"] + np.where(X["plan"] == "pro", 1.0, 0.0)
    y = np.where(score + rng.normal(0, 0.5, n) > 0, "stay", "churn")
    return X, y


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a JSON body would carry them (plain Python values)."""
    out = frame.to_dict("records")
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in out]
