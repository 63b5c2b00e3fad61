"""Writing and reading our events: round trip, explicit time zones, transactionId,
our extended property and nothing foreign in `list_our_events`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from local.graph_emulator import start_emulator
from shared.adapters.graph import BOOKING_ID_PROPERTY, GraphCalendarGateway, StaticTokenCredential
from shared.domain.calendar import CalendarEvent, EventDraft, EventType, ShowAs
from shared.domain.errors import GraphAccessDenied
from shared.ports import EventWrite
from tests.gateway.conftest import ALICE, BOB, FAST_RETRY, EmulatorControl

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def draft(booking_id: str, start: datetime = START, **changes: object) -> EventDraft:
    values: dict[str, object] = {
        "subject": f"Booking {booking_id}",
        "body": "Booked through the booking system.",
        "location": "Room 1",
        "start": start,
        "end": start + timedelta(hours=1),
        "time_zone": "Europe/Berlin",
        "booking_id": booking_id,
    }
    values.update(changes)
    return EventDraft.model_validate(values)


async def test_event_round_trip(gateway: GraphCalendarGateway, control: EmulatorControl) -> None:
    created = await gateway.create_event(ALICE, draft("bk-1"), transaction_id="tx-bk-1")
    assert created.booking_id == "bk-1"
    assert (created.start, created.end) == (START, START + timedelta(hours=1))
    assert created.change_key

    # Written with the draft's zone as wall time, not as UTC.
    raw = await control.graph("GET", f"/users/{ALICE}/events/{quote(created.event_id, safe='')}")
    assert raw["start"]["timeZone"] == "UTC"  # read back in UTC: nothing asked otherwise
    assert raw["originalStartTimeZone"] == "W. Europe Standard Time"  # Windows name (CLDR)
    assert raw["transactionId"] == "tx-bk-1"

    fetched = await gateway.get_event(ALICE, created.event_id)
    assert fetched is not None
    assert fetched.booking_id == "bk-1"
    assert fetched.type is EventType.SINGLE_INSTANCE
    assert fetched.show_as is ShowAs.BUSY
    assert fetched.subject == "Booking bk-1"

    later = START + timedelta(days=1, hours=2)
    updated = await gateway.update_event(
        ALICE, created.event_id, draft("bk-1", later, subject="Moved", show_as=ShowAs.TENTATIVE)
    )
    assert updated.event_id == created.event_id
    assert updated.change_key != created.change_key
    assert updated.start == later
    assert updated.show_as is ShowAs.TENTATIVE

    again = await gateway.get_event(ALICE, created.event_id)
    assert again is not None
    assert (again.subject, again.start, again.booking_id) == ("Moved", later, "bk-1")
    assert await gateway.find_events_for_booking(ALICE, "bk-1") == [again]

    await gateway.delete_event(ALICE, created.event_id)
    assert await gateway.get_event(ALICE, created.event_id) is None
    await gateway.delete_event(ALICE, created.event_id)  # idempotent
    assert await gateway.find_events_for_booking(ALICE, "bk-1") == []


async def test_a_repeated_create_with_the_same_transaction_id_makes_one_event(
    gateway: GraphCalendarGateway,
) -> None:
    first = await gateway.create_event(ALICE, draft("bk-2"), transaction_id="tx-bk-2")
    second = await gateway.create_event(ALICE, draft("bk-2"), transaction_id="tx-bk-2")

    assert second.event_id == first.event_id
    assert [e.event_id for e in await gateway.list_our_events(ALICE)] == [first.event_id]


async def test_list_our_events_never_returns_a_foreign_event(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    ours = [
        await gateway.create_event(ALICE, draft(f"bk-{n}", START + timedelta(days=n)), f"tx-{n}")
        for n in range(12)  # more than one page of the emulator's default page size
    ]
    foreign_property = BOOKING_ID_PROPERTY.replace("BookingId", "OtherId")
    window = {"dateTime": "2030-03-05T12:00:00", "timeZone": "UTC"}
    for body in (
        {"subject": "Lunch"},
        {
            "subject": "Other app",
            "singleValueExtendedProperties": [{"id": foreign_property, "value": "bk-1"}],
        },
        {
            "subject": "Emptied",
            "singleValueExtendedProperties": [{"id": BOOKING_ID_PROPERTY, "value": ""}],
        },
    ):
        await control.graph(
            "POST", f"/users/{ALICE}/events", {**body, "start": window, "end": window}
        )

    listed = await gateway.list_our_events(ALICE)

    assert sorted(e.event_id for e in listed) == sorted(e.event_id for e in ours)
    assert {e.booking_id for e in listed} == {f"bk-{n}" for n in range(12)}
    assert await gateway.find_events_for_booking(ALICE, "bk-404") == []


async def test_all_day_event_reads_as_utc_midnights(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.graph(
        "POST",
        f"/users/{ALICE}/events",
        {
            "subject": "Holiday",
            "isAllDay": True,
            "showAs": "oof",
            "sensitivity": "private",
            "start": {"dateTime": "2030-03-06T00:00:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2030-03-07T00:00:00", "timeZone": "Europe/Berlin"},
        },
    )

    (event,) = await gateway.calendar_view(ALICE, START, START + timedelta(days=5))

    assert event.is_all_day
    assert (event.start, event.end) == (
        datetime(2030, 3, 6, tzinfo=UTC),
        datetime(2030, 3, 7, tzinfo=UTC),
    )
    assert event.show_as is ShowAs.OOF
    assert event.sensitivity.hides_details
    assert event.booking_id is None


async def test_a_time_zone_graph_refuses_is_written_in_utc(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    refusal = {"status": 400, "code": "TimeZoneNotSupportedException", "count": 1}
    await control.add_fault(mailbox=ALICE, pathContains="/events", **refusal)

    created = await gateway.create_event(ALICE, draft("bk-tz"), transaction_id="tx-tz")

    raw = await control.graph("GET", f"/users/{ALICE}/events/{quote(created.event_id, safe='')}")
    assert raw["originalStartTimeZone"] == "UTC"
    assert (created.start, created.end) == (START, START + timedelta(hours=1))

    await control.add_fault(mailbox=BOB, pathContains="/events", **refusal)
    writes = [
        EventWrite(mailbox=BOB, op="create", draft=draft(f"bk-{n}"), transaction_id=f"tx-{n}")
        for n in range(3)
    ]
    results = await gateway.write_batch(writes)
    assert [r.error for r in results] == [None] * 3
    assert [r.event.start for r in results if r.event] == [START] * 3
    # Never silently: the refused write's result names the zone (the fault refuses one).
    assert [r.refused_time_zone for r in results] == ["W. Europe Standard Time", None, None]


@pytest.mark.parametrize("zone", ["America/Scoresbysund", "Antarctica/Casey", "Antarctica/Vostok"])
async def test_a_zone_whose_windows_name_keeps_other_rules_is_not_written_under_it(
    gateway: GraphCalendarGateway, control: EmulatorControl, zone: str
) -> None:
    # CLDR's table names "Azores Standard Time" for Scoresbysund, which has kept UTC-2
    # since 2024 while the Azores keep UTC-1 (tzdata 2023d); Casey and Vostok changed too.
    # Written under that Windows name, Graph would place the booking an hour or more off.
    created = await gateway.create_event(ALICE, draft("bk-zone", time_zone=zone), "tx-zone")

    raw = await control.graph("GET", f"/users/{ALICE}/events/{quote(created.event_id, safe='')}")
    assert raw["start"]["dateTime"].startswith("2030-03-04T09:00:00")  # read in UTC
    assert (created.start, created.end) == (START, START + timedelta(hours=1))


@pytest.mark.parametrize("zone", ["GMT", "Etc/Zulu", "UCT", "Etc/GMT-0"])
async def test_the_other_names_of_utc_are_written_as_utc_without_a_refusal(
    gateway: GraphCalendarGateway, control: EmulatorControl, zone: str
) -> None:
    # IANA names of UTC that CLDR gives no Windows name and Graph does not list: written
    # as they are, every booking of such a room would be refused and carry a warning.
    write = EventWrite(
        mailbox=ALICE, op="create", draft=draft("bk-utc", time_zone=zone), transaction_id="tx-u"
    )

    [result] = await gateway.write_batch([write])

    assert result.error is None
    assert result.refused_time_zone is None
    assert result.event is not None
    assert (result.event.start, result.event.end) == (START, START + timedelta(hours=1))


async def test_an_event_in_deleted_items_reads_as_gone(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    kept = await gateway.create_event(ALICE, draft("bk-kept"), transaction_id="tx-kept")
    deleted = await gateway.create_event(ALICE, draft("bk-del"), transaction_id="tx-del")
    path = f"/users/{ALICE}/events/{quote(deleted.event_id, safe='')}"
    await control.graph("DELETE", path)  # the Outlook user deletes it

    # Graph still returns it by its immutable id, from Deleted Items.
    raw = await control.graph("GET", path)
    assert raw["id"] == deleted.event_id
    assert await gateway.get_event(ALICE, deleted.event_id) is None
    assert await gateway.find_events_for_booking(ALICE, "bk-del") == []
    assert [e.event_id for e in await gateway.list_our_events(ALICE)] == [kept.event_id]
    assert await gateway.get_event(ALICE, kept.event_id) is not None
    read = await gateway.get_events(ALICE, [kept.event_id, deleted.event_id])
    assert read[deleted.event_id] is None
    assert read[kept.event_id] is not None
    # The calendar's id is read at most once per mailbox (the gateway lives for the session).
    assert await control.request_count("GET", "/users/{id}/calendar", ALICE) <= 1


@pytest.mark.parametrize("parent_folder_id", [False, True], ids=["as-graph", "kinder"])
async def test_an_event_in_deleted_items_reads_as_gone_with_or_without_parent_folder_id(
    parent_folder_id: bool,
) -> None:
    running = await start_emulator(mailboxes=[ALICE], event_parent_folder_id=parent_folder_id)
    gateway = GraphCalendarGateway.connect(
        running.graph_url, StaticTokenCredential(), retry=FAST_RETRY
    )
    try:
        kept = await gateway.create_event(ALICE, draft("bk-kept"), transaction_id="tx-kept")
        deleted = await gateway.create_event(ALICE, draft("bk-del"), transaction_id="tx-del")
        await gateway.delete_event(ALICE, deleted.event_id)  # to Deleted Items

        assert await gateway.get_event(ALICE, deleted.event_id) is None
        read = await gateway.get_events(ALICE, [kept.event_id, deleted.event_id])
        assert read[deleted.event_id] is None
        assert read[kept.event_id] is not None
        assert [e.event_id for e in await gateway.list_our_events(ALICE)] == [kept.event_id]
    finally:
        await gateway.close()
        await running.close()


async def test_a_doubt_about_the_calendar_is_an_error_not_a_delete(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    event = await gateway.create_event(ALICE, draft("bk-doubt"), transaction_id="tx-doubt")
    # The read by id works; looking for it in the calendar is refused.
    await control.add_fault(
        mailbox=ALICE, pathContains="/calendar/events", status=403, code="ErrorAccessDenied"
    )

    with pytest.raises(GraphAccessDenied):
        await gateway.get_events(ALICE, [event.event_id])
    # A notification's read does not ask: Graph's answer is taken as it is.
    read = await gateway.read_events(ALICE, [event.event_id])
    assert isinstance(read[event.event_id], CalendarEvent)


async def test_a_batch_read_answers_each_event_with_its_own_failure(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    first = await gateway.create_event(ALICE, draft("bk-a"), transaction_id="tx-a")
    second = await gateway.create_event(ALICE, draft("bk-b"), transaction_id="tx-b")
    # The second event's read is refused (403 is not retried); the first's is not.
    await control.add_fault(
        mailbox=ALICE, pathContains=second.event_id[-12:], status=403, code="ErrorAccessDenied"
    )

    read = await gateway.read_events(ALICE, [first.event_id, second.event_id])

    first_read = read[first.event_id]
    assert isinstance(first_read, CalendarEvent)
    assert first_read.booking_id == "bk-a"
    assert isinstance(read[second.event_id], GraphAccessDenied)


async def test_one_event_is_read_with_a_plain_get_not_a_batch(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    created = await gateway.create_event(ALICE, draft("bk-one"), transaction_id="tx-one")
    batches = await control.request_count("POST", "/$batch")

    read = await gateway.read_events(ALICE, [created.event_id])

    found = read[created.event_id]
    assert isinstance(found, CalendarEvent)
    assert found.booking_id == "bk-one"
    assert await control.request_count("POST", "/$batch") == batches
