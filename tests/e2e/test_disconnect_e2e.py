"""Disconnecting a resource over the local stack. Removing our events from a calendar
can take longer than the 230 s Azure gives an HTTP answer (functions-scale#timeout), so
`DELETE ?removeEvents=true` answers 202 `disconnecting` and a queue worker removes them;
the resource's status says when it is `disconnected`."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest

from tests.e2e.test_bookings_e2e import booking, our_events, slot, synced
from tests.e2e.test_outlook_e2e import when
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration


async def test_disconnect_removing_events_answers_202_and_the_worker_removes_them(
    stack: Stack, mb: Mailboxes
) -> None:
    # Under cancel_booking an Outlook delete cancels the booking: ours must not.
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    answers = await asyncio.gather(
        *(stack.call("POST", "/bookings", booking([room], **slot(hours=12 * n))) for n in range(3))
    )
    assert {status for status, _ in answers} == {201}, answers
    booking_ids = [created["bookingId"] for _, created in answers]
    for booking_id in booking_ids:
        await eventually(partial(synced, stack, booking_id), within=15)
    status, foreign = await stack.graph(
        "POST", f"/users/{mb.room}/events", {"subject": "Team lunch", **when(100)}
    )
    assert status == 201

    status, view = await stack.call("DELETE", f"/resources/{room}?removeEvents=true")
    assert status == 202, view
    assert view["status"]["state"] == "disconnecting"

    async def disconnected() -> dict[str, Any] | None:
        _, current = await stack.call("GET", f"/resources/{room}")
        return current if current["status"]["state"] == "disconnected" else None

    final = await eventually(disconnected, within=20)
    assert final["mappedEvents"] == 0
    assert await our_events(stack, mb.room) == []
    _, page = await stack.graph("GET", f"/users/{mb.room}/calendar/events")
    assert [e["id"] for e in page["value"]] == [foreign["id"]]
    for booking_id in booking_ids:
        _, current = await stack.call("GET", f"/bookings/{booking_id}")
        assert current["status"] == "confirmed", current

    # Again: nothing left to do, so the answer is the final state at once.
    status, again = await stack.call("DELETE", f"/resources/{room}?removeEvents=true")
    assert status == 200, again
    assert again["status"]["state"] == "disconnected"
