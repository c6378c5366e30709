"""Run an ASGI app with uvicorn on a free local port in a background thread.

For short-lived local servers inside a command (the quickstart sends its deployment real
HTTP requests through one); long-running servers use ``modelworks server``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from modelworks.core.errors import ServiceUnavailable

__all__ = ["running_app"]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    lifespan: Literal["on", "off"] = "on",
) -> Iterator[str]:
    """Serve ``app`` for the ``with`` block; yields its base URL.

    On leaving the block the server shuts down gracefully: in-flight requests finish and
    the app's lifespan runs its shutdown (the deployment manager drains, say).
    ``lifespan="off"`` skips the app's startup and shutdown (tests drive them).
    """
    import uvicorn

    port = _free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, name="modelworks-local-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServiceUnavailable(
                f"A local server on {host}:{port} did not start within {timeout:.0f} s; "
                "check that the port range is free and try again."
            )
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
