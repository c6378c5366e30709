"""PNG pictures of explanations: importance bars and a one-row waterfall.

Each function draws on its own ``matplotlib.figure.Figure`` with the Agg canvas, never
through pyplot, so it is safe in servers and threads and leaves no global figure state.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modelworks.core.errors import InvalidInput
from modelworks.evaluation.explain import GlobalImportance, RowExplanation

__all__ = ["importance_png", "waterfall_png"]

POSITIVE = "#d62728"  # pushes the output up
NEGATIVE = "#1f77b4"  # pushes it down
NEUTRAL = "#7f7f7f"
DPI = 100
LABEL_CHARS = 40


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _check_top(top: int) -> None:
    if top < 1:
        raise InvalidInput(f"top must be at least 1; got {top}.")


def importance_png(importance: GlobalImportance, top: int = 20) -> bytes:
    """Horizontal bars of the ``top`` features, most important at the top.

    One panel per measure that was computed: permutation importance (with its standard
    deviation as error bars) and mean |SHAP value|.
    """
    _check_top(top)
    features = importance.features[:top]
    if not features:
        raise InvalidInput("The importance has no features to draw.")
    panels: list[tuple[str, list[float], list[float] | None]] = []
    if all(f.permutation_mean is not None for f in features):
        panels.append(
            (
                f"Permutation importance (drop in {importance.scoring or 'score'})",
                [float(f.permutation_mean or 0.0) for f in features],
                [float(f.permutation_std or 0.0) for f in features],
            )
        )
    if all(f.shap_mean_abs is not None for f in features):
        panels.append(
            ("Mean |SHAP value|", [float(f.shap_mean_abs or 0.0) for f in features], None)
        )
    if not panels:
        raise InvalidInput("The importance holds no values to draw; compute it with methods=.")
    height = 1.2 + 0.32 * len(features)
    fig = Figure(figsize=(5.0 * len(panels) + 1.5, height))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = list(range(len(features)))[::-1]  # the first feature at the top
    names = [_short(f.name) for f in features]
    for ax, (title, values, errors) in zip(axes, panels, strict=True):
        colors = [NEGATIVE if v >= 0 else NEUTRAL for v in values]
        ax.barh(positions, values, xerr=errors, color=colors, ecolor="#444444", capsize=2)
        ax.set_title(title, fontsize=10)
        ax.axvline(0.0, color="#444444", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="both", labelsize=8)
    axes[0].set_yticks(positions, names)
    fig.suptitle(f"Feature importance ({importance.n_rows} rows)", fontsize=11)
    return _png(fig)


def _feature_label(name: str, value: str | float | None) -> str:
    if value is None:
        shown = "missing"
    elif isinstance(value, float):
        shown = f"{value:.4g}"
    else:
        shown = _short(value, 20)
    return _short(f"{name} = {shown}")


def waterfall_png(explanation: RowExplanation, top: int = 12) -> bytes:
    """A waterfall from the base value to the prediction.

    The ``top`` largest contributions get one bar each, largest at the top; the rest are
    summed into one "N other features" bar at the bottom. Bars read bottom-up: each starts
    where the one below it ended, so the last ends at the prediction.
    """
    _check_top(top)
    contributions = sorted(explanation.contributions, key=lambda c: -abs(c.shap_value))
    shown = contributions[:top]
    rest = contributions[top:]
    labels = [_feature_label(c.feature, c.value) for c in shown]
    values = [c.shap_value for c in shown]
    if rest:
        labels.append(f"{len(rest)} other feature{'s' if len(rest) > 1 else ''}")
        values.append(sum(c.shap_value for c in rest))
    # Accumulate from the bottom bar (the smallest, or the grouped rest) up to the largest.
    labels, values = labels[::-1], values[::-1]
    starts = []
    total = explanation.base_value
    for value in values:
        starts.append(total)
        total += value
    fig = Figure(figsize=(7.5, 1.4 + 0.36 * len(values)))
    ax = fig.subplots()
    positions = list(range(len(values)))
    colors = [POSITIVE if v > 0 else NEGATIVE for v in values]
    ax.barh(positions, values, left=starts, color=colors, height=0.6)
    span = max(abs(v) for v in values) if values else 1.0
    for y, (start, value) in enumerate(zip(starts, values, strict=True)):
        end = start + value
        ax.text(
            max(start, end) + 0.01 * span,
            y,
            f"{value:+.3g}",
            va="center",
            ha="left",
            fontsize=8,
        )
    ax.axvline(explanation.base_value, color=NEUTRAL, linestyle="--", linewidth=0.8)
    ax.axvline(explanation.prediction, color="#222222", linestyle="-", linewidth=0.8)
    ax.set_yticks(positions, labels)
    ax.tick_params(axis="both", labelsize=8)
    ax.set_xlabel(explanation.output, fontsize=9)
    ax.set_title(
        f"base {explanation.base_value:.4g} \u2192 prediction {explanation.prediction:.4g}",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    return _png(fig)
