"""Work cut short by a failure is finished by the next reconcile round (found by the
storage-restart workload; reproduced here over fakes):
- a booking change that was written but whose messages were never sent (the queue
  failed, or the host died, right after the write), whichever kind of round it is;
- an event a push wrote to Graph but never recorded, once its booking is cancelled;
- an event a push wrote to Graph but never recorded, and that the Outlook user then
  moved: the retried push gets it back by its transactionId, as it is now."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.errors import StorageUnavailable
from shared.domain.messages import BOOKING_EVENTS_QUEUE, PushBooking
from shared.domain.resources import ConnectionStatus, OnOutlookMove
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await w.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
        )
    )
    return w


async def pushed_booking(world: FakeWorld) -> str:
    request = booking_request()
    booking_id = (await world.services.bookings.create(request, None)).booking_id
    await world.push_all()
    assert len(world.calendar.events[ROOM]) == 1
    return booking_id


async def test_a_full_round_finishes_a_cancel_cut_short(world: FakeWorld) -> None:
    booking_id = await pushed_booking(world)
    world.queue.fail_next = 1
    with pytest.raises(StorageUnavailable):
        await world.services.bookings.cancel(booking_id)  # written; nothing sent

    report = await world.services.reconcile.reconcile("room-1")
    await world.push_all()

    assert report.full
    assert world.calendar.events[ROOM] == {}
    assert f"{booking_id}.v2.booking.cancelled" in [
        json.loads(body)["eventId"] for body in world.queue.bodies(BOOKING_EVENTS_QUEUE)
    ]


async def test_an_incremental_round_finishes_a_cancel_cut_short(world: FakeWorld) -> None:
    booking_id = await pushed_booking(world)
    await world.services.reconcile.reconcile("room-1")  # a full round: the next are not
    world.queue.fail_next = 1
    with pytest.raises(StorageUnavailable):
        await world.services.bookings.cancel(booking_id)  # written; nothing sent

    report = await world.services.reconcile.reconcile("room-1")
    await world.push_all()

    assert not report.full
    assert world.calendar.events[ROOM] == {}
    assert f"{booking_id}.v2.booking.cancelled" in [
        json.loads(body)["eventId"] for body in world.queue.bodies(BOOKING_EVENTS_QUEUE)
    ]


async def test_an_unrecorded_event_of_a_cancelled_booking_is_removed(world: FakeWorld) -> None:
    booking_id = await pushed_booking(world)
    # The push died after Graph created the event and before the mapping recorded it: the
    # mapping holds only the create's intent.
    stored = await world.mappings.get("room-1", booking_id)
    assert stored is not None
    lost = {"event_id": None, "change_key": None, "pending_transaction_id": "tx-lost"}
    await world.mappings.update(stored.value.model_copy(update=lost), stored.etag)
    await world.services.bookings.cancel(booking_id)
    await world.push_all()  # no event id to delete: the event stays for now

    report = await world.services.reconcile.reconcile("room-1")
    await world.push_all()

    assert report.full
    assert world.calendar.events[ROOM] == {}


async def test_a_move_made_before_the_push_was_recorded_gets_the_policy(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    restoring = stored.value.settings.model_copy(
        update={"on_outlook_move": OnOutlookMove.RESTORE_EVENT}
    )
    await world.resources.update(
        stored.value.model_copy(update={"settings": restoring}), stored.etag
    )
    request = booking_request()
    booking_id = (await world.services.bookings.create(request, None)).booking_id
    # The push dies after Graph created the event, before the mapping recorded it.
    update = world.mappings.update

    async def storage_down(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(world.mappings, "update", update)
        raise StorageUnavailable("storage down")

    monkeypatch.setattr(world.mappings, "update", storage_down)
    with pytest.raises(StorageUnavailable):
        await world.push_all()
    # Meanwhile the Outlook user moves the event half an hour on.
    [event] = world.calendar.events[ROOM].values()
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={
            "start": event.start + timedelta(minutes=30),
            "end": event.end + timedelta(minutes=30),
            "change_key": "changed-in-outlook",
        }
    )
    # The push is retried: Graph answers its transactionId with the event as it is now.
    await world.services.push.push(PushBooking(booking_id=booking_id, booking_version=1))

    await world.services.reconcile.reconcile("room-1")  # a full round
    await world.push_all()

    [event] = world.calendar.events[ROOM].values()
    assert (event.start, event.end) == (T0, T0 + timedelta(hours=1))  # restored
