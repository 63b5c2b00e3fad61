"""The unavailability mirror's table adapter against Azurite: full replaces and windows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.composition import Adapters
from shared.domain.calendar import CalendarEvent, ShowAs, Unavailability
from shared.services.mirror import MirrorService
from tests.builders import T0, busy_block
from tests.fakes import FakeCalendar

pytestmark = pytest.mark.integration


def calendar(resource_id: str) -> list[Unavailability]:
    """130 single events, a 20-occurrence series and a 10-occurrence one."""
    singles = [
        busy_block(f"ev-{i}", T0 + timedelta(hours=i), resource_id=resource_id, summary="x")
        for i in range(130)
    ]
    series = [
        busy_block(
            f"{master}-occ-{i}",
            T0 + timedelta(days=i, minutes=offset),
            resource_id=resource_id,
            series_master_id=master,
        )
        for master, count, offset in (("series-a", 20, 10), ("series-b", 10, 40))
        for i in range(count)
    ]
    return singles + series


def changed(blocks: list[Unavailability]) -> list[Unavailability]:
    """The same calendar later: more than 100 rows to write, in every kind of change."""
    by_id = {b.event_id: b for b in blocks}
    resource_id = blocks[0].resource_id
    kept = [by_id[f"ev-{i}"] for i in range(40)]
    renamed = [  # same row, new content: upserts
        by_id[f"ev-{i}"].model_copy(update={"summary": "renamed", "show_as": ShowAs.TENTATIVE})
        for i in range(40, 80)
    ]
    moved = [  # new row, old one gone: an upsert and a delete each
        by_id[f"ev-{i}"].model_copy(
            update={
                "start": by_id[f"ev-{i}"].start + timedelta(minutes=15),
                "end": by_id[f"ev-{i}"].end + timedelta(minutes=15),
            }
        )
        for i in range(80, 110)
    ]
    # ev-110..129 deleted; series-a loses five occurrences; series-b is deleted.
    series_a = [b for b in blocks if b.series_master_id == "series-a"][5:]
    new = [
        busy_block(f"new-{i}", T0 + timedelta(hours=i, minutes=5), resource_id=resource_id)
        for i in range(60)
    ]
    series_c = [
        busy_block(
            f"series-c-occ-{i}",
            T0 + timedelta(days=i, minutes=50),
            resource_id=resource_id,
            series_master_id="series-c",
        )
        for i in range(10)
    ]
    return kept + renamed + moved + series_a + new + series_c


def groups(blocks: list[Unavailability]) -> dict[str, list[Unavailability]]:
    grouped: dict[str, list[Unavailability]] = {}
    for block in blocks:
        grouped.setdefault(block.series_master_id or block.event_id, []).append(block)
    return grouped


async def per_event_replace(
    adapters: Adapters, resource_id: str, blocks: list[Unavailability]
) -> None:
    """The path a full replace took before: `replace_event` per event or series."""
    wanted = groups(blocks)
    existing = groups(await adapters.unavailability.list_for_resource(resource_id))
    for group, group_blocks in wanted.items():
        await adapters.unavailability.replace_event(resource_id, group, group_blocks)
    for gone in existing.keys() - wanted.keys():
        await adapters.unavailability.replace_event(resource_id, gone, [])


def contents(blocks: list[Unavailability]) -> list[str]:
    """Blocks as comparable text, whatever resource they belong to."""
    return sorted(b.model_copy(update={"resource_id": "any"}).model_dump_json() for b in blocks)


async def test_replace_all_writes_every_kind_of_change_like_the_per_event_path(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    for resource_id in ("room-1", "room-2"):
        await table.replace_all(resource_id, calendar(resource_id))
    assert len(await table.list_for_resource("room-1")) == 160

    # 40 + 30 + 60 + 10 upserts and 30 + 20 + 5 + 10 deletes: two full transactions and one more.
    await table.replace_all("room-1", changed(calendar("room-1")))
    await per_event_replace(adapters, "room-2", changed(calendar("room-2")))

    by_replace_all = await table.list_for_resource("room-1")
    by_event = await table.list_for_resource("room-2")
    assert contents(by_replace_all) == contents(changed(calendar("room-1")))
    assert contents(by_replace_all) == contents(by_event)


async def test_replace_all_of_an_unchanged_mirror_writes_nothing(adapters: Adapters) -> None:
    table = adapters.unavailability
    await table.replace_all("room-1", calendar("room-1"))
    before = {row.value.event_id: row.etag for row in await table.query("room-1")}

    await table.replace_all("room-1", calendar("room-1"))

    after = {row.value.event_id: row.etag for row in await table.query("room-1")}
    assert after == before


async def test_replace_all_empties_one_resource_and_leaves_the_others(adapters: Adapters) -> None:
    table = adapters.unavailability
    await table.replace_all("room-1", calendar("room-1"))
    await table.replace_all("room-2", calendar("room-2")[:3])

    await table.replace_all("room-1", [])

    assert await table.list_for_resource("room-1") == []
    assert contents(await table.list_for_resource("room-2")) == contents(calendar("room-2")[:3])


async def test_a_full_replace_after_event_updates_drops_what_the_calendar_lost(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    # Notifications wrote these one event at a time; the full round sees only ev-1 now.
    for block in (busy_block("ev-1", T0), busy_block("ev-2", T0 + timedelta(hours=1))):
        await table.replace_event("room-1", block.event_id, [block])
    mirror = MirrorService(FakeCalendar(), table, lambda: T0, days_back=1, days_ahead=180)
    still_there = CalendarEvent(event_id="ev-1", start=T0, end=T0 + timedelta(minutes=30))

    count = await mirror.replace_all("room-1", [still_there], time_zone="UTC")

    assert count == 1
    assert [b.event_id for b in await table.list_for_resource("room-1")] == ["ev-1"]


async def test_list_between_finds_every_block_overlapping_the_window(
    adapters: Adapters,
) -> None:
    day = T0.replace(hour=0)
    window = (T0, T0 + timedelta(hours=2))
    blocks = [
        busy_block("ends-at-start", T0 - timedelta(minutes=30)),
        busy_block("starts-at-end", window[1]),
        busy_block("crosses-start", T0 - timedelta(minutes=15)),
        busy_block("crosses-end", window[1] - timedelta(minutes=15)),
        busy_block("exactly", T0, minutes=120),
        busy_block("all-day", day, minutes=24 * 60, is_all_day=True),
        busy_block("all-day-next", day + timedelta(days=1), minutes=24 * 60, is_all_day=True),
        # Three weeks out of office from ten days before: longer than any bound on block
        # length a time-keyed layout would assume.
        busy_block("vacation", day - timedelta(days=10), minutes=21 * 24 * 60, show_as=ShowAs.OOF),
        busy_block("next-week", T0 + timedelta(days=7)),
    ]
    await adapters.unavailability.replace_all("room-1", blocks)

    found = await adapters.unavailability.list_between("room-1", *window)
    next_morning = day + timedelta(days=1)
    next_day = await adapters.unavailability.list_between(
        "room-1", next_morning, next_morning + timedelta(hours=1)
    )

    assert [b.event_id for b in found] == [
        "vacation",
        "all-day",
        "crosses-start",
        "exactly",
        "crosses-end",
    ]
    # The day's all-day block ends where the next day starts: it is not busy then.
    assert [b.event_id for b in next_day] == ["vacation", "all-day-next"]


async def test_remove_event_finds_one_occurrence_inside_its_series_group(
    adapters: Adapters,
) -> None:
    table = adapters.unavailability
    series = [
        busy_block(f"standup-{day}", T0 + timedelta(days=day), series_master_id="standup")
        for day in range(3)
    ]
    await table.replace_event("room-1", "standup", series)
    await table.replace_event("room-1", "single", [busy_block("single", T0)])

    await table.remove_event("room-1", "standup-1")  # a delta @removed of one occurrence
    await table.remove_event("room-1", "single")
    await table.remove_event("room-1", "never-there")

    left = await table.list_for_resource("room-1")
    assert sorted(b.event_id for b in left) == ["standup-0", "standup-2"]


async def test_several_events_replaced_and_removed_in_one_write(adapters: Adapters) -> None:
    mirror = adapters.unavailability
    await mirror.replace_all("room-1", calendar("room-1"))

    moved = busy_block("ev-1", T0 + timedelta(hours=50), resource_id="room-1")
    await mirror.replace_events(
        "room-1",
        {
            "ev-1": [moved],  # moved
            "ev-2": None,  # a single event gone
            "series-a-occ-3": None,  # one occurrence gone, found inside its series' group
            "ev-new": [busy_block("ev-new", T0 + timedelta(hours=60), resource_id="room-1")],
        },
    )

    stored = {b.event_id: b for b in await mirror.list_for_resource("room-1")}
    assert stored["ev-1"].start == moved.start
    assert "ev-2" not in stored
    assert "series-a-occ-3" not in stored
    assert "series-a-occ-4" in stored
    assert "ev-new" in stored
    assert len(stored) == 160 - 2 + 1
    # The day rows agree with the block rows.
    window = await mirror.list_between("room-1", T0 - timedelta(days=1), T0 + timedelta(days=30))
    assert {b.event_id for b in window} == set(stored)
