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


async def test_a_reconnect_after_the_removals_delete_failed_leaves_one_event(
    stack: Stack, mb: Mailboxes
) -> None:
    """The removal let go of the booking's event and its DELETE failed (a 503 past the
    gateway's retries); a PUT then reconnects the resource before the queue tries the
    removal again, which therefore stops. The reconnect removes the event left behind
    and writes the booking's new one: one event, not two until a full round."""
    room = await stack.connect(mb.room)
    status, made = await stack.call("POST", "/bookings", booking([room], **slot(hours=3)))
    assert status == 201, made
    await eventually(partial(synced, stack, made["bookingId"]), within=15)
    [old] = await our_events(stack, mb.room)
    fault = await stack.control(
        "POST",
        "/faults",
        {
            "mailbox": mb.room,
            "pathContains": "/events",
            "method": "DELETE",
            "status": 503,
            "retryAfter": 31,
            "count": 1,
        },
    )

    status, view = await stack.call("DELETE", f"/resources/{room}?removeEvents=true")
    assert status == 202, view

    async def delete_refused() -> bool:
        faults = await stack.control("GET", "/faults")
        return all(f["id"] != fault["id"] for f in faults["value"])

    await eventually(delete_refused, within=15)  # the queue's next try is 5 s away
    status, body = await stack.call(
        "PUT", f"/resources/{room}", {"mailbox": mb.room, "displayName": room}
    )
    assert status == 202, body

    async def one_event_synced() -> dict[str, Any] | None:
        events = await our_events(stack, mb.room)
        current = await synced(stack, made["bookingId"])
        return current if current and len(events) == 1 else None

    current = await eventually(one_event_synced, within=20)
    await asyncio.sleep(6)  # past the removal's next try, which finds the resource connected
    [event] = await our_events(stack, mb.room)
    assert event["id"] != old["id"]  # never the removed one back
    assert current["sync"][0]["eventId"] == event["id"]
    _, resource = await stack.call("GET", f"/resources/{room}")
    assert resource["status"]["state"] == "connected", resource
