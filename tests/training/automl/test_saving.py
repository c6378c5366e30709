"""The fitted model saves and loads through skops with the registered trusted types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import skops.io as sio

from modelworks.training.automl import run_automl
from modelworks.training.flavors.sklearn import allowed_type
from modelworks.training.trusted import trusted_types


def test_skops_round_trip_of_an_ensemble_over_mixed_columns(mixed: pd.DataFrame) -> None:
    frame = mixed
    result = run_automl(
        frame,
        "label",
        time_budget=60,
        seed=0,
        n_jobs=1,
        families=["linear", "lightgbm", "mlp"],
        max_trials=4,
    )
    blob = sio.dumps(result.model)
    untrusted = sio.get_untrusted_types(data=blob)
    ours = [t for t in untrusted if t.startswith("modelworks.")]
    assert set(ours) <= trusted_types()
    assert [t for t in untrusted if not allowed_type(t)] == []  # the sklearn flavor loads it
    loaded = sio.loads(blob, trusted=untrusted)
    X = frame.drop(columns="label")
    np.testing.assert_allclose(loaded.predict_proba(X), result.model.predict_proba(X))
