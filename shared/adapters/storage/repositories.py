"""One repository per entity kind, over Table Storage.

Key scheme (table name = TABLE_NAME_PREFIX + kind). Partitions follow the resource (or
the subscription / booking they belong to); no partition is keyed by time.

| kind            | PartitionKey     | RowKey                                   |
|-----------------|------------------|------------------------------------------|
| resources       | resource id      | "resource"                               |
| bookings        | booking id       | "booking"                                |
| eventmappings   | resource id      | "booking|<booking id>" (the mapping)     |
|                 | resource id      | "event|<event id>" (index → booking id)  |
|                 | resource id      | "check|<booking id>" (not yet confirmed) |
| unavailability  | resource id      | "<event or series id>|<start, ISO UTC>"  |
| subscriptions   | subscription id  | "subscription"                           |
| synclog         | resource id      | "<inverted epoch ms>-<random>" (newest first) |
| slotledger      | resource id      | "day|<YYYY-MM-DD>" (the UTC day's claims) |
|                 | resource id      | "day|<YYYY-MM-DD>|busy|<page>" (the day's mirror blocks) |
| idempotency     | sha256(key)      | "request"                                |
| leases          | lease name       | "lease"                                  |
| mailboxes       | mailbox, lower case | "claim" (the resource using it)       |
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel

from shared.adapters.storage.busy_days import (
    DAY_ROW_PREFIX,
    SLOT_LEDGER,
    BusyDayTable,
    DayBlocks,
    DayChange,
    block_days,
    block_key,
    by_day,
    is_ledger_row,
)
from shared.adapters.storage.tables import (
    DATA_PROPERTY,
    MAX_TRANSACTION_ENTITIES,
    EntityTable,
    TableStore,
    Transaction,
    encode_key,
)
from shared.domain.bookings import Booking
from shared.domain.calendar import (
    CalendarCheck,
    EventMapping,
    SubscriptionRecord,
    Unavailability,
)
from shared.domain.claims import DayLedger, days_touched
from shared.domain.errors import AlreadyExists, ConcurrencyConflict
from shared.domain.resources import MailboxClaim, Resource
from shared.domain.sync_log import SyncLogEntry, SyncLogPage, SyncOutcome
from shared.ports import IdempotencyRecord, Stored

RESOURCES = "resources"
BOOKINGS = "bookings"
EVENT_MAPPINGS = "eventmappings"
UNAVAILABILITY = "unavailability"
SUBSCRIPTIONS = "subscriptions"
SYNC_LOG = "synclog"
IDEMPOTENCY = "idempotency"
LEASES = "leases"
MAILBOXES = "mailboxes"

RESOURCE_ROW = "resource"
BOOKING_ROW = "booking"
SUBSCRIPTION_ROW = "subscription"
REQUEST_ROW = "request"
LEASE_ROW = "lease"
CLAIM_ROW = "claim"
CHECK_ROW_PREFIX = "check|"
MAPPING_ROW_PREFIX = "booking|"
EVENT_INDEX_ROW_PREFIX = "event|"
# Row keys of one group share "<group>|"; "}" sorts right after "|", closing the range.
_GROUP_END = "}"
_SYNC_LOG_CEILING_MS = 10**13 - 1


class ResourceTable(EntityTable[Resource]):
    kind = RESOURCES
    model = Resource

    def keys(self, value: Resource) -> tuple[str, str]:
        return value.resource_id, RESOURCE_ROW

    def index_properties(self, value: Resource) -> Mapping[str, Any]:
        return {"Mailbox": value.settings.mailbox, "Active": value.settings.active}

    async def get(self, resource_id: str) -> Stored[Resource] | None:
        return await self.get_by_keys(resource_id, RESOURCE_ROW)

    async def add(self, resource: Resource) -> Stored[Resource]:
        return await self.insert(resource)

    async def update(self, resource: Resource, etag: str) -> Stored[Resource]:
        return await self.replace(resource, etag)

    async def delete(self, resource_id: str) -> None:
        await self.delete_by_keys(resource_id, RESOURCE_ROW)

    async def list_all(self) -> list[Stored[Resource]]:
        return await self.query()


class BookingTable(EntityTable[Booking]):
    kind = BOOKINGS
    model = Booking

    def keys(self, value: Booking) -> tuple[str, str]:
        return value.booking_id, BOOKING_ROW

    def index_properties(self, value: Booking) -> Mapping[str, Any]:
        return {"Start": value.start, "End": value.end, "Status": value.status.value}

    async def get(self, booking_id: str) -> Stored[Booking] | None:
        return await self.get_by_keys(booking_id, BOOKING_ROW)

    async def add(self, booking: Booking) -> Stored[Booking]:
        return await self.insert(booking)

    async def update(self, booking: Booking, etag: str) -> Stored[Booking]:
        return await self.replace(booking, etag)


class EventMappingTable(EntityTable[EventMapping]):
    """Mappings plus an event-id index row in the same partition, written together."""

    kind = EVENT_MAPPINGS
    model = EventMapping

    def keys(self, value: EventMapping) -> tuple[str, str]:
        return value.resource_id, MAPPING_ROW_PREFIX + value.booking_id

    def index_properties(self, value: EventMapping) -> Mapping[str, Any]:
        return {"EventId": value.event_id or "", "BookingId": value.booking_id}

    def _index_row(self, mapping: EventMapping) -> dict[str, Any] | None:
        if mapping.event_id is None:
            return None
        return {
            "PartitionKey": encode_key(mapping.resource_id),
            "RowKey": encode_key(EVENT_INDEX_ROW_PREFIX + mapping.event_id),
            "BookingId": mapping.booking_id,
        }

    async def get(self, resource_id: str, booking_id: str) -> Stored[EventMapping] | None:
        return await self.get_by_keys(resource_id, MAPPING_ROW_PREFIX + booking_id)

    async def find_by_event(self, resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        # A point read (the index row's keys are known): cheaper than a query, and most
        # changes' events are not ours, so the row is usually absent.
        index = await self.get_properties(
            resource_id, EVENT_INDEX_ROW_PREFIX + event_id, ["BookingId"]
        )
        if index is None:
            return None
        return await self.get(resource_id, str(index["BookingId"]))

    async def add(self, mapping: EventMapping) -> Stored[EventMapping]:
        transaction = Transaction()
        transaction.create(self.to_entity(mapping))
        index = self._index_row(mapping)
        if index is not None:
            transaction.upsert(index)
        etags = await self.commit(transaction)
        return Stored(value=mapping, etag=etags[0])

    async def update(self, mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        transaction = Transaction()
        transaction.update(self.to_entity(mapping), etag)
        index = self._index_row(mapping)
        if index is not None:
            transaction.upsert(index)
        etags = await self.commit(transaction)
        return Stored(value=mapping, etag=etags[0])

    async def list_for_resource(self, resource_id: str) -> list[Stored[EventMapping]]:
        return await self.query(
            resource_id,
            "RowKey ge @lo and RowKey lt @hi",
            {"lo": MAPPING_ROW_PREFIX, "hi": MAPPING_ROW_PREFIX[:-1] + _GROUP_END},
        )


class CalendarCheckTable(EntityTable[CalendarCheck]):
    """Unconfirmed bookings of a resource, in its event-mappings partition."""

    kind = EVENT_MAPPINGS
    model = CalendarCheck

    def keys(self, value: CalendarCheck) -> tuple[str, str]:
        return value.resource_id, CHECK_ROW_PREFIX + value.booking_id

    async def mark(self, resource_id: str, versions: Mapping[str, int]) -> None:
        now = datetime.now(UTC)
        checks = [
            self.to_entity(
                CalendarCheck(
                    resource_id=resource_id,
                    booking_id=booking_id,
                    booking_version=version,
                    marked_at=now,
                )
            )
            for booking_id, version in versions.items()
        ]
        # One partition: as few transactions as Azure allows (100 entities each).
        for start in range(0, len(checks), MAX_TRANSACTION_ENTITIES):
            transaction = Transaction()
            for entity in checks[start : start + MAX_TRANSACTION_ENTITIES]:
                transaction.upsert(entity)
            await self.commit(transaction)

    async def pending(self, resource_id: str) -> list[Stored[CalendarCheck]]:
        return await self.query(
            resource_id,
            "RowKey ge @lo and RowKey lt @hi",
            {"lo": CHECK_ROW_PREFIX, "hi": CHECK_ROW_PREFIX[:-1] + _GROUP_END},
        )

    async def clear(self, check: Stored[CalendarCheck]) -> bool:
        resource_id, row_key = self.keys(check.value)
        try:
            await self.delete_by_keys(resource_id, row_key, etag=check.etag)
        except ConcurrencyConflict:
            return False  # marked again meanwhile: still to be confirmed
        return True


class MailboxClaimTable(EntityTable[MailboxClaim]):
    """Which resource uses a mailbox: insert-if-absent, so two connects never share one."""

    kind = MAILBOXES
    model = MailboxClaim

    def keys(self, value: MailboxClaim) -> tuple[str, str]:
        return value.mailbox, CLAIM_ROW

    async def holder(self, mailbox: str) -> Stored[MailboxClaim] | None:
        return await self.get_by_keys(mailbox.lower(), CLAIM_ROW)

    async def claim(
        self, mailbox: str, resource_id: str, etag: str | None, claimed_at: datetime
    ) -> bool:
        """Take the mailbox for `resource_id`: insert when `etag` is None, else replace
        that version of another's claim. False when another writer got there first."""
        claim = MailboxClaim(
            mailbox=mailbox.lower(), resource_id=resource_id, claimed_at=claimed_at
        )
        try:
            if etag is None:
                await self.insert(claim)
            else:
                await self.replace(claim, etag)
        except (AlreadyExists, ConcurrencyConflict):
            return False
        return True

    async def release(self, mailbox: str, resource_id: str) -> None:
        current = await self.holder(mailbox)
        if current is not None and current.value.resource_id == resource_id:
            with contextlib.suppress(ConcurrencyConflict):
                await self.delete_by_keys(mailbox.lower(), CLAIM_ROW, etag=current.etag)


class UnavailabilityTable(EntityTable[Unavailability]):
    """The mirror: a row per busy block (what each event holds, found by event), and the
    same blocks by UTC day next to the slot ledger's days (what a window holds, found by
    one RowKey range; shared/adapters/storage/busy_days.py). A write of some events changes their
    day rows, then their block rows, then checks their day rows again, by the same
    difference: a failure after the first step is repaired by the next write of those
    events (their block rows still differ), and a full replace running meanwhile cannot
    leave the days without the change. A full replace rebuilds the day rows whole first,
    which repairs whatever an interrupted write left."""

    kind = UNAVAILABILITY
    model = Unavailability

    def __init__(self, store: TableStore) -> None:
        super().__init__(store)
        self.days = BusyDayTable(store)

    def keys(self, value: Unavailability) -> tuple[str, str]:
        return value.resource_id, block_key(value)

    def index_properties(self, value: Unavailability) -> Mapping[str, Any]:
        # EventId finds one occurrence's block inside its series' group.
        return {"Start": value.start, "End": value.end, "EventId": value.event_id}

    async def replace_event(
        self, resource_id: str, event_id: str, blocks: list[Unavailability]
    ) -> None:
        existing = await self._event_rows(resource_id, event_id)
        await self._write_difference(resource_id, existing, blocks)

    async def remove_event(self, resource_id: str, event_id: str) -> None:
        await self._write_difference(
            resource_id, await self._removed_rows(resource_id, event_id), []
        )

    async def replace_events(
        self, resource_id: str, events: Mapping[str, list[Unavailability] | None]
    ) -> None:
        # Each event's rows are read side by side; the difference of them all is then one
        # write: one day-row update, and block rows 100 per transaction.
        async def existing(
            event_id: str, blocks: list[Unavailability] | None
        ) -> list[Unavailability]:
            if blocks is None:
                return await self._removed_rows(resource_id, event_id)
            return await self._event_rows(resource_id, event_id)

        found = await asyncio.gather(*(existing(i, b) for i, b in events.items()))
        wanted = [block for blocks in events.values() for block in blocks or []]
        await self._write_difference(resource_id, [b for rows in found for b in rows], wanted)

    async def _event_rows(self, resource_id: str, event_id: str) -> list[Unavailability]:
        group = encode_key(event_id + "|")
        rows = await self.query(
            resource_id,
            "RowKey ge @lo and RowKey lt @hi",
            {"lo": group, "hi": group[:-1] + _GROUP_END},
        )
        return [row.value for row in rows]

    async def _removed_rows(self, resource_id: str, event_id: str) -> list[Unavailability]:
        grouped = await self._event_rows(resource_id, event_id)
        if grouped:
            return grouped
        # An occurrence's block is grouped under its series master: found by EventId.
        found = await self.query(resource_id, "EventId eq @id", {"id": event_id})
        return [row.value for row in found]

    async def replace_all(self, resource_id: str, blocks: list[Unavailability]) -> None:
        # One read of the partition instead of one range query per event: on a calendar of
        # thousands of events the per-event reads, not the writes, took the time. The day
        # rows are rebuilt whole (any day not in `blocks` loses its rows), which also
        # repairs whatever an interrupted write left behind.
        await self.days.replace_all(resource_id, blocks)
        await self._write_difference(
            resource_id, await self.list_for_resource(resource_id), blocks, days_done=True
        )

    async def replace_starting_between(
        self,
        resource_id: str,
        start: datetime | None,
        end: datetime | None,
        blocks: list[Unavailability],
    ) -> None:
        clauses: list[str] = []
        parameters: dict[str, Any] = {}
        if start is not None:
            clauses.append("Start ge @start")
            parameters["start"] = start
        if end is not None:
            clauses.append("Start lt @end")
            parameters["end"] = end
        existing = await self.query(resource_id, " and ".join(clauses) or None, parameters)
        await self._write_difference(resource_id, [row.value for row in existing], blocks)

    async def _write_difference(
        self,
        resource_id: str,
        existing: list[Unavailability],
        blocks: list[Unavailability],
        *,
        days_done: bool = False,
    ) -> None:
        """Change the day rows by the difference between `existing` and `blocks` (unless
        `days_done`), then upsert the blocks that are new or differ from `existing` and
        delete the existing ones not among `blocks`, 100 rows per transaction."""
        wanted = {block_key(block): block for block in blocks}
        current = {block_key(block): block for block in existing}
        changed = [block for key, block in wanted.items() if current.get(key) != block]
        stale = [key for key in current if key not in wanted]
        if not changed and not stale:
            return
        days, change = _day_change(current, changed, stale)
        if not days_done:
            await self.days.update(resource_id, days, change)
        # Each chunk is one partition and ≤100 entities; the whole is idempotent, so a
        # failure halfway is healed by the next notification or reconcile.
        operations: list[Unavailability | str] = [*changed, *stale]
        for first in range(0, len(operations), MAX_TRANSACTION_ENTITIES):
            transaction = Transaction()
            for item in operations[first : first + MAX_TRANSACTION_ENTITIES]:
                if isinstance(item, Unavailability):
                    transaction.upsert(self.to_entity(item))
                else:
                    transaction.delete(encode_key(resource_id), encode_key(item))
            await self.commit(transaction)
        if not days_done:
            # Once more after the block rows (a read, and no write when nothing moved): a
            # full replace that rebuilt these days between our two writes, not knowing
            # this change yet, would otherwise have left them without it.
            await self.days.update(resource_id, days, change)

    async def list_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        return await self.days.between(resource_id, start, end)

    async def scan_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        rows = await self.query(
            resource_id, "Start lt @end and End gt @start", {"start": start, "end": end}
        )
        return sorted((row.value for row in rows), key=lambda block: block.start)

    async def list_for_resource(self, resource_id: str) -> list[Unavailability]:
        return [row.value for row in await self.query(resource_id)]


def _day_change(
    current: Mapping[str, Unavailability], changed: list[Unavailability], stale: list[str]
) -> tuple[set[date], DayChange]:
    """The days a difference touches, and what it does to each: old versions leave every
    day they were in, new ones enter theirs. Applying it twice changes nothing more."""
    leaving = {block_key(block) for block in changed} | set(stale)
    days = {day for key in leaving if key in current for day in block_days(current[key])}
    entering = by_day(changed)
    days |= entering.keys()

    def change(day: date, blocks: DayBlocks) -> DayBlocks:
        kept = {key: block for key, block in blocks.items() if key not in leaving}
        return kept | entering.get(day, {})

    return days, change


class SubscriptionTable(EntityTable[SubscriptionRecord]):
    kind = SUBSCRIPTIONS
    model = SubscriptionRecord

    def keys(self, value: SubscriptionRecord) -> tuple[str, str]:
        return value.subscription_id, SUBSCRIPTION_ROW

    # The stored JSON needs the real clientState, not SecretStr's mask.
    dump_context: ClassVar[dict[str, Any] | None] = {"reveal_secrets": True}

    def index_properties(self, value: SubscriptionRecord) -> Mapping[str, Any]:
        return {"ResourceId": value.resource_id, "ExpiresAt": value.expires_at}

    async def get(self, subscription_id: str) -> Stored[SubscriptionRecord] | None:
        return await self.get_by_keys(subscription_id, SUBSCRIPTION_ROW)

    async def save(self, record: SubscriptionRecord) -> Stored[SubscriptionRecord]:
        return await self.upsert(record)

    async def delete(self, subscription_id: str) -> None:
        await self.delete_by_keys(subscription_id, SUBSCRIPTION_ROW)

    async def list_all(self) -> list[Stored[SubscriptionRecord]]:
        return await self.query()


class SyncLogTable(EntityTable[SyncLogEntry]):
    kind = SYNC_LOG
    model = SyncLogEntry

    def keys(self, value: SyncLogEntry) -> tuple[str, str]:
        inverted = _SYNC_LOG_CEILING_MS - int(value.at.timestamp() * 1000)
        return value.resource_id, f"{inverted:013d}-{secrets.token_hex(4)}"

    async def append(self, entry: SyncLogEntry) -> None:
        await self.insert(entry)

    async def append_many(self, entries: Sequence[SyncLogEntry]) -> None:
        # A resource's entries share its partition: one transaction per 100 of them. A
        # lone entry is a plain insert: a transaction's multipart body and answer cost
        # the client more than one entity's request.
        by_resource: dict[str, list[SyncLogEntry]] = {}
        for entry in entries:
            by_resource.setdefault(entry.resource_id, []).append(entry)
        for mine in by_resource.values():
            if len(mine) == 1:
                await self.insert(mine[0])
                continue
            for first in range(0, len(mine), MAX_TRANSACTION_ENTITIES):
                transaction = Transaction()
                for entry in mine[first : first + MAX_TRANSACTION_ENTITIES]:
                    transaction.create(self.to_entity(entry))
                await self.commit(transaction)

    async def page(
        self,
        resource_id: str,
        limit: int,
        *,
        outcome: SyncOutcome | None = None,
        after: str | None = None,
    ) -> SyncLogPage:
        # Row keys sort newest first, so a page goes on after the last row key shown. The
        # outcome is read from each entry rather than filtered by the service: entries
        # have no typed outcome property to filter on, and a resource's log is bounded by
        # SYNC_LOG_RETENTION_DAYS.
        query, params = ("RowKey gt @after", {"after": after}) if after else (None, None)
        entries: list[SyncLogEntry] = []
        last_row_key = ""
        async for entity in self._iterate(resource_id, query, params, limit + 1):
            entry = self.from_entity(entity).value
            if outcome is not None and entry.outcome is not outcome:
                continue
            if len(entries) == limit:
                return SyncLogPage(value=entries, next_page=last_row_key)
            entries.append(entry)
            last_row_key = str(entity["RowKey"])
        return SyncLogPage(value=entries)

    async def purge_older_than(self, resource_id: str, cutoff: datetime) -> int:
        # Newest first, so the old entries are one RowKey range: deleted 100 per transaction.
        newest = f"{_SYNC_LOG_CEILING_MS - int(cutoff.timestamp() * 1000) + 1:013d}"
        row_keys = [
            str(entity["RowKey"])
            async for entity in self._iterate(resource_id, "RowKey ge @lo", {"lo": newest}, None)
        ]
        for start in range(0, len(row_keys), 100):
            transaction = Transaction()
            for row_key in row_keys[start : start + 100]:
                transaction.delete(encode_key(resource_id), row_key)
            await self.commit(transaction)
        return len(row_keys)


class SlotLedgerTable(EntityTable[DayLedger]):
    kind = SLOT_LEDGER
    model = DayLedger

    def keys(self, value: DayLedger) -> tuple[str, str]:
        return value.resource_id, DAY_ROW_PREFIX + value.day.isoformat()

    async def read_days(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Stored[DayLedger]]:
        days = days_touched(start, end)
        # The mirror's busy pages of these days sort among their rows: read with the
        # ledger's property alone, they come back as bare keys and are skipped.
        return [
            self.from_entity(entity)
            async for entity in self._iterate(
                resource_id,
                "RowKey ge @lo and RowKey le @hi",
                {
                    "lo": DAY_ROW_PREFIX + days[0].isoformat(),
                    "hi": DAY_ROW_PREFIX + days[-1].isoformat(),
                },
                None,
                select=["RowKey", DATA_PROPERTY],
            )
            if is_ledger_row(str(entity["RowKey"]))
        ]

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        # All rows belong to one resource, hence one partition: one atomic transaction.
        transaction = Transaction()
        for row, etag in rows:
            if etag is None:
                transaction.create(self.to_entity(row))
            else:
                transaction.update(self.to_entity(row), etag)
        await self.commit(transaction)


class IdempotencyTable(EntityTable[IdempotencyRecord]):
    kind = IDEMPOTENCY
    model = IdempotencyRecord

    def keys(self, value: IdempotencyRecord) -> tuple[str, str]:
        return _key_digest(value.key), REQUEST_ROW

    async def get(self, key: str) -> Stored[IdempotencyRecord] | None:
        return await self.get_by_keys(_key_digest(key), REQUEST_ROW)

    async def add(self, record: IdempotencyRecord) -> Stored[IdempotencyRecord]:
        return await self.insert(record)

    async def update(self, record: IdempotencyRecord, etag: str) -> Stored[IdempotencyRecord]:
        return await self.replace(record, etag)

    async def delete(self, key: str) -> None:
        await self.delete_by_keys(_key_digest(key), REQUEST_ROW)

    async def purge_older_than(self, cutoff: datetime) -> int:
        # By the service's Timestamp (the last write); every record is its own partition.
        purged = 0
        for row in await self.query(None, "Timestamp lt @cutoff", {"cutoff": cutoff}):
            try:
                await self.delete_by_keys(_key_digest(row.value.key), REQUEST_ROW, etag=row.etag)
            except ConcurrencyConflict:
                continue  # written again meanwhile: kept
            purged += 1
        return purged


def _key_digest(key: str) -> str:
    # Keys are caller-chosen strings of any shape; their digest is a safe, even key.
    return hashlib.sha256(key.encode()).hexdigest()


class Lease(BaseModel):
    name: str
    holder: str
    expires_at: datetime


class LeaseTable(EntityTable[Lease]):
    """Named leases: insert-if-absent to take a free one, ETag replace to take an
    expired one, so two holders never both succeed."""

    kind = LEASES
    model = Lease

    def keys(self, value: Lease) -> tuple[str, str]:
        return value.name, LEASE_ROW

    async def acquire(self, name: str, holder: str, seconds: float) -> bool:
        now = datetime.now(UTC)
        lease = Lease(name=name, holder=holder, expires_at=now + timedelta(seconds=seconds))
        current = await self.get_by_keys(name, LEASE_ROW)
        try:
            if current is None:
                await self.insert(lease)
            elif current.value.holder == holder or current.value.expires_at <= now:
                await self.replace(lease, current.etag)
            else:
                return False
        except (AlreadyExists, ConcurrencyConflict):
            return False
        return True

    async def release(self, name: str, holder: str) -> None:
        current = await self.get_by_keys(name, LEASE_ROW)
        if current is not None and current.value.holder == holder:
            # Taken over after expiry meanwhile: then it is theirs now.
            with contextlib.suppress(ConcurrencyConflict):
                await self.delete_by_keys(name, LEASE_ROW, etag=current.etag)
