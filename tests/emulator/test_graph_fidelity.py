"""Where Graph is harsher than a naive emulator would be. Each test names the Microsoft doc
page the behaviour comes from (also listed in local/graph_emulator/README.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from local.graph_emulator import RunningEmulator, start_emulator
from tests.emulator.support import GraphClient, Receiver, event_body

ALICE = "/users/alice@contoso.com"


def _expiry(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _subscription(receiver: Receiver, **changes: Any) -> dict[str, Any]:
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.notification_url,
        "lifecycleNotificationUrl": receiver.lifecycle_url,
        "resource": "/users/alice@contoso.com/events",
        "expirationDateTime": _expiry(10_000),
        "clientState": "s3cret-state",
        **changes,
    }


async def _event(graph: GraphClient, subject: str = "Standup") -> dict[str, Any]:
    created = await graph.post(
        f"{ALICE}/events", event_body(subject, "2025-06-02T09:00:00", "2025-06-02T10:00:00")
    )
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


def _path(event_id: str) -> str:
    return f"{ALICE}/events/{quote(event_id, safe='')}"


async def _view_ids(graph: GraphClient) -> list[str]:
    view = await graph.get(
        f"{ALICE}/calendarView",
        params={"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2025-06-03T00:00:00Z"},
    )
    return [e["id"] for e in view.body["value"]]


# 1. DELETE is a soft delete; permanentDelete purges.
# https://learn.microsoft.com/graph/api/event-delete?view=graph-rest-1.0
# https://learn.microsoft.com/graph/api/event-permanentdelete?view=graph-rest-1.0
# https://learn.microsoft.com/graph/outlook-immutable-id


async def test_delete_moves_the_event_to_deleted_items_where_get_still_finds_it(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    assert (await graph.post("/subscriptions", _subscription(receiver))).status == 201
    event = await _event(graph)
    delta = await graph.get(
        f"{ALICE}/calendarView/delta",
        params={"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2025-06-03T00:00:00Z"},
    )

    assert (await graph.delete(_path(event["id"]))).status == 204

    still = await graph.get(_path(event["id"]))
    assert still.status == 200
    assert still.body["id"] == event["id"]
    assert await _view_ids(graph) == []
    assert (await graph.get(f"{ALICE}/calendar/events")).body["value"] == []
    # "in the user's mailbox": Deleted Items is one of its folders.
    listed = (await graph.get(f"{ALICE}/events")).body["value"]
    assert [e["id"] for e in listed] == [event["id"]]
    changes = await graph.get(delta.body["@odata.deltaLink"])
    assert changes.body["value"] == [
        {
            "@odata.type": "#microsoft.graph.event",
            "id": event["id"],
            "@removed": {"reason": "deleted"},
        }
    ]
    await receiver.wait_for(lambda r: any(n["changeType"] == "deleted" for n in r.notifications))
    assert [n["changeType"] for n in receiver.notifications] == ["created", "deleted"]


async def test_permanent_delete_purges_from_the_calendar_or_deleted_items(
    graph: GraphClient, receiver: Receiver
) -> None:
    assert (await graph.post("/subscriptions", _subscription(receiver))).status == 201
    purged = await _event(graph, "purged at once")
    soft_first = await _event(graph, "deleted, then purged")

    assert (await graph.post(_path(purged["id"]) + "/permanentDelete")).status == 204
    assert (await graph.get(_path(purged["id"]))).status == 404
    await receiver.wait_for(lambda r: any(n["changeType"] == "deleted" for n in r.notifications))

    assert (await graph.delete(_path(soft_first["id"]))).status == 204
    assert (await graph.post(_path(soft_first["id"]) + "/permanentDelete")).status == 204
    gone = await graph.get(_path(soft_first["id"]))
    assert gone.status == 404
    assert gone.error_code == "ErrorItemNotFound"
    assert (await graph.post(_path(soft_first["id"]) + "/permanentDelete")).status == 404


@pytest_asyncio.fixture
async def kinder(http_session: aiohttp.ClientSession) -> AsyncIterator[GraphClient]:
    """An emulator started with the kinder options: deleted items unreadable by id, any
    IANA zone written."""
    running = await start_emulator(
        mailboxes=["alice@contoso.com"],
        deleted_items_readable=False,
        allow_http_notification_urls=True,
        accept_any_iana_zone=True,
    )
    try:
        yield GraphClient(http_session, running.graph_url)
    finally:
        await running.close()


async def test_deleted_items_unreadable_option_answers_404(kinder: GraphClient) -> None:
    event = await _event(kinder)
    assert (await kinder.delete(_path(event["id"]))).status == 204
    gone = await kinder.get(_path(event["id"]))
    assert gone.status == 404
    assert gone.error_code == "ErrorItemNotFound"


# Graph's event resource has no parentFolderId (messages, contacts and folders do):
# https://learn.microsoft.com/graph/api/resources/event?view=graph-rest-1.0 ("Properties",
# "JSON representation"). The kinder option adds it.


async def test_events_carry_no_parent_folder_id_anywhere(
    graph: GraphClient,
) -> None:
    created = await _event(graph)
    read = await graph.get(_path(created["id"]))
    listed = await graph.get(f"{ALICE}/events")
    view = await graph.get(
        f"{ALICE}/calendarView",
        params={"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2025-06-03T00:00:00Z"},
    )
    assert (await graph.delete(_path(created["id"]))).status == 204
    deleted = await graph.get(_path(created["id"]))

    assert deleted.status == 200  # still readable by its immutable id
    for event in [created, read.body, *listed.body["value"], *view.body["value"], deleted.body]:
        assert "parentFolderId" not in event


async def test_parent_folder_id_option_names_the_calendar_then_deleted_items(
    http_session: aiohttp.ClientSession,
) -> None:
    running = await start_emulator(mailboxes=["alice@contoso.com"], event_parent_folder_id=True)
    try:
        graph = GraphClient(http_session, running.graph_url)
        calendar = (await graph.get(f"{ALICE}/calendar")).body
        created = await _event(graph)
        assert (await graph.delete(_path(created["id"]))).status == 204
        deleted = await graph.get(_path(created["id"]))
    finally:
        await running.close()

    assert created["parentFolderId"] == calendar["id"]
    assert deleted.body["parentFolderId"] not in ("", calendar["id"])


# 2. A second subscription with the same resource and changeType answers 409.
# https://learn.microsoft.com/graph/api/subscription-post-subscriptions?view=graph-rest-1.0
# ("Duplicate subscription behavior")


async def test_duplicate_subscription_is_refused_with_409(
    graph: GraphClient, receiver: Receiver
) -> None:
    first = await graph.post("/subscriptions", _subscription(receiver))
    assert first.status == 201
    # Same mailbox named another way, same change types in another order: still a duplicate.
    again = await graph.post(
        "/subscriptions",
        _subscription(
            receiver,
            resource="users/ALICE@contoso.com/events",
            changeType="deleted,created,updated",
            clientState="other",
        ),
    )
    assert again.status == 409
    assert again.error_code == "Conflict"
    other_types = await graph.post("/subscriptions", _subscription(receiver, changeType="deleted"))
    assert other_types.status == 201
    assert (await graph.delete(f"/subscriptions/{first.body['id']}")).status == 204
    assert (await graph.post("/subscriptions", _subscription(receiver))).status == 201


# 3. clientState is never returned when reading subscriptions.
# https://learn.microsoft.com/graph/api/resources/subscription?view=graph-rest-1.0


async def test_client_state_is_not_returned_by_get(graph: GraphClient, receiver: Receiver) -> None:
    created = await graph.post("/subscriptions", _subscription(receiver))
    assert created.body["clientState"] == "s3cret-state"  # the POST's own answer echoes it
    listed = (await graph.get("/subscriptions")).body["value"]
    assert [s["clientState"] for s in listed] == [None]
    single = await graph.get(f"/subscriptions/{created.body['id']}")
    assert single.body["clientState"] is None
    renewed = await graph.patch(
        f"/subscriptions/{created.body['id']}", {"expirationDateTime": _expiry(9_000)}
    )
    assert renewed.body["clientState"] is None
    # The control API still shows it, for tests.
    stored = await graph.get(
        graph.graph_url.replace("/v1.0", "/_emulator") + f"/subscriptions/{created.body['id']}"
    )
    assert stored.body["clientState"] == "s3cret-state"


# 4. GET /subscriptions takes no OData query options.
# https://learn.microsoft.com/graph/api/subscription-list?view=graph-rest-1.0


async def test_list_subscriptions_refuses_odata_options(
    graph: GraphClient, receiver: Receiver
) -> None:
    await graph.post("/subscriptions", _subscription(receiver))
    for option in ("$top", "$filter", "$select"):
        refused = await graph.get("/subscriptions", params={option: "1"})
        assert refused.status == 400, option
        assert option in refused.body["error"]["message"]
    assert len((await graph.get("/subscriptions")).body["value"]) == 1


# 9. Notification URLs must be https unless the emulator is told otherwise.
# https://learn.microsoft.com/graph/change-notifications-delivery-webhooks


@pytest_asyncio.fixture
async def https_only(http_session: aiohttp.ClientSession) -> AsyncIterator[GraphClient]:
    running = await start_emulator(mailboxes=["alice@contoso.com"])
    try:
        yield GraphClient(http_session, running.graph_url)
    finally:
        await running.close()


async def test_http_notification_urls_are_refused_by_default(
    https_only: GraphClient, receiver: Receiver
) -> None:
    plain = await https_only.post("/subscriptions", _subscription(receiver))
    assert plain.status == 400
    assert "https" in plain.body["error"]["message"]
    lifecycle_plain = await https_only.post(
        "/subscriptions",
        _subscription(receiver, notificationUrl="https://127.0.0.1:9/hook"),
    )
    assert lifecycle_plain.status == 400
    assert "lifecycleNotificationUrl" in lifecycle_plain.body["error"]["message"]
    assert receiver.posts == 0


# 5. Editing one occurrence notifies `updated` for the series master only; a room mailbox
# sends several. (Undocumented; reported in https://github.com/pnp/PnP/issues/1894.)


async def _daily_series(graph: GraphClient) -> tuple[str, list[str]]:
    master = await graph.post(
        f"{ALICE}/events",
        event_body(
            "Daily",
            "2025-03-03T09:00:00",
            "2025-03-03T09:30:00",
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2025-03-03", "numberOfOccurrences": 3},
            },
        ),
    )
    view = await graph.get(
        f"{ALICE}/calendarView",
        params={"startDateTime": "2025-03-01T00:00:00Z", "endDateTime": "2025-03-10T00:00:00Z"},
    )
    return master.body["id"], [e["id"] for e in view.body["value"]]


async def test_editing_an_occurrence_notifies_only_the_master(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    master_id, occurrences = await _daily_series(graph)
    await graph.post("/subscriptions", _subscription(receiver))

    moved = await graph.patch(_path(occurrences[1]), {"subject": "Moved"})
    assert moved.body["type"] == "exception"

    await receiver.wait_for(lambda r: len(r.notifications) >= 1)
    await emulator.notifier.idle()
    assert [(n["changeType"], n["resourceData"]["id"]) for n in receiver.notifications] == [
        ("updated", master_id)
    ]


@pytest_asyncio.fixture
async def room_mailbox(http_session: aiohttp.ClientSession) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(
        mailboxes=["alice@contoso.com"],
        allow_http_notification_urls=True,
        master_updates_per_occurrence_change=3,
        notification_batch_window_s=0.02,
    )
    try:
        yield running
    finally:
        await running.close()


async def test_a_room_mailbox_notifies_the_master_several_times_with_new_change_keys(
    room_mailbox: RunningEmulator, http_session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    graph = GraphClient(http_session, room_mailbox.graph_url)
    master_id, occurrences = await _daily_series(graph)
    await graph.post("/subscriptions", _subscription(receiver))

    assert (await graph.delete(_path(occurrences[0]))).status == 204

    await receiver.wait_for(lambda r: len(r.notifications) >= 3)
    await room_mailbox.notifier.idle()
    assert [n["resourceData"]["id"] for n in receiver.notifications] == [master_id] * 3
    keys = [n["resourceData"]["@odata.etag"] for n in receiver.notifications]
    assert len(set(keys)) == 3


# 8 (part). isCancelled is read-only: writes ignore it, as Graph ignores read-only
# properties. https://learn.microsoft.com/graph/api/event-update?view=graph-rest-1.0


async def test_is_cancelled_cannot_be_written(graph: GraphClient) -> None:
    created = await graph.post(
        f"{ALICE}/events",
        event_body("Standup", "2025-06-02T09:00:00", "2025-06-02T10:00:00", isCancelled=True),
    )
    assert created.status == 201
    assert created.body["isCancelled"] is False
    patched = await graph.patch(_path(created.body["id"]), {"isCancelled": True})
    assert patched.status == 200
    assert patched.body["isCancelled"] is False
    assert (await graph.get(_path(created.body["id"]))).body["isCancelled"] is False


# 8. Meeting copies: a meeting organised in one mailbox appears in each attendee's calendar
# as that mailbox's own item; the organiser's cancel marks the copies cancelled, or removes
# them from mailboxes that process meetings themselves (rooms).
# https://learn.microsoft.com/graph/api/resources/event?view=graph-rest-1.0 (isOrganizer,
# responseStatus, isCancelled); https://learn.microsoft.com/graph/api/event-cancel?view=graph-rest-1.0


async def test_meeting_copies_follow_the_organiser_and_are_cancelled_with_it(
    graph: GraphClient, receiver: Receiver
) -> None:
    control = graph.graph_url.replace("/v1.0", "/_emulator")
    await graph.post(f"{control}/mailboxes", {"id": "room-9@contoso.com", "autoProcessing": True})
    attendees = [
        {"emailAddress": {"address": address}, "type": "required"}
        for address in ("bob@contoso.com", "room-9@contoso.com", "outside@example.com")
    ]
    meeting = await graph.post(
        f"{ALICE}/events",
        event_body("Review", "2025-06-02T09:00:00", "2025-06-02T10:00:00", attendees=attendees),
    )
    assert meeting.status == 201
    assert meeting.body["isOrganizer"] is True
    await graph.post(
        "/subscriptions", _subscription(receiver, resource="/users/bob@contoso.com/events")
    )

    [bob_copy] = (await graph.get("/users/bob@contoso.com/events")).body["value"]
    [room_copy] = (await graph.get("/users/room-9@contoso.com/events")).body["value"]
    for copy in (bob_copy, room_copy):
        assert copy["id"] != meeting.body["id"]
        assert copy["isOrganizer"] is False
        assert copy["responseStatus"]["response"] == "accepted"
        assert copy["organizer"]["emailAddress"]["address"] == "alice@contoso.com"
        assert copy["isCancelled"] is False

    assert (await graph.delete(_path(meeting.body["id"]))).status == 204

    cancelled = await graph.get(f"/users/bob@contoso.com/events/{quote(bob_copy['id'], safe='')}")
    assert cancelled.body["isCancelled"] is True
    assert (await graph.get("/users/room-9@contoso.com/events")).body["value"] == []
    await receiver.wait_for(lambda r: len(r.notifications) >= 1)
    assert [(n["changeType"], n["resourceData"]["id"]) for n in receiver.notifications] == [
        ("updated", bob_copy["id"])
    ]


# 6. Writes take Windows zone names and only the IANA names Graph lists for
# dateTimeTimeZone; others answer 400 TimeZoneNotSupportedException.
# https://learn.microsoft.com/graph/api/resources/datetimetimezone?view=graph-rest-1.0
# ("Additional time zones"; "Methods such as create or update might not support all")


@pytest.mark.parametrize(
    "zone",
    ["W. Europe Standard Time", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"],
)
async def test_writes_take_windows_names_and_the_listed_iana_names(
    graph: GraphClient, zone: str
) -> None:
    created = await graph.post(
        f"{ALICE}/events", event_body("ok", "2025-06-02T09:00:00", "2025-06-02T10:00:00", zone)
    )
    assert created.status == 201, created.body


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "America/Toronto", "Asia/Calcutta"])
async def test_writes_refuse_iana_names_graph_does_not_list(graph: GraphClient, zone: str) -> None:
    event = await _event(graph)

    created = await graph.post(
        f"{ALICE}/events", event_body("x", "2025-06-02T09:00:00", "2025-06-02T10:00:00", zone)
    )
    patched = await graph.patch(
        _path(event["id"]),
        {"start": {"dateTime": "2025-06-02T08:00:00", "timeZone": zone}},
    )

    for answer in (created, patched):
        assert answer.status == 400
        assert answer.error_code == "TimeZoneNotSupportedException"
        assert zone in answer.body["error"]["message"]
    # Reads still take any zone the tz database knows (Prefer: outlook.timezone).
    read = await graph.get(_path(event["id"]), headers={"Prefer": f'outlook.timezone="{zone}"'})
    assert read.status == 200


async def test_the_kinder_option_writes_any_iana_zone(kinder: GraphClient) -> None:
    created = await kinder.post(
        f"{ALICE}/events",
        event_body("x", "2025-06-02T09:00:00", "2025-06-02T10:00:00", "Europe/Amsterdam"),
    )
    assert created.status == 201, created.body
