"""The unavailability mirror's full pull: what it keeps, and that it replaces the whole mirror."""

from __future__ import annotations

from datetime import timedelta

from shared.domain.calendar import CalendarEvent, EventType, ShowAs
from shared.domain.messages import EventChange, EventChanges
from shared.domain.resources import ConnectionStatus, Resource
from shared.services.mirror import to_block
from tests.builders import T0, booking, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


def event(event_id: str, hours: int, **fields: object) -> CalendarEvent:
    start = T0 + timedelta(hours=hours)
    return CalendarEvent.model_validate(
        {"event_id": event_id, "start": start, "end": start + timedelta(minutes=30), **fields}
    )


def occurrence(master: str, day: int) -> CalendarEvent:
    return event(f"{master}-{day}", 24 * day, type=EventType.OCCURRENCE, series_master_id=master)


async def test_a_pull_replaces_the_whole_mirror_with_the_calendars_busy_time() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    room = resource("room-1")
    calendar = world.calendar.events[ROOM]
    await world.ports.bookings.add(booking("bk-1"))
    for e in (
        event("meeting", 1),
        event("lunch", 3, show_as=ShowAs.FREE),  # free: not busy time
        event("ours", 5, booking_id="bk-1"),  # a booking's own event
        event("called-off", 6, is_cancelled=True),
        event("moving", 7),
        *(occurrence("standup", day) for day in range(3)),
    ):
        calendar[e.event_id] = e
    assert await world.services.mirror.pull(room) == 5

    # Later: the meeting is gone, one standup was skipped, the other event moved.
    del calendar["meeting"], calendar["standup-1"]
    calendar["moving"] = event("moving", 9)
    count = await world.services.mirror.pull(room)

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert count == 3
    assert sorted((b.event_id, b.start) for b in blocks) == [
        ("moving", T0 + timedelta(hours=9)),
        ("standup-0", T0),
        ("standup-2", T0 + timedelta(days=2)),
    ]
    assert {b.series_master_id for b in blocks if b.event_id.startswith("standup")} == {"standup"}


async def test_a_pull_leaves_other_resources_mirrors_alone() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, "room-2@contoso.com"))
    world.calendar.events["room-2@contoso.com"]["other"] = event("other", 2)
    await world.services.mirror.pull(resource("room-2"))

    await world.services.mirror.pull(resource("room-1"))  # an empty calendar

    assert [b.event_id for b in await world.ports.unavailability.list_for_resource("room-2")] == [
        "other"
    ]


def test_an_all_day_event_blocks_its_whole_local_day_in_the_resources_zone() -> None:
    # Graph floats all-day events: read in UTC, 12 March is 00:00Z to 00:00Z.
    day = CalendarEvent.model_validate(
        {
            "event_id": "offsite",
            "start": "2030-03-12T00:00:00Z",
            "end": "2030-03-13T00:00:00Z",
            "is_all_day": True,
            "show_as": "oof",
        }
    )

    new_york = to_block("room-1", day, time_zone="America/New_York")
    utc = to_block("room-1", day, time_zone="UTC")

    assert new_york is not None
    assert utc is not None
    # 12 March in New York: 00:00 EDT (UTC-4, DST began on the 10th) to 00:00 the 13th.
    assert (new_york.start.isoformat(), new_york.end.isoformat()) == (
        "2030-03-12T04:00:00+00:00",
        "2030-03-13T04:00:00+00:00",
    )
    assert (utc.start, utc.end) == (day.start, day.end)


def test_a_timed_event_keeps_its_instants_whatever_the_zone() -> None:
    meeting = event("meeting", 1)
    block = to_block("room-1", meeting, time_zone="America/New_York")
    assert block is not None
    assert (block.start, block.end) == (meeting.start, meeting.end)


async def _series_world() -> tuple[FakeWorld, dict[str, CalendarEvent]]:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)}
        )
    )
    calendar = world.calendar.events[ROOM]
    master = event("standup", 0, type=EventType.SERIES_MASTER)
    calendar[master.event_id] = master
    for day in range(3):
        e = occurrence("standup", day)
        calendar[e.event_id] = e
    calendar["other"] = event("other", 5)
    await world.services.mirror.pull(world_resource(world))
    return world, calendar


def world_resource(world: FakeWorld) -> Resource:
    [stored] = world.resources.rows.values()
    return stored.value


def updated(event_id: str, change_key: str) -> EventChange:
    return EventChange(
        subscription_id="sub-1",
        resource_id="room-1",
        change_type="updated",
        event_id=event_id,
        change_key=change_key,
        received_at=T0,
    )


async def test_a_master_update_reads_only_its_series_once_per_message() -> None:
    world, calendar = await _series_world()
    del calendar["standup-1"]  # one occurrence deleted in Outlook
    world.calendar.view_reads = 0
    # A room mailbox notifies the master several times for one action.
    work = EventChanges(
        subscription_id="sub-1",
        resource_id="room-1",
        changes=[
            updated("standup", "ck-1"),
            updated("standup", "ck-2"),
            updated("standup", "ck-3"),
        ],
    )

    await world.services.inbound.handle_change(work)

    assert world.calendar.instance_reads == [(ROOM, "standup")]
    assert world.calendar.view_reads == 0
    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["other", "standup-0", "standup-2"]


async def test_a_removed_occurrence_clears_only_that_occurrences_block() -> None:
    world, _ = await _series_world()
    removed = EventChange(
        subscription_id="delta",
        resource_id="room-1",
        change_type="deleted",
        event_id="standup-1",
        received_at=T0,
    )

    await world.services.inbound.handle_change(removed)

    blocks = await world.ports.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in blocks) == ["other", "standup-0", "standup-2"]
