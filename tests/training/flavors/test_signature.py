"""Signatures: inferred from a DataFrame and predictions; input checked and reordered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelworks.core.errors import InvalidInput
from modelworks.training.signature import infer_signature, validate_input


def example() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [31, 45, 52],
            "income": [1.5, None, 3.0],
            "city": ["a", "b", "c"],
            "active": [True, False, True],
        }
    )


def test_infer_signature_columns_types_and_nulls() -> None:
    sig = infer_signature(example(), np.array([0, 1, 1]))
    assert [(c.name, c.type, c.nullable) for c in sig.inputs] == [
        ("age", "int64", False),
        ("income", "double", True),
        ("city", "string", False),
        ("active", "bool", False),
    ]
    assert [(c.name, c.type) for c in sig.outputs] == [("prediction", "int64")]
    proba = infer_signature(example(), np.zeros((3, 2)))
    assert proba.outputs[0].shape == [-1, 2]


def test_validate_reorders_and_accepts_compatible_types() -> None:
    sig = infer_signature(example())
    given = example()[["city", "active", "income", "age"]].astype({"age": "int32"})
    out = validate_input(sig, given)
    assert list(out.columns) == ["age", "income", "city", "active"]
    ints_as_floats = example().astype({"age": "float64"})  # whole numbers: fine
    assert list(validate_input(sig, ints_as_floats).columns) == sig.input_names


def test_validate_lists_missing_unexpected_and_wrong_types() -> None:
    sig = infer_signature(example())
    bad = example().drop(columns=["income", "city"]).assign(extra=1, age=["x", "y", "z"], zip=2)
    with pytest.raises(InvalidInput) as err:
        validate_input(sig, bad)
    msg = str(err.value)
    assert "missing columns: 'income', 'city'" in msg
    assert "unexpected columns: 'extra', 'zip'" in msg
    assert "'age' is string, expected int64" in msg
    assert err.value.extra["missing"] == ["income", "city"]
    fractional = example().assign(age=[1.5, 2.0, 3.0])
    with pytest.raises(InvalidInput, match="'age' is double, expected int64"):
        validate_input(sig, fractional)


def test_extra_columns_can_be_dropped() -> None:
    sig = infer_signature(example())
    out = validate_input(sig, example().assign(request_id=[1, 2, 3]), allow_extra=True)
    assert list(out.columns) == sig.input_names


def test_tensor_signature_checks_shape() -> None:
    sig = infer_signature(np.zeros((4, 3), dtype=np.float32))
    assert sig.is_tensor and sig.inputs[0].shape == [-1, 3]
    assert validate_input(sig, np.ones((10, 3), dtype=np.float32)).shape == (10, 3)
    with pytest.raises(InvalidInput, match=r"shape \(-1, 3\)"):
        validate_input(sig, np.ones((10, 4), dtype=np.float32))


def test_not_a_frame_is_refused_with_advice() -> None:
    with pytest.raises(InvalidInput, match="pandas DataFrame"):
        validate_input(infer_signature(example()), [[1, 2, 3, 4]])
