"""ASGI middleware: request ids and the request-size limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelworks.core.context import request_id_var
from modelworks.core.errors import PayloadTooLarge
from modelworks.core.ids import new_id


class RequestIdMiddleware:
    """Give each request an id (or keep a sane X-Request-ID) for logs and the audit trail."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else new_id()
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit with 413, by Content-Length or while streaming.

    Paths matching a pattern in ``overrides`` get that pattern's limit instead (artifact
    uploads are streamed to disk, so they may be far larger than a JSON body).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: list[tuple[str, int]] | None = None
    ) -> None:
        import re

        self.app = app
        self.max_bytes = max_bytes
        self.overrides = [(re.compile(p), n) for p, n in overrides or []]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = next(
            (n for p, n in self.overrides if p.fullmatch(scope.get("path", ""))), self.max_bytes
        )
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(send, limit)
            return
        seen = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        setting = "MAX_REQUEST_BYTES" if limit == self.max_bytes else "MAX_ARTIFACT_BYTES"
        err = PayloadTooLarge(
            f"Request body is larger than the limit of {limit} bytes "
            f"(MODELWORKS_{setting}). Send less per request."
        )
        body = json.dumps(err.to_problem()).encode()
        headers: list[Any] = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class PrometheusMiddleware:
    """Count requests and time them per route template (not per raw path: bounded labels)."""

    def __init__(self, app: ASGIApp) -> None:
        from prometheus_client import Counter, Histogram

        self.app = app
        self.requests = _metric(
            Counter,
            "modelworks_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
        )
        self.latency = _metric(
            Histogram,
            "modelworks_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import time

        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)


_METRICS: dict[str, Any] = {}


def _metric(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
    # Several apps in one process (tests) share the default registry: register each once.
    if name not in _METRICS:
        _METRICS[name] = kind(name, doc, labels)
    return _METRICS[name]
