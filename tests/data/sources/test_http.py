"""HttpSource against real HTTP servers started on 127.0.0.1 (Starlette apps under uvicorn).

Each test's app records the requests it got, so the tests check what was asked (pages,
parameters, headers, retries) as well as what came back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from modelworks.core.auth import local_principal
from modelworks.core.config import Settings
from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.core.store import Store
from modelworks.data import storage
from modelworks.data.service import DataService
from modelworks.data.sources import source_from_spec
from modelworks.data.sources.base import Scan, ScanContext
from modelworks.data.sources.http import HttpSource

Serve = Callable[[Any], contextlib.AbstractContextManager[str]]
Handler = Callable[[Request], Any]

RECORDS = [
    {
        "id": i,
        "name": f"item {i}",
        "price": i * 10,
        "meta": {"color": "red" if i % 2 else "blue", "size": {"w": i, "h": 2 * i}},
        "tags": ["a", str(i)],
    }
    for i in range(1, 56)
]


def app_of(handler: Handler, calls: list[Request], path: str = "/items") -> Starlette:
    """An app serving ``handler`` at ``path`` that remembers every request."""

    async def endpoint(request: Request) -> Response:
        calls.append(request)
        result = handler(request)
        return result if isinstance(result, Response) else JSONResponse(result)

    return Starlette(routes=[Route(path, endpoint)])


def read(source: HttpSource, settings: Settings, tmp_path: Path) -> pa.Table:
    """Scan ``source`` and write it as the service does; the rows read back."""
    con = storage.connect(settings, threads=1)  # one thread: tests check row order
    work = tmp_path / f"work-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    scan: Scan | None = None
    try:
        scan = source.scan(ScanContext(con=con, settings=settings, workdir=work))
        assert scan.relation is not None
        parts = storage.write_parts(con, scan.relation, work / "parts")
        return pa.concat_tables([pq.read_table(p) for p in parts])
    finally:
        if scan is not None and scan.close is not None:
            scan.close()
        con.close()


def ids(table: pa.Table) -> list[int]:
    return [int(v) for v in table.column("id").to_pylist()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- records and columns -------------------------------------------------------------------


def test_one_request_flattens_nested_records(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    calls: list[Request] = []
    body = [*RECORDS[:2], {"id": 3, "name": None, "tags": []}]
    with serve(app_of(lambda r: body, calls)) as base:
        table = read(HttpSource(url=f"{base}/items"), settings, tmp_path)
    assert len(calls) == 1 and calls[0].headers["accept"] == "application/json"
    assert table.column_names == [
        "id", "name", "price", "meta.color", "meta.size.w", "meta.size.h", "tags",
    ]  # fmt: skip
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("name").type == pa.string()
    assert table.schema.field("tags").type == pa.string()  # lists are kept as JSON text
    assert table.to_pylist() == [
        {"id": 1, "name": "item 1", "price": 10, "meta.color": "red", "meta.size.w": 1,
         "meta.size.h": 2, "tags": '["a","1"]'},
        {"id": 2, "name": "item 2", "price": 20, "meta.color": "blue", "meta.size.w": 2,
         "meta.size.h": 4, "tags": '["a","2"]'},
        {"id": 3, "name": None, "price": None, "meta.color": None, "meta.size.w": None,
         "meta.size.h": None, "tags": "[]"},
    ]  # fmt: skip


def test_records_path(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    calls: list[Request] = []
    body = {"data": {"items": RECORDS[:4], "total": 4}, "ok": True}
    with serve(app_of(lambda r: body, calls)) as base:
        table = read(HttpSource(url=f"{base}/items", records_path="data.items"), settings, tmp_path)
    assert ids(table) == [1, 2, 3, 4]


# ---- pagination ----------------------------------------------------------------------------


def test_next_link_in_the_body(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Any:
        after = int(request.query_params.get("after", 0))
        chunk = RECORDS[after : after + 20]
        more = after + 20 < len(RECORDS)
        # Relative links are resolved against the page's URL.
        return {"items": chunk, "links": {"next": f"/items?after={after + 20}" if more else None}}

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(
            url=f"{base}/items",
            records_path="items",
            pagination={"type": "next_link", "path": "links.next"},
        )
        table = read(source, settings, tmp_path)
    assert ids(table) == list(range(1, 56))
    assert [c.query_params.get("after") for c in calls] == [None, "20", "40"]


def test_next_link_in_the_link_header(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        page = int(request.query_params.get("page", 1))
        chunk = RECORDS[(page - 1) * 25 : page * 25]
        headers = {}
        if page * 25 < len(RECORDS):
            url = request.url.replace_query_params(page=page + 1)
            headers["Link"] = f'<{url}>; rel="next", <{request.url}>; rel="self"'
        return JSONResponse(chunk, headers=headers)

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(url=f"{base}/items", pagination={"type": "next_link"})
        table = read(source, settings, tmp_path)
    assert ids(table) == list(range(1, 56))
    assert len(calls) == 3


def test_page_numbers_until_an_empty_page(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Any:
        if request.query_params.get("status") != "open":
            return JSONResponse({"error": "status is required"}, status_code=400)
        page, size = int(request.query_params["page"]), int(request.query_params["per_page"])
        return {"data": RECORDS[(page - 1) * size : page * size]}

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(
            url=f"{base}/items?status=open",  # the URL's own query is kept on every page
            records_path="data",
            pagination={"type": "page", "size": 20},
        )
        table = read(source, settings, tmp_path)
    assert ids(table) == list(range(1, 56))
    assert [c.query_params["page"] for c in calls] == ["1", "2", "3", "4"]  # 4 is empty
    assert {c.query_params["per_page"] for c in calls} == {"20"}


def test_offset_advances_by_the_records_received(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    def handler(request: Request) -> Any:
        offset = int(request.query_params["offset"])
        limit = min(int(request.query_params["limit"]), 10)  # the API caps what is asked
        return RECORDS[offset : offset + limit]

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(url=f"{base}/items", pagination={"type": "offset", "limit": 25})
        table = read(source, settings, tmp_path)
    assert ids(table) == list(range(1, 56))
    assert [int(c.query_params["offset"]) for c in calls] == [0, 10, 20, 30, 40, 50, 55]


def test_cursor_pagination(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Any:
        start = int(request.query_params.get("cursor", "c0")[1:])
        end = start + 30
        following = f"c{end}" if end < len(RECORDS) else None
        return {"results": RECORDS[start:end], "meta": {"next_cursor": following}}

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(
            url=f"{base}/items", records_path="results", pagination={"type": "cursor"}
        )
        table = read(source, settings, tmp_path)
    assert ids(table) == list(range(1, 56))
    assert [c.query_params.get("cursor") for c in calls] == [None, "c30"]


def test_max_pages_stops_an_endless_api(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Any:
        n = int(request.query_params.get("n", 0))
        return {"items": [{"id": n}], "next": f"/items?n={n + 1}"}

    calls: list[Request] = []
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(
            url=f"{base}/items",
            records_path="items",
            pagination={"type": "next_link", "path": "next"},
            max_pages=3,
        )
        with pytest.raises(InvalidInput) as info:
            read(source, settings, tmp_path)
    assert len(calls) == 3
    assert "max_pages=3" in info.value.detail and f"{base}/items" in info.value.detail


def test_a_cursor_that_repeats_is_a_loop(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    calls: list[Request] = []
    body = {"items": [{"id": 1}], "meta": {"next_cursor": "same"}}
    with serve(app_of(lambda r: body, calls)) as base:
        source = HttpSource(url=f"{base}/items", records_path="items",
                            pagination={"type": "cursor"})  # fmt: skip
        with pytest.raises(InvalidInput, match="points back to a page already read"):
            read(source, settings, tmp_path)
    assert len(calls) == 2  # the first page, then "same", which points at itself


# ---- types across pages ----------------------------------------------------------------------


def test_types_are_unified_across_pages(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    pages = {
        "1": [{"id": 1, "v": 1, "gone": None}, {"id": 2, "v": 2, "gone": None}],
        "2": [{"id": 3, "v": 2.5, "extra": "x"}],
        "3": [],
    }
    calls: list[Request] = []
    with serve(app_of(lambda r: pages[r.query_params["page"]], calls)) as base:
        source = HttpSource(url=f"{base}/items", pagination={"type": "page", "size_param": None})
        table = read(source, settings, tmp_path)
    assert {f.name: f.type for f in table.schema} == {
        "id": pa.int64(),
        "v": pa.float64(),  # whole numbers on page 1 widen to double
        "gone": pa.string(),  # NULL on every page
        "extra": pa.string(),  # absent on page 1
    }
    assert table.to_pylist() == [
        {"id": 1, "v": 1.0, "gone": None, "extra": None},
        {"id": 2, "v": 2.0, "gone": None, "extra": None},
        {"id": 3, "v": 2.5, "gone": None, "extra": "x"},
    ]


def test_types_that_cannot_be_unified_name_the_page(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    pages = {"1": [{"id": 1}, {"id": 2}], "2": [{"id": "three"}], "3": []}
    with serve(app_of(lambda r: pages[r.query_params["page"]], [])) as base:
        source = HttpSource(url=f"{base}/items", pagination={"type": "page"})
        with pytest.raises(InvalidInput) as info:
            read(source, settings, tmp_path)
    message = info.value.detail
    assert "Column 'id' on page 2 of" in message and f"{base}/items" in message
    assert "holds text values, but earlier pages had number" in message


def test_mixed_types_within_a_page(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    app = app_of(lambda r: [{"id": 1, "ok": True}, {"id": 2, "ok": 5}], [])
    with serve(app) as base, pytest.raises(InvalidInput) as info:
        read(HttpSource(url=f"{base}/items"), settings, tmp_path)
    assert "Column 'ok' on page 1" in info.value.detail
    assert "boolean and number" in info.value.detail


# ---- garbage and HTTP errors ---------------------------------------------------------------


def test_html_instead_of_json(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    def handler(request: Request) -> Any:
        if request.query_params["page"] == "2":
            return HTMLResponse("<!doctype html><html><body>Please log in</body></html>")
        return [{"id": 1}]

    with serve(app_of(handler, [])) as base:
        source = HttpSource(url=f"{base}/items", pagination={"type": "page"})
        with pytest.raises(InvalidInput) as info:
            read(source, settings, tmp_path)
    message = info.value.detail
    assert message.startswith(f"Page 2 of {base}/items?page=2")
    assert "is not JSON (text/html" in message and "<!doctype html>" in message
    assert "expected a JSON body" in message


def test_records_path_that_is_not_a_list(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    body = {"data": {"count": 2}, "results": [{"id": 1}]}
    with serve(app_of(lambda r: body, [])) as base:
        url = f"{base}/items"
        with pytest.raises(InvalidInput) as info:
            read(HttpSource(url=url, records_path="data"), settings, tmp_path)
        assert info.value.detail == (
            f"Page 1 of {url} has an object with keys count at 'data'; expected a list of records."
        )
        with pytest.raises(InvalidInput) as info:
            read(HttpSource(url=url, records_path="data.items"), settings, tmp_path)
        assert "has no 'data.items'" in info.value.detail
        with pytest.raises(InvalidInput) as info:
            read(HttpSource(url=url), settings, tmp_path)
        assert "an object with keys data, results as the body" in info.value.detail
        assert "records_path='results'" in info.value.detail


def test_records_that_are_not_objects(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    expected = r"Record 0 on page 1 .* is a number; expected JSON"
    with (
        serve(app_of(lambda r: [1, 2, 3], [])) as base,
        pytest.raises(InvalidInput, match=expected),
    ):
        read(HttpSource(url=f"{base}/items"), settings, tmp_path)


def test_an_api_with_no_records(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    app = app_of(lambda r: {"items": []}, [])
    with serve(app) as base, pytest.raises(InvalidInput, match="gave no records"):
        read(HttpSource(url=f"{base}/items", records_path="items"), settings, tmp_path)


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (404, InvalidInput, "was not found (404); check the URL"),
        (400, InvalidInput, "rejected page 1 of"),
        (500, ServiceUnavailable, "failed on page 1 of"),
    ],
)
def test_http_errors(
    status: int,
    error: type[Exception],
    words: str,
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
) -> None:
    calls: list[Request] = []
    handler = lambda r: PlainTextResponse("no such thing", status_code=status)  # noqa: E731
    with serve(app_of(handler, calls)) as base, pytest.raises(error) as info:
        read(HttpSource(url=f"{base}/items", backoff=0.01), settings, tmp_path)
    assert words in str(info.value)
    assert len(calls) == 1  # none of these is retried


# ---- retries ---------------------------------------------------------------------------------


def test_429_then_503_are_retried_honouring_retry_after(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    answers = [
        PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "1"}),
        PlainTextResponse("busy", status_code=503),
    ]
    calls: list[Request] = []
    times: list[float] = []

    def handler(request: Request) -> Any:
        times.append(time.monotonic())
        return answers.pop(0) if answers else [{"id": 7}]

    with serve(app_of(handler, calls)) as base:
        table = read(HttpSource(url=f"{base}/items", backoff=0.05), settings, tmp_path)
    assert ids(table) == [7]
    assert len(calls) == 3
    assert 0.95 <= times[1] - times[0] < 3  # Retry-After: 1
    assert times[2] - times[1] < 0.5  # no Retry-After: the short backoff


def test_503_until_retries_run_out(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    calls: list[Request] = []
    handler = lambda r: PlainTextResponse("maintenance", status_code=503)  # noqa: E731
    with serve(app_of(handler, calls)) as base:
        source = HttpSource(url=f"{base}/items", max_retries=2, backoff=0.01)
        with pytest.raises(ServiceUnavailable) as info:
            read(source, settings, tmp_path)
    assert len(calls) == 3
    assert info.value.detail == (
        f"{base}/items still answered 503 Service Unavailable for page 1 after 2 retries; it "
        "starts 'maintenance'. Try again later, or raise max_retries."
    )


def test_retry_after_longer_than_max_wait(serve: Serve, settings: Settings, tmp_path: Path) -> None:
    calls: list[Request] = []
    handler = lambda r: Response(status_code=429, headers={"Retry-After": "3600"})  # noqa: E731
    expected = r"asks to wait 3600 s .* max_wait=120 s"
    with serve(app_of(handler, calls)) as base, pytest.raises(ServiceUnavailable, match=expected):
        read(HttpSource(url=f"{base}/items"), settings, tmp_path)
    assert len(calls) == 1


def test_connection_refused_is_retried_then_named(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    source = HttpSource(url=f"http://127.0.0.1:{port}/items", max_retries=1, backoff=0.01)
    with pytest.raises(ServiceUnavailable) as info:
        read(source, settings, tmp_path)
    assert f"Cannot reach 127.0.0.1:{port} for page 1" in info.value.detail
    assert "after 2 attempt(s)" in info.value.detail


# ---- credentials -----------------------------------------------------------------------------

TOKEN = f"tok-{uuid.uuid4().hex}"


def guarded(request: Request) -> Any:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return JSONResponse({"error": "bad token"}, status_code=401)
    return [{"id": 1}]


def test_auth_header_from_a_secret(
    serve: Serve, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Request] = []
    with serve(app_of(guarded, calls)) as base:
        with pytest.raises(InvalidInput) as info:
            read(HttpSource(url=f"{base}/items"), settings, tmp_path)
        assert "refused page 1" in info.value.detail and "401 Unauthorized" in info.value.detail
        assert "set auth_header and auth_secret" in info.value.detail

        source = HttpSource(url=f"{base}/items", auth_header="Authorization",
                            auth_secret="api_token")  # fmt: skip
        wrong = f"wrong-{uuid.uuid4().hex}"
        monkeypatch.setenv("MODELWORKS_SECRET_API_TOKEN", wrong)
        with pytest.raises(InvalidInput) as info:
            read(source, settings, tmp_path)
        assert "check the secret 'api_token' (`modelworks secrets set api_token`)" in str(
            info.value
        )
        assert wrong not in str(info.value)

        monkeypatch.setenv("MODELWORKS_SECRET_API_TOKEN", TOKEN)
        assert ids(read(source, settings, tmp_path)) == [1]
    assert calls[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(source.describe()) + source.label()


def test_raw_api_key_header_from_a_secret_file(
    serve: Serve, settings: Settings, tmp_path: Path
) -> None:
    from modelworks.core import secrets

    secrets.store("shop_key", TOKEN, settings)

    def handler(request: Request) -> Any:
        ok = request.headers.get("x-api-key") == TOKEN
        return [{"id": 2}] if ok else JSONResponse({}, status_code=403)

    with serve(app_of(handler, [])) as base:
        source = HttpSource(url=f"{base}/items", auth_header="X-Api-Key",
                            auth_secret="shop_key", auth_scheme="")  # fmt: skip
        assert ids(read(source, settings, tmp_path)) == [2]


def test_secret_in_params_is_masked_in_errors_and_logs(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"key-{uuid.uuid4().hex}"
    monkeypatch.setenv("MODELWORKS_SECRET_QUERY_KEY", key)

    def handler(request: Request) -> Response:  # an API that echoes what it was sent
        return PlainTextResponse(f"internal error for {request.url}", status_code=500)

    caplog.set_level(logging.DEBUG, logger="httpx")
    with serve(app_of(handler, [])) as base:
        source = HttpSource(url=f"{base}/items", params={"api_key": "${secret:query_key}"})
        with pytest.raises(ServiceUnavailable) as info:
            read(source, settings, tmp_path)
    assert key not in str(info.value)
    assert f"{base}/items?api_key=***" in info.value.detail
    assert "HTTP Request: GET" in caplog.text and "api_key=***" in caplog.text
    assert key not in caplog.text
    assert source.describe()["params"] == {"api_key": "${secret:query_key}"}


def test_credentials_stay_on_their_origin(
    serve: Serve, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELWORKS_SECRET_API_TOKEN", TOKEN)
    elsewhere: list[Request] = []
    home: list[Request] = []
    with serve(app_of(lambda r: {"items": [{"id": 2}], "next": None}, elsewhere)) as other:

        def first(request: Request) -> Any:
            return {"items": [{"id": 1}], "next": f"{other}/items"}

        with serve(app_of(first, home)) as base:
            source = HttpSource(
                url=f"{base}/items",
                records_path="items",
                pagination={"type": "next_link", "path": "next"},
                auth_header="Authorization",
                auth_secret="api_token",
            )
            assert ids(read(source, settings, tmp_path)) == [1, 2]
    assert home[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in elsewhere[0].headers


@pytest.mark.parametrize(
    "params",
    [
        {"url": "https://api.example.com/x", "headers": {"Authorization": "Bearer abc123xyz"}},
        {"url": "https://api.example.com/x", "headers": {"X-API-Key": "abc123xyz"}},
        {"url": "https://api.example.com/x", "params": {"api_key": "abc123xyz"}},
        {"url": "https://me:abc123xyz@api.example.com/x"},
    ],
)
def test_literal_credentials_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        HttpSource(**params)
    assert "abc123xyz" not in str(info.value)
    assert "modelworks secrets set" in info.value.detail


def test_parameters_are_checked() -> None:
    with pytest.raises(InvalidInput, match="not an http"):
        HttpSource(url="ftp://example.com/x")
    with pytest.raises(InvalidInput, match="both auth_header"):
        HttpSource(url="https://example.com/x", auth_secret="token")
    with pytest.raises(InvalidInput, match="not valid"):
        HttpSource(url="https://example.com/x", auth_header="Authorization", auth_secret="9no")
    with pytest.raises(InvalidInput, match="not a dotted path"):
        HttpSource(url="https://example.com/x", records_path="data..items")
    with pytest.raises(InvalidInput) as info:
        source_from_spec({"kind": "http", "url": "https://x.io/a", "pagination": {"type": "pg"}})
    assert "The http source's parameters are not valid: pagination" in info.value.detail
    assert "'none', 'next_link', 'page', 'offset', 'cursor'" in info.value.detail
    ok = HttpSource(
        url="https://example.com/x",
        headers={"Authorization": "Bearer ${secret:tok}", "User-Agent": "modelworks"},
    )
    assert ok.source_key == HttpSource(**{**ok.describe(), "max_retries": 1}).source_key


# ---- through the dataset service ------------------------------------------------------------


def test_ingest_through_the_dataset_service(serve: Serve, store: Store) -> None:
    def handler(request: Request) -> Any:
        page = int(request.query_params["page"])
        return {"data": RECORDS[(page - 1) * 20 : page * 20]}

    with serve(app_of(handler, [])) as base:
        spec = {  # the JSON form REST, CLI and recipes use
            "kind": "http",
            "url": f"{base}/items",
            "records_path": "data",
            "pagination": {"type": "page", "size": 20},
        }
        result = DataService(store).ingest(local_principal(), "default", "items", spec)
    assert result.version is not None and result.version.row_count == 55
    assert result.version.source["params"]["pagination"] == {
        "type": "page", "param": "page", "start": 1, "size_param": "per_page", "size": 20,
    }  # fmt: skip
    assert "Read 55 records from 4 pages" in result.message
    columns = {c.name: c.type for c in result.version.columns}
    assert columns["meta.size.w"] == "int64" and columns["tags"] == "string"
