"""A message's changes of one resource share their reads and writes: the resource is
read once, the events Graph must be asked for in one batch read, the log entries
written together, and the mirror's blocks in one write. What each change does is the
same as when it came alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.calendar import CalendarEvent, EventMapping
from shared.domain.errors import GraphAccessDenied, GraphTransient, StorageUnavailable
from shared.domain.messages import EventChange, EventChanges
from shared.domain.resources import ConnectionState, ConnectionStatus, Resource
from shared.domain.sync_log import SyncOutcome
from shared.ports import Stored
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


def foreign(event_id: str, hours: int) -> CalendarEvent:
    start = T0 + timedelta(hours=hours)
    return CalendarEvent(
        event_id=event_id, change_key="ck-f", start=start, end=start + timedelta(minutes=30)
    )


def change(
    event_id: str, change_type: str = "created", change_key: str | None = None
) -> EventChange:
    return EventChange(
        subscription_id="sub-1",
        resource_id="room-1",
        change_type=change_type,
        event_id=event_id,
        change_key=change_key,
        received_at=T0,
    )


def message(*changes: EventChange) -> EventChanges:
    return EventChanges(subscription_id="sub-1", resource_id="room-1", changes=list(changes))


@pytest.fixture
async def world() -> FakeWorld:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)}
        )
    )
    for n in range(5):
        world.calendar.events[ROOM][f"ev-{n}"] = foreign(f"ev-{n}", n)
    return world


async def test_a_messages_events_are_read_in_one_batch_read(world: FakeWorld) -> None:
    await world.services.inbound.handle_change(message(*(change(f"ev-{n}") for n in range(5))))

    assert world.calendar.batch_reads == [5]
    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == [f"ev-{n}" for n in range(5)]


async def test_an_echo_and_a_delete_are_not_read(world: FakeWorld) -> None:
    world.calendar.events[ROOM].clear()  # the booking's time free
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.event_id is not None
    world.calendar.events[ROOM]["ev-1"] = foreign("ev-1", 30)
    world.calendar.batch_reads.clear()
    world.calendar.reads.clear()

    await world.services.inbound.handle_change(
        message(
            change(mapping.value.event_id, "updated", mapping.value.change_key),
            change("ev-gone", "deleted"),
            change("ev-1", "updated"),
        )
    )

    assert world.calendar.batch_reads == [1]
    assert world.calendar.reads == [(ROOM, "ev-1")]


async def test_the_resource_is_read_once_per_message(world: FakeWorld) -> None:
    world.resources.reads = 0

    await world.services.inbound.handle_change(message(*(change(f"ev-{n}") for n in range(5))))

    assert world.resources.reads == 1


async def test_a_messages_log_entries_are_written_together(world: FakeWorld) -> None:
    await world.services.inbound.handle_change(
        message(*(change(f"ev-{n}") for n in range(5)), change("ev-gone", "deleted"))
    )

    assert world.sync_log.writes == [6]
    assert [e.action for e in world.sync_log.entries] == ["mirror: updated"] * 5 + [
        "mirror: removed"
    ]


async def test_a_messages_mirror_blocks_are_written_together(world: FakeWorld) -> None:
    await world.services.inbound.handle_change(message(change("ev-0"), change("ev-1")))
    world.ports.unavailability.writes.clear()  # type: ignore[attr-defined]
    del world.calendar.events[ROOM]["ev-0"]

    await world.services.inbound.handle_change(
        message(change("ev-0", "updated"), change("ev-2"), change("ev-1", "deleted"))
    )

    assert world.ports.unavailability.writes == [3]  # type: ignore[attr-defined]
    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert [b.event_id for b in blocks] == ["ev-2"]


async def test_a_failed_read_fails_its_change_alone_and_the_message(world: FakeWorld) -> None:
    # The second event's read fails; the others are still applied and logged.
    world.calendar.failing_reads["ev-1"] = GraphTransient("ev-1 unreadable")

    with pytest.raises(GraphTransient, match="ev-1"):
        await world.services.inbound.handle_change(message(*(change(f"ev-{n}") for n in range(3))))

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["ev-0", "ev-2"]
    assert [e.outcome for e in world.sync_log.entries] == [SyncOutcome.OK] * 2


async def test_access_denied_on_a_batch_read_marks_the_resource_failing_once(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.calendar.fail(ROOM, *(GraphAccessDenied("403 ErrorAccessDenied") for _ in range(3)))
    marked: list[str] = []
    mark_failing = world.services.connection.mark_failing

    async def counted(resource_id: str, error: str) -> None:
        marked.append(resource_id)
        await mark_failing(resource_id, error)

    monkeypatch.setattr(world.services.connection, "mark_failing", counted)

    # Left to the rounds, which the failing state keeps trying: the message completes.
    await world.services.inbound.handle_change(message(*(change(f"ev-{n}") for n in range(3))))

    assert marked == ["room-1"]

    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.FAILING
    assert await world.ports.unavailability.list_for_resource("room-1") == []


async def test_the_resource_and_the_events_mappings_are_read_side_by_side(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resource's read answers only once a mapping's read has begun: one after the
    # other, the two would wait on each other.
    lookup_started = asyncio.Event()
    get_resource, find_by_event = world.resources.get, world.mappings.find_by_event

    async def resource_after_lookup(resource_id: str) -> Stored[Resource] | None:
        await lookup_started.wait()
        return await get_resource(resource_id)

    async def lookup(resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        lookup_started.set()
        return await find_by_event(resource_id, event_id)

    monkeypatch.setattr(world.resources, "get", resource_after_lookup)
    monkeypatch.setattr(world.mappings, "find_by_event", lookup)

    await asyncio.wait_for(
        world.services.inbound.handle_change(message(change("ev-0"), change("ev-1"))), 2
    )

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["ev-0", "ev-1"]


async def test_a_failed_mirror_write_fails_its_changes_and_logs_none_of_them(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(resource_id: str, events: object) -> None:
        raise StorageUnavailable("table down")

    monkeypatch.setattr(world.ports.unavailability, "replace_events", refused)

    with pytest.raises(StorageUnavailable):
        await world.services.inbound.handle_change(
            message(change("ev-0"), change("ev-1", "updated"))
        )

    assert world.sync_log.entries == []


async def test_a_batch_read_that_fails_whole_fails_each_of_its_changes(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(mailbox: str, event_ids: object) -> None:
        raise GraphTransient("Graph did not answer")

    monkeypatch.setattr(world.calendar, "read_events", unreachable)

    with pytest.raises(GraphTransient):
        await world.services.inbound.handle_change(
            message(change("ev-0"), change("ev-gone", "deleted"))
        )

    # The delete needed no read: it was applied and logged.
    assert [e.action for e in world.sync_log.entries] == ["mirror: removed"]


class HeldReads:
    """The calendar's first batch read waits until released; the passes after it run."""

    def __init__(self, world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self._read = world.calendar.read_events
        self._held = False
        monkeypatch.setattr(world.calendar, "read_events", self.read_events)

    async def read_events(self, mailbox: str, event_ids: Sequence[str]) -> dict[str, Any]:
        if not self._held:
            self._held = True
            self.started.set()
            await self.release.wait()
        return await self._read(mailbox, event_ids)


async def test_changes_of_a_resource_that_come_while_its_pass_runs_go_together_in_the_next(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldReads(world, monkeypatch)
    inbound = world.services.inbound
    first = asyncio.ensure_future(inbound.handle_change(message(change("ev-0"))))
    await held.started.wait()
    # Two more messages for the same resource while its first pass waits on Graph.
    later = [
        asyncio.ensure_future(inbound.handle_change(message(change(event_id))))
        for event_id in ("ev-1", "ev-2")
    ]
    await asyncio.sleep(0)
    held.release.set()

    await asyncio.wait_for(asyncio.gather(first, *later), 2)

    assert world.calendar.batch_reads == [1, 2]
    assert world.sync_log.writes == [1, 2]
    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["ev-0", "ev-1", "ev-2"]


async def test_a_change_gathered_with_other_messages_fails_only_its_own_message(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldReads(world, monkeypatch)
    world.calendar.failing_reads["ev-1"] = GraphTransient("ev-1 unreadable")
    inbound = world.services.inbound
    first = asyncio.ensure_future(inbound.handle_change(message(change("ev-0"))))
    await held.started.wait()
    failing = asyncio.ensure_future(inbound.handle_change(message(change("ev-1"))))
    fine = asyncio.ensure_future(inbound.handle_change(message(change("ev-2"))))
    await asyncio.sleep(0)
    held.release.set()

    outcomes = await asyncio.wait_for(
        asyncio.gather(first, failing, fine, return_exceptions=True), 2
    )

    assert outcomes[0] is None
    assert isinstance(outcomes[1], GraphTransient)
    assert outcomes[2] is None
    assert world.calendar.batch_reads == [1, 2]


async def test_a_message_that_stops_waiting_does_not_stop_the_pass_it_joined(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldReads(world, monkeypatch)
    inbound = world.services.inbound
    first = asyncio.ensure_future(inbound.handle_change(message(change("ev-0"))))
    await held.started.wait()
    second = asyncio.ensure_future(inbound.handle_change(message(change("ev-1"))))
    third = asyncio.ensure_future(inbound.handle_change(message(change("ev-2"))))
    await asyncio.sleep(0)
    second.cancel()  # its invocation gave up
    held.release.set()

    await asyncio.wait_for(asyncio.gather(first, third), 2)

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["ev-0", "ev-1", "ev-2"]


def counting_lookups(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The event ids the handler looks up a mapping for, from now on."""
    looked_up: list[str] = []
    find_by_event = world.mappings.find_by_event

    async def lookup(resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        looked_up.append(event_id)
        return await find_by_event(resource_id, event_id)

    monkeypatch.setattr(world.mappings, "find_by_event", lookup)
    return looked_up


@pytest.mark.parametrize("blanked", [False, True], ids=["as-made", "booking-id-blanked"])
async def test_an_event_of_ours_notified_before_its_mapping_is_never_taken_for_foreign(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, blanked: bool
) -> None:
    """Graph can notify our create before its answer is recorded: no mapping names the
    event yet. Whatever that read showed (our booking id, or none because another app
    with write access blanked the property for a while), the event is not taken for
    foreign later: once the mapping names it, an Outlook move of it is looked up and
    goes to the policy."""
    world.calendar.events[ROOM].clear()  # the booking's time free
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    [push] = world.outbound()
    world.queue.sent.clear()
    send = world.calendar.write_batch
    answers: list[Any] = []

    async def answer_held(writes: Sequence[Any]) -> Any:
        answers.append(await send(list(writes)))
        raise asyncio.CancelledError  # the answer is not recorded yet

    monkeypatch.setattr(world.calendar, "write_batch", answer_held)
    with pytest.raises(asyncio.CancelledError):
        await world.services.push.push(push)
    monkeypatch.setattr(world.calendar, "write_batch", send)
    [event] = world.calendar.events[ROOM].values()
    if blanked:
        world.calendar.events[ROOM][event.event_id] = event.model_copy(update={"booking_id": None})
    await world.services.inbound.handle_change(message(change(event.event_id)))
    world.calendar.events[ROOM][event.event_id] = event
    await world.services.push.push(push)  # the retry takes the event into the mapping
    mapping = await world.mappings.get("room-1", booking_id)
    assert mapping is not None
    assert mapping.value.event_id == event.event_id
    looked_up = counting_lookups(world, monkeypatch)
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={
            "start": T0 + timedelta(hours=9),
            "end": T0 + timedelta(hours=10),
            "change_key": "ck-moved",
        }
    )

    await world.services.inbound.handle_change(
        message(change(event.event_id, "updated", "ck-moved"))
    )

    assert looked_up == [event.event_id]
    assert [e.action for e in world.sync_log.entries[-1:]] != ["mirror: updated"]
    if not blanked:  # a read without our booking id was mirrored: that block stays
        assert await world.ports.unavailability.list_for_resource("room-1") == []
