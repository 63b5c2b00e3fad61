"""In-memory implementations of the ports, with the same ETag and claim semantics as the
Table Storage adapter, for fast unit tests of the services."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from shared.domain.bookings import Booking
from shared.domain.calendar import EventMapping, Unavailability
from shared.domain.claims import DayLedger, days_touched
from shared.domain.errors import AlreadyExists, ConcurrencyConflict, StorageUnavailable
from shared.domain.resources import Resource
from shared.ports import IdempotencyRecord, Stored

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
    async def get(self, resource_id: str) -> Stored[Resource] | None:
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
    async def get(self, resource_id: str, booking_id: str) -> Stored[EventMapping] | None:
        return self.rows.get((resource_id, booking_id))

    async def find_by_event(self, resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        return next(
            (
                row
                for (rid, _), row in self.rows.items()
                if rid == resource_id and row.value.event_id == event_id
            ),
            None,
        )

    async def add(self, mapping: EventMapping) -> Stored[EventMapping]:
        return self._insert((mapping.resource_id, mapping.booking_id), mapping)

    async def update(self, mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        return self._replace((mapping.resource_id, mapping.booking_id), mapping, etag)

    async def list_for_resource(self, resource_id: str) -> list[Stored[EventMapping]]:
        return [row for (rid, _), row in self.rows.items() if rid == resource_id]


class FakeUnavailability:
    def __init__(self) -> None:
        self.blocks: dict[tuple[str, str], list[Unavailability]] = {}

    async def replace_event(
        self, resource_id: str, event_id: str, blocks: list[Unavailability]
    ) -> None:
        if blocks:
            self.blocks[(resource_id, event_id)] = list(blocks)
        else:
            self.blocks.pop((resource_id, event_id), None)

    async def list_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        found = [
            block
            for (rid, _), blocks in self.blocks.items()
            if rid == resource_id
            for block in blocks
            if block.start < end and block.end > start
        ]
        return sorted(found, key=lambda b: b.start)

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


class FakeIdempotency(FakeTable[IdempotencyRecord]):
    async def get(self, key: str) -> Stored[IdempotencyRecord] | None:
        return self.rows.get((key, ""))

    async def add(self, record: IdempotencyRecord) -> Stored[IdempotencyRecord]:
        return self._insert((record.key, ""), record)

    async def update(self, record: IdempotencyRecord, etag: str) -> Stored[IdempotencyRecord]:
        return self._replace((record.key, ""), record, etag)

    async def delete(self, key: str) -> None:
        self.rows.pop((key, ""), None)


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
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

    def bodies(self, queue_name: str) -> list[str]:
        return [body for name, body in self.sent if name == queue_name]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
