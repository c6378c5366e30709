"""Paired comparisons of two models on the same rows: champion (a) vs challenger (b).

- ``delong_test``: are two ROC AUCs different? DeLong, DeLong & Clarke-Pearson (1988), with
  the midrank algorithm of Sun & Xu (2014): O(n log n) instead of comparing every
  (positive, negative) pair. Two-sided.
- ``mcnemar_test``: are two classifiers' error rates different? Only rows where exactly one
  is right count. Exact binomial test with fewer than 25 such rows, else chi-square with
  continuity correction.
- ``paired_bootstrap``: any metric; the same resampled rows score both models, so the
  difference's interval accounts for the correlation between them.
- ``compare_predictions``: all of the above that apply to the task, and a verdict.

Every difference is **b minus a** (challenger minus champion).

The verdict follows the paired bootstrap of the *headline* metric (F1 for binary, macro F1
for multiclass, RMSE for regression), the same metric ``evaluate_predictions`` headlines,
so the comparison never contradicts the evaluation page. For binary tasks the DeLong test
on ROC AUC is reported next to it as a threshold-free check, but does not decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel
from scipy import stats as sps

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.metrics import (
    HEADLINE,
    LOWER_IS_BETTER,
    MAX_CELLS,
    Task,
    _array_1d,
    _cells,
    _confusion_metrics,
    _evaluate,
    _prepare,
    _Prepared,
    _resample,
    _sorted_labels,
    _structural_components,
)

FloatArray = NDArray[np.float64]
Verdict = Literal["challenger_better", "champion_better", "no_significant_difference"]
MCNEMAR_EXACT_BELOW = 25


class DeLongResult(BaseModel):
    auc_a: float
    auc_b: float
    diff: float  # auc_b - auc_a
    z: float
    p_value: float
    variance: float  # of the difference


class McNemarResult(BaseModel):
    a_only_correct: int
    b_only_correct: int
    statistic: float  # exact: the smaller discordant count; else the chi-square statistic
    p_value: float
    exact: bool


class PairedBootstrapResult(BaseModel):
    diff: float  # metric(b) - metric(a) on all rows
    ci_low: float
    ci_high: float
    p_value: float


class TestResult(BaseModel):
    __test__: ClassVar[bool] = False  # not a pytest class, whatever its name

    name: str
    metric: str
    champion: float
    challenger: float
    diff: float
    statistic: float | None = None
    p_value: float
    ci_low: float | None = None
    ci_high: float | None = None


class ComparisonResult(BaseModel):
    task: Task
    n_rows: int
    headline: str
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    tests: list[TestResult]
    verdict: Verdict
    p_value: float
    summary: str
    alpha: float


# ---- the tests -----------------------------------------------------------------------------
def _binary_truth(y_true: ArrayLike, n_expected: int | None = None) -> NDArray[np.bool_]:
    y = _array_1d("y_true", y_true)
    if n_expected is not None and len(y) != n_expected:
        raise InvalidInput(f"y_true has {len(y)} rows but the scores have {n_expected}")
    labels = _sorted_labels(y)
    if len(labels) != 2:
        raise InvalidInput(
            f"the DeLong test needs y_true with exactly two classes; found {len(labels)}: "
            f"{[str(v) for v in labels][:10]}"
        )
    return np.asarray(y == labels[1])


def _scores(name: str, values: ArrayLike, n: int) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be numeric scores")
    if arr.ndim != 1 or len(arr) != n:
        raise InvalidInput(f"{name} must have one score per row ({n}); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{name} has NaN or infinite scores")
    return arr


def delong_test(y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> DeLongResult:
    """Two-sided DeLong test of ROC AUC, paired (same rows); the positive class is the
    larger of y_true's two labels (``True``, ``1``, or the later in sort order)."""
    positive = _binary_truth(y_true)
    n = len(positive)
    scores = np.stack([_scores("score_a", score_a, n), _scores("score_b", score_b, n)])
    m, k = int(positive.sum()), int((~positive).sum())
    if m < 2 or k < 2:
        raise InvalidInput("the DeLong test needs at least 2 positives and 2 negatives")
    auc, v10, v01 = _structural_components(scores[:, positive], scores[:, ~positive])
    cov = np.cov(v10) / m + np.cov(v01) / k
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(auc[1] - auc[0])
    if variance > 0:
        z = diff / math.sqrt(variance)
        p = float(2 * sps.norm.sf(abs(z)))
    else:  # both models' components are constant: no variation left to test against
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    return DeLongResult(
        auc_a=float(auc[0]),
        auc_b=float(auc[1]),
        diff=diff,
        z=z,
        p_value=p,
        variance=max(variance, 0.0),
    )


def _equal(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.bool_]:
    try:
        out = np.asarray(a == b)
        if out.shape == a.shape:
            return out.astype(bool)
    except (TypeError, ValueError):
        pass
    return np.array([x == y for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=bool)


def mcnemar_test(
    y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, exact: bool | None = None
) -> McNemarResult:
    """McNemar's test of paired predictions. ``exact=None`` picks the exact binomial test
    below 25 discordant rows; the chi-square statistic is ``max(|b - c| - 1, 0)^2 / (b + c)``
    (continuity correction, never past zero)."""
    y = _array_1d("y_true", y_true)
    a = _array_1d("pred_a", pred_a)
    b = _array_1d("pred_b", pred_b)
    if not len(y) == len(a) == len(b):
        raise InvalidInput(
            f"y_true, pred_a and pred_b need the same rows; got {len(y)}, {len(a)}, {len(b)}"
        )
    if len(y) == 0:
        raise InvalidInput("y_true is empty: there is nothing to compare")
    right_a, right_b = _equal(a, y), _equal(b, y)
    a_only = int((right_a & ~right_b).sum())
    b_only = int((right_b & ~right_a).sum())
    discordant = a_only + b_only
    use_exact = discordant < MCNEMAR_EXACT_BELOW if exact is None else exact
    if discordant == 0:
        return McNemarResult(
            a_only_correct=0, b_only_correct=0, statistic=0.0, p_value=1.0, exact=use_exact
        )
    if use_exact:
        p = float(sps.binomtest(b_only, discordant, 0.5).pvalue)
        statistic = float(min(a_only, b_only))
    else:
        statistic = max(abs(a_only - b_only) - 1, 0) ** 2 / discordant
        p = float(sps.chi2.sf(statistic, df=1))
    return McNemarResult(
        a_only_correct=a_only,
        b_only_correct=b_only,
        statistic=statistic,
        p_value=min(p, 1.0),
        exact=use_exact,
    )


def _bootstrap_p(diffs: FloatArray) -> float:
    """Two-sided p-value of 'no difference' from resampled differences: twice the smaller
    tail at 0, with one added to each count so that it is never exactly 0."""
    b = diffs.size
    below = int((diffs <= 0).sum())
    above = int((diffs >= 0).sum())
    return min(1.0, 2.0 * (min(below, above) + 1) / (b + 1))


def _percentiles(diffs: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [tail, 1.0 - tail])
    return float(lo), float(hi)


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Bootstrap ``metric(y, b) - metric(y, a)``, both on the same resampled rows.

    ``metric`` is any function of (y_true, predictions), e.g. ``sklearn.metrics.f1_score``;
    it is called twice per resample on resampled arrays (O(resamples x rows): for large
    inputs ``compare_predictions`` uses cell counts instead).
    """
    y = np.asarray(y_true)
    pa, pb = np.asarray(a), np.asarray(b)
    n = len(y)
    if n == 0:
        raise InvalidInput("y_true is empty: there is nothing to compare")
    if len(pa) != n or len(pb) != n:
        raise InvalidInput(f"a and b need one prediction per row ({n}); got {len(pa)}, {len(pb)}")
    _check_resampling(n_resamples, confidence)
    diff = float(metric(y, pb)) - float(metric(y, pa))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        diffs[i] = float(metric(y[idx], pb[idx])) - float(metric(y[idx], pa[idx]))
    finite = diffs[np.isfinite(diffs)]
    if finite.size < 2:
        raise InvalidInput("the metric was undefined on the resamples; check its inputs")
    lo, hi = _percentiles(finite, confidence)
    return PairedBootstrapResult(diff=diff, ci_low=lo, ci_high=hi, p_value=_bootstrap_p(finite))


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if n_resamples < 10:
        raise InvalidInput(f"n_resamples must be at least 10; got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence must be between 0 and 1; got {confidence}")


# ---- fast paired bootstraps of the headline metrics ---------------------------------------
def _paired_headline_classification(
    a: _Prepared, b: _Prepared, n_resamples: int, rng: np.random.Generator
) -> FloatArray:
    """Resampled F1 (binary) / macro F1 differences, exact via (true, pred a, pred b) cells."""
    k = a.k
    cells = _cells((a.y * k + a.pred) * k + b.pred)
    counts, _ = _resample(rng, cells, a.n, n_resamples)
    flat = np.zeros((n_resamples, k * k * k))
    flat[:, cells.keys] = counts
    joint = flat.reshape(n_resamples, k, k, k)
    name = HEADLINE[a.task]
    binary = a.task == "binary"
    metric_a = _confusion_metrics(joint.sum(axis=3), binary=binary)[name]
    metric_b = _confusion_metrics(joint.sum(axis=2), binary=binary)[name]
    return np.asarray(metric_b - metric_a)


def _paired_rmse(
    a: _Prepared, b: _Prepared, n_resamples: int, rng: np.random.Generator
) -> FloatArray:
    """Resampled RMSE differences: means of squared errors over cells (see metrics.py)."""
    assert a.y_value is not None and a.pred_value is not None and b.pred_value is not None
    sq = np.stack([(a.y_value - a.pred_value) ** 2, (a.y_value - b.pred_value) ** 2], axis=1)
    n = a.n
    if n <= MAX_CELLS:
        keys = np.arange(n, dtype=np.int64)
    else:  # quantile bins of the per-row difference
        keys = np.empty(n, np.int64)
        keys[np.argsort(sq[:, 1] - sq[:, 0], kind="stable")] = np.arange(n) * MAX_CELLS // n
    _, sums = _resample(rng, _cells(keys, sq), n, n_resamples)
    assert sums is not None
    rmse = np.sqrt(np.clip(sums, 0.0, None) / n)
    return np.asarray(rmse[:, 1] - rmse[:, 0])


def _side(name: str, side: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(side, Mapping):
        raise InvalidInput(f"{name} must be a dict with y_pred and/or y_proba")
    unknown = set(side) - {"y_pred", "y_proba"}
    if unknown:
        raise InvalidInput(f"{name} has unknown key(s) {sorted(unknown)}; use y_pred, y_proba")
    if side.get("y_pred") is None and side.get("y_proba") is None:
        raise InvalidInput(f"{name} needs y_pred or y_proba")
    return {"y_pred": side.get("y_pred"), "y_proba": side.get("y_proba")}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def compare_predictions(
    task: Task,
    y_true: ArrayLike,
    *,
    champion: Mapping[str, Any],
    challenger: Mapping[str, Any],
    classes: Sequence[Any] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> ComparisonResult:
    """Compare two models' predictions on the same rows; see the module docstring.

    ``champion`` and ``challenger`` are ``{"y_pred": ..., "y_proba": ...}`` (either or both,
    as for ``evaluate_predictions``). Runs McNemar on accuracy (classification), DeLong on
    ROC AUC (binary, both with ``y_proba``) and a paired bootstrap of the headline metric,
    which decides the verdict at ``alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be between 0 and 1 (e.g. 0.05); got {alpha}")
    _check_resampling(n_resamples, 1.0 - alpha)
    champ, chall = _side("champion", champion), _side("challenger", challenger)
    if task != "regression" and classes is None:
        arrays = [_array_1d("y_true", y_true)]
        arrays += [
            _array_1d("y_pred", s["y_pred"]) for s in (champ, chall) if s["y_pred"] is not None
        ]
        try:
            classes = _sorted_labels(*arrays)
        except (TypeError, ValueError):
            classes = None  # _prepare says what is wrong
    a = _prepare(task, y_true, champ["y_pred"], champ["y_proba"], classes, threshold)
    b = _prepare(task, y_true, chall["y_pred"], chall["y_proba"], classes, threshold)
    if a.task != "regression" and a.classes != b.classes:
        raise InvalidInput("champion and challenger resolve to different classes; pass classes=")
    metrics_a = _evaluate(a, 0, 0.95, seed, None, 1).metrics
    metrics_b = _evaluate(b, 0, 0.95, seed, None, 1).metrics
    headline = HEADLINE[a.task]
    tests: list[TestResult] = []

    if a.task != "regression":
        mc = mcnemar_test(a.y, a.pred, b.pred)
        tests.append(
            TestResult(
                name="mcnemar",
                metric="accuracy",
                champion=metrics_a["accuracy"],
                challenger=metrics_b["accuracy"],
                diff=metrics_b["accuracy"] - metrics_a["accuracy"],
                statistic=mc.statistic,
                p_value=mc.p_value,
            )
        )
    n_pos = int((a.y == 1).sum())
    if a.score is not None and b.score is not None and min(n_pos, a.n - n_pos) >= 2:
        dl = delong_test(a.y == 1, a.score, b.score)
        half = sps.norm.ppf(1 - alpha / 2) * math.sqrt(dl.variance)
        tests.append(
            TestResult(
                name="delong",
                metric="roc_auc",
                champion=dl.auc_a,
                challenger=dl.auc_b,
                diff=dl.diff,
                statistic=dl.z if math.isfinite(dl.z) else None,
                p_value=dl.p_value,
                ci_low=dl.diff - half,
                ci_high=dl.diff + half,
            )
        )

    rng = np.random.default_rng(seed)
    if a.task == "regression":
        diffs = _paired_rmse(a, b, n_resamples, rng)
    else:
        diffs = _paired_headline_classification(a, b, n_resamples, rng)
    lo, hi = _percentiles(diffs, 1.0 - alpha)
    p = _bootstrap_p(diffs)
    champion_value = metrics_a.get(headline, math.nan)
    challenger_value = metrics_b.get(headline, math.nan)
    diff = challenger_value - champion_value
    tests.append(
        TestResult(
            name="paired_bootstrap",
            metric=headline,
            champion=champion_value,
            challenger=challenger_value,
            diff=diff,
            p_value=p,
            ci_low=lo,
            ci_high=hi,
        )
    )

    better = -diff if headline in LOWER_IS_BETTER else diff
    verdict: Verdict
    if p < alpha and better > 0:
        verdict = "challenger_better"
    elif p < alpha and better < 0:
        verdict = "champion_better"
    else:
        verdict = "no_significant_difference"
    numbers = (
        f"{_fmt(challenger_value)} vs {_fmt(champion_value)} (difference {diff:+.4g}, "
        f"{1 - alpha:.0%} CI [{_fmt(lo)}, {_fmt(hi)}]; paired bootstrap p = {p:.3g}, "
        f"{n_resamples:,} resamples)"
    )
    if verdict == "challenger_better":
        summary = f"The challenger is better on {headline}: {numbers}."
    elif verdict == "champion_better":
        summary = f"The champion is better on {headline}: challenger {numbers}."
    else:
        summary = (
            f"No significant difference in {headline} at alpha = {alpha:g}: challenger {numbers}."
        )
    return ComparisonResult(
        task=a.task,
        n_rows=a.n,
        headline=headline,
        champion_metrics=metrics_a,
        challenger_metrics=metrics_b,
        tests=tests,
        verdict=verdict,
        p_value=p,
        summary=summary,
        alpha=alpha,
    )
