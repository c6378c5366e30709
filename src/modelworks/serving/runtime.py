"""A loaded model ready for online requests: JSON rows in, predictions out, no pandas where
pandas costs.

:class:`ModelRuntime` wraps a :class:`~modelworks.training.package.ModelPackage` and turns
request JSON (``records``: a list of objects, ``columns``: an object of lists, or
``instances``: a list of rows in signature order) straight into the arrays the model takes,
checking every value against the package's signature on the way:

- all-numeric signatures become one float64 ``[rows, columns]`` matrix, built from the
  row tuples in one ``np.array`` call; models that take arrays (LightGBM Boosters, PyTorch,
  Keras, scikit-learn estimators fitted without column names) get the matrix itself, the
  others a DataFrame laid over it (one block, no copy);
- other signatures become one NumPy array per column (strings as objects, categories as
  ``pd.Categorical``) and a DataFrame built from them;
- types the fast path does not know (dates, binary, nested values) and packages without a
  signature go through ``pandas.DataFrame.from_records`` and the package's own checks.

Which layout a model gets is decided once, at load, and checked on a few generated rows
against the package's own ``predict_proba``/``predict`` on a DataFrame of the same rows;
when they differ the runtime falls back to the DataFrame layout. Classifier labels come
from the argmax of the probabilities (one model call, not two) when that gives the model's
own labels on those rows.

A package exported to ONNX runs on onnxruntime instead when that is faster on those rows
(timed once at load), or when ``use_onnx=True``. ONNX Runtime and LightGBM run with
``threads`` intra-op threads (default 1): online batches are small, and an OpenMP team per
call on a machine whose cores other requests also use costs more than it saves.

Errors name the row (counted from 0, as the JSON array is indexed) and the field:
``row 3: 'tenure' must be a number, got 'abc'``.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from modelworks.core.errors import CorruptData, InvalidInput, ModelworksError
from modelworks.training.flavors import get_flavor
from modelworks.training.package import ModelPackage
from modelworks.training.signature import ColumnSpec, Signature

__all__ = [
    "ModelInput",
    "ModelRuntime",
    "PredictionBatch",
    "RuntimeInfo",
]

log = logging.getLogger("modelworks.serving")

_FLOAT_TYPES = frozenset({"halffloat", "float", "double"})
_INT_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
_STRING_TYPES = frozenset({"string", "category"})
_CLASSIFIER_TASKS = ("binary", "multiclass")
_NUMBER = frozenset({int, float})
_NUMBER_OR_NULL = frozenset({int, float, type(None)})
_MAX_PROBLEMS = 10
SAMPLE_ROWS = 8

ColumnKind = Literal["float", "int", "bool", "string", "category", "timestamp"]
InputMode = Literal["array", "frame", "tensor", "pandas"]
Backend = Literal["native", "onnx"]


# ---- public value types ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """What a model answered for some rows, as plain Python values (ready for JSON)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None
    model_version: str

    def __len__(self) -> int:
        return len(self.predictions)

    def slice(self, start: int, stop: int) -> PredictionBatch:
        """The answers for rows ``start:stop`` (how a coalesced batch is split back)."""
        return PredictionBatch(
            self.predictions[start:stop],
            None if self.probabilities is None else self.probabilities[start:stop],
            self.classes,
            self.model_version,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"predictions": self.predictions}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.classes is not None:
            out["classes"] = self.classes
        out["model_version"] = self.model_version
        return out


@dataclass(frozen=True, slots=True)
class ModelInput:
    """A request's rows as they came: ``records``, ``columns`` or ``instances``.

    The batcher queues these and the runtime checks and converts them in its worker thread,
    so a bad request fails alone and the event loop never does the conversion.
    """

    kind: Literal["records", "columns", "instances"]
    data: Any
    rows: int

    @classmethod
    def records(cls, records: Sequence[Mapping[str, Any]]) -> ModelInput:
        return cls("records", records, len(records) if isinstance(records, list) else 0)

    @classmethod
    def columns(cls, columns: Mapping[str, Sequence[Any]]) -> ModelInput:
        rows = 0
        if isinstance(columns, Mapping):
            first = next(iter(columns.values()), None)
            rows = len(first) if isinstance(first, list | tuple | np.ndarray) else 0
        return cls("columns", columns, rows)

    @classmethod
    def instances(cls, instances: Any) -> ModelInput:
        rows = len(instances) if isinstance(instances, list | tuple | np.ndarray) else 0
        return cls("instances", instances, rows)


@dataclass(frozen=True)
class RuntimeInfo:
    """How the runtime runs its model, for the metadata endpoint and the logs."""

    name: str
    version: str
    version_id: str
    flavor: str
    task: str
    backend: Backend
    input_mode: InputMode
    labels_from_probabilities: bool
    timings_us: dict[str, float] = field(default_factory=dict)


# ---- the converted input --------------------------------------------------------------------
@dataclass(slots=True)
class _Encoded:
    """Checked, converted rows: exactly one of the fields below is set."""

    rows: int
    matrix: np.ndarray[Any, Any] | None = None  # float64 [rows, columns]
    columns: dict[str, np.ndarray[Any, Any]] | None = None
    tensor: np.ndarray[Any, Any] | None = None
    frame: pd.DataFrame | None = None

    @staticmethod
    def concat(parts: Sequence[_Encoded]) -> _Encoded:
        parts = [p for p in parts if p.rows] or list(parts[:1])
        if len(parts) == 1:
            return parts[0]
        rows = sum(p.rows for p in parts)
        first = parts[0]
        if first.matrix is not None:
            return _Encoded(rows, matrix=np.concatenate([_need(p.matrix) for p in parts]))
        if first.tensor is not None:
            return _Encoded(rows, tensor=np.concatenate([_need(p.tensor) for p in parts]))
        if first.columns is not None:
            names = list(first.columns)
            return _Encoded(
                rows,
                columns={n: np.concatenate([_need(p.columns)[n] for p in parts]) for n in names},
            )
        frames = [_need(p.frame) for p in parts]
        return _Encoded(rows, frame=pd.concat(frames, ignore_index=True))


def _need(value: Any) -> Any:
    if value is None:  # every part of a batch is encoded by the same runtime, the same way
        raise AssertionError("a batch mixes input layouts")
    return value


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    kind: ColumnKind | None  # None: a type the fast path does not convert
    nullable: bool
    spec: ColumnSpec


def _kind(spec: ColumnSpec) -> ColumnKind | None:
    t = spec.type
    if t in _FLOAT_TYPES:
        return "float"
    if t in _INT_TYPES:
        return "int"
    if t == "bool":
        return "bool"
    if t == "string":
        return "string"
    if t == "category":
        return "category"
    if t.startswith("timestamp"):
        return "timestamp"
    return None


def _show(value: Any) -> str:
    """A value as JSON would spell it, cut short."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = repr(value) if isinstance(value, str) else str(value)
    if isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list | tuple):
        text = "a list"
    return text if len(text) <= 40 else text[:37] + "..."


class _Problems:
    """Every problem found in a request, raised together as one InvalidInput."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, row: int | None, field_name: str | None, message: str) -> None:
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append({"row": row, "field": field_name, "message": message})

    def raise_if_any(self, signature: Signature, **extra: Any) -> None:
        if not self.items:
            return
        text = "; ".join(p["message"] for p in self.items)
        raise InvalidInput(
            f"The input does not match the model's signature: {text}. The model expects "
            f"{signature.summary(max_columns=20)}.",
            errors=self.items,
            **extra,
        )


_EXPECT = {
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
    "string": "a string",
    "category": "a string",
    "timestamp": "an ISO 8601 date-time string",
}
_ALLOWED: dict[str, frozenset[type]] = {
    "float": _NUMBER,
    "int": frozenset({int, float}),  # whole floats (3.0) are checked below
    "bool": frozenset({bool}),
    "string": frozenset({str}),
    "category": frozenset({str}),
    "timestamp": frozenset({str}),
}
_NULL = frozenset({type(None)})


def _convert(col: _Column, values: Sequence[Any], problems: _Problems) -> np.ndarray[Any, Any]:
    """One column's JSON values as a NumPy array, or problems naming the bad rows."""
    kind = col.kind
    assert kind is not None
    allowed = _ALLOWED[kind]
    nullable = kind in ("float", "string", "category", "bool", "timestamp") or col.nullable
    seen = set(map(type, values))
    ok = allowed | _NULL if nullable else allowed
    if not seen <= ok:
        for i, v in enumerate(values):
            if type(v) not in ok:
                problems.add(
                    i, col.name, f"row {i}: {col.name!r} must be {_EXPECT[kind]}, got {_show(v)}"
                )
                break
        return np.empty(0)
    if kind == "float":
        return np.array(values, dtype=np.float64)  # None becomes NaN
    if kind == "int":
        return _ints(col, values, seen, problems)
    if kind in ("string", "category", "bool"):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        if kind == "bool" and type(None) not in seen:
            return arr.astype(bool)
        return arr
    try:
        stamps = pd.to_datetime(
            pd.Series(values, dtype=object), format="ISO8601", utc="tz=" in col.spec.type
        )
    except (ValueError, TypeError) as exc:
        for i, v in enumerate(values):
            try:
                if v is not None:
                    pd.to_datetime(v, format="ISO8601")
            except (ValueError, TypeError):
                problems.add(
                    i, col.name, f"row {i}: {col.name!r} must be {_EXPECT[kind]}, got {_show(v)}"
                )
                break
        else:  # each value parses alone, but not together (time zones mixed with none)
            problems.add(None, col.name, f"{col.name!r} cannot be read as one column: {exc}")
        return np.empty(0)
    if "tz=" in col.spec.type:  # kept as UTC; the frame puts the zone back
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.to_numpy()


def _ints(
    col: _Column, values: Sequence[Any], seen: set[type], problems: _Problems
) -> np.ndarray[Any, Any]:
    if seen <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    for i, v in enumerate(values):
        if v is None and col.nullable:
            continue
        if (
            v is None
            or (type(v) is float and not (v.is_integer() and -(2.0**63) <= v < 2.0**63))
            or (type(v) is int and not -(2**63) <= v < 2**63)
        ):
            problems.add(
                i, col.name, f"row {i}: {col.name!r} must be a whole number, got {_show(v)}"
            )
            return np.empty(0)
    if type(None) in seen:
        return np.array(values, dtype=np.float64)  # a nullable integer column: NaN for null
    return np.array([int(v) for v in values], dtype=np.int64)


# ---- the runtime ----------------------------------------------------------------------------
class ModelRuntime:
    """A package loaded for serving; thread-safe (the model is only read).

    ``version`` is what answers carry as ``model_version`` (``"churn@3"``); ``version_id``
    the registry's id of that version, when it has one. ``use_onnx``: ``None`` picks the
    faster of the package's own model and its ONNX export (when it has one) on a few rows
    at load; ``True`` and ``False`` force the choice.
    """

    def __init__(
        self,
        package: ModelPackage,
        *,
        name: str,
        version: str,
        version_id: str = "",
        use_onnx: bool | None = None,
        threads: int = 1,
    ) -> None:
        self.package = package
        self.name = name
        self.version = version
        self.version_id = version_id
        self.meta = package.meta
        self.signature: Signature | None = package.meta.signature
        self.task = package.meta.task
        self.classes: list[Any] | None = (
            list(package.meta.classes)
            if package.meta.classes is not None and package.meta.task in _CLASSIFIER_TASKS
            else None
        )
        self.threads = max(1, int(threads))
        self._flavor = get_flavor(package.meta.flavor)
        self._model = package.model
        self._labels = np.array(self.classes, dtype=object) if self.classes is not None else None
        self._has_proba: bool | None = None if self.classes is not None else False
        self._labels_from_proba = self.classes is not None
        self._lock: AbstractContextManager[Any] = (
            threading.Lock() if package.meta.flavor == "keras" else nullcontext()
        )
        self._calls_lock = threading.Lock()
        self.model_calls = 0
        self._onnx: Any = None
        self.backend: Backend = "native"
        self.timings_us: dict[str, float] = {}

        sig = self.signature
        self._columns: list[_Column] = (
            [_Column(c.name, _kind(c), c.nullable, c) for c in sig.inputs]
            if sig is not None and not sig.is_tensor
            else []
        )
        self._names = [c.name for c in self._columns]
        self._name_set = frozenset(self._names)
        getter = operator.itemgetter(*self._names) if self._names else None
        self._row_of: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = (
            (lambda r: (getter(r),)) if len(self._names) == 1 and getter else getter
        )
        kinds = {c.kind for c in self._columns}
        self._numeric = bool(self._columns) and kinds <= {"float", "int"}
        self._all_float = bool(self._columns) and kinds == {"float"}
        self._int_positions = [i for i, c in enumerate(self._columns) if c.kind == "int"]
        self.input_mode: InputMode = self._choose_mode()
        self._sample = self._make_sample()
        self._check_fast_path()
        self._choose_backend(use_onnx)

    # ---- what the model takes ---------------------------------------------------------
    def _choose_mode(self) -> InputMode:
        sig = self.signature
        if sig is None:
            return "pandas"
        if sig.is_tensor:
            return "tensor"
        if any(c.kind is None for c in self._columns):
            return "pandas"
        if self._numeric and self._takes_arrays():
            return "array"
        return "frame"

    def _takes_arrays(self) -> bool:
        """True when the model takes a bare 2-D array as it takes a DataFrame (same answers,
        no warnings): it was not fitted with column names, or its flavor ignores them."""
        flavor = self.meta.flavor
        if flavor in ("torch", "keras"):
            return True
        if flavor == "lightgbm":
            import lightgbm as lgb

            return isinstance(self._model, lgb.Booster) and not getattr(
                self._model, "pandas_categorical", None
            )
        if flavor == "sklearn":
            names = getattr(self._model, "feature_names_in_", None)
            if names is None:
                return True
            # Fitted on a DataFrame with exactly the signature's columns, in order: a bare
            # array is the same input without pandas' per-call cost (~0.5 ms a request); the
            # answers are compared with the package's own at load (_check_fast_path).
            if [str(n) for n in names] == self._names:
                _quiet_feature_name_warning()
                return True
        return False

    def _frame(self, enc: _Encoded) -> pd.DataFrame:
        if enc.frame is not None:
            return enc.frame
        if enc.matrix is not None:
            if self._all_float or not self._int_positions:
                return pd.DataFrame(enc.matrix, columns=self._names, copy=False)
            return pd.DataFrame(
                {
                    n: enc.matrix[:, i].astype(np.int64)
                    if i in self._int_positions
                    else enc.matrix[:, i]
                    for i, n in enumerate(self._names)
                }
            )
        cols = _need(enc.columns)
        data: dict[str, Any] = {}
        for col in self._columns:
            values = cols[col.name]
            if col.kind == "category":
                data[col.name] = pd.Categorical(values)
            elif col.kind == "timestamp" and "tz=" in col.spec.type:
                zone = col.spec.type.split("tz=", 1)[1].rstrip("]").strip()
                data[col.name] = pd.Series(values).dt.tz_localize("UTC").dt.tz_convert(zone)
            else:
                data[col.name] = values
        return pd.DataFrame(data, copy=False)

    def _model_input(self, enc: _Encoded) -> Any:
        if enc.tensor is not None:
            return enc.tensor
        if self.input_mode == "array" and enc.matrix is not None:
            return enc.matrix
        return self._frame(enc)

    # ---- encoding: JSON values -> arrays -----------------------------------------------
    def encode(self, payload: ModelInput) -> _Encoded:
        """Check ``payload`` against the signature and convert it (raises InvalidInput)."""
        if payload.kind == "records":
            return self._encode_records(payload.data)
        if payload.kind == "columns":
            return self._encode_columns(payload.data)
        return self._encode_instances(payload.data)

    def _encode_records(self, records: Any) -> _Encoded:
        if not isinstance(records, list):
            raise InvalidInput(
                f"'records' must be a list of objects, one per row; got {_show(records)}."
            )
        if self.input_mode == "pandas":
            return self._pandas(records, "records")
        if self.input_mode == "tensor":
            raise InvalidInput(
                f"This model takes an array of shape {self._tensor_shape()}, not named fields; "
                'send {"instances": [[...], ...]} instead of records.'
            )
        if not records:
            return self._empty()
        assert self._row_of is not None
        k = len(self._names)
        try:
            rows = [self._row_of(r) for r in records]
            if all(len(r) == k for r in records):
                return self._encode_rows(rows)
        except (KeyError, TypeError):
            pass
        self._record_problems(records)  # raises: some record lacks or adds fields
        raise AssertionError("unreachable")

    def _record_problems(self, records: list[Any]) -> None:
        sig = self.signature
        assert sig is not None
        problems = _Problems()
        missing: list[str] = []
        unexpected: list[str] = []
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                problems.add(i, None, f"row {i} must be an object of fields, got {_show(r)}")
                continue
            miss = [n for n in self._names if n not in r]
            extra = [str(n) for n in r if n not in self._name_set]
            parts = []
            if miss:
                parts.append(f"missing fields {', '.join(map(repr, miss))}")
                missing += [m for m in miss if m not in missing]
            if extra:
                parts.append(f"unexpected fields {', '.join(map(repr, extra))}")
                unexpected += [u for u in extra if u not in unexpected]
            if parts:
                problems.add(i, None, f"row {i}: {' and '.join(parts)}")
        problems.raise_if_any(sig, missing=missing, unexpected=unexpected)

    def _encode_rows(self, rows: list[tuple[Any, ...]]) -> _Encoded:
        """Row tuples in signature order (from records or instances) -> arrays."""
        n = len(rows)
        if self._numeric and (self.input_mode == "array" or self._all_float):
            kinds = set(map(type, itertools.chain.from_iterable(rows)))
            if kinds <= _NUMBER_OR_NULL:
                try:
                    matrix = np.array(rows, dtype=np.float64)
                except OverflowError:
                    matrix = None
                if matrix is not None:
                    if self._int_positions:
                        self._check_whole(matrix)
                    return _Encoded(n, matrix=matrix)
        return self._encode_lists(dict(zip(self._names, zip(*rows, strict=True), strict=True)), n)

    def _check_whole(self, matrix: np.ndarray[Any, Any]) -> None:
        """Integer columns of the matrix hold whole numbers (null only where nullable)."""
        block = matrix[:, self._int_positions]
        bad = ~np.isfinite(block) | (block != np.round(block))
        if not bad.any():
            return
        problems = _Problems()
        for j, pos in enumerate(self._int_positions):
            col = self._columns[pos]
            rows = np.flatnonzero(bad[:, j])
            if col.nullable:
                rows = rows[~np.isnan(block[rows, j])]
            if rows.size:
                i = int(rows[0])
                v = block[i, j]
                shown = "null" if math.isnan(v) else _show(float(v))
                problems.add(
                    i, col.name, f"row {i}: {col.name!r} must be a whole number, got {shown}"
                )
        assert self.signature is not None
        problems.raise_if_any(self.signature)

    def _encode_lists(self, columns: Mapping[str, Sequence[Any]], n: int) -> _Encoded:
        assert self.signature is not None
        problems = _Problems()
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        for col in self._columns:
            arrays[col.name] = _convert(col, columns[col.name], problems)
        problems.raise_if_any(self.signature)
        if self._numeric and self.input_mode == "array":
            matrix = np.column_stack([arrays[c].astype(np.float64) for c in self._names])
            return _Encoded(n, matrix=matrix)
        return _Encoded(n, columns=arrays)

    def _encode_columns(self, columns: Any) -> _Encoded:
        if not isinstance(columns, Mapping):
            raise InvalidInput(
                f"'columns' must be an object of lists, one per input; got {_show(columns)}."
            )
        if self.input_mode == "pandas":
            return self._pandas(columns, "columns")
        if self.input_mode == "tensor":
            raise InvalidInput(
                f"This model takes an array of shape {self._tensor_shape()}, not named columns; "
                'send {"instances": [[...], ...]} instead.'
            )
        sig = self.signature
        assert sig is not None
        missing = [n for n in self._names if n not in columns]
        unexpected = [str(n) for n in columns if n not in self._name_set]
        problems = _Problems()
        if missing:
            problems.add(None, None, f"missing columns {', '.join(map(repr, missing))}")
        if unexpected:
            problems.add(None, None, f"unexpected columns {', '.join(map(repr, unexpected))}")
        problems.raise_if_any(sig, missing=missing, unexpected=unexpected)
        lengths = {}
        for name in self._names:
            values = columns[name]
            if not isinstance(values, list | tuple):
                problems.add(None, name, f"column {name!r} must be a list, got {_show(values)}")
            else:
                lengths[name] = len(values)
        problems.raise_if_any(sig)
        n = lengths[self._names[0]]
        uneven = [f"{k!r} has {v}" for k, v in lengths.items() if v != n]
        if uneven:
            raise InvalidInput(
                f"Every column must have the same number of values: {self._names[0]!r} has "
                f"{n}, but {', '.join(uneven)}."
            )
        if n == 0:
            return self._empty()
        if self._numeric and (self.input_mode == "array" or self._all_float):
            rows = list(zip(*(columns[n_] for n_ in self._names), strict=True))
            return self._encode_rows(rows)
        return self._encode_lists(columns, n)

    def _encode_instances(self, instances: Any) -> _Encoded:
        if isinstance(instances, np.ndarray):
            instances = instances.tolist()
        if not isinstance(instances, list):
            raise InvalidInput(f"'instances' must be a list of rows; got {_show(instances)}.")
        if self.input_mode == "tensor":
            return self._encode_tensor(instances)
        if self.input_mode == "pandas" and self.signature is None:
            return _Encoded(len(instances), frame=pd.DataFrame(instances))
        if self.input_mode == "pandas":
            raise InvalidInput(
                "This model's inputs include types that rows of plain values cannot carry; "
                'send {"records": [{...}, ...]} instead.'
            )
        if not instances:
            return self._empty()
        k = len(self._names)
        for i, row in enumerate(instances):
            if not isinstance(row, list | tuple) or len(row) != k:
                raise InvalidInput(
                    f"row {i} of 'instances' must be a list of {k} values in the order "
                    f"{', '.join(self._names)}; got {_show(row)}"
                    + (f" of length {len(row)}" if isinstance(row, list | tuple) else "")
                    + "."
                )
        return self._encode_rows(instances)

    def _tensor_shape(self) -> list[int]:
        assert self.signature is not None
        return list(self.signature.inputs[0].shape or [])

    def _encode_tensor(self, instances: list[Any]) -> _Encoded:
        assert self.signature is not None
        spec = self.signature.inputs[0]
        flat = _flatten(instances)
        allowed = _NUMBER if spec.type not in ("bool",) else frozenset({bool})
        if not set(map(type, flat)) <= allowed:
            bad = next(v for v in flat if type(v) not in allowed)
            raise InvalidInput(
                f"The model takes an array of {spec.type} values; 'instances' holds {_show(bad)}."
            )
        dtype = _numpy_dtype(spec.type)
        try:
            arr = np.array(instances, dtype=dtype)
        except (ValueError, OverflowError) as exc:
            raise InvalidInput(
                f"'instances' is not a regular array of {spec.type} values ({exc}); every row "
                f"must have the shape {self._tensor_shape()[1:]}."
            ) from None
        want = self._tensor_shape()
        if arr.ndim != len(want) or any(
            w not in (-1, a) for w, a in zip(want, arr.shape, strict=False)
        ):
            raise InvalidInput(
                f"The model takes an array of shape {want} (-1: any size); 'instances' has "
                f"shape {list(arr.shape)}."
            )
        return _Encoded(len(arr), tensor=arr)

    def _pandas(self, data: Any, kind: str) -> _Encoded:
        try:
            frame = pd.DataFrame.from_records(data) if kind == "records" else pd.DataFrame(data)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"The {kind} do not form a table: {exc}.") from None
        if self.signature is not None:
            from modelworks.training.signature import validate_input

            frame = validate_input(self.signature, frame)
        return _Encoded(len(frame), frame=frame)

    def _empty(self) -> _Encoded:
        return _Encoded(0, frame=pd.DataFrame(columns=self._names))

    # ---- running the model -----------------------------------------------------------
    def _native(self, x: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        if self.input_mode == "pandas":
            return self._via_package(x)
        with self._lock:
            proba = None
            if self._has_proba is not False:
                try:
                    proba = self._proba(x)
                    self._has_proba = True
                except InvalidInput:
                    if self._has_proba:
                        raise
                    self._has_proba = False
            if proba is not None and self._labels_from_proba:
                assert self._labels is not None
                return self._labels[np.argmax(proba, axis=1)], proba
            return self._predict(x), proba

    def _proba(self, x: Any) -> np.ndarray[Any, Any]:
        if self._is_booster():
            raw = np.asarray(self._model.predict(x, num_threads=self.threads))
            return np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
        return np.asarray(self._flavor.predict_proba(self._model, x))

    def _predict(self, x: Any) -> np.ndarray[Any, Any]:
        if self._is_booster() and self.classes is None:
            return np.asarray(self._model.predict(x, num_threads=self.threads))
        return np.asarray(self._flavor.predict(self._model, x))

    def _is_booster(self) -> bool:
        return self.meta.flavor == "lightgbm" and self.input_mode == "array"

    def _via_package(self, x: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        pkg = self.package
        proba = None
        if self._has_proba is not False:
            try:
                proba = np.asarray(pkg.predict_proba(x))
                self._has_proba = True
            except InvalidInput:
                if self._has_proba:
                    raise
                self._has_proba = False
        if proba is not None and self._labels_from_proba:
            assert self._labels is not None
            return self._labels[np.argmax(proba, axis=1)], proba
        return np.asarray(pkg.predict(x)), proba

    def _run_onnx(self, enc: _Encoded) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        onnx = self._onnx
        feeds = self._onnx_feeds(enc)
        outputs: dict[str, str] = dict(onnx.spec["outputs"])
        if "probabilities" in outputs:
            want = [outputs["probabilities"]]
            if not self._labels_from_proba and "label" in outputs:
                want.append(outputs["label"])
            results = onnx.session.run(want, feeds)
            proba = np.asarray(results[0], dtype=np.float64)
            if self._labels_from_proba:
                assert self._labels is not None
                return self._labels[np.argmax(proba, axis=1)], proba
            return self._onnx_labels(np.asarray(results[1])), proba
        if "label" in outputs:
            raw = np.asarray(onnx.session.run([outputs["label"]], feeds)[0])
            return self._onnx_labels(raw), None
        values = np.asarray(onnx.session.run([outputs["values"]], feeds)[0], dtype=np.float64)
        return (values.ravel() if values.ndim == 2 and values.shape[1] == 1 else values), None

    def _onnx_labels(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self._labels is None:
            return raw
        index = {c: i for i, c in enumerate(self._labels.tolist())}
        try:
            return self._labels[[index[v] for v in raw.ravel().tolist()]]
        except KeyError as exc:
            raise CorruptData(
                f"The ONNX model returned the label {exc.args[0]!r}, which is not one of the "
                f"package's classes {self.classes}; export the package to ONNX again."
            ) from None

    def _onnx_feeds(self, enc: _Encoded) -> dict[str, np.ndarray[Any, Any]]:
        """The onnxruntime feed, laid out as ``meta.onnx["inputs"]`` says (see
        :func:`modelworks.registry.onnx_export.onnx_inputs`), from the converted arrays."""
        if enc.frame is not None:
            from modelworks.registry.onnx_export import onnx_inputs

            return onnx_inputs(self.meta, enc.frame)
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for item in self._onnx.spec["inputs"]:
            name, kind, columns = item["name"], item["type"], item.get("columns")
            if enc.tensor is not None:
                feeds[name] = enc.tensor.astype(np.float32).reshape(len(enc.tensor), -1)
            elif columns is None or len(columns) > 1:
                feeds[name] = self._onnx_block(enc, columns or self._names)
            else:
                values = self._column_values(enc, columns[0])
                if kind == "string":
                    out = np.array(["" if v is None else str(v) for v in values], dtype=object)
                    feeds[name] = out.reshape(-1, 1)
                elif kind == "int64":
                    feeds[name] = values.astype(np.int64).reshape(-1, 1)
                else:
                    feeds[name] = values.astype(np.float32).reshape(-1, 1)
        return feeds

    def _column_values(self, enc: _Encoded, name: str) -> np.ndarray[Any, Any]:
        if enc.matrix is not None:
            return enc.matrix[:, self._names.index(name)]
        return np.asarray(_need(enc.columns)[name])

    def _onnx_block(self, enc: _Encoded, names: list[str]) -> np.ndarray[Any, Any]:
        if enc.matrix is not None:
            if names == self._names:
                return enc.matrix.astype(np.float32)
            idx = [self._names.index(n) for n in names]
            return enc.matrix[:, idx].astype(np.float32)
        cols = _need(enc.columns)
        return np.column_stack([cols[n].astype(np.float32) for n in names])

    def _run(self, enc: _Encoded) -> PredictionBatch:
        with self._calls_lock:
            self.model_calls += 1
        if enc.rows == 0:
            return PredictionBatch([], [] if self._has_proba else None, self.classes, self.version)
        try:
            if self.backend == "onnx":
                labels, proba = self._run_onnx(enc)
            else:
                labels, proba = self._native(self._model_input(enc))
        except ModelworksError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            # What frameworks raise for values they cannot use (an unknown category, say).
            raise InvalidInput(
                f"The model could not predict on this input: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return PredictionBatch(
            labels.tolist(),
            None if proba is None else proba.tolist(),
            self.classes,
            self.version,
        )

    # ---- the public calls -------------------------------------------------------------
    def predict_records(self, records: list[dict[str, Any]]) -> PredictionBatch:
        """Predictions for ``records`` (one object per row, keys = signature inputs)."""
        return self._run(self._encode_records(records))

    def predict_columns(self, columns: dict[str, list[Any]]) -> PredictionBatch:
        """Predictions for ``columns`` (one list per signature input, all the same length)."""
        return self._run(self._encode_columns(columns))

    def predict_instances(self, instances: list[Any]) -> PredictionBatch:
        """Predictions for ``instances``: rows of values in signature order, or the arrays
        of a tensor model."""
        return self._run(self._encode_instances(instances))

    def predict(self, payload: ModelInput) -> PredictionBatch:
        return self._run(self.encode(payload))

    def predict_many(self, payloads: Sequence[ModelInput]) -> list[PredictionBatch | BaseException]:
        """Each payload's answer (or its error) from ONE model call over all of them.

        A payload that fails its checks fails alone; when the model call itself fails for
        the batch, each payload is run on its own so only the one at fault gets the error.
        """
        results: list[PredictionBatch | BaseException | None] = [None] * len(payloads)
        encoded: list[_Encoded] = []
        where: list[int] = []
        for i, payload in enumerate(payloads):
            try:
                encoded.append(self.encode(payload))
                where.append(i)
            except ModelworksError as exc:
                results[i] = exc
        if encoded:
            try:
                batch = self._run(_Encoded.concat(encoded))
            except Exception as exc:
                if len(encoded) == 1:
                    results[where[0]] = exc
                else:
                    for i, enc in zip(where, encoded, strict=True):
                        try:
                            results[i] = self._run(enc)
                        except Exception as single:
                            results[i] = single
            else:
                start = 0
                for i, enc in zip(where, encoded, strict=True):
                    results[i] = batch.slice(start, start + enc.rows)
                    start += enc.rows
        return [r if r is not None else AssertionError("no answer") for r in results]

    @property
    def has_probabilities(self) -> bool:
        """True for classifiers that give class probabilities."""
        return self.classes is not None and self._has_proba is not False

    @property
    def input_names(self) -> list[str]:
        """The signature's input names (one name for a tensor model); [] without one."""
        return self.signature.input_names if self.signature is not None else []

    def limit_threads(self) -> None:
        """Cap the native thread pools (OpenMP, BLAS) of the calling thread at ``threads``.

        Call it in the thread that runs the model (the batcher's worker does). OpenMP's
        thread count is per calling thread, and on a server its default (every core) costs
        more than it gives: the spinning pool competes with the event loop for the cores, a
        one-row HistGradientBoosting predict took 2 ms with two threads and 0.7 ms with one.
        """
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.threads)

    def warmup(self) -> PredictionBatch:
        """One prediction on generated rows, so the first request does not pay for lazy
        initialisation (thread pools, caches)."""
        if self._sample is None:
            raise InvalidInput(
                f"{self.version} has no signature, so no rows can be made up to warm it up."
            )
        return self.predict(self._sample)

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            name=self.name,
            version=self.version,
            version_id=self.version_id,
            flavor=self.meta.flavor,
            task=self.task,
            backend=self.backend,
            input_mode=self.input_mode,
            labels_from_probabilities=self._labels_from_proba and bool(self._has_proba),
            timings_us=dict(self.timings_us),
        )

    def __repr__(self) -> str:
        return (
            f"<ModelRuntime {self.name} {self.version} {self.meta.flavor} {self.task} "
            f"{self.backend}/{self.input_mode}>"
        )

    # ---- load-time checks ------------------------------------------------------------
    def _make_sample(self) -> ModelInput | None:
        sig = self.signature
        if sig is None:
            return None
        if sig.is_tensor:
            shape = [SAMPLE_ROWS if s == -1 else s for s in self._tensor_shape()] or [SAMPLE_ROWS]
            values = np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)
            if sig.inputs[0].type in _INT_TYPES:
                values = np.round(values * 3)
            return ModelInput.instances(values.astype(_numpy_dtype(sig.inputs[0].type)).tolist())
        categories = _known_categories(self._model, self._columns)
        numbers = [0.0, 1.0, -1.0, 0.5, 2.0, 10.0, -3.0, 100.0]
        columns: dict[str, list[Any]] = {}
        for col in sig.inputs:
            kind = _kind(col)
            if kind == "float":
                columns[col.name] = numbers[:SAMPLE_ROWS]
            elif kind == "int":
                columns[col.name] = list(range(SAMPLE_ROWS))
            elif kind == "bool":
                columns[col.name] = [i % 2 == 0 for i in range(SAMPLE_ROWS)]
            elif kind in ("string", "category"):
                known = categories.get(col.name) or ["a", "b", "c"]
                columns[col.name] = [known[i % len(known)] for i in range(SAMPLE_ROWS)]
            elif kind == "timestamp":
                columns[col.name] = [f"2024-01-{i + 1:02d}T00:00:00" for i in range(SAMPLE_ROWS)]
            else:
                return None
        return ModelInput.records(
            [{k: v[i] for k, v in columns.items()} for i in range(SAMPLE_ROWS)]
        )

    def _reference(
        self, sample: ModelInput
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None] | None:
        """The package's own answers on the sample, through its DataFrame path."""
        pkg = self.package
        data = (
            np.asarray(sample.data, dtype=_numpy_dtype(self.signature.inputs[0].type))
            if self.signature is not None and self.signature.is_tensor
            else _reference_frame(sample.data, self._columns)
        )
        try:
            labels = np.asarray(pkg.predict(data))
        except Exception as exc:  # the made-up rows may not suit the model: skip the check
            log.info("%s: no load-time check, the package fails on generated rows: %s", self, exc)
            return None
        proba = None
        if self.classes is not None:
            try:
                proba = np.asarray(pkg.predict_proba(data), dtype=np.float64)
            except InvalidInput:
                proba = None
        return labels, proba

    def _check_fast_path(self) -> None:
        """Compare the runtime's answers on generated rows with the package's own, falling
        back to the DataFrame layout (and the model's own labels) where they differ."""
        sample = self._sample
        if sample is None or self.input_mode == "pandas":
            return
        ref = self._reference(sample)
        if ref is None:
            if self.input_mode == "array":
                self.input_mode = "frame"  # unchecked: take the layout the package takes
            return
        labels, proba = ref
        if proba is None:
            self._has_proba = False
        modes: list[InputMode] = (
            ["array", "frame"] if self.input_mode == "array" else [self.input_mode]
        )
        argmax = [True, False] if self._labels_from_proba else [False]
        for mode, from_proba in itertools.product(modes, argmax):
            self.input_mode, self._labels_from_proba = mode, from_proba
            try:
                got_labels, got_proba = self._native(self._model_input(self.encode(sample)))
            except Exception as exc:
                log.info("%s: the fast path fails on generated rows: %s", self, exc)
                continue
            if _same(labels, proba, got_labels, got_proba):
                return
        log.warning(
            "%s: answers on generated rows differ from the package's own; serving through "
            "the package's DataFrame path instead",
            self,
        )
        self.input_mode = "pandas"

    def _choose_backend(self, use_onnx: bool | None) -> None:
        if use_onnx is False or not self.meta.onnx:
            if use_onnx:
                raise InvalidInput(
                    f"{self.version} has no ONNX export; export it (modelworks models "
                    "export --format onnx) or leave use_onnx unset."
                )
            return
        self._onnx = _load_onnx(self.package, self.threads)
        if use_onnx:
            self.backend = "onnx"
            return
        sample = self._sample
        if sample is None or self.input_mode == "pandas":
            self._onnx = None
            return
        try:
            enc = self.encode(sample)
            native_labels, native_proba = self._native(self._model_input(enc))
            onnx_labels, onnx_proba = self._run_onnx(enc)
        except Exception as exc:
            log.warning("%s: the ONNX model fails on generated rows (%s); not using it", self, exc)
            self._onnx = None
            return
        if not _close(native_labels, native_proba, onnx_labels, onnx_proba):
            log.warning("%s: the ONNX model answers differently; not using it", self)
            self._onnx = None
            return
        one = ModelInput(sample.kind, sample.data[:1], 1)
        one_enc, all_enc = self.encode(one), enc
        native = _time_us(lambda: self._native(self._model_input(one_enc))) + _time_us(
            lambda: self._native(self._model_input(all_enc))
        )
        onnx = _time_us(lambda: self._run_onnx(one_enc)) + _time_us(lambda: self._run_onnx(all_enc))
        self.timings_us = {"native": round(native, 1), "onnx": round(onnx, 1)}
        if onnx < native:
            self.backend = "onnx"
        else:
            self._onnx = None
        log.info("%s: native %.0f us, ONNX %.0f us on 1 + %d rows", self, native, onnx, enc.rows)


def _same(
    labels: np.ndarray[Any, Any],
    proba: np.ndarray[Any, Any] | None,
    got_labels: np.ndarray[Any, Any],
    got_proba: np.ndarray[Any, Any] | None,
) -> bool:
    if labels.shape != got_labels.shape:
        return False
    if labels.dtype.kind == "f":
        if not np.allclose(
            labels, got_labels.astype(np.float64), rtol=1e-9, atol=1e-12, equal_nan=True
        ):
            return False
    elif labels.tolist() != got_labels.tolist():
        return False
    if proba is None:
        return got_proba is None
    return got_proba is not None and np.allclose(proba, got_proba, rtol=1e-9, atol=1e-12)


def _close(
    labels: np.ndarray[Any, Any],
    proba: np.ndarray[Any, Any] | None,
    got_labels: np.ndarray[Any, Any],
    got_proba: np.ndarray[Any, Any] | None,
) -> bool:
    """ONNX (float32) against the native model: probabilities and values within 1e-3."""
    if proba is not None:
        return got_proba is not None and np.allclose(proba, got_proba, rtol=1e-3, atol=1e-3)
    if labels.dtype.kind == "f":
        return bool(np.allclose(labels, got_labels.astype(np.float64), rtol=1e-3, atol=1e-3))
    return bool(labels.tolist() == got_labels.tolist())


def _quiet_feature_name_warning() -> None:
    """Silence scikit-learn's "X does not have valid feature names" for arrays this runtime
    builds in the model's own column order (see ``_takes_arrays``)."""
    warnings.filterwarnings(
        "ignore", message="X does not have valid feature names", category=UserWarning
    )


def _time_us(fn: Callable[[], Any], reps: int = 5) -> float:
    """The median time of ``fn`` over ``reps`` runs, after one untimed run."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def _flatten(values: Any) -> list[Any]:
    out: list[Any] = []
    stack = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(reversed(v))
        else:
            out.append(v)
    return out


def _numpy_dtype(arrow: str) -> Any:
    if arrow in ("float", "halffloat"):
        return np.float32
    if arrow in _INT_TYPES:
        return np.dtype(arrow)
    if arrow == "bool":
        return np.bool_
    return np.float64


def _reference_frame(records: list[dict[str, Any]], columns: list[_Column]) -> pd.DataFrame:
    """The DataFrame a user of the package would build from these rows."""
    frame = pd.DataFrame.from_records(records)
    for col in columns:
        if col.kind == "category":
            frame[col.name] = frame[col.name].astype("category")
        elif col.kind == "timestamp":
            frame[col.name] = pd.to_datetime(frame[col.name], format="ISO8601")
    return frame


def _known_categories(model: Any, columns: list[_Column]) -> dict[str, list[Any]]:
    """Column -> categories a fitted encoder (or a LightGBM Booster) learnt, so generated
    rows use values the model knows."""
    found: dict[str, list[Any]] = {}
    pandas_categorical = getattr(model, "pandas_categorical", None)
    if pandas_categorical:
        cats = [c.name for c in columns if c.kind == "category"]
        for name, values in zip(cats, pandas_categorical, strict=False):
            found[name] = list(values)
    stack: list[Any] = [model]
    seen: set[int] = set()
    while stack:
        part = stack.pop()
        if id(part) in seen or part is None or isinstance(part, str):
            continue
        seen.add(id(part))
        names = getattr(part, "feature_names_in_", None)
        learnt = getattr(part, "categories_", None)
        if names is not None and learnt is not None and len(names) == len(learnt):
            for name, values in zip(names, learnt, strict=True):
                usable = [v for v in np.asarray(values).tolist() if not pd.isna(v)]
                if usable:
                    found.setdefault(str(name), usable)
        for attr in ("steps", "transformers_", "transformer_list"):
            for item in getattr(part, attr, None) or []:
                stack.append(item[1])
    return found


def _load_onnx(package: ModelPackage, threads: int) -> Any:
    """The package's ONNX model on a session with ``threads`` intra-op threads
    (``load_package`` verified the package's files just now: only the ONNX file is hashed)."""
    from modelworks.registry.onnx_export import onnx_model

    return onnx_model(package.path, package.meta, threads=threads)
