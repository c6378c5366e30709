"""Evaluation pictures: which ones each task gets, that they are PNGs of the stated size,
and that they draw from a stored (JSON round-tripped) result."""

from __future__ import annotations

import functools
import json
import struct
from typing import Any

import numpy as np
import pytest

from modelworks.core.errors import InvalidInput
from modelworks.evaluation import plots
from modelworks.evaluation.metrics import EvaluationResult, evaluate_predictions
from modelworks.evaluation.stats import compare_predictions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@functools.cache
def binary_result(*, proba: bool = True) -> EvaluationResult:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    score = 1 / (1 + np.exp(-(2 * (y - 0.5) + rng.normal(size=800))))
    if proba:
        return evaluate_predictions("binary", y, y_proba=score, bootstrap=100)
    return evaluate_predictions("binary", y, y_pred=(score >= 0.5).astype(int), bootstrap=0)


@functools.cache
def multiclass_result(k: int = 4, *, proba: bool = True) -> EvaluationResult:
    rng = np.random.default_rng(1)
    y = rng.integers(0, k, 600)
    logits = rng.normal(size=(600, k))
    logits[np.arange(600), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([f"class_{i}" for i in range(k)])
    if proba:
        return evaluate_predictions("multiclass", labels[y], y_proba=p, bootstrap=0)
    return evaluate_predictions("multiclass", labels[y], y_pred=labels[p.argmax(1)], bootstrap=0)


@functools.cache
def regression_result() -> EvaluationResult:
    rng = np.random.default_rng(2)
    y = rng.normal(size=700)
    return evaluate_predictions("regression", y, y_pred=y + rng.normal(size=700), bootstrap=0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (binary_result, {"confusion.png", "roc.png", "pr.png", "calibration.png"}),
        (lambda: binary_result(proba=False), {"confusion.png"}),
        (multiclass_result, {"confusion.png", "roc.png"}),
        (lambda: multiclass_result(proba=False), {"confusion.png"}),
        (regression_result, {"residuals.png"}),
    ],
)
def test_plots_for_each_task(make: Any, expected: set[str]) -> None:
    images = plots.plots_for(make())
    assert set(images) == expected
    for name, data in images.items():
        size = (1100, 440) if name == "residuals.png" else (640, 480)
        assert png_size(data) == size, name
        assert len(data) > 5000, name  # something was drawn


def test_pictures_draw_the_same_from_a_stored_result() -> None:
    result = binary_result()
    stored = EvaluationResult.model_validate(json.loads(result.model_dump_json()))
    assert plots.roc_png(stored) == plots.roc_png(result)


def test_pictures_that_do_not_apply_say_why() -> None:
    with pytest.raises(InvalidInput, match=r"no ROC curve"):
        plots.roc_png(regression_result())
    with pytest.raises(InvalidInput, match=r"no precision-recall curve"):
        plots.pr_png(multiclass_result())
    with pytest.raises(InvalidInput, match=r"no calibration curve"):
        plots.calibration_png(binary_result(proba=False))
    with pytest.raises(InvalidInput, match=r"no confusion matrix"):
        plots.confusion_png(regression_result())
    with pytest.raises(InvalidInput, match=r"no residuals"):
        plots.residuals_png(binary_result())


def test_many_classes_confusion_and_roc() -> None:
    result = multiclass_result(k=25)
    assert png_size(plots.confusion_png(result)) == (640, 480)
    assert png_size(plots.roc_png(result)) == (640, 480)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_comparison_png(task: str) -> None:
    rng = np.random.default_rng(3)
    n = 400
    if task == "regression":
        y: Any = rng.normal(size=n)
        champion = {"y_pred": y + rng.normal(size=n)}
        challenger = {"y_pred": y + rng.normal(0, 0.5, size=n)}
    elif task == "binary":
        y = rng.integers(0, 2, n)
        champion = {"y_proba": np.clip(0.5 + (y - 0.5) * 0.2 + rng.normal(0, 0.3, n), 0, 1)}
        challenger = {"y_proba": np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.3, n), 0, 1)}
    else:
        y = rng.integers(0, 3, n)
        champion = {"y_pred": np.where(rng.random(n) < 0.6, y, 0)}
        challenger = {"y_pred": np.where(rng.random(n) < 0.8, y, 0)}
    comparison = compare_predictions(
        task,  # type: ignore[arg-type]
        y,
        champion=champion,
        challenger=challenger,
        n_resamples=100,
    )
    assert png_size(plots.comparison_png(comparison)) == (1100, 440)


def test_no_pyplot_figures_are_left_behind() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.calibration_png(binary_result())
    plots.residuals_png(regression_result())
    assert plt.get_fignums() == before
