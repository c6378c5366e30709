"""Preprocessing per model family, built from the column kinds.

Trees get raw numbers with NaN left in and ordinal-coded categories; linear models and the
MLP get imputation, one-hot categories and scaling. Dates become calendar parts plus epoch
seconds, free text a few TF-IDF + SVD components. The custom transformers keep their
fitted state in builtins, NumPy arrays and scikit-learn objects only, so skops can save them.
"""

# ruff: noqa: N803 - X is scikit-learn's name for a feature matrix.

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from modelworks.training.automl.columns import ColumnKinds
from modelworks.training.trusted import register_trusted_types

PreprocessingKind = Literal["tree", "linear"]
DATETIME_PARTS = ("year", "month", "day", "day_of_week", "hour")
MISSING = "__missing__"


def _frame(X: Any) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))


class CategoryStrings(TransformerMixin, BaseEstimator):
    """Cast categories to strings (NaN stays NaN), so mixed-type columns encode cleanly."""

    def fit(self, X: Any, y: Any = None) -> CategoryStrings:
        self.n_features_in_ = _frame(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = _frame(X)
        out = np.empty(frame.shape, dtype=object)
        for j in range(frame.shape[1]):
            col = frame.iloc[:, j]
            mask = col.isna().to_numpy()
            values = col.astype(object).to_numpy()
            out[:, j] = [np.nan if m else str(v) for v, m in zip(values, mask, strict=True)]
        return out


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Each date column as year, month, day, weekday, hour and epoch seconds (NaN if missing)."""

    def fit(self, X: Any, y: Any = None) -> DatetimeFeatures:
        self.n_features_in_ = _frame(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = _frame(X)
        blocks = []
        for j in range(frame.shape[1]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = pd.to_datetime(frame.iloc[:, j], errors="coerce", format="mixed", utc=True)
            parts = [getattr(ts.dt, p).astype("float64").to_numpy() for p in DATETIME_PARTS]
            epoch = (ts - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
            parts.append(epoch.astype("float64").to_numpy())
            blocks.append(np.column_stack(parts))
        return np.hstack(blocks) if blocks else np.empty((len(frame), 0))


class TextFeatures(TransformerMixin, BaseEstimator):
    """Each free-text column as ``n_components`` SVD components of its TF-IDF matrix."""

    def __init__(self, n_components: int = 8, max_features: int = 5000) -> None:
        self.n_components = n_components
        self.max_features = max_features

    def _docs(self, col: pd.Series) -> list[str]:
        return [str(v) for v in col.fillna("").astype(object).to_numpy()]

    def fit(self, X: Any, y: Any = None) -> TextFeatures:
        frame = _frame(X)
        self.n_features_in_ = frame.shape[1]
        self.vectorizers_: list[TfidfVectorizer] = []
        self.svds_: list[TruncatedSVD | None] = []
        for j in range(frame.shape[1]):
            vec = TfidfVectorizer(
                max_features=self.max_features, sublinear_tf=True, min_df=2, dtype=np.float64
            )
            try:
                matrix = vec.fit_transform(self._docs(frame.iloc[:, j]))
            except ValueError:  # every document empty or all words rare: fall back to one-offs
                vec = TfidfVectorizer(max_features=self.max_features, dtype=np.float64)
                matrix = vec.fit_transform([*self._docs(frame.iloc[:, j]), "empty"])
            svd: TruncatedSVD | None = None
            if matrix.shape[1] > self.n_components:
                svd = TruncatedSVD(n_components=self.n_components, random_state=0)
                svd.fit(matrix)
            self.vectorizers_.append(vec)
            self.svds_.append(svd)
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = _frame(X)
        blocks = []
        for j, (vec, svd) in enumerate(zip(self.vectorizers_, self.svds_, strict=True)):
            matrix = vec.transform(self._docs(frame.iloc[:, j]))
            dense = svd.transform(matrix) if svd is not None else matrix.toarray()
            # Always n_components columns, so the output width never depends on the vocabulary.
            fixed = np.zeros((len(frame), self.n_components))
            width = min(self.n_components, dense.shape[1])
            fixed[:, :width] = dense[:, :width]
            blocks.append(fixed)
        return np.hstack(blocks) if blocks else np.empty((len(frame), 0))


register_trusted_types(CategoryStrings, DatetimeFeatures, TextFeatures)


def build_preprocessor(kind: PreprocessingKind, cols: ColumnKinds) -> ColumnTransformer:
    """A ColumnTransformer for this family kind; output order: numeric, categorical, date, text."""
    parts: list[tuple[str, Any, list[str]]] = []
    if kind == "tree":
        if cols.numeric:
            parts.append(("num", "passthrough", cols.numeric))
        if cols.categorical:
            encoder = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
                max_categories=250,
                dtype=np.float64,
            )
            parts.append(("cat", make_pipeline(CategoryStrings(), encoder), cols.categorical))
        if cols.datetime:
            parts.append(("date", DatetimeFeatures(), cols.datetime))
        if cols.text:
            parts.append(("text", TextFeatures(), cols.text))
    else:
        if cols.numeric:
            numeric = make_pipeline(
                SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
            )
            parts.append(("num", numeric, cols.numeric))
        if cols.categorical:
            onehot = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=30,
                min_frequency=3,
                sparse_output=False,
                dtype=np.float64,
            )
            categorical = make_pipeline(
                CategoryStrings(), SimpleImputer(strategy="constant", fill_value=MISSING), onehot
            )
            parts.append(("cat", categorical, cols.categorical))
        if cols.datetime:
            dates = make_pipeline(
                DatetimeFeatures(), SimpleImputer(strategy="median"), StandardScaler()
            )
            parts.append(("date", dates, cols.datetime))
        if cols.text:
            parts.append(("text", make_pipeline(TextFeatures(), StandardScaler()), cols.text))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def categorical_mask(cols: ColumnKinds, n_out: int) -> list[bool] | None:
    """Which tree-preprocessed columns are ordinal-coded categories (for HistGradientBoosting).

    The categorical block comes right after the numeric one, one output column per input.
    """
    if not cols.categorical:
        return None
    n_num, n_cat = len(cols.numeric), len(cols.categorical)
    return [False] * n_num + [True] * n_cat + [False] * (n_out - n_num - n_cat)


def make_pipeline_for(preprocessor: ColumnTransformer, model: Any) -> Pipeline:
    return Pipeline([("preprocess", preprocessor), ("model", model)])
