"""ONNX export of a model package, checked against the package's own predictions.

:func:`export_onnx` writes a new package folder: the same files plus ``onnx/model.onnx``,
with ``model.yaml``'s checksums updated and its ``onnx`` section filled in. What converts:

- scikit-learn estimators and Pipelines, through skl2onnx, including ColumnTransformers
  with OneHotEncoder, OrdinalEncoder, StandardScaler, SimpleImputer and the rest of what
  skl2onnx covers;
- LightGBM and XGBoost models, through onnxmltools' converters, which are registered with
  skl2onnx so a Pipeline ending in ``LGBMClassifier`` or ``XGBRegressor`` converts too.
  LightGBM packages load as a Booster: it is converted with the package's class labels.

Torch and Keras packages, custom transformers, AutoML ensembles, and anything skl2onnx has
no converter for raise ``InvalidInput("... cannot be exported to ONNX: <reason>. Export it
as a folder or tarball instead.")``; so does a conversion whose predictions differ from
the package's, and nothing is left at the destination.

ONNX inputs (see :func:`onnx_inputs`):

- a model whose first step is a ColumnTransformer takes one input per signature column,
  named after it, of shape ``[N, 1]``: ``float32`` for floating-point and boolean columns
  (and integer columns that may be missing), ``int64`` for integer columns, ``string`` for
  string and category columns (a missing string is fed as ``""``);
- any other model takes one ``float32`` tensor named ``input`` of shape ``[N, columns]``
  holding every signature column in signature order, so its columns must all be numeric or
  boolean.

Outputs are plain tensors (no ZipMap): a classifier's label and class probabilities (in
``classes`` order), a regressor's values. :class:`OnnxModel` (from :func:`load_onnx`) runs
them on onnxruntime's CPU provider and answers like the package: ``predict`` gives the
package's own class labels, ``predict_proba`` one column per class.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from modelworks.core.errors import CorruptData, InvalidInput
from modelworks.core.ids import utcnow
from modelworks.registry.export import _check_dest, _copy_verified, _reject_links, _staged
from modelworks.training.flavors.base import module_version
from modelworks.training.package import (
    META_FILE,
    ModelPackage,
    PackageMeta,
    load_package,
    verify_package,
)
from modelworks.training.signature import ColumnSpec, validate_input

__all__ = ["ONNX_PATH", "OnnxModel", "export_onnx", "load_onnx", "onnx_inputs"]

ONNX_PATH = "onnx/model.onnx"
SAMPLE_ROWS = 64
# The ai.onnx.ml opset: onnxmltools' LightGBM and XGBoost converters write no newer one, and
# every runtime that runs tree ensembles reads it.
ML_OPSET = 3
TENSOR_INPUT = "input"
CLASSIFIER_TASKS = ("binary", "multiclass")
EXPORTABLE_TASKS = (*CLASSIFIER_TASKS, "regression")
EXPORTABLE_FLAVORS = ("sklearn", "lightgbm", "xgboost")

_FLOATS = {"halffloat", "float", "double", "bool", "null"}
_INTEGERS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_STRINGS = {"string", "category"}
_MISSING_TYPE = re.compile(r"type '?<class '([^']+)'>'?")


class _NotExportable(Exception):
    """Why a package cannot be exported; becomes the InvalidInput every caller sees."""


def _refusal(meta: PackageMeta, reason: str) -> InvalidInput:
    model = meta.model_class.rsplit(".", 1)[-1]
    return InvalidInput(
        f"This {meta.flavor} {model} package cannot be exported to ONNX: {reason}. "
        "Export it as a folder or tarball instead.",
        reason=reason,
    )


def _describe(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


# ---- inputs ---------------------------------------------------------------------------------
def _spec(meta: PackageMeta) -> dict[str, Any]:
    if not meta.onnx:
        raise InvalidInput(
            "This package has no ONNX model; make one with "
            "modelworks.registry.onnx_export.export_onnx(package, dest)."
        )
    return meta.onnx


def _strings(series: pd.Series) -> np.ndarray[Any, Any]:
    values = series.astype(object).to_numpy()
    missing = pd.isna(values)
    return np.array(["" if m else str(v) for v, m in zip(values, missing, strict=True)], object)


def onnx_inputs(meta: PackageMeta, frame: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The onnxruntime feed for ``frame`` (a DataFrame, or an array for tensor signatures).

    ``frame`` is first checked against the package's signature (missing, unexpected and
    wrongly typed columns raise ``InvalidInput``), then laid out as ``meta.onnx["inputs"]``
    says: one ``[N, 1]`` array per column, or one ``float32`` ``[N, columns]`` tensor.
    """
    spec = _spec(meta)
    data = frame if meta.signature is None else validate_input(meta.signature, frame)
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for item in spec["inputs"]:
        name, kind, columns = item["name"], item["type"], item.get("columns")
        if columns is None or not isinstance(data, pd.DataFrame):
            arr = np.asarray(data, dtype=np.float32)
            feeds[name] = arr.reshape(len(arr), -1)
            continue
        block = data[columns]
        if kind == "float32":
            feeds[name] = block.to_numpy(dtype=np.float32, na_value=np.nan)
        elif kind == "int64":
            if block.isna().to_numpy().any():
                raise InvalidInput(
                    f"Column {columns[0]!r} has missing values, but the model was saved "
                    "with whole numbers there; fill them in first."
                )
            feeds[name] = block.to_numpy(dtype=np.int64)
        else:
            feeds[name] = _strings(block.iloc[:, 0]).reshape(-1, 1)
    return feeds


def _column_type(col: ColumnSpec) -> str | None:
    if col.type in _FLOATS:
        return "float32"
    if col.type in _INTEGERS:
        return "float32" if col.nullable else "int64"
    if col.type in _STRINGS:
        return "string"
    return None


def _first_step(model: Any) -> Any:
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline) and model.steps:
        model = model.steps[0][1]
    return model


def _layout(meta: PackageMeta, model: Any) -> list[dict[str, Any]]:
    """The ONNX inputs for this package's model (see the module docstring)."""
    from sklearn.compose import ColumnTransformer

    sig = meta.signature
    if sig is None:
        raise _NotExportable(
            "it has no signature, so the types of its inputs are unknown (save it with "
            "input_example=... to record them)"
        )
    if sig.is_tensor:
        shape = sig.inputs[0].shape or []
        if len(shape) != 2 or shape[1] < 1 or _column_type(sig.inputs[0]) is None:
            raise _NotExportable(
                f"it takes an array of shape {shape} and type {sig.inputs[0].type}; only "
                "2-D numeric arrays (rows x features) convert"
            )
        return [{"name": TENSOR_INPUT, "type": "float32", "columns": None, "width": shape[1]}]
    kinds = {c.name: _column_type(c) for c in sig.inputs}
    odd = [f"{c.name} ({c.type})" for c in sig.inputs if kinds[c.name] is None]
    if odd:
        raise _NotExportable(
            f"its columns {', '.join(odd)} have types ONNX export does not take; ONNX "
            "inputs are numbers, booleans and strings"
        )
    if isinstance(_first_step(model), ColumnTransformer):
        return [{"name": c.name, "type": kinds[c.name], "columns": [c.name]} for c in sig.inputs]
    strings = [name for name, kind in kinds.items() if kind == "string"]
    if strings:
        raise _NotExportable(
            f"it takes the string columns {_describe(strings)} as they are; only a Pipeline "
            "whose ColumnTransformer encodes them (OneHotEncoder, OrdinalEncoder) converts"
        )
    return [
        {"name": TENSOR_INPUT, "type": "float32", "columns": sig.input_names, "width": len(kinds)}
    ]


# ---- converters -------------------------------------------------------------------------------
@functools.cache
def _booster_wrappers() -> tuple[type, type]:
    """Register LightGBM's and XGBoost's converters (onnxmltools) with skl2onnx, and return
    the classifier and regressor wrappers that let skl2onnx convert a bare LightGBM Booster
    (what the lightgbm flavor loads) with the package's class labels."""
    import lightgbm as lgb
    import xgboost as xgb
    from onnxmltools.convert.lightgbm._parse import WrappedBooster
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import ClassifierMixin, RegressorMixin

    class LightGBMBoosterClassifier(ClassifierMixin, WrappedBooster):
        def __init__(self, booster: Any, classes: list[Any]) -> None:
            super().__init__(booster)
            self.classes_ = np.asarray(classes)

    class LightGBMBoosterRegressor(RegressorMixin, WrappedBooster):
        pass

    def convert_xgboost_unnamed(scope: Any, operator: Any, container: Any) -> None:
        # onnxmltools reads feature indices from the tree dump, which names features after
        # the training frame's columns when there was one: hide the names while it reads.
        booster = operator.raw_operator.get_booster()
        names, types = booster.feature_names, booster.feature_types
        booster.feature_names = None
        try:
            convert_xgboost(scope, operator, container)
        finally:
            booster.feature_names, booster.feature_types = names, types

    classifier = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for cls, alias, conv in (
        (lgb.LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm),
        (LightGBMBoosterClassifier, "ModelworksLightGbmBoosterClassifier", convert_lightgbm),
        (xgb.XGBClassifier, "XGBoostXGBClassifier", convert_xgboost_unnamed),
    ):
        update_registered_converter(
            cls, alias, calculate_linear_classifier_output_shapes, conv, options=classifier
        )
    for cls, alias, conv in (
        (lgb.LGBMRegressor, "LightGbmLGBMRegressor", convert_lightgbm),
        (LightGBMBoosterRegressor, "ModelworksLightGbmBoosterRegressor", convert_lightgbm),
        (xgb.XGBRegressor, "XGBoostXGBRegressor", convert_xgboost_unnamed),
    ):
        update_registered_converter(
            cls, alias, calculate_linear_regressor_output_shapes, conv, options={"split": None}
        )
    return LightGBMBoosterClassifier, LightGBMBoosterRegressor


def _convertible(pkg: ModelPackage) -> Any:
    """The object skl2onnx converts for this package's model."""
    model = pkg.model
    if pkg.flavor == "lightgbm":
        import lightgbm as lgb

        if isinstance(model, lgb.Booster):
            classifier, regressor = _booster_wrappers()
            try:
                if pkg.task in CLASSIFIER_TASKS:
                    return classifier(model, list(pkg.classes or []))
                return regressor(model)
            except NotImplementedError as exc:
                raise _NotExportable(f"onnxmltools does not convert it ({exc})") from exc
    if pkg.flavor == "xgboost":
        import xgboost as xgb

        if isinstance(model, xgb.Booster):
            if pkg.task != "regression":
                raise _NotExportable(
                    "it is a bare XGBoost Booster; save the scikit-learn wrapper "
                    "(XGBClassifier) to export a classifier"
                )
            wrapper = xgb.XGBRegressor()
            wrapper.load_model(bytearray(model.save_raw("ubj")))
            return wrapper
    return model


def _parts(model: Any) -> Iterator[Any]:
    """The model and the steps and transformers inside it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    yield model
    if isinstance(model, Pipeline):
        for _, step in model.steps:
            yield from _parts(step)
    elif isinstance(model, ColumnTransformer):
        for _, transformer, _ in getattr(model, "transformers_", model.transformers):
            yield from _parts(transformer)
    elif isinstance(model, FeatureUnion):
        for _, transformer in model.transformer_list:
            yield from _parts(transformer)


def _unsupported_parts(model: Any) -> list[str]:
    from skl2onnx._supported_operators import sklearn_operator_name_map

    found: list[str] = []
    for part in _parts(model):
        if isinstance(part, str) or part is None:  # "passthrough", "drop"
            continue
        name = f"{type(part).__module__}.{type(part).__qualname__}"
        if type(part) not in sklearn_operator_name_map and name not in found:
            found.append(name)
    return found


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"


def _conversion_failure(exc: Exception) -> str:
    match = _MISSING_TYPE.search(str(exc))
    if match:
        return f"skl2onnx has no converter for {match.group(1)}"
    cause = exc.__cause__ or exc.__context__
    because = f"; caused by {_first_line(cause)}" if cause is not None else ""
    return f"the converter failed ({_first_line(exc)}{because})"


def _convert(model: Any, inputs: list[dict[str, Any]], opset: int, classifier: bool) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    _booster_wrappers()
    missing = _unsupported_parts(model)
    if missing:
        raise _NotExportable(f"skl2onnx has no converter for {', '.join(missing)}")
    tensor_types = {
        "float32": FloatTensorType,
        "int64": Int64TensorType,
        "string": StringTensorType,
    }
    initial = [(i["name"], tensor_types[i["type"]]([None, i.get("width", 1)])) for i in inputs]
    # Plain tensors out, not ZipMap's list of dicts; classifiers that only give scores
    # (LinearSVC) have no zipmap option and are converted without it.
    attempts = [{"zipmap": False}, None] if classifier else [None]
    for options in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # converter chatter; the parity check decides
                return convert_sklearn(
                    model,
                    initial_types=initial,
                    options=options,
                    target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
                )
        except NameError as exc:
            if options is None or "'zipmap'" not in str(exc):
                raise _NotExportable(_conversion_failure(exc)) from exc
        except Exception as exc:  # the converters raise many types; each means "cannot convert"
            raise _NotExportable(_conversion_failure(exc)) from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def _session(model_bytes: bytes, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr for every session
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


# ---- the runtime wrapper ------------------------------------------------------------------------
class OnnxModel:
    """A package's ONNX model on onnxruntime (CPU), answering like the package itself.

    ``predict(frame)`` gives class labels (the package's own ``classes``) or values,
    ``predict_proba(frame)`` one column per class; input is checked against the signature
    and fed as :func:`onnx_inputs` lays it out.
    """

    def __init__(self, session: Any, meta: PackageMeta, path: Path | None = None) -> None:
        self.session = session
        self.meta = meta
        self.path = path
        self.spec = _spec(meta)
        self._outputs: dict[str, str] = dict(self.spec["outputs"])

    @property
    def classes(self) -> list[Any] | None:
        return self.meta.classes

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def input_names(self) -> list[str]:
        return [str(i["name"]) for i in self.spec["inputs"]]

    def run(self, data: Any) -> dict[str, np.ndarray[Any, Any]]:
        """Every output of the ONNX model for ``data``, by output name."""
        names = list(self._outputs.values())
        results = self.session.run(names, onnx_inputs(self.meta, data))
        return dict(zip(names, results, strict=True))

    def _output(self, key: str, data: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.session.run([self._outputs[key]], onnx_inputs(self.meta, data))[0])

    def _labels(self, raw: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        classes = self.classes
        if classes is None:
            return raw
        index = {c: i for i, c in enumerate(classes)}
        positions = []
        for value in raw.ravel():
            key = value.item() if isinstance(value, np.generic) else value
            if key not in index:
                raise CorruptData(
                    f"The ONNX model returned the label {key!r}, which is not one of the "
                    f"package's classes {classes}; export the package to ONNX again."
                )
            positions.append(index[key])
        return np.asarray(classes)[np.asarray(positions, dtype=np.int64)]

    def predict(self, data: Any) -> np.ndarray[Any, Any]:
        """Class labels for classifiers, values (float64) for regressors."""
        if "label" in self._outputs:
            return self._labels(self._output("label", data))
        values = self._output("values", data).astype(np.float64)
        return values.ravel() if values.ndim == 2 and values.shape[1] == 1 else values

    def predict_proba(self, data: Any) -> np.ndarray[Any, Any]:
        """Class probabilities (float64), one column per class in ``classes`` order."""
        if "probabilities" not in self._outputs:
            what = "has no class probabilities" if "label" in self._outputs else "is a regressor"
            raise InvalidInput(f"This ONNX model {what}; use predict().")
        return self._output("probabilities", data).astype(np.float64)

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"<OnnxModel {self.meta.task} opset {self.spec.get('opset')}{where}>"


def load_onnx(package_dir: str | os.PathLike[str]) -> OnnxModel:
    """The ONNX model of an exported package (checksums verified first), ready to predict."""
    root = Path(package_dir)
    return onnx_model(root, verify_package(root))


def onnx_model(root: Path, meta: PackageMeta, *, threads: int | None = None) -> OnnxModel:
    """The ONNX model of the package at ``root`` whose ``meta`` was verified already (its
    other files are not hashed again); the ONNX file's own checksum is checked on the bytes
    the session is built from. ``threads``: ONNX Runtime's intra-op threads (default: its
    own pool, one spinning thread per core; a server wants few)."""
    spec = _spec(meta)
    rel = str(spec.get("path") or ONNX_PATH)
    if rel not in meta.files:
        raise CorruptData(
            f"{root / META_FILE} names {rel} as its ONNX model, but the package does not list "
            "that file; export the package to ONNX again.",
            files=[rel],
        )
    model_bytes = (root / rel).read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != meta.files[rel]:
        raise CorruptData(
            f"{root / rel} does not match its checksum (changed or damaged); export the "
            "package to ONNX again.",
            files=[rel],
        )
    return OnnxModel(_session(model_bytes, threads), meta, root / rel)


# ---- the parity check -------------------------------------------------------------------------
def _known_categories(model: Any) -> dict[str, list[Any]]:
    """Column -> the categories a fitted encoder inside a ColumnTransformer learnt."""
    from sklearn.compose import ColumnTransformer

    found: dict[str, list[Any]] = {}
    for part in _parts(model):
        if not isinstance(part, ColumnTransformer) or not hasattr(part, "transformers_"):
            continue
        for _, transformer, columns in part.transformers_:
            if isinstance(transformer, str) or not isinstance(columns, list):
                continue
            for inner in _parts(transformer):
                categories = getattr(inner, "categories_", None)
                if categories is not None and len(categories) == len(columns):
                    for column, cats in zip(columns, categories, strict=True):
                        usable = [c for c in np.asarray(cats).tolist() if not pd.isna(c)]
                        found.setdefault(str(column), usable)
                    break
    return found


def _numbers(rng: np.random.Generator, rows: int) -> np.ndarray[Any, Any]:
    """Values over several magnitudes, both signs, and some zeros: they reach many tree
    branches without knowing the training data's ranges."""
    values = rng.choice([-1.0, 1.0], rows) * 10 ** rng.uniform(-2, 3, rows)
    values[rng.random(rows) < 0.1] = 0.0
    return values


def _generated(meta: PackageMeta, model: Any, rows: int = SAMPLE_ROWS) -> Any:
    """Rows made up from the signature, for the parity check when no sample is given."""
    sig = meta.signature
    assert sig is not None  # _layout refused packages without one
    rng = np.random.default_rng(0)
    if sig.is_tensor:
        width = (sig.inputs[0].shape or [-1, 1])[1]
        dtype = np.int64 if sig.inputs[0].type in _INTEGERS else np.float64
        return np.column_stack([_numbers(rng, rows) for _ in range(width)]).astype(dtype)
    categories = _known_categories(model)
    columns: dict[str, Any] = {}
    for col in sig.inputs:
        if col.type in _STRINGS:
            known = categories.get(col.name) or ["a", "b", "c"]
            picked = np.asarray(known, dtype=object)[rng.integers(0, len(known), rows)]
            series = pd.Series(picked, dtype=object)
            columns[col.name] = series.astype("category") if col.type == "category" else series
        elif col.type == "bool":
            columns[col.name] = rng.random(rows) < 0.5
        elif col.type in _INTEGERS:
            columns[col.name] = rng.integers(0, 100, rows).astype(col.type)
        else:
            values = _numbers(rng, rows)
            if col.nullable:
                values[rng.random(rows) < 0.1] = np.nan
            columns[col.name] = values
    return pd.DataFrame(columns)


def _reference(pkg: ModelPackage, data: Any, generated: bool) -> tuple[Any, Any]:
    """The package's own labels or values, and its probabilities (None if it has none)."""
    try:
        predictions = np.asarray(pkg.predict(data))
    except InvalidInput:
        raise
    except Exception as exc:  # whatever the framework raises on these rows
        where = "rows generated from its signature" if generated else "the sample"
        raise InvalidInput(
            f"The package failed to predict on {where} ({type(exc).__name__}: {exc}), so "
            "its ONNX export cannot be checked. Pass sample= with a few real input rows."
        ) from exc
    probabilities = None
    if pkg.task in CLASSIFIER_TASKS:
        try:
            probabilities = np.asarray(pkg.predict_proba(data), dtype=np.float64)
        except InvalidInput:
            probabilities = None  # a classifier without probabilities: labels are compared
    return predictions, probabilities


def _first_bad(mask: np.ndarray[Any, Any]) -> int:
    return int(np.flatnonzero(mask)[0])


def _compare(
    onnx_model: OnnxModel,
    data: Any,
    reference: tuple[Any, Any],
    rtol: float,
    atol: float,
) -> dict[str, Any]:
    """Raise _NotExportable unless the ONNX model answers like the package on ``data``."""
    expected, expected_proba = reference
    rows = len(expected)
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    try:
        got = onnx_model.predict(data)
        got_proba = None if expected_proba is None else onnx_model.predict_proba(data)
    except (InvalidInput, CorruptData):
        raise
    except Exception as exc:  # onnxruntime errors: an op it cannot run, a shape it rejects
        raise _NotExportable(
            f"onnxruntime cannot run the converted model ({_first_line(exc)})"
        ) from exc
    stats: dict[str, Any] = {"rows": rows, "rtol": rtol, "atol": atol}
    if onnx_model.task in CLASSIFIER_TASKS:
        differs = np.array([a != b for a, b in zip(got, expected, strict=True)], dtype=bool)
        if got_proba is not None:
            if got_proba.shape != expected_proba.shape:
                raise _NotExportable(
                    f"its ONNX probabilities have shape {got_proba.shape}, the package's "
                    f"{expected_proba.shape}"
                )
            close = np.isclose(got_proba, expected_proba, rtol=rtol, atol=atol, equal_nan=True)
            diff = np.abs(got_proba - expected_proba)
            stats["max_abs_diff"] = float(np.nanmax(diff)) if diff.size else 0.0
            if not close.all():
                bad = ~close.all(axis=1)
                raise _NotExportable(
                    f"its ONNX probabilities differ from the package's on {int(bad.sum())} of "
                    f"{rows} rows (largest difference {stats['max_abs_diff']:.3g}, beyond "
                    f"{tolerance})"
                )
            # Where the two most likely classes are within tolerance either label is right.
            top = np.sort(expected_proba, axis=1)
            if top.shape[1] >= 2:
                tied = top[:, -1] - top[:, -2] <= atol + rtol * np.abs(top[:, -1])
                differs &= ~tied
        if differs.any():
            row = _first_bad(differs)
            raise _NotExportable(
                f"its ONNX labels differ from the package's on {int(differs.sum())} of {rows} "
                f"rows (row {row}: {got[row]!r} instead of {expected[row]!r})"
            )
        return stats
    values = np.asarray(got, dtype=np.float64)
    wanted = np.asarray(expected, dtype=np.float64)
    if values.size != wanted.size:
        raise _NotExportable(
            f"its ONNX output has shape {values.shape}, the package's predictions {wanted.shape}"
        )
    values = values.reshape(wanted.shape)
    close = np.isclose(values, wanted, rtol=rtol, atol=atol, equal_nan=True)
    diff = np.abs(values - wanted)
    stats["max_abs_diff"] = float(np.nanmax(diff)) if diff.size else 0.0
    if not close.all():
        bad = ~close.reshape(len(wanted), -1).all(axis=1)
        raise _NotExportable(
            f"its ONNX predictions differ from the package's on {int(bad.sum())} of {rows} "
            f"rows (largest difference {stats['max_abs_diff']:.3g}, beyond {tolerance})"
        )
    return stats


# ---- export -----------------------------------------------------------------------------------
def _check_arguments(opset: int | None, rtol: float, atol: float) -> int:
    import onnx
    from skl2onnx import get_latest_tested_opset_version

    if rtol < 0 or atol < 0:
        raise InvalidInput(f"rtol and atol must not be negative; got {rtol} and {atol}.")
    highest = int(onnx.defs.onnx_opset_version())
    if opset is None:
        return min(int(get_latest_tested_opset_version()), highest)
    if isinstance(opset, bool) or not isinstance(opset, int) or not 9 <= opset <= highest:
        raise InvalidInput(f"opset must be an integer from 9 to {highest}; got {opset!r}.")
    return opset


def _imports() -> None:
    try:
        import onnx  # noqa: F401
        import onnxmltools  # noqa: F401
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        raise InvalidInput(
            f"ONNX export needs onnx, onnxruntime, skl2onnx and onnxmltools ({exc}); install "
            "them with pip install 'modelworks[onnx]'."
        ) from exc


def _outputs(model_proto: Any, classifier: bool, has_proba: bool) -> dict[str, str]:
    names = [o.name for o in model_proto.graph.output]
    if not classifier:
        return {"values": names[0]}
    if len(names) < 2:
        raise _NotExportable(f"the converted classifier has outputs {names}, not label and scores")
    return {"label": names[0], ("probabilities" if has_proba else "scores"): names[1]}


def _opsets(model_proto: Any) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model_proto.opset_import}


def export_onnx(
    package_dir: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    sample: pd.DataFrame | None = None,
    opset: int | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    trust: bool = False,
    overwrite: bool = False,
) -> PackageMeta:
    """Write a copy of the package at ``dest_dir`` with ``onnx/model.onnx`` added.

    The ONNX model is run on ``sample`` (or on rows generated from the signature) and must
    give the package's own labels and, within ``rtol``/``atol``, its probabilities or
    values; otherwise, and for models that do not convert, ``InvalidInput`` says why and
    nothing is written. ``opset`` defaults to the newest skl2onnx is tested with. ``trust``
    is passed to :func:`load_package`. Returns the new package's metadata.
    """
    source, target = Path(package_dir), Path(dest_dir)
    _reject_links(source)
    meta = verify_package(source)
    if meta.flavor not in EXPORTABLE_FLAVORS:
        raise _refusal(
            meta,
            f"Modelworks converts scikit-learn, LightGBM and XGBoost models, not {meta.flavor} "
            "ones (torch.onnx.export or tf2onnx convert those by hand)",
        )
    if meta.task not in EXPORTABLE_TASKS:
        raise _refusal(
            meta, f"it is a model of task {meta.task!r}; only classifiers and regressors convert"
        )
    _check_dest(target, overwrite)
    _imports()
    target_opset = _check_arguments(opset, rtol, atol)
    pkg = load_package(source, trust=trust)
    classifier = meta.task in CLASSIFIER_TASKS
    try:
        model = _convertible(pkg)
        inputs = _layout(meta, pkg.model)
        data = _generated(meta, pkg.model) if sample is None else sample
        if meta.signature is not None:
            data = validate_input(meta.signature, data)
        if len(data) == 0:
            raise InvalidInput("sample has no rows; pass a few real input rows.")
        reference = _reference(pkg, data, generated=sample is None)
        model_proto = _convert(model, inputs, target_opset, classifier)
        model_bytes = model_proto.SerializeToString()
        opsets = _opsets(model_proto)
        spec: dict[str, Any] = {
            "path": ONNX_PATH,
            "opset": opsets.get("ai.onnx", target_opset),
            "ml_opset": opsets.get("ai.onnx.ml"),
            "inputs": inputs,
            "outputs": _outputs(model_proto, classifier, reference[1] is not None),
            "converter": "skl2onnx",
            "converter_version": module_version("skl2onnx"),
            "onnxmltools_version": module_version("onnxmltools"),
            "onnx_version": module_version("onnx"),
            "onnxruntime_version": module_version("onnxruntime"),
            "exported_at": utcnow().isoformat(),
        }
        try:
            session = _session(model_bytes)
        except Exception as exc:  # onnxruntime refuses the graph
            raise _NotExportable(
                f"onnxruntime cannot load the converted model ({_first_line(exc)})"
            ) from exc
        candidate = meta.model_copy(update={"onnx": spec})
        spec["check"] = _compare(OnnxModel(session, candidate), data, reference, rtol, atol)
        spec["check"]["sample"] = "generated" if sample is None else "given"
    except _NotExportable as exc:
        raise _refusal(meta, str(exc)) from exc
    with _staged(target, overwrite=overwrite) as tmp:
        _copy_verified(source, tmp)
        (tmp / ONNX_PATH).parent.mkdir(parents=True, exist_ok=True)
        (tmp / ONNX_PATH).write_bytes(model_bytes)
        files = {**meta.files, ONNX_PATH: hashlib.sha256(model_bytes).hexdigest()}
        new_meta = meta.model_copy(update={"onnx": spec, "files": dict(sorted(files.items()))})
        text = yaml.safe_dump(new_meta.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        (tmp / META_FILE).write_text(text)
        written = verify_package(tmp)
    return written
