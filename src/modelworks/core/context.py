"""Per-request context carried through service calls (request id for the audit trail)."""

from contextvars import ContextVar

from modelworks.core.ids import new_id

request_id_var: ContextVar[str | None] = ContextVar("modelworks_request_id", default=None)


def current_request_id() -> str:
    """The id of the request being served, or a fresh one outside a request."""
    return request_id_var.get() or new_id()
