"""Data pages: a project's datasets, one dataset's versions, and one version in detail.

Thin adapters over :class:`~modelworks.data.service.DataService`, rendered in the shared
layout of :mod:`modelworks.server.pages`; the shell (:mod:`modelworks.server.ui`) includes
:data:`router`. The functions here only reshape service results for the templates (table
rows, chart series, preview cells); no data rule lives here. Profile charts reach the page
as JSON in ``<script type="application/json" id="profile-data">``, drawn by
``static/js/data.js``; the lineage graph is SVG drawn on the server
(:mod:`modelworks.data.lineage_svg`).
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import yaml
from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput, ModelworksError
from modelworks.data.expectations import dump_suite, suite_from_json
from modelworks.data.lineage_svg import render_svg
from modelworks.data.schemas import (
    ColumnProfile,
    DatasetOut,
    LineageNodeOut,
    PreviewOut,
    Profile,
    SchemaChanges,
    VersionOut,
)
from modelworks.data.service import DataService
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal
from modelworks.server.pages import page_router, render, segment
from modelworks.training.ui import train_choices

DATASETS_PAGE_SIZE = 50
PREVIEW_ROWS = 50  # default page of the data preview
MAX_PREVIEW_ROWS = 500  # a page larger than this is slow to render and to read
MAX_CELL_CHARS = 80  # longer preview values are cut, with more of the value in the tooltip
MAX_TITLE_CHARS = 1000
MAX_PROFILE_CHARTS = 48  # one canvas each; a very wide dataset would make the page crawl
MAX_CHART_LABEL = 40
MAX_TICK_CHARS = 24  # a chart's axis label; the tooltip has the longer text
LINEAGE_DEPTH = 4  # steps drawn up and down from the version; the REST API walks further

router = page_router()


def data_service(request: Request) -> DataService:
    """The app's DataService, or one over the app's store (the service holds no state)."""
    svc = getattr(request.app.state, "data", None)
    if isinstance(svc, DataService):
        return svc
    return DataService(request.app.state.store)


# ---- links -----------------------------------------------------------------------------
def dataset_href(project: str, dataset: str) -> str:
    return f"/projects/{segment(project)}/data/{segment(dataset)}"


def version_href(project: str, dataset: str, version: int) -> str:
    return f"{dataset_href(project, dataset)}/versions/{version}"


def lineage_href(project: str, node: LineageNodeOut) -> str | None:
    """A lineage node's page: dataset versions by their ``name@N`` label, runs by id."""
    if node.type == "dataset_version":
        name, _, number = node.label.rpartition("@")
        return version_href(project, name, int(number)) if name and number.isdigit() else None
    if node.type == "run":
        return f"/runs/{segment(node.id)}"
    return None  # sources (and later types without pages) are drawn without a link


# ---- shaping service results for the templates ------------------------------------------
def _short_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def show_value(value: Any, limit: int = MAX_CHART_LABEL) -> str:
    """A statistic (min, max, a top value) as short text: numbers compact, text cut."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _short_number(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def suite_yaml(suite: dict[str, Any]) -> str:
    """The stored suite as the YAML people edit (``modelworks data expectations edit``)."""
    try:
        return dump_suite(suite_from_json(suite))
    except InvalidInput:  # stored by an older release in a shape this one no longer reads
        return yaml.safe_dump(suite, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class SchemaRow:
    name: str
    type: str
    nullable: bool
    profile: ColumnProfile | None

    @property
    def null_rate(self) -> str:
        if self.profile is None:
            return "—"
        rate = self.profile.null_rate * 100
        return "0%" if rate == 0 else f"{rate:.3g}%"

    @property
    def distinct(self) -> str:
        d = self.profile.distinct if self.profile else None
        return "—" if d is None else f"{d:,}"

    @property
    def minimum(self) -> str:
        return show_value(self.profile.min, MAX_TICK_CHARS) if self.profile else "—"

    @property
    def maximum(self) -> str:
        return show_value(self.profile.max, MAX_TICK_CHARS) if self.profile else "—"

    @property
    def minimum_full(self) -> str:
        return show_value(self.profile.min, MAX_TITLE_CHARS) if self.profile else ""

    @property
    def maximum_full(self) -> str:
        return show_value(self.profile.max, MAX_TITLE_CHARS) if self.profile else ""

    @property
    def mean(self) -> str:
        m = self.profile.mean if self.profile else None
        return "—" if m is None else _short_number(m)


def schema_rows(version: VersionOut) -> list[SchemaRow]:
    profiles = {c.name: c for c in version.profile.columns} if version.profile else {}
    return [SchemaRow(c.name, c.type, c.nullable, profiles.get(c.name)) for c in version.columns]


def _edge_labels(edges: Sequence[float | str]) -> tuple[list[str], list[str]]:
    """(tick labels, full labels) of histogram edges: ticks short enough to sit under a bar.

    Temporal edges are ISO strings; ticks show the date alone when the bins are days apart
    or more, and the time of day only when the whole range is shorter than a few days.
    """
    full: list[str] = []
    times: list[datetime | None] = []
    for edge in edges:
        if isinstance(edge, str):
            try:
                times.append(datetime.fromisoformat(edge))
            except ValueError:
                times.append(None)
            full.append(edge.replace("T", " ")[:19])
        else:
            times.append(None)
            full.append(_short_number(edge))
    known = [t for t in times if t is not None]
    if len(known) != len(edges) or len(known) < 2:
        return [f[:MAX_TICK_CHARS] for f in full], full
    midnight = all(t.time() == time() for t in known)
    span = max(known) - min(known)
    if midnight or span >= timedelta(days=3):
        ticks = [t.strftime("%Y-%m-%d") for t in known]
    else:
        ticks = [t.strftime("%m-%d %H:%M") for t in known]
    if midnight:
        full = ticks
    return ticks, full


def _top_value_label(value: Any) -> str:
    return "(null)" if value is None else show_value(value, MAX_TICK_CHARS)


def profile_charts(profile: Profile | None) -> list[dict[str, Any]]:
    """Chart series for ``data.js``: a histogram per binned column, top values per text one.

    Each chart has short ``labels`` for its axis and full ``titles`` for its tooltips.
    """
    if profile is None:
        return []
    charts: list[dict[str, Any]] = []
    for col in profile.columns:
        if col.histogram is not None and col.histogram.counts:
            ticks, full = _edge_labels(col.histogram.edges)
            bins = min(len(col.histogram.counts), len(ticks) - 1)
            charts.append(
                {
                    "column": col.name,
                    "kind": "histogram",
                    "labels": ticks[:bins],
                    "titles": [f"{full[i]} \u2013 {full[i + 1]}" for i in range(bins)],  # en dash
                    "counts": col.histogram.counts[:bins],
                }
            )
        elif (
            col.top_values
            and col.kind in ("string", "boolean", "other")
            # All-distinct values (ids, free text) make a chart of bars of height one.
            and max(t.count for t in col.top_values) > 1
        ):
            charts.append(
                {
                    "column": col.name,
                    "kind": "top_values",
                    "labels": [_top_value_label(t.value) for t in col.top_values],
                    "titles": [
                        "(null)" if t.value is None else show_value(t.value, MAX_TITLE_CHARS)
                        for t in col.top_values
                    ],
                    "counts": [t.count for t in col.top_values],
                }
            )
        if len(charts) == MAX_PROFILE_CHARTS:
            break
    return charts


def schema_change_summary(version: VersionOut) -> tuple[str, str]:
    """(short text for a table cell, the full list for its tooltip)."""
    changes: SchemaChanges = version.schema_changes
    if version.version == 1 and changes.empty:
        return "initial", "The first version of the dataset."
    if changes.empty:
        return "none", "Same columns and types as the previous version."
    short, full = [], []
    if changes.added:
        short.append(f"+{len(changes.added)}")
        full.append("added " + ", ".join(c.name for c in changes.added))
    if changes.removed:
        short.append(f"-{len(changes.removed)}")
        full.append("removed " + ", ".join(c.name for c in changes.removed))
    if changes.retyped:
        short.append(f"~{len(changes.retyped)}")
        full.append(
            "retyped "
            + ", ".join(
                f"{r.get('name')} ({r.get('from')} → {r.get('to')})" for r in changes.retyped
            )
        )
    return " ".join(short), "; ".join(full)


@dataclass(frozen=True)
class Cell:
    text: str
    title: str = ""  # the longer value, when ``text`` was cut
    null: bool = False


def preview_cell(value: Any) -> Cell:
    """One preview value as text; long values are cut (the page must stay readable)."""
    if value is None:
        return Cell("null", null=True)
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if len(text) <= MAX_CELL_CHARS:
        return Cell(text)
    return Cell(text[: MAX_CELL_CHARS - 1] + "…", title=text[:MAX_TITLE_CHARS])


@dataclass(frozen=True)
class PreviewPage:
    preview: PreviewOut
    rows: list[list[Cell]]
    previous_link: str | None
    next_link: str | None

    @property
    def first_row(self) -> int:
        return self.preview.offset + 1 if self.rows else 0

    @property
    def last_row(self) -> int:
        return self.preview.offset + len(self.rows)


def preview_page(preview: PreviewOut) -> PreviewPage:
    def link(offset: int) -> str:
        return "?" + urlencode({"offset": offset, "limit": preview.limit}) + "#preview"

    previous_link = link(max(0, preview.offset - preview.limit)) if preview.offset > 0 else None
    next_link = (
        link(preview.offset + preview.limit)
        if preview.offset + len(preview.rows) < preview.total and preview.rows
        else None
    )
    rows = [[preview_cell(v) for v in row] for row in preview.rows]
    return PreviewPage(preview, rows, previous_link, next_link)


def expectation_parts(expectation: dict[str, Any]) -> tuple[str, str]:
    """(what kind of check, its arguments) for a results table, whatever the suite's shape."""
    rest = dict(expectation)
    kind = ""
    for key in ("type", "expectation_type", "expectation", "expect", "kind", "name"):
        if isinstance(rest.get(key), str):
            kind = rest.pop(key)
            break
    if isinstance(rest.get("kwargs"), dict) and len(rest) == 1:
        rest = rest["kwargs"]
    if rest.get("severity") == "error":  # the default; only a warning is worth a mention
        del rest["severity"]
    args = ", ".join(
        f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in rest.items()
    )
    return kind or "expectation", args


# ---- pages -----------------------------------------------------------------------------
@router.get("/projects/{project}/data", **auth_rule(Role.VIEWER))
def datasets_page(
    request: Request,
    project: str,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data_service),
) -> Response:
    page = svc.list_datasets(
        principal, project, max_results=DATASETS_PAGE_SIZE, page_token=page_token
    )
    latest: dict[str, VersionOut] = {}
    for ds in page.items:
        if ds.latest_version:
            # One small read per listed dataset: DatasetOut does not carry row counts.
            latest[ds.name] = svc.get_version(
                principal, project, f"{ds.name}@{ds.latest_version}", with_profile=False
            )
    next_link = (
        "?" + urlencode({"page_token": page.next_page_token}) if page.next_page_token else None
    )
    return render(
        request,
        principal,
        "datasets.html",
        project=project,
        area="data",
        title="Data",
        datasets=page.items,
        latest=latest,
        next_link=next_link,
        first_link="?" if page_token else None,
    )


@router.get("/projects/{project}/data/ref/{ref}", **auth_rule(Role.VIEWER))
def ref_page(
    project: str,
    ref: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data_service),
) -> Response:
    """``.../data/ref/churn@golden`` (or ``@latest``, ``@3``): the version page it names."""
    version = svc.get_version(principal, project, ref, with_profile=False)
    return RedirectResponse(version_href(project, version.dataset, version.version), 303)


@router.get("/projects/{project}/data/{dataset}", **auth_rule(Role.VIEWER))
def dataset_page(
    request: Request,
    project: str,
    dataset: str,
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data_service),
) -> Response:
    info: DatasetOut = svc.get_dataset(principal, project, dataset)
    versions = svc.list_versions(principal, project, dataset)
    # A deleted dataset keeps its versions on show, but the service hides its suite.
    suite = None if info.deleted else svc.get_expectations(principal, project, dataset)
    return render(
        request,
        principal,
        "dataset.html",
        project=project,
        area="data",
        title=info.name,
        dataset=info,
        versions=versions,
        changes={v.version: schema_change_summary(v) for v in versions},
        suite_yaml=suite_yaml(suite) if suite is not None else None,
    )


@router.get("/projects/{project}/data/{dataset}/versions/{version}", **auth_rule(Role.VIEWER))
def version_page(
    request: Request,
    project: str,
    dataset: str,
    version: int,
    offset: int = Query(0, ge=0),
    limit: int = Query(PREVIEW_ROWS, ge=1, le=MAX_PREVIEW_ROWS),
    principal: Principal = Depends(current_principal),
    svc: DataService = Depends(data_service),
) -> Response:
    ref = f"{dataset}@{version}"
    v = svc.get_version(principal, project, ref)
    preview: PreviewPage | None = None
    preview_error = None
    try:
        preview = preview_page(svc.preview(principal, project, ref, offset=offset, limit=limit))
    except ModelworksError as exc:  # unreadable bytes: say so, keep the rest of the page
        preview_error = exc.detail
    lineage = svc.lineage(principal, project, ref, direction="both", depth=LINEAGE_DEPTH)
    lineage_svg: Markup = render_svg(lineage, lambda node: lineage_href(project, node))
    return render(
        request,
        principal,
        "dataset_version.html",
        project=project,
        area="data",
        title=v.ref,
        v=v,
        schema=schema_rows(v),
        charts=profile_charts(v.profile),
        change_summary=schema_change_summary(v),
        source_json=pretty_json(v.source),
        recipe_json=pretty_json(v.recipe) if v.recipe is not None else None,
        validations=svc.list_validations(principal, project, ref, limit=20),
        expectation_parts=expectation_parts,
        show_value=show_value,
        lineage=lineage,
        lineage_svg=lineage_svg,
        lineage_depth=LINEAGE_DEPTH,
        reject_keys=list(dict.fromkeys(k for ex in v.rejects.examples for k in ex))
        if v.rejects
        else [],
        preview=preview,
        preview_error=preview_error,
        dataset_href=dataset_href(project, dataset),
        train=train_choices(),  # the "Train a model" form's choices
    )
