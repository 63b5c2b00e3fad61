"""Outlook → bookings over the local stack. The Outlook user acts through the emulator's
Graph API; Graph delivers notifications to the app's webhook as it would in Azure."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from azure.data.tables.aio import TableServiceClient

from local.azurite import Azurite
from tests.e2e.test_bookings_e2e import START, booking, our_events, slot, synced
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration


def when(hours: float, minutes: int = 60) -> dict[str, dict[str, str]]:
    start = START + timedelta(hours=hours)
    fmt = "%Y-%m-%dT%H:%M:%S"
    return {
        "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=minutes)).strftime(fmt), "timeZone": "UTC"},
    }


async def booked(stack: Stack, resource_ids: list[str]) -> dict[str, Any]:
    status, created = await stack.call("POST", "/bookings", booking(resource_ids))
    assert status == 201, created
    await eventually(lambda: synced(stack, created["bookingId"]))
    result: dict[str, Any] = created
    return result


async def event_of(stack: Stack, mailbox: str) -> dict[str, Any]:
    [event] = await our_events(stack, mailbox)
    result: dict[str, Any] = event
    return result


async def subscription_of(stack: Stack, mailbox: str) -> dict[str, Any]:
    listed = (await stack.control("GET", "/subscriptions"))["value"]
    [subscription] = [s for s in listed if mailbox in s["resource"]]
    result: dict[str, Any] = subscription
    return result


async def status_of(stack: Stack, booking_id: str) -> dict[str, Any]:
    _, view = await stack.call("GET", f"/bookings/{booking_id}")
    result: dict[str, Any] = view
    return result


async def test_delete_with_cancel_booking_cancels_and_clears_the_panel(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    alice = await stack.connect(mb.alice)
    created = await booked(stack, [room, alice])
    event = await event_of(stack, mb.room)

    await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")

    async def cancelled() -> bool:
        return bool((await status_of(stack, created["bookingId"]))["status"] == "cancelled")

    await eventually(cancelled, within=2)
    await eventually(lambda: _none_left(stack, mb.alice))
    await asyncio.sleep(0.5)  # duplicates and echoes must not emit again
    assert await stack.booking_events(created["bookingId"]) == [
        "booking.created",
        "booking.cancelled",
    ]


async def _none_left(stack: Stack, mailbox: str) -> bool:
    return not await our_events(stack, mailbox)


async def test_delete_with_ignore_changes_nothing(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room)  # onOutlookDelete defaults to ignore
    created = await booked(stack, [room])
    event = await event_of(stack, mb.room)

    await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")
    await asyncio.sleep(1.5)

    view = await status_of(stack, created["bookingId"])
    assert view["status"] == "confirmed"
    assert await stack.booking_events(created["bookingId"]) == ["booking.created"]
    assert await our_events(stack, mb.room) == []


async def test_delete_with_restore_event_puts_it_back(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="restore_event")
    created = await booked(stack, [room])
    event = await event_of(stack, mb.room)

    await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")

    async def restored() -> dict[str, Any] | None:
        events = await our_events(stack, mb.room)
        return events[0] if len(events) == 1 and events[0]["id"] != event["id"] else None

    back = await eventually(restored, within=2)
    assert back["subject"] == "Interview"
    assert (await status_of(stack, created["bookingId"]))["status"] == "confirmed"


async def test_move_with_reschedule_booking_moves_the_booking_and_the_panel(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookMove="reschedule_booking")
    alice = await stack.connect(mb.alice)
    created = await booked(stack, [room, alice])
    event = await event_of(stack, mb.room)

    await stack.graph("PATCH", f"/users/{mb.room}/events/{event['id']}", when(hours=5))

    async def moved() -> dict[str, Any] | None:
        view = await status_of(stack, created["bookingId"])
        return view if view["status"] == "rescheduled" else None

    view: dict[str, Any] = await eventually(moved, within=2)
    new_start: str = view["start"]
    assert new_start[:16] == (START + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M")

    async def alice_moved() -> bool:
        moved_to: str = (await event_of(stack, mb.alice))["start"]["dateTime"]
        return moved_to[:13] == new_start[:13]

    await eventually(alice_moved)
    assert await stack.booking_events(created["bookingId"]) == [
        "booking.created",
        "booking.rescheduled",
    ]


async def test_additional_members_move_leaves_the_booking(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room)
    alice = await stack.connect(mb.alice, onOutlookMove="reschedule_booking")
    created = await booked(stack, [room, alice])
    event = await event_of(stack, mb.alice)

    await stack.graph("PATCH", f"/users/{mb.alice}/events/{event['id']}", when(hours=6))
    await asyncio.sleep(1.5)

    view = await status_of(stack, created["bookingId"])
    assert (view["status"], view["start"]) == ("confirmed", created["start"])


async def test_move_into_a_taken_slot_restores_the_event_and_reports_conflict(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookMove="reschedule_booking")
    first = await booked(stack, [room])
    status, _ = await stack.call("POST", "/bookings", booking([room], **slot(hours=3)))
    assert status == 201
    event = next(
        e
        for e in await our_events(stack, mb.room)
        if e["singleValueExtendedProperties"][0]["value"] == first["bookingId"]
    )

    await stack.graph("PATCH", f"/users/{mb.room}/events/{event['id']}", when(hours=3))

    async def restored() -> bool:
        _, current = await stack.graph("GET", f"/users/{mb.room}/events/{event['id']}")
        back_at: str = current["start"]["dateTime"]
        return back_at[:16] == START.strftime("%Y-%m-%dT%H:%M")

    await eventually(restored, within=3)
    assert (await status_of(stack, first["bookingId"]))["status"] == "confirmed"
    assert "booking.conflict" in await stack.booking_events(first["bookingId"])


async def test_foreign_events_become_availability_as_the_product_says(
    stack: Stack, mb: Mailboxes, azurite: Azurite
) -> None:
    room = await stack.connect(mb.room)
    events = [
        {"subject": "Busy thing", "showAs": "busy", **when(0)},
        {"subject": "Maybe", "showAs": "tentative", **when(1)},
        {"subject": "Holiday", "showAs": "oof", **when(2)},
        {"subject": "Lunch (free)", "showAs": "free", **when(3)},
        {"subject": "Salary talk SECRET-7", "showAs": "busy", "sensitivity": "private", **when(4)},
        {"subject": "Remote day", "showAs": "workingElsewhere", **when(5)},
    ]
    for body in events:
        status, _ = await stack.graph("POST", f"/users/{mb.room}/events", body)
        assert status == 201
    series_start = START + timedelta(days=1, hours=8)
    fmt = "%Y-%m-%dT%H:%M:%S"
    status, series = await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {
            "subject": "Weekly sync",
            "showAs": "busy",
            "start": {"dateTime": series_start.strftime(fmt), "timeZone": "UTC"},
            "end": {
                "dateTime": (series_start + timedelta(minutes=30)).strftime(fmt),
                "timeZone": "UTC",
            },
            "recurrence": {
                "pattern": {
                    "type": "weekly",
                    "interval": 1,
                    "daysOfWeek": [series_start.strftime("%A").lower()],
                },
                "range": {
                    "type": "numbered",
                    "startDate": series_start.strftime("%Y-%m-%d"),
                    "numberOfOccurrences": 4,
                },
            },
        },
    )
    assert status == 201
    day = timedelta(days=1)
    since, until = (series_start - day).strftime(fmt), (series_start + 30 * day).strftime(fmt)
    _, instances = await stack.graph(
        "GET",
        f"/users/{mb.room}/events/{series['id']}/instances?startDateTime={since}Z&endDateTime={until}Z",
    )
    occurrences = instances["value"]
    moved, deleted = occurrences[1], occurrences[2]
    moved_start = series_start + timedelta(days=7, hours=2)
    moved_end = moved_start + timedelta(minutes=30)
    await stack.graph(
        "PATCH",
        f"/users/{mb.room}/events/{moved['id']}",
        {
            "start": {"dateTime": moved_start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": moved_end.strftime(fmt), "timeZone": "UTC"},
        },
    )
    await stack.graph("DELETE", f"/users/{mb.room}/events/{deleted['id']}")
    all_day = START + timedelta(days=2)
    await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {"subject": "Offsite", "showAs": "oof", "isAllDay": True,
         "start": {"dateTime": all_day.strftime("%Y-%m-%dT00:00:00"), "timeZone": "UTC"},
         "end": {"dateTime": (all_day + day).strftime("%Y-%m-%dT00:00:00"), "timeZone": "UTC"}},
    )  # fmt: skip

    async def busy_blocks() -> list[tuple[str, str]] | None:
        window = {"start": START.isoformat(), "end": (START + timedelta(days=30)).isoformat()}
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        blocks = [(b["start"][:16], b["end"][:16]) for b in availability["busy"]]
        return blocks if len(blocks) == 8 else None

    blocks = await eventually(busy_blocks, within=5)

    def span(start: Any, minutes: int) -> tuple[str, str]:
        return (
            start.strftime("%Y-%m-%dT%H:%M"),
            (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M"),
        )

    expected = [
        span(START, 60),  # busy
        span(START + timedelta(hours=1), 60),  # tentative
        span(START + timedelta(hours=2), 60),  # oof
        span(START + timedelta(hours=4), 60),  # private, still blocks
        span(series_start, 30),  # series: first occurrence
        span(all_day.replace(hour=0), 24 * 60),  # all-day oof
        span(moved_start, 30),  # the moved exception
        span(series_start + timedelta(days=21), 30),  # the fourth; the third was deleted
    ]
    assert sorted(blocks) == sorted(expected)

    # The private event's subject is nowhere in Table Storage.
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        async for table in service.list_tables():
            async for entity in service.get_table_client(table.name).list_entities():
                assert "SECRET-7" not in json.dumps(entity, default=str)


async def test_own_writes_and_triplicate_notifications_change_nothing(
    stack: Stack, mb: Mailboxes
) -> None:
    await stack.control("POST", "/notifications/duplicates", {"enabled": True})
    try:
        room = await stack.connect(
            mb.room, onOutlookMove="reschedule_booking", onOutlookDelete="cancel_booking"
        )
        created = await booked(stack, [room])
        await asyncio.sleep(1.0)
    finally:
        await stack.control("POST", "/notifications/duplicates", {"enabled": False})

    view = await status_of(stack, created["bookingId"])
    assert (view["status"], view["version"]) == ("confirmed", 1)
    assert await stack.booking_events(created["bookingId"]) == ["booking.created"]
    _, log = await stack.call("GET", f"/resources/{room}/sync-log")
    assert not [e for e in log["value"] if e["action"].startswith("outlook_")]


async def test_wrong_client_state_enqueues_nothing(stack: Stack, mb: Mailboxes) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room])
    event = await event_of(stack, mb.room)
    subscription = await subscription_of(stack, mb.room)
    forged = {
        "value": [
            {
                "subscriptionId": subscription["id"],
                "clientState": "not-the-secret",
                "tenantId": subscription["tenantId"],
                "changeType": "deleted",
                "resource": f"Users/x/Events/{event['id']}",
                "resourceData": {"id": event["id"], "@odata.etag": 'W/"forged"'},
            }
        ]
    }
    await stack.control("POST", "/notifications/pause")
    try:
        await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")  # not notified
        status, _ = await stack.call("POST", "/graph/notifications", forged)
        await asyncio.sleep(1.0)
    finally:
        await stack.control("POST", "/notifications/resume")

    assert status == 202
    assert (await status_of(stack, created["bookingId"]))["status"] == "confirmed"


@pytest.mark.parametrize("route", ["/graph/notifications", "/graph/lifecycle"])
async def test_handshake_echoes_tokens_verbatim_as_text(stack: Stack, route: str) -> None:
    token = "Validation: <script>alert('x')</script> & more"
    async with stack.http.post(stack.api + route, params={"validationToken": token}) as response:
        body = await response.text()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        # Echoed as sent, so no browser may take it for HTML or script.
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert body == token


async def test_missed_notifications_are_caught_up_by_the_missed_lifecycle_event(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(
        mb.room, onOutlookDelete="cancel_booking", onOutlookMove="reschedule_booking"
    )
    bookings = [await booked(stack, [room]) for _ in range(1)]
    extra = []
    for hours in (2, 4):
        status, created = await stack.call(
            "POST", "/bookings", booking([room], **slot(hours=hours))
        )
        assert status == 201
        extra.append(created)
        booking_id: str = created["bookingId"]
        await eventually(partial(synced, stack, booking_id))
    ours = {
        e["singleValueExtendedProperties"][0]["value"]: e for e in await our_events(stack, mb.room)
    }
    await stack.control("POST", "/notifications/pause")
    try:
        # Five Outlook changes Graph never tells us about.
        await stack.graph(
            "DELETE", f"/users/{mb.room}/events/{ours[bookings[0]['bookingId']]['id']}"
        )
        await stack.graph(
            "PATCH", f"/users/{mb.room}/events/{ours[extra[0]['bookingId']]['id']}", when(hours=8)
        )
        await stack.graph("DELETE", f"/users/{mb.room}/events/{ours[extra[1]['bookingId']]['id']}")
        for hours in (10, 11):
            await stack.graph(
                "POST",
                f"/users/{mb.room}/events",
                {"subject": "New", "showAs": "busy", **when(hours)},
            )
    finally:
        await stack.control("POST", "/notifications/resume")
    subscription = await subscription_of(stack, mb.room)

    await stack.control(
        "POST", f"/subscriptions/{subscription['id']}/lifecycle", {"event": "missed"}
    )

    async def caught_up() -> bool:
        views = [await status_of(stack, b["bookingId"]) for b in (*bookings, *extra)]
        window = {"start": START.isoformat(), "end": (START + timedelta(hours=12)).isoformat()}
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        calendar = [b for b in availability["busy"] if b["source"] == "calendar"]
        return [v["status"] for v in views] == ["cancelled", "rescheduled", "cancelled"] and len(
            calendar
        ) == 2

    await eventually(caught_up, within=5)
