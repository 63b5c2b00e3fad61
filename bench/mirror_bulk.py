"""`python -m bench.mirror_bulk`: the unavailability mirror's bulk paths against Azurite.

No Functions host and no Graph emulator: Azurite (in memory, a process per service, as
`python -m bench` starts it) and the app's own table adapters and services, in this
process. For a calendar like the one `python -m bench` seeds (`--events` 20-minute
events, 28 a day; every 10th private; Graph-like event ids) it times:

- the initial pull into an empty mirror (`MirrorService.pull`; the calendar is served
  from memory, so this is the storage part of "connect with 5,000 events"), once with
  the per-event path `MirrorService.replace_all` took before (`replace_event` per event,
  kept here as `per_event_pull`), once with `UnavailabilityRepository.replace_all`;
- a full replace of the unchanged calendar (a full reconcile round with nothing to do)
  and one where a tenth of the events moved, a tenth were deleted and a tenth are new;
- availability over a 7-day and a 30-day window ten days ahead (`AvailabilityService`,
  in process), and the reads of the mirror: `day_view` (what availability reads: the
  day rows' times only and the ledger's rows, one RowKey range), `list_between` (the
  same rows whole, as a booking's check reads them) and, for comparison,
  `scan_between` (the block rows filtered on `Start`/`End`, how every request read the
  mirror before the day rows, and how a resource of an earlier layout is still read
  until its next full round).

Azurite runs every table query, a RowKey range included, as a scan of the whole table
(point reads use its index): the day rows gain there by being few, in a table with the
ledger's rows and not the block rows; on Azure a RowKey range within one partition is
an index seek, and the block rows' filter a scan of the partition. The write figures
carry over (one query and one transaction per event before, one query and a
transaction per 100 changed rows after, plus the day rows).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import random
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

from azure.data.tables.aio import TableServiceClient

from bench.load import Distribution, timed
from bench.report import Row, load_average, ms, render_table
from bench.world import SHOW_AS_CYCLE, day_zero
from local.azurite import start_azurite
from shared.adapters.storage.busy_days import BusyDayTable
from shared.adapters.storage.repositories import (
    ResourceTable,
    UnavailabilityTable,
)
from shared.adapters.storage.tables import TableStore
from shared.domain.bookings import BookingWindow
from shared.domain.calendar import CalendarEvent, Sensitivity, ShowAs
from shared.domain.resources import MIRROR_LAYOUT, ConnectionStatus, Resource, ResourceSettings
from shared.ports import CalendarGateway
from shared.services.availability import AvailabilityQuery, AvailabilityService
from shared.services.mirror import MirrorService, group_blocks
from shared.settings import Settings

logger = logging.getLogger("bench.mirror_bulk")

RESOURCE_ID = "busy-room"
MAILBOX = "busy-room@contoso.com"
EVENTS_PER_DAY = 28
WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 30


def graph_id(rng: random.Random) -> str:
    """An id shaped like Graph's (base64 of 114 bytes, with / + and =)."""
    return "AAMkAD" + base64.b64encode(rng.randbytes(114)).decode()


def seeded_calendar(count: int, first_day: datetime, *, seed: int = 7) -> list[CalendarEvent]:
    """`count` 20-minute foreign events, 28 a day every 30 minutes from 06:00 UTC."""
    rng = random.Random(seed)
    events = []
    for index in range(count):
        day, slot = divmod(index, EVENTS_PER_DAY)
        start = first_day + timedelta(days=day, hours=6, minutes=30 * slot)
        events.append(
            CalendarEvent(
                event_id=graph_id(rng),
                change_key=secrets.token_urlsafe(16),
                subject=f"Seeded meeting {index}",
                start=start,
                end=start + timedelta(minutes=20),
                show_as=ShowAs(SHOW_AS_CYCLE[index % len(SHOW_AS_CYCLE)]),
                sensitivity=Sensitivity.PRIVATE if index % 10 == 0 else Sensitivity.NORMAL,
            )
        )
    return events


def churned(events: list[CalendarEvent], seed: int = 11) -> list[CalendarEvent]:
    """The calendar after a tenth of its events moved by 15 minutes, a tenth were deleted
    and as many new ones were added."""
    rng = random.Random(seed)
    tenth = len(events) // 10
    shuffled = rng.sample(events, len(events))
    moved = [
        e.model_copy(
            update={
                "start": e.start + timedelta(minutes=15),
                "end": e.end + timedelta(minutes=15),
                "change_key": secrets.token_urlsafe(16),
            }
        )
        for e in shuffled[:tenth]
    ]
    kept = shuffled[2 * tenth :]
    added = [
        e.model_copy(update={"event_id": graph_id(rng), "start": e.start + timedelta(minutes=5)})
        for e in shuffled[tenth : 2 * tenth]
    ]
    return moved + kept + added


class SeededCalendar:
    """The one CalendarGateway call a pull makes, answered from memory."""

    def __init__(self, events: list[CalendarEvent]) -> None:
        self.events = events

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        return [e for e in self.events if e.start < end and e.end > start]


async def per_event_pull(
    table: UnavailabilityTable, resource_id: str, events: list[CalendarEvent]
) -> None:
    """What `MirrorService.replace_all` did before: a range query and a transaction per
    event (series: per master), then one more per event no longer there."""
    groups = group_blocks(resource_id, events, time_zone="UTC")
    existing = {
        block.series_master_id or block.event_id
        for block in await table.list_for_resource(resource_id)
    }
    for group, blocks in groups.items():
        await table.replace_event(resource_id, group, blocks)
    for gone in existing - groups.keys():
        await table.replace_event(resource_id, gone, [])


async def samples(call: Callable[[], Awaitable[object]], count: int) -> Distribution:
    await call()  # warm: connection pool, table existence
    return Distribution.of([await timed(call) for _ in range(count)])


def p50_p95(dist: Distribution) -> str:
    return f"p50 {ms(dist.p50)}  p95 {ms(dist.p95)}"


class Tables:
    """The app's table adapters over one fresh table prefix (Azurite scans whole tables,
    so each measurement gets its own)."""

    def __init__(self, connection_string: str) -> None:
        service = TableServiceClient.from_connection_string(connection_string)
        self.store = TableStore(service, prefix="mb" + secrets.token_hex(5))
        self.unavailability = UnavailabilityTable(self.store)
        self.days = BusyDayTable(self.store)
        self.resources = ResourceTable(self.store)

    def mirror(self, calendar: SeededCalendar) -> MirrorService:
        defaults = Settings.model_fields
        return MirrorService(
            cast(CalendarGateway, calendar),
            self.unavailability,
            lambda: datetime.now(UTC),
            days_back=int(defaults["mirror_days_back"].default),
            days_ahead=int(defaults["mirror_days_ahead"].default),
        )

    async def close(self) -> None:
        await self.store.close()


def busy_room(now: datetime) -> Resource:
    return Resource(
        resource_id=RESOURCE_ID,
        settings=ResourceSettings(mailbox=MAILBOX, display_name="Busy room"),
        status=ConnectionStatus(last_sync_at=now, mirror_refreshed_at=now),
        created_at=now,
        updated_at=now,
    )


async def run(connection_string: str, events_count: int, count: int, before: bool) -> list[Row]:
    day0 = day_zero()
    events = seeded_calendar(events_count, day0 - timedelta(days=2))
    calendar = SeededCalendar(events)
    resource = busy_room(datetime.now(UTC))
    rows: list[Row] = []

    if before:
        old = Tables(connection_string)
        try:
            logger.info("initial pull, per-event path (%d events)", events_count)
            taken = await timed(lambda: per_event_pull(old.unavailability, RESOURCE_ID, events))
            stored = len(await old.unavailability.list_for_resource(RESOURCE_ID))
            rows.append(
                Row(
                    f"initial pull of {events_count:,} events, per-event path (before)",
                    f"{taken:.1f} s ({stored:,} blocks)",
                )
            )
        finally:
            await old.close()

    tables = Tables(connection_string)
    try:
        mirror = tables.mirror(calendar)
        logger.info("initial pull, replace_all (%d events)", events_count)
        taken = await timed(lambda: mirror.pull(resource))
        stored = len(await tables.unavailability.list_for_resource(RESOURCE_ID))
        rows.append(
            Row(
                f"initial pull of {events_count:,} events, replace_all (after)",
                f"{taken:.1f} s ({stored:,} blocks)",
            )
        )
        taken = await timed(lambda: mirror.pull(resource))
        rows.append(Row("full replace, calendar unchanged", f"{taken:.2f} s"))
        calendar.events = churned(events)
        taken = await timed(lambda: mirror.pull(resource))
        stored = len(await tables.unavailability.list_for_resource(RESOURCE_ID))
        rows.append(
            Row(
                "full replace, 10% moved + 10% deleted + 10% new",
                f"{taken:.2f} s ({stored:,} blocks)",
            )
        )

        await tables.resources.add(resource.model_copy(update={"mirror_layout": MIRROR_LAYOUT}))
        service = AvailabilityService(
            tables.resources,
            tables.unavailability,
            tables.days,
            lambda: datetime.now(UTC),
            freshness_minutes=60,
            window=BookingWindow(grace=timedelta(minutes=5), horizon_days=180),
        )
        window_start = day0 + timedelta(days=10)
        for days in (WINDOW_DAYS, LONG_WINDOW_DAYS):
            window_end = window_start + timedelta(days=days)
            query = AvailabilityQuery(start=window_start, end=window_end, duration_minutes=30)
            answer = await service.availability(RESOURCE_ID, query)
            dist = await samples(partial(service.availability, RESOURCE_ID, query), count)
            rows.append(
                Row(
                    f"availability, {days}-day window, in process, {count} requests",
                    f"{p50_p95(dist)}  ({len(answer.busy)} busy)",
                )
            )
        window_end = window_start + timedelta(days=WINDOW_DAYS)
        days_rows = await tables.unavailability.list_between(RESOURCE_ID, window_start, window_end)
        dist = await samples(
            lambda: tables.unavailability.list_between(RESOURCE_ID, window_start, window_end),
            count,
        )
        rows.append(
            Row(
                f"  list_between (day rows, one RowKey range), {WINDOW_DAYS} days",
                f"{p50_p95(dist)}  ({len(days_rows)} blocks)",
            )
        )
        times = (await tables.days.day_view(RESOURCE_ID, window_start, window_end)).busy
        dist = await samples(
            lambda: tables.days.day_view(RESOURCE_ID, window_start, window_end),
            count,
        )
        rows.append(
            Row(
                f"  day_view (the same rows' Busy only and the ledger's, what availability "
                f"reads), "
                f"{WINDOW_DAYS} days",
                f"{p50_p95(dist)}  ({len(times)} blocks)",
            )
        )
        scanned = await tables.unavailability.scan_between(RESOURCE_ID, window_start, window_end)
        if scanned != days_rows:
            raise RuntimeError("the day rows disagree with the block rows")
        dist = await samples(
            lambda: tables.unavailability.scan_between(RESOURCE_ID, window_start, window_end),
            count,
        )
        rows.append(
            Row(
                f"  scan_between (Start/End filter on the block rows), {stored:,} rows",
                f"{p50_p95(dist)}  ({len(scanned)} blocks)",
            )
        )
    finally:
        await tables.close()
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mirror_bulk", description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="calendar size (5000)")
    parser.add_argument("--samples", type=int, default=200, help="reads per figure (200)")
    parser.add_argument(
        "--skip-before",
        action="store_true",
        help="skip the per-event path (about two minutes at 5,000 events)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    load_at_start = load_average()
    azurite = start_azurite(per_service=True, ready_timeout=120.0)
    try:
        work = run(azurite.connection_string, args.events, args.samples, not args.skip_before)
        rows = asyncio.run(work)  # noqa: TID251 - a command line tool owns its loop
    finally:
        azurite.stop(grace_seconds=1)
    load: dict[str, Any] = {"start": load_at_start, "end": load_average()}
    sys.stdout.write(render_table(rows) + "\n")
    sys.stdout.write(f"load average (1/5/15 min): start {load['start']}, end {load['end']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
