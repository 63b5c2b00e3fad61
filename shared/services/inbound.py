"""Outlook → bookings: the webhook's intake and the inbound worker.

The intake (called by the webhook within Graph's 3 s) only validates and enqueues: each
item's clientState is compared in constant time with its subscription's, and its
tenantId with ours; anything else is dropped and logged without the secret. The worker
then fetches the event's current state from Graph and applies it: our events by the
resource's policies, foreign events into the unavailability mirror.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.calendar import (
    CalendarEvent,
    EventMapping,
    EventType,
    SubscriptionRecord,
    Unavailability,
)
from shared.domain.errors import (
    GraphAccessDenied,
    GraphNotFound,
    StorageUnavailable,
    calendar_refused,
)
from shared.domain.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    SYNC_INBOUND_QUEUE,
    EventChange,
    EventChanges,
    InboundBatch,
    LifecycleEvent,
)
from shared.domain.resources import ChangeKind, Direction, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import (
    CalendarGateway,
    EventMappingRepository,
    MessageQueue,
    ResourceRepository,
    Stored,
    SubscriptionRepository,
    SyncLog,
    UnavailabilityRepository,
)
from shared.services.connection import ConnectionTracker
from shared.services.mirror import MirrorService, group_blocks, to_block
from shared.services.outlook_changes import OutlookChangeApplier
from shared.services.push import PushService
from shared.services.subscriptions import SubscriptionService

logger = logging.getLogger(__name__)

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# How long the webhook trusts what it read of a subscription. A known one is then still
# served while it is read again in the background, up to _RECORD_STALE_LIMIT_SECONDS, so
# that no acknowledgement waits on Table Storage for a subscription it has seen.
_RECORD_TTL_SECONDS = 60.0
_RECORD_STALE_LIMIT_SECONDS = 600.0
# Ids not remembered are read one by one, up to _MAX_READS_PER_POST of them per POST (a
# genuine POST holds one subscription's items, or a few). More than that, and the whole
# table is listed instead (one query), at most once per _LIST_TTL_SECONDS: a POST of
# 1,000 made-up ids costs a listing or a few reads, never 1,000.
_MAX_READS_PER_POST = 8
_LIST_TTL_SECONDS = 5.0
# An id read and not found is not read again for this long: it may be one being created
# (Graph can notify before our record of it is written).
_UNKNOWN_TTL_SECONDS = 5.0
# Known subscriptions remembered (one per connected resource), and ids read and not
# found; least recently used go first.
_MAX_REMEMBERED = 50_000
_MAX_UNKNOWN = 10_000
# Graph's largest batch.
MAX_NOTIFICATIONS_PER_POST = 1000
# The webhook's queue writes begin at least this far apart; what comes meanwhile goes in the
# next one (an idle webhook writes at once).
WRITE_SPACING_SECONDS = 0.01
# Graph delivers a notification again when its POST is answered within 10 s, even with an
# error, and may drop it when not (learn.microsoft.com/graph/change-notifications-delivery-
# webhooks, "HTTP codes and retry logic"); a storage client retrying a dropped connection
# waits far longer. So every POST is answered within this, 503 when its write is not done.
# A POST may first wait for one of the host's invocations (16 at once) that are each held
# for it when the queue stops answering: 3 s keeps the two together within Graph's 10 s.
WRITE_DEADLINE_SECONDS = 3.0
# Graph's subscription ids are GUIDs; anything else is refused before it reaches storage
# or a log line.
SUBSCRIPTION_ID_PATTERN = (
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
)


# Far above what Graph sends (an event id is about 150 characters, a changeKey 40), and
# far below what would not fit a queue message: an item too big for any message would
# fail the write of every POST packed with it.
MAX_ID_CHARS = 1024
MAX_NAME_CHARS = 64


class ResourceData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Annotated[str | None, Field(max_length=MAX_ID_CHARS)] = None
    etag: Annotated[str | None, Field(alias="@odata.etag", max_length=MAX_ID_CHARS)] = None


class GraphNotification(BaseModel):
    """One item of a Graph notification POST (change or lifecycle)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: Annotated[str, Field(alias="subscriptionId", pattern=SUBSCRIPTION_ID_PATTERN)]
    client_state: Annotated[str | None, Field(alias="clientState", max_length=256)] = None
    tenant_id: Annotated[str | None, Field(alias="tenantId", max_length=100)] = None
    # Real lifecycle notifications carry organizationId instead (docs-contrib #84).
    organization_id: Annotated[str | None, Field(alias="organizationId", max_length=100)] = None
    change_type: Annotated[str | None, Field(alias="changeType", max_length=MAX_NAME_CHARS)] = None
    lifecycle_event: Annotated[
        str | None, Field(alias="lifecycleEvent", max_length=MAX_NAME_CHARS)
    ] = None
    resource_data: Annotated[ResourceData | None, Field(alias="resourceData")] = None


class NotificationBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value: Annotated[list[GraphNotification], Field(max_length=MAX_NOTIFICATIONS_PER_POST)]


def pack_inbound_work(
    messages: Sequence[EventChange | LifecycleEvent],
) -> list[EventChanges | LifecycleEvent | InboundBatch]:
    """The queue messages carrying `messages`: the lifecycle events, then each
    subscription's changes (in arrival order) as one EventChanges, in as few messages as
    hold MAX_CHANGES_PER_MESSAGE changes (a lifecycle event counts as one) and
    MAX_MESSAGE_BYTES of JSON each; a subscription's changes are split where a message is
    full. A message of one item is that item itself; of several, an InboundBatch."""
    lifecycle = [m for m in messages if isinstance(m, LifecycleEvent)]
    by_subscription: dict[str, list[EventChange]] = {}
    for message in messages:
        if isinstance(message, EventChange):
            by_subscription.setdefault(message.subscription_id, []).append(message)
    packed = _Messages()
    for event in lifecycle:
        cost = _json_size(event) + 1  # with the comma after it
        if packed.room(0, [cost]) == 0:
            packed.new_message()
        packed.add(event, cost, 1)
    for changes in by_subscription.values():
        # Compact JSON concatenates, so an EventChanges costs its own fields (`head`)
        # plus each change with its comma.
        costs = [_json_size(change) + 1 for change in changes]
        head = _json_size(_event_changes(changes[:1])) - costs[0] + 1
        while changes:
            count = packed.room(head, costs)
            if count == 0:
                packed.new_message()
                # At least one: a change too big for any message fails its write, as it must.
                count = max(1, packed.room(head, costs))
            packed.add(_event_changes(changes[:count]), head + sum(costs[:count]), count)
            changes, costs = changes[count:], costs[count:]
    return [items[0] if len(items) == 1 else InboundBatch(items=items) for items in packed.items]


class _Messages:
    """Queue messages being filled in order, and the room left in the last one."""

    # The JSON of an InboundBatch around its items.
    _BATCH_BYTES = len(InboundBatch.model_construct(items=[]).model_dump_json())

    def __init__(self) -> None:
        self.items: list[list[EventChanges | LifecycleEvent]] = []
        self._changes = 0
        self._bytes = 0

    def new_message(self) -> None:
        self.items.append([])
        self._changes = MAX_CHANGES_PER_MESSAGE
        self._bytes = MAX_MESSAGE_BYTES - self._BATCH_BYTES

    def room(self, head: int, costs: list[int]) -> int:
        """How many of the changes costing `costs` fit in the last message after `head`."""
        left = self._bytes - head
        count = 0
        while count < min(len(costs), self._changes) and costs[count] <= left:
            left -= costs[count]
            count += 1
        return count

    def add(self, item: EventChanges | LifecycleEvent, cost: int, changes: int) -> None:
        if not self.items:
            self.new_message()
        self.items[-1].append(item)
        self._changes -= changes
        self._bytes -= cost


def _event_changes(changes: list[EventChange]) -> EventChanges:
    first = changes[0]
    return EventChanges(
        subscription_id=first.subscription_id, resource_id=first.resource_id, changes=changes
    )


def _json_size(model: BaseModel) -> int:
    return len(model.model_dump_json().encode())


def change_key_from_etag(etag: str | None) -> str | None:
    """Graph sends the changeKey as a weak ETag: W/"<changeKey>"."""
    if not etag:
        return None
    value = etag[2:] if etag.startswith("W/") else etag
    return value.strip('"') or None


class InboundWriter:
    """Writes the webhook's work to sync-inbound, in group commits.

    While one write is in flight, the work of every POST that comes meanwhile is gathered
    and written together as soon as it ends (packed by `pack_inbound_work`), and each of
    those POSTs is answered when that write is stored. Writes also begin at least
    `spacing` apart, so a queue that answers faster than POSTs come still gets them
    together. An idle webhook writes at once; a busy one writes a few messages where it
    would write one per POST: fewer queue round trips for the webhook, and fewer
    dequeues, invocations and deletes for the inbound worker.

    Every POST is answered by `deadline` after its group's first POST. A failed write
    fails every POST of its group (Graph delivers them again; handling is idempotent);
    until a write lands again, one write at a time tries the queue and the POSTs that come
    meanwhile are refused at once rather than each holding an invocation for the
    deadline. One instance per process, on the Functions worker's event loop.
    """

    def __init__(
        self,
        queue: MessageQueue,
        *,
        spacing: float = WRITE_SPACING_SECONDS,
        deadline: float = WRITE_DEADLINE_SECONDS,
    ) -> None:
        self._queue = queue
        self._spacing = spacing
        self._deadline = deadline
        # The group still taking work, and its write (which waits for the one before).
        self._forming: tuple[list[EventChange | LifecycleEvent], asyncio.Future[None]] | None
        self._forming = None
        self._last: asyncio.Future[None] | None = None
        self._last_started = -math.inf  # the event loop's time the last write began
        # The last write failed: until one lands, one write at a time tries the queue and
        # the POSTs that come meanwhile are 503 at once instead of holding an invocation.
        self._failing = False

    async def write(self, messages: Sequence[EventChange | LifecycleEvent]) -> None:
        """Returns once `messages` are stored in the queue. Raises what the write raised
        (StorageUnavailable when the queue cannot take them)."""
        if not messages:
            return
        if (
            self._forming is not None
            and self._forming[1].get_loop() is not asyncio.get_running_loop()
        ):
            self._forming = self._last = None  # left by an event loop that has ended
            self._last_started = -math.inf
            self._failing = False
        if self._forming is None:
            if self._failing and self._last is not None and not self._last.done():
                raise StorageUnavailable(
                    f"{SYNC_INBOUND_QUEUE} failed the last write and is being tried again"
                )
            group: list[EventChange | LifecycleEvent] = []
            deadline = asyncio.get_running_loop().time() + self._deadline
            self._last = asyncio.ensure_future(self._flush(group, self._last, deadline))
            # Its waiters get its outcome; this marks a failure seen even when all of them
            # stopped waiting, so asyncio does not report it as never retrieved.
            self._last.add_done_callback(_seen)
            self._forming = (group, self._last)
        group, written = self._forming
        group.extend(messages)
        # A POST that stops waiting (Graph gave up on it) does not stop its group's write.
        await asyncio.shield(written)

    async def _flush(
        self,
        group: list[EventChange | LifecycleEvent],
        previous: asyncio.Future[None] | None,
        deadline: float,
    ) -> None:
        try:
            # Every POST of the group is answered by `deadline` (the group's first POST
            # plus the deadline), stored or 503: the groups before it end by theirs.
            async with asyncio.timeout_at(deadline):
                if previous is not None and not previous.done():
                    # Its outcome is its own group's: every waiter of that group gets it.
                    await asyncio.wait([previous])
                loop = asyncio.get_running_loop()
                wait = self._last_started + self._spacing - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_started = loop.time()
                self._close(group)
                outgoing = pack_inbound_work(group)
                await asyncio.gather(*(self._queue.send(SYNC_INBOUND_QUEUE, m) for m in outgoing))
        except TimeoutError:
            self._failing = True
            raise StorageUnavailable(
                f"{SYNC_INBOUND_QUEUE} did not take the webhook's work within {self._deadline:g} s"
            ) from None
        except BaseException:
            self._failing = True
            raise
        else:
            self._failing = False
        finally:
            self._close(group)

    def _close(self, group: list[EventChange | LifecycleEvent]) -> None:
        if self._forming is not None and self._forming[0] is group:
            self._forming = None  # later work forms the next group


def _seen(write: asyncio.Future[Any]) -> None:
    if not write.cancelled() and write.exception() is not None:
        logger.debug("a queue write or subscription listing failed; its POSTs were answered 503")


class NotificationIntake:
    """Validates notifications against stored subscriptions and enqueues the good ones.

    What a stranger sends costs little: per POST at most _MAX_READS_PER_POST point reads
    or one listing of the table, and a bounded memory of ids found missing."""

    def __init__(
        self,
        *,
        subscriptions: SubscriptionRepository,
        queue: MessageQueue,
        tenant_id: str,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subscriptions = subscriptions
        self._writer = InboundWriter(queue)
        self._tenant_id = tenant_id.lower()
        self._clock = clock
        # subscription id → (record, read at), least recently used first.
        self._known: OrderedDict[str, tuple[SubscriptionRecord, float]] = OrderedDict()
        # subscription id → when it was read and not found.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._listed_at: float | None = None
        self._listing: asyncio.Future[dict[str, SubscriptionRecord]] | None = None
        # Reads of a subscription in flight, by id: every POST that needs one waits for the
        # same read (and a background re-read is one of them), so a burst of POSTs for a
        # subscription not yet remembered costs one Table read, not one each.
        self._reading: dict[str, asyncio.Task[SubscriptionRecord | None]] = {}
        self._monotonic = monotonic

    async def accept(self, batch: NotificationBatch) -> tuple[int, int]:
        """Enqueue every trusted item; returns (enqueued, dropped) and logs one line
        for the POST. Raises StorageUnavailable when the subscriptions cannot be read or
        the queue cannot take the items (Graph will retry)."""
        records = await self._records({item.subscription_id for item in batch.value})
        messages: list[EventChange | LifecycleEvent] = []
        dropped: Counter[str] = Counter()
        now = self._clock()
        for item in batch.value:
            record = records.get(item.subscription_id)
            reason = self._untrusted(item, record)
            if reason is None and record is not None:
                message = self._message(item, record, now)
                if isinstance(message, str):
                    reason = message
                else:
                    messages.append(message)
            if reason is not None:
                dropped[reason] += 1
        # Each queue write is a Storage round trip the acknowledgement waits for: one per
        # POST at most (per MAX_CHANGES_PER_MESSAGE changes), fewer when POSTs overlap.
        await self._writer.write(messages)
        total = sum(dropped.values())
        # One line per POST, whatever it holds: a flood of forged items is one line.
        reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.most_common())
        logger.log(
            logging.WARNING if total else logging.INFO,
            "graph notifications: %d enqueued, %d dropped%s",
            len(messages),
            total,
            f" ({reasons})" if reasons else "",
        )
        return len(messages), total

    def _untrusted(self, item: GraphNotification, record: SubscriptionRecord | None) -> str | None:
        if record is None:
            return "unknown subscription"
        expected = record.client_state.get_secret_value().encode()
        if not hmac.compare_digest((item.client_state or "").encode(), expected):
            return "clientState mismatch"
        if (item.tenant_id or item.organization_id or "").lower() != self._tenant_id:
            return "tenantId mismatch"
        return None

    @staticmethod
    def _message(
        item: GraphNotification, record: SubscriptionRecord, now: datetime
    ) -> EventChange | LifecycleEvent | str:
        """The queue message of a trusted item, or why it is dropped."""
        if item.lifecycle_event is not None:
            if item.lifecycle_event not in LIFECYCLE_EVENTS:
                return "unknown lifecycle event"
            return LifecycleEvent(
                subscription_id=record.subscription_id,
                resource_id=record.resource_id,
                lifecycle_event=item.lifecycle_event,  # checked above
                received_at=now,
            )
        event_id = item.resource_data.id if item.resource_data else None
        if item.change_type not in ("created", "updated", "deleted") or not event_id:
            return "malformed change"
        return EventChange(
            subscription_id=record.subscription_id,
            resource_id=record.resource_id,
            change_type=item.change_type,  # checked above
            event_id=event_id,
            change_key=change_key_from_etag(
                item.resource_data.etag if item.resource_data else None
            ),
            received_at=now,
        )

    async def _records(self, subscription_ids: set[str]) -> dict[str, SubscriptionRecord]:
        """The stored records of those of `subscription_ids` that exist. Ids neither
        remembered nor lately found missing are read, at most _MAX_READS_PER_POST of
        them; beyond that the table is listed (unless it was under _LIST_TTL_SECONDS ago;
        then the ids beyond the reads count as unknown until a later POST)."""
        found: dict[str, SubscriptionRecord] = {}
        missing: list[str] = []
        for subscription_id in subscription_ids:
            record = self._remembered(subscription_id)
            if record is not None:
                found[subscription_id] = record
            elif not self._lately_missing(subscription_id):
                missing.append(subscription_id)
        if len(missing) > _MAX_READS_PER_POST:
            listed = await self._list_all()
            if listed is not None:
                found.update((i, listed[i]) for i in missing if i in listed)
                return found
            missing = missing[:_MAX_READS_PER_POST]
        for subscription_id, record in zip(
            missing, await asyncio.gather(*(self._shared_read(i) for i in missing)), strict=True
        ):
            if record is not None:
                found[subscription_id] = record
        return found

    def _lately_missing(self, subscription_id: str) -> bool:
        read_at = self._unknown.get(subscription_id)
        if read_at is None:
            return False
        if self._monotonic() - read_at < _UNKNOWN_TTL_SECONDS:
            return True
        del self._unknown[subscription_id]
        return False

    def _remembered(self, subscription_id: str) -> SubscriptionRecord | None:
        entry = self._known.get(subscription_id)
        if entry is None:
            return None
        record, read_at = entry
        age = self._monotonic() - read_at
        if age >= _RECORD_STALE_LIMIT_SECONDS:
            return None
        self._known.move_to_end(subscription_id)
        if age >= _RECORD_TTL_SECONDS:
            self._refresh_in_background(subscription_id)
        return record

    def _remember(self, record: SubscriptionRecord, read_at: float) -> None:
        self._known[record.subscription_id] = (record, read_at)
        self._known.move_to_end(record.subscription_id)
        while len(self._known) > _MAX_REMEMBERED:
            self._known.popitem(last=False)

    async def _list_all(self) -> dict[str, SubscriptionRecord] | None:
        """Every stored subscription, remembered (the rest forgotten); None when that was
        done under _LIST_TTL_SECONDS ago. Concurrent POSTs share one listing."""
        listed_at = self._listed_at
        if listed_at is not None and self._monotonic() - listed_at < _LIST_TTL_SECONDS:
            return None
        listing = self._listing
        if (
            listing is None
            or listing.done()
            or listing.get_loop() is not asyncio.get_running_loop()
        ):
            listing = self._listing = asyncio.ensure_future(self._list())
            listing.add_done_callback(_seen)
        # A POST that stops waiting does not stop the listing the others wait for.
        return await asyncio.shield(listing)

    async def _list(self) -> dict[str, SubscriptionRecord]:
        started = self._monotonic()
        listed = {s.value.subscription_id: s.value for s in await self._subscriptions.list_all()}
        self._known.clear()
        for record in listed.values():
            self._remember(record, started)
        self._listed_at = started
        return listed

    async def _read(self, subscription_id: str) -> SubscriptionRecord | None:
        started = self._monotonic()
        stored = await self._subscriptions.get(subscription_id)
        if stored is None:
            self._known.pop(subscription_id, None)  # gone: unknown from now on
            self._unknown[subscription_id] = started
            self._unknown.move_to_end(subscription_id)
            while len(self._unknown) > _MAX_UNKNOWN:
                self._unknown.popitem(last=False)
            return None
        self._unknown.pop(subscription_id, None)
        self._remember(stored.value, started)
        return stored.value

    def _start_read(self, subscription_id: str) -> asyncio.Task[SubscriptionRecord | None]:
        """The read of `subscription_id` in flight, started if there is none."""
        task = self._reading.get(subscription_id)
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            return task
        task = asyncio.ensure_future(self._read(subscription_id))
        self._reading[subscription_id] = task

        def done(finished: asyncio.Task[SubscriptionRecord | None]) -> None:
            if self._reading.get(subscription_id) is finished:
                del self._reading[subscription_id]
            error = None if finished.cancelled() else finished.exception()
            if error is not None:
                # Its waiters get the error; a stale record stays in use, and a later
                # POST tries again.
                logger.warning(
                    "reading subscription %s failed: %s", subscription_id, type(error).__name__
                )

        task.add_done_callback(done)
        return task

    async def _shared_read(self, subscription_id: str) -> SubscriptionRecord | None:
        # A POST that stops waiting (Graph gave up on it) does not stop the others' read.
        return await asyncio.shield(self._start_read(subscription_id))

    def _refresh_in_background(self, subscription_id: str) -> None:
        self._start_read(subscription_id)


class _Pass:
    """What one pass over a resource's changes still has to write: the mirror's blocks
    by event (None: removed), and the log entries, each written once the blocks it
    reports are (`waiting` until the next mirror write); and the changes that failed."""

    def __init__(self, resource_id: str) -> None:
        self.resource_id = resource_id
        self.mirror: dict[str, list[Unavailability] | None] = {}
        self.waiting: list[tuple[EventChange, SyncLogEntry]] = []
        self.done: list[SyncLogEntry] = []
        self.failures: list[tuple[EventChange, Exception]] = []


class EventChangeHandler:
    """Applies the changed events of a mailbox: ours by policy, foreign into the mirror.

    Used for notifications and for the changes a delta round reports. It reads each
    event's current state from Graph rather than trusting the change's claim, so
    duplicates and out-of-order changes converge on the same result. A resource's changes
    handled together share their reads and writes: one read of the resource, one `$batch`
    read (of up to 20 per request) of the events Graph must be asked for, one write of the
    mirror's blocks and one of the log entries.
    """

    def __init__(
        self,
        *,
        resources: ResourceRepository,
        event_mappings: EventMappingRepository,
        unavailability: UnavailabilityRepository,
        gateway: CalendarGateway,
        mirror: MirrorService,
        applier: OutlookChangeApplier,
        push: PushService,
        connection: ConnectionTracker,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
    ) -> None:
        self._resources = resources
        self._push = push
        self._mappings = event_mappings
        self._unavailability = unavailability
        self._gateway = gateway
        self._mirror = mirror
        self._applier = applier
        self._connection = connection
        self._sync_log = sync_log
        self._clock = clock

    async def handle(self, change: EventChange) -> None:
        """Apply one change; raises what it failed with."""
        for _, failure in await self.handle_all([change]):
            raise failure

    async def handle_all(
        self, changes: Sequence[EventChange]
    ) -> list[tuple[EventChange, Exception]]:
        """Apply changes of one resource in their order; every one is tried. Returns the
        changes that failed and what with (a resource gone or taking no changes fails
        none). Idempotent, as `handle` is for each."""
        if not changes:
            return []
        resource_id = changes[0].resource_id
        # The events' mappings are read alongside the resource (a read wasted only when
        # the resource turns out to take no changes): one round trip less before Graph.
        stored, found = await asyncio.gather(
            self._resources.get(resource_id),
            asyncio.gather(
                *(self._mappings.find_by_event(resource_id, c.event_id) for c in changes),
                return_exceptions=True,
            ),
        )
        if stored is None:
            return []
        resource = stored.value
        settings = resource.settings
        work = _Pass(resource.resource_id)
        try:
            if not settings.active or settings.direction is Direction.NONE:
                for change in changes:
                    self._log(
                        work,
                        resource,
                        change,
                        "skipped: resource inactive or direction none",
                        SyncOutcome.SKIPPED,
                    )
                return []
            wanted: list[tuple[EventChange, Stored[EventMapping] | BaseException | None]] = []
            for change, mapping in zip(changes, found, strict=True):
                if ChangeKind(change.change_type) in settings.inbound_changes:
                    wanted.append((change, mapping))
                    continue
                self._log(
                    work,
                    resource,
                    change,
                    f"skipped: {change.change_type} changes are filtered out",
                    SyncOutcome.SKIPPED,
                )
            await self._apply(resource, wanted, work)
            refused = [(c, f) for c, f in work.failures if calendar_refused(f)]
            for change, failure in refused:
                self._log(
                    work,
                    resource,
                    change,
                    "left to the next round",
                    SyncOutcome.FAILED,
                    detail=f"{failure.code}: {failure.message}",
                )
        finally:
            await self._write(work)
        if refused:
            first = refused[0][1]
            await self._connection.mark_failing(
                resource.resource_id, f"{first.code}: {first.message}"
            )
        return work.failures

    async def _apply(
        self,
        resource: Resource,
        changes: list[tuple[EventChange, Stored[EventMapping] | BaseException | None]],
        work: _Pass,
    ) -> None:
        settings = resource.settings
        # What each change needs: its mapping (None: a foreign event), and the events to read.
        planned: list[tuple[EventChange, Stored[EventMapping] | None]] = []
        former: list[tuple[EventChange, EventMapping]] = []
        to_read: list[str] = []
        for change, mapping in changes:
            if isinstance(mapping, BaseException):
                if not isinstance(mapping, Exception):
                    raise mapping
                work.failures.append((change, mapping))
                continue
            if mapping is not None and mapping.value.event_id != change.event_id:
                # An event of ours that we replaced or removed ourselves (resync, restore).
                if change.change_type != "deleted" and settings.direction.pushes:
                    former.append((change, mapping.value))
                continue
            if mapping is not None:
                # A delete carries the event's last changeKey, which may be ours: never an echo.
                echo = change.change_type != "deleted" and change.change_key is not None
                if echo and mapping.value.knows_change_key(change.change_key):
                    logger.debug("echo of our own write to event %s ignored", change.event_id)
                    continue
                if not settings.direction.pushes:
                    continue
            elif not settings.direction.pulls:
                continue
            planned.append((change, mapping))
            # Deleted means deleted: Graph's DELETE moves the event to Deleted Items,
            # where a GET by its immutable id may still find it.
            if change.change_type != "deleted":
                to_read.append(change.event_id)
        read: Mapping[str, CalendarEvent | Exception | None] = {}
        try:
            if to_read:
                read = await self._gateway.read_events(settings.mailbox, to_read)
        except Exception as exc:  # noqa: BLE001 - every change it was for fails with it
            read = {event_id: exc for event_id in to_read}
        for change, mapping in planned:
            try:
                event = None
                if change.change_type != "deleted":
                    answer = read[change.event_id]
                    if isinstance(answer, Exception):
                        raise answer
                    event = answer
                if mapping is not None:
                    await self._applier.apply(
                        resource,
                        mapping,
                        event,
                        SyncDirection.INBOUND,
                        read_back=change.change_type != "deleted",
                    )
                else:
                    await self._mirror_change(resource, change, event, work)
            except Exception as exc:  # noqa: BLE001 - returned; the caller raises the first
                work.failures.append((change, exc))
        for change, mapped in former:
            try:
                await self._remove_if_duplicate(resource, change, mapped, work)
            except Exception as exc:  # noqa: BLE001 - returned; the caller raises the first
                work.failures.append((change, exc))

    async def _remove_if_duplicate(
        self, resource: Resource, change: EventChange, mapped: EventMapping, work: _Pass
    ) -> None:
        """A change, not a delete, of an event of ours the booking's mapping no longer
        points at: most often a late echo of an event since replaced, but it may be back
        (restored from Deleted Items after the restore_event policy wrote the event again;
        an immutable id survives the move). Only the calendar tells (a GET by id finds
        Deleted Items too): one listing of the booking's events. When both it and the
        mapped event are there, it is a duplicate and goes, as a full round would do."""
        if mapped.detached or mapped.event_id is None:
            return
        mailbox = resource.settings.mailbox
        found = {
            e.event_id
            for e in await self._gateway.find_events_for_booking(mailbox, mapped.booking_id)
        }
        if change.event_id not in found or mapped.event_id not in found:
            logger.debug("change of a former event %s of ours ignored", change.event_id)
            return
        await self._gateway.delete_event(mailbox, change.event_id)
        logger.warning(
            "booking %s: former event %s back in the calendar beside %s; removed",
            mapped.booking_id,
            change.event_id,
            mapped.event_id,
        )
        self._log(work, resource, change, "duplicate event of ours removed", SyncOutcome.OK)

    async def _mirror_change(
        self, resource: Resource, change: EventChange, event: CalendarEvent | None, work: _Pass
    ) -> None:
        if event is None:
            # A single event, a whole series, or one occurrence (a delta @removed).
            work.mirror[change.event_id] = None
            self._log(work, resource, change, "mirror: removed", SyncOutcome.OK, wait=True)
            return
        stamped = False
        if event.booking_id is not None:
            mapping = await self._mappings.get(resource.resource_id, event.booking_id)
            if mapping is not None and mapping.value.event_id == event.event_id:
                # Ours after all: the create's answer was recorded after this change's
                # mapping was looked for by the event's id. Applied as a change of ours
                # (an echo of our own write changes nothing).
                if resource.settings.direction.pushes:
                    await self._applier.apply(resource, mapping, event, SyncDirection.INBOUND)
                return
            # Ours but not mapped: a create's event whose answer is not recorded (yet).
            done = await self._push.settle_unmapped_event(resource, event, mapping)
            if done is not None:
                self._log(work, resource, change, done, SyncOutcome.OK)
                return
            # The id names no booking of this resource (an app wrote it, or an Outlook
            # copy of another calendar's event of ours): not ours, busy time like any other.
            event = event.model_copy(update={"booking_id": None})
            stamped = True
        if event.type is EventType.SINGLE_INSTANCE:
            block = to_block(resource.resource_id, event, time_zone=resource.settings.time_zone)
            work.mirror[event.event_id] = [block] if block else []
        else:
            # A series (or one of its occurrences) changed: re-read that series' instances
            # in the mirror window (not the whole calendar) and replace its blocks. What
            # came before is written first: a series' group may hold an occurrence that
            # an earlier change removed.
            await self._write_mirror(work)
            master_id = event.series_master_id or event.event_id
            start, end = self._mirror.window()
            mailbox = resource.settings.mailbox
            occurrences = await self._gateway.series_instances(mailbox, master_id, start, end)
            if stamped:  # its occurrences carry the series' id, and are not ours either
                occurrences = [o.model_copy(update={"booking_id": None}) for o in occurrences]
            blocks = group_blocks(
                resource.resource_id, occurrences, time_zone=resource.settings.time_zone
            ).get(master_id, [])
            await self._unavailability.replace_event(resource.resource_id, master_id, blocks)
        self._log(work, resource, change, "mirror: updated", SyncOutcome.OK, wait=True)

    async def _write_mirror(self, work: _Pass) -> None:
        """Write the blocks gathered so far; their log entries are then due, or their
        changes failed with the write."""
        events, work.mirror = work.mirror, {}
        waiting, work.waiting = work.waiting, []
        try:
            if events:
                await self._unavailability.replace_events(work.resource_id, events)
        except Exception as exc:  # noqa: BLE001 - returned; the caller raises the first
            work.failures.extend((change, exc) for change, _ in waiting)
            return
        work.done.extend(entry for _, entry in waiting)

    async def _write(self, work: _Pass) -> None:
        """The pass's last writes: the mirror's blocks, then every log entry due."""
        await self._write_mirror(work)
        await self._sync_log.append_many(work.done)

    def _log(
        self,
        work: _Pass,
        resource: Resource,
        change: EventChange,
        action: str,
        outcome: SyncOutcome,
        *,
        wait: bool = False,
        detail: str | None = None,
    ) -> None:
        entry = SyncLogEntry(
            resource_id=resource.resource_id,
            at=self._clock(),
            direction=SyncDirection.INBOUND,
            action=action[:100],
            outcome=outcome,
            event_id=change.event_id,
            detail=detail[:500] if detail else None,
        )
        if wait:
            work.waiting.append((change, entry))
        else:
            work.done.append(entry)


def _identity(change: EventChange) -> tuple[str, str, str, str | None]:
    """What tells one notification from another; the time it came in does not."""
    return (change.subscription_id, change.event_id, change.change_type, change.change_key)


def _collapse_updates(changes: list[EventChange]) -> list[EventChange]:
    """The changes with repeats applied once: identical notifications (Graph's
    redeliveries), and several `updated` of one event in one message (a room mailbox
    notifies a series master several times per action, each with its own changeKey). The
    handler reads the event's current state, so one read does for all of them; when their
    changeKeys differ the one kept carries none, so no echo check can skip a real edit."""
    firsts: dict[tuple[str, str, str, str | None], EventChange] = {}
    for change in changes:
        firsts.setdefault(_identity(change), change)
    collapsed: dict[tuple[str, str, str, str | None], EventChange] = {}
    for identity, change in firsts.items():
        if change.change_type != "updated":
            collapsed[identity] = change
            continue
        key = (change.subscription_id, change.event_id, "updated", None)
        kept = collapsed.get(key)
        if kept is None:
            collapsed[key] = change
        elif kept.change_key != change.change_key:
            collapsed[key] = kept.model_copy(update={"change_key": None})
    return list(collapsed.values())


class ResourcePasses:
    """Runs a resource's changes one pass at a time, gathering those that come meanwhile.

    While a pass over a resource's changes runs, the changes of every other message for
    that resource wait and go together in its next pass (as the intake gathers POSTs
    while a queue write is in flight), so the reads and writes a pass shares cover them
    all; an idle resource's changes start at once. A resource's changes are thereby
    applied in the order they came to this process. Each caller gets the failures of its
    own changes. One instance per process, on the Functions worker's event loop.
    """

    def __init__(self, handler: EventChangeHandler) -> None:
        self._handler = handler
        # resource id → the changes gathered for its next pass and that pass's outcome.
        self._next: dict[
            str, tuple[list[EventChange], asyncio.Future[list[tuple[EventChange, Exception]]]]
        ] = {}
        self._running: dict[str, asyncio.Future[None]] = {}

    async def run(self, changes: list[EventChange]) -> list[tuple[EventChange, Exception]]:
        """Apply `changes` (all of one resource); returns those that failed, and what with."""
        resource_id = changes[0].resource_id
        loop = asyncio.get_running_loop()
        gathered = self._next.get(resource_id)
        if gathered is None or gathered[1].get_loop() is not loop:
            gathered = ([], loop.create_future())
            self._next[resource_id] = gathered
            previous = self._running.get(resource_id)
            if previous is not None and previous.get_loop() is not loop:
                previous = None  # left by an event loop that has ended
            task = asyncio.ensure_future(self._pass(resource_id, gathered, previous))
            self._running[resource_id] = task
            task.add_done_callback(lambda done: self._finished(resource_id, done))
        group, outcome = gathered
        group.extend(changes)
        # A caller that stops waiting (its invocation timed out) does not stop the pass.
        failed = await asyncio.shield(outcome)
        mine = {id(change) for change in changes}
        return [(change, exc) for change, exc in failed if id(change) in mine]

    async def _pass(
        self,
        resource_id: str,
        gathered: tuple[list[EventChange], asyncio.Future[list[tuple[EventChange, Exception]]]],
        previous: asyncio.Future[None] | None,
    ) -> None:
        group, outcome = gathered
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        if self._next.get(resource_id) is gathered:
            del self._next[resource_id]  # later changes gather for the pass after this one
        try:
            failed = await self._handler.handle_all(group)
        except Exception as exc:  # noqa: BLE001 - every change of the pass failed with it
            failed = [(change, exc) for change in group]
        except asyncio.CancelledError:
            outcome.cancel()  # the loop is ending: so are its waiters
            raise
        outcome.set_result(failed)

    def _finished(self, resource_id: str, done: asyncio.Future[None]) -> None:
        if self._running.get(resource_id) is done:
            del self._running[resource_id]


class InboundService:
    """The inbound worker: one EventChange or LifecycleEvent at a time, idempotently."""

    def __init__(
        self,
        *,
        resources: ResourceRepository,
        changes: EventChangeHandler,
        subscriptions: SubscriptionService,
        connection: ConnectionTracker,
        reconcile: Callable[[str], Awaitable[object]],
        sync_log: SyncLog,
        clock: Callable[[], datetime],
    ) -> None:
        self._resources = resources
        self._changes = changes
        self._subscriptions = subscriptions
        self._connection = connection
        self._reconcile = reconcile
        self._sync_log = sync_log
        self._clock = clock
        self._passes = ResourcePasses(changes)

    async def handle_change(self, work: EventChange | EventChanges) -> None:
        """Apply each change; every one is tried, then the first failure is raised so the
        message is retried (handling is idempotent, so the others repeat harmlessly).
        Repeats of one notification (Graph's redeliveries, gathered into one message by
        the intake) are applied once: a handler reads the event's current state, so a
        repeat could only do again what the first did."""
        changes = work.changes if isinstance(work, EventChanges) else [work]
        distinct = _collapse_updates(changes)
        if len(distinct) < len(changes):
            logger.debug("%d repeated changes skipped", len(changes) - len(distinct))
        by_resource: dict[str, list[EventChange]] = {}
        for change in distinct:
            by_resource.setdefault(change.resource_id, []).append(change)
        failures: list[Exception] = []
        for mine in by_resource.values():
            for change, exc in await self._passes.run(mine):
                logger.warning("change of event %s failed: %s", change.event_id, type(exc).__name__)
                if calendar_refused(exc):
                    # Every delivery would meet the same answer: the resource is marked
                    # failing and its rounds, which keep trying it, catch the change up
                    # (the next delta holds it) once the calendar answers again. The
                    # message completes rather than walking to -poison.
                    continue
                failures.append(exc)
        if failures:
            raise failures[0]

    async def handle_lifecycle(self, event: LifecycleEvent) -> None:
        stored = await self._resources.get(event.resource_id)
        if stored is None or stored.value.subscription_id != event.subscription_id:
            logger.info("lifecycle %s for a replaced subscription ignored", event.lifecycle_event)
            return
        resource = stored.value
        try:
            if event.lifecycle_event == "reauthorizationRequired":
                await self._subscriptions.reauthorize(resource)
            elif event.lifecycle_event == "subscriptionRemoved":
                await self._subscriptions.subscribe(resource)
                await self._reconcile(resource.resource_id)
            else:  # missed: notifications were lost; catch up from the calendar itself
                await self._reconcile(resource.resource_id)
        except (GraphAccessDenied, GraphNotFound) as exc:
            # Every delivery would meet the same answer (a leaving user's mailbox is gone
            # with its subscriptions): recorded, and the message completes instead of
            # walking to -poison. The reconcile rounds retry the resource on their
            # schedule and renew its subscription once it answers again.
            await self._connection.mark_failing(resource.resource_id, f"{exc.code}: {exc.message}")
            if event.lifecycle_event == "subscriptionRemoved":
                await self._subscriptions.forget(resource.resource_id, event.subscription_id)
            return
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource.resource_id,
                at=self._clock(),
                direction=SyncDirection.INBOUND,
                action=f"lifecycle:{event.lifecycle_event}",
                outcome=SyncOutcome.OK,
            )
        )
