"""GET /api/openapi.json: OpenAPI 3.1 generated from the models the handlers use.

`OPERATIONS` lists every HTTP route of the app with every answer it can give: its
successes (status and model), the domain errors its handler can meet (each error's status
and `Retry-After` come from functions/http.py, its `code` from the error class, so each
error status of an operation declares exactly its codes as an enum), the app roles it
takes (401 `unauthorized` without a caller, 403 `forbidden` without the role), and what
the platform in front answers (401 without a key or token, 429 when throttled). A test
checks the list against the functions registered in function_app.py, both ways; the e2e
and reliability suites check every answer the app gives against the document
(tests/fixtures/contract.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import azure.functions as func
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from functions.bookings import MAX_IDEMPOTENCY_KEY, BookingListQuery, RescheduleRequest
from functions.console import CONTENT_TYPES
from functions.http import (
    ID_PATTERN,
    JSON,
    BodyTooLarge,
    MalformedJson,
    UnsupportedMediaType,
    anonymous,
    json_response,
    retry_after_for,
    status_for,
)
from functions.resources import DisconnectQuery, ResourceList, ResyncAccepted, SyncLogQuery
from shared.domain.bookings import BookingRequest
from shared.domain.callers import Role
from shared.domain.errors import (
    BeyondHorizon,
    CalendarUnavailable,
    ConcurrencyConflict,
    DomainError,
    DurationTooLong,
    Forbidden,
    GraphAccessDenied,
    GraphConflict,
    GraphError,
    GraphNotFound,
    GraphSyncStateLost,
    GraphThrottled,
    GraphTransient,
    IdempotencyKeyReused,
    InvalidInput,
    MailboxInUse,
    NotFound,
    SlotUnavailable,
    StartInPast,
    StorageUnavailable,
    TransactionTooLarge,
    Unauthorized,
)
from shared.domain.resources import ResourceSettings
from shared.domain.sync_log import SyncLogPage
from shared.services.availability import Availability, AvailabilityQuery
from shared.services.bookings import BookingView
from shared.services.health import HealthReport, HealthSummary
from shared.services.inbound import NotificationBatch
from shared.services.previews import TemplatePreview, TemplatePreviewRequest
from shared.services.resources import ResourceView

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str


class BookingList(BaseModel):
    value: list[BookingView]


Auth = Literal["functionKey", "anonymous"]
Tag = Literal["frontend", "administration", "graph-webhooks", "service", "console"]

TAGS: tuple[dict[str, str], ...] = (
    {"name": "frontend", "description": "What a booking frontend calls: availability and "
     f"bookings. Needs the {Role.FRONTEND} app role (reading bookings: or {Role.ADMIN}); "
     "writing ones a function key too."},
    {"name": "administration", "description": "Connecting and watching resources: for the "
     f"tenant's administrators and their tools, not for frontends. Needs the {Role.ADMIN} "
     "app role."},
    {"name": "graph-webhooks", "description": "Called by Microsoft Graph only (change and "
     "lifecycle notifications); anonymous, trusted by clientState and tenant."},
    {"name": "service", "description": "Health probes and this document."},
    {"name": "console", "description": "The administrators' console: static files (HTML, "
     "JavaScript modules, CSS) that call the administration operations. Anonymous: they hold "
     "no data. Each answer has an ETag; a request with If-None-Match holding it gets 304."},
)  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """A success an operation answers: status, what it means and its body (None: none)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    # Without a model: the media types of a text body (the console's files).
    text_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # as registered, without the /api prefix
    operation_id: str
    summary: str
    tag: Tag
    answers: tuple[Answer, ...]
    # Every domain error the handler can answer; the status each maps to comes from
    # functions/http.py unless `error_status` overrides it for this operation.
    errors: tuple[type[DomainError], ...] = ()
    error_status: Mapping[type[DomainError], int] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    example: dict[str, Any] | None = None
    query: type[BaseModel] | None = None
    # The app roles of which the caller needs one (none: anonymous), and whether the host
    # also wants a function key (functions take the app's default, a key, unless
    # registered anonymous; function_app.py says which and why).
    roles: tuple[Role, ...] = ()
    auth: Auth = "functionKey"
    headers: dict[str, str] = field(default_factory=dict)


# What a route id, a query or a JSON body can be refused for.
ID_ERRORS: tuple[type[DomainError], ...] = (InvalidInput,)
BODY_ERRORS: tuple[type[DomainError], ...] = (
    MalformedJson,
    BodyTooLarge,
    UnsupportedMediaType,
    InvalidInput,
)
BOOKING_TIME_ERRORS: tuple[type[DomainError], ...] = (StartInPast, BeyondHorizon, DurationTooLong)
# Microsoft Graph could not be asked (throttled, down, access lost): 503, retry later.
GRAPH_ERRORS: tuple[type[DomainError], ...] = (
    GraphError,
    GraphNotFound,
    GraphAccessDenied,
    GraphThrottled,
    GraphConflict,
    GraphTransient,
    GraphSyncStateLost,
)

IDEMPOTENCY_KEY = (
    "Optional; 1-255 printable ASCII characters, one per booking attempt (a UUID). The same "
    "key with the same body answers the first request's 201 again (a replay, nothing is "
    "booked twice), also after a failure past the booking; with another body 422 "
    "`idempotency_key_reused`; while a request with the key is in progress 409 "
    "`concurrency_conflict` with Retry-After. A request refused with an error keeps no key: "
    "it may be sent again as it is. Keys are remembered IDEMPOTENCY_RETENTION_HOURS (48 by "
    "default, at least 24)."
)

BOOKING_EXAMPLE: dict[str, Any] = {
    "resourceIds": ["room-1", "alice"],
    "start": "2030-03-04T09:00:00Z",
    "end": "2030-03-04T09:30:00Z",
    "title": "Consultation",
    "customer": {"name": "Kim Lee", "email": "kim@example.com"},
    "location": "Room 1",
    "notes": "First visit",
    "externalId": "order-1234",
}
RESOURCE_EXAMPLE: dict[str, Any] = {
    "mailbox": "room-1@contoso.com",
    "displayName": "Room 1",
    "timeZone": "Europe/Berlin",
    "direction": "both",
    "onOutlookDelete": "ignore",
}
PREVIEW_EXAMPLE: dict[str, Any] = {
    "subjectTemplate": "Training: {title}",
    "bodyTemplate": "Booked for {customerName} ({customerEmail}), {start} to {end}.",
    "timeZone": "Europe/Berlin",
}
RESCHEDULE_EXAMPLE: dict[str, Any] = {
    "start": "2030-03-04T10:00:00Z",
    "end": "2030-03-04T10:30:00Z",
}
NOTIFICATION_EXAMPLE: dict[str, Any] = {
    "value": [
        {
            "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
            "clientState": "secretClientValue",
            "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
            "changeType": "updated",
            "resource": "Users/room-1@contoso.com/Events/AAMkAGI1AAAt9AHjAAA=",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "AAMkAGI1AAAt9AHjAAA="},
        }
    ]
}

CONSOLE_NOT_MODIFIED = Answer(304, "Not modified since the ETag in If-None-Match", None)
CONSOLE_TYPES = tuple(sorted(set(CONTENT_TYPES.values())))
CONNECTED_ANSWERS = (Answer(200, "The settings were updated", ResourceView),)
WEBHOOK_ANSWERS = (
    Answer(202, "Accepted: the notifications are queued"),
    Answer(200, "The validation handshake (`?validationToken=`): the token, verbatim",
           media_type="text/plain"),
)  # fmt: skip
WEBHOOK_STATUS: Mapping[type[DomainError], int] = {InvalidInput: 400}
# Who may call an operation (functions/http.py `requires` enforces it per function; a test
# checks the two agree).
FRONTEND = (Role.FRONTEND,)
ADMIN = (Role.ADMIN,)
READERS = (Role.FRONTEND, Role.ADMIN)  # administrators read bookings in the console

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "health", "health", "Ok or not, with a reason code per dependency",
              "service", (Answer(200, "Healthy", HealthSummary),
                          Answer(503, "Unhealthy: a dependency fails", HealthSummary)),
              auth="anonymous"),
    Operation("GET", "health/details", "healthDetails",
              "Health with each dependency's error text, failing and expiring resources",
              "service", (Answer(200, "Healthy", HealthReport),
                          Answer(503, "Unhealthy: a dependency fails", HealthReport)),
              roles=ADMIN, auth="anonymous"),
    Operation("GET", "openapi.json", "openapi", "This document", "service",
              (Answer(200, "OpenAPI 3.1", None),), auth="anonymous"),
    Operation("GET", "console", "console", "The console's page", "console",
              (Answer(200, "The page", text_types=("text/html",)), CONSOLE_NOT_MODIFIED),
              errors=(NotFound,), roles=ADMIN, auth="anonymous"),
    Operation("GET", "console/{file}", "consoleFile",
              "One of the console's files (its scripts, styles, images)", "console",
              (Answer(200, "The file", text_types=CONSOLE_TYPES), CONSOLE_NOT_MODIFIED),
              errors=(*ID_ERRORS, NotFound), roles=ADMIN, auth="anonymous"),
    Operation("GET", "resources", "listResources",
              "Every resource with its settings and connection status, ordered by id",
              "administration", (Answer(200, "The resources", ResourceList),),
              errors=(StorageUnavailable,), roles=ADMIN, auth="anonymous"),
    Operation("POST", "template-preview", "previewTemplates",
              "The event subject and body a resource's templates give a sample booking "
              "(validated as in PUT /resources/{resourceId})",
              "administration", (Answer(200, "The rendered subject and body", TemplatePreview),),
              errors=BODY_ERRORS, body=TemplatePreviewRequest, example=PREVIEW_EXAMPLE,
              roles=ADMIN, auth="anonymous"),
    Operation("PUT", "resources/{resourceId}", "putResource",
              "Connect or update a resource (person or room); a connect answers 202 with "
              "status.state `connecting` and goes on in the background (GET shows when "
              "it is `connected`), an update of a connected resource 200",
              "administration",
              (Answer(202, "Connecting (a new resource, a changed mailbox, or one that was "
                      "disconnected): poll GET until status.state is not `connecting`",
                      ResourceView), *CONNECTED_ANSWERS),
              errors=(*BODY_ERRORS, MailboxInUse, ConcurrencyConflict, StorageUnavailable,
                      *GRAPH_ERRORS),
              body=ResourceSettings, example=RESOURCE_EXAMPLE, roles=ADMIN, auth="anonymous"),
    Operation("GET", "resources/{resourceId}", "getResource", "Settings and connection status",
              "administration", (Answer(200, "The resource", ResourceView),),
              errors=(*ID_ERRORS, NotFound, StorageUnavailable), roles=ADMIN, auth="anonymous"),
    Operation("DELETE", "resources/{resourceId}", "deleteResource",
              "Disconnect: drop the subscription (200, status.state `disconnected`); with "
              "removeEvents=true and events of ours in the calendar, 202 with status.state "
              "`disconnecting` while a background worker deletes them (GET shows when it is "
              "`disconnected`)",
              "administration",
              (
                  Answer(200, "Disconnected", ResourceView),
                  Answer(202, "Disconnecting: our events are being removed", ResourceView),
              ),
              errors=(*ID_ERRORS, NotFound, ConcurrencyConflict, StorageUnavailable,
                      *GRAPH_ERRORS),
              query=DisconnectQuery, roles=ADMIN, auth="anonymous"),
    Operation("GET", "resources/{resourceId}/availability", "getAvailability",
              "Busy intervals and free slots, from the mirror and bookings", "frontend",
              (Answer(200, "Busy and free time in the window", Availability),),
              errors=(*ID_ERRORS, BeyondHorizon, NotFound, CalendarUnavailable,
                      StorageUnavailable),
              query=AvailabilityQuery, roles=FRONTEND),
    Operation("GET", "resources/{resourceId}/sync-log", "getSyncLog",
              "Sync actions, newest first, a page at a time (`after`: the previous page's "
              "`nextPage`), optionally of one outcome", "administration",
              (Answer(200, "A page of entries; `nextPage` is set when more follow",
                      SyncLogPage),),
              errors=(*ID_ERRORS, NotFound, StorageUnavailable), query=SyncLogQuery,
              roles=ADMIN, auth="anonymous"),
    Operation("POST", "resources/{resourceId}/resync", "resyncResource",
              "Delete and recreate our events in the calendar; re-pull busy time (async; "
              "status.pull shows the pull until it is done)",
              "administration", (Answer(202, "Queued", ResyncAccepted),),
              errors=(*ID_ERRORS, NotFound, StorageUnavailable), roles=ADMIN, auth="anonymous"),
    Operation("POST", "graph/notifications", "graphNotifications",
              "Microsoft Graph change notifications (and ?validationToken= handshake)",
              "graph-webhooks", WEBHOOK_ANSWERS,
              errors=(MalformedJson, InvalidInput, BodyTooLarge, UnsupportedMediaType,
                      StorageUnavailable),
              error_status=WEBHOOK_STATUS, body=NotificationBatch,
              example=NOTIFICATION_EXAMPLE, auth="anonymous"),
    Operation("POST", "graph/lifecycle", "graphLifecycle",
              "Microsoft Graph lifecycle notifications (and ?validationToken= handshake)",
              "graph-webhooks", WEBHOOK_ANSWERS,
              errors=(MalformedJson, InvalidInput, BodyTooLarge, UnsupportedMediaType,
                      StorageUnavailable),
              error_status=WEBHOOK_STATUS, body=NotificationBatch,
              example={"value": [{**NOTIFICATION_EXAMPLE["value"][0], "changeType": None,
                                  "lifecycleEvent": "reauthorizationRequired"}]},
              auth="anonymous"),
    Operation("POST", "bookings", "createBooking", "Book one or more resources", "frontend",
              (Answer(201, "Booked on every resource (or, for a repeated Idempotency-Key "
                      "with the same body, the first request's booking again)",
                      BookingView),),
              errors=(*BODY_ERRORS, *BOOKING_TIME_ERRORS, IdempotencyKeyReused,
                      TransactionTooLarge, SlotUnavailable, ConcurrencyConflict,
                      CalendarUnavailable, StorageUnavailable),
              body=BookingRequest, example=BOOKING_EXAMPLE,
              headers={"Idempotency-Key": IDEMPOTENCY_KEY}, roles=FRONTEND),
    Operation("GET", "bookings", "listBookings", "Bookings of a resource in a window",
              "frontend", (Answer(200, "The bookings overlapping the window", BookingList),),
              errors=(*ID_ERRORS, NotFound, StorageUnavailable), query=BookingListQuery,
              roles=READERS, auth="anonymous"),
    Operation("GET", "bookings/{bookingId}", "getBooking",
              "A booking with each resource's sync state", "frontend",
              (Answer(200, "The booking", BookingView),),
              errors=(*ID_ERRORS, NotFound, StorageUnavailable), roles=READERS,
              auth="anonymous"),
    Operation("POST", "bookings/{bookingId}/cancel", "cancelBooking", "Cancel (idempotent)",
              "frontend", (Answer(200, "Cancelled (also when it already was)", BookingView),),
              errors=(*ID_ERRORS, NotFound, ConcurrencyConflict, StorageUnavailable),
              roles=FRONTEND),
    Operation("POST", "bookings/{bookingId}/reschedule", "rescheduleBooking",
              "Move a booking on every resource", "frontend",
              (Answer(200, "Moved on every resource", BookingView),),
              errors=(*BODY_ERRORS, *BOOKING_TIME_ERRORS, TransactionTooLarge, NotFound,
                      SlotUnavailable, ConcurrencyConflict, CalendarUnavailable,
                      StorageUnavailable),
              body=RescheduleRequest, example=RESCHEDULE_EXAMPLE, roles=FRONTEND),
)  # fmt: skip

# What each error status means to a client; the codes of each operation follow.
_STATUS_TEXT = {
    400: "Malformed JSON",
    401: "No authenticated caller: the app saw no principal from App Service "
    "Authentication. The platform in front answers 401 too, without a body, for a request "
    "without (or with an invalid) Microsoft Entra token or function key",
    403: "The caller lacks the app role the operation needs; the message names it",
    404: "Not found",
    409: "Conflict: `slot_unavailable` and `mailbox_in_use` stay so; "
    "`concurrency_conflict` passes: send again after Retry-After",
    413: "Body too large",
    415: "The body is not declared as application/json",
    422: "Invalid input; details name each field",
    503: "Unavailable: `calendar_unavailable` without Retry-After fails closed until the "
    "resource's connection is healthy again; with Retry-After (Graph could not be read "
    "for the live look at the slot just now), and the others, pass: send again after "
    "Retry-After",
}
# Answers of the platform in front of the app, not of the app's code.
HOST_UNAUTHORIZED = (
    "No or a wrong function key (x-functions-key header or ?code=): the Functions host "
    "answers without a body (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to)"
)
HOST_THROTTLED = (
    "Too many requests: the Functions host's HTTP throttles answer without a body "
    "(https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook"
    "#hostjson-settings); "
    "send again later, with growing pauses"
)
# On a response with content: the platform may also give this status without a body.
BODYLESS_TOO = "x-platform-answers-without-body"
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before sending the request again; sent with the "
    "codes that pass by waiting",
    "schema": {"type": "integer", "minimum": 1},
}


def error_codes(op: Operation) -> dict[int, list[type[DomainError]]]:
    """The operation's error classes by status, each status's classes in declared order."""
    by_status: dict[int, list[type[DomainError]]] = {}
    caller_errors: tuple[type[DomainError], ...] = (Unauthorized, Forbidden) if op.roles else ()
    for kind in (*caller_errors, *op.errors):
        status = op.error_status.get(kind) or status_for(kind)
        by_status.setdefault(status, []).append(kind)
    return dict(sorted(by_status.items()))


def _schemas() -> tuple[dict[Any, Any], dict[str, Any]]:
    models: set[tuple[type[BaseModel], JsonSchemaMode]] = {(ErrorDetail, "serialization")}
    for op in OPERATIONS:
        if op.body:
            models.add((op.body, "validation"))
        for answer in op.answers:
            if answer.model:
                models.add((answer.model, "serialization"))
    refs, definitions = models_json_schema(
        sorted(models, key=lambda m: (m[0].__name__, m[1])),
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return dict(refs), schemas


def _error_schemas(
    op: Operation, status: int, kinds: list[type[DomainError]], detail_ref: dict[str, Any]
) -> dict[str, Any]:
    """Two named schemas of one error answer: the envelope and its `error` with `code`
    an enum of exactly the operation's codes for the status."""
    name = f"{op.operation_id[0].upper()}{op.operation_id[1:]}{status}Error"
    codes = list(dict.fromkeys(kind.code for kind in kinds))
    return {
        name: {
            "title": name,
            "type": "object",
            "properties": {"error": {"$ref": f"#/components/schemas/{name}Body"}},
            "required": ["error"],
        },
        f"{name}Body": {
            "title": f"{name}Body",
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": codes},
                "message": {"type": "string"},
                "details": {"type": "array", "items": detail_ref},
            },
            "required": ["code", "message", "details"],
        },
    }


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
        defs = query_schema.get("$defs", {})
        for name, prop in query_schema.get("properties", {}).items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": _inline_defs(prop, defs),
                }
            )
    for name, description in op.headers.items():
        header = {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}
        params.append({"name": name, "in": "header", "description": description, "schema": header})
    return params


def _inline_defs(schema: Any, defs: dict[str, Any]) -> Any:
    """A query parameter's schema with the model's own `#/$defs/...` references (an enum
    such as SyncOutcome) written out: they mean nothing outside the model's schema."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_defs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_defs(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline_defs(item, defs) for item in schema]
    return schema


def _responses(
    op: Operation, refs: dict[Any, Any], schemas: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    responses: dict[str, dict[str, Any]] = {}
    for answer in op.answers:
        declared: dict[str, Any] = {"description": answer.description}
        if answer.model is not None:
            schema = refs[(answer.model, "serialization")]
            declared["content"] = {answer.media_type: {"schema": schema}}
        elif answer.text_types:
            declared["content"] = {t: {"schema": {"type": "string"}} for t in answer.text_types}
        elif answer.media_type == "text/plain":
            declared["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif op.route == "openapi.json":
            declared["content"] = {JSON: {"schema": {"type": "object"}}}
        responses[str(answer.status)] = declared
    detail_ref = refs[(ErrorDetail, "serialization")]
    for status, kinds in error_codes(op).items():
        named = _error_schemas(op, status, kinds, detail_ref)
        schemas.update(named)
        codes = ", ".join(f"`{kind.code}`" for kind in dict.fromkeys(kinds))
        error: dict[str, Any] = {
            "description": f"{_STATUS_TEXT[status]} (codes: {codes})",
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{next(iter(named))}"}}},
        }
        if any(retry_after_for(kind) is not None for kind in kinds):
            error["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        responses[str(status)] = error
    if op.roles:
        # Easy Auth's and the host's 401s have no body: the document allows both.
        responses["401"][BODYLESS_TOO] = True
    elif op.auth != "anonymous":
        responses["401"] = {"description": HOST_UNAUTHORIZED}
    responses["429"] = {"description": HOST_THROTTLED}
    return dict(sorted(responses.items()))


ENTRA_ID_SCHEME = (
    "A Microsoft Entra access token for this API (App Service Authentication checks it in "
    "front of the app): a booking frontend gets one with client credentials for the scope "
    "`api://<app-id>/.default`; an administrator signs in. The operation's app roles must "
    "be assigned to the caller (docs/deploy-to-azure.md)."
)


def _security(op: Operation) -> list[dict[str, list[str]]]:
    """Any one of the operation's roles in an Entra token, each with the function key
    when the host wants one (OpenAPI 3.1 lists role names for non-OAuth2 schemes)."""
    key: dict[str, list[str]] = {} if op.auth == "anonymous" else {"functionKey": []}
    if not op.roles:
        return [key] if key else []
    return [{"entraId": [role.value], **key} for role in op.roles]


def build_openapi() -> dict[str, Any]:
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op),
            "responses": _responses(op, refs, schemas),
            "security": _security(op),
        }
        if op.body is not None:
            media: dict[str, Any] = {"schema": refs[(op.body, "validation")]}
            if op.example is not None:
                media["example"] = op.example
            operation["requestBody"] = {"required": True, "content": {JSON: media}}
        paths.setdefault(f"/api/{op.route}", {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Booking Sync for Microsoft 365", "version": "1.0.0"},
        "tags": list(TAGS),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "entraId": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": ENTRA_ID_SCHEME,
                },
            },
        },
    }


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(build_openapi())
