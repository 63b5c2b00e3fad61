"""Each booking change reaches booking-events once, even when two requests touch the
booking at the same moment (found by the fault workload; reproduced here over fakes).

A second request that reads the booking before the first has sent and cleared its outbox
must not send the same messages again: identical copies carry one event id, so a
consumer could drop them, but PRODUCT.md promises one event per change.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from pydantic import BaseModel

from shared.domain.bookings import TimeRange
from shared.domain.errors import InvalidInput
from shared.domain.messages import BOOKING_EVENTS_QUEUE
from shared.domain.resources import ConnectionStatus
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    """One room; sending to a queue takes a moment, as over the network, so that other
    requests run meanwhile."""
    w = fake_world(Clock(T0 - timedelta(days=1)), ("room-1@contoso.com",))
    await w.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
        )
    )
    send = w.queue.send

    async def slow_send(
        queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        await asyncio.sleep(0)
        await send(queue_name, message, delay_seconds=delay_seconds)

    monkeypatch.setattr(w.queue, "send", slow_send)
    return w


async def booked(world: FakeWorld) -> str:
    request = booking_request()
    return (await world.services.bookings.create(request, None)).booking_id


def emitted(world: FakeWorld) -> list[str]:
    return [json.loads(body)["eventId"] for body in world.queue.bodies(BOOKING_EVENTS_QUEUE)]


async def test_two_concurrent_cancels_emit_one_cancelled_event(world: FakeWorld) -> None:
    booking_id = await booked(world)
    bookings = world.services.bookings

    await asyncio.gather(bookings.cancel(booking_id), bookings.cancel(booking_id))

    assert emitted(world) == [
        f"{booking_id}.v1.booking.created",
        f"{booking_id}.v2.booking.cancelled",
    ]


# The cancel starts that many event-loop turns after the reschedule: every interleaving
# from "the cancel wins" to "the cancel meets the reschedule's unsent outbox".
@pytest.mark.parametrize("head_start", range(12))
async def test_a_cancel_racing_a_reschedule_emits_each_change_once(
    world: FakeWorld, head_start: int
) -> None:
    booking_id = await booked(world)
    bookings = world.services.bookings
    later = TimeRange(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))

    async def cancel_after_a_while() -> object:
        for _ in range(head_start):
            await asyncio.sleep(0)
        return await bookings.cancel(booking_id)

    moved, cancelled = await asyncio.gather(
        bookings.reschedule(booking_id, later), cancel_after_a_while(), return_exceptions=True
    )

    assert not isinstance(cancelled, BaseException)
    if isinstance(moved, BaseException):
        # The cancel came first: the reschedule is refused, as it would be after it.
        assert isinstance(moved, InvalidInput), moved
        changes = ["v2.booking.cancelled"]
    else:
        changes = ["v2.booking.rescheduled", "v3.booking.cancelled"]
    assert emitted(world) == [f"{booking_id}.{c}" for c in ["v1.booking.created", *changes]]
