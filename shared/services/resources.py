"""Resources: connect (check the mailbox, subscribe, pull busy time), read, disconnect.

A connect is three steps: the PUT checks the mailbox, stores the resource as `connecting`
and enqueues a ConnectResource; the worker subscribes (`finish_connect`) and starts the
first pull of busy time, which goes on in slices (shared/services/pulls.py) and marks the
resource connected when it is done. The
subscription cannot be made inside the PUT: Graph validates it with a POST to our
webhook within 10 s, and a Flex Consumption instance runs one HTTP invocation at a time
for Python unless told otherwise, which the PUT would hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.calendar import (
    CREATE_WAIT_SECONDS,
    WRITE_IN_FLIGHT_SECONDS,
    CalendarEvent,
    EventMapping,
)
from shared.domain.errors import (
    ConcurrencyConflict,
    GraphAccessDenied,
    GraphError,
    GraphNotFound,
    GraphThrottled,
    GraphTransient,
    InvalidInput,
    MailboxInUse,
    NotFound,
)
from shared.domain.messages import (
    SYNC_OUTBOUND_QUEUE,
    ConnectResource,
    DisconnectResource,
    PushBooking,
)
from shared.domain.resources import (
    MIRROR_LAYOUT,
    ConnectionState,
    ConnectionStatus,
    PullPurpose,
    Resource,
    ResourceSettings,
)
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncLogPage, SyncOutcome
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    CalendarGateway,
    EventMappingRepository,
    EventWrite,
    MailboxClaims,
    MessageQueue,
    ResourceRepository,
    Stored,
    SyncLog,
)
from shared.services.connection import ConnectionTracker
from shared.services.mirror import ours_in
from shared.services.previews import TemplatePreview, TemplatePreviewRequest, preview_templates
from shared.services.pulls import BusyTimePulls
from shared.services.push import needs_push
from shared.services.resource_updates import update_resource

logger = logging.getLogger(__name__)

# Events of ours a DisconnectResource message removes (five $batch requests of 20).
REMOVE_CHUNK = 100
# How long a mailbox claim whose resource is not saved yet counts as a connect under way.
CONNECT_PENDING = timedelta(minutes=10)
# Mapping queries a resource list runs side by side.
LIST_QUERIES_IN_FLIGHT = 8


class SubscriptionKeeper(Protocol):
    """Creates and drops a resource's Graph subscription (the inbound side fills it)."""

    async def subscribe(self, resource: Resource) -> Resource: ...
    async def unsubscribe(self, resource: Resource) -> Resource: ...


class SubscriptionView(DomainModel):
    id: str | None
    expires_at: UtcDatetime | None


class ResourceView(DomainModel):
    resource_id: str
    settings: ResourceSettings
    status: ConnectionStatus
    subscription: SubscriptionView
    mapped_events: int


class ResourceService:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        event_mappings: EventMappingRepository,
        mailboxes: MailboxClaims,
        gateway: CalendarGateway,
        pulls: BusyTimePulls,
        subscriptions: SubscriptionKeeper,
        connection: ConnectionTracker,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
        queue: MessageQueue,
        bookings: BookingRepository,
        checks: CalendarChecks,
    ) -> None:
        self._bookings = bookings
        self._checks = checks
        self._queue = queue
        self._resources = resources
        self._mappings = event_mappings
        self._mailboxes = mailboxes
        self._gateway = gateway
        self._pulls = pulls
        self._subscriptions = subscriptions
        self._connection = connection
        self._sync_log = sync_log
        self._clock = clock

    async def put(self, resource_id: str, settings: ResourceSettings) -> tuple[ResourceView, bool]:
        """Create or update; returns the view and whether it was created.

        Connecting (a new resource, a changed mailbox, one that was disconnected, or one
        still connecting) checks that the mailbox answers, stores the resource as
        `connecting` and enqueues the rest (see `finish_connect`); the view's status says
        so. Raises InvalidInput when the mailbox does not exist or cannot be read,
        MailboxInUse when another resource is connected to it (one mailbox is one
        resource: two would accept bookings for the same time, and removing one's events
        would remove the other's).
        """
        for _ in range(5):
            stored = await self._resources.get(resource_id)
            previous = stored.value.settings.mailbox if stored is not None else None
            reconnect = (
                stored is None
                or previous != settings.mailbox
                or stored.value.status.state.is_ending
                or stored.value.status.state is ConnectionState.CONNECTING
            )
            if stored is not None and previous != settings.mailbox:
                await self._check_mailbox_change(stored.value, settings.mailbox)
            if reconnect:
                await self._claim_mailbox(resource_id, settings.mailbox)
                try:
                    await self._check_mailbox(settings.mailbox)
                except InvalidInput:
                    await self._mailboxes.release(settings.mailbox, resource_id)
                    raise
            now = self._clock()
            try:
                connecting = ConnectionStatus(state=ConnectionState.CONNECTING, since=now)
                if stored is None:
                    await self._resources.add(
                        Resource(
                            resource_id=resource_id,
                            settings=settings,
                            status=connecting,
                            # Every write to its mirror keeps the day rows from the start.
                            mirror_layout=MIRROR_LAYOUT,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                else:
                    update: dict[str, object] = {"settings": settings, "updated_at": now}
                    if reconnect:
                        update["status"] = connecting
                    await self._resources.update(
                        stored.value.model_copy(update=update), stored.etag
                    )
            except ConcurrencyConflict:
                continue
            if previous is not None and previous.lower() != settings.mailbox.lower():
                await self._mailboxes.release(previous, resource_id)
            if reconnect:
                await self._queue.send(
                    SYNC_OUTBOUND_QUEUE,
                    ConnectResource(resource_id=resource_id, mailbox=settings.mailbox),
                )
            elif stored is not None and _mirror_outdated(stored.value.settings, settings):
                await self._pulls.start(resource_id, PullPurpose.RESYNC)
            return await self.get(resource_id), stored is None
        raise ConcurrencyConflict(f"resource {resource_id} kept changing; retry")

    async def _check_mailbox_change(self, current: Resource, mailbox: str) -> None:
        """A resource's mappings name its events in its mailbox. Changed under them, the
        mailbox would have the rounds find those events gone from the new one (read as
        deletes in Outlook: bookings cancelled or detached) and leave them in the old
        one. So InvalidInput, naming `mailbox`, while events of ours are there, while a
        removal of them is under way (`disconnecting`), or while a create may still make
        one there. Once the resource is disconnected without removeEvents its events were
        left to the calendar; the mappings then let go of them, and the reconnect writes
        the live bookings' events in the new mailbox."""
        if current.settings.mailbox.lower() == mailbox.lower():
            return
        old, resource_id = current.settings.mailbox, current.resource_id
        state = current.status.state
        if state is ConnectionState.DISCONNECTING:
            raise _mailbox_kept(resource_id, f"our events are being removed from {old}")
        now = self._clock()
        mappings = await self._mappings.list_for_resource(resource_id)
        if any(m.value.event_may_still_land(now) for m in mappings):
            raise _mailbox_kept(
                resource_id,
                f"a create may still make an event in {old} (for up to "
                f"{WRITE_IN_FLIGHT_SECONDS} s from when it was sent): try again then",
            )
        if not any(m.value.event_id is not None for m in mappings):
            return
        if state is ConnectionState.DISCONNECTED:
            await self._clear_mappings(resource_id)
            return
        raise _mailbox_kept(
            resource_id,
            f"it has events in {old}: disconnect it first (DELETE /api/resources/"
            f"{resource_id}?removeEvents=true removes them)",
        )

    async def _claim_mailbox(self, resource_id: str, mailbox: str) -> None:
        """Hold the mailbox for this resource, or raise MailboxInUse. A claim whose
        resource is gone, disconnected or moved to another mailbox is taken over."""
        for _ in range(5):
            claim = await self._mailboxes.holder(mailbox)
            if claim is not None and claim.value.resource_id == resource_id:
                return
            if claim is None:
                # Resources connected before mailboxes were claimed hold none.
                holder = await self._connected_to(mailbox, besides=resource_id)
            elif await self._uses(claim.value.resource_id, mailbox, claim.value.claimed_at):
                holder = claim.value.resource_id
            else:
                holder = None  # a stale claim: taken over below
            if holder is not None:
                raise MailboxInUse(
                    f"mailbox {mailbox} is connected to resource {holder}; "
                    "disconnect that resource first",
                    details=[{"field": "mailbox", "message": f"in use by resource {holder}"}],
                )
            etag = claim.etag if claim else None
            if await self._mailboxes.claim(mailbox, resource_id, etag, self._clock()):
                return
        raise ConcurrencyConflict(f"mailbox {mailbox} is being connected; retry")

    async def _uses(self, resource_id: str, mailbox: str, claimed_at: datetime) -> bool:
        """Whether the claim's resource uses the mailbox, or may still be connecting to
        it (it claims before it checks the mailbox and saves)."""
        stored = await self._resources.get(resource_id)
        if stored is not None and _connected_to(stored.value, mailbox):
            return True
        connecting = self._clock() - claimed_at < CONNECT_PENDING
        # A resource saved after its claim without the mailbox has moved on from it.
        return connecting and (stored is None or stored.value.updated_at < claimed_at)

    async def _connected_to(self, mailbox: str, *, besides: str) -> str | None:
        for stored in await self._resources.list_all():
            if stored.value.resource_id != besides and _connected_to(stored.value, mailbox):
                return stored.value.resource_id
        return None

    async def _check_mailbox(self, mailbox: str) -> None:
        try:
            await self._gateway.check_mailbox(mailbox)
        except GraphNotFound as exc:
            raise InvalidInput(
                f"mailbox {mailbox} was not found in the tenant",
                details=[{"field": "mailbox", "message": "not found in Microsoft 365"}],
            ) from exc
        except GraphAccessDenied as exc:
            raise InvalidInput(
                f"the app may not read mailbox {mailbox}: grant Calendars.ReadWrite for it",
                details=[{"field": "mailbox", "message": "access denied by Microsoft 365"}],
            ) from exc

    async def finish_connect(self, work: ConnectResource) -> None:
        """Subscribe a resource a PUT left `connecting` and start its first pull.

        Idempotent: nothing happens once the resource is gone, disconnected, connected
        elsewhere (its mailbox changed since), connected with a subscription (a
        reconcile may mark it synced first; then it still lacks one) or subscribed with
        its first pull under way. A throttled or transient Graph error on subscribing is
        raised, so the queue retries it; others mark the resource failing.
        """
        stored = await self._resources.get(work.resource_id)
        if stored is None or stored.value.settings.mailbox != work.mailbox:
            return
        state = stored.value.status.state
        if state.is_ending:
            return
        if stored.value.subscription_id is not None and (
            state is not ConnectionState.CONNECTING or stored.value.status.pull is not None
        ):
            return  # connected, or subscribed with its first pull under way
        await self._connect(stored)

    async def _connect(self, stored: Stored[Resource]) -> None:
        try:
            resource = await self._subscriptions.subscribe(stored.value)
        except (GraphThrottled, GraphTransient):
            raise  # the queue tries again (a throttled message after its Retry-After)
        except GraphError as exc:
            # Saved, but not connected: the resource says why (and fails closed).
            await self._connection.mark_failing(
                stored.value.resource_id, f"subscription failed: {exc.message}"
            )
            await self._log(stored.value.resource_id, "connect", SyncOutcome.FAILED)
            return
        await self._catch_up(resource)
        if resource.settings.direction.pulls:
            # In slices, one queue message each; the last marks the resource connected.
            await self._pulls.start(resource.resource_id, PullPurpose.CONNECT)
            return
        await self._mark_connected(resource.resource_id)
        await self._log(resource.resource_id, "connected", SyncOutcome.OK)

    async def _catch_up(self, resource: Resource) -> None:
        """A reconnect: what no push could write while the resource was disconnected (or
        disconnecting) is written now, not at its next full round (an incremental one
        looks only at what changed): the events a `removeEvents` took from live bookings
        still ahead, cancels made meanwhile, and bookings made just before the
        disconnect whose first push found it under way (no mapping: their calendar
        checks, marked when they were made, name them). A new resource has neither.
        Events a removal left behind are removed first (`_remove_left_behind`)."""
        if not resource.settings.direction.pushes:
            return
        resource_id = resource.resource_id
        now = self._clock()
        gate = asyncio.Semaphore(LIST_QUERIES_IN_FLIGHT)
        mappings, checks = await asyncio.gather(
            self._mappings.list_for_resource(resource_id), self._checks.pending(resource_id)
        )
        mapped = {m.value.booking_id: m.value for m in mappings}
        unmapped = {c.value.booking_id for c in checks} - set(mapped)
        try:
            await self._remove_left_behind(resource, mapped)
        except GraphError as exc:
            # Never holds the connect or the pushes up (a connect message in poison would
            # leave the resource `connecting`): what is left is then a duplicate of the
            # new event, which a round removes.
            logger.warning(
                "events a removal left in %s not removed (%s); the pushes go out",
                resource.settings.mailbox,
                exc.code,
            )

        async def behind(booking_id: str) -> PushBooking | None:
            async with gate:
                stored = await self._bookings.get(booking_id)
            if stored is None or resource_id not in stored.value.resource_ids:
                return None
            booking = stored.value
            if not needs_push(booking, mapped.get(booking_id), now):
                return None
            return PushBooking(booking_id=booking.booking_id, booking_version=booking.version)

        for push in await asyncio.gather(*(behind(b) for b in sorted({*mapped, *unmapped}))):
            if push is not None:
                await self._queue.send(SYNC_OUTBOUND_QUEUE, push)

    async def _remove_left_behind(
        self, resource: Resource, mapped: dict[str, EventMapping]
    ) -> None:
        """Events of ours a removal let go of but could not delete: its DELETE failed,
        and the reconnect then stopped its retries. The catch-up's pushes write each
        live booking a new event (never the removed one back: a DELETE answered with an
        error may still have landed), so what is left is removed first, not a full
        round later. One listing of our events, made only when some mapping holds no
        event, none of a create on its way, and is not detached (a detached event is
        the Outlook user's now). The mappings are read again after the listing, and an
        event goes only if its booking's mapping still does not hold it and no create
        is on its way: a push may have written the booking's new event meanwhile, which
        the listing then holds too (a create is recorded before it is sent)."""
        now = self._clock()
        bare = {b for b, m in mapped.items() if _may_have_left(m, now)}
        if not bare:
            return
        mailbox = resource.settings.mailbox
        listed = [e for e in await self._gateway.list_our_events(mailbox) if e.booking_id in bare]
        if not listed:
            return
        now = self._clock()  # after the listing: a create may have been sent meanwhile
        fresh = {
            m.value.booking_id: m.value
            for m in await self._mappings.list_for_resource(resource.resource_id)
        }
        left = [
            e
            for e in listed
            if (mapping := fresh.get(e.booking_id or "")) is not None
            and _may_have_left(mapping, now)
        ]
        if not left:
            return
        results = await self._gateway.write_batch(
            [EventWrite(mailbox=mailbox, op="delete", event_id=e.event_id) for e in left]
        )
        failed = [result.error for result in results if result.error is not None]
        if failed:
            raise failed[0]
        logger.warning("%d events a removal left in %s removed on reconnect", len(left), mailbox)

    async def _mark_connected(self, resource_id: str) -> None:
        now = self._clock()
        await update_resource(
            self._resources,
            resource_id,
            lambda current: (
                current.model_copy(
                    update={"status": ConnectionStatus(state=ConnectionState.CONNECTED, since=now)}
                )
                if current.status.state is ConnectionState.CONNECTING
                else None
            ),
        )

    async def get(self, resource_id: str) -> ResourceView:
        stored = await self._resources.get(resource_id)
        if stored is None:
            raise NotFound(f"resource {resource_id} does not exist")
        return await self._view(stored.value)

    async def _view(self, resource: Resource) -> ResourceView:
        mappings = await self._mappings.list_for_resource(resource.resource_id)
        return ResourceView(
            resource_id=resource.resource_id,
            settings=resource.settings,
            status=resource.status,
            subscription=SubscriptionView(
                id=resource.subscription_id, expires_at=resource.subscription_expires_at
            ),
            mapped_events=sum(1 for m in mappings if m.value.event_id is not None),
        )

    async def disconnect(self, resource_id: str, *, remove_events: bool) -> ResourceView:
        """Drop the subscription and mark the resource disconnected. Idempotent.

        With `remove_events`, while any event of ours is left in the calendar the
        resource is marked `disconnecting` instead and a DisconnectResource is enqueued:
        the worker removes them (`remove_events`) and then marks it disconnected; the
        view's status says which. A DELETE without it stops such a removal."""
        stored = await self._resources.get(resource_id)
        if stored is None:
            raise NotFound(f"resource {resource_id} does not exist")
        resource = await self._subscriptions.unsubscribe(stored.value)
        mailbox = resource.settings.mailbox
        if remove_events and (
            await self._ours(resource_id, mailbox, limit=1)
            or await self._creates_under_way(resource_id)
        ):
            now = self._clock()
            await update_resource(
                self._resources,
                resource_id,
                _to_state(ConnectionState.DISCONNECTING, now),
            )
            await self._queue.send(
                SYNC_OUTBOUND_QUEUE, DisconnectResource(resource_id=resource_id, mailbox=mailbox)
            )
            await self._log(resource_id, "disconnecting", SyncOutcome.OK)
            return await self.get(resource_id)
        if remove_events:
            await self._clear_mappings(resource_id)
        await self._disconnected(resource_id, mailbox)
        return await self.get(resource_id)

    async def remove_events(self, work: DisconnectResource) -> None:
        """Remove up to REMOVE_CHUNK of our events from a `disconnecting` resource's
        calendar and send the message again; once none is left, mark the resource
        disconnected. Nothing happens once the resource is gone, reconnected or
        disconnected otherwise. Idempotent. Graph errors are raised (the queue tries
        again; a throttled message after its Retry-After)."""
        if not await self._still_disconnecting(work):
            return
        ours = await self._ours(work.resource_id, work.mailbox, limit=REMOVE_CHUNK)
        if not ours and await self._creates_under_way(work.resource_id):
            # A create sent before the disconnect may still make an event (Graph slow to
            # answer it, or to answer an attempt of it the gateway then sent again):
            # looked for again until it can no longer land.
            await self._queue.send(SYNC_OUTBOUND_QUEUE, work, delay_seconds=CREATE_WAIT_SECONDS)
            return
        if not ours:
            if not await self._still_disconnecting(work):
                return  # reconnected while the calendar was listed
            await self._clear_mappings(work.resource_id)
            done = _removal_done(work, self._clock())
            if await update_resource(self._resources, work.resource_id, done):
                await self._mailboxes.release(work.mailbox, work.resource_id)
                await self._log(work.resource_id, "disconnected", SyncOutcome.OK)
            else:
                # Reconnected meanwhile: never marked disconnected over it, and what the
                # mappings just let go of is written again.
                after = await self._resources.get(work.resource_id)
                if after is not None:
                    await self._catch_up(after.value)
            return
        if not await self._still_disconnecting(work):
            return  # reconnected while the calendar was listed: its events stay
        # Mappings first, as a resync does: a late notification of these deletes then
        # finds no mapping, and is not taken for an Outlook user's delete.
        for event in ours:
            mapping = await self._mappings.get(work.resource_id, event.booking_id or "")
            if mapping is not None and mapping.value.event_id == event.event_id:
                await self._mappings.update(_unmapped(mapping.value), mapping.etag)
        results = await self._gateway.write_batch(
            [EventWrite(mailbox=work.mailbox, op="delete", event_id=e.event_id) for e in ours]
        )
        after = await self._resources.get(work.resource_id)
        if after is not None and after.value.status.state is not ConnectionState.DISCONNECTING:
            # Reconnected while this chunk was on its way: the connect's catch-up may
            # have looked before these mappings let go of their events, so the live
            # bookings among them are written again here (pushes are idempotent).
            await self._catch_up(after.value)
        failed = [result.error for result in results if result.error is not None]
        if failed:
            raise failed[0]
        logger.info("%d events removed from %s", len(ours), work.mailbox)
        await self._queue.send(SYNC_OUTBOUND_QUEUE, work)

    async def _still_disconnecting(self, work: DisconnectResource) -> bool:
        stored = await self._resources.get(work.resource_id)
        return (
            stored is not None
            and stored.value.status.state is ConnectionState.DISCONNECTING
            and stored.value.settings.mailbox == work.mailbox
        )

    async def _ours(self, resource_id: str, mailbox: str, *, limit: int) -> list[CalendarEvent]:
        """Up to `limit` of our events in the calendar: carrying a booking id that names a
        booking of the resource (another id, an app's or a copy's, is not ours to remove).
        Every event carrying one is listed, so that those not ours never fill a chunk."""
        stamped = await self._gateway.list_our_events(mailbox)
        return (await ours_in(self._bookings, resource_id, stamped))[:limit]

    async def _creates_under_way(self, resource_id: str) -> bool:
        """Whether a create of one of our events in the resource's calendar was sent and
        may still make an event: its own, or a second one from an attempt of it that was
        never answered."""
        now = self._clock()
        mappings = await self._mappings.list_for_resource(resource_id)
        return any(m.value.event_may_still_land(now) for m in mappings)

    async def _clear_mappings(self, resource_id: str) -> None:
        for mapping in await self._mappings.list_for_resource(resource_id):
            if mapping.value.event_id is not None:
                await self._mappings.update(_unmapped(mapping.value), mapping.etag)

    async def _disconnected(self, resource_id: str, mailbox: str) -> None:
        await update_resource(
            self._resources, resource_id, _to_state(ConnectionState.DISCONNECTED, self._clock())
        )
        await self._mailboxes.release(mailbox, resource_id)
        await self._log(resource_id, "disconnected", SyncOutcome.OK)

    async def list_all(self) -> list[ResourceView]:
        """Every resource (connected or not), ordered by id, each as `get` shows it."""
        stored = sorted(await self._resources.list_all(), key=lambda s: s.value.resource_id)
        # One mapping query per resource, a few at a time: the list is for people (the
        # console), not for a hot path.
        gate = asyncio.Semaphore(LIST_QUERIES_IN_FLIGHT)

        async def view(resource: Resource) -> ResourceView:
            async with gate:
                return await self._view(resource)

        return list(await asyncio.gather(*(view(s.value) for s in stored)))

    def preview(self, request: TemplatePreviewRequest) -> TemplatePreview:
        """The subject and body a sample booking's event would get from the templates."""
        return preview_templates(request, self._clock)

    async def sync_log(
        self,
        resource_id: str,
        limit: int,
        *,
        outcome: SyncOutcome | None = None,
        after: str | None = None,
    ) -> SyncLogPage:
        """A page of the resource's sync log, newest first (see SyncLog.page). Raises
        NotFound for an unknown resource."""
        if await self._resources.get(resource_id) is None:
            raise NotFound(f"resource {resource_id} does not exist")
        return await self._sync_log.page(resource_id, limit, outcome=outcome, after=after)

    async def _log(self, resource_id: str, action: str, outcome: SyncOutcome) -> None:
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource_id,
                at=self._clock(),
                direction=SyncDirection.CONNECTION,
                action=action,
                outcome=outcome,
            )
        )


def _to_state(state: ConnectionState, now: datetime) -> Callable[[Resource], Resource | None]:
    def change(current: Resource) -> Resource | None:
        if current.status.state is state:
            return None
        status = current.status.model_copy(
            update={"state": state, "reason": None, "since": now, "pull": None}
        )
        return current.model_copy(update={"status": status})

    return change


def _mirror_outdated(before: ResourceSettings, after: ResourceSettings) -> bool:
    """Whether a settings change leaves the mirror built on what no longer holds: a
    resource that starts pulling has nothing mirrored, and all-day events block the
    resource's own local days, so a new time zone moves them. The busy time is pulled
    again (what availability reads until then is the old mirror, as during any pull)."""
    if not after.direction.pulls:
        return False
    return not before.direction.pulls or before.time_zone != after.time_zone


def _mailbox_kept(resource_id: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"resource {resource_id} keeps its mailbox: {why}",
        details=[{"field": "mailbox", "message": f"cannot change now: {why}"}],
    )


def _may_have_left(mapping: EventMapping, now: datetime) -> bool:
    """Whether the booking's events in the calendar may be ones a removal left: its
    mapping holds none, was not detached, and no create of it is on its way."""
    return (
        mapping.event_id is None and not mapping.detached and not mapping.event_may_still_land(now)
    )


def _unmapped(mapping: EventMapping) -> EventMapping:
    """The mapping of an event we removed on a disconnect: the booking's calendar no
    longer holds it (pending, not synced), and a reconnect writes it again, under a new
    transactionId: Graph never hands back the removed event, whose delete may still be
    on its way (its notification then names an event no mapping holds)."""
    return mapping.model_copy(
        update={
            "event_id": None,
            "change_key": None,
            "booking_version": 0,
            "pending_transaction_id": None,
            "recreations": mapping.recreations + 1,
        }
    )


def _removal_done(work: DisconnectResource, now: datetime) -> Callable[[Resource], Resource | None]:
    """Disconnected, unless a PUT reconnected the resource (or moved it to another
    mailbox) while its events were being removed."""
    to_disconnected = _to_state(ConnectionState.DISCONNECTED, now)

    def change(current: Resource) -> Resource | None:
        if (
            current.status.state is not ConnectionState.DISCONNECTING
            or current.settings.mailbox != work.mailbox
        ):
            return None
        return to_disconnected(current)

    return change


def _connected_to(resource: Resource, mailbox: str) -> bool:
    return (
        resource.settings.mailbox.lower() == mailbox.lower()
        and resource.status.state is not ConnectionState.DISCONNECTED
    )
