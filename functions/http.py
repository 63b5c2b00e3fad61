"""HTTP plumbing shared by the HTTP-triggered functions: JSON in, JSON or errors out."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.domain.errors import (
    AlreadyExists,
    CalendarUnavailable,
    ConcurrencyConflict,
    DomainError,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    SlotUnavailable,
    StorageUnavailable,
)

logger = logging.getLogger(__name__)

JSON = "application/json"

# Domain error → HTTP status. Anything not listed is a 500 (and a bug to look at).
STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    SlotUnavailable: 409,
    AlreadyExists: 409,
    ConcurrencyConflict: 409,
    IdempotencyKeyReused: 422,
    CalendarUnavailable: 503,
    StorageUnavailable: 503,
}


def json_response(body: BaseModel | dict[str, Any], status: int = 200) -> func.HttpResponse:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return func.HttpResponse(text, status_code=status, mimetype=JSON, charset="utf-8")


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> func.HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=JSON, charset="utf-8")


def domain_error_response(error: DomainError) -> func.HttpResponse:
    status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(error, kind)), 500)
    if status == 500:
        logger.error("unmapped domain error %s: %s", type(error).__name__, error.message)
    return error_response(status, error.code, error.message, list(error.details))


def validation_error_response(error: ValidationError, *, status: int = 422) -> func.HttpResponse:
    """A 4xx naming every offending field (camelCase paths, as the API spells them)."""
    details = [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "body",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(detail["field"] for detail in details)
    return error_response(status, "invalid_input", f"invalid value for: {fields}", details)
