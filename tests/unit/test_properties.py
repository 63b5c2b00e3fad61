"""Properties, checked on generated inputs (hypothesis): interval and slot arithmetic, time
zones, Outlook-change policies, and the slot ledger under concurrent claims."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.adapters.graph.mapping import event_from_draft, parse_graph_time
from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.bookings import Booking, BookingStatus, Customer, TimeRange
from shared.domain.claims import DayLedger
from shared.domain.errors import SlotUnavailable
from shared.domain.resources import CancelledEventMode, OnOutlookDelete, OnOutlookMove
from shared.services.availability import free_slots
from shared.services.policies import Action, on_delete, on_move
from shared.services.push import CANCELLED_PREFIX, render_draft
from shared.services.slots import SlotKeeper
from tests.builders import T0, resource
from tests.fakes import Clock, FakeBookings, FakeLedger

# Modest: the whole module runs in a few seconds. No example database: nothing is written
# to the work tree, and every run draws afresh.
PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Zones with DST, a half-hour and a 45-minute offset, the date line, and UTC.
ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Chatham",
)

# -- intervals and free slots --------------------------------------------------------------

BASE = datetime(2030, 3, 30, 0, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


@st.composite
def ranges(draw: st.DrawFn, lo: int = 0, hi: int = 2 * 24 * 60) -> TimeRange:
    """A range on a one-minute grid within [lo, hi] minutes after BASE."""
    start = draw(st.integers(lo, hi - 1))
    end = draw(st.integers(start + 1, hi))
    return TimeRange(start=at(start), end=at(end))


def gaps(window: TimeRange, busy: list[TimeRange]) -> list[tuple[datetime, datetime]]:
    """The maximal parts of the window that no busy interval covers (reference version)."""
    found: list[tuple[datetime, datetime]] = []
    cursor = window.start
    for interval in sorted(busy, key=lambda r: r.start):
        if interval.start > cursor:
            found.append((cursor, min(interval.start, window.end)))
        cursor = max(cursor, interval.end)
        if cursor >= window.end:
            break
    if cursor < window.end:
        found.append((cursor, window.end))
    return [(s, e) for s, e in found if s < e]


@PROPERTIES
@given(
    window=ranges(),
    busy=st.lists(ranges(lo=-120, hi=2 * 24 * 60 + 120), max_size=8),
    minutes=st.integers(5, 240),
)
def test_free_slots_fill_every_gap_back_to_back(
    window: TimeRange, busy: list[TimeRange], minutes: int
) -> None:
    duration = timedelta(minutes=minutes)

    slots = [TimeRange(start=s.start, end=s.end) for s in free_slots(window, busy, duration)]

    for slot in slots:
        assert slot.end - slot.start == duration
        assert window.start <= slot.start
        assert slot.end <= window.end
        assert not any(slot.overlaps(b) for b in busy), slot
    for earlier, later in itertools.pairwise(slots):
        assert earlier.end <= later.start
    # Per gap: back-to-back from its start, as many as fit; so a gap that can hold one
    # slot gets at least one.
    expected: list[TimeRange] = []
    for gap_start, gap_end in gaps(window, busy):
        cursor = gap_start
        while cursor + duration <= gap_end:
            expected.append(TimeRange(start=cursor, end=cursor + duration))
            cursor += duration
    assert slots == expected


@PROPERTIES
@given(
    window=ranges(),
    busy=st.lists(ranges(), max_size=4),
    minutes=st.integers(5, 60),
    limit=st.integers(1, 20),
)
def test_free_slots_limit_keeps_the_earliest(
    window: TimeRange, busy: list[TimeRange], minutes: int, limit: int
) -> None:
    duration = timedelta(minutes=minutes)

    limited = free_slots(window, busy, duration, limit=limit)

    assert limited == free_slots(window, busy, duration)[:limit]


@PROPERTIES
@given(first=ranges(), second=ranges())
def test_overlaps_is_symmetric_and_half_open(first: TimeRange, second: TimeRange) -> None:
    def minutes(r: TimeRange) -> set[int]:
        return set(
            range(
                int((r.start - BASE).total_seconds()) // 60,
                int((r.end - BASE).total_seconds()) // 60,
            )
        )

    assert first.overlaps(second) == second.overlaps(first)
    # Half-open: they overlap exactly when some minute [t, t+1) lies in both.
    assert first.overlaps(second) == bool(minutes(first) & minutes(second))
    assert first.overlaps(first)
    touching = TimeRange(start=first.end, end=first.end + timedelta(minutes=1))
    assert not first.overlaps(touching)


# -- time zones --------------------------------------------------------------------------------


class Stamped(DomainModel):
    at: UtcDatetime


aware_datetimes = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.timezones(),
)


@PROPERTIES
@given(moment=aware_datetimes)
def test_utc_datetime_keeps_the_instant_of_any_zone(moment: datetime) -> None:
    stamped = Stamped(at=moment)

    # Timestamps, not ==: Python never finds a wall time in a DST gap or fold equal to a
    # datetime of another zone (PEP 495), though both name the same instant.
    assert stamped.at.utcoffset() == timedelta(0)
    # The same instant, to the second (finer than Outlook keeps is dropped).
    assert stamped.at.timestamp() == moment.replace(microsecond=0).timestamp()
    # As the API and the queues carry it: ISO text with an offset, and back.
    assert Stamped.model_validate_json(stamped.model_dump_json()).at == stamped.at
    assert Stamped.model_validate({"at": moment.isoformat()}).at == stamped.at


@PROPERTIES
@given(moment=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)))
def test_utc_datetime_refuses_times_without_an_offset(moment: datetime) -> None:
    with pytest.raises(ValidationError):
        Stamped(at=moment)
    with pytest.raises(ValidationError):
        Stamped.model_validate({"at": moment.isoformat()})


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


def booking_at(start: datetime, minutes: int, **fields: Any) -> Booking:
    values: dict[str, Any] = {
        "booking_id": "bk-1",
        "resource_ids": ["room-1"],
        "start": start,
        "end": start + timedelta(minutes=minutes),
        "title": "Intro call",
        "customer": Customer(name="Ada", email="ada@example.com"),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Booking(**values)


@PROPERTIES
@given(
    start=instants,
    minutes=st.integers(1, 24 * 60),
    zone=st.sampled_from(ZONES),
    status=st.sampled_from(BookingStatus),
    mode=st.sampled_from(CancelledEventMode),
)
def test_render_draft_keeps_instants_and_shows_local_wall_time(
    start: datetime, minutes: int, zone: str, status: BookingStatus, mode: CancelledEventMode
) -> None:
    booking = booking_at(start, minutes, status=status)
    room = resource(time_zone=zone, cancelled_event_mode=mode, subject_template="{title} {start}")

    draft = render_draft(booking, room)

    if status is BookingStatus.CANCELLED and mode is CancelledEventMode.DELETE:
        assert draft is None
        return
    assert draft is not None
    assert (draft.start, draft.end) == (booking.start, booking.end)
    assert draft.time_zone == zone
    local = booking.start.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    prefix = CANCELLED_PREFIX if status is BookingStatus.CANCELLED else ""
    assert draft.subject == f"{prefix}Intro call {local}"


@functools.cache
def dst_changes(zone: str, year: int) -> tuple[datetime, ...]:
    """The (whole-hour, UTC) moments around which the zone's offset changes that year."""
    tz = ZoneInfo(zone)
    first = datetime(year, 1, 1, tzinfo=UTC)
    changes: list[datetime] = []
    offset = first.astimezone(tz).utcoffset()
    for hour in range(1, 366 * 24):
        moment = first + timedelta(hours=hour)
        if moment.astimezone(tz).utcoffset() != offset:
            changes.append(moment)
            offset = moment.astimezone(tz).utcoffset()
    return tuple(changes)


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a whole-second instant: anywhere, or within 3 hours of a DST change
    (where one wall time can name two instants)."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        return zone, draw(instants)
    changes = dst_changes(zone, draw(st.integers(2028, 2032)))
    base = draw(st.sampled_from(changes)) if changes else T0
    return zone, base + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)))


# 06:30 UTC on 3 Nov 2030 is 01:30 EST, the second 01:30 that night in New York.
@example(zoned=("America/New_York", datetime(2030, 11, 3, 6, 30, tzinfo=UTC)), minutes=30)
@PROPERTIES
@given(zoned=zoned_instants(), minutes=st.integers(1, 24 * 60))
def test_event_written_to_graph_reads_back_at_the_same_instants(
    zoned: tuple[str, datetime], minutes: int
) -> None:
    zone, start = zoned
    draft = render_draft(booking_at(start, minutes), resource(time_zone=zone))
    assert draft is not None

    event = event_from_draft(draft, transaction_id="tx")

    assert event.start is not None
    assert event.end is not None
    written = [
        {"dateTime": part.date_time, "timeZone": part.time_zone}
        for part in (event.start, event.end)
    ]
    # Graph reads a wall time in the zone it names, as parse_graph_time does.
    assert [parse_graph_time(part, "time") for part in written] == [draft.start, draft.end]


def test_sub_second_booking_times_are_kept_to_the_second_end_to_end() -> None:
    # Outlook keeps whole seconds; times are stored that way, so what Graph gets and what
    # it gives back are the booking's own times and never read as a move.
    start = datetime(2030, 1, 7, 9, 0, 0, 500_000, tzinfo=UTC)
    booking = booking_at(start, 60)
    assert booking.start == start.replace(microsecond=0)
    draft = render_draft(booking, resource())
    assert draft is not None

    event = event_from_draft(draft)

    assert event.start is not None
    written = {"dateTime": event.start.date_time, "timeZone": event.start.time_zone}
    assert parse_graph_time(written, "start") == booking.start


# -- policies ----------------------------------------------------------------------------------

LIVE = (BookingStatus.CONFIRMED, BookingStatus.RESCHEDULED)


@PROPERTIES
@given(
    delete_policy=st.sampled_from(OnOutlookDelete),
    move_policy=st.sampled_from(OnOutlookMove),
    is_primary=st.booleans(),
    status=st.sampled_from(BookingStatus),
    keeps_cancelled_event=st.booleans(),
)
def test_policies(
    delete_policy: OnOutlookDelete,
    move_policy: OnOutlookMove,
    is_primary: bool,
    status: BookingStatus,
    keeps_cancelled_event: bool,
) -> None:
    deleted = on_delete(
        delete_policy,
        is_primary=is_primary,
        status=status,
        keeps_cancelled_event=keeps_cancelled_event,
    )
    moved = on_move(move_policy, is_primary=is_primary, status=status)

    # An additional member's change never touches the booking.
    if not is_primary:
        assert deleted in (Action.IGNORE, Action.RESTORE_EVENT, Action.GONE_WITH_BOOKING)
        assert moved in (Action.IGNORE, Action.RESTORE_EVENT)
    # A cancelled booking's event was meant to go (or to stay as it is).
    if status is BookingStatus.CANCELLED:
        gone = Action.IGNORE if keeps_cancelled_event else Action.GONE_WITH_BOOKING
        assert (deleted, moved) == (gone, Action.IGNORE)
    else:
        assert deleted is not Action.GONE_WITH_BOOKING
    if status in LIVE:
        if delete_policy is OnOutlookDelete.RESTORE_EVENT:
            assert deleted is Action.RESTORE_EVENT
        if move_policy is OnOutlookMove.RESTORE_EVENT:
            assert moved is Action.RESTORE_EVENT
        if is_primary:
            assert deleted.value == delete_policy.value
            assert moved.value == move_policy.value
    # Only cancel_booking cancels; only reschedule_booking reschedules.
    assert (deleted is Action.CANCEL_BOOKING) <= (delete_policy is OnOutlookDelete.CANCEL_BOOKING)
    assert deleted is not Action.RESCHEDULE_BOOKING
    assert (moved is Action.RESCHEDULE_BOOKING) <= (move_policy is OnOutlookMove.RESCHEDULE_BOOKING)
    assert moved is not Action.CANCEL_BOOKING


# -- the slot ledger ---------------------------------------------------------------------------

RESOURCES = ("room-1", "room-2")
BOOKINGS = ("bk-1", "bk-2", "bk-3", "bk-4")


class NetworkLedger(FakeLedger):
    """Every read and write takes a moment, so concurrent claims interleave."""

    async def read_days(self, resource_id: str, start: datetime, end: datetime) -> Any:
        await asyncio.sleep(0)
        return await super().read_days(resource_id, start, end)

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        await asyncio.sleep(0)
        await super().write_days(rows)


@st.composite
def ledger_steps(draw: st.DrawFn) -> list[list[tuple[str, str, str, TimeRange]]]:
    """Steps of 1-3 concurrent claims or releases (kind, resource, booking, range); a
    release names a range its booking claimed before, most of the time."""
    claimed: list[tuple[str, str, TimeRange]] = []
    steps: list[list[tuple[str, str, str, TimeRange]]] = []
    for _ in range(draw(st.integers(1, 12))):
        step = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(("claim", "claim", "release", "cancel")))
            if kind != "claim" and claimed and draw(st.booleans()):
                resource_id, booking_id, time_range = draw(st.sampled_from(claimed))
            else:
                resource_id = draw(st.sampled_from(RESOURCES))
                booking_id = draw(st.sampled_from(BOOKINGS))
                # Up to 3 days, so that claims cross UTC midnight into other day rows.
                time_range = draw(ranges(hi=3 * 24 * 60))
            if kind == "claim":
                claimed.append((resource_id, booking_id, time_range))
            step.append((kind, resource_id, booking_id, time_range))
        steps.append(step)
    return steps


@PROPERTIES
@given(steps=ledger_steps())
def test_no_two_bookings_hold_overlapping_time(
    steps: list[list[tuple[str, str, str, TimeRange]]],
) -> None:
    # hypothesis drives a plain function; each example gets a loop of its own.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_run_ledger(steps))
    finally:
        loop.close()


async def _run_ledger(steps: list[list[tuple[str, str, str, TimeRange]]]) -> None:
    ledger = NetworkLedger()
    keeper = SlotKeeper(ledger, FakeBookings(), Clock(BASE), backoff_seconds=0)

    async def apply(kind: str, resource_id: str, booking_id: str, time_range: TimeRange) -> None:
        if kind == "claim":
            with contextlib.suppress(SlotUnavailable):
                await keeper.claim(resource_id, booking_id, time_range)
        else:
            keep_as = BookingStatus.CANCELLED if kind == "cancel" else None
            await keeper.release(resource_id, booking_id, time_range, keep_as=keep_as)

    for step in steps:
        await asyncio.gather(*(apply(*operation) for operation in step))
        for resource_id in RESOURCES:
            claims = await keeper.claims_between(resource_id, at(-60), at(4 * 24 * 60))
            holding = [c for c in claims if c.holds_time]
            for i, first in enumerate(holding):
                for second in holding[i + 1 :]:
                    if first.booking_id != second.booking_id:
                        assert not first.time_range.overlaps(second.time_range), (first, second)
