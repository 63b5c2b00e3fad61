"""Graph's error shape: ``{"error": {"code", "message", "innerError"}}`` with a status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


class GraphError(Exception):
    """Raised anywhere in request handling; the gateway turns it into a Graph error response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str, client_request_id: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now,
                "request-id": str(uuid.uuid4()),
                "client-request-id": client_request_id or str(uuid.uuid4()),
            },
        }
    }


def not_found_item() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def default_code_for(status: int) -> str:
    """The code Graph most often pairs with a status, for injected faults without a code."""
    return {
        400: "BadRequest",
        401: "InvalidAuthenticationToken",
        403: "ErrorAccessDenied",
        404: "ErrorItemNotFound",
        409: "ErrorIrresolvableConflict",
        410: "syncStateNotFound",
        412: "ErrorIrresolvableConflict",
        429: "ApplicationThrottled",
        500: "InternalServerError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "GatewayTimeout",
    }.get(status, "UnknownError")
