"""Booking use cases: create, cancel, reschedule, read.

Every change is written together with the queue messages it causes (the booking's
outbox) and those are sent afterwards; `flush_outbox` is safe to repeat, so a crash or a
failed send loses nothing: the next touch of the booking, or reconciliation, sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.bookings import (
    Booking,
    BookingRequest,
    BookingStatus,
    BookingWindow,
    OutboxMessage,
    TimeRange,
)
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    DomainError,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    SlotUnavailable,
)
from shared.domain.messages import (
    SYNC_OUTBOUND_QUEUE,
    BookingEvent,
    BookingEventType,
    EventSource,
    PushBooking,
)
from shared.domain.resources import Resource
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    EventMappingRepository,
    IdempotencyRecord,
    IdempotencyStore,
    MessageQueue,
    ResourceRepository,
    Stored,
    UnavailabilityRepository,
)
from shared.services.availability import (
    blocks_time,
    ensure_calendar_trusted,
    mirrored_between,
)
from shared.services.events import EventRouting
from shared.services.live_check import LiveSlotCheck
from shared.services.push import needs_push
from shared.services.slots import SlotKeeper

logger = logging.getLogger(__name__)

MAX_UPDATE_ATTEMPTS = 5


class ResourceSyncState(DomainModel):
    resource_id: str
    role: str  # "primary" | "additional"
    event_id: str | None = None
    synced_at: UtcDatetime | None = None
    error: str | None = None
    # Written, but not as asked: Graph refused the resource's time zone (event in UTC).
    warning: str | None = None
    # "pending" (also while Graph throttles its write: `error` says so) | "synced" |
    # "failed" | "removed" (cancelled, its event gone) | "detached"
    # (the Outlook user deleted the event and the resource's policy leaves it so)
    state: str


class BookingView(DomainModel):
    """A booking as the API shows it, with each resource's sync state."""

    booking_id: str
    resource_ids: list[str]
    start: UtcDatetime
    end: UtcDatetime
    title: str
    customer: dict[str, str]
    location: str | None
    notes: str | None
    external_id: str | None
    status: BookingStatus
    version: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    cancelled_at: UtcDatetime | None
    sync: list[ResourceSyncState]


class BookingService:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        bookings: BookingRepository,
        event_mappings: EventMappingRepository,
        checks: CalendarChecks,
        unavailability: UnavailabilityRepository,
        idempotency: IdempotencyStore,
        queue: MessageQueue,
        slots: SlotKeeper,
        clock: Callable[[], datetime],
        freshness_minutes: int,
        routing: EventRouting,
        window: BookingWindow,
        outbox_lease: timedelta = timedelta(seconds=30),
        live_check: LiveSlotCheck | None = None,
    ) -> None:
        """`window`: when bookings may be (create and reschedule, from the API or Outlook).
        `outbox_lease`: how long the request that wrote a change alone may send its
        messages; after that (it died before sending) whoever flushes the booking next,
        reconciliation at the latest, sends them. `live_check`: the look at the live
        calendars before an API booking is confirmed (None: the mirror alone decides)."""
        self._live_check = live_check
        self._routing = routing
        self._resources = resources
        self._bookings = bookings
        self._mappings = event_mappings
        self._checks = checks
        self._unavailability = unavailability
        self._idempotency = idempotency
        self._queue = queue
        self._slots = slots
        self._clock = clock
        self._freshness = freshness_minutes
        self._outbox_lease = outbox_lease
        self._window = window

    # -- create ------------------------------------------------------------------
    async def create(self, request: BookingRequest, idempotency_key: str | None) -> BookingView:
        """Book every resource of the request, or none.

        With an Idempotency-Key, the same key and body return the first response; the
        same key with another body raises IdempotencyKeyReused. A failed attempt keeps
        no claim and no key, so it may be retried. Raises SlotUnavailable (overlap with
        a booking or Outlook busy time), CalendarUnavailable (fail closed), InvalidInput
        (BookingTimeRefused: outside the booking window).
        """
        if idempotency_key is None:
            owner = _new_owner()
            stored = await self._write_booking(request, _new_booking_id(), owner)
            return await self.view(await self.flush_outbox(stored, owner=owner))
        request_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        record, first = await self._begin_idempotent(idempotency_key, request_hash)
        if record.value.response_body is not None:
            return BookingView.model_validate_json(record.value.response_body)
        # One request at a time per key, so the attempts can share one outbox owner: a
        # retry sends at once what an attempt that failed after booking left unsent.
        owner = f"create.{record.value.booking_id}"
        try:
            stored = await self._write_booking(
                request, record.value.booking_id, owner, resuming=not first
            )
        except DomainError:
            # Nothing was booked: free the key so the client may retry.
            await self._idempotency.delete(idempotency_key)
            raise
        # Booked: from here on a failure keeps the key, and a retry resumes this booking.
        try:
            view = await self.view(await self.flush_outbox(stored, owner=owner))
        except BaseException:
            # Let a retry resume at once (if storage takes this; else after the lease).
            ended = record.value.model_copy(update={"in_progress_until": None})
            with contextlib.suppress(DomainError):
                await self._idempotency.update(ended, record.etag)
            raise
        done = record.value.model_copy(
            update={"response_body": view.model_dump_json(), "in_progress_until": None}
        )
        await self._idempotency.update(done, record.etag)
        return view

    async def _begin_idempotent(
        self, key: str, request_hash: str
    ) -> tuple[Stored[IdempotencyRecord], bool]:
        """The key's record, held by this request unless it holds a finished response,
        and whether this request is the first to use the key. Raises ConcurrencyConflict
        while another request with the key runs."""
        now = self._clock()
        record = IdempotencyRecord(
            key=key,
            request_hash=request_hash,
            booking_id=_new_booking_id(),
            created_at=now,
            in_progress_until=now + self._outbox_lease,
        )
        try:
            return await self._idempotency.add(record), True
        except AlreadyExists:
            existing = await self._idempotency.get(key)
        in_progress = ConcurrencyConflict(
            "a request with this Idempotency-Key is in progress; retry shortly"
        )
        if existing is None:  # deleted by a failed first attempt in between
            raise in_progress
        if existing.value.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body",
                details=[{"field": "Idempotency-Key", "message": "reused with another body"}],
            )
        if existing.value.response_body is not None:
            return existing, False  # replayed
        running = existing.value.in_progress_until
        if running is not None and running > now:
            raise in_progress
        # An attempt that never finished: resume it (its booking id is reused, so nothing
        # is duplicated), holding the key as the first attempt did.
        held = existing.value.model_copy(update={"in_progress_until": now + self._outbox_lease})
        try:
            return await self._idempotency.update(held, existing.etag), False
        except ConcurrencyConflict:
            raise in_progress from None

    async def _write_booking(
        self, request: BookingRequest, booking_id: str, owner: str, *, resuming: bool = False
    ) -> Stored[Booking]:
        """Claim every resource and write the booking with its outbox (not yet sent).
        `resuming` an interrupted attempt, the booking it wrote is returned as it is."""
        if resuming:
            existing = await self._bookings.get(booking_id)
            if existing is not None:
                return existing
        now = self._clock()
        time_range = TimeRange(start=request.start, end=request.end)
        self._window.check_booking(time_range, now)
        resources = await self._load_resources(request.resource_ids)
        for resource in resources:
            ensure_calendar_trusted(resource, now, self._freshness)
        await self._refuse_outlook_busy(resources, time_range, live=True, booking_id=booking_id)
        await self._claim_all(request.resource_ids, booking_id, time_range)
        booking = Booking(
            booking_id=booking_id,
            resource_ids=request.resource_ids,
            start=request.start,
            end=request.end,
            title=request.title,
            customer=request.customer,
            location=request.location,
            notes=request.notes,
            external_id=request.external_id,
            created_at=now,
            updated_at=now,
        )
        booking = self._with_changes(booking, BookingEventType.CREATED, EventSource.API, now, owner)
        try:
            await self._mark_unconfirmed(booking)
            stored = await self._bookings.add(booking)
        except AlreadyExists:
            # Another attempt with this Idempotency-Key wrote it first: the claims are
            # that booking's now (same id, same time), so they stay.
            return await self._get(booking_id)
        except DomainError:
            await self._release_all(request.resource_ids, booking_id, time_range)
            raise
        logger.info("booking %s created on %s", booking_id, ",".join(request.resource_ids))
        return stored

    # -- cancel ------------------------------------------------------------------
    async def cancel(self, booking_id: str, source: EventSource = EventSource.API) -> BookingView:
        """Cancel; idempotent (a cancelled booking stays as it is and emits nothing)."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            stored = await self._get(booking_id)
            booking = stored.value
            if booking.status is BookingStatus.CANCELLED:
                await self._release_all(
                    booking.resource_ids,
                    booking_id,
                    booking.time_range,
                    keep_as=BookingStatus.CANCELLED,
                )
                return await self.view(await self.flush_outbox(stored))
            now = self._clock()
            owner = _new_owner()
            cancelled = booking.model_copy(
                update={
                    "status": BookingStatus.CANCELLED,
                    "version": booking.version + 1,
                    "updated_at": now,
                    "cancelled_at": now,
                }
            )
            cancelled = self._with_changes(
                cancelled, BookingEventType.CANCELLED, source, now, owner
            )
            await self._mark_unconfirmed(cancelled)
            try:
                updated = await self._bookings.update(cancelled, stored.etag)
            except ConcurrencyConflict:
                continue
            logger.info("booking %s cancelled (source %s)", booking_id, source.value)
            await self._release_all(
                booking.resource_ids,
                booking_id,
                booking.time_range,
                keep_as=BookingStatus.CANCELLED,
            )
            return await self.view(await self.flush_outbox(updated, owner=owner))
        raise ConcurrencyConflict(f"booking {booking_id} kept changing; retry")

    # -- reschedule --------------------------------------------------------------
    async def reschedule(
        self,
        booking_id: str,
        new_range: TimeRange,
        source: EventSource = EventSource.API,
        *,
        origin: str | None = None,
    ) -> BookingView:
        """Move the booking on every resource: the new slot is claimed before the old
        one is released. Raises SlotUnavailable or BookingTimeRefused (outside the
        booking window), or CalendarUnavailable (fail closed); nothing changes then.

        `origin` names the resource an Outlook move was read from: its calendar was just
        read and shows the move, so its connection state (failing on our writes, say)
        does not hold the move back; every other resource of the booking must be trusted."""
        stored = await self._get(booking_id)
        booking = stored.value
        if booking.status is BookingStatus.CANCELLED:
            raise InvalidInput(f"booking {booking_id} is cancelled and cannot be rescheduled")
        if booking.time_range == new_range:
            return await self.view(await self.flush_outbox(stored))
        now = self._clock()
        self._window.check_booking(new_range, now)
        resources = await self._load_resources(booking.resource_ids)
        for resource in resources:
            if resource.resource_id != origin:
                ensure_calendar_trusted(resource, now, self._freshness)
        # An Outlook move already happened in Outlook and reaches us late anyway: the
        # live look guards what the API is about to promise.
        await self._refuse_outlook_busy(
            resources, new_range, live=source is EventSource.API, booking_id=booking_id
        )
        await self._claim_all(booking.resource_ids, booking_id, new_range)
        try:
            for _ in range(MAX_UPDATE_ATTEMPTS):
                if not booking.status.holds_time:  # cancelled meanwhile
                    raise InvalidInput(
                        f"booking {booking_id} is cancelled and cannot be rescheduled"
                    )
                if booking.time_range == new_range:
                    # A concurrent request moved it here: the claim is that booking's now.
                    return await self.view(await self.flush_outbox(stored))
                owner = _new_owner()
                moved = self._moved(booking, new_range, source, owner)
                await self._mark_unconfirmed(moved)
                try:
                    updated = await self._bookings.update(moved, stored.etag)
                except ConcurrencyConflict:
                    stored = await self._get(booking_id)
                    booking = stored.value
                    continue
                await self._release_all(booking.resource_ids, booking_id, booking.time_range)
                logger.info("booking %s rescheduled (source %s)", booking_id, source.value)
                return await self.view(await self.flush_outbox(updated, owner=owner))
            raise ConcurrencyConflict(f"booking {booking_id} kept changing; retry")
        except BaseException:
            await self._release_unheld(booking_id, new_range)
            raise

    def _moved(
        self, booking: Booking, new_range: TimeRange, source: EventSource, owner: str
    ) -> Booking:
        now = self._clock()
        moved = booking.model_copy(
            update={
                "start": new_range.start,
                "end": new_range.end,
                "status": BookingStatus.RESCHEDULED,
                "version": booking.version + 1,
                "updated_at": now,
            }
        )
        return self._with_changes(
            moved,
            BookingEventType.RESCHEDULED,
            source,
            now,
            owner,
            data={
                "previousStart": booking.start.isoformat(),
                "previousEnd": booking.end.isoformat(),
            },
        )

    async def _release_unheld(self, booking_id: str, time_range: TimeRange) -> None:
        """Undo a claim this request made, unless the booking now holds that time (a
        concurrent request of the same booking claimed it too, and won)."""
        current = (await self._get(booking_id)).value
        if current.status.holds_time and current.time_range == time_range:
            return
        await self._release_all(current.resource_ids, booking_id, time_range)

    # -- reads ---------------------------------------------------------------------
    async def get(self, booking_id: str) -> BookingView:
        return await self.view(await self._get(booking_id))

    async def list_for_resource(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[BookingView]:
        if end <= start:
            raise InvalidInput(
                "end must be after start",
                details=[{"field": "end", "message": "must be after start"}],
            )
        if await self._resources.get(resource_id) is None:
            raise NotFound(f"resource {resource_id} does not exist")
        views: list[BookingView] = []
        seen: set[str] = set()
        for claim in await self._slots.claims_between(resource_id, start, end):
            if claim.booking_id in seen:
                continue
            seen.add(claim.booking_id)
            stored = await self._bookings.get(claim.booking_id)
            # Claims left by unfinished attempts have no booking, or an older time.
            if stored is not None and stored.value.time_range.overlaps(
                TimeRange(start=start, end=end)
            ):
                views.append(await self.view(stored))
        return sorted(views, key=lambda v: (v.start, v.booking_id))

    async def view(self, stored: Stored[Booking] | Booking) -> BookingView:
        booking = stored.value if isinstance(stored, Stored) else stored
        sync: list[ResourceSyncState] = []
        mappings = await asyncio.gather(
            *(self._mappings.get(r, booking.booking_id) for r in booking.resource_ids)
        )
        for index, (resource_id, mapping) in enumerate(
            zip(booking.resource_ids, mappings, strict=True)
        ):
            value = mapping.value if mapping else None
            if value is not None and value.detached and booking.status.holds_time:
                # The Outlook user deleted the event and the policy leaves it so: nothing
                # is written to this calendar for the booking any more.
                state = "detached"
            elif value is not None and value.last_error:
                # A throttled write is sent again for sure (it counts no try): pending,
                # with the error saying why it waits.
                state = "pending" if value.waits_out_throttling else "failed"
            elif value is not None and value.booking_version >= booking.version:
                state = "synced"
            elif (value is None or value.event_id is None) and not needs_push(
                booking, value, self._clock()
            ):
                # No event and none being created, and nothing is left to push: cancelled
                # (the Outlook user whose delete cancelled it removed the event), or over
                # (its event was removed by a disconnect, and no past event is written).
                state = "removed"
            else:
                state = "pending"
            sync.append(
                ResourceSyncState(
                    resource_id=resource_id,
                    role="primary" if index == 0 else "additional",
                    event_id=value.event_id if value else None,
                    synced_at=value.synced_at if value else None,
                    error=value.last_error if value else None,
                    warning=value.zone_warning if value else None,
                    state=state,
                )
            )
        return BookingView(
            booking_id=booking.booking_id,
            resource_ids=booking.resource_ids,
            start=booking.start,
            end=booking.end,
            title=booking.title,
            customer={"name": booking.customer.name, "email": booking.customer.email},
            location=booking.location,
            notes=booking.notes,
            external_id=booking.external_id,
            status=booking.status,
            version=booking.version,
            created_at=booking.created_at,
            updated_at=booking.updated_at,
            cancelled_at=booking.cancelled_at,
            sync=sync,
        )

    # -- outbox ------------------------------------------------------------------
    async def flush_outbox(self, stored: Stored[Booking], *, owner: str | None = None) -> Booking:
        """Send the booking's pending messages, then remove them from its outbox.

        Each message is sent by one request: the one that wrote it (`owner`) holds it
        for the lease; anyone else first claims, with the booking's ETag, only the
        messages nobody holds, so two requests touching the booking at once never send
        the same message twice. Safe to repeat; a crash after sending and before the
        removal sends again (same event id), never loses."""
        owner = owner or _new_owner()
        booking_id = stored.value.booking_id
        for _ in range(MAX_UPDATE_ATTEMPTS):
            now = self._clock()
            outbox = stored.value.outbox
            if all(m.claimed_by == owner or m.held_for_another(owner, now) for m in outbox):
                break
            until = now + self._outbox_lease
            claimed = [
                m
                if m.claimed_by == owner or m.held_for_another(owner, now)
                else m.model_copy(update={"claimed_by": owner, "claimed_until": until})
                for m in outbox
            ]
            try:
                stored = await self._bookings.update(
                    stored.value.model_copy(update={"outbox": claimed}), stored.etag
                )
            except ConcurrencyConflict:
                stored = await self._get(booking_id)
        mine = [m for m in stored.value.outbox if m.claimed_by == owner]
        if not mine:
            return stored.value
        # In order within a queue; the queues themselves at once (no order between them).
        by_queue: dict[str, list[OutboxMessage]] = {}
        for message in mine:
            by_queue.setdefault(message.queue, []).append(message)
        sent: set[tuple[str, str]] = set()

        async def send_in_order(messages: list[OutboxMessage]) -> None:
            for message in messages:
                await self._queue.send(message.queue, message.body)
                sent.add((message.queue, message.body))

        outcomes = await asyncio.gather(
            *(send_in_order(messages) for messages in by_queue.values()), return_exceptions=True
        )
        # Remove what was sent; give back the rest at once, for the next touch.
        stored = await self._settle_outbox(stored, owner, sent)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return stored.value

    async def _settle_outbox(
        self, stored: Stored[Booking], owner: str, sent: set[tuple[str, str]]
    ) -> Stored[Booking]:
        for _ in range(MAX_UPDATE_ATTEMPTS):
            outbox = [
                m
                if m.claimed_by != owner
                else m.model_copy(update={"claimed_by": None, "claimed_until": None})
                for m in stored.value.outbox
                if (m.queue, m.body) not in sent
            ]
            if outbox == stored.value.outbox:
                return stored
            try:
                return await self._bookings.update(
                    stored.value.model_copy(update={"outbox": outbox}), stored.etag
                )
            except ConcurrencyConflict:
                stored = await self._get(stored.value.booking_id)
        # Still held by us: once the lease ends, the next flush sends what is left.
        logger.warning(
            "outbox of booking %s not settled; kept for the next flush", stored.value.booking_id
        )
        return stored

    def _with_changes(
        self,
        booking: Booking,
        event_type: BookingEventType,
        source: EventSource,
        now: datetime,
        owner: str,
        *,
        data: dict[str, Any] | None = None,
    ) -> Booking:
        """The booking with its push and its booking event added to the outbox, held by
        `owner` (the request writing the change) for the lease."""
        push = PushBooking(booking_id=booking.booking_id, booking_version=booking.version)
        event = BookingEvent(
            # Stable per change, so a re-sent message is recognisably the same event.
            event_id=f"{booking.booking_id}.v{booking.version}.{event_type.value}",
            type=event_type,
            booking_id=booking.booking_id,
            occurred_at=now,
            source=source,
            data={
                "status": booking.status.value,
                "start": booking.start.isoformat(),
                "end": booking.end.isoformat(),
                "resourceIds": booking.resource_ids,
                "externalId": booking.external_id,
                **(data or {}),
            },
        )
        added = [
            OutboxMessage(queue=SYNC_OUTBOUND_QUEUE, body=push.model_dump_json()),
            *self._routing.outbox(event),
        ]
        held = {"claimed_by": owner, "claimed_until": now + self._outbox_lease}
        return booking.model_copy(
            update={"outbox": [*booking.outbox, *(m.model_copy(update=held) for m in added)]}
        )

    # -- helpers -------------------------------------------------------------------
    async def _mark_unconfirmed(self, booking: Booking) -> None:
        """Before a change is written: each calendar's event is to be confirmed, so the
        next reconcile round looks at it whatever becomes of the push (a crash, a Graph
        outage longer than the queue retries). A check marked for a write that then
        fails is dropped by the round."""
        await asyncio.gather(
            *(
                self._checks.mark(resource_id, {booking.booking_id: booking.version})
                for resource_id in booking.resource_ids
            )
        )

    async def _get(self, booking_id: str) -> Stored[Booking]:
        stored = await self._bookings.get(booking_id)
        if stored is None:
            raise NotFound(f"booking {booking_id} does not exist")
        return stored

    async def _load_resources(self, resource_ids: list[str]) -> list[Resource]:
        resources: list[Resource] = []
        found = await asyncio.gather(*(self._resources.get(r) for r in resource_ids))
        for index, (resource_id, stored) in enumerate(zip(resource_ids, found, strict=True)):
            if stored is None:
                raise InvalidInput(
                    f"resource {resource_id} does not exist",
                    details=[{"field": f"resourceIds.{index}", "message": "unknown resource"}],
                )
            resources.append(stored.value)
        return resources

    async def _refuse_outlook_busy(
        self, resources: list[Resource], time_range: TimeRange, *, live: bool, booking_id: str
    ) -> None:
        """Raise SlotUnavailable when Outlook busy time overlaps the slot: the mirror's
        first, then (`live`, with a live check) what the live calendars show that the
        mirror has not seen yet. Raises CalendarUnavailable when those cannot be read.
        Writes nothing, so a refusal leaves no claim and no booking."""
        pulling = [r for r in resources if r.settings.direction.pulls]
        mirrored = await asyncio.gather(
            *(
                mirrored_between(self._unavailability, r, time_range.start, time_range.end)
                for r in pulling
            )
        )
        for resource, blocks in zip(pulling, mirrored, strict=True):
            for block in blocks:
                if blocks_time(block.show_as, resource.settings.block_working_elsewhere):
                    raise SlotUnavailable(
                        f"{resource.resource_id} is busy in Outlook at the requested time"
                    )
        if live and self._live_check is not None:
            await self._live_check.refuse_unseen_busy(
                pulling,
                time_range,
                {r.resource_id: blocks for r, blocks in zip(pulling, mirrored, strict=True)},
                booking_id=booking_id,
            )

    async def _claim_all(
        self, resource_ids: list[str], booking_id: str, time_range: TimeRange
    ) -> None:
        claimed: list[str] = []
        try:
            # A fixed order keeps two panel bookings from blocking each other forever.
            for resource_id in sorted(resource_ids):
                await self._slots.claim(resource_id, booking_id, time_range)
                claimed.append(resource_id)
        except BaseException:
            await self._release_all(claimed, booking_id, time_range)
            raise

    async def _release_all(
        self,
        resource_ids: list[str],
        booking_id: str,
        time_range: TimeRange,
        *,
        keep_as: BookingStatus | None = None,
    ) -> None:
        for resource_id in resource_ids:
            await self._slots.release(resource_id, booking_id, time_range, keep_as=keep_as)


def _new_booking_id() -> str:
    return "bk-" + uuid.uuid4().hex


def _new_owner() -> str:
    """Names one request's claim on outbox messages."""
    return uuid.uuid4().hex
