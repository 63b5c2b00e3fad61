"""The live look at a slot before a booking is promised.

Graph documents no bound on how late an event's change notification may come, so the
unavailability mirror can lack busy time an Outlook user added a moment ago. Before a
booking from the API is confirmed (created or rescheduled), each of its resources that
pulls Outlook busy time and keeps `live_slot_check` on has the slot read from its live
calendar: one calendarView per resource, a panel's in one `$batch`. Busy time found
there that the mirror would block (the mirror's own rules: foreign events only,
`free` and cancelled meeting copies are free, `workingElsewhere` as the resource says)
refuses the booking with SlotUnavailable, and is handed to the inbound worker as a
change of that event, so the mirror learns it without waiting for Graph.

When the calendar cannot be read, the booking fails closed (CalendarUnavailable, 503):
a slot nobody could look at is not promised. A passing failure (Graph down, slow or
throttled) is LiveCalendarUnreadable, whose answer carries a Retry-After. Availability
listings never call Graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from shared.domain.bookings import TimeRange
from shared.domain.calendar import CalendarEvent, Unavailability
from shared.domain.errors import (
    CalendarUnavailable,
    DomainError,
    GraphError,
    GraphThrottled,
    GraphTransient,
    LiveCalendarUnreadable,
    SlotUnavailable,
)
from shared.domain.messages import (
    MAX_CHANGES_PER_MESSAGE,
    SYNC_INBOUND_QUEUE,
    EventChange,
    EventChanges,
)
from shared.domain.resources import Resource
from shared.ports import (
    BookingRepository,
    CalendarGateway,
    EventMappingRepository,
    MessageQueue,
)
from shared.services.availability import blocks_time
from shared.services.mirror import to_block

logger = logging.getLogger(__name__)

# All-day events float: Graph gives them midnight to midnight in the zone asked for
# (UTC), while they block the resource's own local days. A view this much wider than
# the slot on each side finds every all-day event whose local day touches it (no zone
# is more than 14 hours from UTC); what lies outside the slot is dropped afterwards.
ALL_DAY_REACH = timedelta(days=1)


class LiveSlotCheck:
    """Refuses a slot the live calendars show busy though the mirror does not."""

    def __init__(
        self,
        gateway: CalendarGateway,
        queue: MessageQueue,
        clock: Callable[[], datetime],
        *,
        bookings: BookingRepository | None = None,
        event_mappings: EventMappingRepository | None = None,
    ) -> None:
        self._gateway = gateway
        self._queue = queue
        self._clock = clock
        # Without them, every event carrying a booking id counts as ours, where it is.
        self._bookings = bookings
        self._mappings = event_mappings

    @staticmethod
    def applies_to(resource: Resource) -> bool:
        settings = resource.settings
        return settings.direction.pulls and settings.live_slot_check

    async def refuse_unseen_busy(
        self,
        resources: Sequence[Resource],
        time_range: TimeRange,
        mirrored: Mapping[str, Sequence[Unavailability]],
        *,
        booking_id: str | None = None,
    ) -> None:
        """Read the slot from each checked resource's live calendar (one `$batch`).

        `mirrored`: the mirror's blocks in the slot per resource id (already found
        free of blocking time). `booking_id`: the booking asking (a reschedule's own
        events never stand in its way). Raises SlotUnavailable when a live calendar shows busy
        time there (the events are queued for the inbound worker first), and
        CalendarUnavailable when Graph could not be read. Writes nothing else.
        """
        checked = [r for r in resources if self.applies_to(r)]
        if not checked:
            return
        try:
            views = await self._gateway.calendar_views(
                [r.settings.mailbox for r in checked],
                time_range.start - ALL_DAY_REACH,
                time_range.end + ALL_DAY_REACH,
            )
        except GraphError as exc:
            failed = [r for r in checked if r.settings.mailbox == exc.mailbox] or checked
            names = ", ".join(r.resource_id for r in failed)
            message = (
                f"the live calendar of {names} could not be read ({exc.code}); "
                "the slot is not promised unseen"
            )
            if isinstance(exc, GraphThrottled | GraphTransient):
                # Passes: the client may send the booking again shortly.
                wait = exc.retry_after_seconds if isinstance(exc, GraphThrottled) else None
                raise LiveCalendarUnreadable(message, retry_after_seconds=wait) from exc
            raise CalendarUnavailable(message) from exc
        unseen_on: list[str] = []
        moved_on: list[str] = []
        for resource in checked:
            events = [
                e
                for e in views.get(resource.settings.mailbox, [])
                if booking_id is None or e.booking_id != booking_id
            ]
            unseen = _busy_events(resource, events, time_range)
            stamped, ours_elsewhere = await self._stamped_busy(resource, events, time_range)
            unseen += stamped
            if unseen:
                unseen_on.append(resource.resource_id)
                await self._feed_mirror(resource, unseen, mirrored.get(resource.resource_id, ()))
            elif ours_elsewhere:
                moved_on.append(resource.resource_id)
        reasons = [
            f"{', '.join(ids)} is busy in Outlook at the requested time ({why})"
            for ids, why in (
                (unseen_on, "not yet notified"),
                (moved_on, "another booking's event, moved there in Outlook"),
            )
            if ids
        ]
        if reasons:
            raise SlotUnavailable("; ".join(reasons))

    async def _stamped_busy(
        self, resource: Resource, events: Sequence[CalendarEvent], time_range: TimeRange
    ) -> tuple[list[CalendarEvent], list[CalendarEvent]]:
        """The events carrying a booking id that block `time_range` as busy time: those
        whose id names no booking of the resource (an app's, an Outlook copy's: foreign,
        for the mirror to learn), and ours at times their booking does not hold: moved
        in Outlook, or repeated as a series, and left there by the policy. The calendar
        shows the resource busy there to everyone (a room that accepts invitations by
        itself declines another meeting), so a booking there would be a second event on
        top of it; the mirror keeps no event of ours, so they refuse and are not fed.
        Times a write of ours sent (a reschedule whose push is still to come) are the
        booking's to leave: the ledger decides about those. Almost always none: only an
        event in the slot costs a read (of its booking, then of its mapping)."""
        stamped = [
            e
            for e in events
            if e.booking_id is not None
            and _busy_events(resource, [e.model_copy(update={"booking_id": None})], time_range)
        ]
        if not stamped or self._bookings is None:
            return [], []
        foreign: list[CalendarEvent] = []
        found: list[CalendarEvent] = []
        for event in stamped:
            stored = await self._bookings.get(event.booking_id or "")
            if stored is None or resource.resource_id not in stored.value.resource_ids:
                foreign.append(event.model_copy(update={"booking_id": None}))
                continue
            booking = stored.value
            if not booking.status.holds_time or (event.start, event.end) == (
                booking.start,
                booking.end,
            ):
                continue  # a cancelled booking's, or at its booking's own time
            if self._mappings is not None:
                mapping = await self._mappings.get(resource.resource_id, booking.booking_id)
                if mapping is not None and mapping.value.written_by_us(event.start, event.end):
                    continue  # our write's times, about to be written over by the next
            found.append(event)
        return foreign, found

    async def _feed_mirror(
        self,
        resource: Resource,
        events: list[CalendarEvent],
        mirrored: Sequence[Unavailability],
    ) -> None:
        """Queue what the live view found as changes of those events: the inbound worker
        reads each one's current state and updates the mirror, exactly as for Graph's
        own (late) notification, so a concurrent notification cannot be undone here.
        Best effort: the notification itself, or reconcile, brings the same."""
        known = {block.event_id for block in mirrored}
        now = self._clock()
        changes = [
            EventChange(
                subscription_id=resource.subscription_id or "",
                resource_id=resource.resource_id,
                change_type=_change_type(event, known),
                event_id=event.event_id,
                received_at=now,
            )
            for event in events
        ]
        logger.info(
            "live slot check: %d busy events of %s not in the mirror yet",
            len(changes),
            resource.resource_id,
        )
        for start in range(0, len(changes), MAX_CHANGES_PER_MESSAGE):
            message = EventChanges(
                subscription_id=resource.subscription_id or "",
                resource_id=resource.resource_id,
                changes=changes[start : start + MAX_CHANGES_PER_MESSAGE],
            )
            try:
                await self._queue.send(SYNC_INBOUND_QUEUE, message)
            except DomainError as exc:
                logger.warning(
                    "live slot check: busy time of %s not handed to the mirror (%s)",
                    resource.resource_id,
                    exc.code,
                )
                return


def _busy_events(
    resource: Resource, events: Sequence[CalendarEvent], time_range: TimeRange
) -> list[CalendarEvent]:
    """The foreign events that block `time_range` by the mirror's rules."""
    settings = resource.settings
    found: list[CalendarEvent] = []
    for event in events:
        # Ours (any booking's) are bookings: the slot ledger decides about those.
        block = to_block(resource.resource_id, event, time_zone=settings.time_zone)
        if block is None or not blocks_time(block.show_as, settings.block_working_elsewhere):
            continue
        # Half-open, as the ledger: an event ending as the slot starts leaves it free.
        if block.start < time_range.end and time_range.start < block.end:
            found.append(event)
    return found


def _change_type(event: CalendarEvent, known: set[str]) -> Literal["created", "updated"]:
    return "updated" if event.event_id in known else "created"
