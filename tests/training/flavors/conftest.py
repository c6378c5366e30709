"""Small data sets bundled with scikit-learn (nothing is downloaded), and autolog reset."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from modelworks.training.autolog import autolog


@pytest.fixture(autouse=True)
def _autolog_off() -> Iterator[None]:
    yield
    autolog(disable=True)


@pytest.fixture(scope="session")
def binary() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:200, :6]
    X.columns = [c.replace(" ", "_") for c in X.columns]
    return X, y.iloc[:200]


@pytest.fixture(scope="session")
def multiclass() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return X, y


@pytest.fixture(scope="session")
def regression() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X.iloc[:200], y.iloc[:200]
