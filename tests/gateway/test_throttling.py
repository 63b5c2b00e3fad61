"""Staying inside Outlook's limits: retries honour Retry-After and are bounded, at most 4
requests are in flight per mailbox, and `$batch` answers are retried one by one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from shared.adapters.graph import GraphCalendarGateway
from shared.domain.errors import GraphThrottled
from shared.ports import EventWrite
from tests.gateway.conftest import ALICE, BOB, ROOM, EmulatorControl
from tests.gateway.test_events import START, draft

EVENTS = "/users/{id}/events"
VIEW = "/users/{id}/calendarView"


async def test_a_create_that_meets_a_503_is_sent_again_and_makes_one_event(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(mailbox=ALICE, pathContains="/events", status=503, count=1)

    created = await gateway.create_event(ALICE, draft("bk-503"), transaction_id="tx-503")

    assert await control.request_count("POST", EVENTS, ALICE) == 2
    assert (await control.stats())["statuses"]["503"] == 1
    assert [e.event_id for e in await gateway.list_our_events(ALICE)] == [created.event_id]
    stored = control.emulator.state.find_mailbox(ALICE)
    assert stored is not None
    assert [r.transaction_id for r in stored.events.values()] == ["tx-503"]


async def test_a_429_with_retry_after_is_waited_out(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(
        mailbox=ALICE, pathContains="/calendarView", status=429, retryAfter=1, count=1
    )

    view = await gateway.calendar_view(ALICE, START, START + timedelta(days=1))

    assert view == []
    assert await control.request_count("GET", VIEW, ALICE) == 2
    assert (await control.stats())["statuses"]["429"] == 1


async def test_throttling_beyond_the_budget_is_reported_not_slept_through(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    # Retry-After: 120 is longer than the policy's longest wait: give up at once.
    await control.add_fault(mailbox=ALICE, status=429, retryAfter=120)

    with pytest.raises(GraphThrottled) as caught:
        await gateway.calendar_view(ALICE, START, START + timedelta(days=1))

    assert caught.value.retry_after_seconds == 120
    assert await control.request_count("GET", VIEW, ALICE) == 1


async def test_a_burst_of_50_on_one_mailbox_keeps_4_in_flight(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.set_latency(20)  # long enough for requests to overlap
    creates = [
        gateway.create_event(ALICE, draft(f"bk-{n}", START + timedelta(hours=n)), f"tx-{n}")
        for n in range(25)
    ]
    reads = [gateway.calendar_view(ALICE, START, START + timedelta(days=1)) for _ in range(25)]

    created, viewed = await asyncio.gather(asyncio.gather(*creates), asyncio.gather(*reads))

    assert len({event.event_id for event in created}) == 25
    assert len(viewed) == 25
    stats = await control.stats()
    assert 2 <= stats["peakConcurrency"][ALICE] <= 4
    assert "429" not in stats["statuses"]
    assert await control.request_count("POST", EVENTS, ALICE) == 25


async def test_a_batch_of_20_with_an_inner_429_completes(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    existing = [
        await gateway.create_event(BOB, draft(f"bk-bob-{n}", START + timedelta(hours=n)), f"b{n}")
        for n in range(8)
    ]
    writes = [
        EventWrite(
            mailbox=ALICE,
            op="create",
            draft=draft(f"bk-{n}", START + timedelta(hours=n)),
            transaction_id=f"tx-batch-{n}",
        )
        for n in range(12)
    ]
    writes += [
        EventWrite(mailbox=BOB, op="update", event_id=e.event_id, draft=draft(f"bk-bob-{n}", START))
        for n, e in enumerate(existing[:4])
    ]
    writes += [EventWrite(mailbox=BOB, op="delete", event_id=e.event_id) for e in existing[4:]]
    await control.add_fault(
        mailbox=ALICE, pathContains="/events", status=429, retryAfter=1, count=1
    )

    results = await gateway.write_batch(writes)

    assert [r.error for r in results] == [None] * 20
    created = [r.event for r in results[:12]]
    assert [e.booking_id for e in created if e] == [f"bk-{n}" for n in range(12)]
    updated = [r.event for r in results[12:16]]
    assert [e.start for e in updated if e] == [START] * 4
    assert [r.event for r in results[16:]] == [None] * 4
    assert await control.request_count("POST", "/$batch") == 2
    assert await control.request_count("POST", EVENTS, ALICE) == 13  # 12 + the throttled one
    assert len(await gateway.list_our_events(ALICE)) == 12
    assert len(await gateway.list_our_events(BOB)) == 4


async def test_a_large_batch_is_split_and_keeps_its_order(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    mailboxes = (ALICE, BOB, ROOM)
    writes = [
        EventWrite(
            mailbox=mailboxes[n % 3],
            op="create",
            draft=draft(f"bk-{n}", START + timedelta(hours=n)),
            transaction_id=f"tx-large-{n}",
        )
        for n in range(45)
    ]
    writes.append(EventWrite(mailbox=ALICE, op="delete", event_id="AAMkAGgone"))  # already gone
    writes.append(EventWrite(mailbox=ALICE, op="update", draft=None, event_id="x"))  # malformed

    results = await gateway.write_batch(writes)

    assert [r.event.booking_id for r in results[:45] if r.event] == [f"bk-{n}" for n in range(45)]
    assert results[45].error is None
    assert results[45].event is None
    assert results[46].error is not None
    assert results[46].error.code == "invalid_input"
    assert await control.request_count("POST", "/$batch") == 3
    assert (await control.stats())["peakConcurrency"][ALICE] <= 4
