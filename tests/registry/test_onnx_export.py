"""ONNX export: conversion, the parity check against the package, and OnnxModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelworks.core.errors import AlreadyExists, CorruptData, InvalidInput
from modelworks.registry.export import build_deployable, export_tarball, import_package
from modelworks.registry.onnx_export import (
    OnnxModel,
    export_onnx,
    load_onnx,
    onnx_inputs,
)
from modelworks.training.package import load_package, save_package, verify_package

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Data = tuple[pd.DataFrame, Any]
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def binary() -> Data:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:300, :6]
    X.columns = ["radius", "texture", "perimeter", "area", "smoothness", "compactness"]
    return X, np.where(y.iloc[:300] == 1, "benign", "malignant")


@pytest.fixture(scope="module")
def multiclass() -> Data:
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return X, y


@pytest.fixture(scope="module")
def regression() -> Data:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X.iloc[:300], y.iloc[:300]


@pytest.fixture(scope="module")
def mixed(binary: Data) -> Data:
    """Numbers, a string column and an integer column, for ColumnTransformer pipelines."""
    X, y = binary
    X = X.iloc[:, :3].copy()
    X["colour"] = np.array(["red", "green", "blue"])[np.arange(len(X)) % 3]
    X.loc[y == "malignant", "colour"] = np.where(X.index[y == "malignant"] % 2, "red", "black")
    X["visits"] = (np.arange(len(X)) % 5).astype("int64")
    return X, y


def _package(model: Any, X: pd.DataFrame, path: Path) -> Path:
    save_package(model, path, input_example=X.head())
    return path


def _assert_parity(onnx: OnnxModel, pkg_dir: Path, X: pd.DataFrame) -> None:
    pkg = load_package(pkg_dir)
    np.testing.assert_array_equal(onnx.predict(X), pkg.predict(X))
    if pkg.task in ("binary", "multiclass"):
        np.testing.assert_allclose(
            onnx.predict_proba(X), pkg.predict_proba(X), rtol=RTOL, atol=ATOL
        )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_logistic_regression(binary: Data, tmp_path: Path) -> None:
    X, y = binary
    src = _package(LogisticRegression(max_iter=5000).fit(X, y), X, tmp_path / "pkg")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    meta = export_onnx(src, tmp_path / "onnx", sample=X.iloc[:100])

    assert meta.onnx is not None and meta.onnx["path"] == "onnx/model.onnx"
    assert meta.onnx["converter"] == "skl2onnx" and meta.onnx["converter_version"]
    assert isinstance(meta.onnx["opset"], int) and 1 <= meta.onnx["ml_opset"] <= 3
    assert meta.onnx["inputs"] == [
        {"name": "input", "type": "float32", "columns": list(X.columns), "width": 6}
    ]
    assert meta.onnx["outputs"] == {"label": "label", "probabilities": "probabilities"}
    assert meta.onnx["check"]["rows"] == 100 and meta.onnx["check"]["sample"] == "given"
    assert meta.onnx["check"]["max_abs_diff"] < ATOL
    assert sorted(meta.files) == [
        "model/model.skops",
        "onnx/model.onnx",
        "requirements.txt",
    ]
    assert verify_package(tmp_path / "onnx") == meta
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before

    onnx = load_onnx(tmp_path / "onnx")
    assert onnx.classes == ["benign", "malignant"] and onnx.input_names == ["input"]
    _assert_parity(onnx, src, X)
    feeds = onnx_inputs(meta, X.head(3))
    assert list(feeds) == ["input"] and feeds["input"].dtype == np.float32
    np.testing.assert_array_equal(feeds["input"], X.head(3).to_numpy(np.float32))
    # the exported package is still a package: its native model loads and predicts too
    np.testing.assert_array_equal(load_package(tmp_path / "onnx").predict(X), onnx.predict(X))
    assert _leftovers(tmp_path) == []


def test_random_forest_checked_on_generated_rows(multiclass: Data, tmp_path: Path) -> None:
    X, y = multiclass
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    src = _package(model, X, tmp_path / "pkg")
    meta = export_onnx(src, tmp_path / "onnx")
    assert meta.onnx is not None and meta.onnx["check"]["sample"] == "generated"
    assert meta.onnx["check"]["rows"] == 64
    onnx = load_onnx(tmp_path / "onnx")
    assert onnx.predict(X).dtype == np.int64
    _assert_parity(onnx, src, X)


@pytest.mark.parametrize("estimator", ["logistic", "lightgbm", "xgboost"])
def test_pipeline_with_column_transformer(mixed: Data, tmp_path: Path, estimator: str) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    X, y = mixed
    final: Any = {
        "logistic": LogisticRegression(max_iter=5000),
        "lightgbm": lgb.LGBMClassifier(n_estimators=20, verbose=-1, n_jobs=1),
        "xgboost": xgb.XGBClassifier(n_estimators=20, n_jobs=1),
    }[estimator]
    target = y if estimator != "xgboost" else (y == "malignant").astype(int)  # XGBoost: 0..K-1
    # Trees take the numbers as they are. (XGBoost after a StandardScaler is refused: ONNX
    # scales in float32, and XGBoost's split points sit exactly on training values.)
    scale = StandardScaler() if estimator == "logistic" else "passthrough"
    pre = ColumnTransformer(
        [
            ("num", scale, ["radius", "texture", "perimeter", "visits"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ]
    )
    src = _package(Pipeline([("pre", pre), ("model", final)]).fit(X, target), X, tmp_path / "p")
    meta = export_onnx(src, tmp_path / "onnx", sample=X)
    assert meta.onnx is not None
    assert [(i["name"], i["type"]) for i in meta.onnx["inputs"]] == [
        ("radius", "float32"),
        ("texture", "float32"),
        ("perimeter", "float32"),
        ("colour", "string"),
        ("visits", "int64"),
    ]
    onnx = load_onnx(tmp_path / "onnx")
    _assert_parity(onnx, src, X)
    shuffled = X[list(reversed(X.columns))].head(5)  # columns in any order, as the package takes
    feeds = onnx_inputs(meta, shuffled)
    assert list(feeds) == ["radius", "texture", "perimeter", "colour", "visits"]
    assert feeds["colour"].shape == (5, 1) and feeds["colour"].dtype == object
    assert feeds["visits"].dtype == np.int64
    np.testing.assert_array_equal(onnx.predict(shuffled), load_package(src).predict(X.head(5)))


def test_pipeline_with_imputer_checked_on_generated_rows(mixed: Data, tmp_path: Path) -> None:
    X, y = mixed
    X = X.copy()
    X.loc[::7, "radius"] = np.nan
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["radius"]),
            ("cat", OneHotEncoder(), ["colour"]),  # unknown categories would fail: the
        ]  # generated rows must use the encoder's own categories
    )
    model = Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=5000))]).fit(X, y)
    src = _package(model, X, tmp_path / "pkg")
    export_onnx(src, tmp_path / "onnx")
    _assert_parity(load_onnx(tmp_path / "onnx"), src, X)


def test_lightgbm_classifier(binary: Data, tmp_path: Path) -> None:
    import lightgbm as lgb

    X, y = binary
    model = lgb.LGBMClassifier(n_estimators=40, num_leaves=8, verbose=-1, n_jobs=1).fit(X, y)
    src = _package(model, X, tmp_path / "pkg")
    meta = export_onnx(src, tmp_path / "onnx", sample=X)
    assert meta.flavor == "lightgbm" and meta.onnx is not None
    assert "model/model.txt" in meta.files and "onnx/model.onnx" in meta.files
    onnx = load_onnx(tmp_path / "onnx")
    assert list(np.unique(onnx.predict(X))) == ["benign", "malignant"]
    _assert_parity(onnx, src, X)


def test_xgboost_regressor(regression: Data, tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = regression
    src = _package(
        xgb.XGBRegressor(n_estimators=40, max_depth=4, n_jobs=1).fit(X, y), X, tmp_path / "p"
    )
    meta = export_onnx(src, tmp_path / "onnx", sample=X)
    assert meta.onnx is not None and meta.onnx["outputs"] == {"values": "variable"}
    onnx = load_onnx(tmp_path / "onnx")
    predictions = onnx.predict(X)
    assert predictions.shape == (len(X),) and predictions.dtype == np.float64
    np.testing.assert_allclose(predictions, load_package(src).predict(X), rtol=RTOL, atol=ATOL)
    with pytest.raises(InvalidInput, match=r"This ONNX model is a regressor; use predict\(\)"):
        onnx.predict_proba(X)


def test_a_mismatch_beyond_tolerance_is_refused(regression: Data, tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = regression
    src = _package(xgb.XGBRegressor(n_estimators=40, n_jobs=1).fit(X, y), X, tmp_path / "pkg")
    # float32 ONNX trees sum leaves in another order than XGBoost: exact equality fails
    with pytest.raises(
        InvalidInput,
        match=r"XGBRegressor package cannot be exported to ONNX: its ONNX predictions differ "
        r"from the package's on \d+ of 300 rows \(largest difference .*rtol=0, atol=0\)\. "
        r"Export it as a folder or tarball instead\.",
    ):
        export_onnx(src, tmp_path / "onnx", sample=X, rtol=0.0, atol=0.0)
    assert not (tmp_path / "onnx").exists() and _leftovers(tmp_path) == []


def test_a_model_without_converter_is_refused(multiclass: Data, tmp_path: Path) -> None:
    X, y = multiclass
    src = _package(NearestCentroid().fit(X, y), X, tmp_path / "pkg")
    with pytest.raises(
        InvalidInput,
        match=r"^This sklearn NearestCentroid package cannot be exported to ONNX: skl2onnx has "
        r"no converter for sklearn\.neighbors\._nearest_centroid\.NearestCentroid\. Export "
        r"it as a folder or tarball instead\.$",
    ):
        export_onnx(src, tmp_path / "onnx", sample=X)
    assert not (tmp_path / "onnx").exists() and _leftovers(tmp_path) == []


def test_a_custom_transformer_is_refused(mixed: Data, tmp_path: Path) -> None:
    from modelworks.training.automl.preprocessing import CategoryStrings

    X, y = mixed
    pre = ColumnTransformer(
        [
            ("num", "passthrough", ["radius"]),
            ("cat", make_pipeline(CategoryStrings(), OneHotEncoder()), ["colour"]),
        ]
    )
    model = Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=5000))]).fit(X, y)
    src = _package(model, X, tmp_path / "pkg")
    with pytest.raises(
        InvalidInput,
        match=r"Pipeline package cannot be exported to ONNX: skl2onnx has no converter for "
        r"modelworks\.training\.automl\.preprocessing\.CategoryStrings\. Export it",
    ):
        export_onnx(src, tmp_path / "onnx", sample=X)
    assert not (tmp_path / "onnx").exists()


def test_string_columns_need_a_column_transformer(mixed: Data, tmp_path: Path) -> None:
    import lightgbm as lgb

    X, y = mixed
    X = X.assign(colour=X["colour"].astype("category"))
    model = lgb.LGBMClassifier(n_estimators=5, verbose=-1, n_jobs=1).fit(X, y)
    src = _package(model, X, tmp_path / "pkg")
    with pytest.raises(
        InvalidInput, match=r"cannot be exported to ONNX: it takes the string columns 'colour'"
    ):
        export_onnx(src, tmp_path / "onnx", sample=X)
    assert not (tmp_path / "onnx").exists()


def test_a_torch_package_is_refused(regression: Data, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    X, _ = regression
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 1))
    src = _package(net, X, tmp_path / "pkg")
    with pytest.raises(
        InvalidInput,
        match=r"This torch Sequential package cannot be exported to ONNX: Modelworks converts "
        r"scikit-learn, LightGBM and XGBoost models, not torch ones .*Export it as a folder",
    ):
        export_onnx(src, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_refusals_and_checks(binary: Data, tmp_path: Path) -> None:
    X, y = binary
    src = _package(LogisticRegression(max_iter=5000).fit(X, y), X, tmp_path / "pkg")
    with pytest.raises(InvalidInput, match=r"This package has no ONNX model; make one with"):
        load_onnx(src)
    with pytest.raises(InvalidInput, match=r"opset must be an integer from 9 to \d+; got 3"):
        export_onnx(src, tmp_path / "onnx", opset=3)
    with pytest.raises(InvalidInput, match=r"missing columns: 'area'"):
        export_onnx(src, tmp_path / "onnx", sample=X.drop(columns="area"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(AlreadyExists, match=r"taken already exists and is not empty"):
        export_onnx(src, tmp_path / "taken")

    meta = export_onnx(src, tmp_path / "onnx", sample=X, opset=15)
    assert meta.onnx is not None and meta.onnx["opset"] <= 15
    with pytest.raises(InvalidInput, match=r"missing columns: 'area'"):
        load_onnx(tmp_path / "onnx").predict(X.drop(columns="area"))
    with open(tmp_path / "onnx" / "onnx" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CorruptData, match=r"onnx/model\.onnx does not match its checksum"):
        load_onnx(tmp_path / "onnx")


def test_onnx_package_travels_and_deploys(binary: Data, tmp_path: Path) -> None:
    import onnxruntime

    X, y = binary
    src = _package(LogisticRegression(max_iter=5000).fit(X, y), X, tmp_path / "pkg")
    export_onnx(src, tmp_path / "onnx", sample=X)
    archive = export_tarball(tmp_path / "onnx", tmp_path / "onnx.tar.gz")
    imported = import_package(archive, tmp_path / "imported")
    assert imported.onnx is not None and "onnx/model.onnx" in imported.files
    _assert_parity(load_onnx(tmp_path / "imported"), src, X)

    out = build_deployable(tmp_path / "imported", tmp_path / "deploy", model_name="cancer")
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert f"onnxruntime=={onnxruntime.__version__}" in requirements
    assert (out / "package" / "onnx" / "model.onnx").is_file()


def test_a_classifier_without_probabilities(multiclass: Data, tmp_path: Path) -> None:
    from sklearn.svm import LinearSVC

    X, y = multiclass
    src = _package(LinearSVC().fit(X, y), X, tmp_path / "pkg")
    meta = export_onnx(src, tmp_path / "onnx", sample=X)
    assert meta.onnx is not None and meta.onnx["outputs"] == {
        "label": "label",
        "scores": "probabilities",
    }
    onnx = load_onnx(tmp_path / "onnx")
    np.testing.assert_array_equal(onnx.predict(X), load_package(src).predict(X))
    with pytest.raises(InvalidInput, match=r"This ONNX model has no class probabilities"):
        onnx.predict_proba(X)
