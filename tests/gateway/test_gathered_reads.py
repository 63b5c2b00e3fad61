"""Event reads of several callers go to Graph together when Graph is busy.

A notification's read is one event of one mailbox; with many mailboxes each pass reads one
event, so only reads across mailboxes can share a request. The gateway's gatherer sends a
read at once while fewer than `GATHER_LANES` of its requests are in flight, and gathers
what comes while they all are into one `$batch` of up to 20, mailboxes mixed (Graph runs a
batch's requests irrespective of their mailboxes). Each caller retries its own failures.
"""

from __future__ import annotations

import asyncio

from shared.adapters.graph import GraphCalendarGateway
from shared.adapters.graph.batch import GATHER_LANES
from shared.domain.calendar import CalendarEvent
from shared.domain.errors import GraphAccessDenied
from tests.gateway.conftest import ALICE, BOB, ROOM, EmulatorControl
from tests.gateway.test_events import draft

EVENT_BY_ID = "/users/{id}/events/{eventId}"


async def _created(gateway: GraphCalendarGateway, mailbox: str, name: str) -> str:
    return (await gateway.create_event(mailbox, draft(name), transaction_id=f"tx-{name}")).event_id


async def test_reads_of_several_mailboxes_made_at_once_go_in_one_batch(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    ids = {
        mailbox: await _created(gateway, mailbox, f"bk-gather-{n}")
        for n, mailbox in enumerate((ALICE, BOB, ROOM))
    }
    batches = await control.request_count("POST", "/$batch")

    reads = await asyncio.gather(
        *(gateway.read_events(mailbox, [event_id]) for mailbox, event_id in ids.items())
    )

    for (mailbox, event_id), read in zip(ids.items(), reads, strict=True):
        found = read[event_id]
        assert isinstance(found, CalendarEvent), mailbox
        assert found.event_id == event_id
    assert await control.request_count("POST", "/$batch") == batches + 1


async def test_a_refused_read_in_a_gathered_batch_fails_alone(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    alice_event = await _created(gateway, ALICE, "bk-gather-ok")
    bob_event = await _created(gateway, BOB, "bk-gather-refused")
    await control.add_fault(mailbox=BOB, status=403, code="ErrorAccessDenied")

    alice_read, bob_read = await asyncio.gather(
        gateway.read_events(ALICE, [alice_event]), gateway.read_events(BOB, [bob_event])
    )

    assert isinstance(alice_read[alice_event], CalendarEvent)
    assert isinstance(bob_read[bob_event], GraphAccessDenied)


async def test_one_mailboxs_throttled_read_does_not_hold_another_mailboxs_answer(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    alice_event = await _created(gateway, ALICE, "bk-gather-throttled")
    bob_event = await _created(gateway, BOB, "bk-gather-quick")
    await control.add_fault(
        mailbox=ALICE, pathContains=alice_event[-12:], status=429, retryAfter=1, count=1
    )
    answered: list[str] = []

    async def read(mailbox: str, event_id: str) -> CalendarEvent | None:
        found = (await gateway.read_events(mailbox, [event_id]))[event_id]
        answered.append(mailbox)
        assert not isinstance(found, Exception), found
        return found

    alice_found, bob_found = await asyncio.gather(read(ALICE, alice_event), read(BOB, bob_event))

    # Both went in one batch; Bob's answer came back before Alice's retry after 1 s.
    assert answered == [BOB, ALICE]
    assert alice_found is not None
    assert alice_found.event_id == alice_event
    assert bob_found is not None
    assert bob_found.event_id == bob_event
    assert await control.request_count("GET", EVENT_BY_ID, ALICE) == 2


async def test_reads_that_come_while_every_lane_is_busy_go_together(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    slow = [await _created(gateway, BOB, f"bk-gather-slow-{n}") for n in range(GATHER_LANES)]
    later = [
        (mailbox, await _created(gateway, mailbox, f"bk-gather-later-{n}"))
        for n, mailbox in enumerate((ALICE, ROOM, ALICE, ROOM, ALICE, ROOM))
    ]
    for event_id in slow:
        await control.add_fault(mailbox=BOB, pathContains=event_id[-12:], latencyMs=400)
    batches = await control.request_count("POST", "/$batch")

    # Each slow read starts on its own (a lane each: a plain GET), then the later reads
    # come while all lanes are taken.
    first = []
    for event_id in slow:
        first.append(asyncio.ensure_future(gateway.read_events(BOB, [event_id])))
        await asyncio.sleep(0.05)
    reads = await asyncio.gather(
        *(gateway.read_events(mailbox, [event_id]) for mailbox, event_id in later)
    )
    slow_reads = await asyncio.gather(*first)

    for (_, event_id), read in zip(later, reads, strict=True):
        assert isinstance(read[event_id], CalendarEvent)
    for event_id, read in zip(slow, slow_reads, strict=True):
        assert isinstance(read[event_id], CalendarEvent)
    # The slow reads went alone (plain GETs); the six later ones in one `$batch`.
    assert await control.request_count("POST", "/$batch") == batches + 1
    assert await control.request_count("GET", EVENT_BY_ID, BOB) == GATHER_LANES


async def test_a_read_cancelled_while_it_waits_leaves_the_others_answered(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    slow = [await _created(gateway, BOB, f"bk-gather-busy-{n}") for n in range(GATHER_LANES)]
    waiting = await _created(gateway, ALICE, "bk-gather-cancelled")
    kept = await _created(gateway, ROOM, "bk-gather-kept")
    for event_id in slow:
        await control.add_fault(mailbox=BOB, pathContains=event_id[-12:], latencyMs=300)
    first = []
    for event_id in slow:
        first.append(asyncio.ensure_future(gateway.read_events(BOB, [event_id])))
        await asyncio.sleep(0.05)

    cancelled = asyncio.ensure_future(gateway.read_events(ALICE, [waiting]))
    other = asyncio.ensure_future(gateway.read_events(ROOM, [kept]))
    await asyncio.sleep(0.01)
    cancelled.cancel()

    assert isinstance((await other)[kept], CalendarEvent)
    assert all(
        isinstance(read[e], CalendarEvent)
        for e, read in zip(slow, await asyncio.gather(*first), strict=True)
    )
    assert cancelled.cancelled()
    assert await control.request_count("GET", EVENT_BY_ID, ALICE) == 0
