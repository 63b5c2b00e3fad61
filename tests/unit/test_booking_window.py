"""When a booking may be: one rule (from now less a grace to the mirror's horizon, and at
most one duration) for create, reschedule, availability and Outlook moves alike."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.domain.bookings import MAX_BOOKING_DURATION, BookingStatus, TimeRange
from shared.domain.errors import BeyondHorizon, BookingTimeRefused, DurationTooLong, StartInPast
from shared.domain.messages import EventChange
from shared.domain.resources import ConnectionStatus, OnOutlookMove
from shared.domain.sync_log import SyncOutcome
from shared.services.availability import AvailabilityQuery
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"
NOW = T0 - timedelta(days=1)
HORIZON = timedelta(days=180)  # MIRROR_DAYS_AHEAD's default
GRACE = timedelta(minutes=5)  # BOOKING_START_GRACE_MINUTES' default


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(NOW), (ROOM,))
    room = resource("room-1", on_outlook_move=OnOutlookMove.RESCHEDULE_BOOKING)
    fresh = ConnectionStatus(mirror_refreshed_at=w.clock.now)
    await w.resources.add(room.model_copy(update={"status": fresh}))
    return w


def hours(start: datetime, count: float = 1) -> TimeRange:
    return TimeRange(start=start, end=start + timedelta(hours=count))


@pytest.mark.parametrize(
    ("start", "length", "refused"),
    [
        (NOW - timedelta(days=1), timedelta(hours=1), StartInPast),
        (NOW - GRACE - timedelta(seconds=1), timedelta(hours=1), StartInPast),
        (NOW + HORIZON - timedelta(minutes=30), timedelta(hours=1), BeyondHorizon),
        (NOW + timedelta(days=250), timedelta(hours=1), BeyondHorizon),
        (T0, MAX_BOOKING_DURATION + timedelta(seconds=1), DurationTooLong),
        (T0, timedelta(days=89), DurationTooLong),
        (T0, timedelta(days=365), DurationTooLong),
    ],
)
async def test_create_outside_the_window_is_refused_and_books_nothing(
    world: FakeWorld, start: datetime, length: timedelta, refused: type[BookingTimeRefused]
) -> None:
    with pytest.raises(refused) as exc:
        await world.services.bookings.create(booking_request(start, start + length), "key-1")
    assert [d["field"] for d in exc.value.details] in (["start"], ["end"])
    assert world.bookings.rows == {}
    assert await world.ports.slot_ledger.read_days("room-1", start, start + length) == []
    assert await world.ports.idempotency.get("key-1") is None  # the key may be retried
    assert world.queue.sent == []


async def test_the_horizon_is_named_in_the_message(world: FakeWorld) -> None:
    with pytest.raises(BeyondHorizon, match="180 days"):
        await world.services.bookings.create(booking_request(NOW + timedelta(days=250)), None)


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (NOW - GRACE, timedelta(hours=1)),  # within the grace: a clock a little behind
        (NOW + HORIZON - timedelta(hours=1), timedelta(hours=1)),  # ends at the horizon
        (T0, MAX_BOOKING_DURATION),
    ],
)
async def test_the_edges_of_the_window_are_inside(
    world: FakeWorld, start: datetime, length: timedelta
) -> None:
    view = await world.services.bookings.create(booking_request(start, start + length), None)
    assert view.status is BookingStatus.CONFIRMED


@pytest.mark.parametrize(
    ("new_range", "refused"),
    [
        (TimeRange(start=T0, end=T0 + timedelta(days=89)), DurationTooLong),
        (TimeRange(start=T0, end=T0 + timedelta(days=365)), DurationTooLong),
        (hours(NOW + timedelta(days=250)), BeyondHorizon),
        (hours(NOW - timedelta(hours=2)), StartInPast),
    ],
)
async def test_reschedule_outside_the_window_is_refused_and_changes_nothing(
    world: FakeWorld, new_range: TimeRange, refused: type[BookingTimeRefused]
) -> None:
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    before = await world.bookings.get(booking_id)

    with pytest.raises(refused):
        await world.services.bookings.reschedule(booking_id, new_range)

    assert await world.bookings.get(booking_id) == before
    claims = await world.services.bookings.list_for_resource(
        "room-1", new_range.start, new_range.end
    )
    assert [c.booking_id for c in claims if c.start != T0] == []


async def test_availability_beyond_the_horizon_is_refused(world: FakeWorld) -> None:
    query = AvailabilityQuery(
        start=NOW + timedelta(days=170), end=NOW + timedelta(days=190), duration_minutes=30
    )
    with pytest.raises(BeyondHorizon):
        await world.services.availability.availability("room-1", query)
    inside = query.model_copy(update={"end": NOW + HORIZON})
    assert (await world.services.availability.availability("room-1", inside)).free_slots


async def test_availability_before_the_busy_time_kept_is_refused_not_shown_free(
    world: FakeWorld,
) -> None:
    """The mirror keeps busy time from midnight UTC MIRROR_DAYS_BACK (1) days ago; a
    window starting earlier would answer the time before it as free."""
    kept_from = (NOW - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    query = AvailabilityQuery(
        start=NOW - timedelta(days=8), end=NOW - timedelta(days=7), duration_minutes=30
    )

    with pytest.raises(BeyondHorizon) as refused:
        await world.services.availability.availability("room-1", query)

    assert refused.value.details == [
        {"field": "start", "message": f"before {kept_from.isoformat()}"}
    ]
    just_kept = query.model_copy(update={"start": kept_from, "end": kept_from + timedelta(hours=2)})
    assert (await world.services.availability.availability("room-1", just_kept)).free_slots
    too_early = just_kept.model_copy(update={"start": kept_from - timedelta(minutes=30)})
    with pytest.raises(BeyondHorizon):
        await world.services.availability.availability("room-1", too_early)


async def test_an_outlook_move_beyond_the_duration_limit_is_restored(world: FakeWorld) -> None:
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    [(event_id, event)] = world.calendar.events[ROOM].items()
    # The Outlook user stretches the event over 40 days.
    world.calendar.events[ROOM][event_id] = event.model_copy(
        update={"end": event.start + timedelta(days=40), "change_key": "ck-stretched"}
    )

    await world.services.inbound.handle_change(
        EventChange(
            subscription_id="00000000-0000-0000-0000-000000000001",
            resource_id="room-1",
            change_type="updated",
            event_id=event_id,
            change_key="ck-stretched",
            received_at=NOW,
        )
    )

    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert (stored.value.start, stored.value.end, stored.value.status) == (
        T0,
        T0 + timedelta(hours=1),
        BookingStatus.CONFIRMED,
    )
    [restored] = world.calendar.events[ROOM].values()
    assert (restored.start, restored.end) == (T0, T0 + timedelta(hours=1))
    log = (await world.services.resources.sync_log("room-1", 10)).value
    assert any(
        entry.action == "outlook_move:conflict" and entry.outcome is SyncOutcome.FAILED
        for entry in log
    )
