"""Moving an existing deployment's mirrors to the current day rows: a resource whose
mirror was kept before them (no day rows, or day rows in the table of their own that
layout 2 kept) is read from its block rows until a full reconcile round has rebuilt its
days; new resources keep the current day rows from the start."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.calendar import CalendarEvent
from shared.domain.resources import (
    LEGACY_MIRROR_LAYOUT,
    MIRROR_LAYOUT,
    ConnectionStatus,
    Direction,
    Resource,
    ResourceSettings,
)
from shared.services.availability import AvailabilityQuery
from tests.builders import T0, resource
from tests.fakes import Clock, FakeUnavailability, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


def legacy_room(world: FakeWorld, **settings: object) -> Resource:
    """A resource as an earlier release stored it (no layout), its delta state current."""
    stored = resource("room-1", **settings)
    start, _ = world.services.mirror.window()
    return stored.model_copy(
        update={
            "status": ConnectionStatus(
                last_sync_at=world.clock.now, mirror_refreshed_at=world.clock.now
            ),
            "delta_link": "https://graph.microsoft.com/v1.0/delta?token=current",
            "delta_window_start": start,
        }
    )


def fake_unavailability(world: FakeWorld) -> FakeUnavailability:
    assert isinstance(world.ports.unavailability, FakeUnavailability)
    return world.ports.unavailability


async def test_a_resource_stored_before_the_layout_parses_as_legacy() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    data = legacy_room(world).model_dump(mode="json", by_alias=True)
    del data["mirrorLayout"]

    assert Resource.model_validate(data).mirror_layout == LEGACY_MIRROR_LAYOUT


@pytest.mark.parametrize("layout", [LEGACY_MIRROR_LAYOUT, 2])
async def test_an_earlier_layouts_resource_is_read_from_its_block_rows_until_a_full_round(
    layout: int,
) -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.resources.add(legacy_room(world).model_copy(update={"mirror_layout": layout}))
    meeting = CalendarEvent(event_id="meeting", start=T0, end=T0 + timedelta(hours=1))
    world.calendar.events[ROOM]["meeting"] = meeting
    mirror = fake_unavailability(world)
    query = AvailabilityQuery(start=T0 - timedelta(hours=1), end=T0 + timedelta(hours=3))

    await world.services.availability.availability("room-1", query)
    assert mirror.reads[-1] == "scan"

    report = await world.services.reconcile.reconcile("room-1")

    # The delta link was current, yet the round was a full one: it rebuilt the days.
    assert report.full
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.mirror_layout == MIRROR_LAYOUT
    answer = await world.services.availability.availability("room-1", query)
    assert mirror.reads[-1] == "days"
    assert [b.start for b in answer.busy] == [T0]
    assert not (await world.services.reconcile.reconcile("room-1")).full


async def test_a_legacy_resource_that_does_not_pull_keeps_its_delta_and_layout() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.resources.add(legacy_room(world, direction=Direction.OUT))

    report = await world.services.reconcile.reconcile("room-1")

    assert not report.full
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.mirror_layout == LEGACY_MIRROR_LAYOUT


async def test_a_new_resource_keeps_its_day_rows_from_the_start() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))

    await world.services.resources.put(
        "room-1", ResourceSettings(mailbox=ROOM, display_name="Room 1")
    )

    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.mirror_layout == MIRROR_LAYOUT
