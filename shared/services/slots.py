"""Claiming time on a resource's slot ledger, safely under concurrency.

Of N concurrent overlapping claims exactly one commits: each attempt reads the day rows
it touches, refuses if a live claim overlaps, and writes all of them in one transaction
conditioned on the ETags it read. A writer that lost the race re-reads and decides again.

A claim is "live" when its booking holds that time. Claims younger than CLAIM_GRACE
count as live without a look-up (their booking may still be being written); older ones
are checked against the booking record, and stale ones (crash mid-create, a reschedule
that never finished, a release that failed) are pruned by the next writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from operator import attrgetter

from shared.domain.bookings import Booking, BookingStatus, TimeRange
from shared.domain.claims import Claim, DayLedger, claims_overlapping, days_touched
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    SlotUnavailable,
    StorageUnavailable,
)
from shared.ports import BookingRepository, SlotLedger, Stored

logger = logging.getLogger(__name__)

CLAIM_GRACE = timedelta(seconds=60)
# Reconciliation releases stale claims only this long after they were made: it is in no
# hurry, and a request stalled for minutes (storage retrying) keeps its claim.
RELEASE_AFTER = timedelta(minutes=10)
MAX_ATTEMPTS = 25
# A day's claims are one stored row, and Table Storage keeps at most 64 KiB a property:
# about 165 claims of the longest booking ids. A day keeps this many: cancelled claims
# (kept so that the day's bookings can be listed) make room, oldest first; a day this
# full of live bookings refuses one more (a booking every ten minutes, day and night).
MAX_CLAIMS_PER_DAY = 140


class SlotKeeper:
    """Claims and releases time for bookings on resources."""

    def __init__(
        self,
        ledger: SlotLedger,
        bookings: BookingRepository,
        clock: Callable[[], datetime],
        *,
        backoff_seconds: float = 0.02,
    ) -> None:
        self._ledger = ledger
        self._bookings = bookings
        self._clock = clock
        self._backoff = backoff_seconds

    async def claim(self, resource_id: str, booking_id: str, time_range: TimeRange) -> None:
        """Hold `time_range` on the resource for the booking.

        Idempotent for the same booking and range. Raises SlotUnavailable when another
        live booking overlaps it.
        """

        def change(rows: dict[str, DayLedger], now: datetime) -> None:
            claim = Claim(
                booking_id=booking_id,
                start=time_range.start,
                end=time_range.end,
                status=BookingStatus.CONFIRMED,
                claimed_at=now,
            )
            for day in days_touched(time_range.start, time_range.end):
                key = day.isoformat()
                row = rows.get(key) or DayLedger(resource_id=resource_id, day=day)
                kept = [c for c in row.claims if not _same(c, booking_id, time_range)]
                rows[key] = row.model_copy(update={"claims": [*kept, claim]})

        await self._write(resource_id, time_range, change, refuse_overlap=(booking_id, time_range))

    async def release(
        self,
        resource_id: str,
        booking_id: str,
        time_range: TimeRange,
        *,
        keep_as: BookingStatus | None = None,
    ) -> None:
        """Stop holding `time_range` for the booking. With `keep_as` (cancelled) the
        claim stays listed with that status but holds no time. Idempotent."""

        def change(rows: dict[str, DayLedger], now: datetime) -> None:
            for key, row in rows.items():
                claims: list[Claim] = []
                for claim in row.claims:
                    if _same(claim, booking_id, time_range):
                        if keep_as is None:
                            continue
                        claim = claim.model_copy(update={"status": keep_as})
                    claims.append(claim)
                rows[key] = row.model_copy(update={"claims": claims})

        await self._write(resource_id, time_range, change, refuse_overlap=None)

    async def release_stale(
        self, resource_id: str, claims: list[Claim], bookings: Mapping[str, Booking | None]
    ) -> int:
        """Release the claims older than RELEASE_AFTER whose booking, as the caller read it
        (after reading the claims), does not hold that time; claims of bookings not read
        are kept. A claim refreshed meanwhile (claimed again) differs and is kept too.
        Returns how many were released."""
        now = self._clock()
        stale = [
            claim
            for claim in claims
            if claim.holds_time
            and claim.booking_id in bookings
            and now - claim.claimed_at >= RELEASE_AFTER
            and not _booking_holds(bookings[claim.booking_id], claim)
        ]
        for claim in stale:

            def change(rows: dict[str, DayLedger], now: datetime, claim: Claim = claim) -> None:
                for key, row in rows.items():
                    rows[key] = row.model_copy(
                        update={"claims": [c for c in row.claims if c != claim]}
                    )

            await self._write(resource_id, claim.time_range, change, refuse_overlap=None)
            logger.info(
                "stale claim of %s on %s released (%s)",
                claim.booking_id,
                resource_id,
                claim.start.isoformat(),
            )
        return len(stale)

    async def claims_between(self, resource_id: str, start: datetime, end: datetime) -> list[Claim]:
        """Claims overlapping [start, end), each once, live or not."""
        rows = await self._ledger.read_days(resource_id, start, end)
        return claims_overlapping((row.value for row in rows), start, end)

    async def _write(
        self,
        resource_id: str,
        time_range: TimeRange,
        change: Callable[[dict[str, DayLedger], datetime], None],
        *,
        refuse_overlap: tuple[str, TimeRange] | None,
    ) -> None:
        for attempt in range(MAX_ATTEMPTS):
            now = self._clock()
            stored = await self._ledger.read_days(resource_id, time_range.start, time_range.end)
            etags = {row.value.day.isoformat(): row.etag for row in stored}
            rows = {row.value.day.isoformat(): row.value for row in stored}
            if refuse_overlap is not None:
                stale = await self._refuse_overlap(stored, *refuse_overlap, now=now)
                for key, row in rows.items():
                    rows[key] = row.model_copy(
                        update={
                            "claims": [
                                c for c in row.claims if (c.booking_id, c.start) not in stale
                            ]
                        }
                    )
            before = dict(rows)
            change(rows, now)
            for key, row in rows.items():
                if row != before.get(key):
                    rows[key] = _within_capacity(resource_id, row, adding=refuse_overlap)
            writes = [
                (row, etags.get(key))
                for key, row in rows.items()
                if row != before.get(key) or key not in etags
            ]
            writes = [(row, etag) for row, etag in writes if etag is not None or row.claims]
            if not writes:
                return
            try:
                await self._ledger.write_days(writes)
                return
            except (ConcurrencyConflict, AlreadyExists):
                # Someone else wrote one of these days: read again and decide again.
                await asyncio.sleep(random.uniform(0, self._backoff * (attempt + 1)))  # noqa: S311 - jitter
        logger.warning(
            "slot ledger of %s stayed contended for %d attempts", resource_id, MAX_ATTEMPTS
        )
        raise StorageUnavailable("the resource's calendar is busy; retry shortly")

    async def _refuse_overlap(
        self,
        stored: list[Stored[DayLedger]],
        booking_id: str,
        time_range: TimeRange,
        *,
        now: datetime,
    ) -> set[tuple[str, datetime]]:
        """Raise SlotUnavailable if a live claim of another booking overlaps; return the
        stale claims found on the way, for pruning."""
        stale: set[tuple[str, datetime]] = set()
        checked: dict[str, Booking | None] = {}
        for row in stored:
            for claim in row.value.claims:
                if claim.booking_id == booking_id or not claim.holds_time:
                    continue
                if not claim.time_range.overlaps(time_range):
                    continue
                if now - claim.claimed_at < CLAIM_GRACE:
                    raise SlotUnavailable("the requested time is already booked")
                if claim.booking_id not in checked:
                    found = await self._bookings.get(claim.booking_id)
                    checked[claim.booking_id] = found.value if found else None
                if _booking_holds(checked[claim.booking_id], claim):
                    raise SlotUnavailable("the requested time is already booked")
                stale.add((claim.booking_id, claim.start))
        return stale


def _within_capacity(
    resource_id: str, row: DayLedger, *, adding: tuple[str, TimeRange] | None
) -> DayLedger:
    """The row with at most MAX_CLAIMS_PER_DAY claims: the oldest cancelled ones dropped.
    Raises SlotUnavailable when `adding` (a claim) would make other bookings' live claims
    and its own more than that; a release is never refused. A booking's claim at its old
    time does not count against its new one (a reschedule releases it next), so the row
    may briefly keep one more."""
    excess = len(row.claims) - MAX_CLAIMS_PER_DAY
    if excess <= 0:
        return row
    cancelled = sorted((c for c in row.claims if not c.holds_time), key=attrgetter("claimed_at"))
    dropped = {(c.booking_id, c.start) for c in cancelled[:excess]}
    others = sum(
        1 for c in row.claims if c.holds_time and (adding is None or c.booking_id != adding[0])
    )
    if adding is not None and others >= MAX_CLAIMS_PER_DAY:
        raise SlotUnavailable(
            f"{resource_id} already holds {MAX_CLAIMS_PER_DAY} bookings on "
            f"{row.day.isoformat()} (UTC), the most one day keeps"
        )
    kept = [c for c in row.claims if (c.booking_id, c.start) not in dropped]
    return row.model_copy(update={"claims": kept})


def _same(claim: Claim, booking_id: str, time_range: TimeRange) -> bool:
    return (
        claim.booking_id == booking_id
        and claim.start == time_range.start
        and claim.end == time_range.end
    )


def _booking_holds(booking: Booking | None, claim: Claim) -> bool:
    return (
        booking is not None
        and booking.status.holds_time
        and booking.start == claim.start
        and booking.end == claim.end
    )
