"""evaluate_predictions: exact point metrics against scikit-learn, bootstrap intervals
against a plain row bootstrap, curves, slices, the JSON round trip and bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.metrics import (
    MISSING,
    EvaluationResult,
    _ap_desc,
    _auc_desc,
    _auc_influence,
    _rank,
    _score_bins,
    _structural_components,
    evaluate_predictions,
)

Z95 = 1.959963984540054


def binary_data(n: int, seed: int = 0, prevalence: float = 0.3) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    score = 1 / (1 + np.exp(-(2.4 * (y - 0.5) + rng.normal(size=n))))
    return y, score


def multiclass_data(n: int, k: int = 4, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    proba = np.exp(logits)
    return y, proba / proba.sum(axis=1, keepdims=True)


def roundtrip(result: EvaluationResult) -> EvaluationResult:
    return EvaluationResult.model_validate(json.loads(json.dumps(result.model_dump(mode="json"))))


# ---- point metrics -------------------------------------------------------------------------
def test_binary_metrics_equal_scikit_learn() -> None:
    y01, score = binary_data(3000)
    labels = np.array(["no", "yes"])[y01]
    result = evaluate_predictions("binary", labels, y_proba=score, bootstrap=0)
    pred = np.where(score >= 0.5, "yes", "no")
    m = result.metrics
    assert result.classes == ["no", "yes"]
    assert result.positive_class == "yes"
    assert result.threshold == 0.5
    assert result.headline == "f1"
    expected = {
        "accuracy": skm.accuracy_score(labels, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(labels, pred),
        "precision": skm.precision_score(labels, pred, pos_label="yes"),
        "recall": skm.recall_score(labels, pred, pos_label="yes"),
        "f1": skm.f1_score(labels, pred, pos_label="yes"),
        "mcc": skm.matthews_corrcoef(labels, pred),
        "roc_auc": skm.roc_auc_score(y01, score),
        "pr_auc": skm.average_precision_score(y01, score),
        "log_loss": skm.log_loss(y01, score),
        "brier": skm.brier_score_loss(y01, score),
    }
    for avg in ("micro", "macro", "weighted"):
        expected[f"precision_{avg}"] = skm.precision_score(labels, pred, average=avg)
        expected[f"recall_{avg}"] = skm.recall_score(labels, pred, average=avg)
        expected[f"f1_{avg}"] = skm.f1_score(labels, pred, average=avg)
    assert set(m) == set(expected)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name
    assert result.confusion is not None
    assert result.confusion["labels"] == ["no", "yes"]
    assert result.confusion["matrix"] == skm.confusion_matrix(labels, pred).tolist()
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=["no", "yes"])
    for i, label in enumerate(["no", "yes"]):
        assert result.per_class[label] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}, abs=1e-12
        )


def test_binary_two_column_proba_and_threshold() -> None:
    y, score = binary_data(500, seed=1)
    one = evaluate_predictions("binary", y, y_proba=score, bootstrap=0)
    two = evaluate_predictions("binary", y, y_proba=np.c_[1 - score, score], bootstrap=0)
    assert one.metrics == two.metrics
    low = evaluate_predictions("binary", y, y_proba=score, threshold=0.3, bootstrap=0)
    assert low.threshold == 0.3
    assert low.metrics["recall"] == pytest.approx(skm.recall_score(y, score >= 0.3))
    assert low.metrics["roc_auc"] == one.metrics["roc_auc"]


def test_binary_ties_and_no_positive_predictions_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    score = np.round(rng.random(400) * 0.4, 1)  # heavy ties, never >= 0.5
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=0)
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert result.metrics["pr_auc"] == pytest.approx(
        skm.average_precision_score(y, score), abs=1e-12
    )
    assert result.metrics["precision"] == 0.0  # scikit-learn's zero_division default
    assert result.metrics["f1"] == 0.0
    assert result.metrics["mcc"] == 0.0


def test_multiclass_metrics_equal_scikit_learn() -> None:
    y, proba = multiclass_data(2000)
    names = np.array(["cat", "dog", "emu", "fox"])
    labels = names[y]
    result = evaluate_predictions("multiclass", labels, y_proba=proba, bootstrap=0)
    pred = names[proba.argmax(axis=1)]
    m = result.metrics
    assert result.headline == "f1_macro"
    assert result.positive_class is None and result.threshold is None
    expected = {
        "accuracy": skm.accuracy_score(labels, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(labels, pred),
        "mcc": skm.matthews_corrcoef(labels, pred),
        "roc_auc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "pr_auc": skm.average_precision_score(
            label_binarize(y, classes=range(4)), proba, average="macro"
        ),
        "log_loss": skm.log_loss(y, proba),
        "brier": skm.brier_score_loss(y, proba, labels=[0, 1, 2, 3]),
    }
    for avg in ("micro", "macro", "weighted"):
        expected[f"precision_{avg}"] = skm.precision_score(labels, pred, average=avg)
        expected[f"recall_{avg}"] = skm.recall_score(labels, pred, average=avg)
        expected[f"f1_{avg}"] = skm.f1_score(labels, pred, average=avg)
    assert set(m) == set(expected)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name
    assert result.confusion is not None
    assert result.confusion["matrix"] == skm.confusion_matrix(labels, pred).tolist()
    assert set(result.curves["roc_ovr"]) == {"cat", "dog", "emu", "fox"}
    assert result.curves["roc_ovr"]["dog"]["auc"] == pytest.approx(
        skm.roc_auc_score(y == 1, proba[:, 1]), abs=1e-12
    )


def test_multiclass_labels_only_with_an_unpredicted_class() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 0, 1, 2] * 10)
    pred = np.where(y == 2, 1, y)  # class 2 never predicted
    result = evaluate_predictions("multiclass", y, y_pred=pred, bootstrap=200)
    assert result.metrics["precision_macro"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0)
    )
    assert result.metrics["f1_weighted"] == pytest.approx(
        skm.f1_score(y, pred, average="weighted", zero_division=0)
    )
    assert "roc_auc" not in result.metrics and "log_loss" not in result.metrics
    assert set(result.intervals) == {"accuracy", "f1_macro"}
    assert result.curves == {}


def test_labels_only_binary_has_no_probability_metrics() -> None:
    y, score = binary_data(300)
    result = evaluate_predictions("binary", y, y_pred=(score > 0.5).astype(int), bootstrap=100)
    assert result.threshold is None
    assert result.threshold_sweep == []
    for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert name not in result.metrics
    assert set(result.intervals) == {"accuracy", "f1"}
    assert result.metrics["f1"] == pytest.approx(skm.f1_score(y, score > 0.5))


def test_regression_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(10, 3, 1500)
    y[:7] = 0.0
    pred = y + rng.normal(0, 1, 1500)
    result = evaluate_predictions("regression", y, y_pred=pred, bootstrap=0)
    m = result.metrics
    nz = y != 0
    assert m == pytest.approx(
        {
            "rmse": skm.root_mean_squared_error(y, pred),
            "mae": skm.mean_absolute_error(y, pred),
            "mape": skm.mean_absolute_percentage_error(y[nz], pred[nz]),
            "r2": skm.r2_score(y, pred),
            "explained_variance": skm.explained_variance_score(y, pred),
            "median_absolute_error": skm.median_absolute_error(y, pred),
            "max_error": skm.max_error(y, pred),
        },
        abs=1e-12,
    )
    assert any("mape leaves out the 7 row(s)" in note for note in result.notes)
    assert result.headline == "rmse"
    assert result.classes is None and result.confusion is None
    residuals = result.residuals
    assert residuals is not None
    assert sum(residuals["histogram"]["counts"]) == 1500
    assert len(residuals["histogram"]["bins"]) == len(residuals["histogram"]["counts"]) + 1
    assert len(residuals["points"]) == 1500
    point = residuals["points"][0]
    assert point == [pytest.approx(pred[0]), pytest.approx(y[0])]


def test_regression_with_constant_truth_has_no_r2_interval() -> None:
    result = evaluate_predictions("regression", [2.0] * 50, y_pred=[1.0, 3.0] * 25, bootstrap=50)
    assert result.metrics["r2"] == 0.0  # scikit-learn's value when y_true is constant
    assert set(result.intervals) == {"rmse", "mae"}
    assert result.intervals["mae"] == (1.0, 1.0)
    assert any(note.startswith("no interval for r2") for note in result.notes)


def test_regression_residual_points_are_capped_and_seeded() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=10_000)
    pred = y + rng.normal(size=10_000)
    a = evaluate_predictions("regression", y, y_pred=pred, bootstrap=0, seed=4)
    b = evaluate_predictions("regression", y, y_pred=pred, bootstrap=0, seed=4)
    c = evaluate_predictions("regression", y, y_pred=pred, bootstrap=0, seed=5)
    assert a.residuals is not None and b.residuals is not None and c.residuals is not None
    assert len(a.residuals["points"]) == 2000
    assert a.residuals["points"] == b.residuals["points"]
    assert a.residuals["points"] != c.residuals["points"]
    assert len(a.residuals["histogram"]["counts"]) <= 50


# ---- curves and the threshold sweep --------------------------------------------------------
def test_curves_are_small_json_and_faithful() -> None:
    y, score = binary_data(20_000, seed=7)
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=0)
    roc, pr, cal = result.curves["roc"], result.curves["pr"], result.curves["calibration"]
    assert 50 < len(roc["fpr"]) <= 200 and len(roc["fpr"]) == len(roc["tpr"])
    assert len(roc["thresholds"]) == len(roc["fpr"])
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0)
    assert (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["thresholds"]) <= 0)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(
        result.metrics["roc_auc"], abs=2e-3
    )
    assert 50 < len(pr["recall"]) <= 200
    assert (pr["recall"][0], pr["precision"][0]) == (0.0, 1.0)
    assert pr["recall"][-1] == 1.0
    assert pr["precision"][-1] == pytest.approx(y.mean())
    assert sum(cal["count"]) == 20_000
    in_top = score >= 0.9
    assert cal["prob_true"][-1] == pytest.approx(y[in_top].mean())
    assert cal["prob_pred"][-1] == pytest.approx(score[in_top].mean())


def test_threshold_sweep_agrees_with_metrics() -> None:
    y, score = binary_data(2000, seed=8)
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=0)
    sweep = result.threshold_sweep
    assert len(sweep) == 101
    assert [row["threshold"] for row in sweep[:3]] == [0.0, 0.01, 0.02]
    at_half = sweep[50]
    assert at_half["threshold"] == 0.5
    for name in ("precision", "recall", "f1", "accuracy"):
        assert at_half[name] == pytest.approx(result.metrics[name]), name
    at_03 = sweep[30]
    assert at_03["f1"] == pytest.approx(skm.f1_score(y, score >= 0.3))
    assert at_03["fpr"] == pytest.approx(((score >= 0.3) & (y == 0)).sum() / (y == 0).sum())
    assert at_03["predicted_positive_rate"] == pytest.approx((score >= 0.3).mean())
    assert sweep[0]["predicted_positive_rate"] == 1.0 and sweep[0]["tpr"] == 1.0


# ---- bootstrap -----------------------------------------------------------------------------
def test_binned_auc_and_ap_are_within_1e3_of_scikit_learn() -> None:
    for prevalence in (0.5, 0.01, 0.999):
        y, score = binary_data(200_000, seed=9, prevalence=prevalence)
        ranked = _rank(y == 1, score)
        bin_of, predicted = _score_bins(ranked, 0.5)
        assert len(predicted) <= 2049
        pos = np.bincount(bin_of, weights=ranked.pos)
        neg = np.bincount(bin_of, weights=ranked.neg)
        # a bin holds at most 1/1024 of either class: the binned AUC is within 1/2048
        assert float(_auc_desc(pos, neg)) == pytest.approx(
            skm.roc_auc_score(y, score), abs=1 / 2048
        )
        assert float(_ap_desc(pos, neg)) == pytest.approx(
            skm.average_precision_score(y, score), abs=1e-3
        )
        # every bin is on one side of the threshold
        above = ranked.scores >= 0.5
        assert np.array_equal(predicted[bin_of], above)


def test_auc_influence_is_delongs_structural_components() -> None:
    rng = np.random.default_rng(21)
    positive = rng.random(500) < 0.3
    score = np.round(rng.random(500) + positive * 0.4, 2)  # with ties
    ranked = _rank(positive, score, index=True)
    psi = _auc_influence(ranked, positive)
    auc, v10, v01 = _structural_components(score[positive][None], score[~positive][None])
    m, k = int(positive.sum()), int((~positive).sum())
    assert psi[positive] == pytest.approx((v10[0] - auc[0]) * 500 / m, abs=1e-12)
    assert psi[~positive] == pytest.approx((v01[0] - auc[0]) * 500 / k, abs=1e-12)
    assert psi.mean() == pytest.approx(0.0, abs=1e-12)
    assert auc[0] == pytest.approx(skm.roc_auc_score(positive, score), abs=1e-12)


def row_bootstrap_weights(n: int, b: int, seed: int) -> Any:
    """Plain row resampling: how often each row was drawn, (b, n)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(b, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]), idx


def rank_auc(positive: Any, score: Any) -> Any:
    """Mann-Whitney AUC of each row of (b, n) arrays, from midranks."""
    ranks = rankdata(score, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    return ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def assert_width(interval: tuple[float, float], replicates: Any, point: float) -> None:
    """The interval is as wide as the plain bootstrap's (normal width from its sd, 15%),
    and holds the point value."""
    low, high = interval
    assert high - low == pytest.approx(2 * Z95 * np.std(replicates, ddof=1), rel=0.15)
    assert low < point < high


def test_binary_intervals_match_a_plain_row_bootstrap() -> None:
    y, score = binary_data(3000, seed=10, prevalence=0.2)  # > 2048 distinct: binned path
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=2000, seed=1)
    weights, idx = row_bootstrap_weights(3000, 300, seed=2)
    pred = score >= 0.5
    loss = -(y * np.log(score) + (1 - y) * np.log(1 - score))
    tp, fp, fn = (
        weights @ (pred & (y == 1)),
        weights @ (pred & (y == 0)),
        weights @ (~pred & (y == 1)),
    )
    naive = {
        "roc_auc": rank_auc(y[idx] == 1, score[idx]),
        "pr_auc": [skm.average_precision_score(y[i], score[i]) for i in idx],
        "log_loss": weights @ loss / 3000,
        "brier": weights @ (score - y) ** 2 / 3000,
        "accuracy": weights @ (pred == y) / 3000,
        "f1": 2 * tp / (2 * tp + fp + fn),
    }
    assert set(result.intervals) == set(naive)
    for name, reps in naive.items():
        assert_width(result.intervals[name], reps, result.metrics[name])


def test_regression_intervals_match_a_plain_row_bootstrap() -> None:
    rng = np.random.default_rng(11)
    n = 4000  # > 2048 rows: residual bins with the within-bin normal part
    y = rng.lognormal(2, 1, n)
    pred = y * np.exp(rng.normal(0, 0.3, n))
    result = evaluate_predictions("regression", y, y_pred=pred, bootstrap=2000)
    weights, _ = row_bootstrap_weights(n, 400, seed=3)
    r = y - pred
    ss_res = weights @ r**2
    mean_y = weights @ y / n
    ss_tot = weights @ y**2 - n * mean_y**2
    naive = {
        "rmse": np.sqrt(ss_res / n),
        "mae": weights @ np.abs(r) / n,
        "r2": 1 - ss_res / ss_tot,
    }
    assert set(result.intervals) == set(naive)
    for name, reps in naive.items():
        assert_width(result.intervals[name], reps, result.metrics[name])


@pytest.mark.parametrize("n", [600, 3000])  # rows as cells (exact); AUC by influence
def test_multiclass_intervals_match_a_plain_row_bootstrap(n: int) -> None:
    y, proba = multiclass_data(n, k=3, seed=12)
    result = evaluate_predictions("multiclass", y, y_proba=proba, bootstrap=2000)
    weights, idx = row_bootstrap_weights(n, 400, seed=4)
    pred = proba.argmax(axis=1)
    p_true = proba[np.arange(n), y]
    f1 = []
    for j in range(3):
        tp = weights @ ((pred == j) & (y == j))
        f1.append(2 * tp / (weights @ (pred == j) + weights @ (y == j)))
    naive = {
        "roc_auc": np.mean([rank_auc(y[idx] == j, proba[idx, j]) for j in range(3)], axis=0),
        "f1_macro": np.mean(f1, axis=0),
        "accuracy": weights @ (pred == y) / n,
        "log_loss": weights @ -np.log(p_true) / n,
        "brier": weights @ ((proba**2).sum(axis=1) - 2 * p_true + 1) / n,
    }
    assert set(result.intervals) == set(naive)
    for name, reps in naive.items():
        assert_width(result.intervals[name], reps, result.metrics[name])


def test_bootstrap_is_seeded_and_can_be_disabled() -> None:
    y, score = binary_data(3000, seed=13)
    a = evaluate_predictions("binary", y, y_proba=score, bootstrap=300, seed=7)
    b = evaluate_predictions("binary", y, y_proba=score, bootstrap=300, seed=7)
    c = evaluate_predictions("binary", y, y_proba=score, bootstrap=300, seed=8)
    assert a.intervals == b.intervals
    assert a.intervals != c.intervals
    assert evaluate_predictions("binary", y, y_proba=score, bootstrap=0).intervals == {}


def test_wider_confidence_gives_wider_intervals() -> None:
    y, score = binary_data(2000, seed=14)
    narrow = evaluate_predictions("binary", y, y_proba=score, confidence=0.8, bootstrap=400)
    wide = evaluate_predictions("binary", y, y_proba=score, confidence=0.99, bootstrap=400)
    for name, (low, high) in narrow.intervals.items():
        assert wide.intervals[name][0] < low and high < wide.intervals[name][1], name


def test_many_rows_binary_point_metrics_stay_exact() -> None:
    y, score = binary_data(250_000, seed=15, prevalence=0.1)
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=200)
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    low, high = result.intervals["roc_auc"]
    assert low < result.metrics["roc_auc"] < high
    # about 3.92 standard errors (DeLong's, computed here from the structural components)
    pos, neg = score[y == 1], score[y == 0]
    v10 = rankdata(np.r_[pos, neg])[: len(pos)] - rankdata(pos)
    v01 = 1 - (rankdata(np.r_[pos, neg])[len(pos) :] - rankdata(neg)) / len(pos)
    se = np.sqrt(np.var(v10 / len(neg), ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg))
    assert high - low == pytest.approx(2 * Z95 * se, rel=0.2)


# ---- slices --------------------------------------------------------------------------------
def test_binary_slices_and_worst_slices() -> None:
    y, score = binary_data(4000, seed=16)
    rng = np.random.default_rng(16)
    country = rng.choice(np.array(["de", "fr", "us", None], dtype=object), 4000)
    plan = rng.choice(["a", "b"], 4000)
    # make the French rows poorly predicted
    fr = country == "fr"
    score = np.where(fr, rng.random(4000), score)
    tiny = np.where(np.arange(4000) < 10, "tiny", "big")
    result = evaluate_predictions(
        "binary",
        y,
        y_proba=score,
        bootstrap=0,
        slices={"country": country, "plan": plan, "size": tiny},
        min_slice_rows=30,
    )
    by_key = {(s.column, s.value): s for s in result.slices}
    assert set(by_key) == {
        ("country", "de"),
        ("country", "fr"),
        ("country", "us"),
        ("country", MISSING),
        ("plan", "a"),
        ("plan", "b"),
        ("size", "tiny"),
        ("size", "big"),
    }
    fr_slice = by_key[("country", "fr")]
    assert fr_slice.n == int(fr.sum())
    pred = score >= 0.5
    assert fr_slice.metrics == pytest.approx(
        {
            "accuracy": skm.accuracy_score(y[fr], pred[fr]),
            "f1": skm.f1_score(y[fr], pred[fr]),
            "roc_auc": skm.roc_auc_score(y[fr], score[fr]),
        },
        abs=1e-12,
    )
    missing = np.array([c is None for c in country])
    assert by_key[("country", MISSING)].n == int(missing.sum())
    worst = result.worst_slices
    assert len(worst) == 5
    assert (worst[0].column, worst[0].value) == ("country", "fr")
    assert all(s.n >= 30 for s in worst)
    f1s = [s.metrics["f1"] for s in worst]
    assert f1s == sorted(f1s)


def test_slice_values_are_capped_at_50_most_frequent() -> None:
    rng = np.random.default_rng(17)
    y = rng.integers(0, 2, 3000)
    pred = rng.integers(0, 2, 3000)
    ids = np.r_[np.zeros(1000, int), np.arange(2000) % 80 + 1]
    result = evaluate_predictions(
        "binary", y, y_pred=pred, bootstrap=0, slices={"id": ids}, min_slice_rows=1
    )
    assert len(result.slices) == 50
    assert result.slices[0].value == "0" and result.slices[0].n == 1000
    assert any("the 50 most frequent of 81 values" in note for note in result.notes)


def test_single_class_slice_has_no_auc() -> None:
    y = np.r_[np.ones(50, int), np.random.default_rng(0).integers(0, 2, 50)]
    score = np.linspace(0.01, 0.99, 100)
    group = np.r_[np.full(50, "only_pos"), np.full(50, "mixed")]
    result = evaluate_predictions("binary", y, y_proba=score, bootstrap=0, slices={"g": group})
    by_value = {s.value: s for s in result.slices}
    assert "roc_auc" not in by_value["only_pos"].metrics
    assert "roc_auc" in by_value["mixed"].metrics


def test_multiclass_and_regression_slices() -> None:
    y, proba = multiclass_data(1200, k=3, seed=18)
    group = np.where(np.arange(1200) % 3 == 0, "x", "y")
    result = evaluate_predictions("multiclass", y, y_proba=proba, bootstrap=0, slices={"g": group})
    x = group == "x"
    sx = next(s for s in result.slices if s.value == "x")
    assert sx.metrics["f1_macro"] == pytest.approx(
        skm.f1_score(y[x], proba[x].argmax(axis=1), average="macro")
    )
    assert sx.metrics["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y[x], proba[x], multi_class="ovr")
    )

    rng = np.random.default_rng(19)
    yr = rng.normal(size=600)
    noise = np.where(np.arange(600) < 300, 0.5, 2.0)
    pr = yr + rng.normal(size=600) * noise
    half = np.where(np.arange(600) < 300, "good", "bad")
    reg = evaluate_predictions("regression", yr, y_pred=pr, bootstrap=0, slices={"h": half})
    good = next(s for s in reg.slices if s.value == "good")
    assert good.metrics == pytest.approx(
        {
            "rmse": skm.root_mean_squared_error(yr[:300], pr[:300]),
            "mae": skm.mean_absolute_error(yr[:300], pr[:300]),
        }
    )
    assert [s.value for s in reg.worst_slices] == ["bad", "good"]


# ---- the result record ---------------------------------------------------------------------
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_result_round_trips_through_json(task: str) -> None:
    rng = np.random.default_rng(20)
    group = rng.choice(["a", "b", None], 500)
    if task == "binary":
        y, score = binary_data(500)
        result = evaluate_predictions(task, y, y_proba=score, bootstrap=100, slices={"g": group})
    elif task == "multiclass":
        y, proba = multiclass_data(500, k=3)
        result = evaluate_predictions(task, y, y_proba=proba, bootstrap=100, slices={"g": group})
    else:
        y = rng.normal(size=500)
        result = evaluate_predictions(
            task, y, y_pred=y + rng.normal(size=500), bootstrap=100, slices={"g": group}
        )
    assert roundtrip(result) == result
    assert result.elapsed_seconds > 0
    assert result.n_rows == 500


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "binary", "y_true": [0, 1, 1], "y_pred": [0, 1]}, r"y_pred has 2 rows"),
        ({"task": "binary", "y_true": [], "y_pred": []}, r"y_true is empty"),
        ({"task": "binary", "y_true": [0, 1, np.nan], "y_pred": [0, 1, 1]}, r"missing value"),
        ({"task": "binary", "y_true": [0, 1, None], "y_pred": [0, 1, 1]}, r"missing value"),
        ({"task": "binary", "y_true": [0, 1, 2], "y_pred": [0, 1, 2]}, r"exactly 2 classes"),
        ({"task": "binary", "y_true": [1, 1, 1], "y_pred": [1, 1, 1]}, r"classes=\[negative"),
        ({"task": "binary", "y_true": [0, 1, 1]}, r"needs y_pred or y_proba"),
        ({"task": "binary", "y_true": [0, 1], "y_proba": [0.2, 1.3]}, r"in \[0, 1\]"),
        ({"task": "binary", "y_true": [0, 1], "y_proba": [0.2, np.nan]}, r"1 NaN value"),
        ({"task": "binary", "y_true": [0, 1], "y_proba": [[0.2, 0.3, 0.5]] * 2}, r"3 columns"),
        ({"task": "binary", "y_true": [0, 1], "y_proba": [0.5, 0.5, 0.1]}, r"y_proba has 3 rows"),
        (
            {"task": "multiclass", "y_true": [0, 1, 2], "y_proba": [[0.5, 0.5]] * 3},
            r"y_proba has 2 columns but 3 classes occur",
        ),
        (
            {"task": "multiclass", "y_true": [0, 1, 1], "y_proba": [[0.2, 0.3, 0.5]] * 3},
            r"pass classes= in the column order",
        ),
        (
            {"task": "multiclass", "y_true": [0, 1, 2], "y_pred": [0, 1, 3], "classes": [0, 1, 2]},
            r"y_pred has label\(s\) \[3\] that are not among the classes",
        ),
        ({"task": "multiclass", "y_true": [0, 0], "y_pred": [0, 0]}, r"at least 2 classes"),
        ({"task": "regression", "y_true": ["a", "b"], "y_pred": [1.0, 2.0]}, r"numeric y_true"),
        ({"task": "regression", "y_true": [1.0, 2.0], "y_pred": [1.0, np.inf]}, r"infinite"),
        ({"task": "regression", "y_true": [1.0, 2.0]}, r"needs y_pred"),
        ({"task": "ranking", "y_true": [1.0], "y_pred": [1.0]}, r"task must be one of"),
        ({"task": "binary", "y_true": [[0, 1], [1, 0]], "y_pred": [0, 1]}, r"one-dimensional"),
        (
            {"task": "binary", "y_true": [0, 1], "y_pred": [0, 1], "classes": [1, 1]},
            r"classes has duplicates",
        ),
        ({"task": "binary", "y_true": [0, 1], "y_pred": [0, 1], "threshold": 2}, r"threshold"),
        ({"task": "binary", "y_true": [0, 1], "y_pred": [0, 1], "bootstrap": -1}, r"bootstrap"),
        ({"task": "binary", "y_true": [0, 1], "y_pred": [0, 1], "confidence": 1}, r"confidence"),
        (
            {"task": "binary", "y_true": [0, 1], "y_pred": [0, 1], "slices": {"g": ["a"]}},
            r"slices\['g'\] has 1 values",
        ),
    ],
)
def test_bad_input_is_invalid_input(kwargs: dict[str, Any], message: str) -> None:
    task = kwargs.pop("task")
    y_true = kwargs.pop("y_true")
    with pytest.raises(InvalidInput, match=message):
        evaluate_predictions(task, y_true, **kwargs)


def test_explicit_classes_cover_an_unseen_label() -> None:
    result = evaluate_predictions(
        "binary", [1, 1, 1], y_pred=[1, 0, 1], classes=[0, 1], bootstrap=0
    )
    assert result.metrics["recall"] == pytest.approx(2 / 3)
    assert result.confusion is not None
    assert result.confusion["matrix"] == [[0, 0], [1, 2]]
