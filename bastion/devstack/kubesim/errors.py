"""Kubernetes API errors as ``Status`` objects, worded like the real API server's."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "status_body"]

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "AlreadyExists",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An error response: HTTP code, Status reason, message and optional details."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details)

    # -- the common cases, with the real server's wording -----------------------------
    @classmethod
    def _about(
        cls, code: int, group: str, resource: str, name: str, *, message: str, reason: str
    ) -> ApiError:
        """An error about one object; ``{what}`` in ``message`` becomes ``pods "x"``."""
        qualified = f"{resource}.{group}" if group else resource
        return cls(
            code,
            message.replace("{what}", f'{qualified} "{name}"'),
            reason=reason,
            details={"name": name, "group": group, "kind": resource},
        )

    @classmethod
    def not_found(cls, group: str, resource: str, name: str) -> ApiError:
        return cls._about(404, group, resource, name, message="{what} not found", reason="NotFound")

    @classmethod
    def already_exists(cls, group: str, resource: str, name: str) -> ApiError:
        return cls._about(
            409, group, resource, name, message="{what} already exists", reason="AlreadyExists"
        )

    @classmethod
    def conflict(cls, group: str, resource: str, name: str, why: str) -> ApiError:
        return cls._about(
            409,
            group,
            resource,
            name,
            message="Operation cannot be fulfilled on {what}: " + why,
            reason="Conflict",
        )

    @classmethod
    def invalid(
        cls, kind: str, name: str, causes: list[tuple[str, str, str]], group: str = ""
    ) -> ApiError:
        """``causes``: (field, reason such as FieldValueRequired, message)."""
        summary = ", ".join(f"{field}: {message}" for field, _, message in causes)
        qualified = f"{kind}.{group}" if group else kind
        return cls(
            422,
            f'{qualified} "{name}" is invalid: {summary}',
            details={
                "name": name,
                "group": group,
                "kind": kind,
                "causes": [
                    {"reason": reason, "message": message, "field": field}
                    for field, reason, message in causes
                ],
            },
        )


def status_body(
    code: int, message: str, reason: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = {k: v for k, v in details.items() if v not in ("", None)}
    return body
