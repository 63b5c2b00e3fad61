"""A client's retry racing its first attempt: the booking keeps its time on the slot
ledger, so no other booking can take it (found by the crash workload; reproduced here
over fakes).

Claims are keyed by booking and time, so both attempts hold the same claim: the one that
loses the race (on the booking's ETag for a reschedule, on the booking's insert for a
create with one Idempotency-Key) must not release it as its compensation, since the
winner's booking now holds that time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingRequest, TimeRange
from shared.domain.errors import SlotUnavailable
from shared.domain.messages import BOOKING_EVENTS_QUEUE
from shared.domain.resources import ConnectionStatus
from shared.services.bookings import BookingView
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

LATER = TimeRange(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    """One room; every ledger and booking read or write takes a moment, as over the
    network, so that concurrent requests interleave."""
    w = fake_world(Clock(T0 - timedelta(days=1)), ("room-1@contoso.com",))
    await w.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
        )
    )
    for port, names in (
        (w.ports.slot_ledger, ("read_days", "write_days")),
        (w.ports.bookings, ("get", "add", "update")),
        (w.ports.idempotency, ("get", "add")),
    ):
        for name in names:
            monkeypatch.setattr(port, name, _after_a_moment(getattr(port, name)))
    return w


def _after_a_moment(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def delayed(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await call(*args, **kwargs)

    return delayed


def request(time_range: TimeRange) -> BookingRequest:
    return booking_request(time_range.start, time_range.end)


async def test_two_reschedules_to_one_time_leave_it_booked(world: FakeWorld) -> None:
    bookings = world.services.bookings
    first = TimeRange(start=T0, end=T0 + timedelta(hours=1))
    booking_id = (await bookings.create(request(first), None)).booking_id

    await asyncio.gather(
        bookings.reschedule(booking_id, LATER),
        bookings.reschedule(booking_id, LATER),
        return_exceptions=True,  # one may lose the race on the ETag (409): that is fine
    )

    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.time_range == LATER
    with pytest.raises(SlotUnavailable):
        await bookings.create(request(LATER), None)  # a second booking of the same time


# The second attempt starts that many event-loop turns after the first.
@pytest.mark.parametrize("head_start", range(0, 16, 3))
async def test_two_attempts_of_one_create_book_the_time_once(
    world: FakeWorld, head_start: int
) -> None:
    bookings = world.services.bookings

    async def retried() -> BookingView:
        for _ in range(head_start):
            await asyncio.sleep(0)
        return await bookings.create(request(LATER), "key-1")

    first, second = await asyncio.gather(
        bookings.create(request(LATER), "key-1"), retried(), return_exceptions=True
    )

    views = [r for r in (first, second) if not isinstance(r, BaseException)]
    assert views, (first, second)  # a loser may be told to retry (409), never both
    assert len({view.booking_id for view in views}) == 1
    with pytest.raises(SlotUnavailable):
        await bookings.create(request(LATER), None)  # a second booking of the same time
    created = [
        body for body in world.queue.bodies(BOOKING_EVENTS_QUEUE) if "booking.created" in body
    ]
    assert len(created) == 1
