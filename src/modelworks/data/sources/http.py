"""JSON APIs as a source: pages of records fetched with httpx, flattened into columns.

``HttpSource(url="https://api.example.com/v1/orders", records_path="data",
pagination={"type": "page"}, auth_header="Authorization", auth_secret="shop_token")``.

Pagination (``pagination={"type": ...}``):

- ``none``: one request.
- ``next_link``: the next page's URL is in the body at ``path`` (e.g. ``links.next``) or, when
  the body has none, in the ``Link: <...>; rel="next"`` header; stops when there is neither.
- ``page``: ``param`` counts pages from ``start`` (``size_param=size`` asks for a page size);
  stops at the first empty page (not a short one: APIs cap page sizes below what is asked).
- ``offset``: ``param`` advances by the number of records received, ``limit_param=limit``
  asks for a page size; stops at the first empty page.
- ``cursor``: the body's ``path`` (e.g. ``meta.next_cursor``) is sent back as ``param``;
  stops when it is missing, null or empty.

``max_pages`` guards against loops: an API that still has pages after it fails the ingest
rather than silently giving part of the data. Requests that meet 429, 502, 503, 504 or a
connection error are retried up to ``max_retries`` times, waiting as ``Retry-After`` asks or
else ``backoff`` seconds doubled on each try, with jitter.

Columns: each record (a JSON object) becomes a row; nested objects become ``parent.child``
columns; lists are kept as their JSON text (a string column: their items may be of any shape,
and DuckDB reads them back with its JSON functions). Column types are inferred per page and
unified across pages (whole numbers widen to double; a column missing from a page is NULL);
JSON has no dates, so they stay strings. Pages are spilled to Arrow files in the ingest's
scratch folder and streamed to DuckDB once every page agreed on the schema.

Secrets: ``auth_secret`` names the secret sent in ``auth_header`` (``auth_scheme`` prefixes
it, "Bearer" unless set to ""); ``url``, ``params`` and ``headers`` may hold
``${secret:NAME}`` references. Values are sent only to the URL's own host (a next link or
redirect elsewhere is followed without them) and are masked in every message and log line.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

import httpx
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelworks.core import secrets
from modelworks.core.errors import InvalidInput, ServiceUnavailable
from modelworks.data.sources.base import Scan, ScanContext, Source, register_source

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_REDIRECTS = 10
# Header and parameter names that carry credentials: their values must be references.
_SENSITIVE_WORDS = ("auth", "token", "secret", "password", "passwd", "apikey", "api_key",
                    "api-key", "cookie", "signature", "session")  # fmt: skip


class _Paging(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoPagination(_Paging):
    type: Literal["none"] = "none"


class NextLinkPagination(_Paging):
    type: Literal["next_link"] = "next_link"
    path: str | None = None  # where the body holds the next URL; else the Link header


class PagePagination(_Paging):
    type: Literal["page"] = "page"
    param: str = "page"
    start: int = 1
    size_param: str | None = "per_page"
    size: int = Field(default=100, ge=1)


class OffsetPagination(_Paging):
    type: Literal["offset"] = "offset"
    param: str = "offset"
    start: int = Field(default=0, ge=0)
    limit_param: str | None = "limit"
    limit: int = Field(default=100, ge=1)


class CursorPagination(_Paging):
    type: Literal["cursor"] = "cursor"
    param: str = "cursor"
    path: str = "meta.next_cursor"


AnyPagination = (
    NoPagination | NextLinkPagination | PagePagination | OffsetPagination | CursorPagination
)
Pagination = Annotated[AnyPagination, Field(discriminator="type")]


@register_source
class HttpSource(Source):
    """Records from a JSON API, over as many pages as it has."""

    kind: Literal["http"] = "http"
    url: str
    method: Literal["GET"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth_header: str | None = None
    auth_secret: str | None = None
    auth_scheme: str = "Bearer"
    records_path: str | None = None
    pagination: Pagination = Field(default_factory=NoPagination)
    max_pages: int = Field(default=1000, ge=1)
    max_retries: int = Field(default=5, ge=0, le=20)
    timeout: float = Field(default=30.0, gt=0, le=600)
    backoff: float = Field(default=1.0, ge=0, le=60)
    max_wait: float = Field(default=120.0, ge=0, le=3600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        text = url.strip()
        try:
            parsed = httpx.URL(text)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInput(
                f"The http source's url {_mask_literal(text)!r} is not an http(s) URL; "
                "write it as https://api.example.com/v1/items."
            )
        if parsed.password and _is_literal(parsed.password):
            raise InvalidInput(
                "The http source's url holds a password in plain text, which would be stored "
                "with every version; store it with `modelworks secrets set NAME` and use "
                "auth_header/auth_secret or ${secret:NAME} instead."
            )
        return text

    @field_validator("headers")
    @classmethod
    def _headers_hold_no_secret(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if _sensitive(name) and _is_literal(value):
                raise InvalidInput(
                    f"Header {name!r} of the http source holds a credential in plain text, "
                    "which would be stored with every version. Store it as a secret "
                    "(`modelworks secrets set NAME`) and pass auth_header="
                    f"{name!r}, auth_secret='NAME' (or write the value as ${{secret:NAME}})."
                )
        return headers

    @field_validator("params")
    @classmethod
    def _params_hold_no_secret(
        cls, params: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for name, value in params.items():
            if _sensitive(name) and _is_literal(str(value)):
                raise InvalidInput(
                    f"Query parameter {name!r} of the http source holds a credential in plain "
                    "text, which would be stored with every version. Store it as a secret "
                    f"(`modelworks secrets set NAME`) and write {name!r}: '${{secret:NAME}}'."
                )
        return params

    @field_validator("auth_secret")
    @classmethod
    def _secret_name(cls, name: str | None) -> str | None:
        return secrets.check_name(name) if name is not None else None

    @field_validator("records_path")
    @classmethod
    def _dotted_path(cls, path: str | None) -> str | None:
        if path is not None and not all(path.split(".")):
            raise InvalidInput(
                f"records_path {path!r} is not a dotted path; write e.g. 'data' or "
                "'data.items' (leave it out when the body itself is the list)."
            )
        return path

    @model_validator(mode="after")
    def _auth_pair(self) -> HttpSource:
        if (self.auth_header is None) != (self.auth_secret is None):
            raise InvalidInput(
                "The http source needs both auth_header (e.g. 'Authorization') and auth_secret "
                "(the name of a secret set with `modelworks secrets set NAME`), or neither."
            )
        return self

    def identity(self) -> dict[str, Any]:
        # How hard to try is not which rows: these knobs do not make another source.
        params = self.describe()
        for knob in ("max_pages", "max_retries", "timeout", "backoff", "max_wait"):
            params.pop(knob, None)
        return params

    # ---- reading -----------------------------------------------------------------------
    def scan(self, ctx: ScanContext) -> Scan:
        spill = ctx.workdir / f"http-{uuid.uuid4().hex[:12]}"
        spill.mkdir(parents=True, exist_ok=True)
        try:
            pages = self._fetch_to(spill, ctx)
        except BaseException:
            shutil.rmtree(spill, ignore_errors=True)
            raise
        reader = pa.RecordBatchReader.from_batches(pages.schema(), pages.batches())
        count = f"{pages.rows} records from {pages.count} page{'s' if pages.count != 1 else ''}"
        return Scan(
            relation=ctx.con.from_arrow(reader),
            close=lambda: shutil.rmtree(spill, ignore_errors=True),
            message=f"Read {count} of {self.url}.",
        )

    def _fetch_to(self, spill: Path, ctx: ScanContext) -> _Pages:
        url = secrets.expand(self.url, ctx.settings)
        params = {k: _param(v, ctx) for k, v in self.params.items()}
        headers = {"Accept": "application/json"}
        headers.update({k: secrets.expand(v, ctx.settings) for k, v in self.headers.items()})
        if self.auth_header and self.auth_secret:
            value = secrets.resolve(self.auth_secret, ctx.settings)
            headers[self.auth_header] = f"{self.auth_scheme} {value}" if self.auth_scheme else value
        pages = _Pages(spill)
        with _Client(self, headers, origin=_origin(httpx.URL(url))) as client:
            for number, records in self._pages(client, url, params):
                pages.add(number, records, self._where(url, number))
        if pages.rows == 0:
            where = f"records_path {self.records_path!r}" if self.records_path else "the body"
            raise InvalidInput(
                f"{_shown(url)} gave no records ({where} was empty on every one of "
                f"{pages.count} page(s)), so there is nothing to ingest. Check the URL, params "
                "and records_path."
            )
        return pages

    def _where(self, url: str, number: int) -> str:
        return f"page {number} of {_shown(url)}"

    def _pages(
        self, client: _Client, url: str, params: dict[str, Any]
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Each page's records, following the pagination until it says stop."""
        paging = self.pagination
        if isinstance(paging, PagePagination):
            params[paging.param] = paging.start
            if paging.size_param:
                params[paging.size_param] = paging.size
        elif isinstance(paging, OffsetPagination):
            params[paging.param] = paging.start
            if paging.limit_param:
                params[paging.limit_param] = paging.limit
        base = url
        seen: set[str] = set()
        number = 1
        while True:
            response = client.get(url, params, number)
            body = _json_body(response, number)
            records = _records(body, self.records_path, f"page {number} of {_shown(url)}")
            yield number, records
            following = self._next(paging, base, response, body, records, params, number)
            if following is None:
                return
            url, params = following
            marker = f"{url}?{sorted(params.items())}"
            if marker in seen:
                raise InvalidInput(
                    f"Page {number} of {_shown(url)} points back to a page already read, so "
                    "the pagination would never end; check the pagination settings."
                )
            seen.add(marker)
            if number >= self.max_pages:
                raise InvalidInput(
                    f"{_shown(self.url)} still had pages after max_pages={self.max_pages}; "
                    "nothing was stored. Raise max_pages if the API is that large, or check "
                    "the pagination settings."
                )
            number += 1

    def _next(
        self,
        paging: AnyPagination,
        base: str,
        response: httpx.Response,
        body: Any,
        records: list[dict[str, Any]],
        params: dict[str, Any],
        number: int,
    ) -> tuple[str, dict[str, Any]] | None:
        """The next request's URL and parameters, or None when this was the last page."""
        here = str(response.url)
        if isinstance(paging, NextLinkPagination):
            link = _at(body, paging.path) if paging.path else None
            if not link:
                link = response.links.get("next", {}).get("url")
            if not link:
                return None
            if not isinstance(link, str):
                raise InvalidInput(
                    f"Page {number} of {_shown(here)} has a {type(link).__name__} at "
                    f"{paging.path!r}; expected the next page's URL."
                )
            return urljoin(here, link), {}  # the link carries its own query
        if isinstance(paging, PagePagination):
            if not records:
                return None
            return base, {**params, paging.param: params[paging.param] + 1}
        if isinstance(paging, OffsetPagination):
            if not records:
                return None
            step = params[paging.param] + len(records)
            return base, {**params, paging.param: step}
        if isinstance(paging, CursorPagination):
            cursor = _at(body, paging.path)
            if cursor is None or cursor == "":
                return None
            if isinstance(cursor, dict | list):
                raise InvalidInput(
                    f"Page {number} of {_shown(here)} has a JSON {type(cursor).__name__} at "
                    f"{paging.path!r}; expected the next cursor (a string or number)."
                )
            return base, {**params, paging.param: cursor}
        return None


class _Client:
    """An httpx client that retries, follows redirects and keeps credentials on one origin."""

    def __init__(self, source: HttpSource, headers: dict[str, str], origin: str) -> None:
        self.source = source
        self.headers = headers
        self.origin = origin
        self.client = httpx.Client(timeout=source.timeout, follow_redirects=False)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, url: str, params: dict[str, Any], number: int) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            response = self._with_retries(url, params, number)
            location = response.headers.get("location")
            if response.is_redirect and location:
                url, params = urljoin(str(response.url), location), {}
                continue
            return _checked(response, number, self.source.auth_secret)
        raise InvalidInput(
            f"Page {number} of {_shown(url)} redirected more than {MAX_REDIRECTS} times; "
            "check the URL."
        )

    def _with_retries(self, url: str, params: dict[str, Any], number: int) -> httpx.Response:
        source = self.source
        # Credentials go only to the origin they were configured for.
        # httpx would replace the URL's own query with params; merge them instead.
        target = httpx.URL(url).copy_merge_params(params)
        same = _origin(target) == self.origin
        headers = self.headers if same else {"Accept": "application/json"}
        attempt = 0
        while True:
            try:
                response = self.client.request(source.method, target, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= source.max_retries:
                    raise ServiceUnavailable(
                        f"Cannot reach {_host_port(url)} for page {number} of {_shown(url)} "
                        f"after {attempt + 1} attempt(s): {_transport_reason(exc)}. Check the "
                        "URL and that the API is reachable from here."
                    ) from None
                self._sleep(_backoff(source.backoff, attempt, source.max_wait))
                attempt += 1
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            if attempt >= source.max_retries:
                raise ServiceUnavailable(
                    f"{_shown(str(response.url))} still answered {response.status_code} "
                    f"{response.reason_phrase} for page {number} after {attempt} retr"
                    f"{'y' if attempt == 1 else 'ies'}{_snippet(response)}. Try again later, "
                    "or raise max_retries."
                )
            wait = _retry_after(response)
            if wait is None:
                wait = _backoff(source.backoff, attempt, source.max_wait)
            elif wait > source.max_wait:
                raise ServiceUnavailable(
                    f"{_shown(str(response.url))} answered {response.status_code} and asks to "
                    f"wait {wait:.0f} s (Retry-After) before page {number}, longer than "
                    f"max_wait={source.max_wait:g} s. Try again later, or raise max_wait."
                )
            response.close()
            self._sleep(wait)
            attempt += 1

    @staticmethod
    def _sleep(seconds: float) -> None:
        time.sleep(seconds)


class _Pages:
    """Pages spilled as Arrow files, with the schema every page so far agrees on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: list[Path] = []
        self.unified = pa.schema([])
        self.count = 0
        self.rows = 0

    def add(self, number: int, records: list[dict[str, Any]], where: str) -> None:
        self.count += 1
        if not records:
            return
        table = _page_table(records, where)
        self.unified = _unify(self.unified, table.schema, where)
        path = self.folder / f"page_{number:06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        self.files.append(path)
        self.rows += table.num_rows

    def schema(self) -> pa.Schema:
        # A column that was NULL on every page has no type; string is the widest guess.
        return pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in self.unified]
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        schema = self.schema()
        for path in self.files:
            with pa.OSFile(str(path), "rb") as source:
                for batch in pa.ipc.open_stream(source):
                    yield _conform(batch, schema)


def _page_table(records: list[dict[str, Any]], where: str) -> pa.Table:
    rows = [_flatten(r) for r in records]
    names: dict[str, None] = {}  # ordered set: first-seen column order
    for row in rows:
        names.update(dict.fromkeys(row))
    arrays = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            kinds = sorted({_json_kind(v) for v in values if v is not None})
            raise InvalidInput(
                f"Column {name!r} on {where} mixes {' and '.join(kinds)} values, so it has no "
                "single type; expected one JSON type per field (numbers too large for 64 bits "
                "count as mixed)."
            ) from None
    return pa.Table.from_arrays(arrays, names=list(names))


def _unify(schema: pa.Schema, page: pa.Schema, where: str) -> pa.Schema:
    try:
        return pa.unify_schemas([schema, page], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for field in page:
            index = schema.get_field_index(field.name)
            if index < 0:
                continue
            before = schema.field(index).type
            try:
                pa.unify_schemas(
                    [pa.schema([schema.field(index)]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise InvalidInput(
                    f"Column {field.name!r} on {where} holds {_arrow_kind(field.type)} values, "
                    f"but earlier pages had {_arrow_kind(before)}; expected {_arrow_kind(before)} "
                    "on every page. The API's types are inconsistent; ingest the pages "
                    "separately or fix the API."
                ) from None
        raise


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
        else:
            arrays.append(batch.column(index).cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, list):
            out[name] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            out[name] = value
    return out


# ---- responses -------------------------------------------------------------------------------
def _checked(response: httpx.Response, number: int, secret: str | None) -> httpx.Response:
    status = response.status_code
    if status < 400:
        return response
    where = f"page {number} of {_shown(str(response.url))}"
    what = f"{status} {response.reason_phrase}"
    if status in (401, 403):
        hint = (
            f"check the secret {secret!r} (`modelworks secrets set {secret}`) and that it "
            "grants access to this API"
            if secret
            else "the API wants credentials: set auth_header and auth_secret"
        )
        raise InvalidInput(f"The API refused {where} with {what}{_snippet(response)}; {hint}.")
    if status == 404:
        raise InvalidInput(f"{where.capitalize()} was not found (404); check the URL.")
    if status < 500:
        raise InvalidInput(
            f"The API rejected {where} with {what}{_snippet(response)}; check the URL and params."
        )
    raise ServiceUnavailable(
        f"The API failed on {where} with {what}{_snippet(response)}. Try again later."
    )


def _json_body(response: httpx.Response, number: int) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no Content-Type")
        where = _shown(str(response.url))
        raise InvalidInput(
            f"Page {number} of {where} is not JSON ({kind}{_snippet(response)}); "
            "expected a JSON body. Check the URL: it may point at a web page or a login screen."
        ) from None


def _records(body: Any, path: str | None, where: str) -> list[dict[str, Any]]:
    node = body
    if path:
        walked: list[str] = []
        for part in path.split("."):
            walked.append(part)
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise InvalidInput(
                    f"{where.capitalize()} has no {'.'.join(walked)!r} (records_path "
                    f"{path!r}); {_describe(node)}. Expected the list of records there."
                )
    if node is None:
        return []  # some APIs send "items": null on their last page
    if not isinstance(node, list):
        at = f"at {path!r}" if path else "as the body"
        raise InvalidInput(
            f"{where.capitalize()} has {_describe(node)} {at}; expected a list of records."
            f"{_suggest(node) if not path else ''}"
        )
    for index, item in enumerate(node):
        if not isinstance(item, dict):
            raise InvalidInput(
                f"Record {index} on {where} is a {_json_kind(item)}; expected JSON objects "
                "(one per row)."
            )
    return node


def _at(body: Any, path: str) -> Any:
    node = body
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(base: float, attempt: int, cap: float) -> float:
    # Jitter spreads clients that failed together so they do not retry together.
    return min(cap, base * 2.0**attempt) * random.uniform(0.5, 1.0)


# ---- words for messages --------------------------------------------------------------------
def _shown(url: str) -> str:
    return secrets.redact(url)


def _host_port(url: str) -> str:
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return secrets.redact(f"{parsed.host}:{port}")


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _param(value: str | int | float | bool, ctx: ScanContext) -> str | int | float | bool:
    return secrets.expand(value, ctx.settings) if isinstance(value, str) else value


def _transport_reason(exc: httpx.TransportError) -> str:
    return secrets.redact(str(exc) or type(exc).__name__)


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    text = " ".join(text.split())
    if not text:
        return ""
    return f"; it starts {secrets.redact(text[:160])!r}"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def _arrow_kind(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    return str(kind)


def _describe(node: Any) -> str:
    if isinstance(node, dict):
        keys = ", ".join(list(node)[:10])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(node, list):
        return f"a list of {len(node)}"
    return f"a {_json_kind(node)}"


def _suggest(node: Any) -> str:
    if isinstance(node, dict):
        lists = [k for k, v in node.items() if isinstance(v, list)]
        if lists:
            return f" Set records_path, e.g. records_path={lists[0]!r}."
    return ""


def _sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SENSITIVE_WORDS) or lowered == "key"


def _is_literal(value: str) -> bool:
    # A credential written with a reference may keep a scheme word: "Bearer ${secret:tok}".
    return bool(value.strip()) and not secrets.references(value)


def _mask_literal(url: str) -> str:
    # A URL that failed to parse may still hold credentials before an '@'.
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class _RedactSecrets(logging.Filter):
    """Masks resolved secret values in httpx's own log lines (it logs every request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = secrets.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
            logger.addFilter(_RedactSecrets())


_install_log_filter()
