"""The mirror's day rows against Azurite: what a window reads, how the rows follow every
write, Table Storage's size limits, two writers of one day, and the slot ledger's rows
they sit among."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.storage import busy_days
from shared.adapters.storage.busy_days import (
    BLOCKS_PROPERTY,
    PAGE_CHARS,
    SLOT_LEDGER,
    BusyDayTable,
    DayBlocks,
    is_ledger_row,
)
from shared.adapters.storage.layout import Downgraded, downgrade
from shared.adapters.storage.repositories import UnavailabilityTable
from shared.adapters.storage.tables import encode_key
from shared.composition import Adapters
from shared.domain.bookings import TimeRange
from shared.domain.calendar import ShowAs, Unavailability
from shared.domain.claims import DayLedger, claims_overlapping
from shared.domain.resources import LEGACY_MIRROR_LAYOUT
from shared.services.mirror import local_days
from shared.services.slots import SlotKeeper
from tests.builders import T0, busy_block, resource

pytestmark = pytest.mark.integration

DAY = T0.replace(hour=0)  # 2030-01-07, UTC


async def day_rows(adapters: Adapters, resource_id: str = "room-1") -> list[dict[str, Any]]:
    """The resource's busy pages (the ledger's rows left out)."""
    client = await adapters.tables.table(SLOT_LEDGER)
    return [
        entity
        async for entity in client.query_entities(
            "PartitionKey eq @pk", parameters={"pk": encode_key(resource_id)}
        )
        if not is_ledger_row(entity["RowKey"])
    ]


def page(day: str, number: int = 0) -> str:
    return f"day|{day}|busy|{number:02d}"


def ids(blocks: list[Unavailability]) -> list[str]:
    return [block.event_id for block in blocks]


def all_day(event_id: str, local_date: date, time_zone: str) -> Unavailability:
    """An all-day event's block as the mirror makes it: its date's midnights in the zone."""
    utc_midnight = datetime.combine(local_date, datetime.min.time(), tzinfo=UTC)
    start, end = local_days(utc_midnight, utc_midnight + timedelta(days=1), time_zone)
    minutes = int((end - start).total_seconds() // 60)
    return busy_block(event_id, start, minutes=minutes, is_all_day=True)


async def test_days_are_utc_days_and_all_day_blocks_cover_the_zones_local_day(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    la = all_day("la", date(2030, 1, 8), "America/Los_Angeles")  # 08:00 UTC to 08:00 UTC
    akl = all_day("akl", date(2030, 1, 8), "Pacific/Auckland")  # 11:00 UTC the day before
    midnight = busy_block("midnight", DAY + timedelta(days=1, hours=23, minutes=30), minutes=60)
    for block in (la, akl, midnight):
        await table.replace_event("room-1", block.event_id, [block])

    jan8 = DAY + timedelta(days=1)
    assert (la.start, akl.start) == (jan8 + timedelta(hours=8), DAY + timedelta(hours=11))
    # Still 8 January in Los Angeles at 07:00 UTC on the 9th: busy; from 08:00 not.
    early_9th = await table.list_between(
        "room-1", jan8 + timedelta(hours=24), jan8 + timedelta(hours=31)
    )
    late_9th = await table.list_between(
        "room-1", jan8 + timedelta(hours=32), jan8 + timedelta(hours=33)
    )
    # Auckland's 8 January began at 11:00 UTC on the 7th.
    evening_7th = await table.list_between(
        "room-1", DAY + timedelta(hours=12), DAY + timedelta(hours=13)
    )
    morning_7th = await table.list_between("room-1", DAY, DAY + timedelta(hours=11))

    assert ids(early_9th) == ["la", "midnight"]  # the 23:30 block reaches 00:30 on the 9th
    assert ids(late_9th) == []
    assert ids(evening_7th) == ["akl"]
    assert ids(morning_7th) == []
    keys = sorted(entity["RowKey"] for entity in await day_rows(adapters))
    assert keys == [page("2030-01-07"), page("2030-01-08"), page("2030-01-09")]


async def test_a_block_spanning_days_is_in_each_and_leaves_those_it_no_longer_covers(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    trip = busy_block("trip", DAY + timedelta(hours=12), minutes=3 * 24 * 60, show_as=ShowAs.OOF)
    await table.replace_event("room-1", "trip", [trip])
    middle = DAY + timedelta(days=2, hours=9)
    assert ids(await table.list_between("room-1", middle, middle + timedelta(hours=1))) == ["trip"]
    assert len(await day_rows(adapters)) == 4  # the 7th to the 10th

    shorter = trip.model_copy(update={"end": trip.start + timedelta(hours=6)})
    await table.replace_event("room-1", "trip", [shorter])

    assert await table.list_between("room-1", middle, middle + timedelta(hours=1)) == []
    assert ids(await table.list_between("room-1", DAY, DAY + timedelta(days=7))) == ["trip"]
    assert [e["RowKey"] for e in await day_rows(adapters)] == [page("2030-01-07")]


async def test_a_window_reads_the_same_blocks_from_the_days_as_from_the_block_rows(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    rng = random.Random(5)
    blocks = [
        busy_block(
            f"ev-{i}",
            DAY + timedelta(minutes=rng.randrange(0, 30 * 24 * 60)),
            minutes=rng.choice([0, 15, 60, 600, 3000]),
        )
        for i in range(300)
    ]
    await table.replace_all("room-1", blocks)

    for offset_hours, hours in ((0, 1), (37, 5), (24 * 3, 24 * 7), (-24, 24 * 40), (24 * 29, 30)):
        start = DAY + timedelta(hours=offset_hours)
        end = start + timedelta(hours=hours)
        by_days = await table.list_between("room-1", start, end)
        by_scan = await table.scan_between("room-1", start, end)
        times = (await adapters.day_views.day_view("room-1", start, end)).busy
        assert sorted(ids(by_days)) == sorted(ids(by_scan))
        assert by_days == sorted(by_days, key=lambda b: b.start)
        assert times == sorted((b.start, b.end, b.show_as) for b in by_scan)


def graph_like(rng: random.Random) -> str:
    return "AAMkAD" + base64.b64encode(rng.randbytes(114)).decode()


async def test_a_day_of_hundreds_of_events_is_split_into_rows_within_the_property_limit(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    rng = random.Random(3)
    crowded = [
        busy_block(
            graph_like(rng),
            DAY + timedelta(minutes=2 * i),
            minutes=2,
            summary="Ünïcödé subject " + "x" * 180,  # escaped to ASCII in the rows
            change_key=graph_like(rng)[:40],
        )
        for i in range(600)
    ]
    await table.replace_all("room-1", crowded)

    rows = await day_rows(adapters)
    assert len(rows) > 5
    for entity in rows:
        data = entity[BLOCKS_PROPERTY]
        assert data.isascii()
        assert len(data) <= PAGE_CHARS  # 64 KiB as UTF-16
    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert sorted(b.event_id for b in found) == sorted(b.event_id for b in crowded)
    assert {b.summary[:7] for b in found if b.summary} == {"Ünïcödé"}

    await table.replace_all("room-1", crowded[:10])

    assert [e["RowKey"] for e in await day_rows(adapters)] == [page("2030-01-07")]
    assert len(await table.list_between("room-1", DAY, DAY + timedelta(days=1))) == 10


async def test_a_day_too_large_even_split_keeps_its_busy_time_without_subjects(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(busy_days, "MAX_DAY_PAGES", 1)
    crowded = [
        busy_block(f"ev-{i:03d}", DAY + timedelta(minutes=i), minutes=1, summary="s" * 200)
        for i in range(120)
    ]
    await adapters.unavailability.replace_all("room-1", crowded)

    found = await adapters.unavailability.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert [(b.event_id, b.start, b.end) for b in found] == [
        (b.event_id, b.start, b.end) for b in crowded
    ]
    assert {b.summary for b in found} == {None}
    # The block rows, which are not limited per day, keep them.
    assert {b.summary for b in await adapters.unavailability.list_for_resource("room-1")} == {
        "s" * 200
    }


async def test_removing_a_series_empties_every_day_it_was_in(adapters: Adapters) -> None:
    table = adapters.unavailability
    series = [
        busy_block(f"standup-{i}", T0 + timedelta(days=i), series_master_id="standup")
        for i in range(30)
    ]
    await table.replace_event("room-1", "standup", series)
    await table.replace_event("room-1", "single", [busy_block("single", T0 + timedelta(days=3))])

    await table.remove_event("room-1", "standup-3")  # one occurrence, by its own id
    month = await table.list_between("room-1", DAY, DAY + timedelta(days=31))
    assert len(month) == 30
    assert "standup-3" not in ids(month)

    await table.remove_event("room-1", "standup")  # the series, by its master's id

    assert ids(await table.list_between("room-1", DAY, DAY + timedelta(days=31))) == ["single"]
    assert [e["RowKey"] for e in await day_rows(adapters)] == [page("2030-01-10")]


async def test_concurrent_writers_of_one_day_all_land(adapters: Adapters) -> None:
    table = adapters.unavailability
    blocks = [busy_block(f"ev-{i}", T0 + timedelta(minutes=10 * i)) for i in range(12)]

    await asyncio.gather(*(table.replace_event("room-1", b.event_id, [b]) for b in blocks))

    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert sorted(ids(found)) == sorted(ids(blocks))


async def test_a_writer_that_lost_the_day_to_another_reads_it_again_and_keeps_both(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = adapters.unavailability
    other = BusyDayTable(adapters.tables)  # the reconcile round, say, in another process
    theirs = busy_block("theirs", T0)
    mine = busy_block("mine", T0 + timedelta(hours=2))
    read = table.days._read  # the moment between read and write
    reads = 0

    async def read_then_lose_the_race(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        rows = await read(*args)
        if reads == 1:

            def add_theirs(day: date, blocks: DayBlocks) -> DayBlocks:
                return blocks | {"theirs|x": theirs}

            await other.update("room-1", [DAY.date()], add_theirs)
        return rows

    monkeypatch.setattr(table.days, "_read", read_then_lose_the_race)
    await table.replace_event("room-1", "mine", [mine])

    assert reads == 3  # lost, read again and won; then the check after the block rows
    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert ids(found) == ["theirs", "mine"]


async def test_a_full_replace_repairs_day_rows_an_interrupted_write_left(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    kept = busy_block("kept", T0)
    await table.replace_all("room-1", [kept])
    orphan = busy_block("orphan", T0 + timedelta(days=2))
    # Day rows written, then the process died before the block rows were.
    await table.days.update(
        "room-1", [orphan.start.date()], lambda day, blocks: blocks | {"orphan|x": orphan}
    )
    assert ids(await table.list_between("room-1", DAY, DAY + timedelta(days=7))) == [
        "kept",
        "orphan",
    ]

    await table.replace_all("room-1", [kept])

    assert ids(await table.list_between("room-1", DAY, DAY + timedelta(days=7))) == ["kept"]


async def test_a_full_replace_keeps_the_day_rows_of_an_event_written_meanwhile(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = adapters.unavailability
    inbound = UnavailabilityTable(adapters.tables)  # the inbound worker, say
    await table.replace_all("room-1", [busy_block("old", T0)])
    new = busy_block("new", T0 + timedelta(hours=3))
    write_difference = table._write_difference

    async def inbound_lands_meanwhile(*args: Any, **kwargs: Any) -> None:
        # The round read the block rows before the new event came; the inbound worker
        # writes it (day rows and block rows) while the round writes its difference.
        await inbound.replace_event("room-1", "new", [new])
        await write_difference(*args, **kwargs)

    monkeypatch.setattr(table, "_write_difference", inbound_lands_meanwhile)
    await table.replace_all("room-1", [busy_block("old", T0)])

    blocks = await table.list_for_resource("room-1")
    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert sorted(ids(found)) == sorted(ids(blocks)) == ["new", "old"]


async def test_an_event_written_across_a_whole_full_replace_keeps_its_day_rows(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = adapters.unavailability  # the reconcile round, say
    inbound = UnavailabilityTable(adapters.tables)
    await table.replace_all("room-1", [busy_block("old", T0)])
    new = busy_block("new", T0 + timedelta(hours=3))
    update_days = inbound.days.update
    updates = 0

    async def a_full_replace_runs_after_the_day_rows(*args: Any) -> None:
        nonlocal updates
        updates += 1
        await update_days(*args)
        if updates == 1:
            # Its calendar was read before the new event: it rebuilds the days without it.
            await table.replace_all("room-1", [busy_block("old", T0)])

    monkeypatch.setattr(inbound.days, "update", a_full_replace_runs_after_the_day_rows)
    await inbound.replace_event("room-1", "new", [new])

    blocks = await table.list_for_resource("room-1")
    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert sorted(ids(found)) == sorted(ids(blocks)) == ["new", "old"]


async def test_a_writer_whose_day_lost_a_row_meanwhile_reads_it_again(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = adapters.unavailability
    other = BusyDayTable(adapters.tables)
    crowded = [
        busy_block(f"ev-{i:03d}", DAY + timedelta(minutes=i), minutes=1, summary="s" * 200)
        for i in range(120)
    ]
    await table.replace_all("room-1", crowded)
    assert len(await day_rows(adapters)) == 2
    mine = busy_block("mine", T0 + timedelta(hours=5))
    read = table.days._read
    reads = 0

    async def read_then_the_day_shrinks(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        rows = await read(*args)
        if reads == 1:
            # Another writer empties most of the day: its second row is deleted.
            await other.update(
                "room-1", [DAY.date()], lambda day, blocks: dict(list(blocks.items())[:5])
            )
        return rows

    monkeypatch.setattr(table.days, "_read", read_then_the_day_shrinks)
    await table.replace_event("room-1", "mine", [mine])

    found = await table.list_between("room-1", DAY, DAY + timedelta(days=1))
    assert ids(found) == [*(f"ev-{i:03d}" for i in range(5)), "mine"]


def keeper(adapters: Adapters) -> SlotKeeper:
    return SlotKeeper(adapters.slot_ledger, adapters.bookings, lambda: T0 - timedelta(days=1))


async def test_a_window_is_one_read_of_its_busy_pages_and_the_ledgers_days(
    adapters: Adapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = keeper(adapters)
    tentative = busy_block("c", T0 + timedelta(days=2), show_as=ShowAs.TENTATIVE)
    blocks = [busy_block("a", T0), busy_block("b", T0 + timedelta(days=1)), tentative]
    await adapters.unavailability.replace_all("room-1", blocks)
    await slots.claim("room-1", "bk-1", TimeRange(start=DAY, end=DAY + timedelta(hours=1)))
    late = DAY + timedelta(days=2, hours=23)
    await slots.claim("room-1", "bk-2", TimeRange(start=late, end=late + timedelta(hours=2)))
    await slots.claim("room-2", "bk-3", TimeRange(start=DAY, end=DAY + timedelta(hours=1)))
    client = await adapters.tables.table(SLOT_LEDGER)
    queries: list[object] = []
    query_entities = client.query_entities

    def counted(*args: Any, **kwargs: Any) -> Any:
        queries.append(kwargs.get("select"))
        return query_entities(*args, **kwargs)

    monkeypatch.setattr(client, "query_entities", counted)
    view = await adapters.day_views.day_view("room-1", DAY, DAY + timedelta(days=3))

    assert len(queries) == 1
    assert view.busy == [(b.start, b.end, b.show_as) for b in blocks]
    claims = claims_overlapping(view.ledger, DAY, DAY + timedelta(days=3))
    assert [c.booking_id for c in claims] == ["bk-1", "bk-2"]  # not room-2's
    # A window of the first day alone: its busy page and ledger row, not the next days'.
    first = await adapters.day_views.day_view("room-1", DAY, DAY + timedelta(days=1))
    assert [b.start for b in first.busy] == [T0]
    assert [row.day for row in first.ledger] == [DAY.date()]


async def test_the_ledgers_rows_and_the_busy_pages_among_them_leave_each_other_alone(
    adapters: Adapters,
) -> None:
    slots = keeper(adapters)
    mirror = adapters.unavailability
    await slots.claim("room-1", "bk-1", TimeRange(start=T0, end=T0 + timedelta(hours=1)))
    await mirror.replace_all(
        "room-1", [busy_block("a", T0), busy_block("b", T0 + timedelta(days=1))]
    )
    # A claim across midnight reads and writes the ledger's rows of two days, with the
    # first day's busy page sorted between them.
    night = DAY + timedelta(hours=23)
    await slots.claim("room-1", "bk-2", TimeRange(start=night, end=night + timedelta(hours=2)))
    await slots.release("room-1", "bk-1", TimeRange(start=T0, end=T0 + timedelta(hours=1)))

    claims = await slots.claims_between("room-1", DAY, DAY + timedelta(days=2))
    assert [(c.booking_id, c.status.holds_time) for c in claims] == [("bk-2", True)]
    assert [e["RowKey"] for e in await day_rows(adapters)] == [
        page("2030-01-07"),
        page("2030-01-08"),
    ]

    await mirror.replace_all("room-1", [])  # the whole mirror rebuilt empty

    assert await day_rows(adapters) == []
    claims = await slots.claims_between("room-1", DAY, DAY + timedelta(days=2))
    assert [c.booking_id for c in claims] == ["bk-2"]


async def test_going_back_to_layout_2_leaves_the_ledger_and_marks_every_mirror_legacy(
    adapters: Adapters,
) -> None:
    slots = keeper(adapters)
    await adapters.resources.add(resource("room-1").model_copy(update={"mirror_layout": 3}))
    await adapters.resources.add(resource("room-2").model_copy(update={"mirror_layout": 1}))
    blocks = [busy_block(f"ev-{n}", T0 + timedelta(days=n)) for n in range(3)]
    await adapters.unavailability.replace_all("room-1", blocks)
    await slots.claim("room-1", "bk-1", TimeRange(start=T0, end=T0 + timedelta(hours=1)))
    night = DAY + timedelta(hours=23)
    await slots.claim("room-1", "bk-2", TimeRange(start=night, end=night + timedelta(hours=2)))
    assert len(await day_rows(adapters)) == 3

    done = await downgrade(adapters.tables)

    assert (done.resources_marked, done.pages_deleted) == (1, 3)
    assert await day_rows(adapters) == []
    # What a layout 2 release reads: every row of the ledger's day range as a ledger row.
    client = await adapters.tables.table(SLOT_LEDGER)
    rows = [
        DayLedger.model_validate_json(entity["Data"])
        async for entity in client.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
            parameters={"pk": "room-1", "lo": "day|2030-01-07", "hi": "day|2030-01-09"},
        )
    ]
    assert [[c.booking_id for c in row.claims] for row in rows] == [["bk-1", "bk-2"], ["bk-2"]]
    for resource_id in ("room-1", "room-2"):
        stored = await adapters.resources.get(resource_id)
        assert stored is not None
        assert stored.value.mirror_layout == LEGACY_MIRROR_LAYOUT
    # The block rows the earlier release reads until its full round are complete.
    week = await adapters.unavailability.scan_between("room-1", DAY, DAY + timedelta(days=7))
    assert ids(week) == ["ev-0", "ev-1", "ev-2"]
    assert await downgrade(adapters.tables) == Downgraded(resources_marked=0, pages_deleted=0)
