"""Every flavor: save -> load gives identical predictions; the right flavor is picked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelworks.core.errors import InvalidInput
from modelworks.training.flavors import flavor_for, get_flavor
from modelworks.training.package import ModelPackage, load_package, save_package

Data = tuple[pd.DataFrame, pd.Series]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")


def round_trip(model: Any, X: pd.DataFrame, path: Path, **kw: Any) -> tuple[Any, ModelPackage]:
    meta = save_package(model, path, input_example=X.head(), **kw)
    return meta, load_package(path)


def test_sklearn_pipeline_with_columns_round_trip(binary: Data, tmp_path: Path) -> None:
    X, y = binary
    X = X.assign(band=np.where(X.iloc[:, 0] > X.iloc[:, 0].median(), "high", "low"))
    num = [c for c in X.columns if c != "band"]
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("num", StandardScaler(), num), ("cat", OneHotEncoder(), ["band"])]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    meta, pkg = round_trip(model, X, tmp_path / "pkg")
    assert meta.flavor == "sklearn" and meta.task == "binary" and meta.classes == [0, 1]
    assert np.array_equal(pkg.predict(X), model.predict(X))
    assert np.array_equal(pkg.predict_proba(X), model.predict_proba(X))
    # columns in another order are put back in the trained order
    assert np.array_equal(pkg.predict(X[X.columns[::-1]]), model.predict(X))


def test_sklearn_trees_round_trip(multiclass: Data, regression: Data, tmp_path: Path) -> None:
    X, y = multiclass
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    meta, pkg = round_trip(hgb, X, tmp_path / "a")
    assert meta.task == "multiclass" and meta.classes == [0, 1, 2]
    assert np.array_equal(pkg.predict_proba(X), hgb.predict_proba(X))
    Xr, yr = regression
    rf = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=3, random_state=0))
    rf.fit(Xr, yr)
    meta, pkg = round_trip(rf, Xr, tmp_path / "b")
    assert meta.task == "regression" and meta.classes is None
    assert np.array_equal(pkg.predict(Xr), rf.predict(Xr))
    with pytest.raises(InvalidInput, match="only classifiers"):
        pkg.predict_proba(Xr)


def test_hist_gradient_boosting_with_categories_loads_without_trust(
    binary: Data, tmp_path: Path
) -> None:
    # Its fitted state holds partial(check_array, ...): trusted by name, nothing wider.
    X, y = binary
    X = X.assign(band=np.where(X.iloc[:, 0] > 0, 1.0, 0.0))
    hgb = HistGradientBoostingClassifier(max_iter=5, categorical_features=["band"]).fit(X, y)
    _, pkg = round_trip(hgb, X, tmp_path / "pkg")
    assert np.array_equal(pkg.predict_proba(X), hgb.predict_proba(X))
    from modelworks.training.flavors.sklearn import allowed_type

    assert allowed_type("functools.partial") and not allowed_type("builtins.eval")
    assert not allowed_type("sklearn.utils.validation.column_or_1d")  # other functions: no


def test_lightgbm_wrapper_and_booster(binary: Data, regression: Data, tmp_path: Path) -> None:
    import lightgbm as lgb

    X, y = binary
    clf = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)
    meta, pkg = round_trip(clf, X, tmp_path / "clf")
    assert meta.flavor == "lightgbm" and meta.task == "binary" and meta.classes == [0, 1]
    assert (tmp_path / "clf" / "model" / "model.txt").read_text().startswith("tree")
    assert isinstance(pkg.model, lgb.Booster)
    assert np.array_equal(pkg.predict(X), clf.predict(X))
    assert np.allclose(pkg.predict_proba(X), clf.predict_proba(X), rtol=0, atol=1e-12)
    Xr, yr = regression
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(Xr, yr), num_boost_round=5
    )
    meta, pkg = round_trip(booster, Xr, tmp_path / "reg")
    assert meta.task == "regression"
    assert np.array_equal(pkg.predict(Xr), booster.predict(Xr))


def test_xgboost_wrapper_and_booster(multiclass: Data, regression: Data, tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = multiclass
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y)
    meta, pkg = round_trip(clf, X, tmp_path / "clf")
    assert meta.flavor == "xgboost" and meta.task == "multiclass"
    assert type(pkg.model) is xgb.XGBClassifier
    assert np.array_equal(pkg.predict(X), clf.predict(X))
    assert np.array_equal(pkg.predict_proba(X), clf.predict_proba(X))
    Xr, yr = regression
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(Xr, yr), 5)
    meta, pkg = round_trip(booster, Xr, tmp_path / "reg")
    assert meta.task == "regression" and (tmp_path / "reg" / "model" / "model.ubj").exists()
    assert np.array_equal(pkg.predict(Xr), booster.predict(xgb.DMatrix(Xr)))


def test_torch_module_round_trip(regression: Data, tmp_path: Path) -> None:
    import torch

    X, _ = regression
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], 8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(8, 1),
    )
    meta, pkg = round_trip(net, X.astype("float32"), tmp_path / "pkg", task="regression")
    assert meta.flavor == "torch" and meta.frameworks["torch"] == torch.__version__
    net.eval()
    with torch.no_grad():
        expected = net(torch.tensor(X.to_numpy(np.float32)))[:, 0].numpy()
    assert np.allclose(pkg.predict(X.astype("float32")), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidInput, match="example input"):
        save_package(net, tmp_path / "no-example")


def test_keras_model_round_trip(multiclass: Data, tmp_path: Path) -> None:
    from modelworks.training.flavors.keras import import_keras

    keras = import_keras()
    X, y = multiclass
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X.to_numpy(np.float32), y.to_numpy(), epochs=1, verbose=0)
    meta, pkg = round_trip(model, X.astype("float32"), tmp_path / "pkg")
    assert meta.flavor == "keras"
    expected = model.predict(X.to_numpy(np.float32), verbose=0)
    assert np.allclose(pkg.predict(X.astype("float32")), expected, rtol=1e-6, atol=1e-7)


def test_flavor_lookup_and_refusals(binary: Data) -> None:
    import lightgbm as lgb

    assert flavor_for(lgb.LGBMClassifier()).name == "lightgbm"
    assert flavor_for(make_pipeline(LogisticRegression())).name == "sklearn"
    with pytest.raises(InvalidInput, match=r"No model flavor saves a builtins\.dict"):
        flavor_for({})
    with pytest.raises(InvalidInput, match="flavors are"):
        get_flavor("onnx")
    assert set(get_flavor("sklearn").framework_versions()) == {"scikit-learn", "skops"}


def test_keras_lambda_layer_needs_trust(tmp_path: Path) -> None:
    from modelworks.training.flavors import UntrustedModel
    from modelworks.training.flavors.keras import import_keras

    keras = import_keras()
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(1)]
    )
    x = np.ones((3, 2), dtype=np.float32)
    save_package(model, tmp_path / "pkg", input_example=x)
    with pytest.raises(UntrustedModel, match="trust=True"):
        load_package(tmp_path / "pkg")
    loaded = load_package(tmp_path / "pkg", trust=True)
    assert loaded.signature is not None and loaded.signature.is_tensor
    assert np.allclose(loaded.predict(x), model.predict(x, verbose=0)[:, 0])


def test_pipelines_holding_boosting_wrappers_load_without_trust(
    binary: Data, tmp_path: Path
) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    X, y = binary
    for i, final in enumerate(
        [lgb.LGBMClassifier(n_estimators=3, verbose=-1), xgb.XGBClassifier(n_estimators=3)]
    ):
        model = make_pipeline(StandardScaler(), final).fit(X, y)
        meta, pkg = round_trip(model, X, tmp_path / str(i))
        assert meta.flavor == "sklearn"
        assert np.array_equal(pkg.predict_proba(X), model.predict_proba(X))
