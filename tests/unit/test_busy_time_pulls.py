"""Busy-time pulls in slices (shared/services/pulls.py): together the slices leave the
mirror exactly as one whole pull does; redelivered, superseded and duplicate messages do
no harm; the resource's status shows the pull and when it is done."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.domain.calendar import CalendarEvent, EventType, ShowAs, Unavailability
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, PullBusyTime
from shared.domain.resources import ConnectionState, ConnectionStatus, PullPurpose, Resource
from tests.builders import T0, busy_block, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


def event(event_id: str, start: datetime, minutes: int = 30, **fields: object) -> CalendarEvent:
    return CalendarEvent.model_validate(
        {"event_id": event_id, "start": start, "end": start + timedelta(minutes=minutes), **fields}
    )


def busy_calendar(window_start: datetime) -> list[CalendarEvent]:
    """Events on and across every slice edge, all-day events (their blocks start up to
    14 hours off their UTC dates), long ones, a series, and what is not busy."""
    edge = window_start + timedelta(days=7)
    day = timedelta(days=1)
    return [
        event("before-window-runs-in", window_start - timedelta(hours=2), minutes=240),
        event("first", window_start + timedelta(hours=9)),
        event("across-edge", edge - timedelta(minutes=15)),
        event("on-edge", edge),
        event("just-before-edge", edge - timedelta(minutes=30)),
        event("all-day-on-edge", edge, minutes=24 * 60, is_all_day=True),
        event("all-day-after-edge", edge + day, minutes=2 * 24 * 60, is_all_day=True),
        event("fortnight", edge + 3 * day, minutes=14 * 24 * 60),
        *(
            event(
                f"standup-{n}",
                window_start + timedelta(days=n, hours=8),
                type=EventType.OCCURRENCE,
                series_master_id="standup",
            )
            for n in range(0, 60, 3)
        ),
        event("free", edge + 2 * day, show_as=ShowAs.FREE),
        event("ours", edge + 2 * day, booking_id="bk-1"),
        event("last-day", window_start + timedelta(days=181, hours=20)),
    ]


def stale_blocks(window_start: datetime) -> list[Unavailability]:
    """Blocks of events gone from the calendar: before, inside and after the window."""
    return [
        busy_block("gone-before", window_start - timedelta(days=3), resource_id="room-1"),
        busy_block("gone-inside", window_start + timedelta(days=40), resource_id="room-1"),
        busy_block("gone-after", window_start + timedelta(days=400), resource_id="room-1"),
    ]


async def connected_room(world: FakeWorld, time_zone: str) -> Resource:
    room = resource("room-1", time_zone=time_zone)
    await world.resources.add(room)
    return room


def sorted_blocks(blocks: list[Unavailability]) -> list[tuple[str, datetime, datetime]]:
    return sorted((b.event_id, b.start, b.end) for b in blocks)


async def assert_mirror_as_one_whole_pull_leaves_it(world: FakeWorld) -> None:
    """Room-1's mirror holds what one whole pull of its calendar (UTC) leaves."""
    expected = fake_world(Clock(T0), (ROOM,))
    expected.calendar.events[ROOM] = dict(world.calendar.events[ROOM])
    await expected.services.mirror.pull(await connected_room(expected, "UTC"))
    assert sorted_blocks(
        await world.ports.unavailability.list_for_resource("room-1")
    ) == sorted_blocks(await expected.ports.unavailability.list_for_resource("room-1"))


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/London"])
async def test_the_slices_leave_the_mirror_as_one_whole_pull_does_in_any_zone(zone: str) -> None:
    sliced = fake_world(Clock(T0), (ROOM,))
    whole = fake_world(Clock(T0), (ROOM,))
    window_start, _ = sliced.services.mirror.window()
    for world in (sliced, whole):
        world.calendar.events[ROOM] = {e.event_id: e for e in busy_calendar(window_start)}
        await world.ports.unavailability.replace_all("room-1", stale_blocks(window_start))
    await connected_room(sliced, zone)
    await whole.services.mirror.pull(await connected_room(whole, zone))
    inclusive = sliced.calendar.calendar_view

    async def overlapping(mailbox: str, start: datetime, end: datetime) -> list[CalendarEvent]:
        # Read as strictly as Graph may: an event that only touches an edge is left out.
        found = await inclusive(mailbox, start, end)
        return [e for e in found if e.start < end and e.end > start]

    sliced.calendar.calendar_view = overlapping  # type: ignore[method-assign]

    assert await sliced.services.pulls.start("room-1", PullPurpose.RESYNC)
    await sliced.finish_pulls()

    expected = await whole.ports.unavailability.list_for_resource("room-1")
    got = await sliced.ports.unavailability.list_for_resource("room-1")
    assert sorted_blocks(got) == sorted_blocks(expected)
    assert {"gone-before", "gone-inside", "gone-after"}.isdisjoint(b.event_id for b in got)
    # Slices of a few events each grow: 7, 14, 28, 56 days and the rest.
    assert sliced.calendar.view_reads == 5


async def test_a_busy_calendar_is_pulled_a_week_a_message_and_an_empty_one_in_five() -> None:
    world = fake_world(Clock(T0), (ROOM,))
    window_start, _ = world.services.mirror.window()
    busy = [
        event(f"e{day}-{slot}", window_start + timedelta(days=day, hours=6, minutes=30 * slot))
        for day in range(182)
        for slot in range(28)
    ]
    world.calendar.events[ROOM] = {e.event_id: e for e in busy}
    await connected_room(world, "UTC")
    await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    await world.finish_pulls()
    assert len(await world.ports.unavailability.list_for_resource("room-1")) == len(busy)
    assert world.calendar.view_reads == 26

    world.calendar.events[ROOM] = {}
    await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    await world.finish_pulls()
    assert await world.ports.unavailability.list_for_resource("room-1") == []
    assert world.calendar.view_reads == 26 + 5


async def test_the_status_shows_the_pull_and_a_connect_is_connected_when_it_is_done() -> None:
    world = fake_world(Clock(T0), (ROOM,))
    window_start, window_end = world.services.mirror.window()
    world.calendar.events[ROOM] = {e.event_id: e for e in busy_calendar(window_start)}
    connecting = resource("room-1").model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.CONNECTING, since=T0)}
    )
    await world.resources.add(connecting)
    await world.services.pulls.start("room-1", PullPurpose.CONNECT)

    seen = []
    while pending := _pending_pulls(world):
        world.queue.sent = []
        for work in pending:
            await world.services.pulls.go_on(work)
        stored = await world.resources.get("room-1")
        assert stored is not None
        seen.append(stored.value.status)

    *going, done = seen
    assert all(s.state is ConnectionState.CONNECTING for s in going)
    through = [s.pull.pulled_through for s in going if s.pull is not None]
    assert through == sorted(through)
    assert through[0] == window_start + timedelta(days=7)
    assert through[-1] < window_end
    assert all(s.pull is not None and s.pull.purpose is PullPurpose.CONNECT for s in going)
    assert done.state is ConnectionState.CONNECTED
    assert done.pull is None
    assert done.mirror_refreshed_at == T0
    assert [e.action for e in world.sync_log.entries][-1] == "connected"


async def test_a_redelivered_message_repeats_its_slice_and_no_chain_is_doubled() -> None:
    world = fake_world(Clock(T0), (ROOM,))
    window_start, _ = world.services.mirror.window()
    world.calendar.events[ROOM] = {e.event_id: e for e in busy_calendar(window_start)}
    await connected_room(world, "UTC")
    await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    [first] = _pending_pulls(world)
    world.queue.sent = []

    await world.services.pulls.go_on(first)
    [second] = _pending_pulls(world)
    # The first message again (its delivery was not acknowledged): a slice already
    # pulled is not pulled or continued twice.
    reads = world.calendar.view_reads
    await world.services.pulls.go_on(first)
    assert world.calendar.view_reads == reads
    assert _pending_pulls(world) == [second]

    # A message sent twice (a worker died after sending the next slice's message and
    # before recording its progress, and the slice ran again): the first copy moves the
    # pull on, the other is then dropped.
    world.queue.sent = []
    await world.services.pulls.go_on(second)
    [third] = _pending_pulls(world)
    world.queue.sent = []
    await world.services.pulls.go_on(third)
    reads = world.calendar.view_reads
    await world.services.pulls.go_on(third)
    assert world.calendar.view_reads == reads
    assert len(_pending_pulls(world)) == 1
    await world.finish_pulls()

    await assert_mirror_as_one_whole_pull_leaves_it(world)


async def test_a_newer_pull_or_a_reconnect_ends_the_older_pulls_messages() -> None:
    world = fake_world(Clock(T0), (ROOM,))
    await connected_room(world, "UTC")
    await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    [older] = _pending_pulls(world)
    await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    [_, newer] = _pending_pulls(world)
    world.queue.sent = []

    await world.services.pulls.go_on(older)
    assert world.calendar.view_reads == 0
    assert _pending_pulls(world) == []

    # A PUT that reconnects starts over with a fresh status: no pull is current.
    stored = await world.resources.get("room-1")
    assert stored is not None
    reset = stored.value.model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.CONNECTING, since=T0)}
    )
    await world.resources.update(reset, stored.etag)
    await world.services.pulls.go_on(newer)
    assert world.calendar.view_reads == 0
    assert _pending_pulls(world) == []


async def test_no_pull_starts_for_a_disconnected_or_unknown_resource() -> None:
    world = fake_world(Clock(T0), (ROOM,))
    gone = resource("room-1").model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.DISCONNECTED, since=T0)}
    )
    await world.resources.add(gone)
    assert not await world.services.pulls.start("room-1", PullPurpose.RESYNC)
    assert not await world.services.pulls.start("room-2", PullPurpose.RESYNC)
    assert _pending_pulls(world) == []


def _pending_pulls(world: FakeWorld) -> list[PullBusyTime]:
    return [
        PullBusyTime.model_validate_json(body)
        for body in world.queue.bodies(SYNC_OUTBOUND_QUEUE)
        if '"pull_busy_time"' in body
    ]


async def test_a_resync_during_a_connect_pull_leaves_the_resource_connecting() -> None:
    # Seen on the local stack: PUT room-2 (1,500 events) → 202 connecting; POST resync while
    # `status.pull` (purpose connect) was going on → state `connected` with the connect
    # pull still at its second slice and `mirrorRefreshedAt` null, so availability answered
    # from a mirror holding a few weeks of the 6-month window.
    world = fake_world(Clock(T0), (ROOM,))
    window_start, _ = world.services.mirror.window()
    world.calendar.events[ROOM] = {e.event_id: e for e in busy_calendar(window_start)}
    connecting = resource("room-1").model_copy(
        update={"status": ConnectionStatus(state=ConnectionState.CONNECTING, since=T0)}
    )
    await world.resources.add(connecting)
    await world.services.pulls.start("room-1", PullPurpose.CONNECT)
    pending = _pending_pulls(world)
    world.queue.sent = []
    for work in pending:
        await world.services.pulls.go_on(work)

    await world.services.reconcile.resync("room-1")

    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.mirror_refreshed_at is None
    assert stored.value.status.state is ConnectionState.CONNECTING


@pytest.mark.parametrize(
    "change",
    [{"time_zone": "Asia/Tokyo"}, {"direction": "both"}],
    ids=["time-zone", "starts-pulling"],
)
async def test_a_settings_change_the_mirror_depends_on_pulls_the_busy_time_again(
    change: dict[str, str],
) -> None:
    # All-day events block the resource's own local days: mirrored under New York's days,
    # they must move when the room's zone changes, not wait for a full reconcile round. A
    # resource that starts pulling has nothing mirrored at all.
    world = fake_world(Clock(T0), (ROOM,))
    first = {"time_zone": "America/New_York", "direction": "both"}
    if change.get("direction"):
        first["direction"] = "out"
    await world.services.resources.put("room-1", resource("room-1", **first).settings)
    await world.finish_connects()
    day = (T0 + timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    holiday = event("holiday", day, minutes=24 * 60, is_all_day=True, show_as=ShowAs.OOF)
    world.calendar.events[ROOM] = {holiday.event_id: holiday}
    if change.get("direction") is None:
        # Mirrored under the first settings (a notification, as Graph sends it).
        stored = await world.resources.get("room-1")
        assert stored is not None
        await world.services.mirror.pull(stored.value)

    settings = resource("room-1", **{**first, **change}).settings
    await world.services.resources.put("room-1", settings)
    await world.finish_pulls()

    zone = ZoneInfo(settings.time_zone)
    local_day = datetime.combine(day.date(), time(), zone)
    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert [(b.event_id, b.start, b.end) for b in blocks] == [
        ("holiday", local_day.astimezone(UTC), (local_day + timedelta(days=1)).astimezone(UTC))
    ]


@pytest.mark.parametrize("purpose", [PullPurpose.CONNECT, PullPurpose.RESYNC])
async def test_a_pull_whose_message_was_lost_is_finished_by_the_next_round(
    purpose: PullPurpose,
) -> None:
    """A slice's message ended in poison (a Graph outage past the queue's retries): its
    chain of messages is over, and nothing else sends the next slice. The next round
    does, so the pull finishes: a connect is `connected`, its mirror whole."""
    world = fake_world(Clock(T0), (ROOM,))
    window_start, _ = world.services.mirror.window()
    world.calendar.events[ROOM] = {e.event_id: e for e in busy_calendar(window_start)}
    state = ConnectionState.CONNECTING if purpose is PullPurpose.CONNECT else None
    room = await connected_room(world, "UTC")
    if state is not None:
        stored = await world.resources.get("room-1")
        assert stored is not None
        status = ConnectionStatus(state=state, since=T0)
        await world.resources.update(room.model_copy(update={"status": status}), stored.etag)
    await world.services.pulls.start("room-1", purpose)
    [first] = _pending_pulls(world)
    world.queue.sent = []
    await world.services.pulls.go_on(first)
    world.queue.sent = []  # the second slice's message: poisoned

    await world.services.reconcile.reconcile("room-1")
    await world.finish_pulls()

    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.pull is None
    assert stored.value.status.state is ConnectionState.CONNECTED
    await assert_mirror_as_one_whole_pull_leaves_it(world)
