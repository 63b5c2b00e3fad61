"""In-memory implementations of the ports, with the same ETag and claim semantics as the
Table Storage adapter, for fast unit tests of the services."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.composition import Ports, Services, build_services
from shared.domain.bookings import Booking
from shared.domain.calendar import (
    BusyTime,
    CalendarCheck,
    CalendarEvent,
    DeltaRound,
    EventDraft,
    EventMapping,
    GraphSubscription,
    SubscriptionRecord,
    Unavailability,
)
from shared.domain.claims import DayLedger, days_touched
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    DomainError,
    GraphConflict,
    GraphError,
    GraphMailboxNotFound,
    GraphNotFound,
    GraphTransient,
    InvalidInput,
    StorageUnavailable,
)
from shared.domain.messages import (
    SYNC_OUTBOUND_QUEUE,
    ConnectResource,
    PullBusyTime,
    PushBooking,
)
from shared.domain.resources import MailboxClaim, Resource
from shared.domain.sync_log import SyncLogEntry, SyncLogPage, SyncOutcome
from shared.ports import DayView, EventWrite, EventWriteResult, IdempotencyRecord, Stored
from shared.settings import Settings

M = TypeVar("M", bound=BaseModel)
_etags = itertools.count(1)


class FakeTable(Generic[M]):
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Stored[M]] = {}

    def _insert(self, key: tuple[str, str], value: M) -> Stored[M]:
        if key in self.rows:
            raise AlreadyExists(f"{key} already exists")
        self.rows[key] = Stored(value=value, etag=f"e{next(_etags)}")
        return self.rows[key]

    def _replace(self, key: tuple[str, str], value: M, etag: str) -> Stored[M]:
        current = self.rows.get(key)
        if current is None or current.etag != etag:
            raise ConcurrencyConflict(f"{key} changed")
        self.rows[key] = Stored(value=value, etag=f"e{next(_etags)}")
        return self.rows[key]


class FakeResources(FakeTable[Resource]):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0  # get calls

    async def get(self, resource_id: str) -> Stored[Resource] | None:
        self.reads += 1
        return self.rows.get((resource_id, ""))

    async def add(self, resource: Resource) -> Stored[Resource]:
        return self._insert((resource.resource_id, ""), resource)

    async def update(self, resource: Resource, etag: str) -> Stored[Resource]:
        return self._replace((resource.resource_id, ""), resource, etag)

    async def delete(self, resource_id: str) -> None:
        self.rows.pop((resource_id, ""), None)

    async def list_all(self) -> list[Stored[Resource]]:
        return list(self.rows.values())


class FakeBookings(FakeTable[Booking]):
    async def get(self, booking_id: str) -> Stored[Booking] | None:
        return self.rows.get((booking_id, ""))

    async def add(self, booking: Booking) -> Stored[Booking]:
        return self._insert((booking.booking_id, ""), booking)

    async def update(self, booking: Booking, etag: str) -> Stored[Booking]:
        return self._replace((booking.booking_id, ""), booking, etag)


class FakeEventMappings(FakeTable[EventMapping]):
    """As the table: an index row per event id a mapping ever pointed at, never removed,
    so a former event of a booking still finds the booking's mapping (now pointing at
    another event)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[tuple[str, str], str] = {}  # (resource, event id) -> booking id

    async def get(self, resource_id: str, booking_id: str) -> Stored[EventMapping] | None:
        return self.rows.get((resource_id, booking_id))

    async def find_by_event(self, resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        booking_id = self.index.get((resource_id, event_id))
        return None if booking_id is None else self.rows.get((resource_id, booking_id))

    def _indexed(self, stored: Stored[EventMapping]) -> Stored[EventMapping]:
        mapping = stored.value
        if mapping.event_id is not None:
            self.index[(mapping.resource_id, mapping.event_id)] = mapping.booking_id
        return stored

    async def add(self, mapping: EventMapping) -> Stored[EventMapping]:
        return self._indexed(self._insert((mapping.resource_id, mapping.booking_id), mapping))

    async def update(self, mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        return self._indexed(
            self._replace((mapping.resource_id, mapping.booking_id), mapping, etag)
        )

    async def list_for_resource(self, resource_id: str) -> list[Stored[EventMapping]]:
        return [row for (rid, _), row in self.rows.items() if rid == resource_id]


class FakeCalendarChecks(FakeTable[CalendarCheck]):
    async def mark(self, resource_id: str, versions: Mapping[str, int]) -> None:
        for booking_id, version in versions.items():
            key = (resource_id, booking_id)
            self.rows.pop(key, None)
            self._insert(
                key,
                CalendarCheck(
                    resource_id=resource_id,
                    booking_id=booking_id,
                    booking_version=version,
                    marked_at=datetime.now(UTC),
                ),
            )

    async def pending(self, resource_id: str) -> list[Stored[CalendarCheck]]:
        return [v for k, v in sorted(self.rows.items()) if k[0] == resource_id]

    async def clear(self, check: Stored[CalendarCheck]) -> bool:
        key = (check.value.resource_id, check.value.booking_id)
        current = self.rows.get(key)
        if current is None or current.etag != check.etag:
            return current is None
        del self.rows[key]
        return True


class FakeMailboxClaims(FakeTable[MailboxClaim]):
    async def holder(self, mailbox: str) -> Stored[MailboxClaim] | None:
        return self.rows.get((mailbox.lower(), "claim"))

    async def claim(
        self, mailbox: str, resource_id: str, etag: str | None, claimed_at: datetime
    ) -> bool:
        claim = MailboxClaim(
            mailbox=mailbox.lower(), resource_id=resource_id, claimed_at=claimed_at
        )
        try:
            if etag is None:
                self._insert((claim.mailbox, "claim"), claim)
            else:
                self._replace((claim.mailbox, "claim"), claim, etag)
        except (AlreadyExists, ConcurrencyConflict):
            return False
        return True

    async def release(self, mailbox: str, resource_id: str) -> None:
        current = await self.holder(mailbox)
        if current is not None and current.value.resource_id == resource_id:
            del self.rows[(mailbox.lower(), "claim")]


class FakeUnavailability:
    def __init__(self) -> None:
        self.blocks: dict[tuple[str, str], list[Unavailability]] = {}
        self.reads: list[str] = []  # "days" or "scan", per window read
        self.writes: list[int] = []  # replace_events calls: how many events each

    async def replace_events(
        self, resource_id: str, events: Mapping[str, list[Unavailability] | None]
    ) -> None:
        self.writes.append(len(events))
        for event_id, blocks in events.items():
            if blocks is None:
                await self.remove_event(resource_id, event_id)
            else:
                await self.replace_event(resource_id, event_id, blocks)

    async def replace_event(
        self, resource_id: str, event_id: str, blocks: list[Unavailability]
    ) -> None:
        if blocks:
            self.blocks[(resource_id, event_id)] = list(blocks)
        else:
            self.blocks.pop((resource_id, event_id), None)

    async def remove_event(self, resource_id: str, event_id: str) -> None:
        if self.blocks.pop((resource_id, event_id), None) is not None:
            return
        for key, blocks in list(self.blocks.items()):
            if key[0] == resource_id:
                kept = [b for b in blocks if b.event_id != event_id]
                if kept:
                    self.blocks[key] = kept
                else:
                    del self.blocks[key]

    async def replace_all(self, resource_id: str, blocks: list[Unavailability]) -> None:
        for key in [key for key in self.blocks if key[0] == resource_id]:
            del self.blocks[key]
        for block in blocks:
            group = block.series_master_id or block.event_id
            self.blocks.setdefault((resource_id, group), []).append(block)

    async def replace_starting_between(
        self,
        resource_id: str,
        start: datetime | None,
        end: datetime | None,
        blocks: list[Unavailability],
    ) -> None:
        def inside(block: Unavailability) -> bool:
            return (start is None or block.start >= start) and (end is None or block.start < end)

        assert all(inside(block) for block in blocks)
        for key, kept in list(self.blocks.items()):
            if key[0] != resource_id:
                continue
            rest = [block for block in kept if not inside(block)]
            if rest:
                self.blocks[key] = rest
            else:
                del self.blocks[key]
        for block in blocks:
            group = block.series_master_id or block.event_id
            self.blocks.setdefault((resource_id, group), []).append(block)

    async def list_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        self.reads.append("days")
        return self._between(resource_id, start, end)

    def _between(self, resource_id: str, start: datetime, end: datetime) -> list[Unavailability]:
        found = [
            block
            for (rid, _), blocks in self.blocks.items()
            if rid == resource_id
            for block in blocks
            if block.start < end and block.end > start
        ]
        return sorted(found, key=lambda b: b.start)

    async def scan_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        self.reads.append("scan")
        return self._between(resource_id, start, end)

    async def list_for_resource(self, resource_id: str) -> list[Unavailability]:
        return [b for (rid, _), blocks in self.blocks.items() if rid == resource_id for b in blocks]


class FakeLedger(FakeTable[DayLedger]):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def read_days(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Stored[DayLedger]]:
        keys = [(resource_id, day.isoformat()) for day in days_touched(start, end)]
        return [self.rows[key] for key in keys if key in self.rows]

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        # Check everything first: the write is all or nothing, like a transaction.
        for row, etag in rows:
            key = (row.resource_id, row.day.isoformat())
            current = self.rows.get(key)
            if etag is None and current is not None:
                raise AlreadyExists(f"{key} exists")
            if etag is not None and (current is None or current.etag != etag):
                raise ConcurrencyConflict(f"{key} changed")
        for row, _ in rows:
            key = (row.resource_id, row.day.isoformat())
            self.rows[key] = Stored(value=row, etag=f"e{next(_etags)}")
        self.writes += 1


class FakeDayViews:
    """The one read of a window's days over the fake mirror and ledger (the tables keep
    them in one partition; here each keeps its own)."""

    def __init__(self, unavailability: FakeUnavailability, ledger: FakeLedger) -> None:
        self.unavailability = unavailability
        self.ledger = ledger

    async def day_view(self, resource_id: str, start: datetime, end: datetime) -> DayView:
        self.unavailability.reads.append("days")
        blocks = self.unavailability._between(resource_id, start, end)
        rows = await self.ledger.read_days(resource_id, start, end)
        return DayView(
            busy=sorted(BusyTime(b.start, b.end, b.show_as) for b in blocks),
            ledger=[row.value for row in rows],
        )


class FakeIdempotency(FakeTable[IdempotencyRecord]):
    async def get(self, key: str) -> Stored[IdempotencyRecord] | None:
        return self.rows.get((key, ""))

    async def add(self, record: IdempotencyRecord) -> Stored[IdempotencyRecord]:
        return self._insert((record.key, ""), record)

    async def update(self, record: IdempotencyRecord, etag: str) -> Stored[IdempotencyRecord]:
        return self._replace((record.key, ""), record, etag)

    async def delete(self, key: str) -> None:
        self.rows.pop((key, ""), None)

    async def purge_older_than(self, cutoff: datetime) -> int:
        old = [k for k, row in self.rows.items() if row.value.created_at < cutoff]
        for key in old:
            del self.rows[key]
        return len(old)


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        # The delay_seconds of each send, in the order of `sent`.
        self.delays: list[int] = []
        self.fail_next = 0

    async def send(
        self, queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise StorageUnavailable("queue down")
        self.sent.append(
            (queue_name, message if isinstance(message, str) else message.model_dump_json())
        )
        self.delays.append(delay_seconds)

    def bodies(self, queue_name: str) -> list[str]:
        return [body for name, body in self.sent if name == queue_name]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeCalendar:
    """An in-memory Microsoft 365: mailboxes of events, transactionId dedupe, injectable
    errors per mailbox. Implements the CalendarGateway port."""

    def __init__(
        self, mailboxes: tuple[str, ...] = (), clock: Callable[[], datetime] | None = None
    ) -> None:
        # Graph's clock: each write's lastModifiedDateTime (none without one).
        self.clock = clock
        self.events: dict[str, dict[str, CalendarEvent]] = {m: {} for m in mailboxes}
        self.transactions: dict[tuple[str, str], str] = {}
        self.errors: dict[str, list[DomainError]] = {}
        self.batches: list[int] = []
        self.reads: list[tuple[str, str]] = []  # get_event calls: (mailbox, event id)
        self.batch_reads: list[int] = []  # get_events, read_events calls: how many ids each
        # Reads of these events fail (read_events only), as one answer of a $batch can.
        self.failing_reads: dict[str, GraphError] = {}
        self.instance_reads: list[tuple[str, str]] = []  # series_instances: (mailbox, master)
        self.view_reads = 0  # calendar_view calls
        self.delta_reads: list[str] = []  # delta calls: the mailbox of each
        # Each delta link given out: the window's events (id → changeKey) it was given at.
        self.delta_baselines: dict[str, dict[str, str | None]] = {}
        self.view_batches: list[list[str]] = []  # calendar_views calls: their mailboxes
        self.view_windows: list[tuple[datetime, datetime]] = []  # and their windows
        # Zones "Graph" refuses for writes: written in UTC, the result naming the zone.
        self.refused_zones: set[str] = set()
        self.unreachable = False
        # The app's subscriptions as Graph holds them: one per mailbox (a second is a 409).
        self.subscriptions: dict[str, GraphSubscription] = {}
        self._ids = itertools.count(1)

    def fail(self, mailbox: str, *errors: DomainError) -> None:
        self.errors.setdefault(mailbox, []).extend(errors)

    def _check(self, mailbox: str) -> None:
        queued = self.errors.get(mailbox)
        if queued:
            raise queued.pop(0)
        if mailbox not in self.events:
            raise GraphMailboxNotFound(f"mailbox {mailbox} not found")

    def _store(self, mailbox: str, event_id: str, draft: EventDraft) -> CalendarEvent:
        event = CalendarEvent(
            event_id=event_id,
            change_key=f"ck{next(self._ids)}",
            subject=draft.subject,
            start=draft.start,
            end=draft.end,
            booking_id=draft.booking_id,
            last_modified_at=self.clock() if self.clock is not None else None,
        )
        self.events[mailbox][event_id] = event
        return event

    async def check_reachable(self) -> None:
        if self.unreachable:
            raise GraphTransient("Graph did not answer")

    async def check_mailbox(self, mailbox: str) -> None:
        self._check(mailbox)

    async def create_event(
        self, mailbox: str, draft: EventDraft, transaction_id: str
    ) -> CalendarEvent:
        self._check(mailbox)
        existing = self.transactions.get((mailbox, transaction_id))
        if existing is not None and existing in self.events[mailbox]:
            return self.events[mailbox][existing]
        event_id = f"ev{next(self._ids)}"
        self.transactions[(mailbox, transaction_id)] = event_id
        return self._store(mailbox, event_id, draft)

    async def update_event(self, mailbox: str, event_id: str, draft: EventDraft) -> CalendarEvent:
        self._check(mailbox)
        if event_id not in self.events[mailbox]:
            raise GraphNotFound(f"event {event_id} not found")
        return self._store(mailbox, event_id, draft)

    async def delete_event(self, mailbox: str, event_id: str) -> None:
        self._check(mailbox)
        self.events[mailbox].pop(event_id, None)

    async def get_event(self, mailbox: str, event_id: str) -> CalendarEvent | None:
        self._check(mailbox)
        self.reads.append((mailbox, event_id))
        return self.events[mailbox].get(event_id)

    async def get_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | None]:
        self.batch_reads.append(len(event_ids))
        return {event_id: await self.get_event(mailbox, event_id) for event_id in event_ids}

    async def read_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | GraphError | None]:
        self.batch_reads.append(len(event_ids))
        read: dict[str, CalendarEvent | GraphError | None] = {}
        for event_id in event_ids:
            try:
                failure = self.failing_reads.get(event_id)
                if failure is not None:
                    raise failure
                read[event_id] = await self.get_event(mailbox, event_id)
            except GraphError as exc:
                read[event_id] = exc
        return read

    async def list_our_events(
        self, mailbox: str, *, limit: int | None = None
    ) -> list[CalendarEvent]:
        self._check(mailbox)
        ours = [e for e in self.events[mailbox].values() if e.booking_id is not None]
        return ours if limit is None else ours[:limit]

    async def find_events_for_booking(self, mailbox: str, booking_id: str) -> list[CalendarEvent]:
        return [e for e in await self.list_our_events(mailbox) if e.booking_id == booking_id]

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        self._check(mailbox)
        self.view_reads += 1
        return [e for e in self.events[mailbox].values() if e.start <= end and e.end >= start]

    async def calendar_views(
        self, mailboxes: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[CalendarEvent]]:
        self.view_batches.append(list(mailboxes))
        self.view_windows.append((start, end))
        views: dict[str, list[CalendarEvent]] = {}
        for mailbox in mailboxes:
            try:
                self._check(mailbox)
            except GraphError as exc:
                exc.mailbox = mailbox
                raise
            views[mailbox] = [
                e for e in self.events[mailbox].values() if e.start <= end and e.end >= start
            ]
        return views

    async def series_instances(
        self, mailbox: str, master_id: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        self._check(mailbox)
        self.instance_reads.append((mailbox, master_id))
        return [
            e
            for e in self.events[mailbox].values()
            if e.series_master_id == master_id and e.start <= end and e.end >= start
        ]

    async def delta(
        self, mailbox: str, start: datetime, end: datetime, delta_link: str | None
    ) -> DeltaRound:
        """As Graph's calendarView delta: without a link, every event in the window; with
        one, what changed since the round that gave it (new or changed events, and the ids
        of those gone). An event made and deleted between two rounds is never reported."""
        self.delta_reads.append(mailbox)
        # Graph's delta items carry no extended properties (delta takes no $expand), so
        # no booking id either: the caller asks which events are ours.
        current = [
            e.model_copy(update={"booking_id": None})
            for e in await self.calendar_view(mailbox, start, end)
        ]
        baseline = self.delta_baselines.get(delta_link or "", {})
        link = f"d{next(self._ids)}"
        self.delta_baselines[link] = {e.event_id: e.change_key for e in current}
        if delta_link is None:
            return DeltaRound(events=current, removed_ids=[], delta_link=link)
        seen = {e.event_id for e in current}
        return DeltaRound(
            events=[e for e in current if baseline.get(e.event_id, "") != e.change_key],
            removed_ids=[event_id for event_id in baseline if event_id not in seen],
            delta_link=link,
        )

    async def write_batch(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        self.batches.append(len(writes))
        results: list[EventWriteResult] = []
        for write in writes:
            try:
                if write.op == "create" and write.draft and write.transaction_id:
                    event = await self.create_event(
                        write.mailbox, write.draft, write.transaction_id
                    )
                elif write.op == "update" and write.draft and write.event_id:
                    event = await self.update_event(write.mailbox, write.event_id, write.draft)
                elif write.op == "delete" and write.event_id:
                    await self.delete_event(write.mailbox, write.event_id)
                    event = None
                else:
                    raise InvalidInput(f"malformed write {write}")
                refused = (
                    write.draft.time_zone
                    if write.draft is not None and write.draft.time_zone in self.refused_zones
                    else None
                )
                results.append(EventWriteResult(event=event, refused_time_zone=refused))
            except DomainError as error:
                results.append(EventWriteResult(error=error))
        return results

    async def create_subscription(
        self,
        mailbox: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires_at: datetime,
    ) -> GraphSubscription:
        self._check(mailbox)
        resource = f"/users/{mailbox}/events"
        existing = [s for s in self.subscriptions.values() if s.resource == resource]
        if existing:
            raise GraphConflict(f"Subscription Id {existing[0].subscription_id} already exists")
        created = GraphSubscription(
            subscription_id=f"sub{next(self._ids)}", expires_at=expires_at, resource=resource
        )
        self.subscriptions[created.subscription_id] = created
        return created

    async def renew_subscription(
        self, subscription_id: str, expires_at: datetime
    ) -> GraphSubscription:
        return GraphSubscription(subscription_id=subscription_id, expires_at=expires_at)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        return None

    async def list_subscriptions(self) -> list[GraphSubscription]:
        return list(self.subscriptions.values())

    async def delete_subscription(self, subscription_id: str) -> None:
        self.subscriptions.pop(subscription_id, None)


class FakeProbe:
    def __init__(self) -> None:
        self.down = False

    async def check(self) -> None:
        if self.down:
            raise StorageUnavailable("storage down")


class FakeSubscriptions(FakeTable[SubscriptionRecord]):
    async def get(self, subscription_id: str) -> Stored[SubscriptionRecord] | None:
        return self.rows.get((subscription_id, ""))

    async def save(self, record: SubscriptionRecord) -> Stored[SubscriptionRecord]:
        self.rows[(record.subscription_id, "")] = Stored(value=record, etag=f"e{next(_etags)}")
        return self.rows[(record.subscription_id, "")]

    async def delete(self, subscription_id: str) -> None:
        self.rows.pop((subscription_id, ""), None)

    async def list_all(self) -> list[Stored[SubscriptionRecord]]:
        return list(self.rows.values())


class FakeLeases:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def acquire(self, name: str, holder: str, seconds: float) -> bool:
        if self.held.get(name, holder) != holder:
            return False
        self.held[name] = holder
        return True

    async def release(self, name: str, holder: str) -> None:
        if self.held.get(name) == holder:
            del self.held[name]


class FakeSyncLog:
    def __init__(self) -> None:
        self.entries: list[SyncLogEntry] = []
        self.writes: list[int] = []  # append and append_many calls: how many entries each

    async def append(self, entry: SyncLogEntry) -> None:
        await self.append_many([entry])

    async def append_many(self, entries: Sequence[SyncLogEntry]) -> None:
        if entries:
            self.writes.append(len(entries))
        self.entries.extend(entries)

    async def page(
        self,
        resource_id: str,
        limit: int,
        *,
        outcome: SyncOutcome | None = None,
        after: str | None = None,
    ) -> SyncLogPage:
        # Keys are positions in the resource's log, newest first, compared as text as the
        # table compares its row keys; the cursor is the last key shown.
        mine = sorted(
            (e for e in self.entries if e.resource_id == resource_id),
            key=lambda e: e.at,
            reverse=True,
        )
        shown = [
            (f"{i:08d}", e)
            for i, e in enumerate(mine)
            if (after is None or f"{i:08d}" > after) and (outcome is None or e.outcome is outcome)
        ]
        if len(shown) > limit:
            return SyncLogPage(value=[e for _, e in shown[:limit]], next_page=shown[limit - 1][0])
        return SyncLogPage(value=[e for _, e in shown])

    async def purge_older_than(self, resource_id: str, cutoff: datetime) -> int:
        kept = [e for e in self.entries if e.resource_id != resource_id or e.at >= cutoff]
        purged = len(self.entries) - len(kept)
        self.entries = kept
        return purged


@dataclass
class FakeWorld:
    """Services wired to in-memory ports and a fake Microsoft 365."""

    services: Services
    ports: Ports
    calendar: FakeCalendar
    clock: Clock
    resources: FakeResources = field(init=False)
    bookings: FakeBookings = field(init=False)
    queue: FakeQueue = field(init=False)
    sync_log: FakeSyncLog = field(init=False)
    mappings: FakeEventMappings = field(init=False)

    def __post_init__(self) -> None:
        self.resources = self.ports.resources  # type: ignore[assignment]
        self.bookings = self.ports.bookings  # type: ignore[assignment]
        self.queue = self.ports.queue  # type: ignore[assignment]
        self.sync_log = self.ports.sync_log  # type: ignore[assignment]
        self.mappings = self.ports.event_mappings  # type: ignore[assignment]

    def outbound(self) -> list[PushBooking]:
        return [PushBooking.model_validate_json(b) for b in self.queue.bodies(SYNC_OUTBOUND_QUEUE)]

    async def finish_connects(self) -> None:
        """Run the worker over every queued ConnectResource (what PUT leaves), as the
        host would, and take them off the queue."""
        connects: list[ConnectResource] = []
        kept: list[tuple[str, str]] = []
        for name, body in self.queue.sent:
            if name == SYNC_OUTBOUND_QUEUE and '"connect_resource"' in body:
                connects.append(ConnectResource.model_validate_json(body))
            else:
                kept.append((name, body))
        self.queue.sent = kept
        for work in connects:
            await self.services.resources.finish_connect(work)
        await self.finish_pulls()

    async def finish_pulls(self) -> None:
        """Run the worker over every queued PullBusyTime, and those they send, until
        none is left (what a connect or a resync leaves), as the host would."""
        while True:
            pulls = [
                PullBusyTime.model_validate_json(body)
                for name, body in self.queue.sent
                if name == SYNC_OUTBOUND_QUEUE and '"pull_busy_time"' in body
            ]
            if not pulls:
                return
            self.queue.sent = [
                (name, body) for name, body in self.queue.sent if '"pull_busy_time"' not in body
            ]
            for work in pulls:
                await self.services.pulls.go_on(work)

    async def push_all(self) -> None:
        """Run the push worker over every queued push, as the host would."""
        pending = self.outbound()
        self.queue.sent = [(q, b) for q, b in self.queue.sent if q != SYNC_OUTBOUND_QUEUE]
        for message in pending:
            await self.services.push.push(message)


def fake_world(clock: Clock, mailboxes: tuple[str, ...]) -> FakeWorld:
    unavailability, ledger = FakeUnavailability(), FakeLedger()
    ports = Ports(
        storage=FakeProbe(),
        queue=FakeQueue(),
        resources=FakeResources(),
        bookings=FakeBookings(),
        event_mappings=FakeEventMappings(),
        unavailability=unavailability,
        day_views=FakeDayViews(unavailability, ledger),
        subscriptions=FakeSubscriptions(),
        sync_log=FakeSyncLog(),
        slot_ledger=ledger,
        idempotency=FakeIdempotency(),
        leases=FakeLeases(),
        calendar_checks=FakeCalendarChecks(),
        mailbox_claims=FakeMailboxClaims(),
    )
    calendar = FakeCalendar(mailboxes, clock)
    settings = Settings.model_validate(
        {
            "storage_connection_string": "UseDevelopmentStorage=true",
            "graph_tenant_id": "00000000-0000-0000-0000-0000000000aa",
            "graph_auth_mode": "emulator",
            "public_base_url": "http://127.0.0.1:7071",
        }
    )
    services = build_services(settings, ports, calendar, clock=clock)
    return FakeWorld(services=services, ports=ports, calendar=calendar, clock=clock)
