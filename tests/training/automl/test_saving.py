"""The fitted model saves and loads through skops with the registered trusted types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio

from modelworks.training.automl import run_automl
from modelworks.training.flavors.sklearn import allowed_type
from modelworks.training.package import save_package
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


def test_a_fresh_process_that_never_ran_automl_loads_its_package(
    mixed: pd.DataFrame, tmp_path: Path
) -> None:
    # The model server loads packages without importing AutoML; its types must be trusted
    # there too (they were not: the quickstart's champion failed to load in the server).
    result = run_automl(
        mixed, "label", time_budget=30, seed=0, n_jobs=1, families=["linear"], max_trials=2
    )
    X = mixed.drop(columns="label")
    save_package(result.model, tmp_path / "pkg", input_example=X.head())
    expected = result.model.predict_proba(X.head(20))
    np.save(tmp_path / "expected.npy", expected)
    X.head(20).to_pickle(tmp_path / "rows.pkl")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "from modelworks.training.package import load_package\n"
        "assert 'modelworks.training.automl' not in sys.modules\n"
        f"pkg = load_package({str(tmp_path / 'pkg')!r})\n"
        f"got = pkg.predict_proba(pd.read_pickle({str(tmp_path / 'rows.pkl')!r}))\n"
        f"np.testing.assert_allclose(got, np.load({str(tmp_path / 'expected.npy')!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
