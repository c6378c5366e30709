"""Metrics for a model's predictions: point values, bootstrap intervals, curves and slices.

``evaluate_predictions`` takes the true labels (or values) and a model's predictions and
returns an ``EvaluationResult``: a JSON-able record the registry stores and the UI draws.

Point metrics are exact. The count metrics (accuracy, precision, recall, F1, MCC, balanced
accuracy) come from the confusion matrix, ROC AUC and average precision from one sort of the
scores (ties handled as scikit-learn does); the tests check every one against
scikit-learn. Regression metrics are scikit-learn's own. The classification formulas are
written here (``_confusion_metrics``, ``_auc_desc``, ``_ap_desc``) rather than called from
scikit-learn because they must also run on count arrays of shape (resamples, cells) in one
vectorised pass, which scikit-learn's one-set-of-rows-at-a-time functions cannot do; on
1M rows they are also several times faster than its per-metric label checks.

Bootstrap intervals without resampling rows
-------------------------------------------
A bootstrap resample draws n rows with replacement: row i appears ``W_i`` times, with
``W ~ Multinomial(n; 1/n, ..., 1/n)``. Group the rows into cells; the resampled number of
rows from each cell is then ``Multinomial(n; n_c / n)``: drawing those counts *is*
resampling rows, as far as any statistic that only depends on the cell counts goes, and it
costs O(cells) per resample instead of O(n). ``rng.multinomial(n, p, size=B)`` draws all
resamples at once (about 0.3 s for 1,000 resamples over 4,096 cells).

- **Count metrics** depend on the rows only through the k x k confusion cells: exact.
- **Binary ROC AUC and average precision**: the cells are (score bin, label). With at most
  2,048 distinct scores the bins are the distinct scores and everything is exact; otherwise
  a bin closes each time another 1/1,024 of the positives, or of the negatives, has been
  passed (at most 2,048 bins, fine where the rarer class is). The decision threshold is
  always a bin edge, so the confusion counts stay exact. From the cumulative counts, AUC
  counts a (positive, negative) pair in the same bin as half a pair, as for a tie, and AP
  treats a bin as one threshold. Approximation: a bin holds at most 1/1,024 of the
  positives, so at most 1/1,024 of the pairs share a bin and the binned AUC is within
  1/2,048 (5e-4) of the exact one; measured: under 1e-6 with balanced classes, up to 2e-4
  at prevalences of 1% and 99.9% (binned AP: up to 4e-4), on 200k and 1M rows; the tests
  check both against scikit-learn. The replicates are shifted by ``exact - binned`` of the
  full sample, so the interval is centred on the exact value; only its width comes from
  the bins.
- **Means of per-row values** (log loss, Brier; for regression ``|r|``, ``r**2``, ``y`` and
  ``y**2``, of which RMSE, MAE and R2 are functions): each cell also carries the mean and
  the (population) covariance of the per-row values of its rows. Given the drawn cell
  counts ``c``, the resampled sum is ``sum_c c * mean_c + E``, where the within-cell part
  ``E`` has mean 0 and covariance ``sum_c c * cov_c`` *exactly*; ``E`` is drawn from the
  normal distribution with that covariance (it is a sum over all resampled rows, so the
  central limit theorem applies). Each replicate therefore has the mean and variance of the
  row bootstrap's; only the shape of the within-cell part is normal, and cells are made
  narrow in the value that matters (score bins for log loss and Brier; residual bins for
  regression) so that part is small. With at most 2,048 rows every row is its own cell and
  ``E = 0``: this *is* the row bootstrap.
- **Multiclass ROC AUC** (one-vs-rest, macro) on more than 2,048 rows: each class's AUC is
  replaced by its linear (Hajek) projection, whose per-row terms are DeLong's structural
  components: ``AUC* ~ AUC + mean_i W_i psi_i`` with ``psi_i = (V10_i - AUC) / p`` for a
  row of the class and ``(V01_i - AUC) / (1 - p)`` otherwise. This is the approximation
  DeLong's variance rests on; the mean of ``psi`` is then bootstrapped as above, with log
  loss and Brier, in cells of (true class, predicted class, quantile bin of the row's log
  loss), which also give the confusion counts exactly. With fewer rows the AUC of every
  resample is computed exactly from its row counts.

Intervals are percentile intervals of ``bootstrap`` replicates; ``seed`` fixes everything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, Field
from scipy.stats import rankdata
from sklearn import metrics as skm
from typing_extensions import TypedDict

from modelworks.core.errors import InvalidInput

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
HEADLINE: dict[str, str] = {"binary": "f1", "multiclass": "f1_macro", "regression": "rmse"}
# Metrics where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier", "rmse", "mae", "mape", "median_absolute_error", "max_error"}
)

MAX_CELLS = 2048  # score bins (binary), rows bootstrapped exactly, cells otherwise
CURVE_POINTS = 200
SWEEP_THRESHOLDS = np.arange(101) / 100  # 0.00, 0.01, ..., 1.00, each correctly rounded
CALIBRATION_BINS = 10
MAX_SLICE_VALUES = 50
WORST_SLICES = 5
RESIDUAL_POINTS = 2000
HISTOGRAM_BINS = 50
MISSING = "(missing)"
EPS = float(np.finfo(np.float64).eps)  # log-loss clipping, as scikit-learn does

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


# ---- result models ------------------------------------------------------------------------
class SliceResult(BaseModel):
    """Metrics on the rows where ``column == value``."""

    column: str
    value: str
    n: int
    metrics: dict[str, float]


class ConfusionMatrix(TypedDict):
    labels: list[str]
    matrix: list[list[int]]  # rows: true label, columns: predicted label


class EvaluationResult(BaseModel):
    """Everything ``evaluate_predictions`` measured; ``model_dump(mode="json")`` stores it.

    ``curves`` (each curve at most 200 points):

    - binary: ``{"roc": {"fpr", "tpr", "thresholds"}, "pr": {"precision", "recall",
      "thresholds"}, "calibration": {"prob_pred", "prob_true", "count"}}``;
    - multiclass: ``{"roc_ovr": {label: {"fpr", "tpr", "thresholds", "auc"}}}``.

    ``residuals`` (regression): ``{"histogram": {"bins": edges, "counts": counts},
    "points": [[predicted, actual], ...]}`` with at most 2,000 seeded points; residual is
    actual minus predicted.
    """

    task: Task
    n_rows: int
    classes: list[str] | None = None
    positive_class: str | None = None
    threshold: float | None = None
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    threshold_sweep: list[dict[str, float]] = Field(default_factory=list)
    curves: dict[str, Any] = Field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    residuals: dict[str, Any] | None = None
    slices: list[SliceResult] = Field(default_factory=list)
    worst_slices: list[SliceResult] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    headline: str
    elapsed_seconds: float


# ---- input preparation ---------------------------------------------------------------------
@dataclass
class _Prepared:
    """Validated inputs: label codes (index into ``classes``) or float values."""

    task: Task
    n: int
    notes: list[str]
    classes: list[Any] = field(default_factory=list)
    y: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    pred: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: FloatArray | None = None  # binary: positive-class scores
    proba: FloatArray | None = None  # multiclass: (n, k) in classes order
    threshold: float | None = None
    y_value: FloatArray | None = None  # regression
    pred_value: FloatArray | None = None

    @property
    def k(self) -> int:
        return len(self.classes)


def _array_1d(name: str, values: ArrayLike) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInput(
            f"{name} must be one-dimensional (one value per row); got shape {arr.shape}"
        )
    return arr


def _missing(arr: NDArray[Any]) -> BoolArray:
    if arr.dtype.kind in "biuUS":
        return np.zeros(len(arr), dtype=bool)
    if arr.dtype.kind in "fc":
        return np.asarray(np.isnan(arr))
    return np.asarray(pd.isna(arr), dtype=bool)


def _check_no_missing(name: str, arr: NDArray[Any]) -> None:
    count = int(_missing(arr).sum())
    if count:
        raise InvalidInput(
            f"{name} has {count} missing value(s) (NaN/None); drop those rows or fill them "
            "before evaluating"
        )


def _sorted_labels(*arrays: NDArray[Any]) -> list[Any]:
    """Sorted distinct labels of the arrays (mixed types sort by type name, then text)."""
    values: list[Any] = []
    for arr in arrays:
        if arr.dtype.kind in "biufUS":
            values.extend(np.unique(arr).tolist())
        else:
            values.extend(pd.unique(pd.Series(arr, dtype=object)).tolist())
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=lambda v: (type(v).__name__, str(v)))


def _encode(name: str, arr: NDArray[Any], classes: list[Any]) -> IntArray:
    """Index of each value in ``classes``; unknown labels are an error."""
    cls = np.asarray(classes)
    codes: IntArray | None = None
    same_kind = (arr.dtype.kind in "biuf" and cls.dtype.kind in "biuf") or (
        arr.dtype.kind in "US" and cls.dtype.kind == arr.dtype.kind
    )
    if same_kind:
        order = np.argsort(cls, kind="stable")
        ordered = cls[order]
        pos = np.clip(np.searchsorted(ordered, arr), 0, len(ordered) - 1)
        found = ordered[pos] == arr
        codes = np.where(found, order[pos], -1).astype(np.int64)
    else:
        index = {c: i for i, c in enumerate(classes)}
        try:
            codes = np.fromiter((index.get(v, -1) for v in arr.tolist()), np.int64, len(arr))
        except TypeError:  # an unhashable label
            codes = np.full(len(arr), -1, np.int64)
    unknown = codes < 0
    if unknown.any():
        seen = _sorted_labels(arr[unknown])[:5]
        raise InvalidInput(
            f"{name} has label(s) {seen} that are not among the classes "
            f"{[str(c) for c in classes]}; pass classes= listing every label"
        )
    return codes


def _probabilities(y_proba: ArrayLike, n: int) -> FloatArray:
    try:
        proba = np.asarray(y_proba, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("y_proba must be numbers: probabilities in [0, 1]")
    if proba.ndim == 2 and proba.shape[1] == 1:
        proba = proba[:, 0]
    if proba.ndim not in (1, 2):
        raise InvalidInput(f"y_proba must have shape (n,) or (n, classes); got {proba.shape}")
    if len(proba) != n:
        raise InvalidInput(f"y_proba has {len(proba)} rows but y_true has {n}; pass one per row")
    ok = (proba >= 0.0) & (proba <= 1.0)
    if not ok.all():
        nan = int(np.isnan(proba).sum())
        finite = proba[np.isfinite(proba)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        raise InvalidInput(
            "y_proba must be probabilities in [0, 1]; found "
            + (f"{nan} NaN value(s)" if nan else f"values from {lo:g} to {hi:g}")
            + " (pass predict_proba's output, not raw scores or logits)"
        )
    return proba


def _prepare(
    task: str,
    y_true: ArrayLike,
    y_pred: ArrayLike | None,
    y_proba: ArrayLike | None,
    classes: Sequence[Any] | None,
    threshold: float,
) -> _Prepared:
    if task not in TASKS:
        raise InvalidInput(f"task must be one of {list(TASKS)}; got {task!r}")
    yt = _array_1d("y_true", y_true)
    n = len(yt)
    if n == 0:
        raise InvalidInput("y_true is empty: there is nothing to evaluate")
    _check_no_missing("y_true", yt)
    yp = None if y_pred is None else _array_1d("y_pred", y_pred)
    if yp is not None and len(yp) != n:
        raise InvalidInput(f"y_pred has {len(yp)} rows but y_true has {n}; pass one per row")
    notes: list[str] = []
    if task == "regression":
        return _prepare_regression(yt, yp, y_proba, classes, notes)
    if yp is None and y_proba is None:
        raise InvalidInput(f"a {task} evaluation needs y_pred or y_proba (or both)")
    if yp is not None:
        _check_no_missing("y_pred", yp)
    proba = None if y_proba is None else _probabilities(y_proba, n)

    cls = _resolve_classes(task, yt, yp, proba, classes)
    k = len(cls)
    prep = _Prepared(
        task=cast(Task, task), n=n, notes=notes, classes=cls, y=_encode("y_true", yt, cls)
    )
    if task == "binary":
        if proba is not None:
            if proba.ndim == 2 and proba.shape[1] != 2:
                raise InvalidInput(
                    f"y_proba has {proba.shape[1]} columns but a binary task has 2 classes "
                    f"{[str(c) for c in cls]}; pass (n,) positive-class scores or (n, 2)"
                )
            score = proba if proba.ndim == 1 else proba[:, 1]
            prep.score = np.ascontiguousarray(score)
            prep.threshold = threshold
            prep.pred = (prep.score >= threshold).astype(np.int64)
            if yp is not None:
                notes.append(
                    f"y_pred was not used: with y_proba, a binary prediction is "
                    f"y_proba >= threshold ({threshold:g})"
                )
        else:
            assert yp is not None
            prep.pred = _encode("y_pred", yp, cls)
        return prep

    if k == 2:
        notes.append("only two classes: task='binary' would add the threshold sweep and curves")
    if proba is not None:
        if proba.ndim != 2 or proba.shape[1] != k:
            cols = 1 if proba.ndim == 1 else proba.shape[1]
            raise InvalidInput(
                f"y_proba has {cols} column(s) but there are {k} classes "
                f"{[str(c) for c in cls]}; pass (n, {k}) probabilities in classes order"
            )
        sums = proba.sum(axis=1)
        worst = float(np.abs(sums - 1.0).max())
        if worst > 1e-6:
            notes.append(
                f"y_proba rows do not sum to 1 (off by up to {worst:.3g}); log loss and Brier "
                "use them as given"
            )
        prep.proba = proba
    if yp is not None:
        prep.pred = _encode("y_pred", yp, cls)
    else:
        assert proba is not None
        prep.pred = np.argmax(proba, axis=1).astype(np.int64)
    return prep


def _resolve_classes(
    task: str,
    yt: NDArray[Any],
    yp: NDArray[Any] | None,
    proba: FloatArray | None,
    classes: Sequence[Any] | None,
) -> list[Any]:
    if classes is not None:
        cls = list(classes)
        if len({str(c) for c in cls}) != len(cls):
            raise InvalidInput(f"classes has duplicates: {[str(c) for c in cls]}")
    else:
        cls = _sorted_labels(yt) if yp is None else _sorted_labels(yt, yp)
    if task == "binary" and len(cls) != 2:
        raise InvalidInput(
            f"a binary task needs exactly 2 classes; found {len(cls)}: "
            f"{[str(c) for c in cls][:10]}. "
            + (
                "Pass classes=[negative, positive] when only one label occurs"
                if len(cls) < 2
                else "Use task='multiclass'"
            )
        )
    if task == "multiclass" and len(cls) < 2:
        raise InvalidInput(
            f"a multiclass task needs at least 2 classes; found {[str(c) for c in cls]}. "
            "Pass classes= listing every label"
        )
    if (
        task == "multiclass"
        and classes is None
        and proba is not None
        and proba.ndim == 2
        and proba.shape[1] != len(cls)
    ):
        raise InvalidInput(
            f"y_proba has {proba.shape[1]} columns but {len(cls)} classes occur in "
            f"y_true/y_pred ({[str(c) for c in cls][:10]}); pass classes= in the column "
            "order of y_proba"
        )
    return cls


def _numeric(name: str, arr: NDArray[Any]) -> FloatArray:
    if arr.dtype.kind == "O" and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in arr.tolist()
    ):
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(
            f"a regression task needs numeric {name}; got values of type {arr.dtype} "
            f"(e.g. {arr[:3].tolist()}). Use task='binary' or 'multiclass' for labels"
        )
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInput(f"{name} has NaN or infinite values; drop or fill those rows")
    return values


def _prepare_regression(
    yt: NDArray[Any],
    yp: NDArray[Any] | None,
    y_proba: ArrayLike | None,
    classes: Sequence[Any] | None,
    notes: list[str],
) -> _Prepared:
    if yp is None:
        raise InvalidInput("a regression evaluation needs y_pred (the predicted values)")
    if y_proba is not None or classes is not None:
        notes.append("y_proba and classes are ignored for regression")
    return _Prepared(
        task="regression",
        n=len(yt),
        notes=notes,
        y_value=_numeric("y_true", yt),
        pred_value=_numeric("y_pred", yp),
    )


# ---- exact point metrics -------------------------------------------------------------------
def _divide(num: FloatArray, den: FloatArray) -> FloatArray:
    """num / den, 0 where den == 0 (scikit-learn's zero_division default)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _confusion_metrics(
    cm: FloatArray, *, binary: bool, present_only: bool = False
) -> dict[str, FloatArray]:
    """Count metrics of a batch of confusion matrices ``(B, k, k)`` (rows: true labels).

    Equal to scikit-learn's with ``labels=classes`` (tests check it); ``present_only``
    averages the macro metrics over classes that occur in y_true or y_pred, as
    scikit-learn does without ``labels`` (used for slices).
    """
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true = cm.sum(axis=2)
    pred = cm.sum(axis=1)
    n = cm.sum(axis=(1, 2))
    precision = _divide(tp, pred)
    recall = _divide(tp, true)
    f1 = _divide(2 * tp, true + pred)
    has_true = true > 0
    present = (true + pred) > 0 if present_only else np.ones_like(true, dtype=bool)
    n_present = present.sum(axis=1)
    out: dict[str, FloatArray] = {
        "accuracy": _divide(tp.sum(axis=1), n),
        "balanced_accuracy": _divide((recall * has_true).sum(axis=1), has_true.sum(axis=1)),
    }
    micro_p = _divide(tp.sum(axis=1), pred.sum(axis=1))
    micro_r = _divide(tp.sum(axis=1), true.sum(axis=1))
    for name, per in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = _divide((per * present).sum(axis=1), n_present)
        out[f"{name}_weighted"] = _divide((per * true).sum(axis=1), true.sum(axis=1))
    out["precision_micro"] = micro_p
    out["recall_micro"] = micro_r
    out["f1_micro"] = _divide(2 * micro_p * micro_r, micro_p + micro_r)
    # Matthews correlation, multiclass form (Gorodkin 2004), as scikit-learn computes it.
    cov_tp = tp.sum(axis=1) * n - (true * pred).sum(axis=1)
    cov_pp = n**2 - (pred * pred).sum(axis=1)
    cov_tt = n**2 - (true * true).sum(axis=1)
    out["mcc"] = _divide(cov_tp, np.sqrt(cov_tt * cov_pp))
    if binary:
        out["precision"] = precision[:, 1]
        out["recall"] = recall[:, 1]
        out["f1"] = f1[:, 1]
    return out


def _confusion(y: IntArray, pred: IntArray, k: int) -> FloatArray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)


@dataclass
class _Ranked:
    """Scores grouped by distinct value, highest first, with the positives/negatives at each."""

    scores: FloatArray
    pos: FloatArray
    neg: FloatArray
    index: IntArray | None = None  # each row's position in ``scores`` (when asked for)

    @property
    def n_pos(self) -> float:
        return float(self.pos.sum())

    @property
    def n_neg(self) -> float:
        return float(self.neg.sum())


def _rank(positive: BoolArray, score: FloatArray, *, index: bool = False) -> _Ranked:
    order = np.argsort(score)[::-1]
    s = score[order]
    new = s[1:] != s[:-1]
    last = np.r_[np.flatnonzero(new), len(s) - 1]
    tps = np.cumsum(positive[order])[last].astype(np.float64)
    rows = (last + 1).astype(np.float64)
    ranked = _Ranked(s[last], np.diff(tps, prepend=0.0), np.diff(rows - tps, prepend=0.0))
    if index:
        ranked.index = np.empty(len(s), np.int64)
        ranked.index[order] = np.r_[0, np.cumsum(new)]
    return ranked


def _auc_influence(ranked: _Ranked, positive: BoolArray) -> FloatArray:
    """Per-row influence of the AUC (its Hajek projection, scaled to a mean over rows).

    DeLong's structural components from the ranked counts: a positive's ``V10`` is the
    share of negatives scored below it (ties 1/2), a negative's ``V01`` the share of
    positives above it. The same values as ``_structural_components``, from the sort
    already done for the curve instead of three more.
    """
    assert ranked.index is not None
    n = len(positive)
    n_pos, n_neg = ranked.n_pos, ranked.n_neg
    auc = float(_auc_desc(ranked.pos, ranked.neg))
    v10 = (n_neg - np.cumsum(ranked.neg) + 0.5 * ranked.neg) / n_neg
    v01 = (np.cumsum(ranked.pos) - 0.5 * ranked.pos) / n_pos
    psi_pos = (v10 - auc) * n / n_pos
    psi_neg = (v01 - auc) * n / n_neg
    return np.asarray(np.where(positive, psi_pos[ranked.index], psi_neg[ranked.index]))


def _auc_desc(pos: FloatArray, neg: FloatArray) -> FloatArray:
    """ROC AUC from counts per score group, groups highest score first, along the last axis.

    A (positive, negative) pair in the same group counts 1/2, as a tie; NaN without both
    classes.
    """
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    below = n_neg[..., None] - np.cumsum(neg, axis=-1)
    num = (pos * (below + 0.5 * neg)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(n_pos * n_neg > 0, num / (n_pos * n_neg), np.nan))


def _ap_desc(pos: FloatArray, neg: FloatArray) -> FloatArray:
    """Average precision (scikit-learn's step-wise sum) from counts per score group."""
    tps, fps = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    precision = _divide(tps, tps + fps)
    n_pos = pos.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(n_pos > 0, (pos * precision).sum(axis=-1) / n_pos, np.nan))


def _structural_components(
    pos: FloatArray, neg: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """AUCs and DeLong's structural components for ``r`` score sets at once (Sun & Xu 2014).

    ``pos`` is ``(r, m)`` (scores of the positives), ``neg`` is ``(r, n)``. Returns
    ``(auc (r,), v10 (r, m), v01 (r, n))``: ``v10[i]`` is the share of negatives a positive
    beats (ties 1/2), ``v01[j]`` the share of positives that beat a negative. Midranks make
    it O((m + n) log(m + n)) instead of DeLong's O(m n) pairs.
    """
    m, n = pos.shape[1], neg.shape[1]
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    auc = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return np.asarray(auc), np.asarray(v10), np.asarray(v01)


def _downsample(xs: FloatArray, ys: FloatArray, limit: int = CURVE_POINTS) -> IntArray:
    """Indices of at most ``limit`` points spread evenly along the curve's length."""
    if len(xs) <= limit:
        return np.arange(len(xs))
    length = np.r_[0.0, np.cumsum(np.hypot(np.diff(xs), np.diff(ys)))]
    targets = np.linspace(0.0, length[-1], limit - 1)
    idx = np.unique(np.r_[np.searchsorted(length, targets), len(xs) - 1])
    return np.asarray(np.clip(idx, 0, len(xs) - 1))


def _floats(values: FloatArray) -> list[float]:
    return [float(v) for v in values]


def _roc_points(r: _Ranked) -> dict[str, list[float]]:
    tps, fps = np.cumsum(r.pos), np.cumsum(r.neg)
    fpr = np.r_[0.0, fps / r.n_neg]
    tpr = np.r_[0.0, tps / r.n_pos]
    thresholds = np.r_[np.nextafter(r.scores[0], np.inf), r.scores]
    idx = _downsample(fpr, tpr)
    return {
        "fpr": _floats(fpr[idx]),
        "tpr": _floats(tpr[idx]),
        "thresholds": _floats(thresholds[idx]),
    }


def _pr_points(r: _Ranked) -> dict[str, list[float]]:
    tps, fps = np.cumsum(r.pos), np.cumsum(r.neg)
    precision = np.r_[1.0, tps / (tps + fps)]
    recall = np.r_[0.0, tps / r.n_pos]
    thresholds = np.r_[np.nextafter(r.scores[0], np.inf), r.scores]
    idx = _downsample(recall, precision)
    return {
        "precision": _floats(precision[idx]),
        "recall": _floats(recall[idx]),
        "thresholds": _floats(thresholds[idx]),
    }


def _calibration(r: _Ranked) -> dict[str, list[float]]:
    """Reliability curve over 10 uniform score bins (empty bins left out)."""
    rows = r.pos + r.neg
    b = np.clip((r.scores * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
    count = np.bincount(b, weights=rows, minlength=CALIBRATION_BINS).astype(np.float64)
    mean_score = np.bincount(b, weights=rows * r.scores, minlength=CALIBRATION_BINS)
    positives = np.bincount(b, weights=r.pos, minlength=CALIBRATION_BINS)
    keep = count > 0
    return {
        "prob_pred": _floats(mean_score[keep] / count[keep]),
        "prob_true": _floats(positives[keep] / count[keep]),
        "count": _floats(count[keep]),
    }


def _sweep(r: _Ranked, n: int) -> list[dict[str, float]]:
    tps, fps = np.r_[0.0, np.cumsum(r.pos)], np.r_[0.0, np.cumsum(r.neg)]
    # number of distinct scores >= t (scores are descending, so -scores ascending)
    at = np.searchsorted(-r.scores, -SWEEP_THRESHOLDS, side="right")
    tp, fp = tps[at], fps[at]
    fn, tn = r.n_pos - tp, r.n_neg - fp
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    fpr = _divide(fp, fp + tn)
    rows = []
    for i, t in enumerate(SWEEP_THRESHOLDS):
        rows.append(
            {
                "threshold": float(t),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "accuracy": float((tp[i] + tn[i]) / n),
                "tpr": float(recall[i]),
                "fpr": float(fpr[i]),
                "predicted_positive_rate": float((tp[i] + fp[i]) / n),
            }
        )
    return rows


def _row_losses(prep: _Prepared) -> tuple[FloatArray, FloatArray] | None:
    """Per-row log loss and Brier score (scikit-learn's definitions), when there is proba."""
    if prep.score is not None:
        s = prep.score
        y = prep.y == 1
        p_true = np.clip(np.where(y, s, 1.0 - s), EPS, 1.0 - EPS)
        return -np.log(p_true), (s - y) ** 2
    if prep.proba is not None:
        rows = np.arange(prep.n)
        p = prep.proba[rows, prep.y]
        loss = -np.log(np.clip(p, EPS, 1.0 - EPS))
        brier = (prep.proba**2).sum(axis=1) - 2.0 * p + 1.0
        return loss, brier
    return None


# ---- bootstrap machinery -------------------------------------------------------------------
@dataclass
class _Cells:
    """Rows grouped into cells: row counts, and mean/covariance of per-row values per cell."""

    keys: IntArray  # (U,) sorted distinct cell keys
    counts: FloatArray  # (U,)
    means: FloatArray | None = None  # (U, d)
    covs: FloatArray | None = None  # (U, d, d), population covariance within the cell


def _cells(
    keys: IntArray, values: FloatArray | None = None, weights: FloatArray | None = None
) -> _Cells:
    """Group rows (or weighted distinct rows) by ``keys``; ``values`` is ``(m, d)``."""
    uniq, inv = np.unique(keys, return_inverse=True)
    w = np.ones(len(keys)) if weights is None else weights
    counts = np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.float64)
    cells = _Cells(keys=uniq, counts=counts)
    if values is None:
        return cells
    d = values.shape[1]
    means = (
        np.stack(
            [np.bincount(inv, weights=w * values[:, j], minlength=len(uniq)) for j in range(d)],
            axis=1,
        )
        / np.maximum(counts, 1e-300)[:, None]
    )
    dev = values - means[inv]
    covs = np.zeros((len(uniq), d, d))
    if len(uniq) < len(keys) or weights is not None:
        for a in range(d):
            for b in range(a, d):
                c = np.bincount(inv, weights=w * dev[:, a] * dev[:, b], minlength=len(uniq))
                covs[:, a, b] = covs[:, b, a] = c / np.maximum(counts, 1e-300)
    cells.means, cells.covs = means, covs
    return cells


def _resample(
    rng: np.random.Generator, cells: _Cells, n: int, b: int
) -> tuple[FloatArray, FloatArray | None]:
    """``b`` bootstrap resamples of ``n`` rows: cell counts ``(b, U)`` and value sums ``(b, d)``.

    The sums are exact in mean and covariance given the counts (see the module docstring).
    """
    nonzero = cells.counts > 0
    p = cells.counts[nonzero] / cells.counts[nonzero].sum()
    counts = np.zeros((b, len(cells.counts)))
    counts[:, nonzero] = rng.multinomial(n, p, size=b)
    if cells.means is None:
        return counts, None
    sums = counts @ cells.means
    if cells.covs is not None and np.any(cells.covs):
        d = cells.means.shape[1]
        cov = (counts @ cells.covs.reshape(len(cells.counts), d * d)).reshape(b, d, d)
        eigval, eigvec = np.linalg.eigh(cov)
        z = rng.standard_normal((b, d)) * np.sqrt(np.clip(eigval, 0.0, None))
        sums += np.einsum("bij,bj->bi", eigvec, z)
    return counts, sums


def _interval(replicates: FloatArray, confidence: float) -> tuple[float, float] | None:
    finite = replicates[np.isfinite(replicates)]
    if finite.size < max(2, replicates.size // 2):
        return None
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _score_bins(ranked: _Ranked, threshold: float) -> tuple[IntArray, BoolArray]:
    """Bin of each distinct score (highest first) and which bins are predicted positive.

    The distinct scores themselves when there are at most ``MAX_CELLS``; otherwise a bin
    ends wherever the positives seen so far cross a multiple of 1/1,024 of all positives,
    or the negatives of all negatives (at most 2,048 bins). Quantiles of each class rather
    than of all rows keep the bins fine where the rarer class is, which average precision
    needs. ``threshold`` is always a bin edge.
    """
    s = ranked.scores
    if len(s) <= MAX_CELLS:
        key = np.arange(len(s)) * 2
    else:
        per_class = MAX_CELLS // 2
        pos_above = np.cumsum(ranked.pos) - ranked.pos
        neg_above = np.cumsum(ranked.neg) - ranked.neg
        pos_q = (pos_above * per_class // max(ranked.n_pos, 1.0)).astype(np.int64)
        neg_q = (neg_above * per_class // max(ranked.n_neg, 1.0)).astype(np.int64)
        key = (pos_q * (per_class + 1) + neg_q) * 2  # both are non-decreasing
    key = key + (s < threshold)
    bin_of = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
    predicted = np.zeros(int(bin_of[-1]) + 1, dtype=bool)
    predicted[bin_of[s >= threshold]] = True
    return bin_of.astype(np.int64), predicted


def _bootstrap_binary(
    prep: _Prepared,
    ranked: _Ranked | None,
    exact: dict[str, float],
    b: int,
    rng: np.random.Generator,
) -> dict[str, FloatArray]:
    n = prep.n
    if ranked is None:  # labels only: the four confusion cells
        cells = _cells(prep.y * 2 + prep.pred)
        counts, _ = _resample(rng, cells, n, b)
        cells4 = np.zeros((b, 4))
        cells4[:, cells.keys] = counts
        m = _confusion_metrics(cells4.reshape(b, 2, 2), binary=True)
        return {"accuracy": m["accuracy"], "f1": m["f1"]}

    assert prep.threshold is not None
    t = prep.threshold
    s = ranked.scores
    bin_of, predicted = _score_bins(ranked, t)
    n_bins = len(predicted)

    # One entry per (distinct score, label) with its multiplicity and per-row values.
    clipped = np.clip(s, EPS, 1.0 - EPS)
    loss_pos, loss_neg = -np.log(clipped), -np.log(np.clip(1.0 - s, EPS, 1.0 - EPS))
    keys = np.r_[bin_of * 2 + 1, bin_of * 2]
    weights = np.r_[ranked.pos, ranked.neg]
    values = np.c_[np.r_[loss_pos, loss_neg], np.r_[(1.0 - s) ** 2, s**2]]
    keep = weights > 0
    cells = _cells(keys[keep], values[keep], weights[keep])
    counts, sums = _resample(rng, cells, n, b)
    assert sums is not None
    full = np.zeros((b, 2 * n_bins))
    full[:, cells.keys] = counts
    neg, pos = full[:, 0::2], full[:, 1::2]

    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    tp, fp = pos[:, predicted].sum(axis=1), neg[:, predicted].sum(axis=1)
    cm = np.stack([n_neg - fp, fp, n_pos - tp, tp], axis=1).reshape(b, 2, 2)
    m = _confusion_metrics(cm, binary=True)
    out = {"accuracy": m["accuracy"], "f1": m["f1"]}
    base = np.zeros(2 * n_bins)
    base[cells.keys] = cells.counts
    if "roc_auc" in exact:
        shift = exact["roc_auc"] - float(_auc_desc(base[1::2], base[0::2]))
        out["roc_auc"] = _auc_desc(pos, neg) + shift
    if "pr_auc" in exact:
        shift = exact["pr_auc"] - float(_ap_desc(base[1::2], base[0::2]))
        out["pr_auc"] = _ap_desc(pos, neg) + shift
    out["log_loss"] = sums[:, 0] / n
    out["brier"] = sums[:, 1] / n
    return out


def _bootstrap_multiclass(
    prep: _Prepared,
    included: list[int],
    psi: FloatArray | None,
    exact: dict[str, float],
    b: int,
    rng: np.random.Generator,
) -> dict[str, FloatArray]:
    """``psi``: per-row influence of the macro AUC, given when there are too many rows to
    resample the AUC exactly."""
    n, k = prep.n, prep.k
    cell_of = prep.y * k + prep.pred
    losses = _row_losses(prep)
    small = n <= MAX_CELLS
    auc_by_influence = losses is not None and psi is not None
    values: FloatArray | None = None
    if losses is not None:
        columns = [losses[0], losses[1]]
        if auc_by_influence:
            assert psi is not None
            columns.append(psi)
        values = np.stack(columns, axis=1)
    if values is None:
        keys = cell_of
    elif small:
        keys = np.arange(n, dtype=np.int64)
    else:  # (true, predicted) x quantile bins of the row's log loss
        per = max(1, MAX_CELLS // (k * k))
        qbin = np.empty(n, np.int64)
        qbin[np.argsort(values[:, 0], kind="stable")] = np.arange(n) * per // n
        keys = cell_of * per + qbin
    cells = _cells(keys, values)
    counts, sums = _resample(rng, cells, n, b)
    if values is None:
        cell_yk = cells.keys
    elif small:
        cell_yk = cell_of[cells.keys]
    else:
        cell_yk = cells.keys // max(1, MAX_CELLS // (k * k))
    # confusion counts: add up the cells of each (true, predicted) pair
    order = np.argsort(cell_yk, kind="stable")
    pairs = cell_yk[order]
    starts = np.r_[0, np.flatnonzero(pairs[1:] != pairs[:-1]) + 1]
    cm = np.zeros((b, k * k))
    cm[:, pairs[starts]] = np.add.reduceat(counts[:, order], starts, axis=1)
    m = _confusion_metrics(cm.reshape(b, k, k), binary=False)
    out = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"]}
    if sums is None:
        return out
    out["log_loss"] = sums[:, 0] / n
    out["brier"] = sums[:, 1] / n
    if "roc_auc" in exact and auc_by_influence:
        out["roc_auc"] = exact["roc_auc"] + sums[:, 2] / n
    elif "roc_auc" in exact and small:  # rows are cells: each resample's AUC exactly
        assert prep.proba is not None
        per_class = []
        for j in included:
            r_order = np.argsort(prep.proba[:, j])[::-1]
            s = prep.proba[r_order, j]
            starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
            w = counts[:, r_order]
            is_j = prep.y[r_order] == j
            pos = np.add.reduceat(w * is_j, starts, axis=1)
            neg = np.add.reduceat(w * ~is_j, starts, axis=1)
            per_class.append(_auc_desc(pos, neg))
        with np.errstate(invalid="ignore"):
            stacked = np.stack(per_class, axis=1)
            defined = np.isfinite(stacked)
            total = np.where(defined, stacked, 0.0).sum(axis=1)
            out["roc_auc"] = np.where(defined.any(axis=1), total / defined.sum(axis=1), np.nan)
    return out


def _bootstrap_regression(
    y: FloatArray, pred: FloatArray, b: int, rng: np.random.Generator
) -> dict[str, FloatArray]:
    n = len(y)
    r = y - pred
    yc = y - y.mean()
    values = np.stack([np.abs(r), r**2, yc, yc**2], axis=1)
    if n <= MAX_CELLS:
        keys = np.arange(n, dtype=np.int64)
    else:  # quantile bins of the residual
        keys = np.empty(n, np.int64)
        keys[np.argsort(r, kind="stable")] = np.arange(n) * MAX_CELLS // n
    _, sums = _resample(rng, _cells(keys, values), n, b)
    assert sums is not None
    ss_res = np.clip(sums[:, 1], 0.0, None)
    ss_tot = sums[:, 3] - sums[:, 2] ** 2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)
    return {"rmse": np.sqrt(ss_res / n), "mae": sums[:, 0] / n, "r2": r2}


# ---- slices --------------------------------------------------------------------------------
def _slice_groups(
    column: str, values: ArrayLike, n: int, notes: list[str]
) -> tuple[IntArray, list[str]]:
    """Group code per row (-1: not among the 50 most frequent values) and value labels."""
    arr = _array_1d(f"slices[{column!r}]", values)
    if len(arr) != n:
        raise InvalidInput(
            f"slices[{column!r}] has {len(arr)} values but y_true has {n}; pass one per row"
        )
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    counts = np.bincount(codes, minlength=len(uniques))
    top = np.argsort(-counts, kind="stable")[:MAX_SLICE_VALUES]
    if len(uniques) > MAX_SLICE_VALUES:
        notes.append(
            f"slices on {column!r}: the {MAX_SLICE_VALUES} most frequent of {len(uniques)} values"
        )
    remap = np.full(len(uniques), -1, np.int64)
    remap[top] = np.arange(len(top))
    labels = [MISSING if _is_missing(uniques[i]) else str(uniques[i]) for i in top]
    return remap[codes], labels


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _grouped_auc(
    group: IntArray, positive: BoolArray, score: FloatArray, n_groups: int
) -> FloatArray:
    """ROC AUC within each group at once (NaN where a group lacks either class)."""
    order = np.lexsort((score, group))
    g, s, y = group[order], score[order], positive[order]
    start = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]
    tie = np.cumsum(start) - 1
    tie_pos = np.bincount(tie, weights=y)
    tie_neg = np.bincount(tie, weights=~y)
    tie_group = g[start]
    neg_per_group = np.bincount(g, weights=~y, minlength=n_groups)
    pos_per_group = np.bincount(g, weights=y, minlength=n_groups)
    group_offset = np.cumsum(neg_per_group) - neg_per_group
    below = np.cumsum(tie_neg) - tie_neg - group_offset[tie_group]
    num = np.bincount(tie_group, weights=tie_pos * (below + 0.5 * tie_neg), minlength=n_groups)
    pairs = pos_per_group * neg_per_group
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(pairs > 0, num / pairs, np.nan))


def _slices(
    prep: _Prepared, slices: Mapping[str, ArrayLike], notes: list[str]
) -> list[SliceResult]:
    results: list[SliceResult] = []
    for column, values in slices.items():
        group, labels = _slice_groups(str(column), values, prep.n, notes)
        in_slice = group >= 0
        g = group[in_slice]
        n_groups = len(labels)
        sizes = np.bincount(g, minlength=n_groups)
        per_group: dict[str, FloatArray] = {}
        if prep.task == "regression":
            assert prep.y_value is not None and prep.pred_value is not None
            r = (prep.y_value - prep.pred_value)[in_slice]
            per_group["rmse"] = np.sqrt(np.bincount(g, weights=r**2, minlength=n_groups) / sizes)
            per_group["mae"] = np.bincount(g, weights=np.abs(r), minlength=n_groups) / sizes
        else:
            k = prep.k
            y, pred = prep.y[in_slice], prep.pred[in_slice]
            cm = np.bincount((g * k + y) * k + pred, minlength=n_groups * k * k)
            m = _confusion_metrics(
                cm.reshape(n_groups, k, k).astype(np.float64),
                binary=prep.task == "binary",
                present_only=prep.task != "binary",
            )
            per_group["accuracy"] = m["accuracy"]
            headline = HEADLINE[prep.task]
            per_group[headline] = m[headline]
            if prep.score is not None:
                per_group["roc_auc"] = _grouped_auc(g, y == 1, prep.score[in_slice], n_groups)
            elif prep.proba is not None:
                proba = prep.proba[in_slice]
                aucs = np.stack(
                    [_grouped_auc(g, y == j, proba[:, j], n_groups) for j in range(k)], axis=1
                )
                defined = np.isfinite(aucs)
                total = np.where(defined, aucs, 0.0).sum(axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    per_group["roc_auc"] = np.where(
                        defined.any(axis=1), total / defined.sum(axis=1), np.nan
                    )
        for i, label in enumerate(labels):
            metrics = {
                name: float(v[i]) for name, v in per_group.items() if math.isfinite(float(v[i]))
            }
            results.append(
                SliceResult(column=str(column), value=label, n=int(sizes[i]), metrics=metrics)
            )
    return results


def _worst(results: list[SliceResult], headline: str, min_rows: int) -> list[SliceResult]:
    eligible = [s for s in results if s.n >= min_rows and headline in s.metrics]
    sign = -1.0 if headline in LOWER_IS_BETTER else 1.0
    eligible.sort(key=lambda s: (sign * s.metrics[headline], -s.n))
    return eligible[:WORST_SLICES]


# ---- evaluation ----------------------------------------------------------------------------
def _check_options(
    threshold: float, bootstrap: int, confidence: float, min_slice_rows: int
) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold must be in [0, 1]; got {threshold}")
    if bootstrap < 0:
        raise InvalidInput(f"bootstrap must be 0 (no intervals) or a count; got {bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence must be between 0 and 1 (e.g. 0.95); got {confidence}")
    if min_slice_rows < 1:
        raise InvalidInput(f"min_slice_rows must be at least 1; got {min_slice_rows}")


def evaluate_predictions(
    task: Task,
    y_true: ArrayLike,
    *,
    y_pred: ArrayLike | None = None,
    y_proba: ArrayLike | None = None,
    classes: Sequence[Any] | None = None,
    threshold: float = 0.5,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    slices: Mapping[str, ArrayLike] | None = None,
    min_slice_rows: int = 30,
) -> EvaluationResult:
    """Evaluate predictions against the truth; see the module docstring for the methods.

    Classification takes ``y_pred`` (labels), ``y_proba`` ((n,) positive-class scores or
    (n, k) probabilities in ``classes`` order), or both; for binary with ``y_proba`` the
    prediction is ``y_proba >= threshold`` and the positive class is ``classes[1]``.
    Regression takes ``y_pred`` (values). ``bootstrap=0`` skips the intervals.

    ``slices`` maps a column name to one value per row; each of its 50 most frequent values
    (missing ones as ``"(missing)"``) gets accuracy and F1 (binary: the positive class;
    multiclass: macro over the classes that occur in the slice) and ROC AUC where the
    slice has both classes, or RMSE and MAE. ``worst_slices`` are the 5 worst on the
    headline metric among slices of at least ``min_slice_rows`` rows.
    """
    started = time.perf_counter()
    _check_options(threshold, bootstrap, confidence, min_slice_rows)
    prep = _prepare(task, y_true, y_pred, y_proba, classes, threshold)
    result = _evaluate(prep, bootstrap, confidence, seed, slices, min_slice_rows)
    result.elapsed_seconds = time.perf_counter() - started
    return result


def _evaluate(
    prep: _Prepared,
    bootstrap: int,
    confidence: float,
    seed: int,
    slices: Mapping[str, ArrayLike] | None,
    min_slice_rows: int,
) -> EvaluationResult:
    boot_seed, sample_seed = np.random.SeedSequence(seed).spawn(2)
    notes = prep.notes
    if prep.task == "regression":
        fields = _regression(prep, bootstrap, confidence, boot_seed, sample_seed)
    else:
        fields = _classification(prep, bootstrap, confidence, boot_seed)
    metrics: dict[str, float] = fields.pop("metrics")
    for name, value in list(metrics.items()):
        if not math.isfinite(value):
            notes.append(f"{name} is undefined on these rows and was left out")
            del metrics[name]
    headline = HEADLINE[prep.task]
    slice_results = _slices(prep, slices, notes) if slices else []
    return EvaluationResult(
        task=prep.task,
        n_rows=prep.n,
        metrics=metrics,
        slices=slice_results,
        worst_slices=_worst(slice_results, headline, min_slice_rows),
        notes=notes,
        headline=headline,
        elapsed_seconds=0.0,
        **fields,
    )


def _intervals(
    replicates: dict[str, FloatArray], confidence: float, notes: list[str]
) -> dict[str, tuple[float, float]]:
    out = {}
    for name, reps in replicates.items():
        bad = int((~np.isfinite(reps)).sum())
        ci = _interval(reps, confidence)
        if ci is None:
            notes.append(
                f"no interval for {name}: it is undefined in {bad} of {reps.size} bootstrap "
                "resamples (a class missing from them, or y_true constant)"
            )
            continue
        if bad:
            notes.append(
                f"{name} was undefined in {bad} of {reps.size} bootstrap resamples (a class "
                "missing from the resample); its interval uses the others"
            )
        out[name] = ci
    return out


def _classification(
    prep: _Prepared, bootstrap: int, confidence: float, boot_seed: np.random.SeedSequence
) -> dict[str, Any]:
    k, notes, binary = prep.k, prep.notes, prep.task == "binary"
    cm = _confusion(prep.y, prep.pred, k)
    point = _confusion_metrics(cm[None], binary=binary)
    metrics = {name: float(v[0]) for name, v in point.items()}
    labels = [str(c) for c in prep.classes]
    support = cm.sum(axis=1)
    precision = _divide(np.diagonal(cm), cm.sum(axis=0))
    recall = _divide(np.diagonal(cm), support)
    f1 = _divide(2 * np.diagonal(cm), support + cm.sum(axis=0))
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": float(support[i]),
        }
        for i, label in enumerate(labels)
    }
    fields: dict[str, Any] = {
        "classes": labels,
        "positive_class": labels[1] if binary else None,
        "threshold": prep.threshold,
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": cm.astype(np.int64).tolist()},
        "curves": {},
    }
    ranked: _Ranked | None = None
    included: list[int] = []
    psi: FloatArray | None = None  # influence of the macro AUC, for large multiclass
    losses = _row_losses(prep)
    if losses is not None:
        metrics["log_loss"] = float(losses[0].mean())
        metrics["brier"] = float(losses[1].mean())
    if prep.score is not None:
        ranked = _rank(prep.y == 1, prep.score)
        fields["threshold_sweep"] = _sweep(ranked, prep.n)
        fields["curves"]["calibration"] = _calibration(ranked)
        if ranked.n_pos > 0 and ranked.n_neg > 0:
            metrics["roc_auc"] = float(_auc_desc(ranked.pos, ranked.neg))
            metrics["pr_auc"] = float(_ap_desc(ranked.pos, ranked.neg))
            fields["curves"]["roc"] = _roc_points(ranked)
            fields["curves"]["pr"] = _pr_points(ranked)
        else:
            notes.append("roc_auc, pr_auc and their curves need both classes in y_true")
    elif prep.proba is not None:
        aucs, aps, roc = [], [], {}
        if bootstrap and prep.n > MAX_CELLS:
            psi = np.zeros(prep.n)
        for j, label in enumerate(labels):
            is_j = prep.y == j
            r = _rank(is_j, prep.proba[:, j], index=psi is not None)
            if r.n_pos == 0 or r.n_neg == 0:
                continue
            included.append(j)
            aucs.append(float(_auc_desc(r.pos, r.neg)))
            aps.append(float(_ap_desc(r.pos, r.neg)))
            roc[label] = {**_roc_points(r), "auc": aucs[-1]}
            if psi is not None:
                psi += _auc_influence(r, is_j)
        if len(included) < k:
            notes.append(
                f"roc_auc and pr_auc average the {len(included)} of {k} classes that occur in "
                "y_true (one-vs-rest needs positives and negatives)"
            )
        if included:
            metrics["roc_auc"] = float(np.mean(aucs))
            metrics["pr_auc"] = float(np.mean(aps))
            fields["curves"]["roc_ovr"] = roc
    if bootstrap:
        rng = np.random.default_rng(boot_seed)
        if binary:
            reps = _bootstrap_binary(prep, ranked, metrics, bootstrap, rng)
        else:
            if psi is not None and included:
                psi /= len(included)
            else:
                psi = None
            reps = _bootstrap_multiclass(prep, included, psi, metrics, bootstrap, rng)
        fields["intervals"] = _intervals(reps, confidence, notes)
    fields["metrics"] = metrics
    return fields


def _regression(
    prep: _Prepared,
    bootstrap: int,
    confidence: float,
    boot_seed: np.random.SeedSequence,
    sample_seed: np.random.SeedSequence,
) -> dict[str, Any]:
    assert prep.y_value is not None and prep.pred_value is not None
    y, pred, notes = prep.y_value, prep.pred_value, prep.notes
    metrics = {
        "rmse": float(skm.root_mean_squared_error(y, pred)),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "median_absolute_error": float(skm.median_absolute_error(y, pred)),
        "max_error": float(skm.max_error(y, pred)),
    }
    if prep.n >= 2:
        metrics["r2"] = float(skm.r2_score(y, pred))
        metrics["explained_variance"] = float(skm.explained_variance_score(y, pred))
    else:
        notes.append("r2 and explained_variance need at least 2 rows")
    nonzero = y != 0
    zeros = prep.n - int(nonzero.sum())
    if zeros < prep.n:
        metrics["mape"] = float(skm.mean_absolute_percentage_error(y[nonzero], pred[nonzero]))
    if zeros:
        notes.append(
            f"mape leaves out the {zeros} row(s) where y_true is 0 (a percentage of 0 is undefined)"
        )
    residual = y - pred
    edges = np.histogram_bin_edges(residual, bins="auto")
    if len(edges) > HISTOGRAM_BINS + 1:
        edges = np.histogram_bin_edges(residual, bins=HISTOGRAM_BINS)
    counts, edges = np.histogram(residual, bins=edges)
    rng = np.random.default_rng(sample_seed)
    take = np.sort(rng.choice(prep.n, size=min(prep.n, RESIDUAL_POINTS), replace=False))
    fields: dict[str, Any] = {
        "residuals": {
            "histogram": {"bins": _floats(edges), "counts": [int(c) for c in counts]},
            "points": np.c_[pred[take], y[take]].tolist(),
        },
        "metrics": metrics,
    }
    if bootstrap:
        reps = _bootstrap_regression(y, pred, bootstrap, np.random.default_rng(boot_seed))
        fields["intervals"] = _intervals(reps, confidence, notes)
    return fields
