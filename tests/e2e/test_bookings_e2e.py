"""Bookings over the local stack: the real function app in the local host, Azurite, and
the Graph emulator as Microsoft 365."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.graph.mapping import EXPAND_BOOKING_ID
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration

START = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)


def slot(hours: float = 0, minutes: int = 60) -> dict[str, str]:
    start = START + timedelta(hours=hours)
    return {"start": start.isoformat(), "end": (start + timedelta(minutes=minutes)).isoformat()}


def booking(resource_ids: list[str], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceIds": resource_ids,
        **slot(),
        "title": "Interview",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
    }
    body.update(fields)
    return body


async def our_events(stack: Stack, mailbox: str) -> list[dict[str, Any]]:
    status, page = await stack.graph(
        "GET", f"/users/{mailbox}/calendar/events?$expand={EXPAND_BOOKING_ID}"
    )
    assert status == 200
    events: list[dict[str, Any]] = [
        e for e in page["value"] if e.get("singleValueExtendedProperties")
    ]
    return events


async def synced(stack: Stack, booking_id: str) -> dict[str, Any] | None:
    _, view = await stack.call("GET", f"/bookings/{booking_id}")
    return view if all(s["state"] == "synced" for s in view["sync"]) else None


async def test_panel_booking_puts_one_event_in_each_calendar(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room, subjectTemplate="Training: {title}")
    alice = await stack.connect(mb.alice)
    bob = await stack.connect(mb.bob)

    status, created = await stack.call("POST", "/bookings", booking([room, alice, bob]))
    assert status == 201, created

    view = await eventually(lambda: synced(stack, created["bookingId"]))
    assert [s["role"] for s in view["sync"]] == ["primary", "additional", "additional"]
    for mailbox, subject in (
        (mb.room, "Training: Interview"),
        (mb.alice, "Interview"),
        (mb.bob, "Interview"),
    ):
        [event] = await our_events(stack, mailbox)
        assert event["subject"] == subject
        assert event["singleValueExtendedProperties"][0]["value"] == created["bookingId"]


@pytest.mark.usefixtures("notification_delay")
async def test_fifty_concurrent_overlapping_creates_one_wins(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room)
    bodies = [booking([room], **slot(minutes=30 + i % 5 * 10)) for i in range(50)]

    results = await asyncio.gather(*(stack.call("POST", "/bookings", body) for body in bodies))

    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1
    assert statuses.count(409) == 49
    [winner] = [payload for status, payload in results if status == 201]
    await eventually(lambda: synced(stack, winner["bookingId"]))
    assert len(await our_events(stack, mb.room)) == 1


async def test_idempotency_key_replays_and_refuses_other_bodies(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    headers = {"Idempotency-Key": "order-42"}

    first = await stack.call("POST", "/bookings", booking([room]), headers=headers)
    again = await stack.call("POST", "/bookings", booking([room]), headers=headers)
    other = await stack.call("POST", "/bookings", booking([room], title="Else"), headers=headers)

    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert other[0] == 422
    await eventually(lambda: synced(stack, first[1]["bookingId"]))
    assert len(await our_events(stack, mb.room)) == 1


async def test_cancel_removes_every_event_once(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room)
    alice = await stack.connect(mb.alice, cancelledEventMode="prefix")
    _, created = await stack.call("POST", "/bookings", booking([room, alice]))
    await eventually(lambda: synced(stack, created["bookingId"]))

    status, cancelled = await stack.call("POST", f"/bookings/{created['bookingId']}/cancel")
    again, _ = await stack.call("POST", f"/bookings/{created['bookingId']}/cancel")

    assert (status, cancelled["status"], again) == (200, "cancelled", 200)
    await eventually(lambda: _no_events(stack, mb.room))
    [kept] = await eventually(lambda: _subjects(stack, mb.alice, "Cancelled: Interview"))
    assert kept == "Cancelled: Interview"


async def _no_events(stack: Stack, mailbox: str) -> bool:
    return not await our_events(stack, mailbox)


async def _subjects(stack: Stack, mailbox: str, wanted: str) -> list[str] | None:
    subjects = [e["subject"] for e in await our_events(stack, mailbox)]
    return subjects if subjects == [wanted] else None


@pytest.mark.usefixtures("notification_delay")
async def test_reschedule_moves_every_event_and_refuses_taken_slots(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    alice = await stack.connect(mb.alice)
    _, first = await stack.call("POST", "/bookings", booking([room, alice]))
    _, second = await stack.call("POST", "/bookings", booking([room], **slot(hours=4)))
    await eventually(lambda: synced(stack, first["bookingId"]))

    taken, _ = await stack.call("POST", f"/bookings/{first['bookingId']}/reschedule", slot(hours=4))
    status, moved = await stack.call(
        "POST", f"/bookings/{first['bookingId']}/reschedule", slot(hours=2)
    )

    assert taken == 409
    assert (status, moved["status"]) == (200, "rescheduled")
    await eventually(lambda: synced(stack, first["bookingId"]))
    for mailbox in (mb.room, mb.alice):
        starts = sorted(e["start"]["dateTime"][:16] for e in await our_events(stack, mailbox))
        assert (START + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M") in starts
    assert second["status"] == "confirmed"


async def test_transient_503s_during_a_push_still_leave_one_event(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    await stack.control(
        "POST",
        "/faults",
        {"mailbox": mb.room, "status": 503, "count": 2, "pathContains": "/events"},
    )

    _, created = await stack.call("POST", "/bookings", booking([room]))

    await eventually(lambda: synced(stack, created["bookingId"]), within=10)
    assert len(await our_events(stack, mb.room)) == 1


async def test_access_denied_fails_the_resource_closed(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room)
    # Writes denied, reads allowed (a grant of Calendars.Read where ReadWrite is needed):
    # the live look at the slot passes, the push meets the 403.
    await stack.control(
        "POST",
        "/faults",
        {"mailbox": mb.room, "status": 403, "code": "ErrorAccessDenied", "pathContains": "/events"},
    )
    status, created = await stack.call("POST", "/bookings", booking([room]))
    assert status == 201, created

    async def failed() -> dict[str, Any] | None:
        _, view = await stack.call("GET", f"/bookings/{created['bookingId']}")
        return view if view["sync"][0]["state"] == "failed" else None

    view = await eventually(failed, within=10)
    assert "403" in view["sync"][0]["error"] or "denied" in view["sync"][0]["error"].lower()
    _, resource = await stack.call("GET", f"/resources/{room}")
    assert resource["status"]["state"] == "failing"
    status, body = await stack.call("POST", "/bookings", booking([room], **slot(hours=5)))
    assert (status, body["error"]["code"]) == (503, "calendar_unavailable")
    await stack.control("DELETE", "/faults")


@pytest.mark.usefixtures("notification_delay")
async def test_availability_merges_outlook_busy_time_and_bookings(
    stack: Stack, mb: Mailboxes
) -> None:
    await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {
            "subject": "Board meeting",
            "showAs": "busy",
            "start": {
                "dateTime": (START + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            "end": {
                "dateTime": (START + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
        },
    )
    room = await stack.connect(mb.room)
    await stack.call("POST", "/bookings", booking([room]))
    window = {
        "start": START.isoformat(),
        "end": (START + timedelta(hours=4)).isoformat(),
        "durationMinutes": "60",
    }

    status, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)

    assert status == 200
    assert [(b["source"], b["start"][11:16]) for b in availability["busy"]] == [
        ("booking", START.strftime("%H:%M")),
        ("calendar", (START + timedelta(hours=2)).strftime("%H:%M")),
    ]
    assert "subject" not in str(availability)
    assert [s["start"][11:16] for s in availability["freeSlots"]] == [
        (START + timedelta(hours=1)).strftime("%H:%M"),
        (START + timedelta(hours=3)).strftime("%H:%M"),
    ]
    # Outlook busy time refuses a booking, not only other bookings.
    status, body = await stack.call(
        "POST", "/bookings", booking([room], **slot(hours=2.5, minutes=15))
    )
    assert (status, body["error"]["code"]) == (409, "slot_unavailable")


async def test_booking_events_are_posted_signed_once_each(stack: Stack, mb: Mailboxes) -> None:
    from standardwebhooks.webhooks import Webhook

    from tests.fixtures.stack import WEBHOOK_SECRET

    room = await stack.connect(mb.room)
    _, created = await stack.call("POST", "/bookings", booking([room]))
    await stack.call("POST", f"/bookings/{created['bookingId']}/cancel")
    await stack.call("POST", f"/bookings/{created['bookingId']}/cancel")

    def mine() -> list[tuple[dict[str, str], str]]:
        return [(h, b) for h, b in stack.webhooks if created["bookingId"] in b]

    async def both() -> bool:
        return len(mine()) >= 2

    await eventually(both)
    await asyncio.sleep(0.5)  # nothing more may arrive
    verifier = Webhook(WEBHOOK_SECRET)
    payloads = [verifier.verify(body, headers) for headers, body in mine()]
    assert sorted(p["type"] for p in payloads) == ["booking.cancelled", "booking.created"]
    assert len({headers["webhook-id"] for headers, _ in mine()}) == 2
