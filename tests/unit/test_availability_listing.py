"""Availability as a listing: what the mirror's blocks and the ledger's claims make of a
window."""

from __future__ import annotations

from datetime import timedelta

from shared.domain.resources import ConnectionStatus
from shared.services.availability import AvailabilityQuery
from tests.builders import T0, busy_block, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


async def world_with_room() -> FakeWorld:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    status = ConnectionStatus(last_sync_at=world.clock.now, mirror_refreshed_at=world.clock.now)
    await world.resources.add(resource("room-1").model_copy(update={"status": status}))
    return world


async def test_a_zero_length_outlook_event_splits_the_free_time_where_it_is() -> None:
    world = await world_with_room()
    # Outlook allows an event that ends when it starts (a marker in the day).
    marker = busy_block("marker", T0 + timedelta(minutes=45), minutes=0)
    await world.ports.unavailability.replace_event("room-1", "marker", [marker])
    query = AvailabilityQuery(start=T0, end=T0 + timedelta(hours=2), duration_minutes=30)

    answer = await world.services.availability.availability("room-1", query)

    # No slot contains it, as a booking over it is refused (the mirror's overlap rule).
    assert [slot.start for slot in answer.free_slots] == [
        T0 + timedelta(minutes=m) for m in (0, 45, 75)
    ]
    assert [(b.start, b.end) for b in answer.busy] == [(marker.start, marker.end)]
