"""The push: make each resource's calendar match its booking (booking → Outlook).

For every resource of the booking whose direction pushes, the desired state is computed
from the booking (an event with the rendered templates, a `Cancelled: ` event, or no
event) and compared with the event mapping. Writes for all calendars go to Graph as one
`$batch`. Creates are recorded as intents first (a pending transactionId), so a retry
re-sends the same transactionId and never makes a second event.

Permanent failures (access denied, mailbox gone) make the resource failing and are kept
on the mapping; transient ones are raised after recording, so the queue retries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.domain.base import without_control_characters
from shared.domain.bookings import Booking, BookingStatus
from shared.domain.calendar import (
    CREATE_WAIT_SECONDS,
    MAX_WRITES_IN_FLIGHT,
    WRITE_IN_FLIGHT_SECONDS,
    CalendarEvent,
    EventDraft,
    EventMapping,
    WrittenTimes,
    event_to_keep,
)
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    DomainError,
    GraphNotFound,
    GraphThrottled,
    GraphTransient,
    calendar_refused,
)
from shared.domain.messages import PushBooking
from shared.domain.resources import CancelledEventMode, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    CalendarGateway,
    EventMappingRepository,
    EventWrite,
    EventWriteResult,
    ResourceRepository,
    Stored,
    SyncLog,
)
from shared.services.connection import ConnectionTracker
from shared.services.mapping_updates import update_mapping

logger = logging.getLogger(__name__)

# A push that meets another push's write of the same mapping reads again this often.
RACE_ATTEMPTS = 3
RACE_BACKOFF_SECONDS = 0.05

CANCELLED_PREFIX = "Cancelled: "


class PushIncomplete(DomainError):
    """Some calendars could not be written for a transient reason; retry the message."""

    code = "push_incomplete"


class PushDeferred(PushIncomplete):
    """A calendar's create sent earlier has not answered yet, and what it makes (or the
    error it meets) is for this push to act on: the message goes again after
    `delay_seconds`, counting no try. Bounded: a create unanswered for
    WRITE_IN_FLIGHT_SECONDS is no longer waited for."""

    def __init__(self, message: str, *, delay_seconds: int = CREATE_WAIT_SECONDS) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class _CreateUnderWay(Exception):
    """Raised by `_plan`: a create of the calendar's event has not answered yet."""


class _BehindBooking(PushIncomplete):
    """A create answered with the event an older version's create made: recorded, and to
    be written again as the booking is now (at once: nothing else is writing it)."""


def needs_push(booking: Booking, mapping: EventMapping | None, now: datetime) -> bool:
    """Whether the booking's calendar (its mapping there, if any) is behind the booking:
    an event missing that a live booking still ahead wants, a change not written, a
    write that failed, a create not answered."""
    if mapping is None:
        return booking.status.holds_time and not booking.is_in_past(now)
    if mapping.detached:
        return False
    if mapping.event_id is None and mapping.pending_transaction_id is None:
        # No event there: only a booking that holds time, still ahead, wants one.
        return booking.status.holds_time and not booking.is_in_past(now)
    return (
        mapping.booking_version < booking.version
        or mapping.last_error is not None
        or mapping.pending_transaction_id is not None
    )


def render_draft(booking: Booking, resource: Resource) -> EventDraft | None:
    """The event the resource's calendar should hold for the booking (None: no event)."""
    settings = resource.settings
    cancelled = booking.status is BookingStatus.CANCELLED
    if cancelled and settings.cancelled_event_mode is CancelledEventMode.DELETE:
        return None
    subject, body = render_templates(
        booking, settings.subject_template, settings.body_template, settings.time_zone
    )
    if cancelled:
        subject = (CANCELLED_PREFIX + subject)[:255]
    return EventDraft(
        subject=subject,
        body=body,
        location=without_control_characters(booking.location) if booking.location else None,
        start=booking.start,
        end=booking.end,
        time_zone=settings.time_zone,
        booking_id=booking.booking_id,
    )


def render_templates(
    booking: Booking, subject_template: str, body_template: str, time_zone: str
) -> tuple[str, str]:
    """An event's subject and body for the booking: the templates' placeholders filled
    (times in `time_zone`), without characters an event cannot hold, cut to what Outlook
    keeps."""
    zone = ZoneInfo(time_zone)
    values = {
        "title": booking.title,
        "customerName": booking.customer.name,
        "customerEmail": booking.customer.email,
        "location": booking.location or "",
        "notes": booking.notes or "",
        "bookingId": booking.booking_id,
        "start": booking.start.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "end": booking.end.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
    }
    subject = without_control_characters(subject_template.format_map(values))[:255]
    body = without_control_characters(body_template.format_map(values)).strip()[:8000]
    return subject, body


def transaction_id(booking: Booking, resource_id: str, recreations: int = 0) -> str:
    """Deterministic per booking, resource, version (and recreation): a retried create
    is recognised, a deliberate re-create is not mistaken for one."""
    suffix = f".r{recreations}" if recreations else ""
    return f"{booking.booking_id}.{resource_id}.v{booking.version}{suffix}"


def _with_write(writes: list[WrittenTimes], written: WrittenTimes) -> list[WrittenTimes]:
    """The writes in flight once `written` is sent: a try of the same version at the same
    times replaces the one before (retries through an outage never push other times
    out), and only the last MAX_WRITES_IN_FLIGHT are kept."""
    same = (written.booking_version, written.start, written.end)
    others = [w for w in writes if (w.booking_version, w.start, w.end) != same]
    return [*others, written][-MAX_WRITES_IN_FLIGHT:]


@dataclass
class _Planned:
    resource: Resource
    mapping: Stored[EventMapping]
    draft: EventDraft | None  # None for a delete
    write: EventWrite


class PushService:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        bookings: BookingRepository,
        event_mappings: EventMappingRepository,
        checks: CalendarChecks,
        gateway: CalendarGateway,
        sync_log: SyncLog,
        connection: ConnectionTracker,
        clock: Callable[[], datetime],
    ) -> None:
        self._resources = resources
        self._bookings = bookings
        self._mappings = event_mappings
        self._checks = checks
        self._gateway = gateway
        self._sync_log = sync_log
        self._connection = connection
        self._clock = clock

    async def push(self, message: PushBooking) -> None:
        """Idempotent. Raises PushIncomplete when a transient failure should be retried,
        GraphThrottled when every one was Graph throttling (after its Retry-After), and
        PushDeferred when a calendar's create is still on its way (after it).

        Two pushes of one booking (made, then at once rescheduled) may run side by side:
        the one that meets the other's mapping write (AlreadyExists, ConcurrencyConflict)
        reads again and goes on, as a retry of its message would, a few times here
        rather than as a failed invocation seconds later."""
        for attempt in range(1, RACE_ATTEMPTS + 1):
            try:
                await self.push_many([message], wait_for_creates=True)
                return
            except (AlreadyExists, ConcurrencyConflict) as exc:
                if attempt == RACE_ATTEMPTS:
                    raise
                logger.info(
                    "push of %s met another write of its mapping (%s); reading again",
                    message.booking_id,
                    exc,
                )
                await asyncio.sleep(random.uniform(0, RACE_BACKOFF_SECONDS * attempt))  # noqa: S311 - jitter

    async def push_many(
        self,
        messages: list[PushBooking],
        *,
        only: str | None = None,
        again: bool = True,
        wait_for_creates: bool = False,
    ) -> None:
        """Push several bookings with one batched write (resync, reconcile); `only`
        limits it to one resource's calendar. Raises PushIncomplete after recording
        everything when some writes failed for a transient reason. `again`: a create
        answered with an older version's event is written again in a second batch.
        `wait_for_creates`: a calendar whose create is still on its way makes it raise
        PushDeferred (a booking's own push); otherwise that calendar is left to the
        resource's check (a round's pushes: the round does not wait on a create)."""
        now = self._clock()
        planned: list[tuple[Booking, _Planned]] = []
        # Calendars where a create is still on its way.
        found_waiting: list[str] = []
        try:
            results = await self._plan_and_send(messages, only, now, planned, found_waiting)
        except BaseException:
            await self._abandon(planned, now)
            raise
        waiting = found_waiting if wait_for_creates else []
        if results is None:
            if waiting:
                raise PushDeferred(f"a create still under way for {', '.join(waiting[:10])}")
            return
        transient: list[str] = []
        throttled: list[GraphThrottled] = []
        synced: set[str] = set()
        errors: list[BaseException] = []
        behind: dict[str, PushBooking] = {}
        for (booking, plan), result in zip(planned, results, strict=True):
            # Each calendar's answer is recorded on its own: a mapping written meanwhile by
            # another worker costs a re-read, and never the record of the other calendars.
            try:
                retry = await self._record(booking, plan, result, now)
            except _BehindBooking as exc:
                if not again:
                    errors.append(exc)
                behind[booking.booking_id] = PushBooking(
                    booking_id=booking.booking_id, booking_version=booking.version
                )
                synced.add(plan.resource.resource_id)
                continue
            except Exception as exc:  # noqa: BLE001 - raised below, once all are recorded
                errors.append(exc)
                await self._abandon([(booking, plan)], now)
                continue
            if result.error is None:
                synced.add(plan.resource.resource_id)
            elif retry:
                transient.append(f"{booking.booking_id} on {plan.resource.resource_id}")
                if isinstance(result.error, GraphThrottled):
                    throttled.append(result.error)
        for resource_id in sorted(synced):
            await self._connection.mark_synced(resource_id)
        if behind and again:
            try:
                await self.push_many(
                    list(behind.values()),
                    only=only,
                    again=False,
                    wait_for_creates=wait_for_creates,
                )
            except Exception as exc:  # noqa: BLE001 - raised below, once all are recorded
                errors.append(exc)
        if errors:
            raise errors[0]
        if transient and not waiting and len(throttled) == len(transient):
            # Only throttled: the worker sends the message again after Graph's Retry-After
            # (the longest asked), counting no try.
            waits = [t.retry_after_seconds for t in throttled if t.retry_after_seconds is not None]
            raise GraphThrottled(
                f"throttled; retry for {', '.join(transient[:10])}",
                retry_after_seconds=max(waits) if waits else None,
            )
        if transient:
            raise PushIncomplete(f"retry for {', '.join([*transient, *waiting][:10])}")
        if waiting:
            raise PushDeferred(f"a create still under way for {', '.join(waiting[:10])}")

    async def _plan_and_send(
        self,
        messages: list[PushBooking],
        only: str | None,
        now: datetime,
        planned: list[tuple[Booking, _Planned]],
        waiting: list[str],
    ) -> list[EventWriteResult] | None:
        """Plan each calendar's write (filling `planned`, and `waiting` with those where a
        create is still on its way), mark them unconfirmed and send them as one batch;
        None when there is nothing to send."""
        resources: dict[str, Resource | None] = {}
        for message in messages:
            stored = await self._bookings.get(message.booking_id)
            if stored is None:
                logger.warning("push of unknown booking %s dropped", message.booking_id)
                continue
            booking = stored.value
            for resource_id in booking.resource_ids:
                if only is not None and resource_id != only:
                    continue
                if resource_id not in resources:
                    found = await self._resources.get(resource_id)
                    resources[resource_id] = found.value if found else None
                resource = resources[resource_id]
                if resource is None:
                    continue
                try:
                    plan = await self._plan(booking, resource, now, message.include_past)
                except _CreateUnderWay:
                    waiting.append(f"{booking.booking_id} on {resource_id}")
                    continue
                if plan is not None:
                    planned.append((booking, plan))
        if not planned:
            return None
        # Before anything is sent: whatever becomes of this write (a crash, a failure for
        # longer than the queue retries, a delete nobody notifies), the next reconcile
        # round looks at these events again.
        marks: dict[str, dict[str, int]] = {}
        for booking, plan in planned:
            marks.setdefault(plan.resource.resource_id, {})[booking.booking_id] = booking.version
        await asyncio.gather(*(self._checks.mark(r, versions) for r, versions in marks.items()))
        return await self._gateway.write_batch([plan.write for _, plan in planned])

    async def _record(
        self, booking: Booking, plan: _Planned, result: EventWriteResult, now: datetime
    ) -> bool:
        """Record one write's answer; True when it failed and is worth retrying."""
        if result.error is None:
            await self._record_success(
                booking,
                plan,
                result.event,
                now,
                refused_zone=result.refused_time_zone,
                unanswered_attempt=result.earlier_attempt_unanswered,
            )
            return False
        return await self._record_failure(booking, plan, result.error, now)

    async def _plan(
        self, booking: Booking, resource: Resource, now: datetime, include_past: bool
    ) -> _Planned | None:
        resource_id = resource.resource_id
        if not resource.settings.direction.pushes or not resource.settings.active:
            return None
        if resource.status.state.is_ending:
            # Disconnected or being emptied: a push still queued (or retrying through an
            # outage) must not write our events back into a mailbox we left.
            return None
        mapping = await self._mappings.get(resource_id, booking.booking_id)
        current = mapping.value if mapping else None
        if current is not None and current.detached:
            return None  # removed in Outlook under the ignore policy
        draft = render_draft(booking, resource)
        mailbox = resource.settings.mailbox
        creates = draft is not None and (include_past or not booking.is_in_past(now))
        if mapping is not None and mapping.value.event_id is None and not creates:
            # No create is sent now (no event wanted, or the booking is over), so none
            # would bring back what an unanswered one made.
            mapping = await self._find_unanswered_create(resource, mapping, now)
            current = mapping.value
            if current.create_may_land(now):
                # A create sent earlier has not answered yet: the event it makes (or the
                # error it meets) is for this push to act on, so it goes again later
                # rather than finish with nothing done and leave it to a round.
                logger.info(
                    "booking %s: a create is still under way in %s; pushed again later",
                    booking.booking_id,
                    resource_id,
                )
                raise _CreateUnderWay
        if draft is None:
            if mapping is None or current is None or current.event_id is None:
                if mapping is not None and current is not None:
                    await self._forget_moot_error(mapping)
                return None
            write = EventWrite(mailbox=mailbox, op="delete", event_id=current.event_id)
            return _Planned(resource, mapping, None, write)
        if mapping is not None and current is not None and current.event_id is not None:
            if current.booking_version >= booking.version and current.last_error is None:
                return None  # already in sync
            mapping = await self._record_update_intent(mapping, booking, draft, now)
            write = EventWrite(
                mailbox=mailbox,
                op="update",
                event_id=current.event_id,
                draft=draft,
                change_key=current.change_key,
            )
            return _Planned(resource, mapping, draft, write)
        if booking.is_in_past(now) and not include_past:
            return None
        mapping, tx = await self._record_intent(booking, resource, mapping, draft, now)
        write = EventWrite(mailbox=mailbox, op="create", draft=draft, transaction_id=tx)
        return _Planned(resource, mapping, draft, write)

    async def _record_intent(
        self,
        booking: Booking,
        resource: Resource,
        mapping: Stored[EventMapping] | None,
        draft: EventDraft,
        now: datetime,
    ) -> tuple[Stored[EventMapping], str]:
        """Before a create is sent: its transactionId, and the times it writes (kept as
        a write in flight, like an update's). A create sent before and never answered is
        sent again with the same transactionId, and Graph then answers with the event as
        that first create made it, at its times: known as ours by them."""
        written = WrittenTimes(
            booking_version=booking.version, start=draft.start, end=draft.end, sent_at=now
        )
        if mapping is None:
            tx = transaction_id(booking, resource.resource_id)
            added = await self._mappings.add(
                EventMapping(
                    resource_id=resource.resource_id,
                    booking_id=booking.booking_id,
                    mailbox=resource.settings.mailbox,
                    pending_transaction_id=tx,
                    writes_in_flight=[written],
                )
            )
            return added, tx
        value = mapping.value
        tx = value.pending_transaction_id or transaction_id(
            booking, resource.resource_id, value.recreations
        )
        in_flight = _with_write(value.writes_in_flight, written)
        updated = await self._mappings.update(
            value.model_copy(update={"pending_transaction_id": tx, "writes_in_flight": in_flight}),
            mapping.etag,
        )
        return updated, tx

    async def _forget_moot_error(self, mapping: Stored[EventMapping]) -> None:
        """No event is wanted and none is there or on its way: the error of a write that
        failed before (a create throttled or refused, then the booking cancelled) is
        about nothing any more, and no push would ever clear it."""

        def cleared(latest: EventMapping) -> EventMapping | None:
            if (
                latest.last_error is None
                or latest.event_id is not None
                or latest.pending_transaction_id is not None
            ):
                return None  # nothing to clear, or a write since that still stands
            return latest.model_copy(update={"last_error": None})

        value = mapping.value
        await update_mapping(
            self._mappings, value.resource_id, value.booking_id, cleared, first=mapping
        )

    async def _find_unanswered_create(
        self, resource: Resource, mapping: Stored[EventMapping], now: datetime
    ) -> Stored[EventMapping]:
        """The mapping knows no event, but a create was sent and its answer never
        recorded (a worker died with it): it may have made the event. Looked for by the
        booking id (one listing): one found is taken into the mapping, so that the push
        removes it (no event wanted) or writes it as the booking is (a booking now over);
        any other is deleted. None found and none still under way: the create is
        forgotten."""
        value = mapping.value
        if value.pending_transaction_id is None:
            return mapping
        mailbox = resource.settings.mailbox
        found = await self._gateway.find_events_for_booking(mailbox, value.booking_id)
        if not found:
            if value.create_may_land(now):
                return mapping  # it may land yet: the resource's check looks again
            forgotten: dict[str, object] = {"pending_transaction_id": None, "writes_in_flight": []}
            return await self._take_unanswered_create(mapping, forgotten, now)
        return await self._take_found(resource, mapping, found, now)

    async def settle_unmapped_event(
        self, resource: Resource, event: CalendarEvent, mapping: Stored[EventMapping] | None
    ) -> str | None:
        """An event carrying a booking id that no mapping names, seen in a calendar: most
        often what one attempt of a create made while another attempt's answer was
        recorded (Graph slow to answer: the gateway sent it again, and both made an
        event), landed after the booking's push had finished. The booking's events there
        are listed: with none mapped, one is taken into the mapping and the booking
        pushed (which removes it when no event is wanted, or writes it as the booking
        is), the rest removed; beside the mapped one, the others are duplicates and
        removed. Returns what was done, for the log; None when the id names no booking
        of this resource (an app wrote it, or garbage): not ours, so busy time.

        `mapping` is the booking's mapping in this resource, read after the event.

        Raises PushDeferred while a create of the booking may still land there and the
        event is not at the times it was sent with: the Outlook user moved it before the
        create's answer named it, so the change is looked at again once it has."""
        booking_id = event.booking_id
        resource_id = resource.resource_id
        if booking_id is None:
            return None
        now = self._clock()
        # The mapping first: a create of this booking under way here (the common case, a
        # create's own notification before its answer) settles it without more reads.
        if mapping is not None and mapping.value.create_may_land(now):
            if mapping.value.written_by_us(event.start, event.end):
                # The create's own event as sent (its notification came before its
                # answer, as for every create in a busy batch): the answer records it.
                return "event of a create under way; its answer records it"
            raise PushDeferred(
                f"event {event.event_id} of booking {booking_id} in {resource_id}:"
                " its create is still under way"
            )
        stored = await self._bookings.get(booking_id)
        if stored is None or resource_id not in stored.value.resource_ids:
            return None
        left = "unmapped event of ours; left to reconcile"
        if not resource.settings.direction.pushes:
            return left
        if mapping is None or mapping.value.detached:
            return left
        mailbox = resource.settings.mailbox
        found = await self._gateway.find_events_for_booking(mailbox, booking_id)
        found_ids = {e.event_id for e in found}
        if event.event_id not in found_ids:
            return "event of ours gone meanwhile"
        mapped = mapping.value.event_id
        if mapped is not None:
            if mapped not in found_ids:
                return left  # the mapped one gone: its own change decides
            extras = [e for e in found if e.event_id != mapped]
            if not extras:
                return left  # mapped meanwhile
            await self._gateway.write_batch(
                [EventWrite(mailbox=mailbox, op="delete", event_id=e.event_id) for e in extras]
            )
            logger.warning(
                "booking %s: %d duplicate events removed in %s",
                booking_id,
                len(extras),
                resource_id,
            )
            return "duplicate event of ours removed"
        await self._take_found(resource, mapping, found, now)
        booking = stored.value
        await self.push_many(
            [PushBooking(booking_id=booking_id, booking_version=booking.version)], only=resource_id
        )
        return "unmapped event of ours taken into its mapping"

    async def _take_found(
        self,
        resource: Resource,
        mapping: Stored[EventMapping],
        found: list[CalendarEvent],
        now: datetime,
    ) -> Stored[EventMapping]:
        """Take one of the booking's events `found` in the calendar into the mapping (which
        names none), and delete the others."""
        value = mapping.value
        mailbox = resource.settings.mailbox
        event = event_to_keep(found)
        extras = [e for e in found if e.event_id != event.event_id]
        if extras:
            await self._gateway.write_batch(
                [EventWrite(mailbox=mailbox, op="delete", event_id=e.event_id) for e in extras]
            )
        logger.info(
            "booking %s: event %s of a create found in %s",
            value.booking_id,
            event.event_id,
            resource.resource_id,
        )
        made: dict[str, object] = {
            "event_id": event.event_id,
            "change_key": event.change_key,
            "earlier_change_keys": [],
            "pushed_start": event.start,
            "pushed_end": event.end,
            "booking_version": 0,
            "pending_transaction_id": None,
        }
        return await self._take_unanswered_create(mapping, made, now)

    async def _take_unanswered_create(
        self, mapping: Stored[EventMapping], update: dict[str, object], now: datetime
    ) -> Stored[EventMapping]:
        """The mapping with `update` applied (the event found, or the create forgotten),
        unless another push took or forgot the same create first, or (when forgetting)
        sent it again meanwhile: then the mapping as that push left it."""
        value = mapping.value

        def taken(latest: EventMapping) -> EventMapping | None:
            if (
                latest.event_id is not None
                or latest.pending_transaction_id != value.pending_transaction_id
                or ("event_id" not in update and latest.create_may_land(now))
            ):
                return None
            return latest.model_copy(update=update)

        stored = await update_mapping(
            self._mappings, value.resource_id, value.booking_id, taken, first=mapping
        )
        if stored is None:
            stored = await self._mappings.get(value.resource_id, value.booking_id)
        if stored is None:
            raise ConcurrencyConflict(f"mapping of {value.booking_id} removed; push again")
        return stored

    async def _record_update_intent(
        self, mapping: Stored[EventMapping], booking: Booking, draft: EventDraft, now: datetime
    ) -> Stored[EventMapping]:
        """Before an update is sent, remember the times it writes: its notification can
        come back before its answer, and must then be seen as ours, not as a move."""
        written = WrittenTimes(
            booking_version=booking.version, start=draft.start, end=draft.end, sent_at=now
        )
        event_id = mapping.value.event_id

        def intended(latest: EventMapping) -> EventMapping | None:
            if latest.event_id != event_id or latest.detached:
                return None  # replaced or detached since the plan read it
            in_flight = _with_write(latest.writes_in_flight, written)
            return latest.model_copy(update={"writes_in_flight": in_flight})

        value = mapping.value
        stored = await update_mapping(
            self._mappings, value.resource_id, value.booking_id, intended, first=mapping
        )
        if stored is None:
            raise ConcurrencyConflict(f"mapping of {value.booking_id} changed; push again")
        return stored

    async def _abandon(self, planned: list[tuple[Booking, _Planned]], now: datetime) -> None:
        """The push stopped before its answers were recorded: its updates are no longer
        under way (they may have been applied, so their times stay known as ours)."""
        for booking, plan in planned:
            # A create stays in flight until its window ends: cut short, it may still
            # make its event, which only a look by the booking id would then find.
            if plan.write.op != "update":
                continue

            def answered(
                latest: EventMapping, version: int = booking.version
            ) -> EventMapping | None:
                mine = [
                    w
                    for w in latest.writes_in_flight
                    if (w.booking_version, w.sent_at) == (version, now)
                ]
                if not mine:
                    return None
                return latest.model_copy(
                    update={
                        "writes_in_flight": [
                            w.model_copy(update={"answered": True}) if w in mine else w
                            for w in latest.writes_in_flight
                        ]
                    }
                )

            value = plan.mapping.value
            try:
                await update_mapping(self._mappings, value.resource_id, value.booking_id, answered)
            except Exception as exc:  # noqa: BLE001 - best effort; the in-flight window ends it
                logger.warning("write in flight on %s not released: %s", value.booking_id, exc)

    async def _record_success(
        self,
        booking: Booking,
        plan: _Planned,
        event: CalendarEvent | None,
        now: datetime,
        *,
        refused_zone: str | None = None,
        unanswered_attempt: bool = False,
    ) -> None:
        """`refused_zone`: Graph refused it and the event was written in UTC; kept on the
        mapping (the booking's sync state shows it) and in the sync log.
        `unanswered_attempt`: an earlier attempt of the write met no sure answer."""
        write, draft = plan.write, plan.draft
        zone_warning = (
            f"Graph refused time zone '{refused_zone}'"
            f"{f' ({draft.time_zone})' if draft and draft.time_zone != refused_zone else ''};"
            " the event was written in UTC (same times)"
            if refused_zone
            else None
        )
        if write.op != "delete" and (event is None or draft is None):
            raise GraphTransient("Graph acknowledged a write without returning the event")

        overtaken = False
        # An earlier attempt of this create was never answered: it may make a second
        # event for as long as any unanswered write may still land.
        stray_until = (
            now + timedelta(seconds=WRITE_IN_FLIGHT_SECONDS)
            if write.op == "create" and unanswered_attempt
            else None
        )
        # A create sent again with the transactionId of an older version's create.
        resent = write.op == "create" and write.transaction_id != transaction_id(
            booking, plan.resource.resource_id, plan.mapping.value.recreations
        )

        def recorded(latest: EventMapping) -> EventMapping | None:
            nonlocal overtaken
            overtaken = False  # decided anew on each try (a conflict re-reads `latest`)
            # Ours is answered; so is every older write already answered. An older one
            # still unanswered may yet land (a retry under way): its times stay ours.
            in_flight = [
                w
                for w in latest.writes_in_flight
                if w.booking_version > booking.version
                or (w.booking_version < booking.version and w.still_in_flight(now))
            ]
            history = latest.model_copy(update={"writes_in_flight": in_flight})
            if write.op == "update" and latest.booking_version > booking.version:
                # A newer write was recorded first, so ours may have landed on top of it:
                # write the event again as the booking is now. Until that is done, the
                # event may show our times: they stay known as ours (answered).
                overtaken = True
                landed = [
                    w.model_copy(update={"answered": True})
                    for w in latest.writes_in_flight
                    if w.booking_version == booking.version
                ]
                return latest.model_copy(
                    update={"writes_in_flight": [*in_flight, *landed], "booking_version": 0}
                )
            if write.op != "create" and (
                latest.booking_version > booking.version or latest.event_id != write.event_id
            ):
                # A newer push, a resync or a restore recorded first: ours is history.
                return history if in_flight != latest.writes_in_flight else None
            if write.op == "delete":
                return history.model_copy(
                    update={
                        "event_id": None,
                        "change_key": None,
                        "booking_version": booking.version,
                        "synced_at": now,
                        "last_error": None,
                    }
                )
            if event is None or draft is None:  # checked above; for the type checker
                return None
            if latest.event_id is not None and (
                latest.event_id != event.event_id or latest.booking_version > booking.version
            ):
                # Another event recorded first, or this one by a newer push: ours is history.
                return history if in_flight != latest.writes_in_flight else None
            # Graph answers a retried create by its transactionId with the event as it is
            # now, never as this draft says. Sent first for an older version (its answer
            # never recorded), it shows that version: ours, but behind the booking (an
            # Outlook move of it in that while is written over). Sent for this version,
            # at other times than drafted and than any write of ours: the Outlook user
            # moved it meanwhile, so its changeKey is not kept as ours and the next look
            # applies the policy.
            as_drafted = (event.start, event.end) == (draft.start, draft.end)
            earlier = resent or (not as_drafted and latest.written_by_us(event.start, event.end))
            # Behind the booking (an earlier version's create, or a newer version recorded
            # meanwhile without an event): the event is kept, and written again.
            overtaken = earlier or latest.booking_version > booking.version
            change_key = event.change_key if as_drafted or earlier else None
            keys = (
                latest.keeping_change_key(change_key)
                if latest.event_id == event.event_id
                else {"change_key": change_key, "earlier_change_keys": []}
            )
            return history.model_copy(
                update={
                    **keys,
                    "event_id": event.event_id,
                    "pushed_start": event.start if earlier else draft.start,
                    "pushed_end": event.end if earlier else draft.end,
                    "pushed_subject": draft.subject,
                    "booking_version": 0 if overtaken else booking.version,
                    "synced_at": now,
                    "last_error": None,
                    "pending_transaction_id": None,
                    "zone_warning": zone_warning,
                    "stray_create_until": stray_until or latest.stray_create_until,
                }
            )

        mapping = plan.mapping.value
        await update_mapping(
            self._mappings, mapping.resource_id, mapping.booking_id, recorded, first=plan.mapping
        )
        event_id = event.event_id if event is not None else None
        await self._log(booking, plan, SyncOutcome.OK, zone_warning, now, event_id=event_id)
        if zone_warning:
            logger.warning(
                "booking %s in %s: %s", booking.booking_id, plan.resource.resource_id, zone_warning
            )
        if overtaken and write.op == "create":
            raise _BehindBooking(f"booking {booking.booking_id}: an older version's event")
        if overtaken:
            raise PushIncomplete(f"booking {booking.booking_id}: an older write landed late")

    async def _record_failure(
        self, booking: Booking, plan: _Planned, error: DomainError, now: datetime
    ) -> bool:
        """Keep the error on the mapping and in the log; True when worth retrying."""
        resource_id = plan.resource.resource_id
        # The gateway answers a delete of an event already gone as done, so a not-found
        # here names the mailbox (or, for an update, the event): never "already deleted".
        permanent = calendar_refused(error) or (
            isinstance(error, GraphNotFound)
            and plan.write is not None
            and plan.write.op in ("create", "delete")
        )
        message = f"{error.code}: {error.message}"[:500]
        if permanent:
            # First, so that new bookings are refused before anyone sees this failure.
            await self._connection.mark_failing(resource_id, message)

        planned = plan.mapping.value

        def failed(latest: EventMapping) -> EventMapping | None:
            # A refusal was not applied; a write that met a 5xx or no answer may have
            # been, so its times stay known as ours (an update's no longer under way).
            # A create given up on that way may still make its event after the answer we
            # stopped waiting for (Graph still at it): like one cut short (`_abandon`), it
            # stays in flight until its window ends, so a cancel's push waits for it.
            transient = isinstance(error, GraphTransient)
            still_coming = transient and plan.write.op == "create"
            in_flight = [
                w.model_copy(update={"answered": True})
                if w.booking_version == booking.version and not still_coming
                else w
                for w in latest.writes_in_flight
                if w.booking_version != booking.version or transient
            ]
            overtaken = latest.booking_version > booking.version  # a newer push recorded
            # Another write of this very version (a retry, a round's push) succeeded since
            # ours was planned: the calendar has what ours would have written.
            written_by_another = (
                latest.booking_version == booking.version
                and latest.last_error is None
                and (planned.booking_version < booking.version or planned.last_error is not None)
            )
            # The event written to is no longer the mapping's (deleted in Outlook, left
            # by a policy, replaced by a resync): no round retries a write to it.
            event_let_go = plan.write.op != "create" and latest.event_id != plan.write.event_id
            kept: dict[str, object] = {"writes_in_flight": in_flight}
            if still_coming and latest.event_id is None and latest.pending_transaction_id is None:
                # Another push took what an earlier attempt of this create made (and
                # removed it, a cancel's) while the gateway sent it again: that attempt may
                # make another event, which only a look by the booking id would find.
                kept["pending_transaction_id"] = plan.write.transaction_id
            if overtaken or written_by_another or event_let_go:
                if kept == {"writes_in_flight": latest.writes_in_flight}:
                    return None
                return latest.model_copy(update=kept)
            return latest.model_copy(update={**kept, "last_error": message})

        await update_mapping(
            self._mappings, planned.resource_id, planned.booking_id, failed, first=plan.mapping
        )
        await self._log(booking, plan, SyncOutcome.FAILED, message, now)
        logger.warning(
            "push of booking %s to %s failed: %s", booking.booking_id, resource_id, error.code
        )
        return isinstance(error, GraphThrottled | GraphTransient)

    async def _log(
        self,
        booking: Booking,
        plan: _Planned,
        outcome: SyncOutcome,
        detail: str | None,
        now: datetime,
        *,
        event_id: str | None = None,
    ) -> None:
        """`event_id`: the event written, where the plan did not know it (a create)."""
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=plan.resource.resource_id,
                at=now,
                direction=SyncDirection.OUTBOUND,
                action=f"{plan.write.op}_event",
                outcome=outcome,
                booking_id=booking.booking_id,
                event_id=plan.write.event_id or event_id,
                detail=detail,
            )
        )
