"""GET /api/openapi.json: OpenAPI 3.1 generated from the models the handlers use.

`OPERATIONS` lists every HTTP route of the app; a test checks it against the functions
registered in function_app.py, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import azure.functions as func
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from functions.bookings import BookingListQuery, RescheduleRequest
from functions.http import ID_PATTERN, json_response
from functions.resources import DisconnectQuery, SyncLogQuery
from shared.domain.bookings import BookingRequest
from shared.domain.resources import ResourceSettings
from shared.domain.sync_log import SyncLogEntry
from shared.services.availability import Availability, AvailabilityQuery
from shared.services.bookings import BookingView
from shared.services.health import HealthReport, HealthSummary
from shared.services.inbound import NotificationBatch
from shared.services.resources import ResourceView

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class BookingList(BaseModel):
    value: list[BookingView]


class SyncLogList(BaseModel):
    value: list[SyncLogEntry]


Auth = Literal["functionKey", "anonymous"]


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # as registered, without the /api prefix
    operation_id: str
    summary: str
    ok_status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_type: str = "application/json"
    errors: tuple[int, ...] = (404, 422)
    auth: Auth = "functionKey"
    headers: dict[str, str] = field(default_factory=dict)


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "health", "health", "Ok or not, with a reason code per dependency",
              response=HealthSummary, errors=(503,), auth="anonymous"),
    Operation("GET", "health/details", "healthDetails",
              "Health with each dependency's error text, failing and expiring resources",
              response=HealthReport, errors=(503,)),
    Operation("GET", "openapi.json", "openapi", "This document", errors=(), auth="anonymous"),
    Operation("PUT", "resources/{resourceId}", "putResource",
              "Connect or update a resource (person or room); a connect answers 202 with "
              "status.state `connecting` and goes on in the background (GET shows when "
              "it is `connected`), an update 200", body=ResourceSettings, ok_status=202,
              response=ResourceView, errors=(400, 409, 413, 415, 422, 503)),
    Operation("GET", "resources/{resourceId}", "getResource", "Settings and connection status",
              response=ResourceView),
    Operation("DELETE", "resources/{resourceId}", "deleteResource",
              "Disconnect: drop the subscription (200, status.state `disconnected`); with "
              "removeEvents=true and events of ours in the calendar, 202 with status.state "
              "`disconnecting` while a background worker deletes them (GET shows when it is "
              "`disconnected`)", query=DisconnectQuery, response=ResourceView),
    Operation("GET", "resources/{resourceId}/availability", "getAvailability",
              "Busy intervals and free slots, from the mirror and bookings",
              query=AvailabilityQuery, response=Availability, errors=(404, 422, 503)),
    Operation("GET", "resources/{resourceId}/sync-log", "getSyncLog", "Sync actions, newest first",
              query=SyncLogQuery, response=SyncLogList),
    Operation("POST", "resources/{resourceId}/resync", "resyncResource",
              "Delete and recreate our events in the calendar; re-pull busy time (async; "
              "status.pull shows the pull until it is done)",
              ok_status=202, errors=(404, 422)),
    Operation("POST", "graph/notifications", "graphNotifications",
              "Microsoft Graph change notifications (and ?validationToken= handshake)",
              ok_status=202, body=NotificationBatch, errors=(400, 413, 415, 503),
              auth="anonymous"),
    Operation("POST", "graph/lifecycle", "graphLifecycle",
              "Microsoft Graph lifecycle notifications (and ?validationToken= handshake)",
              ok_status=202, body=NotificationBatch, errors=(400, 413, 415, 503),
              auth="anonymous"),
    Operation("POST", "bookings", "createBooking", "Book one or more resources",
              ok_status=201, body=BookingRequest, response=BookingView,
              errors=(400, 409, 413, 415, 422, 503),
              headers={"Idempotency-Key": "Same key and body: the first response again; "
                       "409 concurrency_conflict while a request with the key is in progress"}),
    Operation("GET", "bookings", "listBookings", "Bookings of a resource in a window",
              query=BookingListQuery, response=BookingList),
    Operation("GET", "bookings/{bookingId}", "getBooking",
              "A booking with each resource's sync state", response=BookingView),
    Operation("POST", "bookings/{bookingId}/cancel", "cancelBooking", "Cancel (idempotent)",
              response=BookingView),
    Operation("POST", "bookings/{bookingId}/reschedule", "rescheduleBooking",
              "Move a booking on every resource", body=RescheduleRequest, response=BookingView,
              errors=(400, 404, 409, 413, 415, 422, 503)),
)  # fmt: skip

_STATUS_TEXT = {
    400: "Malformed JSON",
    404: "Not found",
    409: "Conflict (slot_unavailable; concurrency_conflict: retry shortly)",
    413: "Body too large",
    415: "The body is not declared as application/json",
    422: "Invalid input; details name each field",
    503: "Unavailable (calendar_unavailable: fail closed, or storage)",
}


def _schemas() -> tuple[dict[Any, Any], dict[str, Any]]:
    models: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorResponse, "serialization")}
    for op in OPERATIONS:
        if op.body:
            models.add((op.body, "validation"))
        if op.response:
            models.add((op.response, "serialization"))
    refs, definitions = models_json_schema(
        sorted(models, key=lambda m: (m[0].__name__, m[1])),
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return dict(refs), schemas


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for segment in op.route.split("/"):
        if segment.startswith("{"):
            name = segment.strip("{}")
            id_schema = {"type": "string", "pattern": ID_PATTERN.pattern}
            params.append({"name": name, "in": "path", "required": True, "schema": id_schema})
    if op.query is not None:
        query_schema = op.query.model_json_schema(mode="validation")
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    for name, description in op.headers.items():
        header = {"type": "string", "maxLength": 255}
        params.append({"name": name, "in": "header", "description": description, "schema": header})
    return params


def build_openapi() -> dict[str, Any]:
    refs, definitions = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    error_ref = refs[(ErrorResponse, "serialization")]
    for op in OPERATIONS:
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {op.response_type: {"schema": refs[(op.response, "serialization")]}}
        elif op.route == "openapi.json":
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {str(op.ok_status): ok}
        for status in op.errors:
            responses[str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": {"application/json": {"schema": error_ref}},
            }
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "parameters": _parameters(op),
            "responses": responses,
            "security": [] if op.auth == "anonymous" else [{"functionKey": []}],
        }
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        paths.setdefault(f"/api/{op.route}", {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Booking Sync for Microsoft 365", "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}
            },
        },
    }


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(build_openapi())
