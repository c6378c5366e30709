"""PNG pictures of an evaluation: ROC, precision-recall, calibration, confusion matrix,
residuals, and a champion/challenger comparison.

Each function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas, never
through pyplot, so it is safe in servers and threads and leaves no global figure state.
Figures have fixed pixel sizes (``SIZE`` / ``WIDE`` at ``DPI``), so pages can lay them out
before they load.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.metrics import LOWER_IS_BETTER, EvaluationResult
from modelworks.evaluation.stats import ComparisonResult

__all__ = [
    "calibration_png",
    "comparison_png",
    "confusion_png",
    "plots_for",
    "pr_png",
    "residuals_png",
    "roc_png",
]

DPI = 100
SIZE = (6.4, 4.8)  # 640 x 480 pixels
WIDE = (11.0, 4.4)  # 1100 x 440 pixels: two panels side by side
CHAMPION = "#7f7f7f"
CHALLENGER = "#1f77b4"
CURVE = "#1f77b4"
REFERENCE = "#999999"
MAX_ANNOTATED_CLASSES = 20
MAX_LEGEND_CLASSES = 12
LABEL_CHARS = 24
COMPARISON_METRICS = {
    "binary": ["f1", "accuracy", "roc_auc", "pr_auc", "precision", "recall", "log_loss", "brier"],
    "multiclass": [
        "f1_macro",
        "accuracy",
        "balanced_accuracy",
        "roc_auc",
        "pr_auc",
        "mcc",
        "log_loss",
        "brier",
    ],
    "regression": ["rmse", "mae", "r2", "mape", "median_absolute_error", "explained_variance"],
}


def _figure(size: tuple[float, float] = SIZE) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _with_interval(result: EvaluationResult, metric: str) -> str:
    value = result.metrics.get(metric)
    if value is None:
        return ""
    text = f"{metric} {value:.3f}"
    if metric in result.intervals:
        low, high = result.intervals[metric]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def _unit_axes(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def roc_png(result: EvaluationResult) -> bytes:
    """ROC curve (binary) or one-vs-rest curves per class (multiclass)."""
    curves = result.curves
    if "roc" not in curves and "roc_ovr" not in curves:
        raise InvalidInput(
            "this result has no ROC curve: it needs a classification task evaluated with "
            "y_proba and both classes in y_true"
        )
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color=REFERENCE, linestyle="--", linewidth=1, label="chance")
    if "roc" in curves:
        roc = curves["roc"]
        ax.plot(
            roc["fpr"],
            roc["tpr"],
            color=CURVE,
            linewidth=2,
            label=_with_interval(result, "roc_auc"),
        )
    else:
        per_class: dict[str, Any] = curves["roc_ovr"]
        for i, (label, roc) in enumerate(per_class.items()):
            name = f"{_short(label)} (AUC {roc['auc']:.3f})" if i < MAX_LEGEND_CLASSES else None
            ax.plot(roc["fpr"], roc["tpr"], linewidth=1.5, label=name)
    _unit_axes(ax, "False positive rate", "True positive rate")
    ax.legend(loc="lower right", fontsize=8)
    title = "ROC curve" if "roc" in curves else "ROC curves, one class vs the rest"
    ax.set_title(f"{title} ({result.n_rows:,} rows)", fontsize=11)
    return _png(fig)


def pr_png(result: EvaluationResult) -> bytes:
    """Precision-recall curve of the positive class, with the prevalence as the baseline."""
    if "pr" not in result.curves:
        raise InvalidInput(
            "this result has no precision-recall curve: it needs a binary task evaluated "
            "with y_proba and both classes in y_true"
        )
    pr = result.curves["pr"]
    fig = _figure()
    ax = fig.add_subplot()
    positive = result.positive_class or ""
    support = result.per_class.get(positive, {}).get("support")
    if support is not None:
        prevalence = support / result.n_rows
        ax.axhline(
            prevalence,
            color=REFERENCE,
            linestyle="--",
            linewidth=1,
            label=f"prevalence {prevalence:.3f}",
        )
    ax.step(
        pr["recall"],
        pr["precision"],
        where="post",
        color=CURVE,
        linewidth=2,
        label=_with_interval(result, "pr_auc"),
    )
    _unit_axes(ax, "Recall", "Precision")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Precision-recall, positive class {_short(positive)!r}", fontsize=11)
    return _png(fig)


def calibration_png(result: EvaluationResult) -> bytes:
    """Reliability diagram (mean predicted vs observed rate per score bin) over row counts."""
    if "calibration" not in result.curves:
        raise InvalidInput(
            "this result has no calibration curve: it needs a binary task with y_proba"
        )
    cal = result.curves["calibration"]
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot(
        [0, 1], [0, 1], color=REFERENCE, linestyle="--", linewidth=1, label="perfectly calibrated"
    )
    top.plot(
        cal["prob_pred"],
        cal["prob_true"],
        marker="o",
        color=CURVE,
        linewidth=2,
        label=_with_interval(result, "brier") or "model",
    )
    _unit_axes(top, "", "Observed positive rate")
    top.legend(loc="upper left", fontsize=8)
    top.set_title("Calibration", fontsize=11)
    bottom.bar(cal["prob_pred"], cal["count"], width=0.06, color=CURVE, alpha=0.6)
    bottom.set_xlabel("Mean predicted probability")
    bottom.set_ylabel("Rows")
    bottom.grid(alpha=0.3)
    return _png(fig)


def confusion_png(result: EvaluationResult) -> bytes:
    """Confusion matrix: colour is the share of each true class (row), text the count."""
    if result.confusion is None:
        raise InvalidInput("this result has no confusion matrix: it needs a classification task")
    labels = [_short(label, 16) for label in result.confusion["labels"]]
    matrix = np.asarray(result.confusion["matrix"], dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig = _figure()
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    k = len(labels)
    ax.set_xticks(
        range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8
    )
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    f"{int(matrix[i, j]):,}",
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=8,
                )
    ax.set_title(f"Confusion matrix ({result.n_rows:,} rows)", fontsize=11)
    return _png(fig)


def residuals_png(result: EvaluationResult) -> bytes:
    """Histogram of residuals (actual - predicted) and predicted vs actual for a sample."""
    if result.residuals is None:
        raise InvalidInput("this result has no residuals: it needs a regression task")
    hist = result.residuals["histogram"]
    points = np.asarray(result.residuals["points"], dtype=np.float64).reshape(-1, 2)
    fig = _figure(WIDE)
    left, right = fig.subplots(1, 2)
    edges = np.asarray(hist["bins"], dtype=np.float64)
    left.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color=CURVE, alpha=0.8)
    left.axvline(0.0, color=REFERENCE, linestyle="--", linewidth=1)
    left.set_xlabel("Residual (actual - predicted)")
    left.set_ylabel("Rows")
    left.set_title("Residuals", fontsize=11)
    left.grid(alpha=0.3)
    right.scatter(points[:, 0], points[:, 1], s=6, alpha=0.4, color=CURVE, linewidths=0)
    if len(points):
        low, high = float(points.min()), float(points.max())
        right.plot([low, high], [low, high], color=REFERENCE, linestyle="--", linewidth=1)
    right.set_xlabel("Predicted")
    right.set_ylabel("Actual")
    right.set_title(f"Predicted vs actual ({len(points):,} of {result.n_rows:,} rows)", fontsize=11)
    right.grid(alpha=0.3)
    return _png(fig)


def comparison_png(comparison: ComparisonResult) -> bytes:
    """Champion vs challenger, one small panel per metric (each on its own scale)."""
    wanted = [comparison.headline, *COMPARISON_METRICS[comparison.task]]
    names = [
        m
        for m in dict.fromkeys(wanted)
        if m in comparison.champion_metrics and m in comparison.challenger_metrics
    ][:8]
    if not names:
        raise InvalidInput("the comparison has no metric that both models have")
    columns = min(4, len(names))
    rows = (len(names) + columns - 1) // columns
    fig = _figure(WIDE)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        values = [comparison.champion_metrics[name], comparison.challenger_metrics[name]]
        bars = ax.bar(["champion", "challenger"], values, color=[CHAMPION, CHALLENGER])
        ax.bar_label(bars, labels=[f"{v:.4g}" for v in values], fontsize=8)
        arrow = " (lower is better)" if name in LOWER_IS_BETTER else ""
        weight = "bold" if name == comparison.headline else "normal"
        ax.set_title(f"{name}{arrow}", fontsize=9, fontweight=weight)
        ax.tick_params(axis="both", labelsize=8)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    verdict = comparison.verdict.replace("_", " ")
    fig.suptitle(
        f"{verdict} on {comparison.headline} (p = {comparison.p_value:.3g}, "
        f"{comparison.n_rows:,} rows)",
        fontsize=11,
    )
    return _png(fig)


def plots_for(result: EvaluationResult) -> dict[str, bytes]:
    """Every picture that applies to the result, by file name (e.g. ``"roc.png"``)."""
    out: dict[str, bytes] = {}
    if result.task == "regression":
        if result.residuals is not None:
            out["residuals.png"] = residuals_png(result)
        return out
    if result.confusion is not None:
        out["confusion.png"] = confusion_png(result)
    if "roc" in result.curves or "roc_ovr" in result.curves:
        out["roc.png"] = roc_png(result)
    if "pr" in result.curves:
        out["pr.png"] = pr_png(result)
    if "calibration" in result.curves:
        out["calibration.png"] = calibration_png(result)
    return out
