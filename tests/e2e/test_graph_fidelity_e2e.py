"""The app against Graph's harsher behaviours, over the local stack: soft deletes that
leave the event readable by id, a subscription left by a connect that crashed, zones,
all-day events, meeting copies, and busy time whose notification has not come."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.test_bookings_e2e import booking, our_events, synced
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration


async def test_an_outlook_delete_still_readable_by_id_cancels_under_cancel_booking(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    status, created = await stack.call("POST", "/bookings", booking([room]))
    assert status == 201, created
    await eventually(lambda: synced(stack, created["bookingId"]))
    [event] = await our_events(stack, mb.room)
    path = f"/users/{mb.room}/events/{quote(event['id'], safe='')}"

    assert (await stack.graph("DELETE", path))[0] == 204
    # Graph moved it to Deleted Items; its immutable id still finds it there.
    status, still = await stack.graph("GET", path)
    assert status == 200
    assert still["id"] == event["id"]

    async def cancelled() -> bool:
        _, view = await stack.call("GET", f"/bookings/{created['bookingId']}")
        return bool(view["status"] == "cancelled")

    await eventually(cancelled)
    assert await stack.booking_events(created["bookingId"]) == [
        "booking.created",
        "booking.cancelled",
    ]


async def _stale_subscription(
    stack: Stack, mailbox: str, resource: str | None = None
) -> dict[str, Any]:
    """What a connect that crashed after Graph subscribed leaves behind: a subscription on
    the mailbox that no resource of ours records."""
    expiry = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    base = stack.api.removesuffix("/api")
    status, created = await stack.graph(
        "POST",
        "/subscriptions",
        {
            "changeType": "created,updated,deleted",
            "notificationUrl": f"{base}/api/graph/notifications",
            "lifecycleNotificationUrl": f"{base}/api/graph/lifecycle",
            "resource": resource or f"/users/{mailbox}/events",
            "expirationDateTime": expiry,
            "clientState": "lost-with-the-crash",
        },
    )
    assert status == 201, created
    result: dict[str, Any] = created
    return result


async def test_a_stale_subscription_from_a_crashed_connect_does_not_block_reconnecting(
    stack: Stack, mb: Mailboxes
) -> None:
    stale = await _stale_subscription(stack, mb.room)

    room = await stack.connect(mb.room)

    status, view = await stack.call("GET", f"/resources/{room}")
    assert status == 200
    assert view["status"]["state"] == "connected", view
    listed = (await stack.control("GET", "/subscriptions"))["value"]
    on_room = [s for s in listed if mb.room in s["resource"]]
    assert [s["id"] for s in on_room] == [view["subscription"]["id"]]
    assert view["subscription"]["id"] != stale["id"]
    # The new subscription delivers to the resource: an Outlook event reaches the mirror.
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=9, minute=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%S"
    await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {
            "subject": "Board meeting",
            "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"},
        },
    )

    async def mirrored() -> bool:
        window = {
            "start": start.isoformat(),
            "end": (start + timedelta(hours=2)).isoformat(),
            "durationMinutes": "30",
        }
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        return any(b["source"] == "calendar" for b in availability["busy"])

    await eventually(mirrored)


async def test_a_conflict_that_cannot_be_cleared_fails_the_resource_with_a_reason(
    stack: Stack, mb: Mailboxes
) -> None:
    # Held by a subscription that names the mailbox by its user id: the listing shows no
    # subscription on this mailbox's address, so the conflict cannot be cleared.
    _, user = await stack.graph("GET", f"/users/{mb.room}")
    await _stale_subscription(stack, mb.room, resource=f"/users/{user['id']}/events")

    room = await stack.connect(mb.room)

    _, view = await stack.call("GET", f"/resources/{room}")
    assert view["status"]["state"] == "failing"
    assert "subscription failed" in view["status"]["reason"]
    assert "another subscription of this app holds it" in view["status"]["reason"]


async def test_a_resource_in_amsterdam_gets_events_written_with_the_windows_zone_name(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, timeZone="Europe/Amsterdam")
    status, created = await stack.call("POST", "/bookings", booking([room]))
    assert status == 201, created
    await eventually(lambda: synced(stack, created["bookingId"]))

    [event] = await our_events(stack, mb.room)
    assert event["originalStartTimeZone"] == "W. Europe Standard Time"
    assert event["originalEndTimeZone"] == "W. Europe Standard Time"
    _, view = await stack.call("GET", f"/bookings/{created['bookingId']}")
    # The instants are the booking's, whatever zone names them.
    start = datetime.fromisoformat(event["start"]["dateTime"][:19]).replace(tzinfo=UTC)
    assert start == datetime.fromisoformat(view["start"])


@pytest.mark.usefixtures("notification_delay")
async def test_an_all_day_oof_in_a_new_york_room_blocks_its_new_york_day(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, timeZone="America/New_York")
    new_york = ZoneInfo("America/New_York")
    day = (datetime.now(new_york) + timedelta(days=4)).date()
    next_day = day + timedelta(days=1)
    status, _ = await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {
            "subject": "Offsite",
            "showAs": "oof",
            "isAllDay": True,
            "start": {"dateTime": f"{day}T00:00:00", "timeZone": "Eastern Standard Time"},
            "end": {"dateTime": f"{next_day}T00:00:00", "timeZone": "Eastern Standard Time"},
        },
    )
    assert status == 201
    local_midnight = datetime.combine(day, time(), tzinfo=new_york)
    next_midnight = datetime.combine(next_day, time(), tzinfo=new_york)

    async def blocked() -> list[tuple[datetime, datetime]] | None:
        window = {
            "start": (local_midnight - timedelta(hours=12)).isoformat(),
            "end": (next_midnight + timedelta(hours=12)).isoformat(),
        }
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        busy = [
            (datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]))
            for b in availability["busy"]
            if b["source"] == "calendar"
        ]
        return busy or None

    # 00:00 to 24:00 New York time: not UTC's day (which would free the New York evening
    # and block the evening before).
    assert await eventually(blocked) == [(local_midnight, next_midnight)]
    status, evening = await stack.call(
        "POST",
        "/bookings",
        booking(
            [room],
            start=(next_midnight - timedelta(hours=2)).isoformat(),
            end=(next_midnight - timedelta(hours=1)).isoformat(),
        ),
    )
    assert status == 409, evening


@pytest.mark.usefixtures("notification_delay")
async def test_a_meeting_copy_in_a_room_blocks_time_until_the_organiser_cancels(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=13, minute=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%S"
    status, meeting = await stack.graph(
        "POST",
        f"/users/{mb.alice}/events",
        {
            "subject": "Design review",
            "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"},
            "attendees": [{"emailAddress": {"address": mb.room}, "type": "resource"}],
        },
    )
    assert status == 201, meeting

    async def calendar_busy() -> list[Any]:
        window = {
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "durationMinutes": "30",
        }
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        return [b for b in availability["busy"] if b["source"] == "calendar"]

    # The room's copy is a foreign event: busy time, never a booking of ours.
    await eventually(calendar_busy)
    [copy] = (await stack.graph("GET", f"/users/{mb.room}/events"))[1]["value"]
    assert copy["isOrganizer"] is False

    # The organiser cancels: the copy is marked cancelled, and that is free time.
    await stack.graph("DELETE", f"/users/{mb.alice}/events/{quote(meeting['id'], safe='')}")

    async def freed() -> bool:
        return not await calendar_busy()

    await eventually(freed)


async def test_a_booking_over_a_meeting_whose_notification_is_paused_answers_409(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%S"
    window = {
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "durationMinutes": "30",
    }

    async def calendar_busy() -> list[Any]:
        _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
        return [b for b in availability["busy"] if b["source"] == "calendar"]

    await stack.control("POST", "/notifications/pause")
    try:
        # An Outlook user books the room for a meeting; Graph has not notified us.
        status, meeting = await stack.graph(
            "POST",
            f"/users/{mb.alice}/events",
            {
                "subject": "Budget review",
                "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
                "end": {"dateTime": (start + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"},
                "attendees": [{"emailAddress": {"address": mb.room}, "type": "resource"}],
            },
        )
        assert status == 201, meeting
        assert await calendar_busy() == []  # the mirror has not seen it

        status, body = await stack.call(
            "POST",
            "/bookings",
            booking(
                [room],
                start=(start + timedelta(minutes=30)).isoformat(),
                end=(start + timedelta(minutes=90)).isoformat(),
            ),
        )

        assert (status, body["error"]["code"]) == (409, "slot_unavailable"), body
        # What the live look saw reaches the mirror without Graph's notification.
        assert await eventually(calendar_busy)
    finally:
        await stack.control("POST", "/notifications/resume")
    # The hour after the meeting is free in Outlook too: booked at once.
    status, later = await stack.call(
        "POST",
        "/bookings",
        booking(
            [room],
            start=(start + timedelta(hours=1)).isoformat(),
            end=(start + timedelta(hours=2)).isoformat(),
        ),
    )
    assert status == 201, later


async def test_a_room_with_the_live_check_off_books_over_an_unnotified_meeting(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, liveSlotCheck=False)
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=17, minute=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%S"
    await stack.control("POST", "/notifications/pause")
    try:
        status, _ = await stack.graph(
            "POST",
            f"/users/{mb.room}/events",
            {
                "subject": "Cleaning",
                "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
                "end": {"dateTime": (start + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"},
            },
        )
        assert status == 201
        status, body = await stack.call(
            "POST",
            "/bookings",
            booking(
                [room],
                start=start.isoformat(),
                end=(start + timedelta(hours=1)).isoformat(),
            ),
        )
    finally:
        await stack.control("POST", "/notifications/resume")

    # The admin chose the mirror alone: what it has not seen does not refuse.
    assert status == 201, body
