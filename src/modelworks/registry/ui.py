"""Model registry pages: models, one model, one version, a comparison, the alias requests.

Thin adapters over :class:`~modelworks.registry.service.RegistryService` and
:class:`~modelworks.registry.evaluations.EvaluationService`, rendered in the shared layout
of :mod:`modelworks.server.pages`; the app includes :data:`router`. The functions here only
reshape service results for the templates (chart series, table cells, the model card's
Markdown as escaped HTML); no registry rule lives here: moving an alias, deciding a
request and explaining a row are the services' calls, which decide who may do what.

Charts reach the page as JSON in ``<script type="application/json" id="model-charts">``,
drawn by ``static/js/models.js`` with the vendored Chart.js; the lineage graph is SVG drawn
on the server (:mod:`modelworks.data.lineage_svg`).

Forms post with the session's CSRF token in a ``csrf_token`` field (pages cannot send the
``X-CSRF-Token`` header a script would). Moving an alias takes two steps: the form opens
the model page with a confirmation ("move champion from v1 to v2?"), whose button posts the
move. The outcome of a post (or its error) comes back as a flash message on the page the
post redirects to.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup, escape

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput, ModelworksError, NotFound
from modelworks.data.lineage_svg import render_svg
from modelworks.data.schemas import LineageEdgeOut as DataEdge
from modelworks.data.schemas import LineageNodeOut as DataNode
from modelworks.data.schemas import LineageOut
from modelworks.data.service import DataService
from modelworks.data.ui import lineage_href as data_lineage_href
from modelworks.data.ui import version_href as dataset_version_href
from modelworks.registry.api import evaluations
from modelworks.registry.card import model_card
from modelworks.registry.evaluations import EvaluationService
from modelworks.registry.schemas import (
    AliasOut,
    ComparisonOut,
    EvaluationOut,
    ModelLineageOut,
    VersionOut,
)
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.server.forms import form_caller, form_error_status, set_flash
from modelworks.server.forms import pop_flash as _pop_flash
from modelworks.server.pages import page_router, render, segment

MODELS_PAGE_SIZE = 50
EVALUATIONS_SHOWN = 20
LINEAGE_DEPTH = 4
MAX_IMPORTANCE_BARS = 20
MAX_WATERFALL_BARS = 12  # the rest of the features become one "other features" bar
FLASH_KEY = "registry_flash"
REQUESTS_SEGMENT = "-/requests"  # '-' is no model name, so this never shadows a model page

router = page_router()


# ---- links --------------------------------------------------------------------------------
def models_href(project: str) -> str:
    return f"/projects/{segment(project)}/models"


def model_href(project: str, model: str) -> str:
    return f"{models_href(project)}/{segment(model)}"


def version_href(project: str, model: str, version: int | str) -> str:
    return f"{model_href(project, model)}/versions/{segment(str(version))}"


def comparison_href(project: str, model: str, comparison_id: str) -> str:
    return f"{model_href(project, model)}/comparisons/{segment(comparison_id)}"


def requests_href(project: str) -> str:
    return f"{models_href(project)}/{REQUESTS_SEGMENT}"


def ref_href(project: str, ref: str) -> str:
    """A ``name@N`` reference's version page (a ref that is not ``name@N``: the model page)."""
    name, _, number = ref.rpartition("@")
    if name and number.isdigit():
        return version_href(project, name, int(number))
    return model_href(project, name or ref)


def dataset_href(project: str, ref: str) -> str | None:
    """A dataset version's page, from its ``name@N`` reference."""
    name, _, number = ref.rpartition("@")
    return dataset_version_href(project, name, int(number)) if name and number.isdigit() else None


def lineage_href(project: str, node: DataNode) -> str | None:
    if node.type == "model_version":
        return ref_href(project, node.label)
    return data_lineage_href(project, node)


# ---- flash messages and forms -------------------------------------------------------------
def flash(request: Request, kind: str, text: str) -> None:
    """A message for the next page this session renders (``kind``: success, info, error)."""
    set_flash(request, FLASH_KEY, kind, text)


def pop_flash(request: Request) -> dict[str, str] | None:
    return _pop_flash(request, FLASH_KEY)


# ---- shaping service results for the templates --------------------------------------------
def finite(value: Any) -> Any:
    """``value`` with NaN and infinities (in lists and dicts too) as None: JSON-safe."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _floats(values: Any) -> list[float | None]:
    if not isinstance(values, list):
        return []
    out: list[float | None] = []
    for v in values:
        out.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
    return out


def _points(xs: Any, ys: Any) -> list[list[float]]:
    return [
        [x, y]
        for x, y in zip(_floats(xs), _floats(ys), strict=False)
        if x is not None and y is not None
    ]


def short(value: Any) -> str:
    """A metric value as short text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def interval_text(interval: Any) -> str:
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        lo, hi = interval
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return f"{short(float(lo))} \u2013 {short(float(hi))}"  # en dash
    return ""


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: str
    interval: str
    headline: bool


def metric_rows(result: dict[str, Any]) -> list[MetricRow]:
    """The evaluation's metrics, the headline first, each with its bootstrap interval."""
    metrics = result.get("metrics") or {}
    intervals = result.get("intervals") or {}
    headline = result.get("headline")
    names = sorted(metrics, key=lambda n: (n != headline, n not in intervals, n))
    return [
        MetricRow(n, short(metrics[n]), interval_text(intervals.get(n)), n == headline)
        for n in names
    ]


@dataclass(frozen=True)
class ConfusionCell:
    count: int
    shade: int  # 0-4: the share of its true-label row, for the cell's class
    diagonal: bool


@dataclass(frozen=True)
class Confusion:
    labels: list[str]
    rows: list[list[ConfusionCell]]
    totals: list[int]


def confusion_table(result: dict[str, Any]) -> Confusion | None:
    """The confusion matrix (rows: true label, columns: predicted), shaded by row share."""
    confusion = result.get("confusion")
    if not isinstance(confusion, dict):
        return None
    labels = [str(x) for x in confusion.get("labels") or []]
    matrix = confusion.get("matrix") or []
    if not labels or len(matrix) != len(labels):
        return None
    rows: list[list[ConfusionCell]] = []
    totals: list[int] = []
    for i, row in enumerate(matrix):
        counts = [int(c) for c in row]
        total = sum(counts)
        totals.append(total)
        rows.append(
            [
                ConfusionCell(c, min(4, math.ceil(4 * c / total)) if total else 0, i == j)
                for j, c in enumerate(counts)
            ]
        )
    return Confusion(labels, rows, totals)


def _line(
    key: str,
    title: str,
    x_label: str,
    y_label: str,
    series: list[dict[str, Any]],
    *,
    unit: bool = True,
) -> dict[str, Any]:
    return {
        "id": key,
        "kind": "line",
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "unit": unit,  # both axes 0..1
        "series": series,
    }


def evaluation_charts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Chart specs for ``models.js`` from a stored ``EvaluationResult``'s JSON."""
    charts: list[dict[str, Any]] = []
    curves = result.get("curves") or {}
    metrics = result.get("metrics") or {}
    diagonal = {"label": "chance", "points": [[0.0, 0.0], [1.0, 1.0]], "dashed": True}
    roc = curves.get("roc")
    if isinstance(roc, dict):
        auc = metrics.get("roc_auc")
        label = f"ROC (AUC {short(auc)})" if auc is not None else "ROC"
        points = _points(roc.get("fpr"), roc.get("tpr"))
        charts.append(
            _line(
                "roc",
                "ROC curve",
                "False positive rate",
                "True positive rate",
                [{"label": label, "points": points}, diagonal],
            )
        )
    roc_ovr = curves.get("roc_ovr")
    if isinstance(roc_ovr, dict) and roc_ovr:
        series = [
            {
                "label": f"{label} (AUC {short(c.get('auc'))})",
                "points": _points(c.get("fpr"), c.get("tpr")),
            }
            for label, c in roc_ovr.items()
            if isinstance(c, dict)
        ]
        charts.append(
            _line(
                "roc",
                "ROC curves (one vs rest)",
                "False positive rate",
                "True positive rate",
                [*series, diagonal],
            )
        )
    pr = curves.get("pr")
    if isinstance(pr, dict):
        ap = metrics.get("pr_auc")
        label = f"PR (AP {short(ap)})" if ap is not None else "PR"
        charts.append(
            _line(
                "pr",
                "Precision-recall curve",
                "Recall",
                "Precision",
                [{"label": label, "points": _points(pr.get("recall"), pr.get("precision"))}],
            )
        )
    calibration = curves.get("calibration")
    if isinstance(calibration, dict):
        points = _points(calibration.get("prob_pred"), calibration.get("prob_true"))
        charts.append(
            _line(
                "calibration",
                "Calibration",
                "Mean predicted probability",
                "Fraction of positives",
                [
                    {"label": "model", "points": points, "counts": calibration.get("count")},
                    {**diagonal, "label": "perfectly calibrated"},
                ],
            )
        )
    sweep = result.get("threshold_sweep") or []
    if sweep:
        series = []
        for name in ("precision", "recall", "f1", "accuracy"):
            points = _points([r.get("threshold") for r in sweep], [r.get(name) for r in sweep])
            if points:
                series.append({"label": name, "points": points})
        if series:
            chart = _line("threshold", "Threshold sweep", "Threshold", "Metric", series)
            chart["marker"] = finite(result.get("threshold"))
            charts.append(chart)
    residuals = result.get("residuals")
    if isinstance(residuals, dict):
        hist = residuals.get("histogram") or {}
        edges = _floats(hist.get("bins"))
        counts = [int(c) for c in hist.get("counts") or []]
        if counts and len(edges) == len(counts) + 1:
            charts.append(
                {
                    "id": "residuals",
                    "kind": "histogram",
                    "title": "Residuals (actual - predicted)",
                    "x_label": "Residual",
                    "y_label": "Rows",
                    "labels": [short(e) for e in edges[:-1]],
                    "titles": [f"{short(a)} to {short(b)}" for a, b in itertools.pairwise(edges)],
                    "counts": counts,
                }
            )
        raw = residuals.get("points") or []
        points = [
            [float(p[0]), float(p[1])]
            for p in raw
            if isinstance(p, list)
            and len(p) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        ]
        if points:
            lo = min(min(p) for p in points)
            hi = max(max(p) for p in points)
            charts.append(
                {
                    "id": "predicted_actual",
                    "kind": "scatter",
                    "title": "Predicted vs actual",
                    "x_label": "Predicted",
                    "y_label": "Actual",
                    "series": [
                        {"label": "rows", "points": points},
                        {"label": "actual = predicted", "points": [[lo, lo], [hi, hi]]},
                    ],
                }
            )
    return charts


def importance_charts(importance: dict[str, Any]) -> list[dict[str, Any]]:
    """Horizontal bar charts of a stored ``GlobalImportance``: permutation importance
    (``importance``, in the stored order, with its standard deviations) and mean |SHAP|
    (``importance_shap``, largest first). Two charts, not one: their units differ (a drop
    in the score, and the model's output units)."""
    features = [f for f in importance.get("features") or [] if isinstance(f, dict)]
    charts: list[dict[str, Any]] = []
    permutation = [f for f in features if isinstance(f.get("permutation_mean"), (int, float))]
    if permutation:
        top = permutation[:MAX_IMPORTANCE_BARS]
        scoring = importance.get("scoring")
        charts.append(
            {
                "id": "importance",
                "kind": "hbar",
                "title": "Permutation importance",
                "x_label": f"Drop in {scoring} when the feature is shuffled"
                if scoring
                else "Drop in the score when the feature is shuffled",
                "labels": [str(f.get("name", "")) for f in top],
                "series": [
                    {
                        "label": "permutation",
                        "values": _floats([f.get("permutation_mean") for f in top]),
                        "errors": _floats([f.get("permutation_std") for f in top]),
                    }
                ],
            }
        )
    shap = [f for f in features if isinstance(f.get("shap_mean_abs"), (int, float))]
    if shap:
        top = sorted(shap, key=lambda f: -float(f["shap_mean_abs"]))[:MAX_IMPORTANCE_BARS]
        charts.append(
            {
                "id": "importance_shap",
                "kind": "hbar",
                "title": "Mean |SHAP value|",
                "x_label": "Mean |SHAP value|",
                "labels": [str(f.get("name", "")) for f in top],
                "series": [
                    {
                        "label": "mean |SHAP|",
                        "values": _floats([f.get("shap_mean_abs") for f in top]),
                    }
                ],
            }
        )
    return charts


@dataclass(frozen=True)
class ContributionRow:
    feature: str
    value: str
    shap_value: float
    running: float  # the output after adding this contribution


def waterfall(explanation: dict[str, Any]) -> tuple[dict[str, Any], list[ContributionRow]]:
    """A waterfall (floating bars from the base value to the prediction) and its table."""
    base = float(explanation.get("base_value") or 0.0)
    contributions = [c for c in explanation.get("contributions") or [] if isinstance(c, dict)]
    rows: list[ContributionRow] = []
    running = base
    for c in contributions:
        shap_value = float(c.get("shap_value") or 0.0)
        running += shap_value
        value = c.get("value")
        rows.append(
            ContributionRow(
                str(c.get("feature", "")),
                "null" if value is None else short(value),
                shap_value,
                running,
            )
        )
    labels: list[str] = []
    bars: list[list[float]] = []
    deltas: list[float] = []
    position = base
    shown = rows[:MAX_WATERFALL_BARS]
    for row in shown:
        labels.append(f"{row.feature} = {row.value}")
        bars.append([position, position + row.shap_value])
        deltas.append(row.shap_value)
        position += row.shap_value
    rest = rows[MAX_WATERFALL_BARS:]
    if rest:
        delta = sum(r.shap_value for r in rest)
        labels.append(f"{len(rest)} other features")
        bars.append([position, position + delta])
        deltas.append(delta)
        position += delta
    prediction = float(explanation.get("prediction", position))
    chart = {
        "id": "waterfall",
        "kind": "waterfall",
        "title": "Contributions to this prediction",
        "x_label": str(explanation.get("output") or "model output"),
        "labels": labels,
        "bars": finite(bars),
        "deltas": finite(deltas),
        "base_value": finite(base),
        "prediction": finite(prediction),
    }
    return chart, rows


def _example_value(kind: str) -> Any:
    t = kind.lower()
    if t.startswith(("int", "uint")):
        return 0
    if t in ("float", "double", "halffloat") or t.startswith(("float", "decimal")):
        return 0.0
    if t in ("bool", "boolean"):
        return False
    if t.startswith(("timestamp", "date")):
        return "2024-01-01T00:00:00"
    return ""


def example_record(version: VersionOut, sample: dict[str, Any] | None = None) -> str:
    """One JSON record with the model's inputs: a dataset row's values where one was read,
    else a placeholder of each input's type."""
    inputs = (version.signature or {}).get("inputs") or []
    record: dict[str, Any] = {}
    for column in inputs:
        if not isinstance(column, dict) or "name" not in column:
            continue
        name = str(column["name"])
        if sample is not None and name in sample:
            record[name] = sample[name]
        else:
            record[name] = _example_value(str(column.get("type", "")))
    return json.dumps(finite(record), indent=2, ensure_ascii=False, default=str)


def parse_record(text: str) -> dict[str, Any]:
    """The explain form's text: one JSON object (or a list holding one)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"The row is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            'give one object such as {"tenure": 3, "plan": "basic"}.'
        ) from None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict) or not value:
        raise InvalidInput(
            'Give one row as a JSON object of the model\'s inputs, e.g. {"tenure": 3}.'
        )
    return value


def model_lineage_graph(graph: ModelLineageOut, version: VersionOut) -> LineageOut:
    """The registry's lineage in the shape :func:`render_svg` draws, rooted at the version."""
    nodes = [DataNode(type=n.type, id=n.id, label=n.label) for n in graph.nodes]
    root = next(
        (n for n in nodes if n.type == "model_version" and n.id == version.id),
        DataNode(type="model_version", id=version.id, label=version.ref),
    )
    edges = [
        DataEdge(
            parent=DataNode(type=e.parent.type, id=e.parent.id, label=e.parent.label),
            child=DataNode(type=e.child.type, id=e.child.id, label=e.child.label),
            relation=e.relation,
            created_at=version.created_at,
        )
        for e in graph.edges
    ]
    return LineageOut(root=root, nodes=nodes, edges=edges)


# ---- the model card's Markdown as HTML -----------------------------------------------------
_INLINE = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")
_TABLE_SEP = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _inline(text: str) -> Markup:
    """Escaped text with **bold** and `code`: the only inline Markdown the card uses."""
    out: list[str] = []
    last = 0
    for m in _INLINE.finditer(text):
        out.append(str(escape(text[last : m.start()])))
        if m.group(1) is not None:
            out.append(f"<strong>{escape(m.group(1))}</strong>")
        else:
            out.append(f"<code>{escape(m.group(2))}</code>")
        last = m.end()
    out.append(str(escape(text[last:])))
    return Markup("".join(out))  # noqa: S704  # every piece of text is escaped above


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    cells = re.split(r"(?<!\\)\|", inner)
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_html(text: str) -> Markup:
    """A small, safe Markdown renderer for model cards: headings, lists, tables, paragraphs.

    Every piece of text is escaped; no HTML in the Markdown reaches the page as markup.
    """
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if not stripped:
            end_paragraph()
            i += 1
        elif heading:
            end_paragraph()
            level = min(len(heading.group(1)) + 1, 6)  # the page has its own h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith(("- ", "* ")):
            end_paragraph()
            items = []
            while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and _TABLE_SEP.match(lines[i + 1].strip())
        ):
            end_paragraph()
            head = _cells(stripped)
            i += 2
            body = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                body.append(_cells(lines[i]))
                i += 1
            parts = ['<div class="table-scroll"><table class="grid card-table"><thead><tr>']
            parts += [f"<th>{_inline(c)}</th>" for c in head]
            parts.append("</tr></thead><tbody>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table></div>")
            out.append("".join(parts))
        else:
            paragraph.append(stripped)
            i += 1
    end_paragraph()
    return Markup("\n".join(out))  # noqa: S704  # built from escaped pieces only


# ---- comparisons ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SideBySide:
    metric: str
    champion: str
    challenger: str
    diff: str


def side_by_side(result: dict[str, Any]) -> list[SideBySide]:
    """Champion and challenger metrics in one table (``champion_metrics`` and
    ``challenger_metrics`` of the stored ``ComparisonResult``), the headline first."""
    champion: dict[str, Any] = result.get("champion_metrics") or {}
    challenger: dict[str, Any] = result.get("challenger_metrics") or {}
    headline = result.get("headline")
    rows = []
    for name in sorted(set(champion) | set(challenger), key=lambda n: (n != headline, n)):
        a, b = champion.get(name), challenger.get(name)
        diff = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        rows.append(SideBySide(name, short(a), short(b), short(diff)))
    return rows


@dataclass(frozen=True)
class StatTest:
    name: str
    metric: str
    champion: str
    challenger: str
    diff: str
    statistic: str
    p_value: str
    interval: str
    significant: bool | None


def comparison_tests(result: dict[str, Any]) -> list[StatTest]:
    """The paired tests of a stored ``ComparisonResult`` (``tests``: name, metric, champion,
    challenger, diff, statistic, p_value, ci_low, ci_high); a test is marked significant
    when its p-value is below the comparison's ``alpha``."""
    alpha = result.get("alpha")
    rows = []
    for t in result.get("tests") or []:
        if not isinstance(t, dict):
            continue
        p_value = t.get("p_value")
        significant = (
            p_value < alpha
            if isinstance(p_value, (int, float)) and isinstance(alpha, (int, float))
            else None
        )
        rows.append(
            StatTest(
                name=str(t.get("name", "")),
                metric=str(t.get("metric", "")),
                champion=short(t.get("champion")),
                challenger=short(t.get("challenger")),
                diff=short(t.get("diff")),
                statistic=short(t.get("statistic")),
                p_value=short(p_value),
                interval=interval_text([t.get("ci_low"), t.get("ci_high")]),
                significant=significant,
            )
        )
    return rows


def verdict_text(verdict: str) -> str:
    return verdict.replace("_", " ")


# ---- pages ----------------------------------------------------------------------------------
@router.get("/projects/{project}/models", **auth_rule(Role.VIEWER))
def models_page(
    request: Request,
    project: str,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    page = svc.registry.list_models(
        principal, project, max_results=MODELS_PAGE_SIZE, page_token=page_token
    )
    pending = svc.registry.list_requests(principal, project, status="pending")
    next_link = (
        "?" + urlencode({"page_token": page.next_page_token}) if page.next_page_token else None
    )
    return render(
        request,
        principal,
        "models.html",
        project=project,
        area="models",
        title="Models",
        models=page.items,
        pending=len(pending),
        next_link=next_link,
        first_link="?" if page_token else None,
        model_href=lambda name: model_href(project, name),
        version_href=lambda name, n: version_href(project, name, n),
        requests_href=requests_href(project),
        flash=pop_flash(request),
    )


@router.get(f"/projects/{{project}}/models/{REQUESTS_SEGMENT}", **auth_rule(Role.VIEWER))
def requests_page(
    request: Request,
    project: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    everything = svc.registry.list_requests(principal, project, status=None)
    pending = [r for r in everything if r.status == "pending"]
    decided = [r for r in everything if r.status != "pending"][:50]
    return render(
        request,
        principal,
        "alias_requests.html",
        project=project,
        area="models",
        title="Alias requests",
        pending=pending,
        decided=decided,
        policy=svc.registry.get_policy(principal, project),
        models_href=models_href(project),
        model_href=lambda name: model_href(project, name),
        version_href=lambda name, n: version_href(project, name, n),
        action_href=lambda request_id: f"{requests_href(project)}/{segment(request_id)}",
        flash=pop_flash(request),
    )


@router.post(
    f"/projects/{{project}}/models/{REQUESTS_SEGMENT}/{{request_id}}", **auth_rule(Role.MAINTAINER)
)
def decide_request(
    request: Request,
    project: str,
    request_id: str,
    decision: str = Form(""),
    note: str = Form(""),
    csrf_token: str = Form(""),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    back = requests_href(project)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    if decision not in ("approve", "reject"):
        flash(request, "error", "Choose Approve or Reject.")
        return RedirectResponse(back, status_code=303)
    try:
        out = svc.registry.decide_request(
            principal, project, request_id, approve=decision == "approve", note=note.strip()
        )
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
    else:
        if out.status == "approved":
            text = f"Approved: {out.model}@{out.alias} now points at version {out.version}."
        else:
            text = f"Rejected the request to move {out.model}@{out.alias} to version {out.version}."
        flash(request, "success", text)
    return RedirectResponse(back, status_code=303)


@dataclass(frozen=True)
class AliasMove:
    """The confirmation step of an alias move."""

    alias: str
    version: int
    current: int | None
    protected: bool
    reason: str


def _alias_move(
    svc: EvaluationService,
    principal: Principal,
    project: str,
    model: str,
    alias: str,
    version: str,
    reason: str,
    aliases: dict[str, int],
    protected: Sequence[str],
) -> AliasMove:
    """Check the form's alias and version (the service checks again when it moves)."""
    from modelworks.registry.refs import check_alias

    check_alias(alias.strip())
    if not version.strip().isdigit():
        raise InvalidInput("Choose the version the alias should point at.")
    target = svc.registry.get_version(principal, project, f"{model}@{int(version)}")
    name = alias.strip()
    return AliasMove(name, target.version, aliases.get(name), name in protected, reason.strip())


@router.get("/projects/{project}/models/{model}", **auth_rule(Role.VIEWER))
def model_page(
    request: Request,
    project: str,
    model: str,
    alias: str | None = None,
    version: str | None = None,
    reason: str = "",
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    """The model, its versions, aliases and comparisons; with ``?alias=&version=`` the
    confirmation of moving that alias."""
    info = svc.registry.get_model(principal, project, model)
    versions = svc.registry.list_versions(principal, project, model)
    policy = svc.registry.get_policy(principal, project)
    comparisons = svc.list_comparisons(principal, project, model)
    move: AliasMove | None = None
    move_error: str | None = None
    if alias is not None or version is not None:
        try:
            move = _alias_move(
                svc,
                principal,
                project,
                model,
                alias or "",
                version or "",
                reason,
                info.aliases,
                policy.protected_aliases,
            )
        except ModelworksError as exc:
            move_error = exc.detail
    return render(
        request,
        principal,
        "model.html",
        project=project,
        area="models",
        title=info.name,
        model=info,
        versions=versions,
        protected=policy.protected_aliases,
        comparisons=comparisons,
        move=move,
        move_error=move_error,
        form_alias=(alias or "").strip(),
        form_version=(version or "").strip(),
        models_href=models_href(project),
        model_href=model_href(project, info.name),
        version_href=lambda n: version_href(project, info.name, n),
        comparison_href=lambda cid: comparison_href(project, info.name, cid),
        ref_href=lambda ref: ref_href(project, ref),
        requests_href=requests_href(project),
        verdict_text=verdict_text,
        short=short,
        flash=pop_flash(request),
    )


@router.post("/projects/{project}/models/{model}/aliases", **auth_rule(Role.EDITOR))
def move_alias(
    request: Request,
    project: str,
    model: str,
    alias: str = Form(""),
    version: str = Form(""),
    reason: str = Form(""),
    csrf_token: str = Form(""),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    back = model_href(project, model)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    try:
        if not version.strip().isdigit():
            raise InvalidInput("Choose the version the alias should point at.")
        out = svc.registry.set_alias(
            principal, project, model, alias.strip(), int(version), reason=reason.strip()
        )
    except ModelworksError as exc:
        flash(request, "error", exc.detail)
    else:
        flash(request, "info" if out.status != "moved" else "success", alias_message(out))
    return RedirectResponse(back, status_code=303)


def alias_message(out: AliasOut) -> str:
    if out.status == "pending_approval":
        return (
            f"{out.alias} is a protected alias: your request to move it to version "
            f"{out.version} is pending approval by a maintainer (request {out.request_id})."
        )
    if out.status == "unchanged":
        return f"{out.alias} already points at version {out.version}; nothing changed."
    if out.previous_version is None:
        return f"Set {out.model}@{out.alias} to version {out.version}."
    return f"Moved {out.alias} from version {out.previous_version} to version {out.version}."


@dataclass
class Explained:
    """The explain form's state: the row and background sent, the explanation or the error."""

    record: str
    background: str = ""  # a dataset version: the rows the base value averages over
    chart: dict[str, Any] | None = None
    rows: list[ContributionRow] | None = None
    explanation: dict[str, Any] | None = None
    error: str | None = None


def _sample_row(
    request: Request, principal: Principal, project: str, dataset: str | None
) -> dict[str, Any] | None:
    """The first row of a dataset version the model was evaluated or explained on."""
    if not dataset:
        return None
    data = getattr(request.app.state, "data", None)
    svc = data if isinstance(data, DataService) else DataService(request.app.state.store)
    try:
        preview = svc.preview(principal, project, dataset, offset=0, limit=1)
    except ModelworksError:
        return None  # deleted or unreadable: the example falls back to the signature's types
    if not preview.rows:
        return None
    return {c.name: v for c, v in zip(preview.columns, preview.rows[0], strict=False)}


def _version_page(
    request: Request,
    principal: Principal,
    svc: EvaluationService,
    project: str,
    model: str,
    number: int,
    evaluation_id: str | None,
    explained: Explained | None,
    status: int = 200,
) -> Response:
    v = svc.registry.get_version(principal, project, f"{model}@{number}")
    evaluations_ = svc.list_evaluations(principal, project, v.ref, limit=EVALUATIONS_SHOWN)
    chosen: EvaluationOut | None = None
    if evaluation_id:
        chosen = next((e for e in evaluations_ if e.id == evaluation_id), None)
        if chosen is None:
            chosen = svc.get_evaluation(principal, project, evaluation_id)
            if chosen.ref != v.ref:
                raise NotFound(
                    f"Evaluation {evaluation_id!r} is of {chosen.ref}, not of {v.ref}; open it "
                    f"at {version_href(project, chosen.model, chosen.version)}."
                )
    elif evaluations_:
        chosen = evaluations_[0]
    importance = (
        svc.registry.get_importance(principal, project, v.ref) if v.has_importance else None
    )
    charts = evaluation_charts(chosen.result) if chosen else []
    if importance:
        charts.extend(importance_charts(importance))
    if explained is None:
        dataset = chosen.dataset if chosen else (importance or {}).get("dataset")
        sample = _sample_row(request, principal, project, dataset)
        explained = Explained(record=example_record(v, sample), background=dataset or "")
    if explained.chart:
        charts.append(explained.chart)
    card = model_card(svc.registry, principal, project, v.ref)
    graph = svc.registry.lineage(principal, project, v.ref, depth=LINEAGE_DEPTH)
    lineage_svg = render_svg(
        model_lineage_graph(graph, v), lambda node: lineage_href(project, node)
    )
    result = chosen.result if chosen else {}
    api = f"/api/v1/projects/{segment(project)}"
    return render(
        request,
        principal,
        "model_version.html",
        project=project,
        area="models",
        status=status,
        title=v.ref,
        v=v,
        evaluations=evaluations_,
        evaluation=chosen,
        result=result,
        metric_rows=metric_rows(result),
        confusion=confusion_table(result),
        per_class=sorted((result.get("per_class") or {}).items()),
        worst_slices=result.get("worst_slices") or [],
        charts=finite(charts),
        chart_ids={c["id"] for c in charts},
        plot_href=lambda e, name: f"{api}/evaluations/{segment(e.id)}/plots/{segment(name)}",
        importance=importance,
        importance_png=f"{api}/model-versions/{segment(v.ref)}/importance.png",
        card_html=markdown_html(card.markdown),
        lineage=graph,
        lineage_svg=lineage_svg,
        lineage_depth=LINEAGE_DEPTH,
        explained=explained,
        dataset_href=lambda ref: dataset_href(project, ref),
        explain_href=version_href(project, v.model, v.version) + "/explain",
        model_href=model_href(project, v.model),
        models_href=models_href(project),
        version_href=lambda n: version_href(project, v.model, n),
        ref_href=lambda ref: ref_href(project, ref),
        run_href=f"/runs/{segment(v.run_id)}" if v.run_id else None,
        short=short,
        interval_text=interval_text,
        flash=pop_flash(request),
    )


@router.get("/projects/{project}/models/{model}/versions/{version}", **auth_rule(Role.VIEWER))
def version_page(
    request: Request,
    project: str,
    model: str,
    version: str,
    evaluation: str | None = Query(None, description="Show this evaluation, not the latest"),
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    """``.../versions/3``; ``.../versions/champion`` (or ``latest``) goes to its number."""
    if not version.isdigit():
        v = svc.registry.get_version(principal, project, f"{model}@{version}")
        return RedirectResponse(version_href(project, v.model, v.version), status_code=303)
    return _version_page(request, principal, svc, project, model, int(version), evaluation, None)


@router.post(
    "/projects/{project}/models/{model}/versions/{version}/explain", **auth_rule(Role.VIEWER)
)
def explain_row(
    request: Request,
    project: str,
    model: str,
    version: int,
    record: str = Form(""),
    background: str = Form(""),
    csrf_token: str = Form(""),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    """Explain one prediction: the version page again, with the waterfall and its table.

    ``background``: a dataset version whose rows the base value averages over (the form
    offers the one the version was evaluated on); linear and model-agnostic explainers need
    one to explain a single row."""
    back = version_href(project, model, version)
    caller = form_caller(request, csrf_token, back, FLASH_KEY)
    if isinstance(caller, Response):
        return caller
    principal = caller
    explained = Explained(record=record, background=background.strip())
    status = 200
    try:
        row = parse_record(record)
        ref = f"{model}@{version}"
        explanation = svc.explain_rows(
            principal, project, ref, [row], background=explained.background or None
        )[0]
    except ModelworksError as exc:
        explained.error = exc.detail
        if not explained.background and "background" in exc.detail:
            explained.error += " Here: fill in the background dataset version."
        status = form_error_status(exc)
    else:
        chart, rows = waterfall(explanation)
        explained.chart, explained.rows, explained.explanation = chart, rows, explanation
    return _version_page(
        request, principal, svc, project, model, version, None, explained, status=status
    )


@router.get(
    "/projects/{project}/models/{model}/comparisons/{comparison_id}", **auth_rule(Role.VIEWER)
)
def comparison_page(
    request: Request,
    project: str,
    model: str,
    comparison_id: str,
    principal: Principal = Depends(current_principal),
    svc: EvaluationService = Depends(evaluations),
) -> Response:
    cmp: ComparisonOut = svc.get_comparison(principal, project, comparison_id)
    if cmp.model != model:
        raise NotFound(
            f"Comparison {comparison_id!r} is of model {cmp.model!r}, not {model!r}; open it at "
            f"{comparison_href(project, cmp.model, cmp.id)}."
        )
    api = f"/api/v1/projects/{segment(project)}"
    result = cmp.result
    return render(
        request,
        principal,
        "comparison.html",
        project=project,
        area="models",
        title=f"{cmp.champion} vs {cmp.challenger}",
        cmp=cmp,
        result=result,
        summary=str(result.get("summary") or ""),
        side_by_side=side_by_side(result),
        tests=comparison_tests(result),
        notes=[str(n) for n in result.get("notes") or []],
        verdict=verdict_text(cmp.verdict),
        plot_href=lambda name: f"{api}/comparisons/{segment(cmp.id)}/plots/{segment(name)}",
        models_href=models_href(project),
        model_href=model_href(project, cmp.model),
        ref_href=lambda ref: ref_href(project, ref),
        dataset_href=lambda ref: dataset_href(project, ref),
        short=short,
    )
