"""What the sync reads: calendarView with series expanded, and delta rounds (initial,
incremental, a lost sync state, and starting over)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from shared.adapters.graph import GraphCalendarGateway, StaticTokenCredential
from shared.adapters.graph import gateway as gateway_module
from shared.domain.calendar import EventType
from shared.domain.errors import GraphAccessDenied, GraphSyncStateLost, GraphTransient
from tests.gateway.conftest import ALICE, BOB, FAST_RETRY, ROOM, EmulatorControl
from tests.gateway.test_events import START, draft


def _path(event_id: str) -> str:
    return f"/users/{ALICE}/events/{quote(event_id, safe='')}"


async def test_weekly_series_with_a_moved_and_a_deleted_occurrence(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    # An Outlook user makes a weekly series of 4 (Mondays 10:00 Berlin = 09:00 UTC) ...
    master = await control.graph(
        "POST",
        f"/users/{ALICE}/events",
        {
            "subject": "Weekly sync",
            "start": {"dateTime": "2030-03-04T10:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-03-04T11:00:00", "timeZone": "Europe/Berlin"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2030-03-04", "numberOfOccurrences": 4},
            },
        },
    )
    window = {"startDateTime": "2030-03-01T00:00:00Z", "endDateTime": "2030-04-01T00:00:00Z"}
    instances = await control.graph(
        "GET",
        _path(master["id"]) + "/instances?" + "&".join(f"{k}={v}" for k, v in window.items()),
    )
    second, third = instances["value"][1], instances["value"][2]
    # ... moves the second occurrence two hours later and deletes the third.
    await control.graph(
        "PATCH",
        _path(second["id"]),
        {
            "start": {"dateTime": "2030-03-11T12:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-03-11T13:00:00", "timeZone": "Europe/Berlin"},
        },
    )
    await control.graph("DELETE", _path(third["id"]))

    view = await gateway.calendar_view(
        ALICE, datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC)
    )

    assert [(e.type, e.start) for e in view] == [
        (EventType.OCCURRENCE, datetime(2030, 3, 4, 9, tzinfo=UTC)),
        (EventType.EXCEPTION, datetime(2030, 3, 11, 11, tzinfo=UTC)),
        (EventType.OCCURRENCE, datetime(2030, 3, 25, 9, tzinfo=UTC)),
    ]
    assert third["id"] not in {e.event_id for e in view}
    assert {e.series_master_id for e in view} == {master["id"]}
    assert all(e.end - e.start == timedelta(hours=1) for e in view)

    # The series alone, as a master's change reads it: the same instances.
    series = await gateway.series_instances(
        ALICE, master["id"], datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC)
    )
    assert sorted((e.event_id, e.start) for e in series) == sorted(
        (e.event_id, e.start) for e in view
    )
    await control.graph("DELETE", _path(master["id"]))
    gone = await gateway.series_instances(
        ALICE, master["id"], datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC)
    )
    assert gone == []


async def test_delta_initial_incremental_lost_and_started_over(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    # Pages of 5 make every round follow nextLinks to its deltaLink.
    paged = GraphCalendarGateway.connect(
        control.emulator.graph_url, StaticTokenCredential(), retry=FAST_RETRY, page_size=5
    )
    try:
        await _delta_rounds(gateway, paged, control)
    finally:
        await paged.close()


async def _delta_rounds(
    gateway: GraphCalendarGateway, paged: GraphCalendarGateway, control: EmulatorControl
) -> None:
    window = (START - timedelta(days=1), START + timedelta(days=30))
    kept = await gateway.create_event(ALICE, draft("bk-kept"), "tx-kept")
    removed = await gateway.create_event(
        ALICE, draft("bk-removed", START + timedelta(days=1)), "tx-removed"
    )
    for n in range(11):  # several pages at the gateway's page size below
        await gateway.create_event(
            ALICE, draft(f"bk-{n}", START + timedelta(days=2, hours=n)), f"t{n}"
        )
    await gateway.create_event(BOB, draft("bk-bob"), "tx-bob")  # another mailbox: not seen

    initial = await paged.delta(ALICE, *window, delta_link=None)
    assert len(initial.events) == 13
    assert initial.removed_ids == []
    assert all(e.start.tzinfo is not None for e in initial.events)

    moved = START + timedelta(days=3)
    await gateway.update_event(ALICE, kept.event_id, draft("bk-kept", moved))
    await gateway.delete_event(ALICE, removed.event_id)

    incremental = await paged.delta(ALICE, *window, delta_link=initial.delta_link)
    assert [(e.event_id, e.start) for e in incremental.events] == [(kept.event_id, moved)]
    assert incremental.removed_ids == [removed.event_id]

    quiet = await paged.delta(ALICE, *window, delta_link=incremental.delta_link)
    assert (quiet.events, quiet.removed_ids) == ([], [])

    await control.expire_delta(ALICE)
    with pytest.raises(GraphSyncStateLost):
        await paged.delta(ALICE, *window, delta_link=quiet.delta_link)

    fresh = await paged.delta(ALICE, *window, delta_link=None)
    assert len(fresh.events) == 12
    assert kept.event_id in {e.event_id for e in fresh.events}


async def test_get_schedule_reports_busy_blocks(gateway: GraphCalendarGateway) -> None:
    await gateway.create_event(BOB, draft("bk-bob"), "tx-bob")

    blocks = await gateway.get_schedule(
        ALICE, [BOB], START - timedelta(hours=1), START + timedelta(hours=3)
    )

    assert [(b.mailbox, b.start, b.end, b.show_as.value) for b in blocks] == [
        (BOB, START, START + timedelta(hours=1), "busy")
    ]


async def test_slot_views_of_a_panel_go_in_one_batch(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    # Pages of 2: a mailbox with more events in the slot follows its nextLink.
    paged = GraphCalendarGateway.connect(
        control.emulator.graph_url, StaticTokenCredential(), retry=FAST_RETRY, page_size=2
    )
    try:
        for n in range(3):
            await gateway.create_event(ALICE, draft(f"bk-a{n}"), f"tx-a{n}")
        await gateway.create_event(BOB, draft("bk-bob"), "tx-bob")
        await gateway.create_event(BOB, draft("bk-later", START + timedelta(hours=5)), "tx-l")
        batches_before = await control.request_count("POST", "/$batch")

        views = await paged.calendar_views([ALICE, BOB, ROOM], START, START + timedelta(hours=1))
    finally:
        await paged.close()

    assert await control.request_count("POST", "/$batch") == batches_before + 1
    assert sorted(e.booking_id or "" for e in views[ALICE]) == ["bk-a0", "bk-a1", "bk-a2"]
    assert [e.booking_id for e in views[BOB]] == ["bk-bob"]
    assert views[ROOM] == []


async def test_a_slot_view_graph_is_slow_to_answer_gives_up_within_its_budget(
    gateway: GraphCalendarGateway, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A booking request waits on the live look: a Graph that answers late (the default
    # read timeout is 30 s) must not hold it past the look's own budget.
    monkeypatch.setattr(gateway_module, "LIVE_VIEW_BUDGET_S", 0.5)
    await control.add_fault(mailbox=BOB, pathContains="calendarView", latencyMs=3000)

    started = time.monotonic()
    with pytest.raises(GraphTransient) as slow:
        await gateway.calendar_views([ALICE, BOB], START, START + timedelta(hours=1))

    assert time.monotonic() - started < 2.0
    assert "did not answer within" in slow.value.message


async def test_a_slot_view_graph_refuses_raises(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(mailbox=BOB, status=403, code="ErrorAccessDenied")

    with pytest.raises(GraphAccessDenied) as refused:
        await gateway.calendar_views([ALICE, BOB], START, START + timedelta(hours=1))
    assert refused.value.mailbox == BOB
