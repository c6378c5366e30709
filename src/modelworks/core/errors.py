"""One error hierarchy, mapped to HTTP problem bodies and to CLI exit codes."""

from __future__ import annotations

from typing import Any


class ModelworksError(Exception):
    """Base error. ``detail`` says what was wrong and what to do."""

    status_code = 500
    code = "internal_error"
    title = "Internal error"
    exit_code = 1

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details."""
        body: dict[str, Any] = {
            "type": f"https://modelworks.dev/errors/{self.code}",
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidInput(ModelworksError):
    status_code = 422
    code = "invalid_input"
    title = "Invalid input"
    exit_code = 2


class Unauthenticated(ModelworksError):
    status_code = 401
    code = "unauthenticated"
    title = "Authentication required"
    exit_code = 6


class PermissionDenied(ModelworksError):
    status_code = 403
    code = "permission_denied"
    title = "Permission denied"
    exit_code = 5


class NotFound(ModelworksError):
    status_code = 404
    code = "not_found"
    title = "Not found"
    exit_code = 3


class AlreadyExists(ModelworksError):
    status_code = 409
    code = "already_exists"
    title = "Already exists"
    exit_code = 4


class Conflict(ModelworksError):
    status_code = 409
    code = "conflict"
    title = "Conflict"
    exit_code = 4


class PayloadTooLarge(ModelworksError):
    status_code = 413
    code = "payload_too_large"
    title = "Payload too large"
    exit_code = 2


class CorruptData(ModelworksError):
    """Stored bytes or records do not match their checksums."""

    status_code = 500
    code = "integrity_error"
    title = "Integrity check failed"
    exit_code = 7


class ServiceUnavailable(ModelworksError):
    status_code = 503
    code = "service_unavailable"
    title = "Service unavailable"
    exit_code = 8


ERRORS_BY_CODE: dict[str, type[ModelworksError]] = {
    cls.code: cls
    for cls in (
        ModelworksError,
        InvalidInput,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        Conflict,
        PayloadTooLarge,
        CorruptData,
        ServiceUnavailable,
    )
}


def error_from_problem(status: int, body: dict[str, Any]) -> ModelworksError:
    """Rebuild the typed error from a problem body (used by the remote SDK)."""
    cls = ERRORS_BY_CODE.get(str(body.get("code", "")), ModelworksError)
    err = cls(str(body.get("detail") or body.get("title") or f"HTTP {status}"))
    err.status_code = status
    return err
