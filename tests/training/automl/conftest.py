"""Small frames for the AutoML tests: seeded, a few hundred rows, every column kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numeric with gaps, categorical with gaps, bool, datetime, date strings, free text."""
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "item", "shipping", "fast", "slow", "price", "box", "ok", "late"]
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue", None], n),
            "member": rng.choice([True, False], n),
            "ordered": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 20_000, n), unit="h"),
            "shipped": (
                pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 20_000, n), unit="h")
            ).astype(str),
            "review": [" ".join(rng.choice(words, 7)) for _ in range(n)],
        }
    )
    frame.loc[rng.random(n) < 0.1, "amount"] = np.nan
    signal = frame["amount"].fillna(0) + 1.5 * frame["review"].str.contains("bad") - 0.7
    frame["label"] = np.where(signal + rng.normal(scale=0.3, size=n) > 0, "churn", "stay")
    return frame


@pytest.fixture
def mixed() -> pd.DataFrame:
    return mixed_frame()
