"""Explanations: which features a model relies on overall, and why it gave one row its answer.

Three SHAP paths, chosen from the model itself (the result always says which ran):

* ``shap.TreeExplainer`` for LightGBM and XGBoost models (boosters and scikit-learn
  wrappers) and scikit-learn trees, forests and gradient boosting: exact, fast, and in the
  model's raw output (log-odds for boosted classifiers, probabilities for forests).
* ``shap.LinearExplainer`` for scikit-learn linear models on numeric columns: exact, in the
  model's raw output (log-odds for logistic regression).
* ``shap.PermutationExplainer`` for everything else: AutoML pipelines and ensembles, models
  behind preprocessing, PyTorch and Keras packages. It explains a function of a DataFrame
  with the model's own columns that returns class probabilities (classifiers) or values,
  against a background sample of at most 100 rows. Non-numeric columns (strings,
  categories, booleans, dates) are coded as numbers for shap's masker and decoded back to
  their own types before every model call, so the model sees the frames it was trained
  on, missing values included. Its Shapley values are estimates (a few random feature
  orders); they still add up exactly to the prediction minus the base value.

A tree model at the end of a Pipeline takes the model-agnostic path: the preprocessing
changes what "a feature" is, and correctness comes first.

>>> imp = global_importance(pkg, X_test, y_test)  # doctest: +SKIP
>>> imp.features[0].name  # doctest: +SKIP
'tenure'
>>> [row] = explain_rows(pkg, X_test.head(1), background=X_train)  # doctest: +SKIP
>>> row.base_value + sum(c.shap_value for c in row.contributions)  # doctest: +SKIP
0.8123  # == row.prediction
"""

# ruff: noqa: N803, N806 - X is the usual name for a feature matrix.

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from modelworks.core.errors import InvalidInput
from modelworks.training.flavors.base import plain
from modelworks.training.package import ModelPackage
from modelworks.training.signature import validate_input

__all__ = [
    "Contribution",
    "FeatureImportance",
    "GlobalImportance",
    "RowExplanation",
    "ShapOutput",
    "explain_rows",
    "global_importance",
    "shap_values",
]

BACKGROUND_ROWS = 100
"""At most this many background rows for the model-agnostic and linear explainers."""
AGNOSTIC_ROWS = 100
"""Default cap on the rows the model-agnostic explainer explains for global importance."""
PERMUTATIONS = 10
"""Antithetic feature orders the permutation explainer tries per row by default."""
GLOBAL_PERMUTATIONS = 3
"""Fewer for global importance: its mean over many rows averages the estimates' noise."""
TASKS = ("binary", "multiclass", "regression")
METHODS = ("permutation", "shap")
TREE = "shap.TreeExplainer"
LINEAR = "shap.LinearExplainer"
AGNOSTIC = "shap.PermutationExplainer"
PERMUTATION_IMPORTANCE = "sklearn.inspection.permutation_importance"


# ---- results ----------------------------------------------------------------------------------
class FeatureImportance(BaseModel):
    """One feature's importance. ``None`` where that method did not run."""

    name: str
    permutation_mean: float | None = Field(
        None, description="Mean drop of the score when the feature is shuffled."
    )
    permutation_std: float | None = Field(None, description="Its standard deviation.")
    shap_mean_abs: float | None = Field(
        None, description="Mean |SHAP value| over the explained rows (see notes for units)."
    )


class GlobalImportance(BaseModel):
    """How much the model relies on each feature, most important first."""

    method_used: dict[str, str] = Field(
        description="Method asked for ('permutation', 'shap') -> what computed it."
    )
    features: list[FeatureImportance]
    n_rows: int = Field(description="Rows the importances were computed on.")
    shap_rows: int | None = Field(None, description="Rows SHAP explained, when fewer.")
    scoring: str | None = Field(None, description="Score of the permutation importance.")
    sorted_by: str = Field("permutation_mean", description="Field the features are sorted by.")
    notes: list[str] = Field(default_factory=list)


class Contribution(BaseModel):
    """One feature's share of one prediction."""

    feature: str
    value: str | float | None = Field(description="The row's value of the feature.")
    shap_value: float


class RowExplanation(BaseModel):
    """Why the model gave one row its output: ``base_value + sum(shap) == prediction``."""

    base_value: float = Field(description="The average output over the background.")
    prediction: float = Field(description="The model's output for the row, in `output` units.")
    output: str = Field(description="What base_value and prediction are, e.g. a probability.")
    method: str
    class_label: str | int | float | bool | None = Field(
        None, description="The class explained, for classifiers."
    )
    approximate: bool = Field(False, description="True when the values are estimates.")
    contributions: list[Contribution] = Field(description="Sorted by |shap_value|, largest first.")
    notes: list[str] = Field(default_factory=list)


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    return value if isinstance(value, np.ndarray) else np.asarray(value, dtype=np.float64)


def _to_list(value: np.ndarray[Any, Any]) -> Any:
    return value.tolist()


# A NumPy array in Python (no copy on construction), a nested list in JSON.
Array = Annotated[
    np.ndarray[Any, Any],
    BeforeValidator(_as_array),
    PlainSerializer(_to_list, when_used="json"),
    WithJsonSchema({"type": "array", "items": {}}),
]


class ShapOutput(BaseModel):
    """SHAP values of many rows, as shap itself lays them out.

    ``values`` is ``(rows, features)`` for one output or ``(rows, features, outputs)`` for
    several (one per class); ``base_values`` is a scalar or one per output.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    values: Array
    base_values: Array
    feature_names: list[str]
    method: str
    output: str = Field(description="What the values add up to, e.g. raw margin (log-odds).")
    classes: list[Any] | None = None
    notes: list[str] = Field(default_factory=list)


# ---- the model, whatever it came as -----------------------------------------------------------
def _root(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


def _is_lgb_booster(est: Any) -> bool:
    return _root(est) == "lightgbm" and type(est).__name__ == "Booster"


def _is_xgb_booster(est: Any) -> bool:
    return _root(est) == "xgboost" and type(est).__name__ == "Booster"


def _booster_task(est: Any) -> tuple[str, list[Any] | None] | None:
    """Task and classes of a bare LightGBM/XGBoost booster, read from its objective."""
    if _is_lgb_booster(est):
        classes = getattr(est, "modelworks_classes", None)
        objective = str((est.params or {}).get("objective", ""))
        n_class = int((est.params or {}).get("num_class", 1) or 1)
    elif _is_xgb_booster(est):
        import json

        learner = json.loads(est.save_config()).get("learner", {})
        objective = str(learner.get("objective", {}).get("name", ""))
        n_class = int(learner.get("learner_model_param", {}).get("num_class", 0) or 0)
        classes = None
    else:
        return None
    if classes is not None:
        return ("binary" if len(classes) == 2 else "multiclass"), list(classes)
    if objective.startswith(("binary", "cross_entropy", "xentropy")):
        return "binary", [0, 1]
    if objective.startswith(("multi", "softmax")) and n_class > 1:
        return "multiclass", list(range(n_class))
    return None


def _raw_task(est: Any, flavor: Any) -> tuple[str, list[Any] | None]:
    task, classes = ("other", None) if flavor is None else (flavor.task(est), flavor.classes(est))
    if task == "other":
        found = _booster_task(est)
        if found is not None:
            return found
        if hasattr(est, "predict_proba"):  # the brief rule: probabilities mean a classifier
            labels = getattr(est, "classes_", None)
            classes = None if labels is None else [plain(c) for c in np.asarray(labels)]
            task = "binary" if classes is None or len(classes) == 2 else "multiclass"
        elif _is_lgb_booster(est) or _is_xgb_booster(est) or hasattr(est, "predict"):
            task = "regression"
    return task, classes


def _expected_columns(est: Any) -> list[str] | None:
    """The column names a raw model was trained with, when it kept them."""
    names: Any = getattr(est, "feature_names_in_", None)
    if names is None and _root(est) == "lightgbm":
        booster = est if _is_lgb_booster(est) else getattr(est, "booster_", None)
        names = booster.feature_name() if booster is not None else None
        if names and all(n == f"Column_{i}" for i, n in enumerate(names)):
            names = None  # trained on an array: LightGBM made the names up
    if names is None and _root(est) == "xgboost":
        booster = est if _is_xgb_booster(est) else est.get_booster()
        names = booster.feature_names
    return None if names is None else [str(n) for n in names]


@dataclass
class _Model:
    """A package or a raw estimator, with what explaining it needs to know."""

    estimator: Any
    package: ModelPackage | None
    task: str  # binary, multiclass, regression or other
    classes: list[Any] | None
    columns: list[str] | None
    n_features: int | None = None
    tensor: bool = False
    flavor: Any = None
    numpy_input: bool = False  # a scikit-learn model fitted on an array: pass it arrays

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass")

    def prepare(self, data: Any, what: str) -> tuple[pd.DataFrame, list[str]]:
        """``data`` as a DataFrame of the model's columns, in its order (and notes)."""
        if isinstance(data, np.ndarray) and data.ndim == 2:
            names = self.columns or [f"x{i}" for i in range(data.shape[1])]
            if len(names) != data.shape[1]:
                raise InvalidInput(
                    f"{what} has {data.shape[1]} columns; the model takes {len(names)} "
                    f"({', '.join(names[:20])}). Pass a DataFrame with those columns."
                )
            data = pd.DataFrame(data, columns=names)
        if not isinstance(data, pd.DataFrame):
            raise InvalidInput(
                f"{what} must be a pandas DataFrame of the model's input columns; got "
                f"{type(data).__name__}."
            )
        if len(data) == 0:
            raise InvalidInput(f"{what} has no rows; give at least one row to explain.")
        if data.shape[1] == 0:
            raise InvalidInput(f"{what} has no columns; give the model's input columns.")
        notes: list[str] = []
        if self.package is not None and self.package.signature is not None and not self.tensor:
            frame = validate_input(self.package.signature, data, allow_extra=True)
            assert isinstance(frame, pd.DataFrame)  # a tabular signature gives a frame
        elif self.columns is not None:
            names = [str(c) for c in data.columns]
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise InvalidInput(
                    f"{what} lacks columns the model was trained with: "
                    f"{', '.join(map(repr, missing))}. Give a frame with all of "
                    f"{', '.join(map(repr, self.columns[:30]))}."
                )
            frame = data if names == self.columns else data.set_axis(names, axis=1)
            if list(frame.columns) != self.columns:
                frame = frame[self.columns]
        else:
            frame = data.set_axis([str(c) for c in data.columns], axis=1)
        width = self.n_features
        if width is not None and frame.shape[1] != width:
            raise InvalidInput(f"{what} has {frame.shape[1]} columns; the model takes {width}.")
        kept = {str(c) for c in frame.columns}
        extra = [str(c) for c in data.columns if str(c) not in kept]
        if extra:
            notes.append(
                f"Columns the model does not take were left out of {what}: "
                f"{', '.join(map(repr, extra[:20]))}{' ...' if len(extra) > 20 else ''}."
            )
        return frame, notes

    def _call_input(self, frame: pd.DataFrame) -> Any:
        return frame.to_numpy() if self.numpy_input else frame

    def outputs(self, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        """Class probabilities ``(rows, classes)`` of a classifier; else values ``(rows,)``
        (or ``(rows, outputs)`` for a model with several)."""
        est = self.estimator
        if self.package is not None:
            if self.is_classifier and self.package.task in ("binary", "multiclass"):
                out = self.package.predict_proba(frame)
            else:
                out = self.package.predict(frame)
        else:
            data = self._call_input(frame)
            if _is_xgb_booster(est):
                import xgboost as xgb

                out = est.predict(xgb.DMatrix(data, enable_categorical=True))
            elif _is_lgb_booster(est):  # probabilities of a classifier, values otherwise
                out = est.predict(data)
            elif self.is_classifier and hasattr(est, "predict_proba"):
                out = est.predict_proba(data)
            elif self.flavor is not None:  # torch and keras modules
                out = self.flavor.predict(est, data)
            else:
                out = est.predict(data)
        arr = np.asarray(out, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 1 and not self.is_classifier:
            arr = arr[:, 0]
        if self.is_classifier and arr.ndim == 1:  # positive-class probability only
            arr = np.column_stack([1.0 - arr, arr])
        return arr

    def settle_classes(self, frame: pd.DataFrame) -> None:
        """Class labels for a classifier that did not name them: 0..k-1 from its output."""
        if self.is_classifier and self.classes is None:
            k = self.outputs(frame.iloc[:1]).shape[1]
            self.classes = list(range(k))
            self.task = "binary" if k == 2 else "multiclass"


def _resolve(model: Any, task: str | None = None) -> _Model:
    if isinstance(model, ModelPackage):
        sig = model.signature
        tensor = bool(sig is not None and sig.is_tensor)
        shape = sig.inputs[0].shape if sig is not None and tensor else None
        resolved = _Model(
            estimator=model.model,
            package=model,
            task=model.task,
            classes=list(model.classes) if model.classes is not None else None,
            columns=None if sig is None or tensor else sig.input_names,
            n_features=shape[1] if shape and len(shape) == 2 and shape[1] > 0 else None,
            tensor=tensor,
        )
    else:
        from modelworks.training.flavors import flavor_for

        try:
            flavor = flavor_for(model)
        except InvalidInput:
            if not (hasattr(model, "predict") or hasattr(model, "predict_proba")):
                raise  # says which kinds of model there are
            flavor = None
        found_task, classes = _raw_task(model, flavor)
        columns = _expected_columns(model)
        n_in = getattr(model, "n_features_in_", None)
        resolved = _Model(
            estimator=model,
            package=None,
            task=found_task,
            classes=classes,
            columns=columns,
            n_features=int(n_in) if columns is None and isinstance(n_in, int) else None,
            flavor=flavor,
            numpy_input=columns is None and n_in is not None and _root(model) == "sklearn",
        )
    if task is not None and task != resolved.task:  # the model's own task is always fine
        if task not in TASKS:
            raise InvalidInput(f"task must be one of {', '.join(TASKS)}; got {task!r}.")
        if resolved.task != "other":
            raise InvalidInput(
                f"task={task!r} does not fit this model, which is a {resolved.task} model; "
                "leave task out to use the model's own."
            )
        resolved.task = task  # a model that did not say, e.g. a PyTorch classifier
        if task == "binary" and resolved.classes is None:
            resolved.classes = [0, 1]
    return resolved


# ---- what a SHAP path gives back --------------------------------------------------------------
@dataclass
class _Raw:
    """SHAP results in one layout: values ``(rows, features, K)``, base and prediction
    ``(rows, K)``; ``outputs[k]`` says what output ``k`` is."""

    values: np.ndarray[Any, Any]
    base: np.ndarray[Any, Any]
    prediction: np.ndarray[Any, Any]
    outputs: list[str]
    method: str
    approximate: bool = False
    notes: list[str] = field(default_factory=list)


def _describe(value: Any) -> str:
    return repr(plain(value))


def _labels(model: _Model, kind: str, k: int) -> list[str]:
    """What each of ``k`` outputs is: ``kind`` is probability, margin or value."""
    if model.is_classifier and model.classes is not None and len(model.classes) == k:
        if kind == "probability":
            return [f"probability of class {_describe(c)}" for c in model.classes]
        scale = "log-odds" if model.task == "binary" else "logit, before softmax"
        return [f"raw margin ({scale}) of class {_describe(c)}" for c in model.classes]
    if k == 1:
        return ["value" if kind != "margin" else "raw margin (before the objective's link)"]
    return [f"output {j}" for j in range(k)]


def _layout(
    values: Any, base: Any, prediction: Any, binary: bool
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """shap's many layouts as (rows, features, K), (rows, K), (rows, K).

    A binary model explained in one margin becomes two outputs, the negative class's being
    the negated positive one, so classes are picked the same way everywhere.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    b = np.asarray(base, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    if v.ndim == 2:
        v = v[:, :, None]
    k = v.shape[2]
    b = np.broadcast_to(b.reshape(-1, k), (n, k)).copy()
    p = p.reshape(n, -1)
    if binary and k == 1:
        v = np.concatenate([-v, v], axis=2)
        b = np.concatenate([-b, b], axis=1)
        p = np.concatenate([-p, p], axis=1)
    return v, b, p


# ---- tree and linear paths ----------------------------------------------------------------------
_SKLEARN_TREES = frozenset(
    {
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    }
)


def _is_tree(est: Any) -> bool:
    root = _root(est)
    if root in ("lightgbm", "xgboost"):
        return True
    return root == "sklearn" and type(est).__name__ in _SKLEARN_TREES


def _is_linear(est: Any) -> bool:
    return type(est).__module__.startswith("sklearn.linear_model") and hasattr(est, "coef_")


@contextmanager
def _quiet_shap() -> Iterator[None]:
    with warnings.catch_warnings():
        # shap warns on every LightGBM binary model that its output "changed to a list of
        # ndarray"; it is one array, and the layout is handled here.
        warnings.filterwarnings("ignore", message=r".*output has changed to a list")
        yield


def _tree_margin(est: Any, frame: pd.DataFrame, model: _Model) -> tuple[Any, str]:
    """The model's own output in the space TreeExplainer explains, and what it is."""
    root = _root(est)
    if root == "lightgbm":
        return est.predict(frame, raw_score=True), "margin"
    if _is_xgb_booster(est):
        import xgboost as xgb

        return est.predict(xgb.DMatrix(frame, enable_categorical=True), output_margin=True), (
            "margin"
        )
    if root == "xgboost":
        return est.predict(frame, output_margin=True), "margin"
    data = model._call_input(frame)
    if model.is_classifier:
        if hasattr(est, "decision_function"):  # gradient boosting: log-odds
            return est.decision_function(data), "margin"
        return est.predict_proba(data), "probability"  # trees and forests average leaves
    return est.predict(data), "value"


def _margin_is_value(model: _Model, frame: pd.DataFrame, margin: Any) -> bool:
    """True when a regressor's raw margin is its prediction (no log or other link)."""
    head = frame.iloc[:20]
    return bool(np.allclose(np.asarray(margin)[: len(head)], model.outputs(head), rtol=1e-6))


def _tree(model: _Model, frame: pd.DataFrame) -> _Raw:
    import shap

    est = model.estimator
    explainer = shap.TreeExplainer(est)
    with _quiet_shap():
        values = explainer.shap_values(frame)
    prediction, kind = _tree_margin(est, frame, model)
    notes = []
    if not model.is_classifier and kind == "margin":
        if _margin_is_value(model, frame, prediction):
            kind = "value"
        else:
            notes.append(
                "The objective has a link function (e.g. log): SHAP values are in its raw "
                "margin, not in the predicted values."
            )
    v, b, p = _layout(values, explainer.expected_value, prediction, model.task == "binary")
    return _Raw(v, b, p, _labels(model, kind, v.shape[2]), TREE, notes=notes)


def _numeric(frame: pd.DataFrame) -> np.ndarray[Any, Any] | None:
    """The frame as a float matrix, or None when it has non-numeric columns or gaps."""
    if not all(
        pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in frame.dtypes
    ):
        return None
    matrix = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    return None if np.isnan(matrix).any() else matrix


def _linear(model: _Model, frame: pd.DataFrame, background: pd.DataFrame) -> _Raw:
    import shap

    est = model.estimator
    X, bg = _numeric(frame), _numeric(background)
    if X is None or bg is None:
        raise ValueError("the input has non-numeric columns or missing values")
    explainer = shap.LinearExplainer(est, shap.maskers.Independent(bg, max_samples=len(bg)))
    values = explainer.shap_values(X)
    data = model._call_input(frame)
    if model.is_classifier:
        prediction = est.decision_function(data)
        kind = "margin" if "Logistic" in type(est).__name__ else "decision"
    else:
        prediction, kind = est.predict(data), "value"
    v, b, p = _layout(values, explainer.expected_value, prediction, model.task == "binary")
    labels = _labels(model, "margin" if kind == "decision" else kind, v.shape[2])
    if kind == "decision":
        labels = [s.replace("raw margin (log-odds)", "decision function") for s in labels]
    return _Raw(v, b, p, labels, LINEAR)


# ---- the model-agnostic path ------------------------------------------------------------------
class _Codec:
    """Codes a frame's columns as floats for shap's masker, and decodes them back.

    Numbers stay numbers; every other column (strings, categories, booleans, dates) becomes
    its category code, with NaN for a missing value. Decoding restores each column's dtype,
    so the model sees what it was trained on.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.columns = list(frame.columns)
        self.dtypes = list(frame.dtypes)
        self.categories: list[pd.Index | None] = []
        blocks = []
        for name, dtype in zip(self.columns, self.dtypes, strict=True):
            col = frame[name]
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                self.categories.append(None)
                blocks.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            else:
                codes, uniques = pd.factorize(col, use_na_sentinel=True)
                self.categories.append(pd.Index(np.asarray(uniques, dtype=object)))
                blocks.append(np.where(codes < 0, np.nan, codes.astype(np.float64)))
        self.matrix = np.column_stack(blocks)

    def decode(self, matrix: np.ndarray[Any, Any]) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, (name, dtype, cats) in enumerate(
            zip(self.columns, self.dtypes, self.categories, strict=True)
        ):
            col = matrix[:, j]
            if cats is None:
                data[name] = col if dtype == np.float64 else pd.Series(col).astype(dtype)
            else:
                codes = np.where(np.isnan(col), -1, col).astype(np.int64)
                cat = pd.Categorical.from_codes(codes, categories=cats)
                data[name] = pd.Series(cat).astype(dtype)
        return pd.DataFrame(data, columns=self.columns)


_GLOBAL_RANDOM = threading.Lock()


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """shap's permutation explainer seeds and draws from NumPy's global generator: give it
    ``seed`` and put the caller's generator state back afterwards. One explanation at a
    time holds it, so explanations in threads of one server stay reproducible."""
    with _GLOBAL_RANDOM:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=n, replace=False))
    return frame.iloc[rows]


def _agnostic(
    model: _Model,
    frame: pd.DataFrame,
    background: pd.DataFrame,
    *,
    max_evals: int | None,
    seed: int,
    permutations: int = PERMUTATIONS,
) -> _Raw:
    import shap

    n_features = frame.shape[1]
    least = 2 * n_features + 1
    if max_evals is None:
        max_evals = permutations * least
    elif max_evals < least:
        raise InvalidInput(
            f"max_evals={max_evals} is too low: the permutation explainer needs at least "
            f"2 x {n_features} features + 1 = {least} model evaluations per row. Give "
            f"max_evals >= {least}, or leave it out for {PERMUTATIONS * least}."
        )
    bg = _sample(background, BACKGROUND_ROWS, seed)
    codec = _Codec(pd.concat([bg, frame], ignore_index=True))
    bg_matrix, rows_matrix = codec.matrix[: len(bg)], codec.matrix[len(bg) :]

    def predict(matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        # Always (rows, outputs): shap's numba kernels compile once per array rank, and
        # one rank for every model saves a second compile of several seconds.
        out = model.outputs(codec.decode(matrix))
        return out.reshape(len(out), -1)

    masker = shap.maskers.Independent(bg_matrix, max_samples=len(bg_matrix))
    with _numpy_seed(seed):
        explainer = shap.PermutationExplainer(predict, masker, seed=seed)
        explanation = explainer(rows_matrix, max_evals=max_evals, silent=True)
    prediction = model.outputs(frame)
    v, b, p = _layout(explanation.values, explanation.base_values, prediction, False)
    orders = max_evals // least
    approximate = n_features > 2  # one antithetic order is exact for up to 2 features
    notes = [
        f"Model-agnostic: shap.PermutationExplainer over {len(bg)} background rows with "
        f"{orders} antithetic feature orders per row"
        + (
            "; the Shapley values are estimates (they add up exactly to the prediction "
            "minus the base value)."
            if approximate
            else "."
        )
    ]
    kind = "probability" if model.is_classifier else "value"
    return _Raw(v, b, p, _labels(model, kind, v.shape[2]), AGNOSTIC, approximate, notes)


def _explain(
    model: _Model,
    frame: pd.DataFrame,
    background: pd.DataFrame | None,
    *,
    max_evals: int | None,
    seed: int,
    agnostic_rows: int | None = None,
    permutations: int = PERMUTATIONS,
) -> _Raw:
    """SHAP values of ``frame`` by the best path for the model (see the module docstring)."""
    notes: list[str] = []
    est = model.estimator
    if not model.tensor and _is_tree(est):
        try:
            raw = _tree(model, frame)
        except Exception as exc:  # shap reads only some models; fall back, and say so
            notes.append(
                f"shap.TreeExplainer could not explain this {type(est).__name__} ({exc}); "
                "the model-agnostic path was used."
            )
        else:
            if background is not None:
                raw.notes.append(
                    "TreeExplainer follows the trees' own training-data paths; the "
                    "background rows were not needed."
                )
            return raw
    if background is None and len(frame) < 2:
        raise InvalidInput(
            f"A {type(est).__name__} is explained against background rows (the average it "
            "is compared with): pass background= (a sample of the training data), or "
            "explain at least 2 rows at once."
        )
    if not model.tensor and _is_linear(est) and model.task != "other":
        reference = _sample(frame if background is None else background, BACKGROUND_ROWS, seed)
        try:
            raw = _linear(model, frame, reference)
        except Exception as exc:
            notes.append(
                f"shap.LinearExplainer could not explain this {type(est).__name__} ({exc}); "
                "the model-agnostic path was used."
            )
        else:
            if background is None:
                raw.notes.append("No background was given: the explained rows stand in for it.")
            return raw
    if background is None:
        background = frame
        notes.append(
            "No background was given: the explained rows stand in for it; pass "
            "background= (training data) for a base value that means the average output."
        )
    if agnostic_rows is not None and len(frame) > agnostic_rows:
        notes.append(
            f"The model-agnostic explainer explained {agnostic_rows} of the {len(frame)} "
            "rows (raise max_agnostic_rows for more, at a cost in time)."
        )
        frame = frame.iloc[:agnostic_rows]
    raw = _agnostic(
        model, frame, background, max_evals=max_evals, seed=seed, permutations=permutations
    )
    raw.notes = notes + raw.notes
    return raw


# ---- public API -------------------------------------------------------------------------------
def _json_value(value: Any) -> str | float | None:
    """A feature value as JSON takes it: a number, a string, or None when missing."""
    if value is None:
        return None
    if np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value):
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    return str(value)


def _class_label(model: _Model, k: int) -> str | int | float | bool | None:
    if not model.is_classifier or model.classes is None or k >= len(model.classes):
        return None
    label = plain(model.classes[k])
    return label if isinstance(label, str | int | float | bool) else str(label)


def _check_class_index(model: _Model, class_index: int | None) -> None:
    if class_index is None:
        return
    if model.task == "regression":
        raise InvalidInput(
            "class_index is for classifiers; this is a regression model, so leave it out."
        )
    if model.classes is not None and not 0 <= class_index < len(model.classes):
        listed = ", ".join(f"{i}: {_describe(c)}" for i, c in enumerate(model.classes))
        raise InvalidInput(
            f"class_index={class_index} is out of range; it is a position in the model's "
            f"classes ({listed})."
        )


def explain_rows(
    model: ModelPackage | Any,
    rows: pd.DataFrame,
    *,
    background: pd.DataFrame | None = None,
    class_index: int | None = None,
    max_evals: int | None = None,
    seed: int = 0,
) -> list[RowExplanation]:
    """Each row's prediction split into one SHAP value per feature.

    ``base_value + sum(shap_value) == prediction`` for every row, in the units ``output``
    names. A classifier is explained for ``class_index`` (a position in the model's
    classes): by default the positive class of a binary model and each row's predicted
    class of a multiclass one. ``background`` (rows of training data, at most 100 used)
    is what model-agnostic and linear explanations compare with; without it the rows
    themselves are used, which needs at least two; TreeExplainer needs none (it follows
    the trees' own paths). ``max_evals`` (model-agnostic only) is the number of model
    evaluations per row, at least ``2 * features + 1``; more gives closer estimates.
    """
    resolved = _resolve(model)
    frame, notes = resolved.prepare(rows, "rows")
    bg_frame = None
    if background is not None:
        bg_frame, _ = resolved.prepare(background, "background")
    resolved.settle_classes(frame)
    _check_class_index(resolved, class_index)  # before the work, where the model says enough
    raw = _explain(resolved, frame, bg_frame, max_evals=max_evals, seed=seed)
    if raw.approximate:
        raw.notes.append("Raise max_evals for closer estimates, at a cost in time.")
    if max_evals is not None and raw.method != AGNOSTIC:
        raw.notes.append(f"{raw.method} is exact; max_evals was not needed.")
    n_out = raw.values.shape[2]
    if class_index is not None:
        if not resolved.is_classifier and n_out == 1:
            raise InvalidInput(
                "class_index is for classifiers; this is a regression model with one output, "
                "so leave class_index out."
            )
        if not 0 <= class_index < n_out:
            listed = ", ".join(f"{i}: {o}" for i, o in enumerate(raw.outputs))
            raise InvalidInput(
                f"class_index={class_index} is out of range; the model has {n_out} outputs "
                f"({listed})."
            )
        picks = np.full(len(frame), class_index)
    elif resolved.task == "binary":
        picks = np.full(len(frame), 1)
    else:  # each row's predicted class (or its only output)
        picks = np.argmax(raw.prediction, axis=1)
    names = [str(c) for c in frame.columns]
    results = []
    for i, k in enumerate(picks):
        shap_row = raw.values[i, :, k]
        order = np.argsort(-np.abs(shap_row), kind="stable")
        results.append(
            RowExplanation(
                base_value=float(raw.base[i, k]),
                prediction=float(raw.prediction[i, k]),
                output=raw.outputs[k],
                method=raw.method,
                class_label=_class_label(resolved, int(k)),
                approximate=raw.approximate,
                contributions=[
                    Contribution(
                        feature=names[j],
                        value=_json_value(frame.iat[i, j]),
                        shap_value=float(shap_row[j]),
                    )
                    for j in order
                ],
                notes=notes + raw.notes,
            )
        )
    return results


def _target(y: ArrayLike, n: int, model: _Model) -> np.ndarray[Any, Any]:
    target = np.asarray(y)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1 or len(target) != n:
        raise InvalidInput(f"y must hold one target per row of X ({n}); got shape {target.shape}.")
    missing = int(pd.isna(target).sum())
    if missing:
        raise InvalidInput(f"y has {missing} missing values; drop those rows from X and y.")
    if model.is_classifier and model.classes is not None:
        known = set(model.classes)
        unknown = [v for v in pd.unique(target) if plain(v) not in known]
        if unknown:
            raise InvalidInput(
                f"y holds labels the model does not know: "
                f"{', '.join(_describe(v) for v in unknown[:5])}; "
                f"its classes are {model.classes}."
            )
    return target


Scorer = Callable[[Any, pd.DataFrame, np.ndarray[Any, Any]], float]


def _scorer(model: _Model, target: np.ndarray[Any, Any]) -> tuple[Scorer, str]:
    """A score that fits the task (higher is better), computed from the model's outputs."""
    from sklearn.metrics import log_loss, r2_score, roc_auc_score

    if model.task == "binary":
        assert model.classes is not None
        positive = model.classes[1]

        def is_positive(y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return np.asarray([plain(v) == positive for v in y])

        if len(set(is_positive(target).tolist())) < 2:
            raise InvalidInput(
                "y holds only one class; permutation importance of a binary model is "
                "measured by ROC AUC, which needs rows of both classes."
            )

        def auc(_: Any, X: pd.DataFrame, y: np.ndarray[Any, Any]) -> float:
            return float(roc_auc_score(is_positive(y), model.outputs(X)[:, 1]))

        return auc, "roc_auc"
    if model.task == "multiclass":
        labels = list(model.classes or [])

        def neg_log_loss(_: Any, X: pd.DataFrame, y: np.ndarray[Any, Any]) -> float:
            return -float(log_loss(y, model.outputs(X), labels=labels))

        return neg_log_loss, "neg_log_loss"

    def r2(_: Any, X: pd.DataFrame, y: np.ndarray[Any, Any]) -> float:
        out = model.outputs(X)
        if out.ndim != 1:
            raise InvalidInput(
                "This model gives several outputs per row; permutation importance needs one. "
                "Pass task= to say what it predicts."
            )
        return float(r2_score(np.asarray(y, dtype=np.float64), out))

    return r2, "r2"


class _Scored:
    """What permutation_importance asks of an estimator (a ``fit``); the scorer calls the
    model itself, so packages, boosters and pipelines are all scored the same way."""

    def __init__(self, model: _Model) -> None:
        self.model = model

    def fit(self, X: Any, y: Any = None) -> _Scored:
        raise NotImplementedError("explanations never refit the model")


def _mean_abs(raw: _Raw, task: str) -> np.ndarray[Any, Any]:
    """Mean |SHAP| per feature: of the positive class for binary, over classes otherwise."""
    if task == "binary" and raw.values.shape[2] == 2:
        return np.asarray(np.abs(raw.values[:, :, 1]).mean(axis=0))
    return np.asarray(np.abs(raw.values).mean(axis=(0, 2)))


def global_importance(
    model: ModelPackage | Any,
    X: pd.DataFrame,
    y: ArrayLike | None = None,
    *,
    task: str | None = None,
    methods: Sequence[str] = ("permutation", "shap"),
    max_rows: int = 2000,
    n_repeats: int = 5,
    seed: int = 0,
    max_agnostic_rows: int = AGNOSTIC_ROWS,
) -> GlobalImportance:
    """Each feature's importance, most important first.

    ``permutation``: how much the score drops when a feature's values are shuffled
    (scikit-learn's permutation importance; ROC AUC for binary classifiers, negative log
    loss for multiclass, R² for regression); it needs ``y`` and is skipped with a note
    without it. ``shap``: the mean |SHAP value| of each feature. Both run on a seeded
    sample of ``max_rows`` rows; the model-agnostic SHAP path, which evaluates the model
    thousands of times per row, explains at most ``max_agnostic_rows`` of them. Features
    are sorted by permutation importance when it ran, else by SHAP. ``task`` overrides the
    task read from the model (binary, multiclass or regression).
    """
    from sklearn.inspection import permutation_importance

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or isinstance(methods, str):
        raise InvalidInput(
            f"methods must be a non-empty list drawn from {', '.join(METHODS)}; got {methods!r}."
        )
    for name, value in (("max_rows", max_rows), ("n_repeats", n_repeats)):
        if value < 1:
            raise InvalidInput(f"{name} must be at least 1; got {value}.")
    if max_agnostic_rows < 1:
        raise InvalidInput(f"max_agnostic_rows must be at least 1; got {max_agnostic_rows}.")
    resolved = _resolve(model, task)
    frame, notes = resolved.prepare(X, "X")
    resolved.settle_classes(frame)
    target = None if y is None else _target(y, len(frame), resolved)
    n_total = len(frame)
    # A random order, so that any prefix of the sample is a random sample too: the
    # model-agnostic explainer takes the first max_agnostic_rows.
    order = np.random.default_rng(seed).permutation(n_total)[:max_rows]
    if n_total > max_rows:
        notes.append(f"Computed on a seeded sample of {max_rows} of the {n_total} rows.")
    sample = frame.iloc[order]
    names = [str(c) for c in frame.columns]
    method_used: dict[str, str] = {}
    perm_mean = perm_std = shap_abs = None
    scoring = None
    shap_rows = None
    if "permutation" in methods:
        if target is None:
            notes.append("Permutation importance needs y (the true targets); it was skipped.")
        else:
            scorer, scoring = _scorer(resolved, target[order])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # feature-name chatter per call
                result = permutation_importance(
                    _Scored(resolved),
                    sample,
                    target[order],
                    scoring=scorer,
                    n_repeats=n_repeats,
                    random_state=seed,
                )
            perm_mean = np.asarray(result.importances_mean)
            perm_std = np.asarray(result.importances_std)
            method_used["permutation"] = PERMUTATION_IMPORTANCE
    if "shap" in methods:
        background = _sample(frame, BACKGROUND_ROWS, seed + 1)
        raw = _explain(
            resolved,
            sample,
            background,
            max_evals=None,
            seed=seed,
            agnostic_rows=max_agnostic_rows,
            permutations=GLOBAL_PERMUTATIONS,
        )
        shap_abs = _mean_abs(raw, resolved.task)
        method_used["shap"] = raw.method
        if raw.values.shape[0] != len(sample):
            shap_rows = int(raw.values.shape[0])
        notes.extend(n for n in raw.notes if "background rows were not needed" not in n)
        units = raw.outputs[1] if resolved.task == "binary" else raw.outputs[0]
        if resolved.task == "multiclass":
            units = units.split(" of class")[0] + ", averaged over the classes"
        notes.append(f"SHAP values are in units of the model's {units}.")
    features = [
        FeatureImportance(
            name=name,
            permutation_mean=None if perm_mean is None else float(perm_mean[j]),
            permutation_std=None if perm_std is None else float(perm_std[j]),
            shap_mean_abs=None if shap_abs is None else float(shap_abs[j]),
        )
        for j, name in enumerate(names)
    ]
    key = perm_mean if perm_mean is not None else shap_abs
    sorted_by = "permutation_mean" if perm_mean is not None else "shap_mean_abs"
    if key is not None:
        features = [features[j] for j in np.argsort(-key, kind="stable")]
    return GlobalImportance(
        method_used=method_used,
        features=features,
        n_rows=len(sample),
        shap_rows=shap_rows,
        scoring=scoring,
        sorted_by=sorted_by,
        notes=notes,
    )


def _tree_output(model: _Model, frame: pd.DataFrame, values: Any) -> str:
    """What TreeExplainer's values add up to, for :func:`shap_values`."""
    est = model.estimator
    if model.is_classifier:
        sklearn_proba = _root(est) == "sklearn" and not hasattr(est, "decision_function")
        labels = _labels(
            model, "probability" if sklearn_proba else "margin", len(model.classes or ())
        )
        if np.ndim(values) == 2:  # one margin: the positive class's
            return labels[-1]
        return labels[0].split(" of class")[0] + " of each class, in the last axis"
    if _root(est) in ("lightgbm", "xgboost"):
        margin, _ = _tree_margin(est, frame.iloc[:20], model)
        if not _margin_is_value(model, frame, margin):
            return _labels(model, "margin", 1)[0]
    return "value"


def shap_values(model: Any, X: pd.DataFrame) -> ShapOutput:
    """SHAP values of every row of ``X``.

    For tree models this is ``shap.TreeExplainer(model).shap_values(X)`` with nothing
    added (no copy of ``X`` when its columns are already the model's, no per-row work) and
    shap's own layout: ``(rows, features)``, or ``(rows, features, classes)`` where shap
    gives one set per class. Other models take the linear or model-agnostic path, with a
    sample of ``X`` as the background; their values are ``(rows, features)`` for
    regression and for binary classifiers (the positive class), ``(rows, features,
    classes)`` for multiclass ones.
    """
    resolved = _resolve(model)
    est = resolved.estimator
    if (
        isinstance(X, pd.DataFrame)
        and resolved.package is None
        and resolved.columns == [str(c) for c in X.columns]
    ):
        frame = X
    else:
        frame = resolved.prepare(X, "X")[0]
    names = [str(c) for c in frame.columns]
    notes: list[str] = []
    if not resolved.tensor and _is_tree(est):
        import shap

        try:
            explainer = shap.TreeExplainer(est)
            with _quiet_shap():
                values = explainer.shap_values(frame)
        except Exception as exc:  # shap reads only some models; fall back, and say so
            notes.append(
                f"shap.TreeExplainer could not explain this {type(est).__name__} ({exc}); "
                "another path was used."
            )
        else:
            return ShapOutput(
                values=values,
                base_values=np.asarray(explainer.expected_value),
                feature_names=names,
                method=TREE,
                output=_tree_output(resolved, frame, values),
                classes=resolved.classes,
            )
    resolved.settle_classes(frame)
    raw = _explain(resolved, frame, _sample(frame, BACKGROUND_ROWS, 1), max_evals=None, seed=0)
    if raw.values.shape[2] == 1 or resolved.task == "binary":
        k = raw.values.shape[2] - 1  # the only output, or the positive class
        values_out, base_out, output = raw.values[:, :, k], raw.base[0, k], raw.outputs[k]
    else:
        values_out, base_out = raw.values, raw.base[0]
        output = raw.outputs[0].split(" of class")[0] + " of each class, in the last axis"
    return ShapOutput(
        values=values_out,
        base_values=np.asarray(base_out),
        feature_names=names,
        method=raw.method,
        output=output,
        classes=resolved.classes,
        notes=notes + raw.notes,
    )
