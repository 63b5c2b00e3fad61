"""Reconciliation and resync of one resource.

Reconcile (timer, `missed` lifecycle events): read the calendar over the mirror window,
refresh the unavailability mirror, and heal drift of our events by the same policies the
inbound worker uses — events gone or moved while notifications were lost, events of ours
that no mapping knows (a crash between the Graph write and the mapping write: adopted,
never duplicated), duplicates, cancelled bookings' leftovers, bookings never pushed.

Resync (on request): delete every event we own in the calendar (found by our extended
property, never a foreign one), recreate future bookings' events, re-pull busy time (in
slices on the queue, shared/services/pulls.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.domain.base import DomainModel
from shared.domain.bookings import Booking
from shared.domain.calendar import (
    CalendarCheck,
    CalendarEvent,
    DeltaRound,
    EventMapping,
    EventType,
    event_to_keep,
)
from shared.domain.errors import (
    CalendarUnavailable,
    ConcurrencyConflict,
    GraphAccessDenied,
    GraphNotFound,
    GraphSyncStateLost,
)
from shared.domain.messages import EventChange, PushBooking
from shared.domain.resources import MIRROR_LAYOUT, ConnectionState, PullPurpose, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    CalendarGateway,
    EventMappingRepository,
    EventWrite,
    Leases,
    ResourceRepository,
    Stored,
    SyncLog,
)
from shared.services.bookings import BookingService
from shared.services.connection import ConnectionTracker
from shared.services.inbound import EventChangeHandler
from shared.services.mapping_updates import update_mapping
from shared.services.mirror import MirrorService, ours_in
from shared.services.outlook_changes import OutlookChangeApplier
from shared.services.pulls import BusyTimePulls
from shared.services.push import PushDeferred, PushService, needs_push
from shared.services.resource_updates import update_resource
from shared.services.slots import SlotKeeper

logger = logging.getLogger(__name__)


# A round holds its resource's lease while it runs, renewing it every LEASE_RENEW_SECONDS:
# a round cut off (its instance killed) lets go within LEASE_SECONDS of its last renewal,
# where a fixed lease as long as the longest round held every round of that resource back
# for minutes.
LEASE_SECONDS = 60.0
LEASE_RENEW_SECONDS = 20.0
ANOTHER_ROUND_RUNNING = "another round is running"
SUPERSEDED = "superseded by a later timer round"
# A check whose booking change never landed (the request failed after marking it) is
# dropped after this; any request that could still land has long ended by then.
ABANDONED_CHECK = timedelta(minutes=10)
# How far Graph's clock (an event's lastModifiedDateTime) may be ahead of ours. An event
# found in step is confirmed only when it was last changed this long before the round's
# delta was read (see `_confirm`).
GRAPH_CLOCK_SKEW = timedelta(seconds=30)


class ReconcileReport(DomainModel):
    resource_id: str
    full: bool = False
    events_read: int = 0
    policies_applied: int = 0
    adopted: int = 0
    duplicates_removed: int = 0
    pushed: int = 0
    # Events written or changed since they were last confirmed, looked at this round.
    checked: int = 0
    confirmed: int = 0
    skipped: str | None = None
    # The resource was failing until this round.
    recovered: bool = False
    # Connected, but with no subscription (Graph removed it while the mailbox was away,
    # and something other than a round brought the resource back).
    unsubscribed: bool = False


class ReconcileService:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        bookings: BookingRepository,
        booking_service: BookingService,
        event_mappings: EventMappingRepository,
        checks: CalendarChecks,
        gateway: CalendarGateway,
        mirror: MirrorService,
        applier: OutlookChangeApplier,
        changes: EventChangeHandler,
        push: PushService,
        slots: SlotKeeper,
        leases: Leases,
        connection: ConnectionTracker,
        pulls: BusyTimePulls,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
        repeat_within: timedelta = timedelta(0),
    ) -> None:
        self._repeat_within = repeat_within
        self._pulls = pulls
        self._resources = resources
        self._bookings = bookings
        self._booking_service = booking_service
        self._mappings = event_mappings
        self._checks = checks
        self._gateway = gateway
        self._mirror = mirror
        self._applier = applier
        self._changes = changes
        self._push = push
        self._slots = slots
        self._leases = leases
        self._connection = connection
        self._sync_log = sync_log
        self._clock = clock

    async def reconcile(
        self, resource_id: str, *, round_at: datetime | None = None, past_due: bool = False
    ) -> ReconcileReport:
        """One round for one resource, under a per-resource lease (a concurrent round for
        the same mailbox, from an overlapping timer or another instance, skips).

        `round_at` names the timer round asking: one no newer than the resource's last
        round (a page sent twice), or from a `past_due` timer run within `repeat_within`
        after it, is a repeat and skips after one table read; the round's time is recorded
        when it finishes.

        A calendarView/delta round: an unchanged mailbox costs one Graph request. The
        first round, a moved mirror window, or a delta link Graph no longer knows
        (410) make it a full round that rebuilds the mirror and checks every mapping.
        Graph access errors make the resource failing and are raised."""
        holder, lease = uuid.uuid4().hex, f"reconcile:{resource_id}"
        if not await self._leases.acquire(lease, holder, LEASE_SECONDS):
            return ReconcileReport(resource_id=resource_id, skipped=ANOTHER_ROUND_RUNNING)
        round_over = asyncio.Event()
        renewals = asyncio.ensure_future(self._keep_lease(lease, holder, round_over))
        try:
            return await self._reconcile(resource_id, round_at, past_due)
        finally:
            # A renewal in flight finishes before the release: one cut off mid-request
            # could land after it and hold the lease for another LEASE_SECONDS.
            round_over.set()
            await renewals
            await self._leases.release(lease, holder)

    async def _keep_lease(self, lease: str, holder: str, round_over: asyncio.Event) -> None:
        """Renew the round's lease every LEASE_RENEW_SECONDS until `round_over`; a renewal
        that fails is tried again at the next, a lease found taken over is given up (both
        logged). Never raises: the round's own outcome is what its caller gets."""
        while True:
            try:
                await asyncio.wait_for(round_over.wait(), LEASE_RENEW_SECONDS)
                return
            except TimeoutError:
                pass
            try:
                kept = await self._leases.acquire(lease, holder, LEASE_SECONDS)
            except Exception as exc:  # noqa: BLE001 - logged; the next renewal tries again
                logger.warning("lease %s not renewed: %s", lease, exc)
                continue
            if not kept:
                logger.warning("lease %s was taken over while its round ran", lease)
                return

    async def _reconcile(
        self, resource_id: str, round_at: datetime | None, past_due: bool
    ) -> ReconcileReport:
        report = ReconcileReport(resource_id=resource_id)
        stored = await self._resources.get(resource_id)
        if stored is None:
            return report.model_copy(update={"skipped": "unknown resource"})
        resource = stored.value
        last = resource.last_round_at
        window = self._repeat_within if past_due else timedelta(0)
        if round_at is not None and last is not None and last >= round_at - window:
            return report.model_copy(update={"skipped": "a repeat of the last timer round"})
        waiting = resource.throttled_round_at
        if round_at is not None and waiting is not None and round_at < waiting:
            # A later timer round waits out the same mailbox's throttling: it does this
            # one's work when it runs, and this one stops asking the throttled mailbox.
            return report.model_copy(update={"skipped": SUPERSEDED})
        settings = resource.settings
        if not settings.active or resource.status.state.is_ending:
            return report.model_copy(update={"skipped": "inactive or disconnected"})
        if not (settings.direction.pulls or settings.direction.pushes):
            return report.model_copy(update={"skipped": "direction none"})
        start, end = self._mirror.window()
        link = resource.delta_link if resource.delta_window_start == start else None
        if settings.direction.pulls and not resource.mirror_layout_current:
            # A mirror kept before the day rows: a full round rebuilds them (migration).
            link = None
        delta_read_at = self._clock()
        settled: list[Stored[CalendarCheck]] = []
        try:
            try:
                delta = await self._gateway.delta(settings.mailbox, start, end, link)
            except GraphSyncStateLost:
                logger.warning("delta state of %s was lost; full round", resource_id)
                link = None
                delta = await self._gateway.delta(settings.mailbox, start, end, None)
            if link is None:
                report = await self._full_round(resource, delta.events, report)
            else:
                report = await self._incremental_round(resource, delta, report)
            if settings.direction.pushes:
                report, settled = await self._confirm(resource, report, delta_read_at)
        except (GraphAccessDenied, GraphNotFound) as exc:
            await self._connection.mark_failing(resource_id, f"{exc.code}: {exc.message}")
            raise
        report = report.model_copy(
            update={"events_read": len(delta.events) + len(delta.removed_ids), "full": link is None}
        )
        rebuilt = link is None and settings.direction.pulls
        saved = await self._save_delta(
            resource_id, delta.delta_link, start, round_at, rebuilt=rebuilt
        )
        if saved:
            # Only now: a check is dropped on the strength of this round's delta, so only
            # once the next round starts from it (a round that fails before keeps them all).
            confirmed = 0
            for check in settled:
                confirmed += await self._checks.clear(check)
            report = report.model_copy(update={"confirmed": report.confirmed + confirmed})
        recovered = await self._connection.mark_synced(
            resource_id, mirror_refreshed=settings.direction.pulls
        )
        if resource.status.pull is not None:
            # Its chain of messages may have ended in poison: only a round goes on with it.
            await self._pulls.resume(resource_id)
        unsubscribed = (
            resource.subscription_id is None and resource.status.state is ConnectionState.CONNECTED
        )
        report = report.model_copy(update={"recovered": recovered, "unsubscribed": unsubscribed})
        await self._log(
            resource_id,
            "reconcile",
            SyncOutcome.OK,
            report.model_dump_json(exclude={"resource_id"}),
        )
        return report

    async def _full_round(
        self, resource: Resource, events: list[CalendarEvent], report: ReconcileReport
    ) -> ReconcileReport:
        # Delta items carry no extended properties: ask which events are ours by them.
        stamped = await self._gateway.list_our_events(resource.settings.mailbox)
        # Ours only if their booking id names a booking of this resource; the others (an
        # app wrote it, or an Outlook copy of another calendar's event of ours) are busy
        # time like any foreign event.
        ours = await ours_in(self._bookings, resource.resource_id, stamped)
        our_ids = {e.event_id for e in ours}
        if resource.settings.direction.pulls:
            await self._mirror.replace_all(
                resource.resource_id,
                (e for e in events if e.event_id not in our_ids),
                time_zone=resource.settings.time_zone,
            )
        if resource.settings.direction.pushes:
            return await self._heal(resource, ours, report)
        await self._finish_bookings(resource.resource_id)
        return report

    async def _incremental_round(
        self, resource: Resource, delta: DeltaRound, report: ReconcileReport
    ) -> ReconcileReport:
        now = self._clock()
        changes = [
            EventChange(
                subscription_id="delta",
                resource_id=resource.resource_id,
                change_type="deleted",
                event_id=event_id,
                received_at=now,
            )
            for event_id in delta.removed_ids
        ]
        changes += [
            EventChange(
                subscription_id="delta",
                resource_id=resource.resource_id,
                change_type="updated",
                event_id=event.event_id,
                change_key=event.change_key,
                received_at=now,
            )
            for event in delta.events
            if event.type is not EventType.OCCURRENCE or event.series_master_id is None
        ]
        # Occurrences of one series are handled once, through their master.
        masters = {
            e.series_master_id
            for e in delta.events
            if e.type is EventType.OCCURRENCE and e.series_master_id
        }
        changes += [
            EventChange(
                subscription_id="delta",
                resource_id=resource.resource_id,
                change_type="updated",
                event_id=master_id,
                received_at=now,
            )
            for master_id in sorted(masters)
            if master_id not in {c.event_id for c in changes}
        ]
        deferred = 0
        for change in changes:
            try:
                await self._changes.handle(change)
            except CalendarUnavailable as exc:
                # An Outlook move that waits for another calendar of its booking: kept
                # as a check (the applier marked it), read again by a later round. This
                # calendar's round goes on; it must not fail for another one's state.
                logger.info("change of event %s waits: %s", change.event_id, exc.message)
                deferred += 1
            except PushDeferred as exc:
                # An event of ours whose create may still land: a round does not wait on
                # a create. Its check (marked before the create was sent) re-sends it, and
                # Graph answers with this event; a notification looks at it again.
                logger.info("event %s left to its create: %s", change.event_id, exc.message)
                deferred += 1
        await self._finish_bookings(resource.resource_id)
        return report.model_copy(update={"policies_applied": len(changes) - deferred})

    async def _confirm(
        self, resource: Resource, report: ReconcileReport, delta_read_at: datetime
    ) -> tuple[ReconcileReport, list[Stored[CalendarCheck]]]:
        """Look at just the events written or changed since they were last confirmed
        (the resource's checks): a push that failed for longer than the queue retried,
        or an event deleted or moved with its notification lost, which a delta round may
        never report (an item created and deleted between two rounds). Pushes what the
        calendar lacks, applies the policies to what the Outlook user did, and drops the
        checks the calendar now agrees with. One `$batch` GET per 20 events; none when
        nothing is unconfirmed. Returns the checks the calendar agrees with: the caller
        drops them once the round's delta link is saved.

        An event in step is confirmed only when the round's delta (read at
        `delta_read_at`) already held it as it is: then the next delta reports whatever
        happens to it next. One written since (a policy of this very round, a push
        meanwhile) stays unconfirmed until the next round: deleted before then, unnotified,
        it would be in neither delta."""
        checks = await self._checks.pending(resource.resource_id)
        if not checks:
            return report, []
        now = self._clock()
        pushes: list[PushBooking] = []
        to_read: list[tuple[Stored[CalendarCheck], Booking, Stored[EventMapping]]] = []
        settled: list[Stored[CalendarCheck]] = []
        for check in checks:
            stored = await self._bookings.get(check.value.booking_id)
            if stored is None or stored.value.version < check.value.booking_version:
                # The change was never written (or not yet): wait for it, for a while.
                if now - check.value.marked_at > ABANDONED_CHECK:
                    settled.append(check)
                continue
            booking = stored.value
            if booking.outbox:
                booking = await self._booking_service.flush_outbox(stored)
            mapping = await self._mappings.get(resource.resource_id, booking.booking_id)
            if resource.resource_id not in booking.resource_ids or (
                mapping is not None and mapping.value.detached
            ):
                settled.append(check)
            elif mapping is not None and mapping.value.event_id is not None:
                # Read first, even when a push is due: the event may be gone or moved in
                # Outlook (then the policy decides, not a write that would meet a 404).
                to_read.append((check, booking, mapping))
            elif await self._needs_push(booking, mapping):
                pushes.append(
                    PushBooking(booking_id=booking.booking_id, booking_version=booking.version)
                )
            else:
                settled.append(check)  # no event wanted, none there
        applied = 0
        if to_read:
            events = await self._gateway.get_events(
                resource.settings.mailbox,
                [m.value.event_id for _, _, m in to_read if m.value.event_id is not None],
            )
            for check, booking, mapping in to_read:
                event = events.get(mapping.value.event_id or "")
                try:
                    if await self._applier.apply(resource, mapping, event, SyncDirection.RECONCILE):
                        applied += 1  # its own writes are confirmed next round
                        continue
                except CalendarUnavailable:
                    continue  # a move waiting for another calendar: the check stays
                behind = await self._needs_push(booking, mapping)
                if event is not None and not behind and _in_step(event, booking):
                    if _seen_by_delta(event, delta_read_at):
                        settled.append(check)
                    continue
                if event is not None and not behind:
                    known = mapping.value
                    if event.change_key is not None and (
                        event.change_key == known.change_key
                        and not known.written_by_us(event.start, event.end)
                    ):
                        # An Outlook move the policy left where it is (ignore), already
                        # handled: the only way the latest changeKey we know comes with
                        # times none of our writes had. The calendar is as meant.
                        if _seen_by_delta(event, delta_read_at):
                            settled.append(check)
                        continue
                    # At the times of an earlier write of ours: written again as it is now.
                    await self._rewrite(mapping)
                pushes.append(
                    PushBooking(booking_id=booking.booking_id, booking_version=booking.version)
                )
        await self._push.push_many(pushes, only=resource.resource_id)
        report = report.model_copy(
            update={
                "checked": report.checked + len(checks),
                "policies_applied": report.policies_applied + applied,
                "pushed": report.pushed + len(pushes),
            }
        )
        return report, settled

    async def _rewrite(self, mapping: Stored[EventMapping]) -> None:
        """Make the next push write the event again, whatever version it recorded."""

        def stale(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != mapping.value.event_id:
                return None
            return latest.model_copy(update={"booking_version": 0})

        value = mapping.value
        await update_mapping(self._mappings, value.resource_id, value.booking_id, stale)

    async def _finish_bookings(self, resource_id: str) -> None:
        """What requests cut short left, for the bookings claiming time in the window:
        changes written but never sent (a crash between a booking's write and its
        outbox's send) are sent, and claims their booking does not hold (a create or
        reschedule that never finished) released. Table reads only, no Graph call."""
        start, end = self._mirror.window()
        claims = await self._slots.claims_between(resource_id, start, end)
        bookings: dict[str, Booking | None] = {}
        for booking_id in sorted({c.booking_id for c in claims}):
            stored = await self._bookings.get(booking_id)
            bookings[booking_id] = stored.value if stored is not None else None
            if stored is not None and stored.value.outbox:
                await self._booking_service.flush_outbox(stored)
        await self._slots.release_stale(resource_id, claims, bookings)

    async def _save_delta(
        self,
        resource_id: str,
        link: str,
        window_start: datetime,
        round_at: datetime | None,
        *,
        rebuilt: bool,
    ) -> bool:
        """Whether the link was saved (the next round starts from it)."""

        def change(resource: Resource) -> Resource:
            update: dict[str, object] = {"delta_link": link, "delta_window_start": window_start}
            if rebuilt:
                # The full round's replace_all rebuilt the day rows from the calendar.
                update["mirror_layout"] = MIRROR_LAYOUT
            if round_at is not None:
                update["last_round_at"] = max(resource.last_round_at or round_at, round_at)
                waiting = resource.throttled_round_at
                if waiting is not None and waiting <= round_at:
                    update["throttled_round_at"] = None
            return resource.model_copy(update=update)

        try:
            await update_resource(self._resources, resource_id, change)
        except ConcurrencyConflict:
            # Not fatal: the next round starts from the link before, and reads again
            # whatever this one found in it; the checks it settled stay for that round.
            logger.warning("delta link of %s not saved", resource_id)
            return False
        return True

    async def _heal(
        self, resource: Resource, events: list[CalendarEvent], report: ReconcileReport
    ) -> ReconcileReport:
        mailbox = resource.settings.mailbox
        ours: dict[str, list[CalendarEvent]] = defaultdict(list)
        for event in events:
            if event.booking_id is not None:
                ours[event.booking_id].append(event)
        counts = report.model_dump(by_alias=False)
        mappings = {
            m.value.booking_id: m
            for m in await self._mappings.list_for_resource(resource.resource_id)
        }
        start, end = self._mirror.window()
        claims = await self._slots.claims_between(resource.resource_id, start, end)
        read: dict[str, Booking | None] = {}
        pushes: list[PushBooking] = []
        for booking_id in sorted(set(mappings) | set(ours) | {c.booking_id for c in claims}):
            stored_booking = await self._bookings.get(booking_id)
            read[booking_id] = stored_booking.value if stored_booking is not None else None
            if stored_booking is None:
                continue  # an unfinished attempt's claim, or an id we never wrote
            if stored_booking.value.outbox:
                await self._booking_service.flush_outbox(stored_booking)
            booking = stored_booking.value
            if resource.resource_id not in booking.resource_ids:
                continue
            found = ours.get(booking_id, [])
            mapping = mappings.get(booking_id)
            mapping, adopted, removed = await self._adopt_and_dedupe(
                resource, booking, mapping, found
            )
            counts["adopted"] += adopted
            counts["duplicates_removed"] += removed
            if (
                mapping is not None
                and mapping.value.event_id is not None
                and not mapping.value.detached
            ):
                seen = next((e for e in found if e.event_id == mapping.value.event_id), None)
                if seen is None:  # outside the window, or gone: ask for it directly
                    seen = await self._gateway.get_event(mailbox, mapping.value.event_id)
                if await self._applier.apply(resource, mapping, seen, SyncDirection.RECONCILE):
                    counts["policies_applied"] += 1
                    continue
            if await self._needs_push(booking, mapping):
                pushes.append(PushBooking(booking_id=booking_id, booking_version=booking.version))
        # Claims of creates or reschedules that never finished hold time no booking does.
        await self._slots.release_stale(resource.resource_id, claims, read)
        # What was never pushed (or failed) goes out as one batched write.
        await self._push.push_many(pushes, only=resource.resource_id)
        counts["pushed"] = len(pushes)
        return ReconcileReport.model_validate(counts)

    async def _adopt_and_dedupe(
        self,
        resource: Resource,
        booking: Booking,
        mapping: Stored[EventMapping] | None,
        found: list[CalendarEvent],
    ) -> tuple[Stored[EventMapping] | None, int, int]:
        """Make the mapping point at exactly one of the booking's events in the calendar;
        delete the rest. Returns (mapping, adopted, duplicates removed)."""
        if not found:
            return mapping, 0, 0
        mapped_id = mapping.value.event_id if mapping is not None else None
        keep = next((e for e in found if e.event_id == mapped_id), None)
        adopted = 0
        if keep is None:
            keep = event_to_keep(found)
            adopted = 1
            mapping = await self._adopt(resource, booking, mapping, keep)
        mailbox = resource.settings.mailbox
        extras = [e for e in found if e.event_id != keep.event_id]
        if extras:
            await self._gateway.write_batch(
                [EventWrite(mailbox=mailbox, op="delete", event_id=e.event_id) for e in extras]
            )
            logger.warning(
                "booking %s: %d duplicate events removed", booking.booking_id, len(extras)
            )
        return mapping, adopted, len(extras)

    async def _adopt(
        self,
        resource: Resource,
        booking: Booking,
        mapping: Stored[EventMapping] | None,
        event: CalendarEvent,
    ) -> Stored[EventMapping]:
        # In step only if the booking still wants this event at these times; otherwise
        # (moved, or cancelled) the push corrects or removes it.
        in_step = booking.status.holds_time and (event.start, event.end) == (
            booking.start,
            booking.end,
        )
        fields: dict[str, object] = {
            "event_id": event.event_id,
            "change_key": event.change_key,
            "earlier_change_keys": [],
            "pushed_start": event.start,
            "pushed_end": event.end,
            # Times as the booking says: in sync; otherwise the push corrects it.
            "booking_version": booking.version if in_step else 0,
            "pending_transaction_id": None,
            "detached": False,
            "synced_at": self._clock(),
        }
        await self._log(
            resource.resource_id,
            "adopted_event",
            SyncOutcome.OK,
            None,
            booking.booking_id,
            event.event_id,
        )
        if mapping is None:
            return await self._mappings.add(
                EventMapping(
                    resource_id=resource.resource_id,
                    booking_id=booking.booking_id,
                    mailbox=resource.settings.mailbox,
                    **fields,
                )
            )
        return await self._mappings.update(mapping.value.model_copy(update=fields), mapping.etag)

    async def _needs_push(self, booking: Booking, mapping: Stored[EventMapping] | None) -> bool:
        return needs_push(booking, mapping.value if mapping else None, self._clock())

    async def resync(self, resource_id: str) -> int:
        """Delete the events we own in the calendar, recreate future bookings' events,
        and start a re-pull of busy time (in slices, on the queue: `status.pull` shows it
        going on). Returns the number of events recreated."""
        stored = await self._resources.get(resource_id)
        if stored is None:
            return 0
        resource = stored.value
        mailbox = resource.settings.mailbox
        await self._log(resource_id, "resync_started", SyncOutcome.OK)
        try:
            # Mappings first: the deletes' notifications then find no mapping pointing at
            # those events, and are not taken for the Outlook user's deletes.
            mappings = await self._mappings.list_for_resource(resource_id)
            for mapping in mappings:
                value = mapping.value
                await self._mappings.update(
                    value.model_copy(
                        update={
                            "event_id": None,
                            "change_key": None,
                            "pending_transaction_id": None,
                            "booking_version": 0,
                            "recreations": value.recreations + 1,
                            "detached": False,
                            "last_error": None,
                        }
                    ),
                    mapping.etag,
                )
            stamped = await self._gateway.list_our_events(mailbox)
            ours = await ours_in(self._bookings, resource_id, stamped)
            if ours:
                await self._gateway.write_batch(
                    [EventWrite(mailbox=mailbox, op="delete", event_id=e.event_id) for e in ours]
                )
            start, end = self._mirror.window()
            booking_ids = {m.value.booking_id for m in mappings}
            booking_ids |= {
                c.booking_id for c in await self._slots.claims_between(resource_id, start, end)
            }
            pushes: list[PushBooking] = []
            for booking_id in sorted(booking_ids):
                booking = await self._bookings.get(booking_id)
                if booking is None or resource_id not in booking.value.resource_ids:
                    continue
                if booking.value.is_in_past(self._clock()):
                    continue
                pushes.append(
                    PushBooking(booking_id=booking_id, booking_version=booking.value.version)
                )
            # One batched write for the whole calendar (Graph $batch, 20 per request).
            await self._push.push_many(pushes, only=resource_id)
            recreated = len(pushes)
        except (GraphAccessDenied, GraphNotFound) as exc:
            await self._connection.mark_failing(resource_id, f"{exc.code}: {exc.message}")
            raise
        await self._connection.mark_synced(resource_id)
        pulling = resource.settings.direction.pulls and await self._pulls.start(
            resource_id, PullPurpose.RESYNC
        )
        await self._log(
            resource_id,
            "resync_finished",
            SyncOutcome.OK,
            f"{len(ours)} removed, {recreated} recreated"
            + ("; busy time being pulled" if pulling else ""),
        )
        return recreated

    async def _log(
        self,
        resource_id: str,
        action: str,
        outcome: SyncOutcome,
        detail: str | None = None,
        booking_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource_id,
                at=self._clock(),
                direction=SyncDirection.RECONCILE,
                action=action,
                outcome=outcome,
                booking_id=booking_id,
                event_id=event_id,
                detail=detail[:1000] if detail else None,
            )
        )


def _seen_by_delta(event: CalendarEvent, delta_read_at: datetime) -> bool:
    """Whether a delta read at `delta_read_at` held the event as it is now (last changed
    before, allowing for Graph's clock being ahead of ours). Without a modification time
    Graph reported, it cannot be told: not held."""
    changed = event.last_modified_at
    return changed is not None and changed < delta_read_at - GRAPH_CLOCK_SKEW


def _in_step(event: CalendarEvent, booking: Booking) -> bool:
    """The event shows the booking's times (a cancelled booking's kept event included)."""
    return (event.start, event.end) == (booking.start, booking.end)
