"""Event CRUD as Graph does it: ids, changeKeys, transactionId, extended properties."""

from __future__ import annotations

from urllib.parse import quote

from local.graph_emulator import RunningEmulator
from tests.emulator.support import BOOKING_PROPERTY, GraphClient, event_body

ALICE = "/users/alice@contoso.com"


async def test_user_lookup_by_upn_and_id_and_unknown_mailbox(graph: GraphClient) -> None:
    user = await graph.get(ALICE)
    assert user.status == 200
    assert user.body["userPrincipalName"] == "alice@contoso.com"

    by_id = await graph.get(f"/users/{user.body['id']}")
    assert by_id.status == 200
    assert by_id.body["mail"] == "alice@contoso.com"

    missing = await graph.get("/users/nobody@contoso.com")
    assert missing.status == 404
    assert missing.error_code == "Request_ResourceNotFound"
    no_mailbox_events = await graph.get("/users/nobody@contoso.com/events")
    assert no_mailbox_events.status == 404
    assert no_mailbox_events.error_code == "ResourceNotFound"


async def test_event_round_trip_changes_change_key_on_every_write(graph: GraphClient) -> None:
    created = await graph.post(
        f"{ALICE}/events",
        event_body(
            "Planning",
            "2025-06-02T09:00:00",
            "2025-06-02T10:00:00",
            "Europe/Paris",
            showAs="tentative",
            sensitivity="private",
            body={"contentType": "text", "content": "Agenda"},
            location={"displayName": "Room 1"},
        ),
    )
    assert created.status == 201
    event = created.body
    assert event["type"] == "singleInstance"
    assert event["@odata.etag"] == f'W/"{event["changeKey"]}"'
    # A create is answered in the zone it was written in (docs issue #116).
    assert event["start"] == {"dateTime": "2025-06-02T09:00:00.0000000", "timeZone": "Europe/Paris"}
    assert event["originalStartTimeZone"] == "Europe/Paris"
    assert event["iCalUId"]
    assert event["createdDateTime"].endswith("Z")

    path = f"{ALICE}/events/{quote(event['id'], safe='')}"
    fetched = await graph.get(path)
    assert fetched.body["changeKey"] == event["changeKey"]
    # Stored in UTC, read in UTC without a Prefer header.
    assert fetched.body["start"] == {"dateTime": "2025-06-02T07:00:00.0000000", "timeZone": "UTC"}
    assert fetched.body["showAs"] == "tentative"
    assert fetched.body["sensitivity"] == "private"
    assert fetched.body["location"]["displayName"] == "Room 1"

    patched = await graph.patch(path, {"subject": "Planning v2", "showAs": "busy"})
    assert patched.status == 200
    assert patched.body["id"] == event["id"]
    assert patched.body["changeKey"] != event["changeKey"]
    assert patched.body["subject"] == "Planning v2"

    moved = await graph.patch(
        path,
        {
            "start": {"dateTime": "2025-06-02T11:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2025-06-02T12:00:00", "timeZone": "UTC"},
        },
    )
    assert moved.body["changeKey"] not in (event["changeKey"], patched.body["changeKey"])
    assert moved.body["start"]["dateTime"] == "2025-06-02T11:00:00.0000000"

    stale = await graph.patch(
        path, {"subject": "x"}, headers={"If-Match": f'W/"{event["changeKey"]}"'}
    )
    assert stale.status == 412

    # DELETE moves it to Deleted Items; deleting it there purges it.
    assert (await graph.delete(path)).status == 204
    assert (await graph.get(path)).status == 200
    assert (await graph.delete(path)).status == 204
    gone = await graph.get(path)
    assert gone.status == 404
    assert gone.error_code == "ErrorItemNotFound"
    assert (await graph.delete(path)).status == 404


async def test_validation_errors_look_like_graph(graph: GraphClient) -> None:
    unknown_property = await graph.post(
        f"{ALICE}/events", event_body("x", "2025-06-02T09:00:00", "2025-06-02T10:00:00", foo=1)
    )
    assert unknown_property.status == 400
    assert unknown_property.error_code == "RequestBodyRead"
    bad_enum = await graph.post(
        f"{ALICE}/events",
        event_body("x", "2025-06-02T09:00:00", "2025-06-02T10:00:00", showAs="sleeping"),
    )
    assert bad_enum.status == 400
    bad_zone = await graph.post(
        f"{ALICE}/events",
        event_body("x", "2025-06-02T09:00:00", "2025-06-02T10:00:00", "Mars/Base"),
    )
    assert bad_zone.error_code == "TimeZoneNotSupportedException"
    windows_zone = await graph.post(
        f"{ALICE}/events",
        event_body("x", "2025-01-02T09:00:00", "2025-01-02T10:00:00", "Pacific Standard Time"),
    )
    assert windows_zone.body["start"] == {
        "dateTime": "2025-01-02T09:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
    # Stored in UTC: a GET without a Prefer header answers in UTC.
    path = f"{ALICE}/events/{quote(windows_zone.body['id'], safe='')}"
    assert (await graph.get(path)).body["start"]["dateTime"] == "2025-01-02T17:00:00.0000000"


async def test_transaction_id_makes_a_retried_create_a_no_op(
    graph: GraphClient, emulator: RunningEmulator
) -> None:
    body = event_body(
        "Booking", "2025-06-03T09:00:00", "2025-06-03T10:00:00", transactionId="txn-1"
    )
    first = await graph.post(f"{ALICE}/events", body)
    second = await graph.post(f"{ALICE}/events", {**body, "subject": "changed"})
    assert first.status == second.status == 201
    assert second.body["id"] == first.body["id"]
    assert second.body["subject"] == "Booking"
    assert len(emulator.state.mailboxes["alice@contoso.com"].events) == 1
    # Another mailbox has its own transaction ids.
    other = await graph.post("/users/bob@contoso.com/events", body)
    assert other.body["id"] != first.body["id"]


async def test_extended_property_filter_and_expand(graph: GraphClient) -> None:
    for booking in ("b-1", "b-2"):
        await graph.post(
            f"{ALICE}/events",
            event_body(
                f"Booking {booking}",
                "2025-06-04T09:00:00",
                "2025-06-04T10:00:00",
                singleValueExtendedProperties=[{"id": BOOKING_PROPERTY, "value": booking}],
            ),
        )
    await graph.post(
        f"{ALICE}/events", event_body("Private", "2025-06-04T11:00:00", "2025-06-04T12:00:00")
    )

    wanted = (
        f"singleValueExtendedProperties/any(ep: ep/id eq '{BOOKING_PROPERTY}' "
        "and ep/value eq 'B-2')"
    )
    found = await graph.get(
        f"{ALICE}/events",
        params={
            "$filter": wanted,
            "$expand": f"singleValueExtendedProperties($filter=id eq '{BOOKING_PROPERTY}')",
        },
    )
    assert found.status == 200
    assert [e["subject"] for e in found.body["value"]] == ["Booking b-2"]
    assert found.body["value"][0]["singleValueExtendedProperties"] == [
        {"id": BOOKING_PROPERTY, "value": "b-2"}
    ]

    ours = await graph.get(
        f"{ALICE}/events",
        params={"$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{BOOKING_PROPERTY}')"},
    )
    assert sorted(e["subject"] for e in ours.body["value"]) == ["Booking b-1", "Booking b-2"]
    assert "singleValueExtendedProperties" not in ours.body["value"][0]

    # The Name part of a property id is case-sensitive, the GUID is not.
    other_case = BOOKING_PROPERTY.replace("BookingId", "bookingid")
    none = await graph.get(
        f"{ALICE}/events",
        params={"$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{other_case}')"},
    )
    assert none.body["value"] == []

    bad = await graph.get(f"{ALICE}/events", params={"$filter": "subject has 'x'"})
    assert bad.status == 400
    assert bad.error_code == "ErrorInvalidUrlQueryFilter"


async def test_list_select_top_and_paging(graph: GraphClient) -> None:
    for day in range(1, 6):
        await graph.post(
            f"{ALICE}/events",
            event_body(f"E{day}", f"2025-07-0{day}T09:00:00", f"2025-07-0{day}T10:00:00"),
        )
    page = await graph.get(
        f"{ALICE}/events", params={"$top": "2", "$select": "subject", "$orderby": "start/dateTime"}
    )
    subjects = [e["subject"] for e in page.body["value"]]
    assert subjects == ["E1", "E2"]
    assert set(page.body["value"][0]) == {"@odata.etag", "id", "subject"}
    link = page.body["@odata.nextLink"]
    while link:
        more = await graph.get(link)
        subjects += [e["subject"] for e in more.body["value"]]
        link = more.body.get("@odata.nextLink")
    assert subjects == ["E1", "E2", "E3", "E4", "E5"]
