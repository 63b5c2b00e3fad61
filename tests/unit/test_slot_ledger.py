"""The slot ledger's promises through SlotKeeper's public methods, at every boundary:
live claims refuse overlaps long after the claim grace window, stale ones are pruned,
a contended ledger gives up with StorageUnavailable instead of returning unclaimed."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from shared.domain.bookings import Booking, BookingStatus, TimeRange
from shared.domain.claims import DayLedger
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    SlotUnavailable,
    StorageUnavailable,
)
from shared.services.slots import CLAIM_GRACE, MAX_ATTEMPTS, RELEASE_AFTER, SlotKeeper
from tests.builders import T0, booking
from tests.fakes import Clock, FakeBookings, FakeLedger

ROOM = "room-1"
HOUR = TimeRange(start=T0, end=T0 + timedelta(hours=1))
HALF_PAST = TimeRange(start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=90))


def at(start_minutes: int, minutes: int = 60) -> TimeRange:
    start = T0 + timedelta(minutes=start_minutes)
    return TimeRange(start=start, end=start + timedelta(minutes=minutes))


class Keeper:
    def __init__(self, ledger: FakeLedger | None = None, backoff: float = 0) -> None:
        self.clock = Clock(T0 - timedelta(days=1))
        self.ledger = ledger or FakeLedger()
        self.bookings = FakeBookings()
        self.slots = SlotKeeper(self.ledger, self.bookings, self.clock, backoff_seconds=backoff)

    async def book(self, booking_id: str, time_range: TimeRange, **fields: object) -> Booking:
        """A booking record as the booking service writes it after its claim."""
        value = booking(booking_id, start=time_range.start, end=time_range.end, **fields)
        await self.bookings.add(value)
        return value

    async def claimed(self) -> list[tuple[str, int, BookingStatus]]:
        """(booking, start minute after T0, status) of every claim listed around T0."""
        claims = await self.slots.claims_between(
            ROOM, T0 - timedelta(days=1), T0 + timedelta(days=2)
        )
        return [(c.booking_id, int((c.start - T0).total_seconds() // 60), c.status) for c in claims]

    def rows(self) -> dict[str, list[str]]:
        return {
            day: [c.booking_id for c in stored.value.claims]
            for (_, day), stored in sorted(self.ledger.rows.items())
        }


@pytest.fixture
def keeper() -> Keeper:
    return Keeper()


CONFIRMED = BookingStatus.CONFIRMED


async def test_a_live_booking_refuses_an_overlap_long_after_the_grace_window(
    keeper: Keeper,
) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    await keeper.book("bk-1", HOUR)
    keeper.clock.now += timedelta(days=3)  # the normal case: booked days ago

    with pytest.raises(SlotUnavailable):
        await keeper.slots.claim(ROOM, "bk-2", HALF_PAST)

    assert await keeper.claimed() == [("bk-1", 0, CONFIRMED)]


async def test_a_young_claim_refuses_without_a_booking_record(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-in-flight", HOUR)
    keeper.clock.now += CLAIM_GRACE - timedelta(seconds=1)

    with pytest.raises(SlotUnavailable):
        await keeper.slots.claim(ROOM, "bk-2", HALF_PAST)


async def test_from_the_end_of_the_grace_window_a_claim_with_no_booking_is_pruned(
    keeper: Keeper,
) -> None:
    await keeper.slots.claim(ROOM, "bk-never-written", HOUR)
    keeper.clock.now += CLAIM_GRACE

    await keeper.slots.claim(ROOM, "bk-2", HALF_PAST)

    assert await keeper.claimed() == [("bk-2", 30, CONFIRMED)]


@pytest.mark.parametrize(
    ("why", "fields"),
    [
        ("cancelled", {"status": BookingStatus.CANCELLED}),
        ("moved to another start", {"start": T0 - timedelta(minutes=15)}),
        ("moved to another end", {"end": T0 + timedelta(minutes=45)}),
    ],
)
async def test_an_old_claim_its_booking_no_longer_holds_is_pruned(
    keeper: Keeper, why: str, fields: dict[str, object]
) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    values: dict[str, object] = {"start": HOUR.start, "end": HOUR.end, **fields}
    await keeper.bookings.add(booking("bk-1", **values))
    keeper.clock.now += CLAIM_GRACE + timedelta(seconds=1)

    await keeper.slots.claim(ROOM, "bk-2", HALF_PAST)

    assert await keeper.claimed() == [("bk-2", 30, CONFIRMED)], why


async def test_an_overnight_booking_holds_each_of_its_days(keeper: Keeper) -> None:
    overnight = TimeRange(start=T0 + timedelta(hours=14), end=T0 + timedelta(hours=18))
    await keeper.slots.claim(ROOM, "bk-night", overnight)
    await keeper.book("bk-night", overnight)
    keeper.clock.now += timedelta(hours=1)
    next_morning = TimeRange(start=T0 + timedelta(hours=16), end=T0 + timedelta(hours=17))

    with pytest.raises(SlotUnavailable):
        await keeper.slots.claim(ROOM, "bk-2", next_morning)

    # 09:00 + 14 h crosses midnight UTC: one row per day, the claim listed once.
    assert list(keeper.rows().values()) == [["bk-night"], ["bk-night"]]
    assert await keeper.claimed() == [("bk-night", 14 * 60, CONFIRMED)]


async def test_touching_claims_and_other_resources_do_not_conflict(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    await keeper.slots.claim(ROOM, "bk-2", at(60))
    await keeper.slots.claim(ROOM, "bk-0", at(-30, 30))
    await keeper.slots.claim("room-2", "bk-3", HOUR)

    assert await keeper.claimed() == [
        ("bk-0", -30, CONFIRMED),
        ("bk-1", 0, CONFIRMED),
        ("bk-2", 60, CONFIRMED),
    ]


async def test_claiming_again_is_idempotent_and_a_booking_never_conflicts_with_itself(
    keeper: Keeper,
) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    # A reschedule claims the new time while the old claim still stands.
    await keeper.slots.claim(ROOM, "bk-1", HALF_PAST)

    assert await keeper.claimed() == [("bk-1", 0, CONFIRMED), ("bk-1", 30, CONFIRMED)]


async def test_a_cancelled_claim_holds_no_time(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    await keeper.slots.release(ROOM, "bk-1", HOUR, keep_as=BookingStatus.CANCELLED)

    await keeper.slots.claim(ROOM, "bk-2", HALF_PAST)

    assert await keeper.claimed() == [
        ("bk-1", 0, BookingStatus.CANCELLED),
        ("bk-2", 30, CONFIRMED),
    ]


async def test_release_drops_only_that_booking_and_range(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    await keeper.slots.claim(ROOM, "bk-1", at(120))
    await keeper.slots.claim(ROOM, "bk-2", at(60))

    await keeper.slots.release(ROOM, "bk-1", HOUR)
    await keeper.slots.release(ROOM, "bk-1", HOUR)  # idempotent
    await keeper.slots.release(ROOM, "bk-2", at(60, 30))  # not its range: nothing

    assert await keeper.claimed() == [("bk-2", 60, CONFIRMED), ("bk-1", 120, CONFIRMED)]


async def test_releasing_what_was_never_claimed_writes_nothing(keeper: Keeper) -> None:
    await keeper.slots.release(ROOM, "bk-1", HOUR)
    await keeper.slots.release(ROOM, "bk-1", HOUR, keep_as=BookingStatus.CANCELLED)

    assert keeper.ledger.writes == 0
    assert keeper.ledger.rows == {}

    await keeper.slots.claim(ROOM, "bk-2", at(120))
    rows = dict(keeper.ledger.rows)
    await keeper.slots.release(ROOM, "bk-1", HOUR)  # a day row exists, without bk-1

    assert keeper.ledger.writes == 1
    assert keeper.ledger.rows == rows  # not even rewritten


async def test_release_stale_frees_old_claims_no_booking_holds_and_counts_them(
    keeper: Keeper,
) -> None:
    await keeper.slots.claim(ROOM, "bk-live", HOUR)
    await keeper.slots.claim(ROOM, "bk-gone", at(120))
    await keeper.slots.claim(ROOM, "bk-moved", at(240))
    await keeper.slots.claim(ROOM, "bk-unread", at(360))
    await keeper.slots.claim(ROOM, "bk-cancelled", at(480))
    await keeper.slots.release(ROOM, "bk-cancelled", at(480), keep_as=BookingStatus.CANCELLED)
    live = await keeper.book("bk-live", HOUR)
    moved = booking("bk-moved", start=T0 + timedelta(hours=10), end=T0 + timedelta(hours=11))
    claims = await keeper.slots.claims_between(ROOM, T0, T0 + timedelta(days=1))
    read = {"bk-live": live, "bk-gone": None, "bk-moved": moved, "bk-cancelled": None}

    keeper.clock.now += RELEASE_AFTER - timedelta(seconds=1)
    assert await keeper.slots.release_stale(ROOM, claims, read) == 0

    keeper.clock.now += timedelta(seconds=1)  # exactly RELEASE_AFTER old
    assert await keeper.slots.release_stale(ROOM, claims, read) == 2

    assert await keeper.claimed() == [
        ("bk-live", 0, CONFIRMED),
        ("bk-unread", 360, CONFIRMED),  # its booking was not read: kept
        ("bk-cancelled", 480, BookingStatus.CANCELLED),
    ]


async def test_release_stale_keeps_a_claim_refreshed_since_it_was_read(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-1", HOUR)
    claims = await keeper.slots.claims_between(ROOM, T0, T0 + timedelta(days=1))
    keeper.clock.now += RELEASE_AFTER
    await keeper.slots.claim(ROOM, "bk-1", HOUR)  # claimed again meanwhile

    await keeper.slots.release_stale(ROOM, claims, {"bk-1": None})

    assert await keeper.claimed() == [("bk-1", 0, CONFIRMED)]


async def test_claims_between_lists_overlapping_claims_once_by_start(keeper: Keeper) -> None:
    await keeper.slots.claim(ROOM, "bk-late", at(300))
    await keeper.slots.claim(ROOM, "bk-early", at(0))
    await keeper.slots.claim(ROOM, "bk-overnight", at(14 * 60, 4 * 60))

    window = await keeper.slots.claims_between(
        ROOM, T0 + timedelta(minutes=60), T0 + timedelta(hours=15)
    )

    assert [c.booking_id for c in window] == ["bk-late", "bk-overnight"]


class AlwaysConflicting(FakeLedger):
    """A ledger someone else always wrote first."""

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        self.writes += 1
        raise ConcurrencyConflict("changed")


async def test_a_ledger_that_always_conflicts_gives_up_holding_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keeper = Keeper(AlwaysConflicting(), backoff=0.5)
    jitter: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        jitter.append((low, high))
        return 0.0

    monkeypatch.setattr(random, "uniform", uniform)

    with pytest.raises(StorageUnavailable):
        await keeper.slots.claim(ROOM, "bk-1", HOUR)

    assert keeper.ledger.writes == MAX_ATTEMPTS
    # Each retry waits a random time up to a bound that grows with the attempt.
    assert jitter == [(0, 0.5 * n) for n in range(1, MAX_ATTEMPTS + 1)]
    assert keeper.ledger.rows == {}


class Racing(FakeLedger):
    """Before our first write lands, another writer claims with `racer`."""

    def __init__(self) -> None:
        super().__init__()
        self.racer: tuple[SlotKeeper, str, TimeRange] | None = None
        self.refused: list[type[Exception]] = []

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        if self.racer is not None:
            slots, booking_id, time_range = self.racer
            self.racer = None
            await slots.claim(ROOM, booking_id, time_range)
        try:
            await super().write_days(rows)
        except (ConcurrencyConflict, AlreadyExists) as refused:
            self.refused.append(type(refused))
            raise


@pytest.mark.parametrize(
    ("existing_row", "refusal"), [(False, AlreadyExists), (True, ConcurrencyConflict)]
)
async def test_a_writer_that_lost_the_race_reads_again_and_decides_again(
    existing_row: bool, refusal: type[Exception]
) -> None:
    ledger = Racing()
    keeper = Keeper(ledger)
    if existing_row:
        await keeper.slots.claim(ROOM, "bk-0", at(-120))
    other = SlotKeeper(ledger, keeper.bookings, keeper.clock)

    ledger.racer = (other, "bk-apart", at(180))
    await keeper.slots.claim(ROOM, "bk-1", HOUR)  # no overlap: the retry commits
    ledger.racer = (other, "bk-rival", at(240, 30))
    await keeper.slots.claim(ROOM, "bk-2", at(270))
    ledger.racer = (other, "bk-first", at(420))
    with pytest.raises(SlotUnavailable):  # the rival came first
        await keeper.slots.claim(ROOM, "bk-3", at(450))

    assert ledger.refused == [refusal, ConcurrencyConflict, ConcurrencyConflict]
    held = {b for b, _, _ in await keeper.claimed()}
    assert held == {"bk-apart", "bk-1", "bk-rival", "bk-2", "bk-first"} | (
        {"bk-0"} if existing_row else set()
    )
