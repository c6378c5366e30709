"""Id-like columns are dropped and perfect predictors are flagged, both in ``warnings``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modelworks.training.automl import run_automl


def test_id_like_and_leaking_columns() -> None:
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame(
        {
            "customer_id": rng.permutation(n) + 1000,
            "order_ref": [f"ord-{i:05d}" for i in rng.permutation(n)],
            "x": rng.normal(size=n),
            "refund_status": np.where(y == 1, "refunded", "kept"),
            "y": y,
        }
    )
    result = run_automl(frame, "y", time_budget=2, families=["linear"], max_trials=1)
    assert "customer_id" not in result.feature_columns
    assert "order_ref" not in result.feature_columns
    text = "\n".join(result.warnings)
    assert "'customer_id' looks like an id" in text
    assert "'order_ref' looks like an id" in text
    assert "'refund_status' predicts the target perfectly" in text
    assert "refund_status" in result.feature_columns  # flagged, kept: the user decides


def test_a_copy_of_a_regression_target_is_flagged() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=50), "y": rng.normal(size=50)})
    frame["y_in_cents"] = frame["y"] * 100
    result = run_automl(frame, "y", time_budget=2, families=["linear"], max_trials=1)
    assert any("'y_in_cents' predicts the target" in w for w in result.warnings)
