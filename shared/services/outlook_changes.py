"""Apply what the Outlook user did to an event we wrote, by the resource's policy.

Used by the inbound worker (one notification) and by reconciliation (drift found by
comparing mappings with the calendar). Both pass the event's *current* state as Graph
reports it (None when it is gone), never the notification's claim, so duplicates and
out-of-order notifications converge on the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from shared.domain.bookings import Booking, TimeRange
from shared.domain.calendar import CalendarEvent, EventMapping, event_to_keep
from shared.domain.errors import BookingTimeRefused, CalendarUnavailable, SlotUnavailable
from shared.domain.messages import (
    BookingEvent,
    BookingEventType,
    EventSource,
    PushBooking,
)
from shared.domain.resources import CancelledEventMode, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    CalendarGateway,
    EventMappingRepository,
    MessageQueue,
    Stored,
    SyncLog,
)
from shared.services.bookings import BookingService
from shared.services.events import EventRouting
from shared.services.mapping_updates import update_mapping
from shared.services.policies import Action, on_delete, on_move
from shared.services.push import PushService

logger = logging.getLogger(__name__)


class OutlookChangeApplier:
    def __init__(
        self,
        *,
        bookings: BookingRepository,
        booking_service: BookingService,
        event_mappings: EventMappingRepository,
        checks: CalendarChecks,
        push: PushService,
        queue: MessageQueue,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
        routing: EventRouting,
        gateway: CalendarGateway,
    ) -> None:
        self._gateway = gateway
        self._routing = routing
        self._checks = checks
        self._bookings = bookings
        self._booking_service = booking_service
        self._mappings = event_mappings
        self._push = push
        self._queue = queue
        self._sync_log = sync_log
        self._clock = clock

    async def apply(
        self,
        resource: Resource,
        mapping: Stored[EventMapping],
        event: CalendarEvent | None,
        direction: SyncDirection,
        *,
        read_back: bool = True,
    ) -> Action | None:
        """Decide and act; returns the action taken (None: nothing changed, e.g. an
        echo of our own write). Idempotent. Raises on transient failures.

        `event` was read after `mapping`; a push may have written the event and recorded
        it in between. So the decision is made on the mapping as it is now, read after
        the event: every write of ours is recorded (in flight) before it is sent, so the
        mapping read now knows every write the event can show.

        `read_back` False: `event` is None because a `deleted` notification said so, not
        because a read found it gone."""
        fresh = await self._mappings.get(mapping.value.resource_id, mapping.value.booking_id)
        if fresh is None or fresh.value.event_id != mapping.value.event_id:
            return None  # the event was replaced or removed by us meanwhile
        mapping = fresh
        current = mapping.value
        if current.event_id is None or current.detached:
            return None
        if event is not None and current.knows_change_key(event.change_key):
            # Our own write, or a change already handled; or the event as an earlier
            # write of ours left it, read before our latest one landed.
            return None
        stored_booking = await self._bookings.get(current.booking_id)
        if stored_booking is None:
            return None
        booking = stored_booking.value
        if resource.resource_id not in booking.resource_ids:
            return None  # taken off the booking: its event is ours to remove, not a change
        settings = resource.settings
        is_primary = booking.primary_resource_id == resource.resource_id
        if event is None:
            if booking.status.holds_time:
                survivor = await self._survivor(resource, current)
                if survivor is not None:
                    await self._keep_duplicate(resource, mapping, booking, survivor, direction)
                    return Action.KEEP_DUPLICATE
            action = on_delete(
                settings.on_outlook_delete,
                is_primary=is_primary,
                status=booking.status,
                keeps_cancelled_event=settings.cancelled_event_mode is CancelledEventMode.PREFIX,
            )
            await self._on_deleted(resource, mapping, booking, action, direction, read_back)
            return action
        if current.written_by_us(event.start, event.end):
            # At times we wrote (the answer to a write may still be on its way, so its
            # notification can come first), or another kind of edit (subject, body):
            # remember its changeKey, change nothing.
            await self._remember_change_key(mapping, event.change_key)
            return None
        action = on_move(settings.on_outlook_move, is_primary=is_primary, status=booking.status)
        await self._on_moved(resource, mapping, booking, event, action, direction)
        return action

    async def _on_deleted(
        self,
        resource: Resource,
        mapping: Stored[EventMapping],
        booking: Booking,
        action: Action,
        direction: SyncDirection,
        read_back: bool,
    ) -> None:
        current = mapping.value
        if action is Action.CANCEL_BOOKING:
            # Cancel first: if anything after fails, the retry finds the booking
            # cancelled and only tidies the mapping.
            await self._booking_service.cancel(booking.booking_id, EventSource.OUTLOOK)
            if read_back:
                await self._forget_event(current)
            # Else the mapping keeps the event for the cancel's push: its delete costs a
            # 404 when the event is gone, and removes it when a late or stale `deleted`
            # came for an event still there, so no event of ours outlives its booking.
        elif action is Action.RESTORE_EVENT:
            await self._restore(mapping, booking, recreate=True)
        elif action is Action.GONE_WITH_BOOKING:
            await self._record_removed(current, booking)
            await self._log(
                resource, booking, current.event_id, "event_gone:booking_cancelled", direction
            )
            return
        else:
            await self._detach(current)
        await self._log(
            resource, booking, current.event_id, f"outlook_delete:{action.value}", direction
        )

    async def _survivor(self, resource: Resource, current: EventMapping) -> CalendarEvent | None:
        """Another event of ours for the booking still in the calendar, if any (one
        listing of the calendar). The deleted one itself never counts, even if listed: a
        `deleted` notification or a delta `@removed` means deleted."""
        found = await self._gateway.find_events_for_booking(
            resource.settings.mailbox, current.booking_id
        )
        others = [e for e in found if e.event_id != current.event_id]
        return event_to_keep(others) if others else None

    async def _keep_duplicate(
        self,
        resource: Resource,
        mapping: Stored[EventMapping],
        booking: Booking,
        survivor: CalendarEvent,
        direction: SyncDirection,
    ) -> None:
        """The booking keeps its place in the calendar through `survivor`, as a full
        reconcile round's de-duplication would keep it; at other times than the
        booking's, it is written as the booking says."""
        current = mapping.value
        in_step = (survivor.start, survivor.end) == (booking.start, booking.end)

        def kept(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id:
                return None  # replaced or removed meanwhile: no longer that event's mapping
            return latest.model_copy(
                update={
                    "event_id": survivor.event_id,
                    "change_key": survivor.change_key,
                    "earlier_change_keys": [],
                    "pushed_start": survivor.start,
                    "pushed_end": survivor.end,
                    "booking_version": booking.version if in_step else 0,
                    "pending_transaction_id": None,
                    "last_error": None,
                    "detached": False,
                    "synced_at": self._clock(),
                }
            )

        await update_mapping(
            self._mappings, current.resource_id, current.booking_id, kept, first=mapping
        )
        if not in_step:
            await self._push.push(
                PushBooking(
                    booking_id=booking.booking_id,
                    booking_version=booking.version,
                    include_past=True,
                )
            )
        await self._log(
            resource,
            booking,
            current.event_id,
            f"outlook_delete:{Action.KEEP_DUPLICATE.value}",
            direction,
        )

    async def _detach(self, current: EventMapping) -> None:
        """The event is gone and the policy leaves it gone: the mapping stops pointing at
        it and is not pushed again, and a failed write to it no longer stands (a cancel's
        delete that met an outage: the event it was to remove is gone). A push may record
        an attempt on the same mapping meanwhile, hence a re-read on a conflict."""

        def detached(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id:
                return None  # replaced or removed meanwhile: no longer that event's mapping
            return latest.model_copy(
                update={"event_id": None, "change_key": None, "detached": True, "last_error": None}
            )

        await update_mapping(self._mappings, current.resource_id, current.booking_id, detached)

    async def _record_removed(self, current: EventMapping, booking: Booking) -> None:
        """The cancelled booking's event is gone: recorded as its cancel's delete would
        record it (the booking's calendar is in step), so the cancel's push, still to
        come or retried after a lost answer, has nothing left to do."""
        now = self._clock()

        def removed(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id:
                return None  # the push already recorded the event's removal
            return latest.model_copy(
                update={
                    "event_id": None,
                    "change_key": None,
                    "last_error": None,
                    "booking_version": max(latest.booking_version, booking.version),
                    "synced_at": now,
                }
            )

        await update_mapping(self._mappings, current.resource_id, current.booking_id, removed)

    async def _forget_event(self, current: EventMapping) -> None:
        """The event is gone: the mapping stops pointing at it. The cancel's own push
        may be writing the same mapping meanwhile, hence a re-read on a conflict."""

        def forgotten(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id:
                return None  # the push already recorded the event's removal
            return latest.model_copy(
                update={"event_id": None, "change_key": None, "last_error": None}
            )

        await update_mapping(self._mappings, current.resource_id, current.booking_id, forgotten)

    async def _on_moved(
        self,
        resource: Resource,
        mapping: Stored[EventMapping],
        booking: Booking,
        event: CalendarEvent,
        action: Action,
        direction: SyncDirection,
    ) -> None:
        current = mapping.value
        if action is Action.RESCHEDULE_BOOKING:
            try:
                await self._booking_service.reschedule(
                    booking.booking_id,
                    TimeRange(start=event.start, end=event.end),
                    EventSource.OUTLOOK,
                    origin=resource.resource_id,
                )
            except CalendarUnavailable as unseen:
                await self._defer(resource, booking, current.event_id, direction, unseen)
                raise
            except (SlotUnavailable, BookingTimeRefused) as conflict:
                # The new time is taken, or may not be booked (too long, past, beyond the
                # horizon): the booking stays, the event goes back.
                await self._restore(mapping, booking, seen=event.change_key)
                await self._emit_conflict(booking, event, conflict.message)
                await self._log(
                    resource,
                    booking,
                    current.event_id,
                    "outlook_move:conflict",
                    direction,
                    SyncOutcome.FAILED,
                    detail=conflict.message,
                )
                return
        elif action is Action.RESTORE_EVENT:
            await self._restore(mapping, booking, seen=event.change_key)
        else:
            await self._remember_change_key(mapping, event.change_key)
        await self._log(
            resource, booking, current.event_id, f"outlook_move:{action.value}", direction
        )

    async def _remember_change_key(self, mapping: Stored[EventMapping], seen: str | None) -> None:
        """Keep `seen` as a handled changeKey of the mapping's event. A push may record a
        write on the same mapping meanwhile (its ETag then moved on): re-read, and keep
        the key on the latest unless it is another event's mapping by then."""
        current = mapping.value

        def kept(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id or latest.knows_change_key(seen):
                return None
            return latest.model_copy(update=latest.keeping_change_key(seen))

        await update_mapping(
            self._mappings, current.resource_id, current.booking_id, kept, first=mapping
        )

    async def _defer(
        self,
        resource: Resource,
        booking: Booking,
        event_id: str | None,
        direction: SyncDirection,
        unseen: CalendarUnavailable,
    ) -> None:
        """The move cannot be checked yet (another calendar of the booking is failing or
        stale): keep it as a check of this calendar, so a later round reads the event
        again and applies the policy then, even if this notification is retried no more
        and no delta reports the event again. The caller raises (the queue retries)."""
        await self._checks.mark(resource.resource_id, {booking.booking_id: booking.version})
        await self._log(
            resource,
            booking,
            event_id,
            "outlook_move:deferred",
            direction,
            SyncOutcome.SKIPPED,
            detail=unseen.message,
        )

    async def _restore(
        self,
        mapping: Stored[EventMapping],
        booking: Booking,
        *,
        recreate: bool = False,
        seen: str | None = None,
    ) -> None:
        """Put the event back as the booking says, at once (not via the queue). `seen`:
        the changeKey of the Outlook edit being undone, handled from now on; the write
        is made against it (an answer lost on the way is read back and compared with it)."""
        current = mapping.value

        def restored(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != current.event_id:
                return None  # replaced or removed meanwhile: the push writes from latest
            update: dict[str, object] = {"booking_version": 0, "last_error": None}
            if seen is not None:
                update.update(latest.keeping_change_key(seen))
            if recreate:
                update.update(
                    event_id=None,
                    change_key=None,
                    pending_transaction_id=None,
                    recreations=latest.recreations + 1,
                )
            return latest.model_copy(update=update)

        # A push may record a write on the same mapping meanwhile: re-read on a conflict.
        await update_mapping(
            self._mappings, current.resource_id, current.booking_id, restored, first=mapping
        )
        await self._push.push(
            PushBooking(
                booking_id=booking.booking_id, booking_version=booking.version, include_past=True
            )
        )

    async def _emit_conflict(self, booking: Booking, event: CalendarEvent, reason: str) -> None:
        attempt = event.change_key or event.event_id
        conflict = BookingEvent(
            event_id=f"{booking.booking_id}.v{booking.version}.conflict.{attempt}",
            type=BookingEventType.CONFLICT,
            booking_id=booking.booking_id,
            occurred_at=self._clock(),
            source=EventSource.OUTLOOK,
            data={
                "reason": reason,
                "requestedStart": event.start.isoformat(),
                "requestedEnd": event.end.isoformat(),
                "start": booking.start.isoformat(),
                "end": booking.end.isoformat(),
            },
        )
        await self._routing.publish(self._queue, conflict)

    async def _log(
        self,
        resource: Resource,
        booking: Booking,
        event_id: str | None,
        action: str,
        direction: SyncDirection,
        outcome: SyncOutcome = SyncOutcome.OK,
        *,
        detail: str | None = None,
    ) -> None:
        logger.info("booking %s: %s on %s", booking.booking_id, action, resource.resource_id)
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource.resource_id,
                at=self._clock(),
                direction=direction,
                action=action,
                outcome=outcome,
                booking_id=booking.booking_id,
                event_id=event_id,
                detail=detail,
            )
        )
