"""An update whose answer may have been lost (no answer, a 503 or a 504) is not sent again
blindly: the event is read first. Sent again on top of an Outlook edit made meanwhile,
it would undo the edit with no trace; Graph documents no precondition (`If-Match`) for
an event's update, so the read is what tells."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest

from shared.adapters.graph import GraphCalendarGateway
from shared.ports import EventWrite
from tests.gateway.conftest import ALICE, EmulatorControl
from tests.gateway.test_events import START, draft

EVENT = "/users/{id}/events/{eventId}"
LATER = START + timedelta(days=1)
MOVED = START + timedelta(days=2, hours=3)


async def _created(gateway: GraphCalendarGateway, booking_id: str) -> tuple[str, str]:
    made = await gateway.create_event(ALICE, draft(booking_id), transaction_id=f"tx-{booking_id}")
    assert made.change_key
    return made.event_id, made.change_key


def _update(event_id: str, change_key: str, booking_id: str) -> EventWrite:
    return EventWrite(
        mailbox=ALICE,
        op="update",
        event_id=event_id,
        draft=draft(booking_id, LATER),
        change_key=change_key,
    )


def _start_of(control: EmulatorControl, booking_id: str) -> datetime:
    """The event's start as the emulator holds it (read without a Graph request)."""
    mailbox = control.emulator.state.find_mailbox(ALICE)
    assert mailbox is not None
    [record] = [r for r in mailbox.events.values() if r.transaction_id == f"tx-{booking_id}"]
    return record.start


async def test_an_outlook_move_made_while_the_answer_was_lost_is_not_written_over(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    event_id, key = await _created(gateway, "bk-lost-moved")
    # The update lands, its answer is lost, and Graph asks for a second before a retry.
    await control.add_fault(
        mailbox=ALICE,
        pathContains="/events/",
        status=504,
        afterApplying=True,
        retryAfter=1,
        count=1,
    )
    write = asyncio.ensure_future(gateway.write_batch([_update(event_id, key, "bk-lost-moved")]))
    for _ in range(250):  # the emulator's state signals nothing: look every 20 ms
        if _start_of(control, "bk-lost-moved") == LATER:
            break
        await asyncio.sleep(0.02)
    assert _start_of(control, "bk-lost-moved") == LATER
    # Within that second, the Outlook user moves the event.
    await control.graph(
        "PATCH",
        f"/users/{ALICE}/events/{quote(event_id, safe='')}",
        {
            "start": {"dateTime": MOVED.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (MOVED + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
        },
    )

    [result] = await write

    assert result.error is None
    assert result.event is not None
    assert result.event.start == MOVED  # what the calendar shows, for the caller to judge
    assert _start_of(control, "bk-lost-moved") == MOVED
    assert await control.request_count("PATCH", EVENT, ALICE) == 2  # ours and the user's


async def test_an_update_that_landed_though_its_answer_was_lost_is_not_sent_twice(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    event_id, key = await _created(gateway, "bk-lost-landed")
    await control.add_fault(
        mailbox=ALICE, pathContains="/events/", status=504, afterApplying=True, count=1
    )

    [result] = await gateway.write_batch([_update(event_id, key, "bk-lost-landed")])

    assert result.error is None
    assert result.event is not None
    assert (result.event.start, result.event.change_key != key) == (LATER, True)
    assert await control.request_count("PATCH", EVENT, ALICE) == 1
    assert await control.request_count("GET", EVENT, ALICE) == 1


async def test_an_update_a_503_refused_is_read_then_sent_again(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    event_id, key = await _created(gateway, "bk-refused")
    await control.add_fault(mailbox=ALICE, pathContains="/events/", status=503, count=1)

    [result] = await gateway.write_batch([_update(event_id, key, "bk-refused")])

    assert result.event is not None
    assert result.event.start == LATER
    assert await control.request_count("GET", EVENT, ALICE) == 1  # unchanged: not applied
    assert await control.request_count("PATCH", EVENT, ALICE) == 2


async def test_a_throttled_update_is_sent_again_without_a_read(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    """A 429 says the request was not carried out: nothing to read."""
    event_id, key = await _created(gateway, "bk-throttled")
    await control.add_fault(
        mailbox=ALICE, pathContains="/events/", status=429, retryAfter=1, count=1
    )

    [result] = await gateway.write_batch([_update(event_id, key, "bk-throttled")])

    assert result.event is not None
    assert result.event.start == LATER
    assert await control.request_count("GET", EVENT, ALICE) == 0
    assert await control.request_count("PATCH", EVENT, ALICE) == 2


async def test_a_subject_only_update_a_503_refused_is_still_sent(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    """A cancel that prefixes the subject leaves the times as they were: times alone
    would read it as landed."""
    event_id, key = await _created(gateway, "bk-prefix")
    await control.add_fault(mailbox=ALICE, pathContains="/events/", status=503, count=1)
    renamed = draft("bk-prefix", subject="Cancelled: Booking bk-prefix")
    write = EventWrite(mailbox=ALICE, op="update", event_id=event_id, draft=renamed, change_key=key)

    [result] = await gateway.write_batch([write])

    assert result.event is not None
    assert (result.event.subject, result.event.start) == ("Cancelled: Booking bk-prefix", START)
    assert await control.request_count("PATCH", EVENT, ALICE) == 2


@pytest.mark.parametrize(
    ("status", "unanswered"), [(504, True), (503, True), (429, False), (None, False)]
)
async def test_a_create_answered_after_an_attempt_without_a_sure_answer_says_so(
    gateway: GraphCalendarGateway, control: EmulatorControl, status: int | None, unanswered: bool
) -> None:
    """Graph dedupes a create by its transactionId only once it has made the event: an
    attempt it was still at when the gateway sent it again may make a second event after
    the answer. The result says such an attempt was sent (a 5xx or no answer, unlike a
    429, which says it was not carried out), for the caller to look for that event."""
    booking_id = f"bk-create-after-{status}"
    if status is not None:
        await control.add_fault(
            mailbox=ALICE, method="POST", pathContains="/events", status=status, count=1
        )
    create = EventWrite(
        mailbox=ALICE, op="create", draft=draft(booking_id), transaction_id=f"tx-{booking_id}"
    )

    [result] = await gateway.write_batch([create])

    assert result.error is None
    assert result.event is not None
    assert result.earlier_attempt_unanswered is unanswered
    expected_posts = 1 if status is None else 2
    assert await control.request_count("POST", "/users/{id}/events", ALICE) == expected_posts
