"""The data pages over a real store, without a browser: what each page shows, links, escapes.

The browser tests (tests/browser/test_data_ui.py) check the charts, paging and lineage in
Chromium; these check the HTML the server sends, and the pure helpers behind it.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from modelworks.core.auth import Principal
from modelworks.core.ids import new_id, utcnow
from modelworks.core.store import Store
from modelworks.data.lineage_svg import layers, render_svg
from modelworks.data.models import DatasetVersion, ValidationRun
from modelworks.data.schemas import (
    ColumnKind,
    ColumnProfile,
    ExpectationResult,
    Histogram,
    LineageEdgeOut,
    LineageNodeOut,
    LineageOut,
    Profile,
    TopValue,
    ValidationReport,
)
from modelworks.data.service import DataService
from modelworks.data.sources.frames import FrameSource
from modelworks.data.ui import (
    MAX_CELL_CHARS,
    MAX_TICK_CHARS,
    expectation_parts,
    lineage_href,
    preview_cell,
    profile_charts,
)
from modelworks.governance.service import GovernanceService
from modelworks.server.app import create_app
from modelworks.server.pages import CONTENT_SECURITY_POLICY

from ..conftest import isolated_store

XSS = "<script>alert(1)</script>"
LONG = "long-" + "x" * 300
REJECTS = {
    "count": 2,
    "sha256": "ab" * 32,
    "size": 120,
    "examples": [
        {"line": 3, "error": "could not convert 'oops' to DOUBLE", "raw_line": "2,oops"},
        {"line": 5, "error": "could not convert", "raw_line": f"4,{XSS}"},
    ],
}
SUITE = {
    "expectations": [
        {"type": "null_rate", "column": "plan", "max": 0.0},
        {"type": "range", "column": "age", "min": 18, "max": 99},
    ],
    "on_failure": "fail",
}


@dataclass
class World:
    store: Store
    client: TestClient
    admin: Principal
    headers: dict[str, str]
    viewer_headers: dict[str, str]
    outsider_headers: dict[str, str]
    data: DataService


def _frame(rows: int, *, with_score: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": range(rows),
            "age": [None if i % 10 == 0 else 18.0 + i % 50 for i in range(rows)],
            "plan": [("basic", "pro", "team")[i % 3] for i in range(rows)],
            "note": [XSS if i == 0 else LONG if i == 1 else f"n{i}" for i in range(rows)],
        }
    )
    if with_score:
        frame["score"] = [i / rows for i in range(rows)]
    return frame


def store_validation(store: Store, version_id: str, project_id: str, **run: Any) -> None:
    """A stored validation run, written directly so that the page's tests do not depend on
    how validation.py evaluates a suite: they check that the page shows what was stored."""
    report = ValidationReport(
        success=run["success"],
        row_count=120,
        results=run["results"],
        evaluated_at=run["at"],
    )
    with store.transaction() as s:
        s.add(
            ValidationRun(
                id=new_id(),
                version_id=version_id,
                project_id=project_id,
                trigger=run.get("trigger", "manual"),
                success=run["success"],
                suite=SUITE,
                report=report.model_dump(mode="json"),
                created_by="admin",
                created_at=run["at"],
            )
        )


def store_rejects(store: Store, version_id: str, rejects: dict[str, Any]) -> None:
    """Rejected rows on a version, written directly: only a CSV ingest with
    ``bad_rows="quarantine"`` makes them, and these tests ingest DataFrames."""
    with store.transaction() as s:
        s.get_one(DatasetVersion, version_id).rejects = rejects


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One seeded store for the module: the pages only read, and seeding takes seconds."""
    home = tmp_path_factory.mktemp("data-ui")
    store = isolated_store(home)
    gov = GovernanceService(store)
    gov.bootstrap_admin("admin", "admin-password-1")
    admin = gov.authenticate_password("admin", "admin-password-1")
    gov.create_project(admin, "p1")
    gov.create_user(admin, "vera", "vera-password-1")
    gov.set_member(admin, "p1", "vera", "viewer")
    gov.create_user(admin, "olga", "olga-password-1")
    data = DataService(store)
    data.create_dataset(admin, "p1", "churn", description=f"Customers {XSS}")
    v1 = data.ingest(admin, "p1", "churn", FrameSource.of(_frame(60))).version
    v2 = data.ingest(admin, "p1", "churn", FrameSource.of(_frame(120, with_score=True))).version
    assert v1 is not None and v2 is not None
    data.tag_version(admin, "p1", "churn@1", "golden")
    recipe = {"sql": "SELECT * FROM churn WHERE plan <> 'team'", "dsn": "${secret:WAREHOUSE}"}
    data.write_version(
        admin,
        "p1",
        "churn_clean",
        FrameSource.of(_frame(40)),
        parents=[v2],
        recipe=recipe,
        relation="derived_from",
    )
    project_id = v2.project_id
    now = utcnow()
    failed = ExpectationResult(
        expectation=SUITE["expectations"][1],
        success=False,
        observed=0.25,
        unexpected_count=3,
        unexpected_examples=[101, 102, XSS],
        message=f"age: 3 values outside [18, 99] {XSS}",
    )
    passed = ExpectationResult(
        expectation=SUITE["expectations"][0],
        success=True,
        observed=0.0,
        message="plan has no nulls",
    )
    store_validation(
        store, v2.id, project_id, success=False, results=[passed, failed], at=now - timedelta(1)
    )
    store_validation(store, v2.id, project_id, success=True, results=[passed], at=now)
    data.set_expectations(admin, "p1", "churn", SUITE)
    store_rejects(store, v1.id, REJECTS)

    def token(user: str) -> dict[str, str]:
        principal = gov.authenticate_password(user, f"{user}-password-1")
        return {"Authorization": f"Bearer {gov.create_token(principal, 't').token}"}

    with TestClient(create_app(store), follow_redirects=False) as client:
        yield World(store, client, admin, token("admin"), token("vera"), token("olga"), data)
    store.close()


def _get(w: World, path: str, headers: dict[str, str] | None = None) -> Any:
    return w.client.get(path, headers=w.headers if headers is None else headers)


def _text(body: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


# ---- datasets list ---------------------------------------------------------------------
def test_datasets_list_shows_each_dataset_with_its_latest_version(world: World) -> None:
    resp = _get(world, "/projects/p1/data")
    assert resp.status_code == 200
    body = resp.text
    assert 'href="/projects/p1/data/churn"' in body
    assert 'href="/projects/p1/data/churn_clean"' in body
    assert 'href="/projects/p1/data/churn/versions/2">@2</a>' in body
    row = re.search(r'<tr data-dataset="churn">(.*?)</tr>', body, re.S)
    assert row is not None
    assert "120" in _text(row.group(1))  # the latest version's rows
    assert "Customers &lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert XSS not in body


def test_the_data_area_is_live_in_the_nav(world: World) -> None:
    body = _get(world, "/projects/p1/experiments").text
    link = re.search(r'<a href="/projects/p1/data"[^>]*>(.*?)</a>', body, re.S)
    assert link is not None and "soon" not in link.group(1)
    assert "coming in a later release" not in _get(world, "/projects/p1/data").text


def test_an_empty_project_says_how_to_ingest(world: World) -> None:
    body = _get(world, "/projects/default/data").text
    assert "No datasets in this project yet" in body


# ---- dataset page ----------------------------------------------------------------------
def test_dataset_page_lists_versions_and_the_suite(world: World) -> None:
    resp = _get(world, "/projects/p1/data/churn")
    assert resp.status_code == 200
    body = resp.text
    rows = re.findall(r'<tr data-version="(\d+)">(.*?)</tr>', body, re.S)
    assert [n for n, _ in rows] == ["2", "1"]  # newest first
    v2, v1 = (_text(r) for _, r in rows)
    assert "ready" in v2 and "120" in v2 and "replace" in v2 and "+1" in v2
    assert "initial" in v1 and "golden" in v1
    assert 'title="added score"' in rows[0][1]
    suite = re.search(r'<section class="panel" id="expectations">(.*?)</section>', body, re.S)
    assert suite is not None
    assert "type: null_rate" in html.unescape(suite.group(1))
    assert "on_failure: fail" in suite.group(1)


def test_dataset_page_without_a_suite(world: World) -> None:
    body = _get(world, "/projects/p1/data/churn_clean").text
    assert "No expectations." in body


# ---- version page ----------------------------------------------------------------------
def _section(body: str, section_id: str) -> str:
    found = re.search(rf'<section class="panel" id="{section_id}">(.*?)</section>', body, re.S)
    assert found is not None, f"no #{section_id} section"
    return found.group(1)


def test_version_page_schema_and_profile(world: World) -> None:
    resp = _get(world, "/projects/p1/data/churn/versions/2")
    assert resp.status_code == 200
    body = resp.text
    schema = _section(body, "schema")
    columns = re.findall(r'<tr data-column="([^"]+)">', schema)
    assert columns == ["id", "age", "plan", "note", "score"]
    age_row = re.search(r'<tr data-column="age">(.*?)</tr>', schema, re.S)
    assert age_row is not None
    age = _text(age_row.group(1))
    assert "double" in age and "10%" in age  # every tenth age is null
    assert "added" in schema and "score" in schema
    data = re.search(
        r'<script type="application/json" id="profile-data">(.*?)</script>', body, re.S
    )
    assert data is not None
    charts = {c["column"]: c for c in json.loads(data.group(1))["charts"]}
    assert charts["age"]["kind"] == "histogram" and sum(charts["age"]["counts"]) == 108
    assert charts["plan"]["kind"] == "top_values"
    assert sorted(charts["plan"]["labels"]) == ["basic", "pro", "team"]
    assert body.count("data-profile-chart=") == len(charts)
    assert "/static/js/data.js" in body and "/static/vendor/chartjs/chart.umd.min.js" in body


def test_version_page_validation_results_newest_first(world: World) -> None:
    body = _get(world, "/projects/p1/data/churn/versions/2").text
    section = _section(body, "validation")
    assert re.findall(r'data-success="(\w+)"', section) == ["true", "false"]
    text = _text(section)
    assert "range" in text and 'column="age", min=18, max=99' in text
    assert "age: 3 values outside [18, 99]" in text
    assert "plan has no nulls" in text
    assert XSS not in section and "&lt;script&gt;" in section


def test_version_page_source_recipe_and_lineage(world: World) -> None:
    body = _get(world, "/projects/p1/data/churn_clean/versions/1").text
    recipe = _text(_section(body, "recipe"))
    assert "${secret:WAREHOUSE}" in recipe and "SELECT * FROM churn" in recipe
    assert '"kind": "frame"' in _text(_section(body, "source"))
    lineage = _section(body, "lineage")
    labels = re.findall(r'data-label="([^"]+)"', lineage)
    assert sorted(labels) == ["churn@2", "churn_clean@1", "pandas frame (120 rows)"]
    assert 'href="/projects/p1/data/churn/versions/2"' in lineage  # ancestors link to pages
    assert 'href="/projects/p1/data/churn_clean/versions/1"' not in lineage  # not to itself
    assert 'data-relation="derived_from"' in lineage


def test_version_page_rejects(world: World) -> None:
    body = _get(world, "/projects/p1/data/churn/versions/1").text
    rejects = _section(body, "rejects")
    assert re.findall(r"<th>(\w+)</th>", rejects) == ["line", "error", "raw_line"]
    text = _text(rejects)
    assert "2 rows could not be read" in " ".join(text.split())
    assert "could not convert 'oops' to DOUBLE" in text and f"4,{XSS}" in text
    assert XSS not in rejects
    assert 'id="rejects"' not in _get(world, "/projects/p1/data/churn/versions/2").text


def test_preview_pages_forward_and_back(world: World) -> None:
    base = "/projects/p1/data/churn/versions/2"
    first = _section(_get(world, base).text, "preview")
    assert "Rows 1\u201350 of 120" in first
    assert "data-preview-previous" not in first
    assert 'href="?offset=50&amp;limit=50#preview"' in first
    middle = _section(_get(world, base + "?offset=50&limit=50").text, "preview")
    assert "Rows 51\u2013100 of 120" in middle
    assert 'href="?offset=0&amp;limit=50#preview"' in middle
    assert 'href="?offset=100&amp;limit=50#preview"' in middle
    last = _section(_get(world, base + "?offset=100&limit=50").text, "preview")
    assert "Rows 101\u2013120 of 120" in last and "data-preview-next" not in last
    past = _section(_get(world, base + "?offset=500").text, "preview")
    assert "No rows at offset 500" in past
    assert _get(world, base + "?offset=-1").status_code == 422
    assert _get(world, base + "?limit=100000").status_code == 422


def test_preview_escapes_and_truncates_cells(world: World) -> None:
    body = _get(world, "/projects/p1/data/churn/versions/2").text
    preview = _section(body, "preview")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in preview
    assert XSS not in body
    cell = re.search(r'<td title="(long-x+)">(long-x+…)</td>', preview)
    assert cell is not None
    assert len(cell.group(2)) == MAX_CELL_CHARS and cell.group(1) == LONG
    assert '<td class="null">null</td>' in preview  # the null ages


def test_pages_carry_the_csp_and_no_inline_script(world: World) -> None:
    for path in (
        "/projects/p1/data",
        "/projects/p1/data/churn",
        "/projects/p1/data/churn/versions/2",
    ):
        resp = _get(world, path)
        assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        scripts = re.findall(r"<script([^>]*)>", resp.text)
        assert all("src=" in s or 'type="application/json"' in s for s in scripts), path
        assert "style=" not in resp.text, f"{path} has an inline style the CSP would block"


def test_refs_redirect_to_the_version_page(world: World) -> None:
    resp = _get(world, "/projects/p1/data/ref/churn@golden")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/projects/p1/data/churn/versions/1"
    resp = _get(world, "/projects/p1/data/ref/churn")
    assert resp.headers["location"] == "/projects/p1/data/churn/versions/2"


# ---- errors and access -----------------------------------------------------------------
def test_missing_objects_are_404_pages_with_the_services_message(world: World) -> None:
    resp = _get(world, "/projects/p1/data/nope")
    assert resp.status_code == 404 and "Dataset &#39;nope&#39; does not exist" in resp.text
    resp = _get(world, "/projects/p1/data/churn/versions/7")
    assert resp.status_code == 404 and "has no version 7; latest is 2" in html.unescape(resp.text)
    assert _get(world, "/projects/p1/data/churn/versions/x").status_code == 422
    assert _get(world, "/projects/p1/data/ref/churn@nosuchtag").status_code == 404


def test_access_follows_project_roles(world: World) -> None:
    for path in ("/projects/p1/data", "/projects/p1/data/churn/versions/2"):
        assert _get(world, path, world.viewer_headers).status_code == 200
        assert _get(world, path, world.outsider_headers).status_code == 404
        resp = _get(world, path, {})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
    ref = _get(world, "/projects/p1/data/ref/churn@1", world.outsider_headers)
    assert ref.status_code == 404, "a redirect would reveal that the dataset exists"


# ---- helpers ---------------------------------------------------------------------------
def _node(type_: str, label: str) -> LineageNodeOut:
    return LineageNodeOut(type=type_, id=label, label=label)


def _edge(parent: LineageNodeOut, child: LineageNodeOut, relation: str) -> LineageEdgeOut:
    return LineageEdgeOut(
        parent=parent, child=child, relation=relation, created_at=datetime.now(UTC)
    )


def test_lineage_layers_use_the_longest_path() -> None:
    # An append: v2 is made from a source and from v1, itself made from the same source.
    src, v1, v2, v3 = (
        _node("source", "csv"),
        _node("dataset_version", "d@1"),
        _node("dataset_version", "d@2"),
        _node("dataset_version", "e@1"),
    )
    graph = LineageOut(
        root=v2,
        nodes=[src, v1, v2, v3],
        edges=[
            _edge(src, v1, "ingested_from"),
            _edge(src, v2, "ingested_from"),
            _edge(v1, v2, "appended_to"),
            _edge(v2, v3, "derived_from"),
        ],
    )
    placed = layers(graph)
    assert placed[("source", "csv")] == -2  # left of v1, so every edge points right
    assert placed[("dataset_version", "d@1")] == -1
    assert placed[("dataset_version", "d@2")] == 0
    assert placed[("dataset_version", "e@1")] == 1


def test_lineage_svg_escapes_labels_and_survives_a_cycle() -> None:
    a, b = _node("dataset_version", '<b>"x"</b>@1'), _node("weird type<>", "y@2")
    graph = LineageOut(root=a, nodes=[a, b], edges=[_edge(a, b, "r"), _edge(b, a, "<r>")])
    svg = str(render_svg(graph, lambda n: "/x?a=1&b=<2>"))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert 'href="/x?a=1&amp;b=&lt;2&gt;"' in svg
    assert "lineage-weird-type--" in svg  # a class name cannot break out of its attribute


def test_lineage_links() -> None:
    assert (
        lineage_href("p 1", _node("dataset_version", "a.b@3"))
        == "/projects/p%201/data/a.b/versions/3"
    )
    assert lineage_href("p", _node("dataset_version", "no-number@tag")) is None
    assert lineage_href("p", _node("source", "csv")) is None
    assert lineage_href("p", LineageNodeOut(type="run", id="R1", label="run")) == "/runs/R1"


def test_preview_cells() -> None:
    assert preview_cell(None).null
    assert preview_cell(True).text == "true"
    assert preview_cell({"a": [1, 2]}).text == '{"a": [1, 2]}'
    cut = preview_cell("y" * 500)
    assert cut.text.endswith("…") and len(cut.text) == MAX_CELL_CHARS and cut.title == "y" * 500


def test_expectation_parts_whatever_the_suite_shape() -> None:
    assert expectation_parts({"expect": "not_null", "column": "a"}) == ("not_null", 'column="a"')
    assert expectation_parts(
        {"expectation_type": "expect_column_max", "kwargs": {"column": "a", "max": 3}}
    ) == ("expect_column_max", 'column="a", max=3')
    assert expectation_parts({"column": "a"}) == ("expectation", 'column="a"')
    assert expectation_parts({"type": "unique", "column": "a", "severity": "error"}) == (
        "unique",
        'column="a"',
    )
    assert expectation_parts({"type": "unique", "column": "a", "severity": "warning"}) == (
        "unique",
        'column="a", severity="warning"',
    )


def _column(name: str, kind: ColumnKind, **stats: Any) -> ColumnProfile:
    return ColumnProfile(name=name, type="t", kind=kind, count=10, nulls=0, null_rate=0.0, **stats)


def test_profile_charts() -> None:
    assert profile_charts(None) == []
    days = ["2024-01-01T00:00:00", "2024-01-11T00:00:00", "2024-01-21T00:00:00"]
    hours = ["2024-01-01T00:00:00", "2024-01-01T06:30:00", "2024-01-01T13:00:00"]
    profile = Profile(
        row_count=10,
        engine="test",
        columns=[
            _column("x", "numeric", histogram=Histogram(edges=[0.0, 0.5, 1.0], counts=[4, 6])),
            _column("day", "temporal", histogram=Histogram(edges=days, counts=[5, 5])),
            _column("at", "temporal", histogram=Histogram(edges=hours, counts=[5, 5])),
            _column("plan", "string", top_values=[TopValue(value="a" * 100, count=7)]),
            _column("id", "string", top_values=[TopValue(value="k1", count=1)]),
            _column("empty", "numeric"),
        ],
    )
    charts = {c["column"]: c for c in profile_charts(profile)}
    assert set(charts) == {"x", "day", "at", "plan"}  # unique ids and empty columns: no chart
    assert charts["x"]["labels"] == ["0", "0.5"] and charts["x"]["counts"] == [4, 6]
    assert charts["x"]["titles"] == ["0 \u2013 0.5", "0.5 \u2013 1"]
    assert charts["day"]["labels"] == ["2024-01-01", "2024-01-11"]
    assert charts["day"]["titles"][0] == "2024-01-01 \u2013 2024-01-11"
    assert charts["at"]["labels"] == ["01-01 00:00", "01-01 06:30"]
    assert charts["at"]["titles"][1] == "2024-01-01 06:30:00 \u2013 2024-01-01 13:00:00"
    assert len(charts["plan"]["labels"][0]) == MAX_TICK_CHARS
    assert charts["plan"]["titles"][0] == "a" * 100
