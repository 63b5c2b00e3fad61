"""Small builders of valid domain objects for tests; override what a test is about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.bookings import Booking, BookingRequest, Customer
from shared.domain.calendar import ShowAs, Unavailability
from shared.domain.resources import Resource, ResourceSettings

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def resource(resource_id: str = "room-1", **settings: Any) -> Resource:
    values: dict[str, Any] = {"mailbox": f"{resource_id}@contoso.com", "display_name": resource_id}
    values.update(settings)
    return Resource(
        resource_id=resource_id,
        settings=ResourceSettings(**values),
        created_at=T0,
        updated_at=T0,
    )


def booking(booking_id: str = "bk-1", **fields: Any) -> Booking:
    values: dict[str, Any] = {
        "booking_id": booking_id,
        "resource_ids": ["room-1"],
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "title": "Intro call",
        "customer": Customer(name="Ada", email="ada@example.com"),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Booking(**values)


def booking_request(
    start: datetime = T0, end: datetime | None = None, **fields: Any
) -> BookingRequest:
    """A request for one hour of room-1 from `start` (by the API's field names)."""
    values: dict[str, Any] = {
        "resourceIds": ["room-1"],
        "start": start,
        "end": end or start + timedelta(hours=1),
        "title": "Intro call",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    }
    values.update(fields)
    return BookingRequest.model_validate(values)


def busy_block(event_id: str, start: datetime, minutes: int = 30, **fields: Any) -> Unavailability:
    values: dict[str, Any] = {
        "resource_id": "room-1",
        "event_id": event_id,
        "start": start,
        "end": start + timedelta(minutes=minutes),
        "show_as": ShowAs.BUSY,
    }
    values.update(fields)
    return Unavailability(**values)
