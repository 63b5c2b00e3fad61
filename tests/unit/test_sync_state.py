"""The per-calendar sync state a booking shows: it settles, whoever cancelled it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.messages import EventChange
from shared.domain.resources import CancelledEventMode, ConnectionStatus, OnOutlookDelete
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


async def world_with(mode: CancelledEventMode) -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    room = resource(
        "room-1", on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING, cancelled_event_mode=mode
    )
    fresh = ConnectionStatus(mirror_refreshed_at=w.clock.now)
    await w.resources.add(room.model_copy(update={"status": fresh}))
    return w


async def states(w: FakeWorld, booking_id: str) -> list[str]:
    return [s.state for s in (await w.services.bookings.get(booking_id)).sync]


async def test_a_booking_cancelled_from_outlook_shows_its_event_removed() -> None:
    w = await world_with(CancelledEventMode.DELETE)
    booking_id = (await w.services.bookings.create(booking_request(), None)).booking_id
    await w.push_all()
    [event_id] = w.calendar.events[ROOM]
    w.calendar.events[ROOM].clear()  # the Outlook user deletes the event

    await w.services.inbound.handle_change(
        EventChange(
            subscription_id="00000000-0000-4000-8000-000000000001",
            resource_id="room-1",
            change_type="deleted",
            event_id=event_id,
            received_at=T0,
        )
    )
    await w.push_all()

    assert await states(w, booking_id) in (["removed"], ["synced"])


@pytest.mark.parametrize(
    ("mode", "settled"),
    [(CancelledEventMode.DELETE, "synced"), (CancelledEventMode.PREFIX, "synced")],
)
async def test_a_booking_cancelled_by_the_api_settles_once_pushed(
    mode: CancelledEventMode, settled: str
) -> None:
    w = await world_with(mode)
    booking_id = (await w.services.bookings.create(booking_request(), None)).booking_id
    await w.push_all()
    await w.services.bookings.cancel(booking_id)
    assert await states(w, booking_id) == ["pending"]  # its event is still there

    await w.push_all()

    assert await states(w, booking_id) == [settled]


async def test_a_booking_cancelled_before_its_first_push_shows_no_event_removed() -> None:
    w = await world_with(CancelledEventMode.DELETE)
    booking_id = (await w.services.bookings.create(booking_request(), None)).booking_id
    await w.services.bookings.cancel(booking_id)

    await w.push_all()

    assert await states(w, booking_id) in (["removed"], ["synced"])
    assert w.calendar.events[ROOM] == {}
