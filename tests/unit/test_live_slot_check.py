"""The live look at a slot before an API booking is confirmed: busy time the mirror has
not seen yet (its notification still on the way) refuses the booking, is handed to the
inbound worker, and nothing is written; Graph unreadable fails closed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingWindow, TimeRange
from shared.domain.calendar import CalendarEvent, EventMapping, EventType, ShowAs
from shared.domain.errors import (
    CalendarUnavailable,
    GraphThrottled,
    GraphTransient,
    SlotUnavailable,
    StorageUnavailable,
)
from shared.domain.messages import SYNC_INBOUND_QUEUE, EventChanges, EventSource
from shared.domain.resources import ConnectionStatus, Direction
from shared.services.bookings import BookingService
from shared.services.events import EventRouting
from shared.services.live_check import LiveSlotCheck
from shared.services.slots import SlotKeeper
from tests.builders import T0, booking_request, busy_block, resource
from tests.fakes import (
    Clock,
    FakeBookings,
    FakeCalendar,
    FakeCalendarChecks,
    FakeEventMappings,
    FakeIdempotency,
    FakeLedger,
    FakeQueue,
    FakeResources,
    FakeUnavailability,
)

HOUR = timedelta(hours=1)


class FailingQueue(FakeQueue):
    async def send(self, queue_name: str, message: Any, *, delay_seconds: int = 0) -> None:
        if queue_name == SYNC_INBOUND_QUEUE:
            raise StorageUnavailable("queue down")
        await super().send(queue_name, message, delay_seconds=delay_seconds)


@dataclass
class World:
    service: BookingService
    resources: FakeResources
    bookings: FakeBookings
    ledger: FakeLedger
    unavailability: FakeUnavailability
    queue: FakeQueue
    idempotency: FakeIdempotency
    calendar: FakeCalendar
    clock: Clock
    mappings: FakeEventMappings

    async def add_resource(self, resource_id: str, **settings: Any) -> None:
        value = resource(resource_id, **settings).model_copy(
            update={
                "status": ConnectionStatus(mirror_refreshed_at=self.clock.now),
                "subscription_id": f"sub-{resource_id}",
            }
        )
        await self.resources.add(value)

    def outlook_event(
        self, mailbox: str, event_id: str, start: datetime, end: datetime, **fields: Any
    ) -> CalendarEvent:
        """An event an Outlook user made, whose notification has not come yet."""
        event = CalendarEvent(event_id=event_id, start=start, end=end, **fields)
        self.calendar.events[mailbox][event_id] = event
        return event

    def fed_to_mirror(self) -> list[tuple[str, str, str]]:
        """(resource, change type, event id) of what was handed to the inbound worker."""
        found: list[tuple[str, str, str]] = []
        for body in self.queue.bodies(SYNC_INBOUND_QUEUE):
            message = EventChanges.model_validate_json(body)
            found += [(c.resource_id, c.change_type, c.event_id) for c in message.changes]
        return found

    def nothing_written(self) -> bool:
        return self.ledger.writes == 0 and not self.bookings.rows


def build(queue: FakeQueue | None = None) -> World:
    clock = Clock(T0 - timedelta(days=1))
    resources, bookings, ledger = FakeResources(), FakeBookings(), FakeLedger()
    unavailability, idem = FakeUnavailability(), FakeIdempotency()
    queue = queue or FakeQueue()
    mappings = FakeEventMappings()
    calendar = FakeCalendar(("room-1@contoso.com", "alice@contoso.com", "bob@contoso.com"))
    service = BookingService(
        resources=resources,
        bookings=bookings,
        event_mappings=mappings,
        checks=FakeCalendarChecks(),
        unavailability=unavailability,
        idempotency=idem,
        queue=queue,
        slots=SlotKeeper(ledger, bookings, clock, backoff_seconds=0),
        clock=clock,
        freshness_minutes=60,
        routing=EventRouting(webhooks=False),
        window=BookingWindow(grace=timedelta(minutes=5), horizon_days=180),
        live_check=LiveSlotCheck(
            calendar, queue, clock, bookings=bookings, event_mappings=mappings
        ),
    )
    return World(
        service, resources, bookings, ledger, unavailability, queue, idem, calendar, clock, mappings
    )


@pytest.fixture
async def world() -> World:
    w = build()
    for resource_id in ("room-1", "alice", "bob"):
        await w.add_resource(resource_id)
    return w


async def test_busy_time_not_yet_notified_refuses_and_writes_nothing(world: World) -> None:
    world.outlook_event("room-1@contoso.com", "ev-meeting", T0 + HOUR / 2, T0 + 2 * HOUR)

    with pytest.raises(SlotUnavailable, match="room-1 is busy in Outlook"):
        await world.service.create(booking_request(T0), "key-1")

    assert world.nothing_written()
    assert await world.idempotency.get("key-1") is None  # the client may retry
    assert world.calendar.view_batches == [["room-1@contoso.com"]]
    assert world.fed_to_mirror() == [("room-1", "created", "ev-meeting")]


async def test_an_event_of_ours_left_at_times_its_booking_does_not_hold_refuses(
    world: World,
) -> None:
    """Room-1's own booking's event, moved in Outlook to the slot and left there (the
    `ignore` policy): busy in the calendar. Not handed to the mirror, which keeps none
    of our events."""
    later = await world.service.create(booking_request(T0 + 3 * HOUR), None)
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR, booking_id=later.booking_id)

    with pytest.raises(SlotUnavailable, match="room-1 is busy in Outlook"):
        await world.service.create(booking_request(T0), None)

    assert len(world.bookings.rows) == 1
    assert world.fed_to_mirror() == []


async def test_busy_time_stamped_with_an_id_of_no_booking_here_refuses(world: World) -> None:
    """An Outlook copy of another calendar's event of ours (it carries that booking's
    id) is busy time in room-1, not one of room-1's bookings."""
    other = await world.service.create(booking_request(T0, resourceIds=["alice"]), None)
    world.outlook_event("room-1@contoso.com", "ev-copy", T0, T0 + HOUR, booking_id=other.booking_id)

    with pytest.raises(SlotUnavailable, match="room-1 is busy in Outlook"):
        await world.service.create(booking_request(T0), "key-1")


async def test_a_free_live_slot_is_booked_after_one_view(world: World) -> None:
    view = await world.service.create(booking_request(T0), None)

    assert (await world.service.get(view.booking_id)).start == T0
    assert world.calendar.view_batches == [["room-1@contoso.com"]]
    # A day wider on each side: floating all-day events of the resource's day show.
    assert world.calendar.view_windows == [(T0 - timedelta(days=1), T0 + HOUR + timedelta(days=1))]
    assert world.fed_to_mirror() == []


async def test_busy_time_outside_the_slot_in_the_wider_view_does_not_refuse(
    world: World,
) -> None:
    world.outlook_event("room-1@contoso.com", "ev-before", T0 - 20 * HOUR, T0 - 19 * HOUR)
    world.outlook_event("room-1@contoso.com", "ev-after", T0 + 25 * HOUR, T0 + 26 * HOUR)

    await world.service.create(booking_request(T0), None)

    assert len(world.bookings.rows) == 1
    assert world.fed_to_mirror() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"show_as": ShowAs.FREE},
        {"is_cancelled": True},  # a cancelled meeting copy is free time
        # Ours, at the times of a write of ours (another room-1 booking's, rescheduled
        # away, its push still to come): the ledger decides.
        {"booking_id": "room-1's"},
        {"show_as": ShowAs.WORKING_ELSEWHERE},  # the room does not block it
        {"type": EventType.SERIES_MASTER},  # its occurrences are what block
    ],
    ids=["free", "cancelled-copy", "ours", "working-elsewhere", "series-master"],
)
async def test_what_the_mirror_would_not_block_does_not_refuse(
    world: World, fields: dict[str, Any]
) -> None:
    before = 0
    if fields.get("booking_id") == "room-1's":
        later = await world.service.create(booking_request(T0 + 3 * HOUR), None)
        fields = {"booking_id": later.booking_id}
        before = 1
        await world.mappings.add(
            EventMapping(
                resource_id="room-1",
                booking_id=later.booking_id,
                mailbox="room-1@contoso.com",
                event_id="ev-1",
                pushed_start=T0,
                pushed_end=T0 + HOUR,
            )
        )
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR, **fields)

    await world.service.create(booking_request(T0), None)

    assert len(world.bookings.rows) == before + 1
    assert world.fed_to_mirror() == []


@pytest.mark.parametrize(
    ("start", "end"), [(T0 - HOUR, T0), (T0 + HOUR, T0 + 2 * HOUR)], ids=["before", "after"]
)
async def test_an_event_only_touching_the_slot_leaves_it_free(
    world: World, start: datetime, end: datetime
) -> None:
    world.outlook_event("room-1@contoso.com", "ev-1", start, end)

    await world.service.create(booking_request(T0), None)

    assert len(world.bookings.rows) == 1


async def test_working_elsewhere_refuses_where_the_resource_blocks_it() -> None:
    world = build()
    await world.add_resource("room-1", block_working_elsewhere=True)
    world.outlook_event(
        "room-1@contoso.com", "ev-1", T0, T0 + HOUR, show_as=ShowAs.WORKING_ELSEWHERE
    )

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(T0), None)


async def test_an_occurrence_of_a_series_refuses(world: World) -> None:
    world.outlook_event(
        "room-1@contoso.com",
        "ev-occ-3",
        T0,
        T0 + HOUR,
        type=EventType.OCCURRENCE,
        series_master_id="ev-master",
    )

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(T0), None)

    # The worker reads the occurrence and re-reads its series' instances.
    assert world.fed_to_mirror() == [("room-1", "created", "ev-occ-3")]


async def test_a_panel_is_looked_at_in_one_batch_and_refused_for_the_busy_member(
    world: World,
) -> None:
    world.outlook_event("bob@contoso.com", "ev-bob", T0, T0 + HOUR, show_as=ShowAs.TENTATIVE)

    with pytest.raises(SlotUnavailable, match="bob is busy"):
        await world.service.create(
            booking_request(T0, resourceIds=["room-1", "alice", "bob"]), None
        )

    assert [sorted(batch) for batch in world.calendar.view_batches] == [
        ["alice@contoso.com", "bob@contoso.com", "room-1@contoso.com"]
    ]
    assert world.fed_to_mirror() == [("bob", "created", "ev-bob")]
    assert world.nothing_written()


async def test_an_all_day_event_blocks_the_resources_own_local_day() -> None:
    world = build()
    await world.add_resource("room-1", time_zone="America/New_York")
    # All day on 7 January, as Graph gives it asked in UTC: floating midnight to midnight.
    day = datetime(2030, 1, 7, tzinfo=UTC)
    world.outlook_event(
        "room-1@contoso.com",
        "ev-oof",
        day,
        day + timedelta(days=1),
        is_all_day=True,
        show_as=ShowAs.OOF,
    )
    evening_in_new_york = datetime(2030, 1, 8, 2, 0, tzinfo=UTC)  # 7 Jan, 21:00 there
    world.clock.now = day - timedelta(days=2)

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(evening_in_new_york), None)
    # The evening before (6 Jan, 22:00 in New York) is not that day.
    await world.service.create(booking_request(datetime(2030, 1, 7, 3, 0, tzinfo=UTC)), None)
    assert len(world.bookings.rows) == 1


async def test_a_mirrored_event_now_busy_is_handed_over_as_updated(world: World) -> None:
    await world.unavailability.replace_event(
        "room-1", "ev-1", [busy_block("ev-1", T0, 60, show_as=ShowAs.WORKING_ELSEWHERE)]
    )
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR, show_as=ShowAs.BUSY)

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(T0), None)

    assert world.fed_to_mirror() == [("room-1", "updated", "ev-1")]


async def test_mirrored_busy_time_refuses_without_calling_graph(world: World) -> None:
    await world.unavailability.replace_event("room-1", "ev-1", [busy_block("ev-1", T0, 60)])

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(T0), None)

    assert world.calendar.view_batches == []


@pytest.mark.parametrize(
    "error", [GraphTransient("down"), GraphThrottled("429")], ids=["down", "throttled"]
)
async def test_an_unreadable_live_calendar_fails_closed(world: World, error: Exception) -> None:
    world.calendar.fail("room-1@contoso.com", error)  # type: ignore[arg-type]

    with pytest.raises(CalendarUnavailable, match="live calendar of room-1 could not be read"):
        await world.service.create(booking_request(T0), "key-1")

    assert world.nothing_written()
    assert await world.idempotency.get("key-1") is None


async def test_the_setting_turns_the_live_look_off() -> None:
    world = build()
    await world.add_resource("room-1", live_slot_check=False)
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR)

    await world.service.create(booking_request(T0), None)

    assert world.calendar.view_batches == []
    assert len(world.bookings.rows) == 1


async def test_a_resource_that_does_not_pull_is_not_looked_at() -> None:
    world = build()
    await world.add_resource("room-1", direction=Direction.OUT)
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR)

    await world.service.create(booking_request(T0), None)

    assert world.calendar.view_batches == []


async def test_an_api_reschedule_is_looked_at_and_refused_leaving_the_booking(
    world: World,
) -> None:
    view = await world.service.create(booking_request(T0), None)
    world.outlook_event("room-1@contoso.com", "ev-1", T0 + 3 * HOUR, T0 + 4 * HOUR)
    # Our own event of the booking at its time is no obstacle.
    world.outlook_event("room-1@contoso.com", "ev-ours", T0, T0 + HOUR, booking_id=view.booking_id)
    await world.service.reschedule(
        view.booking_id, TimeRange(start=T0 + HOUR / 2, end=T0 + 2 * HOUR)
    )

    with pytest.raises(SlotUnavailable):
        await world.service.reschedule(
            view.booking_id, TimeRange(start=T0 + 3 * HOUR, end=T0 + 4 * HOUR)
        )

    after = await world.service.get(view.booking_id)
    assert (after.start, after.end) == (T0 + HOUR / 2, T0 + 2 * HOUR)
    assert len(world.calendar.view_batches) == 3


async def test_an_outlook_move_is_judged_by_the_mirror_alone(world: World) -> None:
    view = await world.service.create(booking_request(T0), None)
    world.outlook_event("room-1@contoso.com", "ev-1", T0 + 3 * HOUR, T0 + 4 * HOUR)

    await world.service.reschedule(
        view.booking_id,
        TimeRange(start=T0 + 3 * HOUR, end=T0 + 4 * HOUR),
        EventSource.OUTLOOK,
    )

    assert len(world.calendar.view_batches) == 1  # the create's


async def test_a_refusal_stands_when_the_mirror_cannot_be_fed() -> None:
    world = build(FailingQueue())
    await world.add_resource("room-1")
    world.outlook_event("room-1@contoso.com", "ev-1", T0, T0 + HOUR)

    with pytest.raises(SlotUnavailable):
        await world.service.create(booking_request(T0), None)

    assert world.nothing_written()


async def test_an_unreadable_member_is_the_one_named_in_the_refusal(world: World) -> None:
    world.calendar.fail("bob@contoso.com", GraphTransient("down"))

    with pytest.raises(CalendarUnavailable) as refused:
        await world.service.create(
            booking_request(T0, resourceIds=["room-1", "alice", "bob"]), "key-1"
        )

    assert "live calendar of bob could not be read" in str(refused.value)
    assert world.nothing_written()
