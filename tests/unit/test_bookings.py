"""Booking use cases over in-memory ports: claims, panels, idempotency, outbox."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingRequest, BookingStatus, BookingWindow, TimeRange
from shared.domain.calendar import ShowAs
from shared.domain.errors import (
    CalendarUnavailable,
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidInput,
    SlotUnavailable,
    StorageUnavailable,
)
from shared.domain.messages import (
    BOOKING_EVENTS_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    BookingEventType,
    EventSource,
)
from shared.domain.resources import ConnectionState, ConnectionStatus, Direction
from shared.services.bookings import BookingService
from shared.services.events import EventRouting
from shared.services.slots import CLAIM_GRACE, SlotKeeper
from tests.builders import T0, busy_block, resource
from tests.fakes import (
    Clock,
    FakeBookings,
    FakeCalendarChecks,
    FakeEventMappings,
    FakeIdempotency,
    FakeLedger,
    FakeQueue,
    FakeResources,
    FakeUnavailability,
)


@dataclass
class World:
    service: BookingService
    resources: FakeResources
    bookings: FakeBookings
    ledger: FakeLedger
    unavailability: FakeUnavailability
    queue: FakeQueue
    idempotency: FakeIdempotency
    clock: Clock

    async def add_resource(self, resource_id: str, **settings: Any) -> None:
        value = resource(resource_id, **settings).model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=self.clock.now)}
        )
        await self.resources.add(value)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.queue.bodies(BOOKING_EVENTS_QUEUE)]


@pytest.fixture
async def world() -> World:
    clock = Clock(T0 - timedelta(days=1))
    resources, bookings, ledger = FakeResources(), FakeBookings(), FakeLedger()
    unavailability, queue, idem = FakeUnavailability(), FakeQueue(), FakeIdempotency()
    service = BookingService(
        resources=resources,
        bookings=bookings,
        event_mappings=FakeEventMappings(),
        checks=FakeCalendarChecks(),
        unavailability=unavailability,
        idempotency=idem,
        queue=queue,
        slots=SlotKeeper(ledger, bookings, clock, backoff_seconds=0),
        clock=clock,
        freshness_minutes=60,
        routing=EventRouting(webhooks=False),
        window=BookingWindow(grace=timedelta(minutes=5), horizon_days=180),
    )
    w = World(service, resources, bookings, ledger, unavailability, queue, idem, clock)
    for resource_id in ("room-1", "alice", "bob"):
        await w.add_resource(resource_id)
    return w


def request(start_minutes: int = 0, minutes: int = 60, **fields: Any) -> BookingRequest:
    values: dict[str, Any] = {
        "resourceIds": ["room-1"],
        "start": T0 + timedelta(minutes=start_minutes),
        "end": T0 + timedelta(minutes=start_minutes + minutes),
        "title": "Intro call",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    }
    values.update(fields)
    return BookingRequest.model_validate(values)


async def test_create_holds_the_slot_and_emits_push_and_event(world: World) -> None:
    view = await world.service.create(request(), None)

    assert view.status is BookingStatus.CONFIRMED
    assert [s.state for s in view.sync] == ["pending"]
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == 1
    assert [e["type"] for e in world.events()] == ["booking.created"]
    stored = await world.bookings.get(view.booking_id)
    assert stored is not None
    assert stored.value.outbox == []  # flushed


async def test_overlap_is_refused_touching_is_allowed(world: World) -> None:
    await world.service.create(request(0, 60), None)

    with pytest.raises(SlotUnavailable):
        await world.service.create(request(30, 60), None)
    touching = await world.service.create(request(60, 30), None)

    assert touching.start == T0 + timedelta(minutes=60)


async def test_concurrent_overlapping_creates_exactly_one_wins(world: World) -> None:
    results = await asyncio.gather(
        *(world.service.create(request(i % 3 * 10, 60), None) for i in range(30)),
        return_exceptions=True,
    )

    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, SlotUnavailable) for r in results if isinstance(r, BaseException))
    assert len(world.bookings.rows) == 1


async def test_panel_booking_claims_all_or_none(world: World) -> None:
    await world.service.create(request(0, 60, resourceIds=["bob"]), None)

    with pytest.raises(SlotUnavailable):
        await world.service.create(request(0, 60, resourceIds=["room-1", "alice", "bob"]), None)

    # The failed attempt left no claim behind: room-1 and alice are still free.
    view = await world.service.create(request(0, 60, resourceIds=["room-1", "alice"]), None)
    assert [s.role for s in view.sync] == ["primary", "additional"]


async def test_outlook_busy_time_blocks_a_booking(world: World) -> None:
    await world.unavailability.replace_event(
        "room-1", "ev", [busy_block("ev", T0 + timedelta(minutes=15))]
    )
    await world.unavailability.replace_event(
        "alice", "free", [busy_block("free", T0, resource_id="alice", show_as=ShowAs.FREE)]
    )

    with pytest.raises(SlotUnavailable, match="busy in Outlook"):
        await world.service.create(request(), None)
    assert (await world.service.create(request(resourceIds=["alice"]), None)).booking_id


async def test_outbound_only_resource_ignores_the_mirror(world: World) -> None:
    await world.add_resource("pusher", direction=Direction.OUT)
    world.clock.now += timedelta(days=1)  # mirror long stale: irrelevant without pulling
    await world.unavailability.replace_event(
        "pusher", "ev", [busy_block("ev", T0, resource_id="pusher")]
    )

    assert (await world.service.create(request(resourceIds=["pusher"]), None)).booking_id


async def test_failing_resource_fails_closed(world: World) -> None:
    stored = await world.resources.get("alice")
    assert stored is not None
    failing = stored.value.model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.FAILING, reason="403 from Graph")}
    )
    await world.resources.update(failing, stored.etag)

    with pytest.raises(CalendarUnavailable, match="403 from Graph"):
        await world.service.create(request(resourceIds=["room-1", "alice"]), None)
    assert world.ledger.rows == {}


async def test_stale_mirror_fails_closed(world: World) -> None:
    world.clock.now += timedelta(minutes=61)
    with pytest.raises(CalendarUnavailable, match="older than 60 minutes"):
        await world.service.create(request(), None)


async def test_unknown_resource_names_the_field(world: World) -> None:
    with pytest.raises(InvalidInput) as exc:
        await world.service.create(request(resourceIds=["room-1", "ghost"]), None)
    assert exc.value.details == [{"field": "resourceIds.1", "message": "unknown resource"}]


async def test_idempotency_replay_and_reuse(world: World) -> None:
    first = await world.service.create(request(), "key-1")
    again = await world.service.create(request(), "key-1")

    assert again == first
    assert len(world.bookings.rows) == 1
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == 1
    with pytest.raises(IdempotencyKeyReused):
        await world.service.create(request(title="Other"), "key-1")


async def test_failed_attempt_frees_the_key_for_a_retry(world: World) -> None:
    await world.service.create(request(), None)
    with pytest.raises(SlotUnavailable):
        await world.service.create(request(), "key-2")

    assert await world.idempotency.get("key-2") is None
    assert (await world.service.create(request(120), "key-2")).start == T0 + timedelta(hours=2)


async def test_lost_queue_send_is_resent_by_the_next_touch(world: World) -> None:
    world.queue.fail_next = 1
    with pytest.raises(StorageUnavailable):
        await world.service.create(request(), "key-3")

    # The booking was written with its outbox; the client's retry resends the messages.
    view = await world.service.create(request(), "key-3")
    assert [e["type"] for e in world.events()] == ["booking.created"]
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == 1
    stored = await world.bookings.get(view.booking_id)
    assert stored is not None
    assert stored.value.outbox == []


async def test_a_retry_after_an_outage_resumes_the_create_and_sends_what_it_left(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Storage goes down after the booking is written: the send fails, and so do giving
    # the messages back and freeing the key, so both stay held by that attempt.
    send = world.queue.send
    updates = {world.bookings: world.bookings.update, world.idempotency: world.idempotency.update}

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("storage down")

    async def storage_down(*args: Any, **kwargs: Any) -> None:
        for table in updates:
            monkeypatch.setattr(table, "update", refused)
        raise StorageUnavailable("queue down")

    monkeypatch.setattr(world.queue, "send", storage_down)
    with pytest.raises(StorageUnavailable):
        await world.service.create(request(), "key-4")
    monkeypatch.setattr(world.queue, "send", send)
    for table, update in updates.items():
        monkeypatch.setattr(table, "update", update)

    # Storage is back. For all the service knows, the first attempt may still be running.
    with pytest.raises(ConcurrencyConflict):
        await world.service.create(request(), "key-4")
    assert world.events() == []
    world.clock.now += timedelta(seconds=30)  # the outbox lease, as configured
    view = await world.service.create(request(), "key-4")

    assert [e["type"] for e in world.events()] == ["booking.created"]
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == 1
    stored = await world.bookings.get(view.booking_id)
    assert stored is not None
    assert stored.value.outbox == []
    assert (await world.service.create(request(), "key-4")).booking_id == view.booking_id


async def test_a_second_request_with_a_key_in_progress_is_told_to_retry(world: World) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    send = world.queue.send

    async def slow_send(*args: Any, **kwargs: Any) -> None:
        started.set()
        await release.wait()
        await send(*args, **kwargs)

    world.queue.send = slow_send  # type: ignore[method-assign]
    first = asyncio.create_task(world.service.create(request(), "key-5"))
    await started.wait()

    with pytest.raises(ConcurrencyConflict):
        await world.service.create(request(), "key-5")
    release.set()
    view = await first

    assert (await world.service.create(request(), "key-5")).booking_id == view.booking_id
    assert [e["type"] for e in world.events()] == ["booking.created"]


async def test_messages_of_a_writer_that_died_are_sent_once_its_lease_ends(
    world: World,
) -> None:
    view = await world.service.create(request(), None)
    # A cancel whose request died after writing the booking and before sending: its
    # messages stay in the outbox, held by that request.
    stored = await world.bookings.get(view.booking_id)
    assert stored is not None
    held_until = world.clock.now + timedelta(seconds=30)
    # What such a crash leaves: the change written with its held messages, none sent.
    dead = world.service._with_changes(
        stored.value.model_copy(update={"status": BookingStatus.CANCELLED, "version": 2}),
        BookingEventType.CANCELLED,
        EventSource.API,
        world.clock.now,
        "dead-request",
    )
    stored = await world.bookings.update(dead, stored.etag)
    assert {m.claimed_until for m in stored.value.outbox} == {held_until}

    await world.service.flush_outbox(stored)  # another touch while the writer may live
    assert [e["type"] for e in world.events()] == ["booking.created"]

    world.clock.now = held_until
    latest = await world.bookings.get(view.booking_id)
    assert latest is not None
    await world.service.flush_outbox(latest)
    again = await world.bookings.get(view.booking_id)
    assert again is not None
    await world.service.flush_outbox(again)

    assert [e["type"] for e in world.events()] == ["booking.created", "booking.cancelled"]
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == 2
    assert again.value.outbox == []


async def test_cancel_frees_time_and_is_idempotent(world: World) -> None:
    view = await world.service.create(request(), None)

    cancelled = await world.service.cancel(view.booking_id)
    again = await world.service.cancel(view.booking_id)

    assert cancelled.status is BookingStatus.CANCELLED
    assert again.status is BookingStatus.CANCELLED
    assert [e["type"] for e in world.events()] == ["booking.created", "booking.cancelled"]
    assert (await world.service.create(request(), None)).booking_id != view.booking_id


async def test_reschedule_moves_and_frees_the_old_slot(world: World) -> None:
    view = await world.service.create(request(0, 60, resourceIds=["room-1", "alice"]), None)
    new_range = TimeRange(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))

    moved = await world.service.reschedule(view.booking_id, new_range)

    assert (moved.start, moved.status, moved.version) == (
        new_range.start,
        BookingStatus.RESCHEDULED,
        2,
    )
    assert [e["type"] for e in world.events()] == ["booking.created", "booking.rescheduled"]
    assert (await world.service.create(request(0, 60, resourceIds=["alice"]), None)).booking_id
    with pytest.raises(SlotUnavailable):
        await world.service.create(request(120, 30), None)


async def test_reschedule_into_a_taken_slot_changes_nothing(world: World) -> None:
    first = await world.service.create(request(0, 60), None)
    other = await world.service.create(request(120, 60), None)
    taken = TimeRange(start=T0 + timedelta(minutes=150), end=T0 + timedelta(minutes=210))

    with pytest.raises(SlotUnavailable):
        await world.service.reschedule(first.booking_id, taken)

    assert await world.service.get(first.booking_id) == first
    assert other.booking_id
    with pytest.raises(SlotUnavailable):  # the original slot is still held
        await world.service.create(request(0, 30), None)


async def test_stale_claim_of_a_crashed_attempt_is_pruned(world: World) -> None:
    # A claim whose booking was never written (crash between claim and insert).
    await world.service._slots.claim(
        "room-1", "bk-ghost", TimeRange(start=T0, end=T0 + timedelta(hours=1))
    )
    with pytest.raises(SlotUnavailable):  # young: it may still be in progress
        await world.service.create(request(), None)

    world.clock.now += CLAIM_GRACE + timedelta(seconds=1)
    await world.add_resource("room-2")  # keep a fresh mirror for the assertion below
    stored = await world.resources.get("room-1")
    assert stored is not None
    await world.resources.update(
        stored.value.model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)}
        ),
        stored.etag,
    )
    assert (await world.service.create(request(), None)).booking_id


async def test_list_for_resource_includes_cancelled_in_window(world: World) -> None:
    a = await world.service.create(request(0, 60), None)
    b = await world.service.create(request(60, 60), None)
    await world.service.cancel(a.booking_id)
    await world.service.create(request(24 * 60, 60), None)  # outside the window

    listed = await world.service.list_for_resource("room-1", T0, T0 + timedelta(hours=3))

    assert [(v.booking_id, v.status) for v in listed] == [
        (a.booking_id, BookingStatus.CANCELLED),
        (b.booking_id, BookingStatus.CONFIRMED),
    ]
