"""The slot ledger: which bookings hold which time on a resource, bucketed by UTC day.

One ledger row per resource and day lists the claims touching that day. A booking is
claimed on a resource by rewriting every day row it touches in one transaction guarded
by their ETags, so of concurrent overlapping claims exactly one commits; the others
re-read, see the overlap, and are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from pydantic import Field

from shared.domain.base import BookingId, DomainModel, ResourceId, UtcDatetime
from shared.domain.bookings import BookingStatus, TimeRange


class Claim(DomainModel):
    booking_id: BookingId
    start: UtcDatetime
    end: UtcDatetime
    status: BookingStatus
    claimed_at: UtcDatetime

    @property
    def time_range(self) -> TimeRange:
        return TimeRange(start=self.start, end=self.end)

    @property
    def holds_time(self) -> bool:
        return self.status.holds_time


class DayLedger(DomainModel):
    resource_id: ResourceId
    day: date
    claims: list[Claim] = Field(default_factory=list)


def days_touched(start: datetime, end: datetime) -> list[date]:
    """UTC days that [start, end) touches (end exclusive)."""
    first = start.date()
    last = (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def claims_overlapping(rows: Iterable[DayLedger], start: datetime, end: datetime) -> list[Claim]:
    """The claims of `rows` overlapping [start, end), each once (a claim spanning days is
    in each day's row), by start; live or not."""
    window = TimeRange(start=start, end=end)
    seen: dict[tuple[str, datetime], Claim] = {}
    for row in rows:
        for claim in row.claims:
            if claim.time_range.overlaps(window):
                seen[(claim.booking_id, claim.start)] = claim
    return sorted(seen.values(), key=lambda c: c.start)
