"""Convergence over fakes: what a lost push, a lost notification or our own echo must not
leave behind once one ordinary (incremental) reconcile round has run."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus, TimeRange
from shared.domain.calendar import WRITE_IN_FLIGHT_SECONDS, CalendarEvent, WrittenTimes
from shared.domain.errors import (
    CalendarUnavailable,
    GraphAccessDenied,
    GraphMailboxNotFound,
    GraphTransient,
    MailboxInUse,
    SlotUnavailable,
)
from shared.domain.messages import (
    BOOKING_EVENTS_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    EventChange,
    PushBooking,
)
from shared.domain.resources import (
    CancelledEventMode,
    ConnectionState,
    ConnectionStatus,
    OnOutlookDelete,
    OnOutlookMove,
    ResourceSettings,
)
from shared.ports import EventWrite, EventWriteResult
from shared.services.push import PushDeferred, PushIncomplete
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"
HOUR = timedelta(hours=1)
ALICE = "alice@contoso.com"


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, ALICE))
    for resource_id, settings in (
        (
            "room-1",
            {
                "on_outlook_delete": OnOutlookDelete.CANCEL_BOOKING,
                "on_outlook_move": OnOutlookMove.RESCHEDULE_BOOKING,
            },
        ),
        ("alice", {}),
    ):
        value = resource(resource_id)
        await w.resources.add(
            value.model_copy(
                update={
                    "settings": value.settings.model_copy(update=settings),
                    "status": ConnectionStatus(mirror_refreshed_at=w.clock.now),
                }
            )
        )
    return w


async def lose_pushes(world: FakeWorld, error: Exception) -> None:
    """Every queued push fails as often as the queue retries it, then is poisoned."""
    pending = world.outbound()
    drop_outbound(world)
    for message in pending:
        for _ in range(5):
            world.calendar.fail(ROOM, error)  # type: ignore[arg-type]
            try:
                await world.services.push.push(message)
            except PushIncomplete:
                continue
            break
    world.calendar.errors.clear()


async def incremental_round(world: FakeWorld) -> None:
    report = await world.services.reconcile.reconcile("room-1")
    assert not report.full, "the round under test must be an ordinary incremental one"


def changes_of(world: FakeWorld, booking_id: str) -> list[tuple[str, str]]:
    """(type, source) of the booking events emitted for the booking, in order."""
    emitted = [json.loads(body) for body in world.queue.bodies(BOOKING_EVENTS_QUEUE)]
    return [(e["type"], e["source"]) for e in emitted if e["bookingId"] == booking_id]


def drop_outbound(world: FakeWorld) -> None:
    world.queue.sent = [(q, b) for q, b in world.queue.sent if q != SYNC_OUTBOUND_QUEUE]


async def push_with_retries(world: FakeWorld) -> None:
    """Every queued push, each retried while it raises PushIncomplete, as the queue would
    (up to its five tries)."""
    pending = world.outbound()
    drop_outbound(world)
    for message in pending:
        for _ in range(5):
            try:
                await world.services.push.push(message)
            except PushIncomplete:
                continue
            break


async def lose_the_answer(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queued pushes' writes reach Graph; the host dies with their answers."""
    send = world.calendar.write_batch

    async def answer_lost(writes: list[EventWrite]) -> list[EventWriteResult]:
        await send(writes)
        raise asyncio.CancelledError  # the host went away with the answer

    monkeypatch.setattr(world.calendar, "write_batch", answer_lost)
    with pytest.raises(asyncio.CancelledError):
        await world.push_all()
    monkeypatch.setattr(world.calendar, "write_batch", send)


async def set_room(world: FakeWorld, **settings: Any) -> None:
    """Change room-1's settings (by their field names)."""
    stored = await world.resources.get("room-1")
    assert stored is not None
    changed = stored.value.settings.model_copy(update=settings)
    await world.resources.update(stored.value.model_copy(update={"settings": changed}), stored.etag)


async def pushed_after_the_baseline_round(world: FakeWorld) -> tuple[str, CalendarEvent]:
    """The baseline round, then a booking of room-1 created and pushed: its id and event."""
    assert (await world.services.reconcile.reconcile("room-1")).full
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [event] = world.calendar.events[ROOM].values()
    return booking_id, event


def events_at(world: FakeWorld, mailbox: str) -> list[tuple[str | None, Any, Any]]:
    return sorted((e.booking_id, e.start, e.end) for e in world.calendar.events[mailbox].values())


async def assert_booking_and_event_at(world: FakeWorld, booking_id: str, when: TimeRange) -> None:
    """The booking is at `when`, and so is its event, room-1's only one."""
    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (when.start, when.end)
    assert events_at(world, ROOM) == [(booking_id, when.start, when.end)]


@pytest.mark.parametrize(
    "error",
    [
        GraphTransient("503 for longer than the retries"),
        GraphAccessDenied("403 for a while"),
        GraphMailboxNotFound("404 ErrorInvalidUser: the mailbox is not found for a while"),
    ],
    ids=["503", "403", "404-mailbox"],
)
async def test_pushes_lost_to_a_long_outage_are_healed_by_an_incremental_round(
    world: FakeWorld, error: Exception
) -> None:
    kept = (await world.services.bookings.create(booking_request(), None)).booking_id
    moved = (
        await world.services.bookings.create(booking_request(T0 + timedelta(hours=2)), None)
    ).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round

    # Graph fails for longer than the queue retries each of these changes.
    created = (
        await world.services.bookings.create(booking_request(T0 + timedelta(hours=4)), None)
    ).booking_id
    await world.services.bookings.cancel(kept)
    later = TimeRange(start=T0 + timedelta(hours=6), end=T0 + timedelta(hours=7))
    await world.services.bookings.reschedule(moved, later)
    later_times = (later.start, later.end)
    await lose_pushes(world, error)
    wanted = sorted(
        [(created, T0 + timedelta(hours=4), T0 + timedelta(hours=5)), (moved, *later_times)]
    )
    assert events_at(world, ROOM) != wanted

    await incremental_round(world)

    assert events_at(world, ROOM) == wanted
    for booking_id in (kept, moved, created):
        view = await world.services.bookings.get(booking_id)
        assert [s.state for s in view.sync] == ["synced"], booking_id
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.CONNECTED


async def test_a_pushed_event_deleted_before_the_next_round_is_noticed(world: FakeWorld) -> None:
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    # The Outlook user deletes it; the notification is lost, and the delta never reports
    # an item created and deleted between two rounds.
    world.calendar.events[ROOM].clear()

    await incremental_round(world)

    view = await world.services.bookings.get(booking_id)
    assert view.status is BookingStatus.CANCELLED
    assert changes_of(world, booking_id)[-1] == ("booking.cancelled", "outlook")
    await incremental_round(world)
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_a_change_pushed_to_an_event_deleted_unnoticed_gets_the_delete_policy(
    world: FakeWorld,
) -> None:
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    world.calendar.events[ROOM].clear()  # deleted in Outlook; the notification is lost
    later = TimeRange(start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=4))
    await world.services.bookings.reschedule(booking_id, later)
    await world.push_all()  # the update meets a 404: not retried

    await incremental_round(world)

    view = await world.services.bookings.get(booking_id)
    assert view.status is BookingStatus.CANCELLED
    assert changes_of(world, booking_id)[-1] == ("booking.cancelled", "outlook")
    assert events_at(world, ROOM) == []
    await incremental_round(world)  # nothing left to confirm, and nothing to undo
    assert (await world.services.bookings.get(booking_id)).status is BookingStatus.CANCELLED
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_a_confirmed_event_costs_no_graph_read_in_later_rounds(world: FakeWorld) -> None:
    await world.services.bookings.create(booking_request(), None)
    await world.push_all()
    world.clock.now += timedelta(minutes=1)  # the rounds' deltas hold the event as written
    await world.services.reconcile.reconcile("room-1")  # full: confirms by listing ours
    await incremental_round(world)  # checks what the full round could not confirm
    world.calendar.reads.clear()

    await incremental_round(world)

    assert world.calendar.reads == []


class GatedBatches:
    """Writes reach the calendar at once; the answers come back only when released."""

    def __init__(self, world: FakeWorld) -> None:
        self.release = asyncio.Event()
        self.written = asyncio.Event()
        self._write_batch = world.calendar.write_batch

    async def write_batch(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        results = await self._write_batch(writes)
        self.written.set()
        await self.release.wait()
        return results


T2 = TimeRange(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))
T3 = TimeRange(start=T0 + timedelta(hours=4), end=T0 + timedelta(hours=5))


async def start_gated_push(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, message: PushBooking | None = None
) -> tuple[asyncio.Future[None], GatedBatches]:
    """Start `message` (default: the one queued push, taken off the queue): Graph applies
    its write at once, the answer waits for `gate.release`. Returns once the write reached
    the calendar; later writes are not held."""
    if message is None:
        [message] = world.outbound()
        drop_outbound(world)
    gate = GatedBatches(world)
    send = world.calendar.write_batch
    monkeypatch.setattr(world.calendar, "write_batch", gate.write_batch)
    in_flight = asyncio.ensure_future(world.services.push.push(message))
    await gate.written.wait()
    monkeypatch.setattr(world.calendar, "write_batch", send)
    return in_flight, gate


async def slow_push_to_t2(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, booking_id: str
) -> tuple[asyncio.Future[None], GatedBatches]:
    """Reschedule to T2 and start its push (see `start_gated_push`)."""
    await world.services.bookings.reschedule(booking_id, T2)
    return await start_gated_push(world, monkeypatch)


async def notify(world: FakeWorld, change_type: str, event_id: str, **fields: Any) -> None:
    """The inbound worker handles a notification of room-1's event."""
    await world.services.inbound.handle_change(
        EventChange(
            subscription_id="s",
            resource_id="room-1",
            change_type=change_type,
            event_id=event_id,
            received_at=world.clock.now,
            **fields,
        )
    )


async def notify_updated(world: FakeWorld, event_id: str, change_key: str | None) -> None:
    await notify(world, "updated", event_id, change_key=change_key)


def outlook_moves(world: FakeWorld) -> list[str]:
    return [e.action for e in world.sync_log.entries if e.action.startswith("outlook_move")]


async def test_our_own_write_seen_before_its_answer_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking_id = (
        await world.services.bookings.create(booking_request(resourceIds=["room-1", "alice"]), None)
    ).booking_id
    await world.push_all()
    # Graph applied the move to T2; its answer is slow (B's mailbox).
    in_flight, gate = await slow_push_to_t2(world, monkeypatch, booking_id)
    await world.services.bookings.reschedule(booking_id, T3)
    [room_event] = world.calendar.events[ROOM].values()

    # The notification of our own write to T2 is handled while the booking is at T3.
    await notify_updated(world, room_event.event_id, room_event.change_key)
    gate.release.set()
    await in_flight
    await world.push_all()

    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T3.start, T3.end)
    assert changes_of(world, booking_id) == [
        ("booking.created", "api"),
        ("booking.rescheduled", "api"),
        ("booking.rescheduled", "api"),
    ]
    assert outlook_moves(world) == []
    assert events_at(world, ROOM) == [(booking_id, T3.start, T3.end)]
    assert events_at(world, ALICE) == [(booking_id, T3.start, T3.end)]


async def test_a_racing_mapping_write_does_not_stop_the_rest_of_a_push_being_recorded(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking_id = (
        await world.services.bookings.create(booking_request(resourceIds=["room-1", "alice"]), None)
    ).booking_id
    in_flight, gate = await start_gated_push(world, monkeypatch)
    # Meanwhile another worker writes room-1's mapping (say, a subject edit's changeKey).
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    await world.mappings.update(mapping.value.model_copy(update={"synced_at": T0}), mapping.etag)
    gate.release.set()

    await in_flight

    for resource_id, mailbox in (("room-1", ROOM), ("alice", ALICE)):
        recorded = await world.mappings.get(resource_id, booking_id)
        assert recorded is not None
        [event] = world.calendar.events[mailbox].values()
        assert recorded.value.event_id == event.event_id, resource_id
        assert recorded.value.pending_transaction_id is None
        assert recorded.value.booking_version == 1


async def test_one_mailbox_is_one_resource(world: FakeWorld) -> None:
    settings = ResourceSettings(mailbox="Shared-Room@Contoso.com", display_name="Room A")
    world.calendar.events["shared-room@contoso.com"] = {}
    world.calendar.events["Shared-Room@Contoso.com"] = {}
    await world.services.resources.put("room-a", settings)
    other = settings.model_copy(update={"mailbox": "shared-room@contoso.com"})

    with pytest.raises(MailboxInUse) as refused:
        await world.services.resources.put("room-b", other)

    assert "room-a" in refused.value.message
    assert await world.resources.get("room-b") is None
    # Once the first lets it go, the mailbox may be connected again.
    await world.services.resources.disconnect("room-a", remove_events=False)
    _, created = await world.services.resources.put("room-b", other)
    assert created
    with pytest.raises(MailboxInUse):
        await world.services.resources.put("room-a", settings)


async def test_two_concurrent_connects_of_one_mailbox_leave_one_resource(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.calendar.events["shared-room@contoso.com"] = {}
    world.calendar.events["SHARED-ROOM@contoso.com"] = {}
    check_mailbox = world.calendar.check_mailbox

    async def slow_check(mailbox: str) -> None:
        for _ in range(5):  # the other connect runs meanwhile
            await asyncio.sleep(0)
        await check_mailbox(mailbox)

    monkeypatch.setattr(world.calendar, "check_mailbox", slow_check)
    settings = ResourceSettings(mailbox="shared-room@contoso.com", display_name="Room")
    other = settings.model_copy(update={"mailbox": "SHARED-ROOM@contoso.com"})

    results = await asyncio.gather(
        world.services.resources.put("room-a", settings),
        world.services.resources.put("room-b", other),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, MailboxInUse)]
    assert len(refused) == 1, [type(r).__name__ + str(r)[:150] for r in results]
    connected = [r for r in ("room-a", "room-b") if await world.resources.get(r) is not None]
    assert len(connected) == 1


async def test_an_older_write_answered_after_a_newer_one_is_written_again(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    # Sent; its answer (after retries) takes a while.
    slow, gate = await slow_push_to_t2(world, monkeypatch, booking_id)
    await world.services.bookings.reschedule(booking_id, T3)
    await world.push_all()  # T3 is written and recorded first
    [event] = world.calendar.events[ROOM].values()
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={"start": T2.start, "end": T2.end, "change_key": "late"}
    )  # ...and then the older write lands on top of it
    await notify_updated(world, event.event_id, "late")  # ours, not an Outlook move
    assert outlook_moves(world) == []

    gate.release.set()
    with pytest.raises(PushIncomplete):
        await slow
    await world.services.push.push(
        PushBooking(booking_id=booking_id, booking_version=2)
    )  # the retry

    assert events_at(world, ROOM) == [(booking_id, T3.start, T3.end)]
    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T3.start, T3.end)
    assert [s.state for s in view.sync] == ["synced"]


T4 = TimeRange(start=T0 + timedelta(hours=6), end=T0 + timedelta(hours=7))


async def at_t2_with_a_push_to_t3_queued(world: FakeWorld) -> tuple[str, Any]:
    """A booking pushed to T2 after the baseline round, then rescheduled to T3: its id
    and the push to T3, taken off the queue to be run where a test wants it."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    await world.services.bookings.reschedule(booking_id, T2)
    await world.push_all()
    await world.services.bookings.reschedule(booking_id, T3)
    [push_t3] = world.outbound()
    drop_outbound(world)
    return booking_id, push_t3


async def change_seen_by(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, path: str, reader: Any
) -> None:
    """The room's event changes as `path` sees it (an `updated` notification, or an
    ordinary round), its reads going through `reader`; then the queued pushes run."""
    read_event = world.calendar.get_event
    monkeypatch.setattr(world.calendar, "get_event", reader(read_event))
    [event] = world.calendar.events[ROOM].values()
    if path == "notification":
        await notify_updated(world, event.event_id, "an Outlook edit's changeKey")
    else:
        await incremental_round(world)
    monkeypatch.setattr(world.calendar, "get_event", read_event)
    await world.push_all()


@pytest.mark.parametrize("path", ["notification", "round"])
async def test_an_event_read_after_our_newer_write_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The mapping is read, then our push to T3 is written and recorded, then the event is
    read (at T3) while the client has moved the booking on to T4: the decision must be
    made on what we had written by the time the event was read, not on the mapping read
    before it."""
    booking_id, push_t3 = await at_t2_with_a_push_to_t3_queued(world)

    def push_t3_then_read(read_event: Any) -> Any:
        async def read(mailbox: str, event_id: str) -> Any:
            if world.calendar.events[ROOM][event_id].start != T3.start:
                await world.services.push.push(push_t3)  # written and recorded meanwhile
                await world.services.bookings.reschedule(booking_id, T4)  # the client moves on
            return await read_event(mailbox, event_id)

        return read

    await change_seen_by(world, monkeypatch, path, push_t3_then_read)

    assert outlook_moves(world) == []
    assert [source for _, source in changes_of(world, booking_id)] == ["api"] * 4
    await assert_booking_and_event_at(world, booking_id, T4)


@pytest.mark.parametrize("path", ["notification", "round"])
async def test_an_event_read_before_our_newer_write_landed_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The event is read (still at T2, as our earlier write left it), then our push to T3
    is written and recorded before the mapping is read again: what the read showed was
    our own earlier write, not an Outlook move back to T2."""
    booking_id, push_t3 = await at_t2_with_a_push_to_t3_queued(world)

    def read_then_push_t3(read_event: Any) -> Any:
        async def read(mailbox: str, event_id: str) -> Any:
            event = await read_event(mailbox, event_id)
            if event is not None and event.start == T2.start:
                await world.services.push.push(push_t3)  # lands and is recorded meanwhile
            return event

        return read

    await change_seen_by(world, monkeypatch, path, read_then_push_t3)

    assert outlook_moves(world) == []
    assert [source for _, source in changes_of(world, booking_id)] == ["api"] * 3
    await assert_booking_and_event_at(world, booking_id, T3)


async def test_an_event_still_there_when_a_deleted_notification_cancelled_its_booking_is_removed(
    world: FakeWorld,
) -> None:
    # A deleted notification (late, out of order, or forged with a leaked clientState) for
    # an event still in the calendar: the booking is cancelled as the policy says, but then
    # an event of ours stays without a live booking, and one ordinary round must remove it.
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    [event_id] = world.calendar.events[ROOM]
    await world.services.inbound.handle_change(
        EventChange(
            subscription_id="sub-1",
            resource_id="room-1",
            change_type="deleted",
            event_id=event_id,
            change_key="ck-last",
            received_at=T0,
        )
    )
    await world.push_all()
    assert (await world.services.bookings.get(booking_id)).status is BookingStatus.CANCELLED

    await incremental_round(world)

    assert events_at(world, ROOM) == []


async def test_a_round_goes_on_past_the_checks_it_settles_or_applies_a_policy_to(
    world: FakeWorld,
) -> None:
    """One round handles every check, whatever the ones before it came to."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    start = T0 + timedelta(days=1)
    in_step = [
        (await world.services.bookings.create(booking_request(start + i * HOUR), None)).booking_id
        for i in range(3)
    ]
    deleted = [
        (await world.services.bookings.create(booking_request(start + i * HOUR), None)).booking_id
        for i in range(3, 6)
    ]
    await world.push_all()  # written: their checks wait for the round to confirm them
    for event in list(world.calendar.events[ROOM].values()):
        if event.booking_id in deleted:  # deleted in Outlook, the notifications lost
            del world.calendar.events[ROOM][event.event_id]
    lost = [
        (await world.services.bookings.create(booking_request(start + i * HOUR), None)).booking_id
        for i in range(6, 9)
    ]
    await lose_pushes(world, GraphTransient("503 for longer than the retries"))

    await incremental_round(world)
    await world.push_all()

    for booking_id in deleted:
        assert (await world.services.bookings.get(booking_id)).status is BookingStatus.CANCELLED
    assert sorted(str(b) for b, *_ in events_at(world, ROOM)) == sorted(in_step + lost)
    world.clock.now += timedelta(minutes=1)  # the next delta holds what this round wrote
    await incremental_round(world)
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_an_event_at_the_times_of_an_earlier_write_of_ours_is_written_again(
    world: FakeWorld,
) -> None:
    """The push of T2 was recorded, then the older write (T0) landed: a round finds the
    event at times we wrote, not the booking's, and writes it again."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    await world.services.bookings.reschedule(booking_id, T2)
    await world.push_all()
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    late = WrittenTimes(
        booking_version=1, start=T0, end=T0 + HOUR, sent_at=world.clock.now, answered=True
    )
    await world.mappings.update(
        mapping.value.model_copy(update={"writes_in_flight": [late]}), mapping.etag
    )
    [event] = world.calendar.events[ROOM].values()
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={"start": T0, "end": T0 + HOUR, "change_key": "late"}
    )

    await incremental_round(world)

    assert outlook_moves(world) == []
    assert events_at(world, ROOM) == [(booking_id, T2.start, T2.end)]
    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T2.start, T2.end)


def move_in_outlook(world: FakeWorld, mailbox: str, booking_id: str, to: TimeRange) -> str:
    """The Outlook user drags the booking's event in `mailbox` to `to`; its id."""
    [event] = [e for e in world.calendar.events[mailbox].values() if e.booking_id == booking_id]
    world.calendar.events[mailbox][event.event_id] = event.model_copy(
        update={"start": to.start, "end": to.end, "change_key": f"moved-{booking_id}"}
    )
    return event.event_id


async def state_of(world: FakeWorld, resource_id: str) -> ConnectionState:
    stored = await world.resources.get(resource_id)
    assert stored is not None
    return stored.value.status.state


async def test_an_outlook_move_on_a_calendar_failing_on_our_writes_is_applied_by_the_round(
    world: FakeWorld,
) -> None:
    """Our writes to room-1 met a 403 for a while (failing); meanwhile its Outlook user
    moved an event. The move was read from room-1 itself, so room-1's own state does not
    hold it back: the notification applies it; the round heals the lost write and
    connects room-1 again."""
    moved = (await world.services.bookings.create(booking_request(), None)).booking_id
    cancelled = (
        await world.services.bookings.create(booking_request(T0 + timedelta(hours=6)), None)
    ).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    await world.services.bookings.cancel(cancelled)
    await lose_pushes(world, GraphAccessDenied("403 for a while"))
    assert await state_of(world, "room-1") is ConnectionState.FAILING
    event_id = move_in_outlook(world, ROOM, moved, T2)

    await notify_updated(world, event_id, f"moved-{moved}")  # while room-1 is failing

    view = await world.services.bookings.get(moved)
    assert (view.start, view.end) == (T2.start, T2.end)
    assert changes_of(world, moved)[-1] == ("booking.rescheduled", "outlook")
    await incremental_round(world)
    assert events_at(world, ROOM) == [(moved, T2.start, T2.end)]
    assert await state_of(world, "room-1") is ConnectionState.CONNECTED


async def test_an_outlook_move_waiting_for_another_calendar_does_not_hold_the_round_up(
    world: FakeWorld,
) -> None:
    """A move on room-1 of a booking that also holds alice, while alice's calendar is
    failing: the move cannot be checked against alice yet. Room-1's round still completes
    (its own calendar is fine) and keeps the move for a later round, which applies it once
    alice is connected again."""
    booking_id = (
        await world.services.bookings.create(booking_request(resourceIds=["room-1", "alice"]), None)
    ).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    await world.services.connection.mark_failing("alice", "graph_access_denied: 403")
    event_id = move_in_outlook(world, ROOM, booking_id, T2)
    with pytest.raises(CalendarUnavailable):
        await notify_updated(world, event_id, f"moved-{booking_id}")

    report = await world.services.reconcile.reconcile("room-1")

    assert report.skipped is None
    assert await state_of(world, "room-1") is ConnectionState.CONNECTED
    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T0, T0 + HOUR)  # not yet: alice cannot be checked
    assert [c.value.booking_id for c in await world.ports.calendar_checks.pending("room-1")] == [
        booking_id
    ]

    await world.services.connection.mark_synced("alice", mirror_refreshed=True)
    await incremental_round(world)
    await world.push_all()

    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T2.start, T2.end)
    assert events_at(world, ALICE) == [(booking_id, T2.start, T2.end)]
    assert events_at(world, ROOM) == [(booking_id, T2.start, T2.end)]


async def test_a_refusal_answered_after_the_same_write_succeeded_is_not_a_failure(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pushes of one version (the queue's and a round's): the first meets a 403
    window, the other lands after it and is recorded first. The late refusal changes
    nothing in the calendar, so it must neither show the booking as failing nor outlive
    the round that confirmed the event."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    await world.services.bookings.reschedule(booking_id, T2)
    [push_t2] = world.outbound()
    drop_outbound(world)
    world.calendar.fail(ROOM, GraphAccessDenied("403 for a while"))
    refused, gate = await start_gated_push(world, monkeypatch, push_t2)
    await world.services.push.push(push_t2)  # the same version again, after the window
    await incremental_round(world)  # confirms the event: the check is done with

    gate.release.set()
    await refused  # the 403's answer, recorded last

    view = await world.services.bookings.get(booking_id)
    assert [s.state for s in view.sync] == ["synced"]
    await incremental_round(world)
    view = await world.services.bookings.get(booking_id)
    assert [s.state for s in view.sync] == ["synced"]
    assert events_at(world, ROOM) == [(booking_id, T2.start, T2.end)]


async def test_a_refusal_answered_after_its_event_was_deleted_in_outlook_is_not_a_failure(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel's delete meets a 403 window; before its answer comes, the Outlook user
    deletes the event (the mapping lets go of it). The refusal concerns an event the
    mapping no longer holds, so no round would ever retry it: it must not stay as the
    booking's sync error."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    [event] = world.calendar.events[ROOM].values()
    await world.services.bookings.cancel(booking_id)
    [push_cancel] = world.outbound()
    drop_outbound(world)
    world.calendar.fail(ROOM, GraphAccessDenied("403 for a while"))
    refused, gate = await start_gated_push(world, monkeypatch, push_cancel)
    del world.calendar.events[ROOM][event.event_id]  # deleted in Outlook meanwhile
    await notify(world, "deleted", event.event_id)

    gate.release.set()
    await refused  # the 403's answer, recorded last
    await incremental_round(world)

    view = await world.services.bookings.get(booking_id)
    assert view.status is BookingStatus.CANCELLED
    # Gone, as the cancelled booking wants: in step, whoever deleted it first.
    assert [(s.state, s.error) for s in view.sync] == [("synced", None)]
    assert events_at(world, ROOM) == []


async def test_a_booking_cancelled_while_its_create_went_unanswered_leaves_no_event(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create reached Graph, but the host died before its answer was recorded (the
    mapping knows only the transactionId); then the booking is cancelled."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    assert len(events_at(world, ROOM)) == 1
    await world.services.bookings.cancel(booking_id)
    await world.push_all()

    await incremental_round(world)

    assert events_at(world, ROOM) == []
    await incremental_round(world)
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_a_booking_rescheduled_while_its_create_went_unanswered_is_not_moved_back(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create reached Graph, its answer was lost; the reschedule's push sends the same
    transactionId again, and Graph answers with the event as first created."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    later = TimeRange(start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=4))
    await world.services.bookings.reschedule(booking_id, later)
    await push_with_retries(world)

    await incremental_round(world)
    await world.push_all()
    await incremental_round(world)

    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (later.start, later.end)
    assert [c for c in changes_of(world, booking_id) if c[1] == "outlook"] == []
    assert events_at(world, ROOM) == [(booking_id, later.start, later.end)]


async def test_a_create_that_never_reached_graph_is_forgotten_once_it_cannot_land(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host died before the create went out; the booking is then cancelled. While the
    create might still land, the cancel's push waits for it (sent again later) and the
    round keeps looking; after that, nothing is left to do."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    send = world.calendar.write_batch

    async def never_sent(writes: list[EventWrite]) -> list[EventWriteResult]:
        raise asyncio.CancelledError

    monkeypatch.setattr(world.calendar, "write_batch", never_sent)
    with pytest.raises(asyncio.CancelledError):
        await world.push_all()
    monkeypatch.setattr(world.calendar, "write_batch", send)
    await world.services.bookings.cancel(booking_id)
    with pytest.raises(PushDeferred):
        await world.push_all()
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.pending_transaction_id is not None

    await incremental_round(world)  # the create may still land: looked for again later
    assert [c.value.booking_id for c in await world.ports.calendar_checks.pending("room-1")] == [
        booking_id
    ]
    world.clock.now += timedelta(minutes=3)
    await incremental_round(world)
    await incremental_round(world)

    assert events_at(world, ROOM) == []
    assert await world.ports.calendar_checks.pending("room-1") == []
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.pending_transaction_id is None


async def test_a_create_given_up_on_that_lands_later_is_removed_by_the_cancels_push(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create met no sure answer for longer than the gateway waits (Graph still at
    it), so its push recorded a transient failure; the booking is then cancelled, and
    the create lands after the cancel's push first looked. The cancel's push used to
    take that create for one that could no longer land and finish: the event stayed
    until a round. It now waits for the create as long as one may still land."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    send = world.calendar.write_batch
    sent: list[EventWrite] = []

    async def no_sure_answer(writes: list[EventWrite]) -> list[EventWriteResult]:
        sent.extend(writes)
        return [EventWriteResult(error=GraphTransient("504: no answer")) for _ in writes]

    monkeypatch.setattr(world.calendar, "write_batch", no_sure_answer)
    with pytest.raises(PushIncomplete):
        await world.push_all()
    monkeypatch.setattr(world.calendar, "write_batch", send)
    await world.services.bookings.cancel(booking_id)
    [cancel] = world.outbound()
    drop_outbound(world)

    with pytest.raises(PushDeferred):  # nothing found yet: the create may still land
        await world.services.push.push(cancel)
    await send(sent)  # Graph carries out the create it was still at
    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    await world.services.push.push(cancel)  # the message again, after its delay

    assert events_at(world, ROOM) == []
    [state] = (await world.services.bookings.get(booking_id)).sync
    assert (state.state, state.error) == ("synced", None)


async def test_a_create_sent_again_that_lands_after_the_cancel_removed_the_first_is_removed(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create met a 503 Graph had carried out (event one), so the gateway sent it
    again. Meanwhile the booking was cancelled, and the cancel's push found event one and
    removed it. The create sent again met no sure answer either, and Graph made a second
    event (the deleted first no longer answers to the transactionId). Its push then
    recorded a failure on a mapping that knew no create any more, so its retry had nothing
    to look for: the second event stayed until a round."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    [create] = world.outbound()
    drop_outbound(world)
    send = world.calendar.write_batch

    async def carried_out_twice_unanswered(writes: list[EventWrite]) -> list[EventWriteResult]:
        if writes[0].op != "create":
            return await send(writes)
        await send(writes)  # carried out; the answer is a 503
        await world.services.bookings.cancel(booking_id)
        [cancel] = world.outbound()
        drop_outbound(world)
        await world.services.push.push(cancel)  # finds event one and removes it
        assert events_at(world, ROOM) == []
        await send(writes)  # the gateway's second attempt: carried out, a 503 again
        return [EventWriteResult(error=GraphTransient("503: no sure answer")) for _ in writes]

    monkeypatch.setattr(world.calendar, "write_batch", carried_out_twice_unanswered)
    with pytest.raises(PushIncomplete):
        await world.services.push.push(create)
    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    await world.services.push.push(create)  # the queue's retry

    assert events_at(world, ROOM) == []


async def test_two_pushes_taking_the_same_unanswered_create_both_finish(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pushes of a booking whose create's answer was lost (a reschedule's and a
    cancel's, say) both find its event by the booking id. The second to write the mapping
    used to write under the ETag it read before the first took the event: the conflict
    failed it, and cost its message a try. It now reads again and finds the work done."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    await world.services.bookings.cancel(booking_id)
    [cancel] = world.outbound()
    drop_outbound(world)
    listing = world.calendar.find_events_for_booking
    others = [world.services.push.push(cancel)]

    async def another_push_takes_it_meanwhile(mailbox: str, booking: str) -> list[CalendarEvent]:
        found = await listing(mailbox, booking)
        if others:
            await others.pop()  # finds the same event, takes it and removes it
        return found

    monkeypatch.setattr(world.calendar, "find_events_for_booking", another_push_takes_it_meanwhile)
    await world.services.push.push(cancel)

    assert events_at(world, ROOM) == []
    [state] = (await world.services.bookings.get(booking_id)).sync
    assert (state.state, state.error) == ("synced", None)


async def test_a_create_sent_again_while_a_push_forgets_it_stays_known(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel's push looks for a create that never reached Graph, past the time it
    could land, and forgets it; another push sent that create again meanwhile (an older
    message of the booking). The create sent again stays on the mapping, so whatever it
    makes is looked for."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    [create] = world.outbound()
    drop_outbound(world)
    send = world.calendar.write_batch

    async def never_reached(writes: list[EventWrite]) -> list[EventWriteResult]:
        raise asyncio.CancelledError  # the host died before sending

    monkeypatch.setattr(world.calendar, "write_batch", never_reached)
    with pytest.raises(asyncio.CancelledError):
        await world.services.push.push(create)
    monkeypatch.setattr(world.calendar, "write_batch", send)
    world.clock.now += timedelta(seconds=WRITE_IN_FLIGHT_SECONDS + 1)
    await world.services.bookings.cancel(booking_id)
    [cancel] = world.outbound()
    drop_outbound(world)
    listing = world.calendar.find_events_for_booking
    again = WrittenTimes(
        booking_version=1, start=T0, end=T0 + HOUR, sent_at=world.clock.now, answered=False
    )

    async def sent_again_meanwhile(mailbox: str, booking: str) -> list[CalendarEvent]:
        found = await listing(mailbox, booking)
        stored = await world.mappings.get("room-1", booking_id)
        assert stored is not None
        update = {"writes_in_flight": [*stored.value.writes_in_flight, again]}
        await world.mappings.update(stored.value.model_copy(update=update), stored.etag)
        return found

    monkeypatch.setattr(world.calendar, "find_events_for_booking", sent_again_meanwhile)
    with pytest.raises(PushDeferred):
        await world.services.push.push(cancel)

    stored = await world.mappings.get("room-1", booking_id)
    assert stored is not None
    assert stored.value.create_may_land(world.clock.now)


async def a_slow_attempt_lands_late(world: FakeWorld, cancel: bool) -> tuple[str, CalendarEvent]:
    """Graph was slow to answer a create, so the gateway sent it again; the second
    attempt made the event the push recorded, and the push finished (the booking then
    cancelled and its event removed, with `cancel`). The first attempt lands after that
    and makes an event of its own: returned, with the booking's id."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [recorded] = world.calendar.events[ROOM].values()
    if cancel:
        await world.services.bookings.cancel(booking_id)
        await world.push_all()
        assert events_at(world, ROOM) == []
    late = recorded.model_copy(update={"event_id": "ev-late", "change_key": "ck-late"})
    world.calendar.events[ROOM]["ev-late"] = late
    return booking_id, late


@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "live"])
async def test_an_event_a_slow_create_attempt_made_after_its_push_finished_is_removed(
    world: FakeWorld, cancel: bool
) -> None:
    """Its notification found no mapping naming it and left it "to reconcile", but an
    ordinary round's delta hands it to the same handler: a cancelled booking kept an
    event, a live one two, until a full round or a resync."""
    booking_id, late = await a_slow_attempt_lands_late(world, cancel)

    await notify(world, "created", late.event_id, change_key=late.change_key)
    await push_with_retries(world)

    assert [b for b, _, _ in events_at(world, ROOM)] == ([] if cancel else [booking_id])
    assert "ev-late" not in world.calendar.events[ROOM]
    [state] = (await world.services.bookings.get(booking_id)).sync
    assert (state.state, state.error) == ("synced", None)


async def test_an_outlook_move_while_a_creates_answer_is_lost_goes_to_the_policy(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create made its event but its answer was lost; the Outlook user moved the
    event before the retry. The retry's answer (Graph answers the same transactionId
    with the event as it is now) is recorded without taking the move for ours, and
    "the next look applies the policy", but the notifications had already come and
    found no mapping: the booking stayed at its time, shown in sync, until a round.
    Now a notification of an event of ours whose create may still land is looked at
    again once the create answered."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    [create] = world.outbound()
    await lose_the_answer(world, monkeypatch)
    [made] = world.calendar.events[ROOM].values()
    moved = made.model_copy(update={"start": T2.start, "end": T2.end, "change_key": "ck-outlook"})
    world.calendar.events[ROOM][made.event_id] = moved

    with pytest.raises(PushDeferred):
        await notify_updated(world, made.event_id, "ck-outlook")
    await world.services.push.push(create)  # the queue's retry of the create
    await notify_updated(world, made.event_id, "ck-outlook")  # the notification again

    await assert_booking_and_event_at(world, booking_id, T2)
    assert outlook_moves(world) == ["outlook_move:reschedule_booking"]


async def test_a_round_whose_delta_holds_an_event_of_a_create_under_way_goes_on(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delta reports the event a create made whose answer is not recorded yet. A
    notification of it waits for the answer; a round does not wait on a create: it
    leaves that event to the create's retry and to its check, and finishes."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    world.clock.now += timedelta(seconds=30)

    await incremental_round(world)  # its check re-sends the create: Graph answers with it
    await push_with_retries(world)

    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    [state] = (await world.services.bookings.get(booking_id)).sync
    assert (state.state, state.error) == ("synced", None)


@pytest.mark.parametrize("stamped", ["another-resources-booking", "no-booking"])
@pytest.mark.parametrize("seen_by", ["notification", "full-round", "pull"])
async def test_an_event_carrying_a_booking_id_not_of_this_resource_is_busy_time(
    world: FakeWorld, stamped: str, seen_by: str
) -> None:
    """An event in room-1 whose booking id names no booking of room-1 (an Outlook copy
    of alice's event of ours, or an app that wrote the property) is not ours there. It
    was taken for ours and so never mirrored: its time showed free, and a booking over
    it was accepted."""
    alice_booking = (
        await world.services.bookings.create(booking_request(resourceIds=["alice"]), None)
    ).booking_id
    await world.push_all()
    booking_id = alice_booking if stamped == "another-resources-booking" else "bk-" + "0" * 32
    stamped_event = CalendarEvent(
        event_id="ev-stamped",
        change_key="ck-s",
        start=T2.start,
        end=T2.end,
        subject="Budget review",
        booking_id=booking_id,
    )
    world.calendar.events[ROOM]["ev-stamped"] = stamped_event

    if seen_by == "notification":
        await notify(world, "created", "ev-stamped", change_key="ck-s")
    elif seen_by == "pull":  # a connect's or resync's
        room = await world.resources.get("room-1")
        assert room is not None
        await world.services.mirror.pull(room.value)
    else:
        world.clock.now += timedelta(minutes=15)
        assert (await world.services.reconcile.reconcile("room-1")).full

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert [(b.event_id, b.start, b.end) for b in blocks] == [("ev-stamped", T2.start, T2.end)]
    assert "ev-stamped" in world.calendar.events[ROOM]  # not ours to remove


async def test_a_resync_leaves_events_stamped_with_an_id_of_no_booking_here(
    world: FakeWorld,
) -> None:
    """A resync deletes our events and writes them again; an Outlook copy of alice's
    event of ours in room-1 is not one of them (it used to go too)."""
    alice = await world.services.bookings.create(booking_request(resourceIds=["alice"]), None)
    ours = (await world.services.bookings.create(booking_request(T2.start), None)).booking_id
    await world.push_all()
    [alice_event] = world.calendar.events[ALICE].values()
    copy = alice_event.model_copy(update={"event_id": "ev-copy"})
    world.calendar.events[ROOM]["ev-copy"] = copy

    await world.services.reconcile.resync("room-1")  # recreates ours with one batch

    assert sorted(str(b) for b, _, _ in events_at(world, ROOM)) == sorted([alice.booking_id, ours])
    assert "ev-copy" in world.calendar.events[ROOM]


async def test_a_series_stamped_with_an_id_of_no_booking_here_is_busy_time(
    world: FakeWorld,
) -> None:
    """Its occurrences carry the series' booking id too: each was taken for ours."""
    days = [T0 + timedelta(days=n) for n in range(3)]
    stamped = {"booking_id": "bk-" + "0" * 32, "subject": "Standup"}
    world.calendar.events[ROOM]["series"] = CalendarEvent(
        event_id="series", start=days[0], end=days[0] + HOUR, type="seriesMaster", **stamped
    )
    for n, day in enumerate(days):
        world.calendar.events[ROOM][f"series-{n}"] = CalendarEvent(
            event_id=f"series-{n}",
            start=day,
            end=day + HOUR,
            type="occurrence",
            series_master_id="series",
            **stamped,
        )

    await notify(world, "updated", "series", change_key="ck")

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.start for b in blocks) == days


async def test_an_event_made_after_the_rounds_delta_read_stays_unconfirmed_until_the_next(
    world: FakeWorld,
) -> None:
    """A round's delta reports an Outlook delete; the restore_event policy writes the
    event again, after the delta was read. That event, deleted before the next round with
    its notification lost, is in neither delta: only its check can still find it."""
    await set_room(world, on_outlook_delete=OnOutlookDelete.RESTORE_EVENT)
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    world.calendar.events[ROOM].clear()  # deleted in Outlook; the notification is lost
    world.clock.now += timedelta(minutes=15)

    await incremental_round(world)  # the delta reports it; the policy writes it again
    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    world.calendar.events[ROOM].clear()  # deleted again, unnotified, before the next round
    world.clock.now += timedelta(minutes=15)
    await incremental_round(world)

    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    view = await world.services.bookings.get(booking_id)
    assert view.status is BookingStatus.CONFIRMED


async def test_a_booking_cancelled_while_its_create_went_unanswered_shows_cancelled(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, on a calendar that keeps a cancelled booking's event, prefixed: Graph
    answers the same transactionId with the event as first made, without the prefix."""
    await set_room(world, cancelled_event_mode=CancelledEventMode.PREFIX)
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    await world.services.bookings.cancel(booking_id)
    await push_with_retries(world)

    [event] = world.calendar.events[ROOM].values()
    assert event.subject is not None
    assert event.subject.startswith("Cancelled: ")


async def test_a_lost_create_then_a_reschedule_through_an_outage_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reschedule's push re-sends the lost create's transactionId through an outage
    (five tries, each recording its times); Graph then answers with the first event."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    await world.services.bookings.reschedule(booking_id, T2)
    await lose_pushes(world, GraphTransient("503 for longer than the retries"))
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)  # the faults are over: the one ordinary round

    assert events_at(world, ROOM) == [(booking_id, T2.start, T2.end)]
    world.clock.now += timedelta(minutes=5)
    await incremental_round(world)
    view = await world.services.bookings.get(booking_id)
    assert (view.start, view.end) == (T2.start, T2.end)
    assert outlook_moves(world) == []


async def test_a_lost_create_retried_into_a_refusal_then_rescheduled_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue retries the lost create and Graph refuses it (403), slowly; meanwhile the
    booking is rescheduled. The refusal says nothing of the first try, which landed."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    [push_v1] = world.outbound()
    await lose_the_answer(world, monkeypatch)
    world.calendar.fail(ROOM, GraphAccessDenied("403"))
    retry, gate = await start_gated_push(world, monkeypatch, push_v1)
    await world.services.bookings.reschedule(booking_id, T2)
    gate.release.set()
    await retry
    await push_with_retries(world)
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)
    world.clock.now += timedelta(minutes=5)
    await incremental_round(world)

    await assert_booking_and_event_at(world, booking_id, T2)
    assert outlook_moves(world) == []


async def test_a_round_that_fails_after_confirming_keeps_its_checks(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round finds one event in step, then fails on another booking's push before it
    saves its delta link: the next round starts from the link before, which never held
    that event, so its check must still be there when it is deleted unnotified."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    kept = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()  # made after the baseline round's delta
    later = booking_request(T0 + timedelta(hours=4))
    await world.services.bookings.create(later, None)
    await lose_pushes(world, GraphTransient("503 for longer than the retries"))
    world.clock.now += timedelta(minutes=5)
    send = world.calendar.write_batch

    async def refused(writes: list[EventWrite]) -> list[EventWriteResult]:
        return [EventWriteResult(error=GraphTransient("503 once more")) for _ in writes]

    monkeypatch.setattr(world.calendar, "write_batch", refused)
    with pytest.raises(PushIncomplete):
        await world.services.reconcile.reconcile("room-1")
    monkeypatch.setattr(world.calendar, "write_batch", send)
    for event in list(world.calendar.events[ROOM].values()):
        if event.booking_id == kept:  # deleted in Outlook; the notification is lost
            del world.calendar.events[ROOM][event.event_id]
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)

    view = await world.services.bookings.get(kept)
    assert view.status is BookingStatus.CANCELLED  # room-1's policy for an Outlook delete
    assert changes_of(world, kept)[-1] == ("booking.cancelled", "outlook")


async def test_a_booking_cancelled_after_a_lost_create_loses_every_event_it_had(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two events of the booking are in the calendar when the cancel's push looks for
    what the lost create made (a restore wrote one while the first was still there)."""
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    [made] = world.calendar.events[ROOM].values()
    world.calendar.events[ROOM]["ev-other"] = made.model_copy(update={"event_id": "ev-other"})
    await world.services.bookings.cancel(booking_id)

    await world.push_all()

    assert events_at(world, ROOM) == []


async def test_a_lost_create_of_a_booking_now_over_is_taken_in_and_its_check_dropped(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.clock.now = T0 - timedelta(hours=2)
    assert (await world.services.reconcile.reconcile("room-1")).full  # the baseline round
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await lose_the_answer(world, monkeypatch)
    world.clock.now = T0 + timedelta(hours=2)  # the booking is over

    for _ in range(2):
        await incremental_round(world)
        world.clock.now += timedelta(minutes=15)

    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.event_id is not None
    assert events_at(world, ROOM) == [(booking_id, T0, T0 + HOUR)]
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_an_outlook_move_left_by_the_ignore_policy_is_not_undone_by_a_round(
    world: FakeWorld,
) -> None:
    await set_room(world, on_outlook_move=OnOutlookMove.IGNORE)
    booking_id, event = await pushed_after_the_baseline_round(world)  # its check waits
    moved = event.model_copy(update={"start": T2.start, "end": T2.end, "change_key": "moved"})
    world.calendar.events[ROOM][event.event_id] = moved  # the Outlook user moves it
    await notify_updated(world, event.event_id, "moved")  # the policy leaves it there
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)
    world.clock.now += timedelta(minutes=5)
    await incremental_round(world)

    assert events_at(world, ROOM) == [(booking_id, T2.start, T2.end)]
    assert await world.ports.calendar_checks.pending("room-1") == []


async def test_a_calendar_whose_event_the_ignore_policy_left_deleted_is_not_pending_for_ever(
    world: FakeWorld,
) -> None:
    await set_room(world, on_outlook_delete=OnOutlookDelete.IGNORE)
    booking_id, event = await pushed_after_the_baseline_round(world)
    del world.calendar.events[ROOM][event.event_id]  # the Outlook user deletes it
    await notify(world, "deleted", event.event_id)
    await world.services.bookings.reschedule(booking_id, T2)
    await world.push_all()
    world.clock.now += timedelta(minutes=5)
    await incremental_round(world)

    assert events_at(world, ROOM) == []  # left deleted, as the policy says
    view = await world.services.bookings.get(booking_id)
    assert [s.state for s in view.sync] == ["detached"]


async def test_an_older_write_landed_late_and_known_as_ours_is_written_again_by_the_round(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2 (T2) and v3 (T3) in flight; v3 lands, then v2 lands late on top (its notification
    rightly kept as ours: T2 is in flight); v2's worker dies; v3's answer is recorded, which
    drops T2 from the writes in flight. The round finds the event at T2 with a known
    changeKey, not behind, not at times of ours: not a move the ignore policy left."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full
    await world.services.bookings.reschedule(booking_id, T2)
    push_v2, _gate2 = await start_gated_push(world, monkeypatch)
    await world.services.bookings.reschedule(booking_id, T3)
    push_v3, gate3 = await start_gated_push(world, monkeypatch)
    [event] = world.calendar.events[ROOM].values()
    assert event.start == T3.start
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={"start": T2.start, "end": T2.end, "change_key": "late"}
    )  # v2's write lands late, on top of v3's
    await notify_updated(world, event.event_id, "late")  # ours (T2 in flight): kept
    push_v2.cancel()  # v2's worker dies with it
    with pytest.raises(asyncio.CancelledError):
        await push_v2
    gate3.release.set()
    await push_v3
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)

    assert events_at(world, ROOM) == [(booking_id, T3.start, T3.end)]


async def test_an_older_write_landed_late_then_its_retry_lost_is_not_an_outlook_move(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2's write lands late on top of v3's; its notification is lost; v2's answer comes
    after v3 was recorded (overtaken: T2 dropped from the writes in flight); the retry
    that would write T3 again meets an outage for longer than the queue retries. The
    faults stop; one round reads the event at T2 and takes it for an Outlook move."""
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    assert (await world.services.reconcile.reconcile("room-1")).full
    await world.services.bookings.reschedule(booking_id, T2)
    [push_v2] = world.outbound()
    push_task, gate = await start_gated_push(world, monkeypatch)
    await world.services.bookings.reschedule(booking_id, T3)
    await world.push_all()
    [event] = world.calendar.events[ROOM].values()
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={"start": T2.start, "end": T2.end, "change_key": "late"}
    )  # v2's write lands late; its notification is lost
    gate.release.set()
    with pytest.raises(PushIncomplete):
        await push_task
    for _ in range(5):  # the queue's retries meet an outage
        world.calendar.fail(ROOM, GraphTransient("503"))
        with pytest.raises(PushIncomplete):
            await world.services.push.push(push_v2)
    world.calendar.errors.clear()
    world.clock.now += timedelta(minutes=5)

    await incremental_round(world)

    assert outlook_moves(world) == []
    await assert_booking_and_event_at(world, booking_id, T3)


async def test_an_event_restored_from_deleted_items_after_the_policy_wrote_it_again_is_not_kept(
    world: FakeWorld,
) -> None:
    """An Outlook delete, and the restore_event policy writes the event again; then the
    user restores the first one from Deleted Items (it keeps its immutable id, with a new
    changeKey). The booking ends with one event, not two, after its notification or the
    round that reads it."""
    await set_room(world, on_outlook_delete=OnOutlookDelete.RESTORE_EVENT)
    booking_id, first = await pushed_after_the_baseline_round(world)
    del world.calendar.events[ROOM][first.event_id]  # deleted in Outlook
    await notify(world, "deleted", first.event_id)
    await world.push_all()
    [again] = world.calendar.events[ROOM].values()
    assert again.event_id != first.event_id

    restored = first.model_copy(
        update={"change_key": "ck-restored", "last_modified_at": world.clock.now}
    )
    world.calendar.events[ROOM][first.event_id] = restored  # back from Deleted Items
    await notify(world, "created", first.event_id, change_key="ck-restored")
    await world.push_all()
    world.clock.now += timedelta(minutes=15)
    await incremental_round(world)
    await world.push_all()

    assert [b for b, _, _ in events_at(world, ROOM)] == [booking_id]
    view = await world.services.bookings.get(booking_id)
    assert view.status is BookingStatus.CONFIRMED


async def test_a_cancelled_bookings_event_gone_while_its_delete_failed_is_not_failed_for_ever(
    world: FakeWorld,
) -> None:
    """An Outlook delete cancels the booking (cancel_booking); the cancel's push, which
    deletes the event, meets an outage longer than the retries. The event is gone anyway:
    once a round has seen that, nothing is left to do, and the state says so."""
    booking_id, event = await pushed_after_the_baseline_round(world)
    del world.calendar.events[ROOM][event.event_id]  # deleted in Outlook
    await notify(world, "deleted", event.event_id)
    assert (await world.services.bookings.get(booking_id)).status is BookingStatus.CANCELLED
    await lose_pushes(world, GraphTransient("503 for longer than the retries"))
    world.clock.now += timedelta(minutes=15)

    await incremental_round(world)

    view = await world.services.bookings.get(booking_id)
    # Gone, as the cancelled booking wants: in step, whoever deleted it first.
    assert [(s.state, s.error) for s in view.sync] == [("synced", None)]
    assert events_at(world, ROOM) == []


async def test_our_cancels_delete_seen_before_its_answer_is_the_cancels_not_an_outlook_delete(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete reached Graph, its answer was lost, and its `deleted` notification came
    before the queue sent the push again: the event is gone as the cancel wanted, which
    is neither the Outlook user's delete nor a calendar left behind by the booking."""
    booking_id, event = await pushed_after_the_baseline_round(world)
    await world.services.bookings.cancel(booking_id)
    pending = world.outbound()
    await lose_the_answer(world, monkeypatch)
    assert world.calendar.events[ROOM] == {}

    await notify(world, "deleted", event.event_id)
    for message in pending:  # the queue's next try
        await world.services.push.push(message)

    view = await world.services.bookings.get(booking_id)
    assert [(s.state, s.event_id) for s in view.sync] == [("synced", None)]
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert not mapping.value.detached
    actions = [e.action for e in world.sync_log.entries if e.direction == "inbound"]
    assert not any(a.startswith("outlook_delete") for a in actions), actions
    await incremental_round(world)
    assert world.calendar.events[ROOM] == {}


@pytest.mark.parametrize("series", [False, True], ids=["moved", "made-a-series"])
async def test_our_event_left_elsewhere_by_the_policy_is_busy_for_the_live_look(
    world: FakeWorld, series: bool
) -> None:
    """Moved in Outlook (or repeated as a series) and left there by `ignore`: the
    calendar holds our event at times its booking does not, and the room shows busy there
    to everyone in Outlook. The live look refuses a booking there rather than put a
    second event on top of it. Times of our own write still on its way do not count."""
    await set_room(world, on_outlook_move=OnOutlookMove.IGNORE)
    booking_id, event = await pushed_after_the_baseline_round(world)
    elsewhere = (T0 + 3 * HOUR, T0 + 4 * HOUR)
    if series:  # the next day's occurrence of a daily series made of our event
        elsewhere = (T0 + timedelta(days=1), T0 + timedelta(days=1) + HOUR)
        world.calendar.events[ROOM]["occ-2"] = event.model_copy(
            update={
                "event_id": "occ-2",
                "start": elsewhere[0],
                "end": elsewhere[1],
                "series_master_id": event.event_id,
            }
        )
    else:
        world.calendar.events[ROOM][event.event_id] = event.model_copy(
            update={"start": elsewhere[0], "end": elsewhere[1], "change_key": "ck-user"}
        )
        await notify(world, "updated", event.event_id, change_key="ck-user")
        assert outlook_moves(world) == ["outlook_move:ignore"]

    with pytest.raises(SlotUnavailable, match="moved there in Outlook"):
        await world.services.bookings.create(booking_request(elsewhere[0]), None)
    # Its own booking may go there: the event is its own.
    there = TimeRange(start=elsewhere[0], end=elsewhere[1])
    assert (await world.services.bookings.reschedule(booking_id, there)).start == there.start
    await world.push_all()

    # The booking's own time stays its own; a reschedule's old times, whose push is
    # still to come, are free for another booking at once.
    later = TimeRange(start=T0 + 6 * HOUR, end=T0 + 7 * HOUR)
    other = (await world.services.bookings.create(booking_request(later.start), None)).booking_id
    await world.push_all()
    await world.services.bookings.reschedule(
        other, TimeRange(start=T0 + 8 * HOUR, end=T0 + 9 * HOUR)
    )
    taken = await world.services.bookings.create(booking_request(later.start), None)
    assert taken.start == later.start
    assert booking_id != taken.booking_id
