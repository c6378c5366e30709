"""Autologging into real runs on the embedded store (each test has its own home)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import modelworks as mw
from modelworks.client import Workspace
from modelworks.tracking.schemas import RunOut
from modelworks.training import autolog as autolog_module

Data = tuple[pd.DataFrame, pd.Series]

# Autologging turns its own failures into warnings: here, any such warning fails the test.
pytestmark = [
    pytest.mark.filterwarnings("error:modelworks autolog"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
]


def finished(run: mw.ActiveRun) -> tuple[Workspace, RunOut]:
    ws = run.workspace
    assert ws is not None
    return ws, ws.runs.get(run.id)


def artifact_paths(ws: Workspace, run_id: str) -> set[str]:
    return {a.path for a in ws.runs.list_artifacts(run_id)}


def history(ws: Workspace, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(p.step, p.value) for p in ws.runs.metric_history(run_id, key)]


def test_sklearn_pipeline_logs_once_with_the_dataset(binary: Data) -> None:
    X, y = binary
    ws = mw.connect()
    version = ws.datasets.ingest(X.assign(target=y), "cancer")
    assert version is not None
    frame = ws.datasets.get("cancer@latest").to_pandas()
    assert frame.attrs["modelworks.dataset"] == "cancer@1"
    features, target = frame.drop(columns=["target"]), frame["target"]
    mw.autolog()
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0))
    with mw.start_run(experiment="auto") as run:
        model.fit(features, target)
    ws, info = finished(run)
    assert info.tags["mw.dataset"] == "cancer@1" and info.params["dataset"] == "cancer@1"
    assert info.params["randomforestclassifier__n_estimators"] == "3"
    assert "n_estimators" not in info.params  # the nested fit of the forest logged nothing
    paths = artifact_paths(ws, run.id)
    assert {"model/model.yaml", "model/model/model.skops", "feature_importance.json"} <= paths
    assert not any(p.startswith("model/") and p.count("model.yaml") > 1 for p in paths)
    importance = json.loads(ws.runs.read_artifact(run.id, "feature_importance.json"))
    assert set(importance) == {f"x{i}" for i in range(6)} or set(importance) == set(X.columns)
    pkg = mw.load_model(None, run.id)
    assert pkg.meta.lineage == {"run_id": run.id, "dataset": "cancer@1"}
    assert np.array_equal(pkg.predict(features), model.predict(features))
    assert [(i.dataset, i.relation) for i in ws.runs.inputs(run.id)] == [("cancer@1", "trained_on")]


def test_search_logs_once_with_the_winner(multiclass: Data) -> None:
    from sklearn.model_selection import GridSearchCV

    X, y = multiclass
    mw.autolog()
    search = GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=2)
    with mw.start_run(experiment="auto") as run:
        search.fit(X, y)
    ws, info = finished(run)
    assert info.params["best.C"] == str(search.best_params_["C"])
    assert info.params["estimator__max_iter"] == "300" and "max_iter" not in info.params
    assert info.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert sum(p.endswith("model.yaml") for p in artifact_paths(ws, run.id)) == 1


def test_lightgbm_wrapper_logs_every_round(binary: Data) -> None:
    import lightgbm as lgb

    X, y = binary
    mw.autolog()
    clf = lgb.LGBMClassifier(n_estimators=4, verbose=-1)
    with mw.start_run(experiment="auto") as run:
        clf.fit(X, y, eval_X=(X,), eval_y=(y,))
    ws, info = finished(run)
    assert info.params["n_estimators"] == "4"
    steps = history(ws, run.id, "valid_0-binary_logloss")
    assert [s for s, _ in steps] == [0, 1, 2, 3]
    assert np.allclose([v for _, v in steps], clf.evals_result_["valid_0"]["binary_logloss"])
    pkg = mw.load_model(None, run.id)
    assert pkg.flavor == "lightgbm"
    assert np.array_equal(pkg.predict(X), clf.predict(X))


def test_lightgbm_and_xgboost_train_log_rounds_through_callbacks(regression: Data) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    X, y = regression
    mw.autolog(log_models=False)
    with mw.start_run(experiment="auto") as run:
        lgb.train(
            {"objective": "regression", "verbose": -1, "learning_rate": 0.2},
            lgb.Dataset(X, y),
            num_boost_round=3,
            valid_sets=[lgb.Dataset(X, y)],
            valid_names=["train"],
        )
    ws, info = finished(run)
    assert info.params["learning_rate"] == "0.2" and info.params["num_boost_round"] == "3"
    assert [s for s, _ in history(ws, run.id, "train-l2")] == [0, 1, 2]
    assert not any(p.startswith("model/") for p in artifact_paths(ws, run.id))
    with mw.start_run(experiment="auto") as run:
        dtrain = xgb.DMatrix(X, y)
        xgb.train(
            {"max_depth": 2},
            dtrain,
            num_boost_round=3,
            evals=[(dtrain, "train")],
            verbose_eval=False,
        )
    ws, info = finished(run)
    assert info.params["max_depth"] == "2"
    assert [s for s, _ in history(ws, run.id, "train-rmse")] == [0, 1, 2]


def test_xgboost_wrapper_logs_eval_history_and_model(multiclass: Data) -> None:
    import xgboost as xgb

    X, y = multiclass
    mw.autolog()
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2)
    with mw.start_run(experiment="auto") as run:
        clf.fit(X, y, eval_set=[(X, y)], verbose=False)
    ws, _ = finished(run)
    assert [s for s, _ in history(ws, run.id, "validation_0-mlogloss")] == [0, 1, 2]
    pkg = mw.load_model(None, run.id)
    assert np.array_equal(pkg.predict_proba(X), clf.predict_proba(X))


def test_keras_fit_logs_each_epoch(multiclass: Data) -> None:
    from modelworks.training.flavors.keras import import_keras

    keras = import_keras()
    X, y = multiclass
    mw.autolog()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    with mw.start_run(experiment="auto") as run:
        model.fit(
            X.astype("float32"),
            y.to_numpy(),
            epochs=2,
            batch_size=50,
            verbose=0,
            validation_split=0.2,
        )
    ws, info = finished(run)
    assert info.params["epochs"] == "2" and info.params["optimizer"] == "Adam"
    assert [s for s, _ in history(ws, run.id, "loss")] == [0, 1]
    assert [s for s, _ in history(ws, run.id, "val_loss")] == [0, 1]
    pkg = mw.load_model(None, run.id)
    expected = model.predict(X.to_numpy(np.float32), verbose=0)
    assert np.allclose(pkg.predict(X.astype("float32")), expected, atol=1e-6)


def test_torch_fit_logs_losses_and_the_model(regression: Data) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from modelworks.training.flavors.torch import fit

    X, y = regression
    xs = torch.tensor(X.to_numpy(np.float32))
    ys = torch.tensor(y.to_numpy(np.float32)).unsqueeze(1)
    loader = DataLoader(TensorDataset(xs, ys), batch_size=64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 4), torch.nn.Tanh(),
                              torch.nn.Linear(4, 1))  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with mw.start_run(experiment="auto") as run:
        hist = fit(net, torch.nn.MSELoss(), opt, loader, epochs=3, val_loader=loader)
    ws, info = finished(run)
    assert info.params["optimizer"] == "SGD" and info.params["optimizer.lr"] == "0.01"
    assert [v for _, v in history(ws, run.id, "train_loss")] == pytest.approx(hist["train_loss"])
    assert len(history(ws, run.id, "val_loss")) == 3
    pkg = mw.load_model(None, run.id)
    with torch.no_grad():
        expected = net(xs)[:, 0].numpy()
    assert np.allclose(pkg.predict(xs.numpy()), expected, atol=1e-6)


def test_logging_failure_is_a_warning_not_an_error(
    binary: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = binary

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("artifact store is down")

    monkeypatch.setattr(autolog_module, "log_model", broken)
    mw.autolog()
    with (
        mw.start_run(experiment="auto") as run,
        pytest.warns(UserWarning, match="artifact store is down"),
    ):
        model = LogisticRegression(max_iter=300).fit(X, y)
    assert model.coef_.shape == (1, X.shape[1])
    _, info = finished(run)
    assert info.params["max_iter"] == "300"


def test_disabled_or_no_run_logs_nothing(binary: Data) -> None:
    X, y = binary
    original = LogisticRegression.fit
    mw.autolog()
    assert LogisticRegression.fit is not original
    LogisticRegression(max_iter=300).fit(X, y)  # no active run: just fits
    mw.autolog(disable=True)
    assert LogisticRegression.fit is original
    with mw.start_run(experiment="auto") as run:
        LogisticRegression(max_iter=300).fit(X, y)
    ws, info = finished(run)
    assert info.params == {} and artifact_paths(ws, run.id) == set()


def test_frameworks_imported_later_are_patched_on_import(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import sys, modelworks as mw\n"
        "mw.autolog()\n"
        "assert 'lightgbm' not in sys.modules and 'keras' not in sys.modules\n"
        "import lightgbm\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "flag = '__modelworks_autolog__'\n"
        "assert getattr(lightgbm.LGBMClassifier.fit, flag, False)\n"
        "assert getattr(lightgbm.train, flag, False)\n"
        "assert getattr(LogisticRegression.fit, flag, False)\n"
        "assert 'keras' not in sys.modules\n"
    )
    env = {**os.environ, "MODELWORKS_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_log_and_load_model_over_rest(binary: Data, tmp_path: Any, serve: Any) -> None:
    from modelworks.core.config import Settings
    from modelworks.core.store import Store
    from modelworks.governance.service import GovernanceService
    from modelworks.server.app import create_app

    X, y = binary
    store = Store(Settings(home=tmp_path / "server-home"))
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", "flavor-test-password")
    token = gov.create_token(gov.authenticate_password("admin", "flavor-test-password"), "t")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X, y)
    try:
        with serve(create_app(store)) as url, mw.connect(url, token=token.token) as ws:
            with ws.start_run(experiment="remote") as run:
                mw.log_model(run, model, input_example=X.head(), metrics={"acc": 0.9})
            pkg = mw.load_model(ws, run.id, dest=tmp_path / "downloaded")
            assert pkg.meta.lineage["run_id"] == run.id and pkg.meta.metrics == {"acc": 0.9}
            assert np.array_equal(pkg.predict(X), model.predict(X))
    finally:
        store.close()
