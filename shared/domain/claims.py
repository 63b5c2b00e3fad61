"""The slot ledger: which bookings hold which time on a resource, bucketed by UTC day.

One ledger row per resource and day lists the claims touching that day. A booking is
claimed on a resource by rewriting every day row it touches in one transaction guarded
by their ETags, so of concurrent overlapping claims exactly one commits; the others
re-read, see the overlap, and are refused.
"""

from __future__ import annotations

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
