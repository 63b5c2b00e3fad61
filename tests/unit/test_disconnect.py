"""Disconnecting with removeEvents: our events go on the queue, a chunk a message, and
only then is the resource disconnected; nothing else syncs it meanwhile."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingRequest
from shared.domain.calendar import (
    CREATE_WAIT_SECONDS,
    WRITE_IN_FLIGHT_SECONDS,
    CalendarEvent,
    DeltaRound,
    EventMapping,
    WrittenTimes,
)
from shared.domain.errors import GraphTransient, InvalidInput
from shared.domain.messages import (
    SYNC_OUTBOUND_QUEUE,
    DisconnectResource,
    EventChange,
    PushBooking,
)
from shared.domain.resources import (
    ConnectionState,
    ConnectionStatus,
    OnOutlookDelete,
    ResourceSettings,
)
from shared.ports import EventWrite, EventWriteResult
from shared.services.resources import REMOVE_CHUNK
from tests.builders import T0, booking, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"
HOUR = timedelta(hours=1)


async def room_with_our_events(count: int) -> FakeWorld:
    world = fake_world(Clock(T0), (ROOM,))
    connected = resource("room-1").model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.CONNECTED, since=T0)}
    )
    await world.resources.add(connected)
    await world.ports.mailbox_claims.claim(ROOM, "room-1", None, T0)
    calendar = world.calendar.events[ROOM]
    for n in range(count):
        start = T0 + timedelta(hours=n)
        calendar[f"ev-{n}"] = CalendarEvent(
            event_id=f"ev-{n}", start=start, end=start + timedelta(hours=1), booking_id=f"bk-{n}"
        )
        await world.ports.bookings.add(
            booking(f"bk-{n}", start=start, end=start + timedelta(hours=1))
        )
        await world.mappings.add(
            EventMapping(
                resource_id="room-1", booking_id=f"bk-{n}", mailbox=ROOM, event_id=f"ev-{n}"
            )
        )
    calendar["lunch"] = CalendarEvent(event_id="lunch", start=T0, end=T0 + timedelta(hours=1))
    return world


def queued(world: FakeWorld) -> list[DisconnectResource]:
    return [
        DisconnectResource.model_validate_json(body)
        for body in world.queue.bodies(SYNC_OUTBOUND_QUEUE)
        if '"disconnect_resource"' in body
    ]


async def state_of(world: FakeWorld) -> ConnectionState:
    stored = await world.resources.get("room-1")
    assert stored is not None
    return stored.value.status.state


async def connected_room(**settings: Any) -> tuple[FakeWorld, ResourceSettings]:
    """Room-1 connected through the API, as a PUT and its worker leave it."""
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    wanted = resource("room-1", **settings).settings
    await world.services.resources.put("room-1", wanted)
    await world.finish_connects()
    return world, wanted


async def reconnect(world: FakeWorld, settings: ResourceSettings) -> None:
    """A PUT that connects room-1 again, its worker, and the pushes it sends."""
    await world.services.resources.put("room-1", settings)
    await world.finish_connects()
    await world.push_all()


async def assert_one_event_synced(world: FakeWorld, booking_id: str, mailbox: str = ROOM) -> None:
    """The mailbox (room-1's) holds exactly one event, the booking's, and says so."""
    [event] = world.calendar.events[mailbox].values()
    assert event.booking_id == booking_id
    [shown] = (await world.services.bookings.get(booking_id)).sync
    assert (shown.state, shown.event_id) == ("synced", event.event_id)


def refuse_deletes(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph answers every DELETE of room-1's events with a 503 (past the gateway's
    retries); other writes go through."""
    send = world.calendar.write_batch

    async def deletes_refused(writes: list[EventWrite]) -> list[EventWriteResult]:
        if all(w.op == "delete" for w in writes):
            return [EventWriteResult(error=GraphTransient("503")) for _ in writes]
        return await send(writes)

    monkeypatch.setattr(world.calendar, "write_batch", deletes_refused)


async def removal_queued(
    **settings: Any,
) -> tuple[FakeWorld, ResourceSettings, str, DisconnectResource]:
    """Room-1 with one booking synced, disconnected with removeEvents: the world, the
    settings, the booking and the removal's message (taken off the queue)."""
    world, wanted = await connected_room(**settings)
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    await world.services.resources.disconnect("room-1", remove_events=True)
    [work] = queued(world)
    world.queue.sent.clear()
    return world, wanted, booking_id, work


async def removal_refused(
    monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> tuple[FakeWorld, ResourceSettings, str, DisconnectResource]:
    """Room-1 with one booking synced, disconnected with removeEvents, and the
    removal's first try failed: Graph refuses its DELETEs (and goes on refusing them
    until `monkeypatch.undo()`). Returns the world, the settings, the booking and the
    removal's message."""
    world, wanted, booking_id, work = await removal_queued(**settings)
    refuse_deletes(world, monkeypatch)
    with pytest.raises(GraphTransient):
        await world.services.resources.remove_events(work)
    return world, wanted, booking_id, work


async def test_removing_events_goes_on_the_queue_a_chunk_a_message() -> None:
    world = await room_with_our_events(250)

    view = await world.services.resources.disconnect("room-1", remove_events=True)

    assert view.status.state is ConnectionState.DISCONNECTING
    assert len(world.calendar.events[ROOM]) == 251  # nothing removed inside the request
    left = []
    while work := queued(world):
        world.queue.sent = []
        [message] = work
        await world.services.resources.remove_events(message)
        left.append(len(world.calendar.events[ROOM]) - 1)
    assert left == [150, 50, 0, 0]
    assert world.calendar.batches == [REMOVE_CHUNK, REMOVE_CHUNK, 50]
    assert set(world.calendar.events[ROOM]) == {"lunch"}
    assert await state_of(world) is ConnectionState.DISCONNECTED
    mappings = await world.mappings.list_for_resource("room-1")
    assert [m.value.event_id for m in mappings if m.value.event_id] == []
    assert await world.ports.mailbox_claims.holder(ROOM) is None
    assert [e.action for e in world.sync_log.entries][-1] == "disconnected"


async def test_a_redelivered_or_stopped_removal_does_nothing() -> None:
    world = await room_with_our_events(3)
    await world.services.resources.disconnect("room-1", remove_events=True)
    [message] = queued(world)
    # A PUT reconnects meanwhile: the removal stops there.
    await world.services.resources.put(
        "room-1", ResourceSettings(mailbox=ROOM, display_name="room-1")
    )
    assert await state_of(world) is ConnectionState.CONNECTING
    world.queue.sent = []
    await world.services.resources.remove_events(message)
    assert len(world.calendar.events[ROOM]) == 4
    assert queued(world) == []

    # Disconnected without removeEvents: no removal either.
    await world.services.resources.disconnect("room-1", remove_events=False)
    await world.services.resources.remove_events(message)
    assert len(world.calendar.events[ROOM]) == 4
    assert await state_of(world) is ConnectionState.DISCONNECTED


async def test_events_stamped_with_an_id_of_no_booking_here_are_not_removed() -> None:
    """Carrying our booking-id property is not enough to be ours: an Outlook copy of
    another calendar's event of ours, or an event an app stamped, stays."""
    world = await room_with_our_events(1)
    calendar = world.calendar.events[ROOM]
    await world.ports.bookings.add(booking("bk-alice", resource_ids=["alice"]))
    for event_id, booking_id in (("copy", "bk-alice"), ("stamped", "bk-none")):
        calendar[event_id] = CalendarEvent(
            event_id=event_id, start=T0, end=T0 + timedelta(hours=1), booking_id=booking_id
        )

    await world.services.resources.disconnect("room-1", remove_events=True)
    for _ in range(3):  # the worker, as long as it sends the message on
        messages = queued(world)
        world.queue.sent = [(q, b) for q, b in world.queue.sent if '"disconnect_resource"' not in b]
        for message in messages:
            await world.services.resources.remove_events(message)

    assert await state_of(world) is ConnectionState.DISCONNECTED
    assert set(calendar) == {"lunch", "copy", "stamped"}


async def test_without_events_of_ours_a_disconnect_is_done_at_once() -> None:
    world = await room_with_our_events(0)
    view = await world.services.resources.disconnect("room-1", remove_events=True)
    assert view.status.state is ConnectionState.DISCONNECTED
    assert queued(world) == []


async def a_create_sent_at_t0(world: FakeWorld, booking_id: str) -> None:
    """A create of the booking's event in room-1, sent at T0 and not answered."""
    sent = WrittenTimes(booking_version=1, start=T0, end=T0 + timedelta(hours=1), sent_at=T0)
    await world.ports.bookings.add(booking(booking_id))
    await world.mappings.add(
        EventMapping(
            resource_id="room-1",
            booking_id=booking_id,
            mailbox=ROOM,
            pending_transaction_id=f"tx-{booking_id}",
            writes_in_flight=[sent],
        )
    )


async def test_an_event_a_create_under_way_makes_after_the_disconnect_is_removed_too() -> None:
    """A booking's create was sent (Graph slow to answer) when the resource was
    disconnected with removeEvents: no event of ours was there yet, so it was marked
    disconnected at once, and the event the create then made stayed in the mailbox we
    left. The removal now waits for such a create as long as it may land."""
    world = await room_with_our_events(0)
    await a_create_sent_at_t0(world, "bk-late")

    view = await world.services.resources.disconnect("room-1", remove_events=True)
    assert view.status.state is ConnectionState.DISCONNECTING
    [message] = queued(world)
    world.queue.sent, world.queue.delays = [], []
    await world.services.resources.remove_events(message)  # nothing there yet
    assert await state_of(world) is ConnectionState.DISCONNECTING
    assert (queued(world), world.queue.delays) == ([message], [CREATE_WAIT_SECONDS])
    # The create lands, and its push records it.
    world.calendar.events[ROOM]["ev-late"] = CalendarEvent(
        event_id="ev-late", start=T0, end=T0 + timedelta(hours=1), booking_id="bk-late"
    )
    mapping = await world.mappings.get("room-1", "bk-late")
    assert mapping is not None
    made: dict[str, object] = {
        "event_id": "ev-late",
        "pending_transaction_id": None,
        "writes_in_flight": [],
    }
    await world.mappings.update(mapping.value.model_copy(update=made), mapping.etag)
    for _ in range(5):
        work = queued(world)
        if not work:
            break
        world.queue.sent = []
        await world.services.resources.remove_events(work[0])

    assert set(world.calendar.events[ROOM]) == {"lunch"}
    assert await state_of(world) is ConnectionState.DISCONNECTED


async def test_a_late_attempt_of_a_create_already_answered_is_removed_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Graph was slow to answer a create, past the client's timeout, so the gateway sent
    it again; the second attempt was answered and recorded. The disconnect removed that
    event and, no create being under way any more, marked the resource disconnected; then
    the first attempt made its event in the mailbox we had left. The removal now waits
    for such an attempt too, as long as it may land."""
    world = await room_with_our_events(0)
    stored = await world.resources.get("room-1")
    assert stored is not None
    fresh = stored.value.status.model_copy(update={"mirror_refreshed_at": world.clock.now})
    await world.resources.update(stored.value.model_copy(update={"status": fresh}), stored.etag)
    made = await world.services.bookings.create(booking_request(T0 + timedelta(days=1)), None)
    send = world.calendar.write_batch

    async def after_an_unanswered_attempt(writes: list[EventWrite]) -> list[EventWriteResult]:
        return [replace(r, earlier_attempt_unanswered=True) for r in await send(writes)]

    monkeypatch.setattr(world.calendar, "write_batch", after_an_unanswered_attempt)
    await world.push_all()
    monkeypatch.setattr(world.calendar, "write_batch", send)
    [answered] = [e for e in world.calendar.events[ROOM].values() if e.booking_id]

    await world.services.resources.disconnect("room-1", remove_events=True)
    removals = 0
    while (work := queued(world)) and removals < 40:  # 5 s apart: past the 2-minute window
        world.queue.sent = []
        await world.services.resources.remove_events(work[0])
        removals += 1
        if removals == 2:  # the answered event is gone: the first attempt lands now
            assert set(world.calendar.events[ROOM]) == {"lunch"}
            late = answered.model_copy(update={"event_id": "ev-first-attempt"})
            world.calendar.events[ROOM][late.event_id] = late
        world.clock.now += timedelta(seconds=CREATE_WAIT_SECONDS)

    assert set(world.calendar.events[ROOM]) == {"lunch"}
    assert await state_of(world) is ConnectionState.DISCONNECTED
    assert made.booking_id == answered.booking_id


async def test_a_create_that_can_no_longer_land_does_not_hold_a_disconnect() -> None:
    world = await room_with_our_events(0)
    await a_create_sent_at_t0(world, "bk-lost")
    world.clock.now = T0 + timedelta(seconds=WRITE_IN_FLIGHT_SECONDS + 1)

    view = await world.services.resources.disconnect("room-1", remove_events=True)

    assert view.status.state is ConnectionState.DISCONNECTED
    assert queued(world) == []


async def test_nothing_syncs_a_disconnecting_resource() -> None:
    world = await room_with_our_events(3)
    await world.services.resources.disconnect("room-1", remove_events=True)
    world.clock.now += timedelta(days=30)  # its subscription would be due for renewal

    report = await world.services.reconcile.reconcile("room-1")
    await world.services.connection.mark_synced("room-1", mirror_refreshed=True)
    await world.services.connection.mark_failing("room-1", "mailbox gone")
    await world.services.upkeep.renew_subscriptions()

    assert report.skipped == "inactive or disconnected"
    assert await state_of(world) is ConnectionState.DISCONNECTING
    assert world.calendar.subscriptions == {}


async def test_a_push_queued_before_a_disconnect_writes_nothing_to_the_mailbox_after_it() -> None:
    """A push still on the queue (or retrying through an outage) when the resource is
    disconnected must not put an event of ours back into a mailbox we left."""
    world = await room_with_our_events(0)
    stored = await world.resources.get("room-1")
    assert stored is not None
    fresh = stored.value.status.model_copy(update={"mirror_refreshed_at": world.clock.now})
    await world.resources.update(stored.value.model_copy(update={"status": fresh}), stored.etag)
    booking = await world.services.bookings.create(
        BookingRequest.model_validate(
            {
                "resourceIds": ["room-1"],
                "start": T0 + timedelta(days=1),
                "end": T0 + timedelta(days=1, hours=1),
                "title": "Interview",
                "customer": {"name": "Ada", "email": "ada@example.com"},
            }
        ),
        None,
    )
    assert booking.booking_id

    view = await world.services.resources.disconnect("room-1", remove_events=True)
    assert view.status.state is ConnectionState.DISCONNECTED  # nothing of ours was there yet
    await world.push_all()

    assert set(world.calendar.events[ROOM]) == {"lunch"}


async def test_a_round_that_started_before_a_disconnect_puts_no_event_back() -> None:
    """Found on the local stack: a reconcile round read the resource as connected, the
    disconnect removed our events while the round's delta read was slow, and the round then
    pushed the unconfirmed bookings' events again into the mailbox we had left."""
    world = await room_with_our_events(0)
    stored = await world.resources.get("room-1")
    assert stored is not None
    fresh = stored.value.status.model_copy(update={"mirror_refreshed_at": world.clock.now})
    await world.resources.update(stored.value.model_copy(update={"status": fresh}), stored.etag)
    await world.services.reconcile.reconcile("room-1")  # a baseline: the next is incremental
    for hour in range(3):
        await world.services.bookings.create(
            BookingRequest.model_validate(
                {
                    "resourceIds": ["room-1"],
                    "start": T0 + timedelta(days=1, hours=hour),
                    "end": T0 + timedelta(days=1, hours=hour + 1),
                    "title": "Interview",
                    "customer": {"name": "Ada", "email": "ada@example.com"},
                }
            ),
            None,
        )
    await world.push_all()
    assert len(world.calendar.events[ROOM]) == 4
    read_delta = world.calendar.delta

    async def disconnected_meanwhile(
        mailbox: str, start: datetime, end: datetime, delta_link: str | None
    ) -> DeltaRound:
        await world.services.resources.disconnect("room-1", remove_events=True)
        while work := queued(world):
            world.queue.sent = []
            for message in work:
                await world.services.resources.remove_events(message)
        return await read_delta(mailbox, start, end, delta_link)

    world.calendar.delta = disconnected_meanwhile  # type: ignore[method-assign]

    await world.services.reconcile.reconcile("room-1")

    assert await state_of(world) is ConnectionState.DISCONNECTED
    assert set(world.calendar.events[ROOM]) == {"lunch"}


@pytest.mark.parametrize("chunked", [True, False], ids=["on-the-queue", "at-once"])
async def test_a_reconnect_after_our_events_were_removed_writes_the_live_bookings_again(
    chunked: bool,
) -> None:
    """Disconnected with removeEvents, then connected again: the bookings still live
    show no event while disconnected (not `synced`), and get their events back once the
    connect is done, not a full round later."""
    world, settings = await connected_room()
    live = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    if chunked:
        view = await world.services.resources.disconnect("room-1", remove_events=True)
        assert view.status.state is ConnectionState.DISCONNECTING
        for work in queued(world):
            await world.services.resources.remove_events(work)
        world.queue.sent.clear()
        for work in [DisconnectResource(resource_id="room-1", mailbox=ROOM)]:
            await world.services.resources.remove_events(work)  # nothing left: done
    else:
        # Removed by hand first: the disconnect finds none of ours and is done at once.
        world.calendar.events[ROOM].clear()
        await world.services.resources.disconnect("room-1", remove_events=True)
    assert await state_of(world) is ConnectionState.DISCONNECTED
    assert world.calendar.events[ROOM] == {}
    [shown] = (await world.services.bookings.get(live)).sync
    assert (shown.state, shown.event_id) == ("pending", None)

    await reconnect(world, settings)

    assert await state_of(world) is ConnectionState.CONNECTED
    await assert_one_event_synced(world, live)


async def test_a_cancel_made_while_disconnected_is_written_on_reconnect() -> None:
    """A booking cancelled while its resource was disconnected (our events kept): its
    push wrote nothing then, into a mailbox we had left. The reconnect removes its
    event, not a full round later; the other booking's event stays as it is."""
    world, settings = await connected_room()
    cancelled = (await world.services.bookings.create(booking_request(), None)).booking_id
    kept = (await world.services.bookings.create(booking_request(T0 + HOUR), None)).booking_id
    await world.push_all()
    await world.services.resources.disconnect("room-1", remove_events=False)
    await world.services.bookings.cancel(cancelled)
    await world.push_all()  # nothing is written to a disconnected resource
    assert len(world.calendar.events[ROOM]) == 2

    await reconnect(world, settings)

    [event] = world.calendar.events[ROOM].values()
    assert (event.booking_id, event.start) == (kept, T0 + HOUR)
    for booking_id in (cancelled, kept):
        [shown] = (await world.services.bookings.get(booking_id)).sync
        assert shown.state == "synced", booking_id


async def test_a_booking_made_just_before_a_disconnect_gets_its_event_on_reconnect() -> None:
    """Its push came after the disconnect and wrote nothing (no mapping either): the
    booking's calendar check, marked when it was made, is what the reconnect finds."""
    world, settings = await connected_room()
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.services.resources.disconnect("room-1", remove_events=True)
    await world.push_all()
    assert world.calendar.events[ROOM] == {}
    assert await world.mappings.get("room-1", booking_id) is None

    await reconnect(world, settings)

    await assert_one_event_synced(world, booking_id)


async def test_a_booking_over_whose_event_a_disconnect_removed_is_not_pending_for_ever() -> None:
    """No event is written for a booking that is over: once it is, the calendar has
    all it will ever get for it."""
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.services.resources.put("room-1", resource("room-1").settings)
    await world.finish_connects()
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    await world.services.resources.disconnect("room-1", remove_events=True)
    for work in queued(world):
        await world.services.resources.remove_events(work)
    await world.services.resources.remove_events(
        DisconnectResource(resource_id="room-1", mailbox=ROOM)
    )
    assert [s.state for s in (await world.services.bookings.get(booking_id)).sync] == ["pending"]

    world.clock.now = T0 + 2 * HOUR

    assert [s.state for s in (await world.services.bookings.get(booking_id)).sync] == ["removed"]


@pytest.mark.parametrize("reconnect_during", ["listing", "unmapping", "removal"])
async def test_a_reconnect_while_a_removal_chunk_is_on_its_way_keeps_the_live_events(
    monkeypatch: pytest.MonkeyPatch, reconnect_during: str
) -> None:
    """A PUT reconnects while the removal worker is listing our events (Graph slow) or
    deleting them: the connect's catch-up may look before the chunk unmaps them. The
    events the chunk removes are written again all the same, once, without a round."""
    world, settings, booking_id, work = await removal_queued()

    async def reconnect() -> None:
        await world.services.resources.put("room-1", settings)
        await world.finish_connects()

    if reconnect_during == "listing":
        listing = world.calendar.list_our_events

        async def slow_listing(mailbox: str, *, limit: int | None = None) -> list[CalendarEvent]:
            found = await listing(mailbox, limit=limit)
            await reconnect()
            return found

        monkeypatch.setattr(world.calendar, "list_our_events", slow_listing)
    elif reconnect_during == "unmapping":
        update = world.mappings.update

        async def reconnect_first(mapping: EventMapping, etag: str) -> Any:
            monkeypatch.setattr(world.mappings, "update", update)
            await reconnect()
            return await update(mapping, etag)

        monkeypatch.setattr(world.mappings, "update", reconnect_first)
    else:
        send = world.calendar.write_batch

        async def slow_deletes(writes: list[EventWrite]) -> list[EventWriteResult]:
            monkeypatch.setattr(world.calendar, "write_batch", send)  # the chunk's alone
            await reconnect()
            return await send(writes)

        monkeypatch.setattr(world.calendar, "write_batch", slow_deletes)

    await world.services.resources.remove_events(work)
    monkeypatch.undo()
    for work in queued(world):  # the next chunk's message finds the resource reconnected
        await world.services.resources.remove_events(work)
    world.queue.sent = [(q, b) for q, b in world.queue.sent if '"disconnect_resource"' not in b]
    await world.push_all()

    assert await state_of(world) is ConnectionState.CONNECTED
    await assert_one_event_synced(world, booking_id)


async def test_a_reconnect_before_the_last_chunk_finds_nothing_stays_connected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The removal's last message finds no event left, while a PUT has reconnected the
    resource meanwhile: it must not mark it disconnected over the reconnect."""
    world, settings = await connected_room()
    await world.services.bookings.create(booking_request(), None)
    await world.push_all()
    await world.services.resources.disconnect("room-1", remove_events=True)
    [work] = queued(world)
    world.queue.sent.clear()
    world.calendar.events[ROOM].clear()  # gone by the time the message lists them
    listing = world.calendar.list_our_events

    async def reconnected_meanwhile(
        mailbox: str, *, limit: int | None = None
    ) -> list[CalendarEvent]:
        found = await listing(mailbox, limit=limit)
        await world.services.resources.put("room-1", settings)
        await world.finish_connects()
        return found

    monkeypatch.setattr(world.calendar, "list_our_events", reconnected_meanwhile)

    await world.services.resources.remove_events(work)

    assert await state_of(world) is ConnectionState.CONNECTED
    claim = await world.ports.mailbox_claims.holder(ROOM)
    assert claim is not None
    assert claim.value.resource_id == "room-1"


async def test_a_removal_delete_landing_after_the_reconnect_rewrote_it_is_not_an_outlook_delete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunk let go of the mapping and sent the delete; Graph was slow with it, and
    meanwhile a PUT reconnected and the catch-up wrote the booking's event again. The
    old event's delete then lands and is notified: that is our removal, not the Outlook
    user cancelling the booking (cancel_booking)."""
    world, settings = await connected_room(on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING)
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [old] = world.calendar.events[ROOM].values()
    await world.services.resources.disconnect("room-1", remove_events=True)
    [work] = queued(world)
    world.queue.sent.clear()
    send = world.calendar.write_batch

    async def slow_deletes(writes: list[EventWrite]) -> list[EventWriteResult]:
        if all(w.op == "delete" for w in writes):
            monkeypatch.setattr(world.calendar, "write_batch", send)  # the chunk's alone
            await world.services.resources.put("room-1", settings)
            await world.finish_connects()
            world.queue.sent = [
                (q, b) for q, b in world.queue.sent if '"disconnect_resource"' not in b
            ]
            await world.push_all()
        return await send(writes)

    monkeypatch.setattr(world.calendar, "write_batch", slow_deletes)
    await world.services.resources.remove_events(work)
    monkeypatch.undo()
    await world.services.inbound.handle_change(
        EventChange(
            subscription_id="s",
            resource_id="room-1",
            change_type="deleted",
            event_id=old.event_id,
            received_at=world.clock.now,
        )
    )
    world.queue.sent = [(q, b) for q, b in world.queue.sent if '"disconnect_resource"' not in b]
    await world.push_all()

    view = await world.services.bookings.get(booking_id)
    assert view.status == "confirmed"
    [event] = world.calendar.events[ROOM].values()
    assert event.booking_id == booking_id
    assert [(s.state, s.event_id) for s in view.sync] == [("synced", event.event_id)]


async def test_a_booking_over_that_never_got_its_event_is_not_pending_for_ever() -> None:
    """Made just before a disconnect (its push wrote nothing, not even a mapping) and
    over before the reconnect: no event will ever be written for it."""
    world, settings = await connected_room()
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.services.resources.disconnect("room-1", remove_events=True)
    await world.push_all()
    world.clock.now = T0 + 2 * HOUR

    await reconnect(world, settings)

    assert world.calendar.events[ROOM] == {}
    assert [s.state for s in (await world.services.bookings.get(booking_id)).sync] == ["removed"]


async def test_a_reconnect_after_a_removal_delete_failed_leaves_one_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunk let go of the mapping, and its DELETE failed (Graph down past the
    gateway's retries): the event is still in the calendar when a PUT reconnects, and
    the removal's retry then finds the resource connected and stops. The catch-up
    removes it before writing the booking's new event, not a full round later."""
    world, settings, booking_id, work = await removal_refused(monkeypatch)
    [old] = world.calendar.events[ROOM].values()
    monkeypatch.undo()
    await reconnect(world, settings)
    await world.services.resources.remove_events(work)  # the queue's retry: reconnected
    await world.push_all()

    assert await state_of(world) is ConnectionState.CONNECTED
    await assert_one_event_synced(world, booking_id)
    assert old.event_id not in world.calendar.events[ROOM]  # never the removed one back


async def test_a_reconnect_leaves_a_detached_event_where_it_is() -> None:
    """An event the Outlook user took from the booking (detached) is theirs: a reconnect
    looking for what a removal left behind must not take it for one of ours."""
    world, settings = await connected_room()
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [kept] = world.calendar.events[ROOM].values()
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    await world.mappings.update(
        mapping.value.model_copy(update={"event_id": None, "change_key": None, "detached": True}),
        mapping.etag,
    )
    await world.services.resources.disconnect("room-1", remove_events=False)
    world.queue.sent.clear()

    await reconnect(world, settings)

    assert await state_of(world) is ConnectionState.CONNECTED
    assert list(world.calendar.events[ROOM]) == [kept.event_id]


async def test_a_reconnect_whose_removal_of_what_was_left_fails_still_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Graph still refuses the DELETE when the reconnect removes the event left behind:
    the connect goes on all the same (a connect message in poison would leave the
    resource `connecting`), the booking gets its new event, and an ordinary round
    removes the one left beside it."""
    world, settings, booking_id, _ = await removal_refused(monkeypatch)
    await reconnect(world, settings)
    monkeypatch.undo()

    assert await state_of(world) is ConnectionState.CONNECTED
    [shown] = (await world.services.bookings.get(booking_id)).sync
    assert shown.state == "synced"
    assert len(world.calendar.events[ROOM]) == 2  # the new one, and the one left

    await world.services.reconcile.reconcile("room-1")
    await world.push_all()

    await assert_one_event_synced(world, booking_id)


async def test_a_reconnect_never_removes_an_event_a_push_wrote_while_it_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconnect reads the mappings, then lists our events: a push that writes the
    booking's new event in between (the listing slow) has it in the listing too. It is
    the booking's event now, not one a removal left: removing it would read as the
    Outlook user deleting it (here cancel_booking)."""
    world, settings, booking_id, _ = await removal_refused(
        monkeypatch, on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING
    )
    monkeypatch.undo()
    listing = world.calendar.list_our_events
    await world.services.resources.put("room-1", settings)

    async def pushed_meanwhile(mailbox: str, *, limit: int | None = None) -> list[CalendarEvent]:
        monkeypatch.setattr(world.calendar, "list_our_events", listing)
        stored = await world.ports.bookings.get(booking_id)
        assert stored is not None
        await world.services.push.push(
            PushBooking(booking_id=booking_id, booking_version=stored.value.version)
        )
        return await listing(mailbox, limit=limit)

    monkeypatch.setattr(world.calendar, "list_our_events", pushed_meanwhile)
    await world.finish_connects()
    monkeypatch.undo()
    await world.push_all()

    view = await world.services.bookings.get(booking_id)
    assert view.status == "confirmed"
    [shown] = view.sync
    assert shown.state == "synced"
    assert world.calendar.events[ROOM][shown.event_id or ""].booking_id == booking_id


async def test_a_reconnect_during_a_chunk_whose_deletes_fail_still_writes_the_live_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PUT reconnects as the chunk unmaps our events (the connect's catch-up looks
    before they are unmapped), then Graph refuses the chunk's DELETEs and the removal's
    catch-up's own DELETE of what is left. The removal's message is not tried again
    once the resource is connected, so the live booking's event must be written all
    the same (what is left waits for a full round), not left unwritten."""
    world, settings, booking_id, work = await removal_queued()
    update = world.mappings.update

    async def reconnect_first(mapping: EventMapping, etag: str) -> Any:
        monkeypatch.setattr(world.mappings, "update", update)
        await world.services.resources.put("room-1", settings)
        await world.finish_connects()
        return await update(mapping, etag)

    monkeypatch.setattr(world.mappings, "update", reconnect_first)
    refuse_deletes(world, monkeypatch)
    with pytest.raises(GraphTransient):
        await world.services.resources.remove_events(work)
    await world.services.resources.remove_events(work)  # the queue's retry: reconnected
    monkeypatch.undo()
    world.queue.sent = [(q, b) for q, b in world.queue.sent if '"disconnect_resource"' not in b]
    await world.push_all()

    assert await state_of(world) is ConnectionState.CONNECTED
    [shown] = (await world.services.bookings.get(booking_id)).sync
    assert shown.state == "synced"
    assert world.calendar.events[ROOM][shown.event_id or ""].booking_id == booking_id


OTHER = "room-2@contoso.com"


async def two_rooms(**settings: Any) -> tuple[FakeWorld, ResourceSettings, str]:
    """Room-1 connected to ROOM with one booking synced there; OTHER a mailbox too."""
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, OTHER))
    wanted = resource("room-1", **settings).settings
    await world.services.resources.put("room-1", wanted)
    await world.finish_connects()
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    return world, wanted, booking_id


async def test_a_mailbox_change_under_events_of_ours_is_refused_naming_the_field() -> None:
    """Its mappings name events in the old mailbox: changed under them, the rounds would
    find them gone from the new one (deletes in Outlook: here cancel_booking) and leave
    them in the old one. Disconnect first."""
    world, settings, booking_id = await two_rooms(on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING)

    with pytest.raises(InvalidInput, match="disconnect it first") as refused:
        await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))

    assert refused.value.details[0]["field"] == "mailbox"
    view = await world.services.resources.get("room-1")
    assert (view.settings.mailbox, view.status.state) == (ROOM, ConnectionState.CONNECTED)
    await world.services.reconcile.reconcile("room-1")
    assert (await world.services.bookings.get(booking_id)).status == "confirmed"
    assert len(world.calendar.events[ROOM]) == 1


async def test_a_mailbox_change_after_a_disconnect_writes_the_events_in_the_new_one() -> None:
    """Disconnected without removeEvents, its events were left to the calendar: a new
    mailbox lets go of them, and the reconnect writes the live bookings' events there;
    nothing reads the old ones as deleted in Outlook."""
    world, settings, booking_id = await two_rooms(on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING)
    await world.services.resources.disconnect("room-1", remove_events=False)

    await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))
    await world.finish_connects()
    await world.push_all()
    await world.services.reconcile.reconcile("room-1")
    await world.push_all()

    assert (await world.services.bookings.get(booking_id)).status == "confirmed"
    await assert_one_event_synced(world, booking_id, mailbox=OTHER)
    assert len(world.calendar.events[ROOM]) == 1  # left to the old calendar, as asked


async def test_a_mailbox_change_with_no_events_of_ours_connects_the_new_one() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, OTHER))
    settings = resource("room-1").settings
    await world.services.resources.put("room-1", settings)
    await world.finish_connects()

    view, _ = await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))

    assert view.settings.mailbox == OTHER
    assert view.status.state is ConnectionState.CONNECTING


async def test_a_mailbox_change_while_our_events_are_being_removed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The removal let go of the mappings and its DELETE failed: the events are still
    in the old mailbox, and a new one would stop the removal for good (it works on the
    mailbox it was sent for)."""
    world, settings, _ = await two_rooms()
    await world.services.resources.disconnect("room-1", remove_events=True)
    [work] = queued(world)

    refuse_deletes(world, monkeypatch)
    with pytest.raises(GraphTransient):
        await world.services.resources.remove_events(work)
    assert (await world.services.resources.get("room-1")).mapped_events == 0

    with pytest.raises(InvalidInput, match="being removed") as refused:
        await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))

    assert refused.value.details[0]["field"] == "mailbox"
    assert await state_of(world) is ConnectionState.DISCONNECTING


async def test_a_mailbox_change_while_a_create_may_still_land_in_the_old_one_is_refused() -> None:
    """Disconnected (events left to the calendar) while a create was on its way: its
    answer would record an event of the old mailbox in the mapping of a resource now on
    another. Refused until the create can no longer land."""
    world = fake_world(Clock(T0), (ROOM, OTHER))
    await world.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(state=ConnectionState.DISCONNECTED, since=T0)}
        )
    )
    await a_create_sent_at_t0(world, "bk-late")
    settings = resource("room-1").settings

    with pytest.raises(InvalidInput, match="create may still") as refused:
        await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))

    assert refused.value.details[0]["field"] == "mailbox"
    world.clock.now = T0 + timedelta(seconds=WRITE_IN_FLIGHT_SECONDS + 1)
    view, _ = await world.services.resources.put("room-1", replace_mailbox(settings, OTHER))
    assert view.settings.mailbox == OTHER


def replace_mailbox(settings: ResourceSettings, mailbox: str) -> ResourceSettings:
    return settings.model_copy(update={"mailbox": mailbox})
