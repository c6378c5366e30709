"""Paired comparisons: DeLong against the original pairwise computation, McNemar against
hand computations, the paired bootstrap, and compare_predictions' verdicts."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.stats import (
    ComparisonResult,
    compare_predictions,
    delong_test,
    mcnemar_test,
    paired_bootstrap,
)


def delong_1988(y: Any, score_a: Any, score_b: Any) -> tuple[float, float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) as published: every (positive, negative) pair.

    Returns (auc_a, auc_b, two-sided p of auc_b - auc_a)."""

    def psi(x: float, z: float) -> float:
        return 1.0 if x > z else 0.5 if x == z else 0.0

    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)
    v10, v01, aucs = [], [], []
    for s in (score_a, score_b):
        v10.append([sum(psi(s[i], s[j]) for j in neg) / n for i in pos])
        v01.append([sum(psi(s[i], s[j]) for i in pos) / m for j in neg])
        aucs.append(sum(v10[-1]) / m)

    def cov(v: list[list[float]], r: int, s: int) -> float:
        mr, ms = sum(v[r]) / len(v[r]), sum(v[s]) / len(v[s])
        return sum((a - mr) * (b - ms) for a, b in zip(v[r], v[s], strict=True)) / (len(v[r]) - 1)

    s10 = [[cov(v10, r, s) for s in range(2)] for r in range(2)]
    s01 = [[cov(v01, r, s) for s in range(2)] for r in range(2)]
    var = (s10[0][0] + s10[1][1] - 2 * s10[0][1]) / m + (s01[0][0] + s01[1][1] - 2 * s01[0][1]) / n
    z = (aucs[1] - aucs[0]) / math.sqrt(var)
    return aucs[0], aucs[1], math.erfc(abs(z) / math.sqrt(2))


# ---- DeLong --------------------------------------------------------------------------------
def test_delong_equals_the_original_pairwise_computation() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    # rounded scores: ties within and across classes, as real scores have
    score_a = np.round(y * 0.6 + rng.normal(size=60), 1)
    score_b = np.round(y * 1.4 + rng.normal(size=60), 1)
    result = delong_test(y, score_a, score_b)
    auc_a, auc_b, p = delong_1988(y, score_a, score_b)
    assert result.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert result.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert result.auc_a == pytest.approx(skm.roc_auc_score(y, score_a), abs=1e-12)
    assert result.diff == pytest.approx(auc_b - auc_a, abs=1e-12)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert 0.0001 < result.p_value < 0.2  # a case where the value matters


def test_delong_on_a_small_hand_sized_case() -> None:
    y = [1, 1, 1, 0, 0, 0, 0]
    score_a = [0.9, 0.4, 0.7, 0.5, 0.2, 0.7, 0.1]
    score_b = [0.8, 0.6, 0.9, 0.3, 0.2, 0.1, 0.4]
    result = delong_test(y, score_a, score_b)
    # a: positives beat 4, 2, 3.5 of the 4 negatives -> 9.5 / 12; b: all 12 pairs right
    assert result.auc_a == pytest.approx(9.5 / 12)
    assert result.auc_b == 1.0
    assert result.p_value == pytest.approx(delong_1988(y, score_a, score_b)[2], rel=1e-9)


def test_delong_identical_models_and_a_clearly_better_one() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    weak = y * 0.3 + rng.normal(size=3000)
    strong = y * 2.0 + rng.normal(size=3000)
    same = delong_test(y, weak, weak)
    assert same.diff == 0.0 and same.z == 0.0 and same.p_value == 1.0
    better = delong_test(y, weak, strong)
    assert better.diff > 0.3
    assert better.z > 10 and better.p_value < 1e-20
    worse = delong_test(y, strong, weak)
    assert worse.z == pytest.approx(-better.z) and worse.p_value == better.p_value


def test_delong_bad_input() -> None:
    with pytest.raises(InvalidInput, match=r"exactly two classes"):
        delong_test([0, 1, 2], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(InvalidInput, match=r"score_b must have one score per row"):
        delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2])
    with pytest.raises(InvalidInput, match=r"at least 2 positives and 2 negatives"):
        delong_test([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])


# ---- McNemar -------------------------------------------------------------------------------
def paired_outcomes(both: int, a_only: int, b_only: int, neither: int) -> tuple[Any, Any, Any]:
    y = np.zeros(both + a_only + b_only + neither, int)
    a = np.r_[np.zeros(both + a_only, int), np.ones(b_only + neither, int)]
    b = np.r_[np.zeros(both, int), np.ones(a_only, int), np.zeros(b_only, int), np.ones(neither)]
    return y, a, b


def test_mcnemar_exact_by_hand() -> None:
    y, a, b = paired_outcomes(50, 10, 3, 7)
    result = mcnemar_test(y, a, b)
    assert (result.a_only_correct, result.b_only_correct) == (10, 3)
    assert result.exact
    # two-sided exact binomial: 2 * P(X <= 3), X ~ Binomial(13, 1/2)
    by_hand = 2 * sum(math.comb(13, i) for i in range(4)) / 2**13
    assert result.p_value == pytest.approx(by_hand, rel=1e-12)
    assert result.p_value == pytest.approx(sps.binomtest(3, 13, 0.5).pvalue, rel=1e-12)
    assert result.statistic == 3


def test_mcnemar_chi_square_by_hand() -> None:
    y, a, b = paired_outcomes(200, 40, 20, 30)
    result = mcnemar_test(y, a, b)
    assert not result.exact
    statistic = (abs(40 - 20) - 1) ** 2 / 60  # continuity-corrected
    assert result.statistic == pytest.approx(statistic)
    # chi-square with one degree of freedom: P(X > s) = erfc(sqrt(s / 2))
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-12)
    forced = mcnemar_test(y, a, b, exact=True)
    assert forced.exact
    assert forced.p_value == pytest.approx(sps.binomtest(20, 60, 0.5).pvalue)


def test_mcnemar_identical_and_string_labels() -> None:
    y = np.array(["cat", "dog", "cat", "emu"] * 10)
    pred = np.array(["cat", "cat", "cat", "emu"] * 10)
    same = mcnemar_test(y, pred, pred)
    assert same.p_value == 1.0 and same.a_only_correct == same.b_only_correct == 0
    better = mcnemar_test(y, pred, y)
    assert (better.a_only_correct, better.b_only_correct) == (0, 10)
    assert better.p_value == pytest.approx(2 / 2**10)
    with pytest.raises(InvalidInput, match=r"need the same rows"):
        mcnemar_test(y, pred[:3], pred)


# ---- paired bootstrap ----------------------------------------------------------------------
def accuracy(y: Any, pred: Any) -> float:
    return float(np.mean(y == pred))


def f1_at_half(y: Any, score: Any) -> float:
    pred = score >= 0.5
    tp = np.sum(pred & (y == 1))
    return float(2 * tp / (pred.sum() + (y == 1).sum()))


def rmse(y: Any, pred: Any) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def test_paired_bootstrap_identical_and_better() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    a = np.where(rng.random(400) < 0.3, 1 - y, y)
    same = paired_bootstrap(accuracy, y, a, a, n_resamples=200)
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    b = np.where(rng.random(400) < 0.05, 1 - y, y)
    better = paired_bootstrap(accuracy, y, a, b, n_resamples=200, seed=3)
    assert better.diff == pytest.approx(skm.accuracy_score(y, b) - skm.accuracy_score(y, a))
    assert better.ci_low < better.diff < better.ci_high
    assert better.ci_low > 0.15
    assert better.p_value == pytest.approx(2 / 201)  # no resample at or below 0
    again = paired_bootstrap(accuracy, y, a, b, n_resamples=200, seed=3)
    assert again == better


# ---- compare_predictions -------------------------------------------------------------------
def binary_models(n: int, seed: int) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    weak = 1 / (1 + np.exp(-(0.8 * (y - 0.5) + rng.normal(size=n))))
    strong = 1 / (1 + np.exp(-(4.0 * (y - 0.5) + rng.normal(size=n))))
    return y, weak, strong


def test_compare_binary_identical_models() -> None:
    y, weak, _ = binary_models(1000, 4)
    result = compare_predictions(
        "binary", y, champion={"y_proba": weak}, challenger={"y_proba": weak}, n_resamples=300
    )
    assert result.verdict == "no_significant_difference"
    assert result.p_value == 1.0
    assert [t.name for t in result.tests] == ["mcnemar", "delong", "paired_bootstrap"]
    assert all(t.p_value == 1.0 and t.diff == 0.0 for t in result.tests)
    assert result.champion_metrics == result.challenger_metrics
    assert "No significant difference in f1" in result.summary and "p = 1" in result.summary


def test_compare_binary_clearly_better_challenger() -> None:
    y, weak, strong = binary_models(1000, 5)
    result = compare_predictions(
        "binary", y, champion={"y_proba": weak}, challenger={"y_proba": strong}, n_resamples=500
    )
    assert result.verdict == "challenger_better"
    assert result.headline == "f1"
    assert result.p_value < 0.01
    tests = {t.name: t for t in result.tests}
    boot = tests["paired_bootstrap"]
    assert boot.champion == pytest.approx(skm.f1_score(y, weak >= 0.5))
    assert boot.challenger == pytest.approx(skm.f1_score(y, strong >= 0.5))
    assert boot.ci_low is not None and boot.ci_high is not None
    assert 0 < boot.ci_low < boot.diff < boot.ci_high
    assert tests["delong"].diff == pytest.approx(
        skm.roc_auc_score(y, strong) - skm.roc_auc_score(y, weak)
    )
    assert tests["delong"].p_value < 1e-10
    assert tests["mcnemar"].p_value < 1e-10
    assert result.summary.startswith("The challenger is better on f1:")
    assert f"p = {result.p_value:.3g}" in result.summary
    swapped = compare_predictions(
        "binary", y, champion={"y_proba": strong}, challenger={"y_proba": weak}, n_resamples=500
    )
    assert swapped.verdict == "champion_better"
    assert ComparisonResult.model_validate(json.loads(result.model_dump_json())) == result


def test_compare_bootstrap_agrees_with_the_plain_paired_bootstrap() -> None:
    y, weak, _ = binary_models(600, 6)
    rng = np.random.default_rng(6)
    other = np.clip(weak + rng.normal(0, 0.15, 600), 0, 1)
    result = compare_predictions(
        "binary", y, champion={"y_proba": weak}, challenger={"y_proba": other}, n_resamples=2000
    )
    boot = next(t for t in result.tests if t.name == "paired_bootstrap")
    plain = paired_bootstrap(f1_at_half, y, weak, other, n_resamples=1000, seed=1)
    assert boot.diff == pytest.approx(plain.diff, abs=1e-12)
    assert boot.ci_low is not None and boot.ci_high is not None
    assert boot.ci_high - boot.ci_low == pytest.approx(plain.ci_high - plain.ci_low, rel=0.2)


def test_compare_multiclass_labels() -> None:
    rng = np.random.default_rng(7)
    y = rng.choice(["a", "b", "c"], 900)
    good = np.where(rng.random(900) < 0.9, y, "a")
    bad = np.where(rng.random(900) < 0.5, y, "b")
    result = compare_predictions(
        "multiclass", y, champion={"y_pred": bad}, challenger={"y_pred": good}, n_resamples=300
    )
    assert result.headline == "f1_macro"
    assert [t.name for t in result.tests] == ["mcnemar", "paired_bootstrap"]
    assert result.verdict == "challenger_better"
    boot = result.tests[-1]
    assert boot.challenger == pytest.approx(skm.f1_score(y, good, average="macro"))


@pytest.mark.parametrize("n", [500, 5000])  # rows as cells; binned squared errors
def test_compare_regression(n: int) -> None:
    rng = np.random.default_rng(8)
    y = rng.normal(size=n)
    close = y + rng.normal(0, 0.5, n)
    far = y + rng.normal(0, 0.8, n)
    result = compare_predictions(
        "regression", y, champion={"y_pred": far}, challenger={"y_pred": close}, n_resamples=500
    )
    assert [t.name for t in result.tests] == ["paired_bootstrap"]
    boot = result.tests[0]
    assert boot.diff == pytest.approx(
        skm.root_mean_squared_error(y, close) - skm.root_mean_squared_error(y, far)
    )
    assert boot.ci_low is not None and boot.ci_high is not None
    assert boot.ci_low < boot.diff < boot.ci_high < 0
    assert result.verdict == "challenger_better"
    # the interval's width matches a plain paired bootstrap of the RMSE difference
    plain = paired_bootstrap(rmse, y, far, close, n_resamples=1000)
    assert boot.ci_high - boot.ci_low == pytest.approx(plain.ci_high - plain.ci_low, rel=0.2)
    same = compare_predictions(
        "regression", y, champion={"y_pred": far}, challenger={"y_pred": far}, n_resamples=100
    )
    assert same.verdict == "no_significant_difference" and same.p_value == 1.0


def test_compare_bad_input() -> None:
    y = [0, 1, 0, 1]
    with pytest.raises(InvalidInput, match=r"unknown key\(s\) \['proba'\]"):
        compare_predictions("binary", y, champion={"proba": y}, challenger={"y_pred": y})
    with pytest.raises(InvalidInput, match=r"champion needs y_pred or y_proba"):
        compare_predictions("binary", y, champion={}, challenger={"y_pred": y})
    with pytest.raises(InvalidInput, match=r"alpha must be between 0 and 1"):
        compare_predictions("binary", y, champion={"y_pred": y}, challenger={"y_pred": y}, alpha=5)
    with pytest.raises(InvalidInput, match=r"y_pred has 3 rows"):
        compare_predictions("binary", y, champion={"y_pred": y}, challenger={"y_pred": y[:3]})
