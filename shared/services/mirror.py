"""The unavailability mirror: foreign Outlook events kept as busy blocks in Table Storage.

Rules (PRODUCT.md): events we wrote are not mirrored (they are bookings already);
cancelled and `free` events are not mirrored; `tentative`, `busy`, `oof` block time;
`workingElsewhere` is stored and blocks only where the resource says so (decided at
read time, so changing that setting needs no re-pull); private and confidential events
keep no subject; a recurring series is stored as its expanded occurrences, grouped by
the series master so a change to the series replaces them all.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from shared.domain.calendar import CalendarEvent, EventType, ShowAs, Unavailability
from shared.domain.resources import Resource
from shared.ports import CalendarGateway, UnavailabilityRepository

logger = logging.getLogger(__name__)

SUMMARY_LENGTH = 200


def mirror_group(event: CalendarEvent) -> str:
    """The id under which an event's blocks are stored (the series master's, if any)."""
    return event.series_master_id or event.event_id


def to_block(resource_id: str, event: CalendarEvent) -> Unavailability | None:
    """The busy block of one (expanded) event, or None when it does not take time."""
    if event.booking_id is not None or event.is_cancelled:
        return None
    if event.show_as is ShowAs.FREE or event.type is EventType.SERIES_MASTER:
        return None
    private = event.sensitivity.hides_details
    summary = None if private else (event.subject or "")[:SUMMARY_LENGTH] or None
    return Unavailability(
        resource_id=resource_id,
        event_id=event.event_id,
        series_master_id=event.series_master_id,
        start=event.start,
        end=event.end,
        show_as=event.show_as,
        is_all_day=event.is_all_day,
        private=private,
        summary=summary,
        change_key=None if private else event.change_key,
    )


def group_blocks(
    resource_id: str, events: Iterable[CalendarEvent]
) -> dict[str, list[Unavailability]]:
    groups: dict[str, list[Unavailability]] = defaultdict(list)
    for event in events:
        block = to_block(resource_id, event)
        if block is not None:
            groups[mirror_group(event)].append(block)
    return groups


def mirror_window(now: datetime, days_back: int, days_ahead: int) -> tuple[datetime, datetime]:
    start = (now - timedelta(days=days_back)).replace(hour=0, minute=0, second=0, microsecond=0)
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
    ) -> None:
        self._gateway = gateway
        self._unavailability = unavailability
        self._clock = clock
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
        return await self.replace_all(resource.resource_id, events)

    async def replace_all(self, resource_id: str, events: Iterable[CalendarEvent]) -> int:
        """Make the resource's mirror exactly the busy blocks of `events` (every event of
        the mirror window): blocks of events not among them go. Returns the number of
        blocks. Idempotent."""
        blocks = [block for group in group_blocks(resource_id, events).values() for block in group]
        await self._unavailability.replace_all(resource_id, blocks)
        logger.info("mirror of %s: %d busy blocks", resource_id, len(blocks))
        return len(blocks)
