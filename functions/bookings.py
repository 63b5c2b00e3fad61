"""Booking API: create, read, list, cancel, reschedule."""

from __future__ import annotations

import re

import azure.functions as func

from functions.http import json_response, parse_body, parse_query, requires, respond, route_id
from shared.composition import get_services
from shared.domain.base import DomainModel, ResourceId, UtcDatetime
from shared.domain.bookings import BookingRequest, TimeRange
from shared.domain.callers import Role
from shared.domain.errors import InvalidInput
from shared.observability import correlate

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

MAX_IDEMPOTENCY_KEY = 255
# Printable ASCII, as an Idempotency-Key is a structured-field string
# (draft-ietf-httpapi-idempotency-key-header); anything else cannot be hashed or logged
# safely (a byte that was not UTF-8 reaches Python as a lone surrogate).
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]+")


class RescheduleRequest(DomainModel):
    start: UtcDatetime
    end: UtcDatetime


class BookingListQuery(DomainModel):
    resource_id: ResourceId
    start: UtcDatetime
    end: UtcDatetime


def _idempotency_key(req: func.HttpRequest) -> str | None:
    key: str | None = req.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            details=[
                {"field": "Idempotency-Key", "message": "empty, too long or not printable ASCII"}
            ],
        )
    return key


@bp.route(route="bookings", methods=["POST"])
@requires(Role.FRONTEND)
async def create_booking(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        request = parse_body(req, BookingRequest)
        view = await get_services().bookings.create(request, _idempotency_key(req))
        return json_response(view, status=201)

    return await respond(handle)


@bp.route(route="bookings/{bookingId}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.FRONTEND, Role.ADMIN)
async def get_booking(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        booking_id = route_id(req, "bookingId")
        with correlate(booking_id=booking_id):
            view = await get_services().bookings.get(booking_id)
            return json_response(view)

    return await respond(handle)


@bp.route(route="bookings", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.FRONTEND, Role.ADMIN)
async def list_bookings(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        query = parse_query(
            req,
            BookingListQuery,
            {"resourceId": "resourceId", "start": "start", "end": "end"},
        )
        with correlate(resource_id=query.resource_id):
            views = await get_services().bookings.list_for_resource(
                query.resource_id, query.start, query.end
            )
            return json_response({"value": [view.model_dump(mode="json") for view in views]})

    return await respond(handle)


@bp.route(route="bookings/{bookingId}/cancel", methods=["POST"])
@requires(Role.FRONTEND)
async def cancel_booking(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        booking_id = route_id(req, "bookingId")
        with correlate(booking_id=booking_id):
            view = await get_services().bookings.cancel(booking_id)
            return json_response(view)

    return await respond(handle)


@bp.route(route="bookings/{bookingId}/reschedule", methods=["POST"])
@requires(Role.FRONTEND)
async def reschedule_booking(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        booking_id = route_id(req, "bookingId")
        body = parse_body(req, RescheduleRequest)
        if body.end <= body.start:
            raise InvalidInput(
                "end must be after start",
                details=[{"field": "end", "message": "must be after start"}],
            )
        with correlate(booking_id=booking_id):
            view = await get_services().bookings.reschedule(
                booking_id, TimeRange(start=body.start, end=body.end)
            )
            return json_response(view)

    return await respond(handle)
