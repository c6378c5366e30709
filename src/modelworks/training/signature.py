"""A model's input and output schema, and the check that input matches it.

A signature is inferred from an example of the training input (a pandas DataFrame, or a
NumPy array for tensor models) and the model's predictions on it. Column types are Arrow
type names (``int64``, ``double``, ``string``, ``bool``, ``timestamp[us]``...), so the
same names appear in dataset schemas and model packages.

>>> sig = infer_signature(X_train.head(), model.predict(X_train.head()))  # doctest: +SKIP
>>> X = validate_input(sig, request_frame)  # columns checked, reordered  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from modelworks.core.errors import InvalidInput

__all__ = ["ColumnSpec", "Signature", "infer_signature", "validate_input"]

_INTEGER = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT = {"halffloat", "float", "double"}


class ColumnSpec(BaseModel):
    """One input column or output: name, Arrow type name, and whether nulls were seen.

    ``shape`` is set for tensor inputs and multi-column outputs (``-1`` is any size).
    """

    name: str
    type: str
    nullable: bool = False
    shape: list[int] | None = None


class Signature(BaseModel):
    """The columns a model takes (``inputs``) and what it returns (``outputs``)."""

    inputs: list[ColumnSpec] = Field(default_factory=list)
    outputs: list[ColumnSpec] = Field(default_factory=list)

    @property
    def is_tensor(self) -> bool:
        """True when the model takes one array rather than named columns."""
        return len(self.inputs) == 1 and self.inputs[0].shape is not None

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.inputs]

    def summary(self, max_columns: int = 6) -> str:
        """``(a: int64, b: double, ... 28 more) -> (prediction: int64)``."""
        ins = ", ".join(_describe(c) for c in self.inputs[:max_columns])
        if len(self.inputs) > max_columns:
            ins += f", ... {len(self.inputs) - max_columns} more"
        outs = ", ".join(_describe(c) for c in self.outputs)
        return f"({ins}) -> ({outs})"

    def __str__(self) -> str:
        return self.summary(max_columns=len(self.inputs))


def _describe(c: ColumnSpec) -> str:
    shape = "" if c.shape is None else f"[{', '.join(map(str, c.shape))}]"
    return f"{c.name}: {c.type}{shape}{'?' if c.nullable else ''}"


def arrow_type_name(series: pd.Series) -> str:
    """The Arrow type name of a pandas column, with large/small string variants unified."""
    import pyarrow as pa

    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufmM":  # no need to look at values
        return _array_type_name(dtype)
    values = series.dropna().head(1000)  # objects and strings: a sample says what they are
    if values.empty and isinstance(dtype, np.dtype):
        return "null"
    try:
        arrow = pa.Array.from_pandas(values if isinstance(dtype, np.dtype) else series).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return "object"  # mixed Python objects: no Arrow type fits
    return _normalise(str(arrow))


def _array_type_name(dtype: np.dtype[Any]) -> str:
    import pyarrow as pa

    try:
        return _normalise(str(pa.from_numpy_dtype(dtype)))
    except (pa.ArrowNotImplementedError, TypeError):
        return str(dtype)


def _normalise(name: str) -> str:
    name = name.replace("large_string", "string").replace("large_binary", "binary")
    if name == "large_utf8" or name == "utf8":
        return "string"
    if name.startswith("dictionary<"):
        return "category"
    return name


def _outputs(predictions: Any) -> list[ColumnSpec]:
    if predictions is None:
        return []
    if isinstance(predictions, pd.DataFrame):
        return _frame_columns(predictions)
    if isinstance(predictions, pd.Series):
        return [ColumnSpec(name="prediction", type=arrow_type_name(predictions))]
    arr = np.asarray(predictions)
    shape = None if arr.ndim <= 1 else [-1, *arr.shape[1:]]
    nullable = bool(arr.dtype.kind == "f" and np.isnan(arr).any())
    return [
        ColumnSpec(
            name="prediction", type=_array_type_name(arr.dtype), nullable=nullable, shape=shape
        )
    ]


def _frame_columns(frame: pd.DataFrame) -> list[ColumnSpec]:
    return [
        ColumnSpec(
            name=str(name),
            type=arrow_type_name(frame[name]),
            nullable=bool(frame[name].isna().any()),
        )
        for name in frame.columns
    ]


def infer_signature(
    example: pd.DataFrame | np.ndarray[Any, Any], predictions: Any = None
) -> Signature:
    """The signature of a model that takes ``example`` and returned ``predictions`` for it."""
    if isinstance(example, pd.DataFrame):
        inputs = _frame_columns(example)
    else:
        arr = np.asarray(example)
        inputs = [
            ColumnSpec(name="input", type=_array_type_name(arr.dtype), shape=[-1, *arr.shape[1:]])
        ]
    return Signature(inputs=inputs, outputs=_outputs(predictions))


def _compatible(expected: str, actual: str, series: pd.Series) -> bool:
    if expected == actual:
        return True
    if expected in _FLOAT and (actual in _INTEGER or actual in _FLOAT):
        return True  # widening a number to a float loses nothing a model cares about
    if expected in _INTEGER and actual in _INTEGER:
        return True
    if expected in _INTEGER and actual in _FLOAT:
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        return bool(np.isfinite(values).all() and (values == np.round(values)).all())
    if {expected, actual} <= {"string", "category"}:
        return True
    if expected.startswith("timestamp") and actual.startswith("timestamp"):
        return True
    return expected == "null" or actual == "null"  # an all-null column fits anything


def validate_input(
    signature: Signature, frame: Any, *, allow_extra: bool = False
) -> pd.DataFrame | np.ndarray[Any, Any]:
    """Check ``frame`` against ``signature``; return it with the columns in signature order.

    Raises ``InvalidInput`` listing every missing, unexpected (unless ``allow_extra``, which
    drops them instead) and wrongly typed column at once.
    """
    if signature.is_tensor:
        return _validate_tensor(signature.inputs[0], frame)
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInput(
            f"The model takes a pandas DataFrame with columns {signature.input_names}; got "
            f"{type(frame).__name__}. Build one with pd.DataFrame(rows, columns=[...])."
        )
    names = [str(c) for c in frame.columns]
    expected = signature.input_names
    missing = [c for c in expected if c not in names]
    unexpected = [c for c in names if c not in expected]
    wrong = []
    for spec in signature.inputs:
        if spec.name in names:
            actual = arrow_type_name(frame[spec.name])
            if not _compatible(spec.type, actual, frame[spec.name]):
                wrong.append(f"{spec.name!r} is {actual}, expected {spec.type}")
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(map(repr, missing))}")
    if unexpected and not allow_extra:
        problems.append(f"unexpected columns: {', '.join(map(repr, unexpected))}")
    if wrong:
        problems.append(f"wrongly typed columns: {'; '.join(wrong)}")
    if problems:
        raise InvalidInput(
            "The input does not match the model's signature: "
            + ". ".join(problems)
            + f". The model expects {signature.summary(max_columns=20)}.",
            missing=missing,
            unexpected=unexpected,
            wrong_types=wrong,
        )
    frame = frame.copy(deep=False)
    frame.columns = names
    return frame[expected]


def _validate_tensor(spec: ColumnSpec, data: Any) -> np.ndarray[Any, Any]:
    arr = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    want = spec.shape or []
    if arr.ndim != len(want) or any(
        w not in (-1, a) for w, a in zip(want, arr.shape, strict=False)
    ):
        raise InvalidInput(
            f"The model takes an array of shape {tuple(want)} (-1: any size); got shape "
            f"{arr.shape}. Reshape the input to match."
        )
    actual = _array_type_name(arr.dtype)
    if not _compatible(spec.type, actual, pd.Series(arr.ravel()[:1000])):
        raise InvalidInput(
            f"The model takes {spec.type} values; got {actual}. Convert with "
            f"array.astype(...) first."
        )
    return arr
