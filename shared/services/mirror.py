"""The unavailability mirror: foreign Outlook events kept as busy blocks in Table Storage.

Rules (PRODUCT.md): events we wrote are not mirrored (they are bookings already): those
carrying our booking id where it names a booking of the resource; one whose id names none
(an Outlook copy of another calendar's event of ours, an app that wrote the property) is
busy time like any foreign event;
cancelled and `free` events are not mirrored; `tentative`, `busy`, `oof` block time;
`workingElsewhere` is stored and blocks only where the resource says so (decided at
read time, so changing that setting needs no re-pull); private and confidential events
keep no subject; a recurring series is stored as its expanded occurrences, grouped by
the series master so a change to the series replaces them all.

All-day events float: Graph gives them as midnight to midnight in whatever zone is asked
for (UTC here), so their dates are read from that and they block their whole local days
in the *resource's* time zone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.domain.calendar import (
    CalendarEvent,
    EventType,
    ShowAs,
    Unavailability,
    mirror_start,
)
from shared.domain.resources import Resource
from shared.ports import BookingRepository, CalendarGateway, UnavailabilityRepository

logger = logging.getLogger(__name__)

SUMMARY_LENGTH = 200
# Bookings read at once to tell which booking ids in a calendar name the resource's.
BOOKING_READS_IN_FLIGHT = 8


async def bookings_of(
    bookings: BookingRepository, resource_id: str, booking_ids: Iterable[str | None]
) -> set[str]:
    """Those of `booking_ids` that name a booking of the resource (one read each)."""
    gate = asyncio.Semaphore(BOOKING_READS_IN_FLIGHT)

    async def here(booking_id: str) -> bool:
        async with gate:
            stored = await bookings.get(booking_id)
        return stored is not None and resource_id in stored.value.resource_ids

    ids = sorted({i for i in booking_ids if i is not None})
    found = await asyncio.gather(*(here(i) for i in ids))
    return {i for i, yes in zip(ids, found, strict=True) if yes}


async def as_seen_by(
    bookings: BookingRepository, resource_id: str, events: list[CalendarEvent]
) -> list[CalendarEvent]:
    """`events` as the resource's calendar holds them: those whose booking id names no
    booking of the resource without it (busy time like any foreign event)."""
    here = await bookings_of(bookings, resource_id, (e.booking_id for e in events))
    return [
        e
        if e.booking_id is None or e.booking_id in here
        else e.model_copy(update={"booking_id": None})
        for e in events
    ]


async def ours_in(
    bookings: BookingRepository, resource_id: str, events: list[CalendarEvent]
) -> list[CalendarEvent]:
    """Those of `events` (carrying a booking id) that are ours in the resource's calendar:
    their id names a booking of the resource. What a resync or a disconnect removes."""
    here = await bookings_of(bookings, resource_id, (e.booking_id for e in events))
    return [e for e in events if e.booking_id in here]


def mirror_group(event: CalendarEvent) -> str:
    """The id under which an event's blocks are stored (the series master's, if any)."""
    return event.series_master_id or event.event_id


def local_days(start: datetime, end: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """An all-day event read in UTC (midnight to midnight of its dates) as the same dates'
    midnights in `time_zone`, in UTC."""
    zone = ZoneInfo(time_zone)

    def midnight(moment: datetime) -> datetime:
        day = moment.astimezone(UTC).date()
        return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)

    return midnight(start), midnight(end)


def to_block(resource_id: str, event: CalendarEvent, *, time_zone: str) -> Unavailability | None:
    """The busy block of one (expanded) event, or None when it does not take time. An
    all-day event covers its whole days in `time_zone` (the resource's)."""
    if event.booking_id is not None or event.is_cancelled:
        return None
    if event.show_as is ShowAs.FREE or event.type is EventType.SERIES_MASTER:
        return None
    private = event.sensitivity.hides_details
    summary = None if private else (event.subject or "")[:SUMMARY_LENGTH] or None
    start, end = event.start, event.end
    if event.is_all_day:
        start, end = local_days(start, end, time_zone)
    return Unavailability(
        resource_id=resource_id,
        event_id=event.event_id,
        series_master_id=event.series_master_id,
        start=start,
        end=end,
        show_as=event.show_as,
        is_all_day=event.is_all_day,
        private=private,
        summary=summary,
        change_key=None if private else event.change_key,
    )


def group_blocks(
    resource_id: str, events: Iterable[CalendarEvent], *, time_zone: str
) -> dict[str, list[Unavailability]]:
    groups: dict[str, list[Unavailability]] = defaultdict(list)
    for event in events:
        block = to_block(resource_id, event, time_zone=time_zone)
        if block is not None:
            groups[mirror_group(event)].append(block)
    return groups


# An all-day event's block starts at midnight in the resource's zone, up to 14 hours off
# the UTC midnight Graph gives it as: a slice reads this much further on either side, so
# that it sees every event whose block starts inside it.
_SLICE_MARGIN = timedelta(days=1)


def mirror_window(now: datetime, days_back: int, days_ahead: int) -> tuple[datetime, datetime]:
    start = mirror_start(now, days_back)
    return start, start + timedelta(days=days_back + days_ahead + 1)


class MirrorService:
    def __init__(
        self,
        gateway: CalendarGateway,
        unavailability: UnavailabilityRepository,
        clock: Callable[[], datetime],
        *,
        days_back: int,
        days_ahead: int,
        bookings: BookingRepository | None = None,
    ) -> None:
        self._gateway = gateway
        self._unavailability = unavailability
        self._clock = clock
        # Without it, every event carrying a booking id counts as ours.
        self._bookings = bookings
        self._days_back = days_back
        self._days_ahead = days_ahead

    def window(self) -> tuple[datetime, datetime]:
        return mirror_window(self._clock(), self._days_back, self._days_ahead)

    async def pull(self, resource: Resource) -> int:
        """Replace the resource's mirror with the calendar's current busy time over the
        mirror window (calendarView expands series). Returns the number of blocks.
        Raises the Graph* errors of the gateway."""
        start, end = self.window()
        events = await self._gateway.calendar_view(resource.settings.mailbox, start, end)
        events = await self._seen_by(resource.resource_id, events)
        return await self.replace_all(
            resource.resource_id, events, time_zone=resource.settings.time_zone
        )

    async def pull_slice(
        self,
        resource: Resource,
        window: tuple[datetime, datetime],
        slice_start: datetime,
        length: timedelta,
    ) -> tuple[datetime | None, int]:
        """Pull one slice of the mirror window into the mirror: afterwards the blocks that
        start in the slice are exactly the calendar's (the first slice also owns every
        block before it, the last every block after it, so slices that follow on from
        one another replace the whole mirror as `pull` does). Returns where the next
        slice starts (None after the last) and how many events Graph gave. Idempotent.
        Raises the Graph* errors of the gateway."""
        window_start, window_end = window
        slice_end = slice_start + length
        last = slice_end >= window_end
        owned_start = None if slice_start <= window_start else slice_start
        owned_end = None if last else slice_end
        read_start = max(window_start, slice_start - _SLICE_MARGIN)
        read_end = window_end if last else min(window_end, slice_end + _SLICE_MARGIN)
        events = await self._gateway.calendar_view(resource.settings.mailbox, read_start, read_end)
        events = await self._seen_by(resource.resource_id, events)
        groups = group_blocks(resource.resource_id, events, time_zone=resource.settings.time_zone)
        blocks = [
            block
            for group in groups.values()
            for block in group
            if (owned_start is None or block.start >= owned_start)
            and (owned_end is None or block.start < owned_end)
        ]
        await self._unavailability.replace_starting_between(
            resource.resource_id, owned_start, owned_end, blocks
        )
        logger.info(
            "mirror of %s from %s: %d busy blocks", resource.resource_id, slice_start, len(blocks)
        )
        return (None if last else slice_end), len(events)

    async def _seen_by(self, resource_id: str, events: list[CalendarEvent]) -> list[CalendarEvent]:
        if self._bookings is None:
            return events
        return await as_seen_by(self._bookings, resource_id, events)

    async def replace_all(
        self, resource_id: str, events: Iterable[CalendarEvent], *, time_zone: str
    ) -> int:
        """Make the resource's mirror exactly the busy blocks of `events` (every event of
        the mirror window; all-day ones in `time_zone`, the resource's): blocks of events
        not among them go. Returns the number of blocks. Idempotent."""
        groups = group_blocks(resource_id, events, time_zone=time_zone)
        blocks = [block for group in groups.values() for block in group]
        await self._unavailability.replace_all(resource_id, blocks)
        logger.info("mirror of %s: %d busy blocks", resource_id, len(blocks))
        return len(blocks)
