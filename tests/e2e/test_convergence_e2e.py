"""Convergence over the local stack: what an unlucky tenant meets (Graph failing for
longer than the queue retries, a lost notification, a slow mailbox, two resources on one
mailbox) is healed by one ordinary reconcile round, or refused up front."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from local.azurite import Azurite
from shared.adapters.graph.mapping import EXPAND_BOOKING_ID
from shared.composition import get_services
from tests.e2e.test_bookings_e2e import START, booking, our_events, slot, synced
from tests.e2e.test_outlook_e2e import booked, subscription_of, when
from tests.e2e.test_reconcile_e2e import quiet
from tests.fixtures.stack import Mailboxes, Stack, eventually
from tests.reliability.workload import poison_messages

pytestmark = pytest.mark.integration


async def incremental_round(resource_id: str) -> None:
    report = await get_services().reconcile.reconcile(resource_id)
    assert not report.full, "the round under test must be an ordinary incremental one"


async def our_events_in_view(stack: Stack, mailbox: str) -> list[dict[str, Any]]:
    """The mailbox's events of ours over the next two weeks, read through calendarView:
    a fault on `/events` leaves this read alone."""
    first, last = START.date(), START.date() + timedelta(days=14)
    window = f"startDateTime={first}T00:00:00Z&endDateTime={last}T00:00:00Z"
    status, page = await stack.graph(
        "GET", f"/users/{mailbox}/calendarView?{window}&$expand={EXPAND_BOOKING_ID}"
    )
    assert status == 200, page
    return [e for e in page["value"] if e.get("singleValueExtendedProperties")]


async def view(stack: Stack, booking_id: str) -> dict[str, Any]:
    status, body = await stack.call("GET", f"/bookings/{booking_id}")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def given_up(stack: Stack, azurite: Azurite, status: int, booking_ids: list[str]) -> bool:
    """Whether every push of these bookings was given up: poisoned after the queue's
    retries (a 503), or failed for good at once (a 403)."""
    if status == 403:
        views = [await view(stack, b) for b in booking_ids]
        return all(v["sync"][0]["state"] == "failed" for v in views)
    poisoned = " ".join(await poison_messages(azurite.connection_string))
    return all(b in poisoned for b in booking_ids)


@pytest.mark.parametrize("status", [503, 403])
async def test_pushes_failed_for_longer_than_the_retries_heal_in_an_incremental_round(
    stack: Stack, mb: Mailboxes, azurite: Azurite, status: int
) -> None:
    room = await stack.connect(mb.room)
    kept = (await booked(stack, [room]))["bookingId"]
    status_moved, moved = await stack.call("POST", "/bookings", booking([room], **slot(hours=2)))
    assert status_moved == 201
    await eventually(partial(synced, stack, moved["bookingId"]))
    await quiet(stack)
    assert (await get_services().reconcile.reconcile(room)).full  # the baseline round
    # Graph refuses every write to the room's events, for longer than the retries last
    # (a Retry-After beyond what the gateway waits, so each attempt gives up at once).
    await stack.control(
        "POST",
        "/faults",
        {"mailbox": mb.room, "pathContains": "/events", "status": status, "retryAfter": 31},
    )
    try:
        later = slot(hours=6)
        code, _ = await stack.call("POST", f"/bookings/{moved['bookingId']}/reschedule", later)
        assert code == 200
        changed = [moved["bookingId"]]
        if status == 403:
            # Access denied fails the resource at once: new bookings are refused (fail
            # closed) until a sync succeeds again; cancelling still works.
            await eventually(partial(given_up, stack, azurite, status, changed), within=40)
        code, created = await stack.call("POST", "/bookings", booking([room], **slot(hours=4)))
        if status == 403:
            assert code == 503, created
        else:
            assert code == 201, created
            changed.append(created["bookingId"])
        code, _ = await stack.call("POST", f"/bookings/{kept}/cancel")
        assert code == 200
        changed.append(kept)
        await eventually(partial(given_up, stack, azurite, status, changed), within=40)
    finally:
        await stack.control("DELETE", "/faults")
    if status == 403:  # Graph is back: a round finds the calendar readable again
        await stack.control("POST", "/notifications/pause")  # no help from notifications

    try:
        await incremental_round(room)
    finally:
        await stack.control("POST", "/notifications/resume")

    events = {
        e["singleValueExtendedProperties"][0]["value"]: e for e in await our_events(stack, mb.room)
    }
    assert set(events) == set(changed) - {kept}
    assert events[moved["bookingId"]]["start"]["dateTime"].startswith(later["start"][:19])
    for booking_id in changed:
        assert [s["state"] for s in (await view(stack, booking_id))["sync"]] == ["synced"]
    _, resource = await stack.call("GET", f"/resources/{room}")
    assert resource["status"]["state"] == "connected"


@pytest.mark.parametrize("then", ["cancel", "reschedule"])
async def test_a_create_whose_answer_was_lost_leaves_the_calendar_as_the_booking_is(
    stack: Stack, mb: Mailboxes, azurite: Azurite, then: str
) -> None:
    """Graph made the event but its answer never came back (a gateway timeout after the
    write), and every retry met an outage; meanwhile the booking was cancelled or
    rescheduled. Once Graph is back, one incremental round leaves the calendar as the
    booking is: no event left behind, none twice, and no Outlook move made up from the
    first times."""
    room = await stack.connect(mb.room, onOutlookMove="reschedule_booking")
    await quiet(stack)
    assert (await get_services().reconcile.reconcile(room)).full  # the baseline round
    for fault in (
        {"status": 504, "afterApplying": True, "count": 1},  # made; the answer lost
        {"status": 503, "retryAfter": 31},  # then refused for longer than the retries
    ):
        await stack.control(
            "POST", "/faults", {"mailbox": mb.room, "pathContains": "/events", **fault}
        )
    later = slot(hours=5)
    try:
        code, made = await stack.call("POST", "/bookings", booking([room], **slot(hours=2)))
        assert code == 201, made
        booking_id = made["bookingId"]

        async def made_by_graph() -> bool:
            return len(await our_events_in_view(stack, mb.room)) == 1

        await eventually(made_by_graph, within=20)
        if then == "cancel":
            code, _ = await stack.call("POST", f"/bookings/{booking_id}/cancel")
        else:
            code, _ = await stack.call("POST", f"/bookings/{booking_id}/reschedule", later)
        assert code == 200
        await eventually(partial(given_up, stack, azurite, 503, [booking_id]), within=40)
    finally:
        await stack.control("DELETE", "/faults")
    await quiet(stack)

    await incremental_round(room)
    await quiet(stack)

    events = await our_events(stack, mb.room)
    after = await view(stack, booking_id)
    if then == "cancel":
        assert events == []
        assert after["status"] == "cancelled"
    else:
        [event] = events
        assert event["start"]["dateTime"].startswith(later["start"][:19])
        assert (after["start"][:19], after["status"]) == (later["start"][:19], "rescheduled")
        assert after["version"] == made["version"] + 1  # nothing moved it back and forth
    assert [s["state"] for s in after["sync"]] == ["synced"]


async def test_an_outlook_move_made_while_our_updates_answer_was_lost_is_kept(
    stack: Stack, mb: Mailboxes
) -> None:
    """Our update of the event lands but its answer is lost (a gateway timeout after the
    write), and Graph asks for 2 s before a retry; within them the Outlook user moves the
    event, and its notification comes later than that (Graph gives no bound). The retry
    used to write the booking's times over the move, and the notification then read an
    event of ours as we had left it: the move was lost with no trace. Now the event is
    read first, the move is seen, and the resource's policy takes it: the booking follows
    the user's times."""
    room = await stack.connect(mb.room, onOutlookMove="reschedule_booking")
    made = await booked(stack, [room])
    booking_id = made["bookingId"]
    await quiet(stack)
    await stack.control("POST", "/notifications/delay", {"ms": 4000})
    await stack.control(
        "POST",
        "/faults",
        {
            "mailbox": mb.room,
            "pathContains": "/events/",
            "status": 504,
            "afterApplying": True,
            "retryAfter": 2,
            "count": 1,
        },
    )
    later, moved = slot(hours=5), when(hours=8)
    try:
        code, _ = await stack.call("POST", f"/bookings/{booking_id}/reschedule", later)
        assert code == 200

        async def our_update_landed() -> dict[str, Any] | None:
            [event] = await our_events_in_view(stack, mb.room)  # not through the fault
            landed = event["start"]["dateTime"].startswith(later["start"][:19])
            return event if landed else None

        event = await eventually(our_update_landed, within=10, interval=0.05)
        code, _ = await stack.graph("PATCH", f"/users/{mb.room}/events/{event['id']}", moved)
        assert code == 200
    finally:
        await stack.control("DELETE", "/faults")
        await stack.control("POST", "/notifications/delay", {"ms": 0})
    moved_start = moved["start"]["dateTime"]

    async def rescheduled_by_the_move() -> dict[str, Any] | None:
        after = await view(stack, booking_id)
        return after if after["start"][:19] == moved_start[:19] else None

    await eventually(rescheduled_by_the_move, within=20)
    await quiet(stack)
    [event] = await our_events(stack, mb.room)
    assert event["start"]["dateTime"][:19] == moved_start[:19]
    after = await view(stack, booking_id)
    assert after["start"][:19] == moved_start[:19]
    assert [s["state"] for s in after["sync"]] == ["synced"]
    assert after["version"] == made["version"] + 2  # our reschedule, then the user's move


async def test_an_outlook_move_is_restored_though_the_restores_first_write_is_refused(
    stack: Stack, mb: Mailboxes
) -> None:
    """Under `restore_event` the move's handling writes the event back; Graph refuses
    that write once (a 503). Before it is sent again the event is read, and it still
    shows the user's move: that changeKey was handled, so the write goes again at once
    rather than waiting for a round."""
    room = await stack.connect(mb.room, onOutlookMove="restore_event")
    made = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    await quiet(stack)
    await stack.control("POST", "/notifications/delay", {"ms": 1500})
    try:
        code, _ = await stack.graph(
            "PATCH", f"/users/{mb.room}/events/{event['id']}", when(hours=8)
        )
        assert code == 200
        await stack.control(
            "POST",
            "/faults",
            {
                "mailbox": mb.room,
                "pathContains": "/events/",
                "method": "PATCH",
                "status": 503,
                "count": 1,
            },
        )

        async def restored() -> bool:
            [now] = await our_events(stack, mb.room)
            return bool(now["start"]["dateTime"][:19] == made["start"][:19])

        await eventually(restored, within=10)
    finally:
        await stack.control("DELETE", "/faults")
        await stack.control("POST", "/notifications/delay", {"ms": 0})
    after = await view(stack, made["bookingId"])
    assert (after["start"][:19], after["version"]) == (made["start"][:19], made["version"])


async def creates_sent(stack: Stack, mailbox: str) -> int:
    """Event creates the emulator has received for the mailbox (answered or not)."""
    rows = (await stack.control("GET", "/stats"))["requests"]
    return sum(
        r["count"]
        for r in rows
        if (r["method"], r["route"]) == ("POST", "/users/{id}/events")
        and r["mailbox"] == mailbox.lower()
    )


@pytest.mark.parametrize("answer", [201, 403], ids=["made", "refused"])
async def test_a_booking_cancelled_while_its_create_is_under_way_ends_with_no_event(
    stack: Stack, mb: Mailboxes, answer: int
) -> None:
    """The cancel's push comes while the create is still on its way to Graph (3 s slow):
    it has no event to remove yet. It used to finish there, so a create that then landed
    stayed in the calendar (and the booking `pending`), and one refused left the booking
    `failed`, until a reconcile round. Now it is tried again once the create answered."""
    room = await stack.connect(mb.room)
    await quiet(stack)
    slow: dict[str, Any] = {"latencyMs": 3000} | ({"status": 403} if answer == 403 else {})
    await stack.control(
        "POST",
        "/faults",
        {"mailbox": mb.room, "pathContains": "/events", "method": "POST", "count": 1, **slow},
    )
    try:
        code, made = await stack.call("POST", "/bookings", booking([room]))
        assert code == 201, made

        async def create_sent() -> bool:
            return await creates_sent(stack, mb.room) >= 1

        await eventually(create_sent, within=10, interval=0.05)
        code, _ = await stack.call("POST", f"/bookings/{made['bookingId']}/cancel")
        assert code == 200
    finally:
        await stack.control("DELETE", "/faults")

    async def settled() -> list[str] | None:
        states = [s["state"] for s in (await view(stack, made["bookingId"]))["sync"]]
        done = states in (["removed"], ["synced"]) and not await our_events(stack, mb.room)
        return states if done else None

    await eventually(settled, within=20, interval=0.2)
    assert (await view(stack, made["bookingId"]))["sync"][0].get("error") is None


async def test_an_event_deleted_with_its_notification_lost_cancels_by_policy(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    await quiet(stack)
    assert (await get_services().reconcile.reconcile(room)).full  # the baseline round
    made = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    await quiet(stack)

    await stack.control("POST", "/notifications/pause")
    try:
        code, _ = await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")
        assert code == 204
    finally:
        await stack.control("POST", "/notifications/resume")
    await incremental_round(room)

    after = await view(stack, made["bookingId"])
    assert after["status"] == "cancelled"
    assert await stack.booking_events(made["bookingId"]) == [
        "booking.created",
        "booking.cancelled",
    ]


async def test_our_own_panel_write_is_never_read_back_as_an_outlook_move(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookMove="reschedule_booking")
    slow = await stack.connect(mb.bob)
    made = await booked(stack, [room, slow])
    booking_id = made["bookingId"]
    await stack.control("POST", "/faults", {"mailbox": mb.bob, "latencyMs": 4000})
    try:
        code, _ = await stack.call("POST", f"/bookings/{booking_id}/reschedule", slot(hours=2))
        assert code == 200
        await asyncio.sleep(1.3)
        code, _ = await stack.call("POST", f"/bookings/{booking_id}/reschedule", slot(hours=4))
        assert code == 200
        await eventually(partial(synced, stack, booking_id), within=30)
    finally:
        await stack.control("DELETE", "/faults")
    await quiet(stack, 1.0)

    after = await view(stack, booking_id)
    assert after["start"][:19] == slot(hours=4)["start"][:19]
    assert await stack.booking_events(booking_id) == [
        "booking.created",
        "booking.rescheduled",
        "booking.rescheduled",
    ]
    sources = {e["source"] for e in stack.emitted if e["bookingId"] == booking_id}
    assert sources == {"api"}
    _, log = await stack.call("GET", f"/resources/{room}/sync-log")
    assert not [e for e in log["value"] if e["action"].startswith("outlook_move")]


async def test_a_second_resource_on_a_connected_mailbox_is_refused(
    stack: Stack, mb: Mailboxes
) -> None:
    first = await stack.connect(mb.room)
    subscription = await subscription_of(stack, mb.room)

    status, body = await stack.call(
        "PUT", "/resources/r-second", {"mailbox": mb.room.upper(), "displayName": "Again"}
    )

    assert status == 409
    assert body["error"]["code"] == "mailbox_in_use"
    assert first in body["error"]["message"]
    status, _ = await stack.call("GET", "/resources/r-second")
    assert status == 404
    assert await subscription_of(stack, mb.room) == subscription
    # Disconnected, the mailbox may be connected to another resource.
    status, _ = await stack.call("DELETE", f"/resources/{first}")
    assert status == 200
    status, body = await stack.call(
        "PUT", "/resources/r-second", {"mailbox": mb.room.upper(), "displayName": "Again"}
    )
    assert status == 202, body  # connecting: the queue worker subscribes
