"""The package format: model.yaml, checksums, versions, atomic writes, trusted types."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from modelworks.core.errors import AlreadyExists, CorruptData, InvalidInput
from modelworks.training.flavors import UntrustedModel
from modelworks.training.flavors.sklearn import allowed_type
from modelworks.training.package import load_package, save_package, verify_package
from modelworks.training.trusted import register_trusted_types

Data = tuple[pd.DataFrame, pd.Series]


class Doubler(BaseEstimator, TransformerMixin):  # a custom class nobody registered
    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return X * 2


@pytest.fixture
def saved(binary: Data, tmp_path: Path) -> Path:
    X, y = binary
    model = LogisticRegression(max_iter=500).fit(X, y)
    save_package(
        model,
        tmp_path / "pkg",
        input_example=X.head(),
        metrics={"auc": np.float64(0.97)},
        params={"C": 1.0, "solver": "lbfgs"},
        lineage={"dataset": "churn@3"},
    )
    return tmp_path / "pkg"


def test_model_yaml_describes_the_package(saved: Path) -> None:
    meta = yaml.safe_load((saved / "model.yaml").read_text())
    assert meta["format_version"] == 1 and meta["flavor"] == "sklearn"
    assert meta["task"] == "binary" and meta["classes"] == [0, 1]
    assert meta["model_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert meta["metrics"] == {"auc": 0.97} and meta["lineage"] == {"dataset": "churn@3"}
    assert set(meta["frameworks"]) == {"scikit-learn", "skops"} and meta["python_version"]
    assert set(meta["files"]) == {"model/model.skops", "requirements.txt"}
    assert meta["signature"]["inputs"][0] == {
        "name": "mean_radius",
        "type": "double",
        "nullable": False,
        "shape": None,
    }
    reqs = (saved / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("scikit-learn==") for r in reqs)
    assert not list(saved.parent.glob(".pkg.*"))  # no temporary folder left behind


def test_tampered_missing_or_extra_file_is_refused(saved: Path) -> None:
    verify_package(saved)
    skops_file = saved / "model" / "model.skops"
    good = skops_file.read_bytes()
    skops_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(CorruptData, match=r"model/model\.skops does not match its checksum"):
        load_package(saved)
    skops_file.unlink()
    with pytest.raises(CorruptData, match=r"model/model\.skops is missing"):
        load_package(saved)
    skops_file.write_bytes(good)
    (saved / "model" / "evil.pkl").write_bytes(pickle.dumps(1))
    with pytest.raises(CorruptData, match=r"model/evil\.pkl is not part of the package"):
        verify_package(saved)
    (saved / "model" / "evil.pkl").unlink()
    meta = yaml.safe_load((saved / "model.yaml").read_text())
    meta["files"]["../outside.txt"] = "0" * 64
    (saved / "model.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(CorruptData, match=r"\.\./outside\.txt points outside the package"):
        verify_package(saved)


def test_existing_destination_is_not_overwritten(saved: Path, binary: Data) -> None:
    with pytest.raises(AlreadyExists, match="new path"):
        save_package(LogisticRegression(), saved)


def test_version_mismatch_warns_and_major_mismatch_fails(saved: Path) -> None:
    meta_path = saved / "model.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    installed = meta["frameworks"]["scikit-learn"]
    major, minor, *_ = installed.split(".")
    meta["frameworks"]["scikit-learn"] = f"{major}.{int(minor) + 1}.0"
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.warns(
        UserWarning,
        match=rf"saved with scikit-learn {major}\.{int(minor) + 1}\.0; "
        rf"scikit-learn {installed} is installed",
    ):
        load_package(saved)
    meta["frameworks"]["scikit-learn"] = f"{int(major) + 1}.0.0"
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(InvalidInput, match=rf"pip install 'scikit-learn=={int(major) + 1}\.0\.0'"):
        load_package(saved)


def test_untrusted_class_needs_trust_or_registration(binary: Data, tmp_path: Path) -> None:
    X, y = binary
    model = make_pipeline(Doubler(), LogisticRegression(max_iter=500)).fit(X, y)
    save_package(model, tmp_path / "pkg", input_example=X.head())
    name = f"{Doubler.__module__}.Doubler"
    with pytest.raises(UntrustedModel, match=rf"{name}.*register_trusted_types.*trust=True"):
        load_package(tmp_path / "pkg")
    trusted = load_package(tmp_path / "pkg", trust=True)
    assert np.array_equal(trusted.predict(X), model.predict(X))
    register_trusted_types(Doubler)
    assert np.array_equal(load_package(tmp_path / "pkg").predict(X), model.predict(X))


def test_allow_list() -> None:
    assert allowed_type("sklearn.tree._tree.Tree")
    assert allowed_type("numpy.float64") and allowed_type("numpy.log")
    assert allowed_type("lightgbm.basic.Booster") and allowed_type("xgboost.sklearn.XGBRegressor")
    assert not allowed_type("numpy.load")  # a function, not a type or ufunc
    assert not allowed_type("builtins.eval")
    assert not allowed_type("os.system")
    assert not allowed_type("sklearn.no_such.Thing")


def test_unpicklable_by_skops_falls_back_to_pickle_behind_trust(
    binary: Data, tmp_path: Path
) -> None:
    from sklearn.preprocessing import FunctionTransformer

    pytest.importorskip("cloudpickle")
    X, y = binary
    model = make_pipeline(FunctionTransformer(lambda v: v + 1), LogisticRegression(max_iter=500))
    model.fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_package(model, tmp_path / "pkg")
    assert any("trust=True" in str(w.message) for w in caught)
    assert (tmp_path / "pkg" / "model" / "model.pkl").exists()
    with pytest.raises(UntrustedModel, match="pickle"):
        load_package(tmp_path / "pkg")
    assert np.array_equal(load_package(tmp_path / "pkg", trust=True).predict(X), model.predict(X))


def test_repr_and_html(saved: Path) -> None:
    pkg = load_package(saved)
    assert repr(pkg).startswith("<ModelPackage sklearn binary LogisticRegression (mean_radius")
    html = pkg._repr_html_()
    assert "lineage.dataset" in html and "churn@3" in html and "metrics.auc" in html
    assert pkg.flavor == "sklearn" and pkg.signature is not None and pkg.meta.params["C"] == 1.0


def test_predict_checks_the_signature(saved: Path, binary: Data) -> None:
    X, _ = binary
    with pytest.raises(InvalidInput, match="missing columns: 'mean_radius'"):
        load_package(saved).predict(X.drop(columns=["mean_radius"]))
