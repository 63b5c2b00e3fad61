"""Availability of a resource: busy time from the mirror and bookings, and free slots.

Served entirely from Table Storage (the unavailability mirror and the slot ledger); no
Graph call happens here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import Annotated, Protocol

from pydantic import Field, with_config

from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.bookings import BookingWindow, TimeRange
from shared.domain.calendar import BusyTime, ShowAs, Unavailability
from shared.domain.claims import claims_overlapping
from shared.domain.errors import CalendarUnavailable, InvalidInput, NotFound
from shared.domain.resources import ConnectionState, Resource
from shared.ports import DayViews, ResourceRepository, UnavailabilityRepository

MAX_WINDOW = timedelta(days=62)
MAX_SLOTS = 2000


class BusySource(StrEnum):
    BOOKING = "booking"
    CALENDAR = "calendar"


# BusyInterval and FreeSlot are answer-only values, built here from times already valid
# (UTC, whole seconds, from validated models and a whole number of minutes) and never
# parsed: frozen dataclasses that pydantic serializes and describes (OpenAPI) exactly as
# it would the same fields of a DomainModel, with DomainModel's configuration. A 30-day
# window holds well over a thousand of them; a model each, even by model_construct, was
# most of the request's CPU.


@with_config(DomainModel.model_config)
@dataclass(frozen=True, slots=True)
class BusyInterval:
    start: UtcDatetime
    end: UtcDatetime
    source: BusySource
    show_as: ShowAs | None = None
    booking_id: str | None = None


@with_config(DomainModel.model_config)
@dataclass(frozen=True, slots=True)
class FreeSlot:
    start: UtcDatetime
    end: UtcDatetime


class Availability(DomainModel):
    resource_id: str
    start: UtcDatetime
    end: UtcDatetime
    duration_minutes: int
    busy: list[BusyInterval]
    free_slots: list[FreeSlot]


class AvailabilityQuery(DomainModel):
    """The query string of GET /api/resources/{id}/availability."""

    start: UtcDatetime
    end: UtcDatetime
    duration_minutes: Annotated[int, Field(ge=5, le=24 * 60)] = 30


def ensure_calendar_trusted(resource: Resource, now: datetime, freshness_minutes: int) -> None:
    """Fail closed: raise CalendarUnavailable (with the reason) while we cannot see the
    resource's calendar well enough to promise its time."""
    status = resource.status
    if not resource.settings.active:
        raise CalendarUnavailable(f"resource {resource.resource_id} is not active")
    if status.state.is_ending:
        raise CalendarUnavailable(f"resource {resource.resource_id} is {status.state}")
    if status.state is ConnectionState.CONNECTING:
        raise CalendarUnavailable(f"resource {resource.resource_id} is still connecting")
    if status.state is ConnectionState.FAILING:
        raise CalendarUnavailable(
            f"calendar of {resource.resource_id} is failing: {status.reason or 'unknown reason'}"
        )
    if resource.settings.direction.pulls and not resource.mirror_is_fresh(now, freshness_minutes):
        raise CalendarUnavailable(
            f"busy time of {resource.resource_id} is older than {freshness_minutes} minutes"
        )


async def mirrored_between(
    unavailability: UnavailabilityRepository, resource: Resource, start: datetime, end: datetime
) -> list[Unavailability]:
    """The mirror's blocks overlapping [start, end): from the day rows, or, until a full
    round has built them for this resource (a legacy layout), from the block rows."""
    if resource.mirror_layout_current:
        return await unavailability.list_between(resource.resource_id, start, end)
    return await unavailability.scan_between(resource.resource_id, start, end)


def blocks_time(show_as: ShowAs, block_working_elsewhere: bool) -> bool:
    """Whether an Outlook event shown as `show_as` makes the resource unavailable."""
    if show_as is ShowAs.WORKING_ELSEWHERE:
        return block_working_elsewhere
    return show_as is not ShowAs.FREE


class Interval(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...


def free_slots(
    window: TimeRange, busy: Iterable[Interval], duration: timedelta, limit: int = MAX_SLOTS
) -> list[FreeSlot]:
    """Back-to-back slots of `duration` in every gap of `window` not covered by `busy`.

    Intervals are half-open, so a slot may start exactly when a busy interval ends and
    end exactly when the next begins. A zero-length interval (an Outlook event that ends
    as it starts) covers no time but splits its gap: no slot contains it, as no booking
    over it is accepted.
    """
    slots: list[FreeSlot] = []
    cursor, window_end = window.start, window.end
    # One sweep by start; the free time before an interval is filled only when a slot
    # fits in it (most gaps between a busy calendar's events hold none).
    for interval in sorted(busy, key=attrgetter("start")):
        if interval.end <= cursor:
            continue
        if interval.start - cursor >= duration:
            _fill(slots, cursor, min(interval.start, window_end), duration, limit)
            if len(slots) >= limit:
                return slots
        cursor = interval.end
        if cursor >= window_end:
            return slots
    _fill(slots, cursor, window_end, duration, limit)
    return slots


def _fill(
    slots: list[FreeSlot], start: datetime, end: datetime, duration: timedelta, limit: int
) -> None:
    """Append the back-to-back slots from `start` that end by `end`, up to `limit` in all."""
    count = max(0, min((end - start) // duration, limit - len(slots)))
    starts = [start + duration * index for index in range(count + 1)]
    slots.extend(map(FreeSlot, starts, starts[1:]))


class AvailabilityService:
    def __init__(
        self,
        resources: ResourceRepository,
        unavailability: UnavailabilityRepository,
        days: DayViews,
        clock: Callable[[], datetime],
        *,
        freshness_minutes: int,
        window: BookingWindow,
    ) -> None:
        """`window`: availability is asked of the time that may be booked, up to its
        horizon (the mirror knows no busy time beyond)."""
        self._window = window
        self._resources = resources
        self._unavailability = unavailability
        self._days = days
        self._clock = clock
        self._freshness = freshness_minutes

    async def availability(self, resource_id: str, query: AvailabilityQuery) -> Availability:
        """Busy intervals (no private details) and free slots of the duration.

        Raises NotFound, InvalidInput (window; BeyondHorizon before the busy time the
        mirror keeps or past its horizon), CalendarUnavailable (fail closed).
        """
        window = _window(query)
        self._window.check_known(window, self._clock())
        # The two reads at once (the resource; its days, busy time and claims in one
        # range): the resource decides afterwards what the days count.
        stored, days = await asyncio.gather(
            self._resources.get(resource_id),
            self._days.day_view(resource_id, window.start, window.end),
        )
        if stored is None:
            raise NotFound(f"resource {resource_id} does not exist")
        resource = stored.value
        ensure_calendar_trusted(resource, self._clock(), self._freshness)
        busy: list[BusyInterval] = []
        blocks = days.busy
        if resource.settings.direction.pulls:
            if not resource.mirror_layout_current:
                scanned = await self._unavailability.scan_between(
                    resource_id, window.start, window.end
                )
                blocks = [BusyTime(b.start, b.end, b.show_as) for b in scanned]
            blocking = {
                show_as
                for show_as in ShowAs
                if blocks_time(show_as, resource.settings.block_working_elsewhere)
            }
            calendar = BusySource.CALENDAR
            busy = [
                BusyInterval(start, end, calendar, show_as)
                for start, end, show_as in blocks
                if show_as in blocking
            ]
        busy.extend(
            BusyInterval(claim.start, claim.end, BusySource.BOOKING, booking_id=claim.booking_id)
            for claim in claims_overlapping(days.ledger, window.start, window.end)
            if claim.holds_time
        )
        busy.sort(key=attrgetter("start", "end"))
        slots = free_slots(window, busy, timedelta(minutes=query.duration_minutes))
        return Availability(
            resource_id=resource_id,
            start=window.start,
            end=window.end,
            duration_minutes=query.duration_minutes,
            busy=busy,
            free_slots=slots,
        )


def _window(query: AvailabilityQuery) -> TimeRange:
    if query.end <= query.start:
        raise InvalidInput(
            "end must be after start", details=[{"field": "end", "message": "must be after start"}]
        )
    if query.end - query.start > MAX_WINDOW:
        raise InvalidInput(
            f"the window may span at most {MAX_WINDOW.days} days",
            details=[{"field": "end", "message": f"at most {MAX_WINDOW.days} days after start"}],
        )
    return TimeRange(start=query.start, end=query.end)
