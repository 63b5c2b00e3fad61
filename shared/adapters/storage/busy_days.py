"""Busy time by UTC day: the mirror's blocks kept where a window costs one range query.

The rows live in table `slotledger`, next to the slot ledger's own day rows, in the
resource's partition: RowKey "day|<YYYY-MM-DD>|busy|<page, 2 digits>" right after that
day's ledger row "day|<YYYY-MM-DD>". A window's days, busy time and claims alike, are
one RowKey range, which is what availability reads (`day_view`): one storage request
where a table each took two.

The rows of a day hold every mirror block that overlaps that UTC day (a block spanning
days is kept in each; a zero-length one in the day it is at), as a JSON list in
`Blocks`, keyed inside the day like the block rows ("<event or series id>|<start, ISO
UTC>") so that one event's blocks can be replaced or removed without touching the
others'. Each row also holds its blocks' times and show-as alone in `Busy` ([start,
end, show-as], epoch seconds), which availability reads with `$select`: a week is a few
KB to read and no models to validate. Readers of one kind of row select only its
property (`Blocks`, `Busy` or the ledger's `Data`): a row of the other kind comes back
as its keys alone (a projected property it lacks is null), and is skipped. A projection
keeps each row's ETag for the writers: the service returns `Timestamp` whatever is
selected, and the SDK makes the ETag from it when the answer leaves `odata.etag` out
(Query Entities, "Minimal Metadata" sample and Remarks, learn.microsoft.com/rest/api/
storageservices/query-entities; azure-data-tables `_deserialize._convert_to_entity`).

Why whole blocks per day and not merged intervals: every write of the mirror is per
event (an event changed, a series replaced, an occurrence removed), and the readers
need the blocks' own show-as (working-elsewhere is decided at read time) and ids (the
live slot check); merged intervals would need the blocks alongside anyway.

Why UTC days: the slot ledger's days are UTC too, a window is asked in UTC instants,
and a resource's time zone may change without any row being rewritten. An all-day
event's block is already its local days' midnights in UTC, so it lies in two or three
UTC days.

Limits (Azure enforces them, Azurite does not): a string property holds at most 64 KiB
(UTF-16, so 32 K characters), an entity 1 MiB, a transaction 100 entities and 4 MiB.
A day's blocks are split into pages of at most PAGE_CHARS ASCII characters, and all
pages of a day are written in one transaction, conditional on the ETags they were read
with, so readers never see half a day and two writers of one day never lose each
other's change: the loser re-reads the day and applies its change again. The ledger's
rows are never in those transactions: a claim and the mirror do not contend.

Before mirror layout 3 the rows were in a table of their own, `busydays`
("<YYYY-MM-DD>|<page>"); a resource of an earlier layout is read from its block rows
until its next full reconcile round has rebuilt its days here
(shared/domain/resources.py), and nothing reads `busydays` any more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter

from shared.adapters.storage.tables import (
    DATA_PROPERTY,
    MAX_TRANSACTION_ENTITIES,
    EntityTable,
    TableStore,
    Transaction,
    encode_key,
)
from shared.domain.calendar import BusyTime, ShowAs, Unavailability
from shared.domain.claims import DayLedger, days_touched
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    NotFound,
    TransactionTooLarge,
)
from shared.ports import DayView

logger = logging.getLogger(__name__)

SLOT_LEDGER = "slotledger"
# A resource's day rows: "day|<YYYY-MM-DD>" the ledger's, then that day's busy pages.
DAY_ROW_PREFIX = "day|"
_BUSY = "busy"
_LEDGER_KEY_LENGTH = len(DAY_ROW_PREFIX) + len("YYYY-MM-DD")
# Each row's blocks, whole (JSON of Unavailability): what the mirror's writers and the
# live slot check read.
BLOCKS_PROPERTY = "Blocks"
# Each row's blocks as [start, end (epoch seconds), show-as] only: what availability reads.
BUSY_PROPERTY = "Busy"
# ASCII JSON (non-ASCII escaped): stored as UTF-16, 60,000 bytes < 64 KiB a property.
PAGE_CHARS = 30_000
# Quotes in the JSON are escaped again on the wire: ≤ ~60 KB a page, so 60 pages stay
# under a transaction's 4 MiB as well as its 100 entities.
MAX_DAY_PAGES = 60
_TRANSACTION_CHARS = 1_500_000
MAX_ATTEMPTS = 10
_BLOCKS = TypeAdapter(list[Unavailability])

DayBlocks = dict[str, Unavailability]
DayChange = Callable[[date, DayBlocks], DayBlocks]


# ShowAs by its value: a dict look-up costs a fraction of calling the enum.
_SHOW_AS = {show_as.value: show_as for show_as in ShowAs}
_EPOCH_DAY = date(1970, 1, 1)


def _midnight(day: date) -> int:
    """The start of a UTC day in epoch seconds."""
    return (day - _EPOCH_DAY).days * 86_400


def block_key(block: Unavailability) -> str:
    """A block's key inside its days (the same as its block row's RowKey)."""
    return f"{block.series_master_id or block.event_id}|{block.start.isoformat()}"


def block_days(block: Unavailability) -> list[date]:
    """The UTC days a block is kept in."""
    return days_touched(block.start, max(block.end, block.start + timedelta(microseconds=1)))


def by_day(blocks: Iterable[Unavailability]) -> dict[date, DayBlocks]:
    days: dict[date, DayBlocks] = {}
    for block in blocks:
        for day in block_days(block):
            days.setdefault(day, {})[block_key(block)] = block
    return days


class _Page(BaseModel):
    """A day page as the table holds it (only used for its keys and ETag)."""

    row_key: str
    etag: str


@dataclass
class _Day:
    pages: list[_Page]
    blocks: DayBlocks


def _row_key(day: date, page: int) -> str:
    return f"{DAY_ROW_PREFIX}{day.isoformat()}|{_BUSY}|{page:02d}"


def _busy_range(first: date | None, last: date | None) -> dict[str, str]:
    """The RowKey bounds of the busy pages from `first` to `last` (None: all days; "}"
    sorts right after "|", closing a range); the ledger's rows of the days in between
    fall inside too."""
    if first is None or last is None:
        return {"lo": DAY_ROW_PREFIX, "hi": f"{DAY_ROW_PREFIX[:-1]}}}"}
    return {
        "lo": f"{DAY_ROW_PREFIX}{first.isoformat()}|{_BUSY}|",
        "hi": f"{DAY_ROW_PREFIX}{last.isoformat()}|{_BUSY}}}",
    }


def _day_of(row_key: str) -> date:
    return date.fromisoformat(row_key[len(DAY_ROW_PREFIX) : _LEDGER_KEY_LENGTH])


def is_ledger_row(row_key: str) -> bool:
    """Whether a row of the day rows is the slot ledger's (else a busy page)."""
    return len(row_key) == _LEDGER_KEY_LENGTH


def _pages(blocks: DayBlocks) -> list[tuple[str, str]]:
    """The day's blocks as pages: each a JSON list of at most PAGE_CHARS characters
    (`Data`) and the same blocks' times and show-as (`Busy`, a tenth of the size or
    less). Summaries and change keys are dropped (busy time kept) if the day would not
    fit otherwise."""
    ordered = [block for _, block in sorted(blocks.items(), key=lambda i: (i[1].start, i[0]))]
    pages = _pack(ordered)
    if len(pages) <= MAX_DAY_PAGES:
        return pages
    bare = [block.model_copy(update={"summary": None, "change_key": None}) for block in ordered]
    pages = _pack(bare)
    if len(pages) > MAX_DAY_PAGES:
        raise TransactionTooLarge(f"{len(blocks)} busy blocks in one day do not fit a day's rows")
    logger.warning("a day of %d busy blocks is kept without subjects", len(blocks))
    return pages


def _dump(block: Unavailability) -> str:
    return json.dumps(block.model_dump(mode="json", by_alias=True), separators=(",", ":"))


def _busy(block: Unavailability) -> list[int | str]:
    return [int(block.start.timestamp()), int(block.end.timestamp()), block.show_as.value]


def _pack(blocks: list[Unavailability]) -> list[tuple[str, str]]:
    pages: list[tuple[list[str], list[list[int | str]]]] = []
    size = PAGE_CHARS  # forces a first page
    for block in blocks:
        item = _dump(block)
        if size + len(item) + 1 > PAGE_CHARS:
            pages.append(([], []))
            size = 1
        pages[-1][0].append(item)
        pages[-1][1].append(_busy(block))
        size += len(item) + 1
    return [
        ("[" + ",".join(items) + "]", json.dumps(busy, separators=(",", ":")))
        for items, busy in pages
    ]


class BusyDayTable(EntityTable[_Page]):
    """The day rows of the mirror, and the one read of them with the ledger's
    (`day_view`). Not a repository of its own: UnavailabilityTable maintains them with
    every write of the block rows."""

    kind = SLOT_LEDGER
    model = _Page

    def __init__(self, store: TableStore, *, backoff_seconds: float = 0.02) -> None:
        super().__init__(store)
        self._backoff = backoff_seconds

    async def between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        """The blocks overlapping [start, end), each once, by start: one RowKey range."""
        days = days_touched(start, end)
        found: DayBlocks = {}
        for day in (await self._read(resource_id, days[0], days[-1])).values():
            for key, block in day.blocks.items():
                if block.start < end and block.end > start:
                    found[key] = block
        return sorted(found.values(), key=lambda block: block.start)

    async def day_view(self, resource_id: str, start: datetime, end: datetime) -> DayView:
        """The times of the blocks overlapping [start, end), each once, by start, and the
        ledger's rows of the same days: one RowKey range over both kinds of rows, reading
        only their `Busy` and the ledger's `Data` (no event details, no block models)."""
        days = days_touched(start, end)
        first, low, high = days[0], int(start.timestamp()), int(end.timestamp())
        # Filtered and sorted as read ([start, end, show-as] in epoch seconds and text:
        # the same order as the times and ShowAs), and only the blocks kept become
        # datetimes: a month's rows hold a thousand blocks, and their conversion was a
        # good part of the read.
        found: list[list[Any]] = []
        ledger: list[DayLedger] = []
        async for entity in self._iterate(
            resource_id,
            "RowKey ge @lo and RowKey lt @hi",
            {"lo": f"{DAY_ROW_PREFIX}{first}", "hi": _busy_range(first, days[-1])["hi"]},
            None,
            select=["RowKey", BUSY_PROPERTY, DATA_PROPERTY],
        ):
            row_key = str(entity["RowKey"])
            if is_ledger_row(row_key):
                ledger.append(DayLedger.model_validate_json(entity[DATA_PROPERTY]))
                continue
            # A block spanning days is in each: counted in the day it starts, or in the
            # window's first day when it started before.
            day = _day_of(row_key)
            counted_from = _midnight(day) if day > first else -math.inf
            found.extend(
                busy
                for busy in json.loads(entity[BUSY_PROPERTY])
                if busy[0] < high and busy[1] > low and busy[0] >= counted_from
            )
        found.sort()
        busy_times = [
            BusyTime(
                datetime.fromtimestamp(block_start, UTC),
                datetime.fromtimestamp(block_end, UTC),
                _SHOW_AS[show_as],
            )
            for block_start, block_end, show_as in found
        ]
        return DayView(busy=busy_times, ledger=ledger)

    async def update(self, resource_id: str, days: Iterable[date], change: DayChange) -> None:
        """Make each of `days` hold `change(day, its blocks now)`, a day at a time
        atomically, re-reading and applying again the days another writer changed
        meanwhile (bounded; then ConcurrencyConflict). Days left empty lose their rows."""
        await self._update(resource_id, days, change, None)

    async def _update(
        self,
        resource_id: str,
        days: Iterable[date],
        change: DayChange,
        read: dict[date, _Day] | None,
    ) -> None:
        pending = sorted(set(days))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not pending:
                return
            if read is None:
                read = await self._read(resource_id, pending[0], pending[-1])
            current = {day: read.get(day, _Day([], {})) for day in pending}
            read = None
            pending = await self._write(resource_id, current, change)
            if pending and attempt < MAX_ATTEMPTS:
                await asyncio.sleep(self._backoff * attempt * random.random())  # noqa: S311 - jitter, not a secret
        if pending:
            raise ConcurrencyConflict(f"busy days of {resource_id} kept changing")

    async def replace_all(self, resource_id: str, blocks: Iterable[Unavailability]) -> None:
        """Make the resource's day rows exactly those of `blocks`, whatever they held."""
        wanted = by_day(blocks)
        read = await self._read(resource_id, None, None)
        await self._update(
            resource_id, read.keys() | wanted.keys(), lambda day, _: wanted.get(day, {}), read
        )

    async def _read(
        self, resource_id: str, first: date | None, last: date | None
    ) -> dict[date, _Day]:
        """The day rows from `first` to `last` (None: the whole partition)."""
        days: dict[date, _Day] = {}
        async for entity in self._iterate(
            resource_id,
            "RowKey ge @lo and RowKey lt @hi",
            _busy_range(first, last),
            None,
            select=["RowKey", BLOCKS_PROPERTY],
        ):
            row_key = str(entity["RowKey"])
            if is_ledger_row(row_key):
                continue
            day = days.setdefault(_day_of(row_key), _Day([], {}))
            metadata: Mapping[str, Any] = getattr(entity, "metadata", {})
            day.pages.append(_Page(row_key=row_key, etag=str(metadata.get("etag", ""))))
            for block in _BLOCKS.validate_json(entity[BLOCKS_PROPERTY]):
                day.blocks[block_key(block)] = block
        return days

    async def _write(
        self, resource_id: str, current: dict[date, _Day], change: DayChange
    ) -> list[date]:
        """Write the changed days, several to a transaction; returns the days whose
        transaction lost to another writer."""
        partition = encode_key(resource_id)
        batches: list[tuple[list[date], Transaction]] = []
        entities = chars = 0
        for day, now in current.items():
            blocks = change(day, dict(now.blocks))
            if blocks == now.blocks:
                continue
            pages = _pages(blocks)
            operations = max(len(pages), len(now.pages))
            size = sum(len(data) + len(busy) for data, busy in pages)
            if (
                not batches
                or entities + operations > MAX_TRANSACTION_ENTITIES
                or chars + size > _TRANSACTION_CHARS
            ):
                batches.append(([], Transaction()))
                entities = chars = 0
            batch_days, transaction = batches[-1]
            batch_days.append(day)
            entities += operations
            chars += size
            for index, (data, busy) in enumerate(pages):
                entity = {
                    "PartitionKey": partition,
                    "RowKey": _row_key(day, index),
                    BLOCKS_PROPERTY: data,
                    BUSY_PROPERTY: busy,
                }
                if index < len(now.pages):
                    transaction.update(entity, now.pages[index].etag)
                else:
                    transaction.create(entity)
            for page in now.pages[len(pages) :]:
                transaction.delete(partition, page.row_key, page.etag)
        lost: list[date] = []
        for batch_days, transaction in batches:
            try:
                await self.commit(transaction)
            except (ConcurrencyConflict, AlreadyExists, NotFound):
                # Changed, created or shortened by another writer since read (a row gone:
                # Azure's EntityNotFound, 404; Azurite answers the failed If-Match, 412).
                lost.extend(batch_days)
        return lost
