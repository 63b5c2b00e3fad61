"""Outlook deletes of our events whose notifications never came, over the local stack:
Graph's DELETE moves the event to Deleted Items (still readable by its immutable id, and
listed by `/users/{id}/events`), so only the calendar's own listing tells it is gone.
The rounds (incremental and full) must apply each policy once, and a doubt (an error on
the calendar's listing) must never cancel a booking."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from shared.adapters.graph.mapping import BOOKING_ID_PROPERTY
from shared.domain.errors import GraphError
from tests.e2e.test_bookings_e2e import START, booking, our_events, slot, synced
from tests.e2e.test_outlook_e2e import booked, status_of, when
from tests.e2e.test_reconcile_e2e import quiet, services
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration


def _path(mailbox: str, event_id: str) -> str:
    return f"/users/{mailbox}/events/{quote(event_id, safe='')}"


async def _delete_unnotified(
    stack: Stack, mailbox: str, event_id: str, *, permanent: bool = False
) -> None:
    """An Outlook user's delete whose `deleted` notification is lost."""
    async with stack.notifications_lost():
        if permanent:
            path = _path(mailbox, event_id) + "/permanentDelete"
            assert (await stack.graph("POST", path))[0] == 204
            assert (await stack.graph("GET", _path(mailbox, event_id)))[0] == 404
            return
        assert (await stack.graph("DELETE", _path(mailbox, event_id)))[0] == 204
        status, still = await stack.graph("GET", _path(mailbox, event_id))
        assert (status, still["id"]) == (200, event_id)  # in Deleted Items, readable


async def _actions(stack: Stack, resource_id: str) -> list[str]:
    _, log = await stack.call("GET", f"/resources/{resource_id}/sync-log")
    return [entry["action"] for entry in log["value"]]


async def _settled_round(resource_id: str, *, full: bool) -> None:
    report = await services().reconcile.reconcile(resource_id)
    assert report.full is full


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
@pytest.mark.parametrize(
    ("policy", "status", "events_left"),
    [
        ("cancel_booking", "cancelled", 0),
        ("ignore", "confirmed", 0),
        ("restore_event", "confirmed", 1),
    ],
)
async def test_an_unnotified_delete_is_applied_once_by_the_next_round(
    stack: Stack, mb: Mailboxes, full: bool, policy: str, status: str, events_left: int
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete=policy)
    created = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    await quiet(stack)
    await _settled_round(room, full=True)  # the baseline round
    await _delete_unnotified(stack, mb.room, event["id"])
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})

    await _settled_round(room, full=full)
    await quiet(stack)
    await _settled_round(room, full=False)  # a second round changes nothing more

    assert (await status_of(stack, created["bookingId"]))["status"] == status
    left = await our_events(stack, mb.room)
    assert len(left) == events_left
    assert all(e["id"] != event["id"] for e in left)
    actions = await _actions(stack, room)
    assert actions.count(f"outlook_delete:{policy}") == 1, actions
    expected = (
        ["booking.created", "booking.cancelled"] if status == "cancelled" else ["booking.created"]
    )
    assert await stack.booking_events(created["bookingId"]) == expected


@pytest.mark.parametrize("status", [503, 429, 403])
async def test_a_failing_calendar_listing_never_cancels_a_booking(
    stack: Stack, mb: Mailboxes, status: int
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    alice = await stack.connect(mb.alice, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room, alice])
    [event] = await our_events(stack, mb.room)
    await quiet(stack)
    await _settled_round(room, full=True)
    # A reschedule marks the booking's calendars unconfirmed: the next round reads them.
    code, _ = await stack.call(
        "POST", f"/bookings/{created['bookingId']}/reschedule", slot(hours=1)
    )
    assert code == 200
    await eventually(lambda: synced(stack, created["bookingId"]))
    await quiet(stack)
    fault = {"pathContains": "/calendar/events", "status": status, "retryAfter": 1}
    stats = stack.emulator.state.stats
    refused = stats.statuses[status]
    await stack.control("POST", "/faults", fault)
    try:
        with contextlib.suppress(GraphError):  # a failed round is allowed; a cancel is not
            await services().reconcile.reconcile(room)
    finally:
        await stack.control("DELETE", "/faults")

    assert stats.statuses[status] > refused  # the round met the fault
    assert (await status_of(stack, created["bookingId"]))["status"] == "rescheduled"
    assert [e["id"] for e in await our_events(stack, mb.room)] == [event["id"]]
    assert not [a for a in await _actions(stack, room) if a.startswith("outlook_delete")]
    report = await services().reconcile.reconcile(room)
    assert report.checked >= 1
    assert (await status_of(stack, created["bookingId"]))["status"] == "rescheduled"


async def _stamped(stack: Stack, mailbox: str, booking_id: str, hours: int = 0) -> str:
    """An event an Outlook user made in `mailbox` carrying `booking_id` as our booking id
    (an Outlook copy of an event of ours, or an app that wrote the property)."""
    status, event = await stack.graph(
        "POST",
        f"/users/{mailbox}/events",
        {
            "subject": "Interview",
            "showAs": "busy",
            **when(hours),
            "singleValueExtendedProperties": [{"id": BOOKING_ID_PROPERTY, "value": booking_id}],
        },
    )
    assert status == 201, event
    event_id: str = event["id"]
    return event_id


async def _duplicate(stack: Stack, mailbox: str, booking_id: str, *, notified: bool) -> str:
    """A second event of ours for the booking, unmapped: as an attempt of a create Graph
    was slow to answer leaves one (its notification then removes it), or a crash
    between write and mapping with the notification lost (`notified=False`: only a
    round finds it)."""
    if notified:
        return await _stamped(stack, mailbox, booking_id)
    async with stack.notifications_lost():
        return await _stamped(stack, mailbox, booking_id)


async def test_a_duplicate_of_ours_is_removed_when_its_notification_comes(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    created = await booked(stack, [room])
    [mapped] = await our_events(stack, mb.room)
    await quiet(stack)

    duplicate = await _duplicate(stack, mb.room, created["bookingId"], notified=True)

    async def only_the_mapped_one_left() -> bool:
        return [e["id"] for e in await our_events(stack, mb.room)] == [mapped["id"]]

    await eventually(only_the_mapped_one_left)
    assert duplicate != mapped["id"]
    assert "duplicate event of ours removed" in await _actions(stack, room)
    assert (await status_of(stack, created["bookingId"]))["status"] == "confirmed"


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
@pytest.mark.parametrize("deleted", ["mapped", "duplicate"])
async def test_a_deleted_duplicate_leaves_the_booking_with_one_event(
    stack: Stack, mb: Mailboxes, full: bool, deleted: str
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room])
    [mapped] = await our_events(stack, mb.room)
    await quiet(stack)
    await _settled_round(room, full=True)
    duplicate = await _duplicate(stack, mb.room, created["bookingId"], notified=False)
    await quiet(stack)
    gone = mapped["id"] if deleted == "mapped" else duplicate
    await _delete_unnotified(stack, mb.room, gone)
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})

    await services().reconcile.reconcile(room)
    await quiet(stack)
    await stack.control("POST", "/delta/expire", {"mailbox": mb.room})
    await _settled_round(room, full=True)  # the full round removes duplicates
    await quiet(stack)

    view = await status_of(stack, created["bookingId"])
    left = [e["id"] for e in await our_events(stack, mb.room)]
    actions = await _actions(stack, room)
    assert (view["status"], left) == (
        "confirmed",
        [mapped["id"] if deleted == "duplicate" else duplicate],
    ), actions


async def _calendar_busy(stack: Stack, resource_id: str) -> list[dict[str, Any]]:
    window = {"start": START.isoformat(), "end": (START + timedelta(hours=40)).isoformat()}
    _, availability = await stack.call(
        "GET", f"/resources/{resource_id}/availability", params=window
    )
    return [b for b in availability["busy"] if b["source"] == "calendar"]


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
async def test_a_foreign_event_deleted_unnotified_frees_its_time_after_a_round(
    stack: Stack, mb: Mailboxes, full: bool
) -> None:
    room = await stack.connect(mb.room)
    _, foreign = await stack.graph(
        "POST", f"/users/{mb.room}/events", {"subject": "x", "showAs": "busy", **when(5)}
    )
    await eventually(lambda: _calendar_busy(stack, room))
    await quiet(stack)
    await _settled_round(room, full=True)
    await _delete_unnotified(stack, mb.room, foreign["id"])
    assert await _calendar_busy(stack, room)  # not yet told
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})

    await _settled_round(room, full=full)

    assert await _calendar_busy(stack, room) == []
    code, _ = await stack.call("POST", "/bookings", booking([room], **slot(hours=5)))
    assert code == 201


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
async def test_a_panel_follows_its_primary_members_unnotified_delete_only(
    stack: Stack, mb: Mailboxes, full: bool
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    alice = await stack.connect(mb.alice, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room, alice])
    [room_event] = await our_events(stack, mb.room)
    [alice_event] = await our_events(stack, mb.alice)
    await quiet(stack)
    for resource_id in (room, alice):
        await _settled_round(resource_id, full=True)

    # An additional member's delete is disregarded: the booking stays.
    await _delete_unnotified(stack, mb.alice, alice_event["id"])
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.alice})
    await _settled_round(alice, full=full)
    assert (await status_of(stack, created["bookingId"]))["status"] == "confirmed"
    assert [e["id"] for e in await our_events(stack, mb.room)] == [room_event["id"]]

    # The primary member's delete cancels it, and so clears the panel.
    await _delete_unnotified(stack, mb.room, room_event["id"])
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})
    await _settled_round(room, full=full)

    async def pushed() -> bool:
        sync = (await status_of(stack, created["bookingId"]))["sync"]
        return all(s["state"] != "pending" for s in sync)

    await eventually(pushed)  # the cancel's push is done: alice's round does not race it
    await quiet(stack)
    await _settled_round(alice, full=False)

    assert (await status_of(stack, created["bookingId"]))["status"] == "cancelled"
    assert await our_events(stack, mb.room) == []
    assert await our_events(stack, mb.alice) == []
    assert await stack.booking_events(created["bookingId"]) == [
        "booking.created",
        "booking.cancelled",
    ]


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
async def test_an_unnotified_permanent_delete_cancels_under_cancel_booking(
    stack: Stack, mb: Mailboxes, full: bool
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    await quiet(stack)
    await _settled_round(room, full=True)
    await _delete_unnotified(stack, mb.room, event["id"], permanent=True)
    if full:
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})

    await _settled_round(room, full=full)

    assert (await status_of(stack, created["bookingId"]))["status"] == "cancelled"
    assert (await _actions(stack, room)).count("outlook_delete:cancel_booking") == 1


async def test_an_event_stamped_with_another_resources_booking_id_is_busy_and_stays(
    stack: Stack, mb: Mailboxes
) -> None:
    """An Outlook copy of alice's event of ours in the room carries alice's booking id:
    it is no booking of the room, so it is the room's busy time, refuses a booking over
    it, and a resync of the room (which removes our events) leaves it."""
    room = await stack.connect(mb.room)
    alice = await stack.connect(mb.alice)
    created = await booked(stack, [alice])
    copy = await _stamped(stack, mb.room, created["bookingId"], hours=5)

    await eventually(lambda: _calendar_busy(stack, room))
    code, _ = await stack.call("POST", "/bookings", booking([room], **slot(hours=5)))
    assert code == 409
    assert (await stack.call("POST", f"/resources/{room}/resync"))[0] == 202
    await quiet(stack)
    assert [e["id"] for e in await our_events(stack, mb.room)] == [copy]  # still there
