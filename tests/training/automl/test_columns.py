"""Mixed column kinds: detection, the per-family preprocessing, and the model on raw frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modelworks.training.automl import DatetimeFeatures, TextFeatures, run_automl
from modelworks.training.automl.columns import inspect_columns
from modelworks.training.automl.preprocessing import build_preprocessor


def test_each_column_gets_its_kind(mixed: pd.DataFrame) -> None:
    report = inspect_columns(mixed, "label", "binary")
    kinds = report.kinds
    assert kinds.numeric == ["amount"]
    assert kinds.categorical == ["colour", "member"]
    assert kinds.datetime == ["ordered", "shipped"]
    assert kinds.text == ["review"]
    assert report.dropped == [] and report.warnings == []


def test_tree_and_linear_preprocessing_shapes(mixed: pd.DataFrame) -> None:
    kinds = inspect_columns(mixed, "label", "binary").kinds
    X = mixed.drop(columns="label")
    tree = build_preprocessor("tree", kinds).fit_transform(X)
    # 1 numeric + 2 ordinal categories + 2 x 6 date parts + 8 text components
    assert tree.shape == (len(X), 1 + 2 + 12 + 8)
    assert np.isnan(tree[:, 0]).any()  # trees see the missing values as NaN
    linear = build_preprocessor("linear", kinds).fit_transform(X)
    assert not np.isnan(linear).any()  # imputed for linear models
    assert linear.shape[1] > tree.shape[1] - 2  # one-hot widens the categories


def test_datetime_parts_and_text_components() -> None:
    dates = pd.DataFrame({"d": ["2024-03-09 14:00:00", None]})
    out = DatetimeFeatures().fit_transform(dates)
    assert out[0, :5].tolist() == [2024, 3, 9, 5, 14]
    assert out[0, 5] == pd.Timestamp("2024-03-09 14:00", tz="UTC").timestamp()
    assert np.isnan(out[1]).all()
    docs = pd.DataFrame({"t": ["a b c", "b c d", "x y z", None]})
    text = TextFeatures(n_components=3).fit(docs)
    assert text.transform(docs).shape == (4, 3)


def test_automl_on_mixed_dtypes_predicts_unseen_and_missing_values(mixed: pd.DataFrame) -> None:
    result = run_automl(
        mixed,
        "label",
        time_budget=6,
        seed=0,
        n_jobs=2,
        families=["linear", "lightgbm", "hist_gradient_boosting"],
    )
    assert result.classes == ["churn", "stay"]
    assert result.best.score is not None and result.best.score > 0.8
    odd = mixed.drop(columns="label").head(3).copy()
    odd.loc[0, "colour"] = "purple"  # a category never seen in training
    odd.loc[1, ["amount", "colour", "ordered", "shipped", "review"]] = None
    pred = result.model.predict(odd)
    assert set(pred) <= {"churn", "stay"}
    assert result.model.predict_proba(odd).shape == (3, 2)
