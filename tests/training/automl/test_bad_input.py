"""Bad input raises InvalidInput, with a message that names the problem and what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelworks.core.errors import InvalidInput
from modelworks.training.automl import run_automl


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "z": rng.normal(size=n), "churned": [0, 1] * (n // 2)}
    )


def _fails(frame: pd.DataFrame, target: str, match: str, **kwargs: object) -> str:
    with pytest.raises(InvalidInput, match=match) as info:
        run_automl(frame, target, time_budget=2, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_missing_target_lists_close_names() -> None:
    message = _fails(_frame(), "churn", "not in the frame")
    assert "Did you mean 'churned'" in message


def test_single_class() -> None:
    frame = _frame()
    frame["churned"] = 1
    _fails(frame, "churned", "single class", task="binary")


def test_target_all_null() -> None:
    frame = _frame()
    frame["churned"] = np.nan
    _fails(frame, "churned", "all null")


def test_too_few_rows() -> None:
    _fails(_frame(8), "churned", "8 labelled rows.*at least 20")


def test_class_with_one_row() -> None:
    frame = _frame()
    frame.loc[0, "churned"] = 2
    _fails(frame, "churned", "single row.*2")


def test_unsupported_dtypes_name_the_column_and_dtype() -> None:
    frame = _frame()
    frame["wait"] = pd.to_timedelta(np.arange(len(frame)), unit="s")
    _fails(frame, "churned", "Column 'wait' has unsupported dtype timedelta64.*total_seconds")
    frame = _frame()
    frame["z"] = frame["z"] * 1j
    _fails(frame, "churned", "Column 'z' has unsupported dtype complex128")
    frame = _frame()
    frame["tags"] = [["a", "b"]] * len(frame)
    _fails(frame, "churned", "Column 'tags' has unsupported dtype object: holds list")


def test_wrong_task_metric_family_and_budget() -> None:
    _fails(_frame(), "churned", "Unknown task 'clustering'", task="clustering")
    _fails(_frame(), "churned", "Metric 'rmse' does not apply to a binary task", metric="rmse")
    _fails(_frame(), "churned", "Unknown model family 'svm'", families=["svm"])
    with pytest.raises(InvalidInput, match="time_budget must be a positive"):
        run_automl(_frame(), "churned", time_budget=0)


def test_regression_needs_a_numeric_target() -> None:
    frame = _frame()
    frame["churned"] = np.where(frame.churned == 1, "yes", "no")
    _fails(frame, "churned", "not a number", task="regression")


def test_no_feature_left() -> None:
    frame = pd.DataFrame({"empty": [np.nan] * 40, "y": [0, 1] * 20})
    _fails(frame, "y", "No usable feature columns.*dropped: empty")


def test_all_null_columns_are_dropped_with_a_warning() -> None:
    frame = _frame()
    frame["blank"] = np.nan
    result = run_automl(frame, "churned", time_budget=2, families=["linear"], max_trials=1)
    assert "blank" not in result.feature_columns
    assert any("'blank' is all null" in w for w in result.warnings)


def test_null_targets_are_left_out_with_a_warning() -> None:
    frame = _frame()
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[:4, "churned"] = np.nan
    result = run_automl(frame, "churned", time_budget=2, families=["linear"], max_trials=1)
    assert any("5 rows with a null target" in w for w in result.warnings)
