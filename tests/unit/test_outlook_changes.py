"""Outlook changes applied by policy while our own workers write the same records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus
from shared.domain.calendar import EventMapping
from shared.domain.messages import BOOKING_EVENTS_QUEUE, EventChange, EventChanges
from shared.domain.resources import ConnectionStatus, OnOutlookDelete
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    room = resource("room-1")
    settings = room.settings.model_copy(
        update={"on_outlook_delete": OnOutlookDelete.CANCEL_BOOKING}
    )
    await w.resources.add(
        room.model_copy(
            update={
                "settings": settings,
                "status": ConnectionStatus(mirror_refreshed_at=w.clock.now),
            }
        )
    )
    return w


def race_the_next_mapping_write(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, raced: list[str]
) -> None:
    """Make the next mapping write meet a push that records its attempt on the same
    mapping between the writer's read and its write; the booking raced goes to `raced`."""
    update = world.mappings.update

    async def overtaken(mapping: EventMapping, etag: str) -> Any:
        monkeypatch.setattr(world.mappings, "update", update)
        current = await world.mappings.get(mapping.resource_id, mapping.booking_id)
        assert current is not None
        await update(current.value.model_copy(update={"last_error": "retrying"}), current.etag)
        raced.append(mapping.booking_id)
        return await update(mapping, etag)

    monkeypatch.setattr(world.mappings, "update", overtaken)


async def test_a_delete_cancels_even_when_the_cancels_push_writes_the_mapping_meanwhile(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = booking_request()
    booking_id = (await world.services.bookings.create(request, None)).booking_id
    await world.push_all()
    world.calendar.events[ROOM].clear()  # the Outlook user deletes our event
    cancel = world.services.bookings.cancel
    raced: list[str] = []

    async def cancel_then_race(*args: Any, **kwargs: Any) -> Any:
        view = await cancel(*args, **kwargs)
        race_the_next_mapping_write(world, monkeypatch, raced)
        return view

    monkeypatch.setattr(world.services.bookings, "cancel", cancel_then_race)

    report = await world.services.reconcile.reconcile("room-1")

    assert raced == [booking_id]
    assert report.policies_applied == 1
    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.status is BookingStatus.CANCELLED
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.event_id is None


async def test_a_delete_the_policy_leaves_is_recorded_though_a_push_writes_the_mapping_meanwhile(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    ignoring = stored.value.settings.model_copy(
        update={"on_outlook_delete": OnOutlookDelete.IGNORE}
    )
    await world.resources.update(
        stored.value.model_copy(update={"settings": ignoring}), stored.etag
    )
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    world.calendar.events[ROOM].clear()  # the Outlook user deletes our event
    raced: list[str] = []
    race_the_next_mapping_write(world, monkeypatch, raced)

    report = await world.services.reconcile.reconcile("room-1")

    assert raced == [booking_id]
    assert report.policies_applied == 1
    booking = await world.bookings.get(booking_id)
    assert booking is not None
    assert booking.value.status is BookingStatus.CONFIRMED
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert (mapping.value.event_id, mapping.value.detached) == (None, True)
    assert world.calendar.events[ROOM] == {}  # left deleted, as the policy says


async def test_repeats_of_one_notification_in_a_message_are_applied_once(
    world: FakeWorld,
) -> None:
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [event_id] = world.calendar.events[ROOM]
    world.calendar.events[ROOM].clear()  # the Outlook user deletes our event

    def deleted(at: timedelta) -> EventChange:
        return EventChange(
            subscription_id="sub-1",
            resource_id="room-1",
            change_type="deleted",
            event_id=event_id,
            change_key="ck-last",
            received_at=T0 + at,
        )

    # Another (foreign) event's update, between the repeats and repeated itself.
    other = deleted(timedelta(0)).model_copy(
        update={"event_id": "someone-else", "change_type": "updated"}
    )
    work = EventChanges(
        subscription_id="sub-1",
        resource_id="room-1",
        changes=[
            deleted(timedelta(0)),
            other,
            deleted(timedelta(seconds=1)),
            other.model_copy(update={"received_at": T0 + timedelta(seconds=2)}),
            other,
        ],
    )
    world.calendar.reads.clear()

    await world.services.inbound.handle_change(work)

    # A delete is not read back (deleted means deleted); the update is read once.
    assert world.calendar.reads == [(ROOM, "someone-else")]
    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.status is BookingStatus.CANCELLED
    cancelled = [b for b in world.queue.bodies(BOOKING_EVENTS_QUEUE) if "booking.cancelled" in b]
    assert len(cancelled) == 1


async def test_a_deleted_notification_cancels_though_the_event_is_still_readable(
    world: FakeWorld,
) -> None:
    # Graph's DELETE moves the event to Deleted Items; a GET by id may still return it
    # (the fake keeps it in the calendar, the harshest case): deleted still means deleted.
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [event_id] = world.calendar.events[ROOM]
    deleted = EventChange(
        subscription_id="sub-1",
        resource_id="room-1",
        change_type="deleted",
        event_id=event_id,
        change_key="ck-last",
        received_at=T0,
    )

    await world.services.inbound.handle_change(deleted)

    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.status is BookingStatus.CANCELLED
