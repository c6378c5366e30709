"""Tracking pages: experiments, a runs table with filter and sort, a run, and run comparison.

Thin adapters over :class:`~modelworks.tracking.service.TrackingService`, rendered in the
shared layout of :mod:`modelworks.server.pages`; the shell (:mod:`modelworks.server.ui`)
includes :data:`router`. Metric histories reach the page's charts as JSON in
``<script type="application/json">`` elements (see :func:`chart_data`).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import Response

from modelworks.core.auth import Principal, Role
from modelworks.core.errors import InvalidInput
from modelworks.server.auth_rules import auth_rule
from modelworks.server.deps import current_principal, tracking
from modelworks.server.pages import page_router, render
from modelworks.tracking.schemas import MetricPoint, RunComparison, RunOut
from modelworks.tracking.service import TrackingService

RUNS_PAGE_SIZE = 100
MAX_COMPARE = 100  # the REST compare endpoint's limit too
MAX_CHART_POINTS = 2000  # per series; longer histories are thinned evenly for drawing

router = page_router()


@router.get("/projects/{project}/experiments", **auth_rule(Role.VIEWER))
def experiments_page(
    request: Request,
    project: str,
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    page = svc.list_experiments(principal, project, max_results=500, page_token=page_token)
    next_link = (
        "?" + urlencode({"page_token": page.next_page_token}) if page.next_page_token else None
    )
    return render(
        request,
        principal,
        "experiments.html",
        project=project,
        area="experiments",
        title="Experiments",
        experiments=page.items,
        next_link=next_link,
    )


@dataclass(frozen=True)
class Column:
    """A sortable column of the runs table; ``order`` is its order-by item for the service."""

    label: str
    entity: Literal["attributes", "params", "metrics"]
    key: str

    @property
    def order(self) -> str:
        if self.entity == "attributes":
            return f"attributes.{self.key}"
        return f"{self.entity}.`{self.key.replace('`', '``')}`"

    @property
    def first_direction(self) -> str:
        """Newest and largest first for times and metrics; A to Z for text."""
        return "desc" if self.entity == "metrics" or self.key == "start_time" else "asc"


def _run_columns(runs: Sequence[RunOut]) -> tuple[list[Column], list[Column], list[Column]]:
    attributes = [
        Column("Name", "attributes", "name"),
        Column("Status", "attributes", "status"),
        Column("Started", "attributes", "start_time"),
    ]
    params = [Column(k, "params", k) for k in sorted({k for r in runs for k in r.params})]
    metrics = [Column(k, "metrics", k) for k in sorted({k for r in runs for k in r.metrics})]
    return attributes, params, metrics


@router.get("/projects/{project}/experiments/{exp:path}", **auth_rule(Role.VIEWER))
def runs_page(
    request: Request,
    project: str,
    exp: str,
    filter_text: str = Query("", alias="filter", max_length=10_000),
    sort: str = Query("attributes.start_time", max_length=1000),
    direction: Literal["asc", "desc"] = Query("desc", alias="dir"),
    page_token: str | None = None,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    experiment = svc.get_experiment(principal, project, exp)
    runs: list[RunOut] = []
    next_token = error = None
    try:
        page = svc.search_runs(
            principal,
            project,
            experiments=[experiment.id],
            filter=filter_text or None,
            order_by=[f"{sort} {direction.upper()}"],
            max_results=RUNS_PAGE_SIZE,
            page_token=page_token,
        )
        runs, next_token = page.items, page.next_page_token
    except InvalidInput as exc:  # a mistake in the filter box: show it, keep the page
        error = exc.detail
    state = {"filter": filter_text, "sort": sort, "dir": direction}

    def link(**changes: str) -> str:
        values = {**state, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})

    attributes, params, metrics = _run_columns(runs)
    return render(
        request,
        principal,
        "runs.html",
        status=422 if error else 200,
        project=project,
        area="experiments",
        title=experiment.name,
        experiment=experiment,
        runs=runs,
        error=error,
        state=state,
        link=link,
        attribute_columns=attributes,
        param_columns=params,
        metric_columns=metrics,
        next_link=link(page_token=next_token) if next_token else None,
        first_link=link() if page_token else None,
    )


def _thin(points: Sequence[MetricPoint]) -> list[list[float | None]]:
    """[[step, value], ...] with at most about MAX_CHART_POINTS points; the last is kept."""
    stride = max(1, math.ceil(len(points) / MAX_CHART_POINTS))
    kept = list(points[::stride])
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return [[p.step, finite(p.value)] for p in kept]


def _run_labels(runs: Sequence[RunOut]) -> dict[str, str]:
    """Run names for legends; a name shared by several runs gets the end of the id."""
    names = [r.name for r in runs]
    return {r.id: r.name if names.count(r.name) == 1 else f"{r.name} ({r.id[-6:]})" for r in runs}


def chart_data(comparison: RunComparison) -> list[dict[str, Any]]:
    """One chart per metric key, one series per run; ``color`` is the run's place."""
    labels = _run_labels(comparison.runs)
    charts = []
    for key in comparison.metric_keys:
        by_run: Mapping[str, Sequence[MetricPoint]] = comparison.histories.get(key, {})
        series = [
            {"label": labels[run.id], "color": i, "points": _thin(by_run[run.id])}
            for i, run in enumerate(comparison.runs)
            if by_run.get(run.id)
        ]
        charts.append({"key": key, "series": series})
    return charts


@router.get("/runs/{run_id}", **auth_rule(Role.VIEWER))
def run_page(
    request: Request,
    run_id: str,
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    comparison = svc.compare_runs(principal, [run_id])
    run = comparison.runs[0]
    artifacts = svc.list_artifacts(principal, run_id)
    return render(
        request,
        principal,
        "run.html",
        project=run.project_id,
        area="experiments",
        title=run.name,
        run=run,
        artifacts=artifacts,
        charts=chart_data(comparison),
    )


@router.get("/compare", **auth_rule("authenticated"))
def compare_page(
    request: Request,
    runs: list[str] = Query(default=[]),
    principal: Principal = Depends(current_principal),
    svc: TrackingService = Depends(tracking),
) -> Response:
    """``/compare?runs=ID1,ID2`` (or ``runs=ID1&runs=ID2``, as a plain form sends them)."""
    ids = list(dict.fromkeys(p.strip() for value in runs for p in value.split(",") if p.strip()))
    if not ids:
        return render(request, principal, "compare.html", area="experiments", title="Compare")
    if len(ids) > MAX_COMPARE:
        raise InvalidInput(
            f"{len(ids)} runs were selected; compare at most {MAX_COMPARE} at a time."
        )
    comparison = svc.compare_runs(principal, ids)
    differing = set(comparison.differing_params)
    return render(
        request,
        principal,
        "compare.html",
        project=comparison.runs[0].project_id,
        area="experiments",
        title="Compare runs",
        comparison=comparison,
        differing=differing,
        labels=_run_labels(comparison.runs),
        charts=chart_data(comparison),
    )
