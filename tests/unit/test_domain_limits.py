"""Every limit of the domain models, on both sides of its boundary: the value at the
limit is accepted, one past it is refused with an error naming the field. Then the
domain's small rules (time ranges, freshness, claims' days, outbox leases) at theirs."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from shared.domain.base import DomainModel, UtcDatetime
from shared.domain.bookings import (
    MAX_BOOKING_DURATION,
    Booking,
    BookingRequest,
    BookingStatus,
    BookingWindow,
    OutboxMessage,
    TimeRange,
)
from shared.domain.calendar import (
    CalendarEvent,
    EventDraft,
    EventMapping,
    Sensitivity,
    SubscriptionRecord,
    Unavailability,
)
from shared.domain.claims import days_touched
from shared.domain.errors import (
    BeyondHorizon,
    DomainError,
    DurationTooLong,
    GraphThrottled,
    StartInPast,
)
from shared.domain.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    BookingEvent,
    EventChange,
    EventChanges,
    InboundBatch,
    PullBusyTime,
    PushBooking,
    ReconcilePage,
    WebhookDelivery,
)
from shared.domain.resources import ConnectionStatus, Direction, Resource, ResourceSettings
from shared.domain.sync_log import SyncLogEntry
from shared.services.live_check import LiveSlotCheck
from tests.builders import T0, booking, resource

NOW = "2030-01-07T09:00:00Z"
LATER = "2030-01-07T10:00:00Z"
CUSTOMER = {"name": "Ada", "email": "ada@example.com"}
REQUEST = {
    "resourceIds": ["room-1"],
    "start": NOW,
    "end": LATER,
    "title": "Intro call",
    "customer": CUSTOMER,
}
BOOKING = {**REQUEST, "bookingId": "bk-1", "createdAt": NOW, "updatedAt": NOW}
SETTINGS = {"mailbox": "room-1@contoso.com", "displayName": "Room 1"}
MAPPING = {"resourceId": "room-1", "bookingId": "bk-1", "mailbox": "room-1@contoso.com"}
BLOCK = {"resourceId": "room-1", "eventId": "ev-1", "start": NOW, "end": LATER, "showAs": "busy"}
DRAFT = {"subject": "s", "start": NOW, "end": LATER, "bookingId": "bk-1"}
CHANGE = {
    "subscriptionId": "sub-1",
    "resourceId": "room-1",
    "changeType": "updated",
    "eventId": "ev-1",
    "receivedAt": NOW,
}
CHANGES = {
    "kind": "event_changes",
    "subscriptionId": "sub-1",
    "resourceId": "room-1",
    "changes": [CHANGE],
}
EVENT = {
    "eventId": "bk-1.v1.created",
    "type": "booking.created",
    "bookingId": "bk-1",
    "occurredAt": NOW,
    "source": "api",
}
LOG = {"resourceId": "room-1", "at": NOW, "direction": "inbound", "action": "a", "outcome": "ok"}
PULL = {"resourceId": "room-1", "pullId": "pull-1", "sliceStart": NOW}
PAGE = {"roundAt": NOW, "resourceIds": ["room-1"]}


def text(length: int) -> str:
    return "x" * length


def email(length: int) -> str:
    """A well-formed address of exactly `length` characters."""
    return "a" * 64 + "@" + "b" * (length - 69) + ".com"


def ids(count: int) -> list[str]:
    return [f"r{i}" for i in range(count)]


def changes(count: int) -> list[dict[str, Any]]:
    return [{**CHANGE, "eventId": f"ev-{i}"} for i in range(count)]


# (model, a valid body, the field's wire name, the last value accepted, the first refused)
LIMITS: list[tuple[type[BaseModel], dict[str, Any], str, Any, Any]] = [
    (BookingRequest, REQUEST, "resourceIds", ids(1), []),
    (BookingRequest, REQUEST, "resourceIds", ids(20), ids(21)),
    (BookingRequest, REQUEST, "title", text(1), ""),
    (BookingRequest, REQUEST, "title", text(255), text(256)),
    (BookingRequest, REQUEST, "location", text(255), text(256)),
    (BookingRequest, REQUEST, "notes", text(4000), text(4001)),
    (BookingRequest, REQUEST, "externalId", text(1), ""),
    (BookingRequest, REQUEST, "externalId", text(200), text(201)),
    (BookingRequest, REQUEST, "customer", {**CUSTOMER, "name": text(1)}, {**CUSTOMER, "name": ""}),
    (
        BookingRequest,
        REQUEST,
        "customer",
        {**CUSTOMER, "name": text(200)},
        {**CUSTOMER, "name": text(201)},
    ),
    (
        BookingRequest,
        REQUEST,
        "customer",
        {**CUSTOMER, "email": email(320)},
        {**CUSTOMER, "email": email(321)},
    ),
    (Booking, BOOKING, "resourceIds", ids(1), []),
    (Booking, BOOKING, "resourceIds", ids(20), ids(21)),
    (Booking, BOOKING, "title", text(255), text(256)),
    (Booking, BOOKING, "title", text(1), ""),
    (Booking, BOOKING, "location", text(255), text(256)),
    (Booking, BOOKING, "notes", text(4000), text(4001)),
    (Booking, BOOKING, "externalId", text(200), text(201)),
    (Booking, BOOKING, "externalId", text(1), ""),
    (Booking, BOOKING, "version", 1, 0),
    (OutboxMessage, {"queue": "abc", "body": "{}"}, "queue", text(3), text(2)),
    (OutboxMessage, {"queue": "abc", "body": "{}"}, "queue", text(63), text(64)),
    (ResourceSettings, SETTINGS, "displayName", text(1), ""),
    (ResourceSettings, SETTINGS, "displayName", text(200), text(201)),
    (ResourceSettings, SETTINGS, "subjectTemplate", "x", ""),
    (ResourceSettings, SETTINGS, "bodyTemplate", "{notes}" + text(1993), "{notes}" + text(1994)),
    (ResourceSettings, SETTINGS, "mailbox", email(320), email(321)),
    (EventMapping, MAPPING, "bookingVersion", 0, -1),
    (EventMapping, MAPPING, "recreations", 0, -1),
    (Unavailability, BLOCK, "summary", text(500), text(501)),
    (EventDraft, DRAFT, "subject", text(255), text(256)),
    (EventDraft, DRAFT, "body", text(8000), text(8001)),
    (EventDraft, DRAFT, "location", text(255), text(256)),
    (PushBooking, {"bookingId": "bk-1", "bookingVersion": 1}, "bookingVersion", 1, 0),
    (EventChanges, CHANGES, "changes", changes(1), []),
    (EventChanges, CHANGES, "changes", changes(100), changes(101)),
    (InboundBatch, {"items": [CHANGES]}, "items", [CHANGES], []),
    (InboundBatch, {"items": [CHANGES]}, "items", [CHANGES] * 100, [CHANGES] * 101),
    (WebhookDelivery, {"event": EVENT}, "attempt", 1, 0),
    (SyncLogEntry, LOG, "action", text(100), text(101)),
    (SyncLogEntry, LOG, "detail", text(1000), text(1001)),
    (PullBusyTime, PULL, "sliceDays", 1, 0),
    # The timer sends one ReconcilePage per 100 resources (README, "Reconcile").
    (ReconcilePage, PAGE, "resourceIds", ids(1), []),
    (ReconcilePage, PAGE, "resourceIds", ids(100), ids(101)),
    (ConnectionStatus, {}, "failedRounds", 0, -1),
]


@pytest.mark.parametrize(
    ("model", "body", "field", "accepted", "refused"),
    LIMITS,
    ids=[f"{m.__name__}.{f}-{i}" for i, (m, _, f, _, _) in enumerate(LIMITS)],
)
def test_each_limit_accepts_its_boundary_and_names_the_field_past_it(
    model: type[BaseModel], body: dict[str, Any], field: str, accepted: Any, refused: Any
) -> None:
    model.model_validate({**body, field: accepted})

    with pytest.raises(ValidationError) as exc:
        model.model_validate({**body, field: refused})

    assert {str(e["loc"][0]) for e in exc.value.errors()} == {field}


def test_the_limits_are_the_documented_ones() -> None:
    assert MAX_CHANGES_PER_MESSAGE == 100
    # Queue Storage holds 64 KiB of text; base64 turns 3 bytes into 4.
    assert MAX_MESSAGE_BYTES * 4 // 3 == 64 * 1024


def test_a_booking_lasts_at_most_the_maximum_duration() -> None:
    start = datetime(2030, 1, 7, 9, tzinfo=UTC)
    window = BookingWindow(grace=timedelta(minutes=5), horizon_days=3650)
    longest = TimeRange(start=start, end=start + MAX_BOOKING_DURATION)
    window.check_booking(longest, start)

    with pytest.raises(DurationTooLong, match="at most 31 days"):
        window.check_booking(TimeRange(start=start, end=longest.end + timedelta(seconds=1)), start)

    assert timedelta(days=31) == MAX_BOOKING_DURATION


WINDOW = BookingWindow(grace=timedelta(minutes=5), horizon_days=90)
START = datetime(2030, 1, 7, 9, tzinfo=UTC)


def test_a_booking_may_start_up_to_the_grace_before_now_and_no_earlier() -> None:
    now = START + timedelta(minutes=5)
    WINDOW.check_booking(TimeRange(start=START, end=START + timedelta(hours=1)), now)

    late = now + timedelta(seconds=1)
    with pytest.raises(StartInPast) as refused:
        WINDOW.check_booking(TimeRange(start=START, end=START + timedelta(hours=1)), late)

    assert "more than 5 minutes before now" in str(refused.value)
    assert refused.value.details == [{"field": "start", "message": "in the past"}]


def test_a_booking_must_end_by_the_horizon() -> None:
    horizon = START + timedelta(days=90)
    WINDOW.check_booking(TimeRange(start=horizon - timedelta(hours=1), end=horizon), START)

    past = TimeRange(start=horizon - timedelta(hours=1), end=horizon + timedelta(seconds=1))
    with pytest.raises(BeyondHorizon, match="within the horizon of 90 days") as refused:
        WINDOW.check_booking(past, START)
    # An Outlook move is held to the horizon alone, by the same rule.
    with pytest.raises(BeyondHorizon):
        WINDOW.check_within_horizon(past, START)

    assert [d["field"] for d in refused.value.details] == ["end"]


def test_a_booking_window_cannot_be_changed_once_made() -> None:
    """One window is made per process and handed to every service that checks times."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        WINDOW.horizon_days = 3650  # type: ignore[misc]


@pytest.mark.parametrize("model", [BookingRequest, Booking, TimeRange])
@pytest.mark.parametrize("minutes", [0, -1])
def test_end_after_start_is_checked_by_every_model_with_a_range(
    model: type[BaseModel], minutes: int
) -> None:
    body = {TimeRange: {}, BookingRequest: REQUEST, Booking: BOOKING}[model]
    end = datetime(2030, 1, 7, 9, tzinfo=UTC) + timedelta(minutes=minutes)

    with pytest.raises(ValidationError, match="end must be after start"):
        model.model_validate({**body, "start": NOW, "end": end})


def test_the_primary_resource_is_the_first_named() -> None:
    panel = booking(resource_ids=["room-1", "alice", "bob"])
    assert panel.primary_resource_id == "room-1"
    assert panel.time_range == TimeRange(start=panel.start, end=panel.end)


def test_a_booking_is_past_from_its_end() -> None:
    b = booking()
    assert not b.is_in_past(b.end - timedelta(seconds=1))
    assert b.is_in_past(b.end)


@pytest.mark.parametrize(
    ("status", "holds"),
    [
        (BookingStatus.CONFIRMED, True),
        (BookingStatus.RESCHEDULED, True),
        (BookingStatus.CANCELLED, False),
    ],
)
def test_only_a_cancelled_booking_frees_its_time(status: BookingStatus, holds: bool) -> None:
    assert status.holds_time is holds


def test_an_outbox_message_is_held_for_another_only_while_its_claim_lasts() -> None:
    now = T0
    message = OutboxMessage(queue="sync-outbound", body="{}")
    held = message.model_copy(update={"claimed_by": "req-1", "claimed_until": now})

    assert not message.held_for_another("req-2", now)
    assert not held.held_for_another("req-2", now)  # its claim ends now
    assert held.held_for_another("req-2", now - timedelta(seconds=1))
    assert not held.held_for_another("req-1", now - timedelta(seconds=1))  # its own
    no_end = held.model_copy(update={"claimed_until": None})
    assert not no_end.held_for_another("req-2", now)


@pytest.mark.parametrize(
    ("direction", "pushes", "pulls"),
    [
        (Direction.BOTH, True, True),
        (Direction.OUT, True, False),
        (Direction.IN, False, True),
        (Direction.NONE, False, False),
    ],
)
def test_directions(direction: Direction, pushes: bool, pulls: bool) -> None:
    assert (direction.pushes, direction.pulls) == (pushes, pulls)


@pytest.mark.parametrize(
    ("sensitivity", "hides"),
    [
        (Sensitivity.NORMAL, False),
        (Sensitivity.PERSONAL, False),
        (Sensitivity.PRIVATE, True),
        (Sensitivity.CONFIDENTIAL, True),
    ],
)
def test_private_and_confidential_events_hide_their_details(
    sensitivity: Sensitivity, hides: bool
) -> None:
    assert sensitivity.hides_details is hides


def test_a_mirror_is_fresh_for_exactly_its_freshness_window() -> None:
    refreshed = resource().model_copy(
        update={"status": resource().status.model_copy(update={"mirror_refreshed_at": T0})}
    )
    assert refreshed.mirror_is_fresh(T0 + timedelta(minutes=60), 60)
    assert not refreshed.mirror_is_fresh(T0 + timedelta(minutes=60, seconds=1), 60)
    assert not resource().mirror_is_fresh(T0, 60)  # never pulled


def test_days_touched_excludes_the_end() -> None:
    midnight = datetime(2030, 1, 8, tzinfo=UTC)
    day = midnight.date()
    assert days_touched(T0, midnight) == [T0.date()]
    assert days_touched(T0, midnight + timedelta(microseconds=1)) == [T0.date(), day]
    assert days_touched(T0, midnight + timedelta(days=1, hours=1)) == [
        T0.date(),
        day,
        day + timedelta(days=1),
    ]


class _Moment(DomainModel):
    at: UtcDatetime


def test_times_are_kept_in_utc_to_the_second() -> None:
    parsed = _Moment.model_validate({"at": "2030-01-07T10:00:00.999999+01:00"})
    assert parsed.at == datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    assert parsed.at.tzinfo is UTC


# Table Storage's Edm.DateTime starts at 1601-01-01T00:00Z (README, "date-times").
@pytest.mark.parametrize(
    ("at", "accepted"),
    [
        ("1601-01-01T00:00:00Z", True),
        ("1601-01-01T01:00:00+01:00", True),
        ("1600-12-31T23:59:59Z", False),
        ("1601-01-01T00:30:00+01:00", False),
    ],
)
def test_no_time_before_what_table_storage_can_store(at: str, accepted: bool) -> None:
    if accepted:
        assert _Moment.model_validate({"at": at}).at == datetime(1601, 1, 1, tzinfo=UTC)
        return
    with pytest.raises(ValidationError) as exc:
        _Moment.model_validate({"at": at})
    [error] = exc.value.errors()
    assert error["loc"] == ("at",)
    assert "must not be before 1601-01-01T00:00:00+00:00" in error["msg"]


def test_a_time_before_year_one_in_utc_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        _Moment.model_validate({"at": "0001-01-01T00:30:00+01:00"})
    [error] = exc.value.errors()
    assert (error["loc"], error["msg"]) == (("at",), "Value error, is out of range in UTC")


@pytest.mark.parametrize("at", [1893488400, "1893488400", "next monday", "2030-01-07"])
def test_times_are_iso_8601_text_only(at: object) -> None:
    """Epoch numbers (which pydantic would take) and dates alone are refused, saying why."""
    with pytest.raises(ValidationError) as exc:
        _Moment.model_validate({"at": at})
    [error] = exc.value.errors()
    assert error["loc"] == ("at",)
    assert "must be an ISO 8601 date and time with an offset" in error["msg"]


@pytest.mark.parametrize(
    ("template", "accepted"),
    [
        ("{title} for {customerName}", True),
        ("{{literal braces}} {title}", True),
        ("no placeholder at all", True),
        ("{}", False),
        ("{0}", False),
        ("{title", False),
        ("{titel}", False),
    ],
)
def test_templates_use_named_known_placeholders_only(template: str, accepted: bool) -> None:
    body = {**SETTINGS, "subjectTemplate": template}
    if accepted:
        assert ResourceSettings.model_validate(body).subject_template == template
        return
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate(body)
    [error] = exc.value.errors()
    assert error["loc"] == ("subjectTemplate",)
    # The message names what is wrong.
    if template == "{titel}":
        assert f"unknown placeholder {template};" in error["msg"]
        assert "allowed: {bookingId}, {customerEmail}," in error["msg"]
    else:
        assert f"'{template}' is not a plain placeholder" in error["msg"]


@pytest.mark.parametrize(
    "zone", ["right/Europe/London", "posix/Europe/London", "posixrules", "Europe/london"]
)
def test_only_iana_zone_names_are_accepted(zone: str) -> None:
    """Some names load as zones but are not IANA names ("right/..." counts leap seconds)."""
    with pytest.raises(ValidationError, match="is not an IANA time zone"):
        ResourceSettings.model_validate({**SETTINGS, "timeZone": zone})
    assert ResourceSettings.model_validate({**SETTINGS, "timeZone": "Europe/London"})


def test_emails_are_checked_and_lowercased() -> None:
    settings = ResourceSettings.model_validate({**SETTINGS, "mailbox": " Room-1@Contoso.COM "})
    assert settings.mailbox == "room-1@contoso.com"
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate({**SETTINGS, "mailbox": "room-1.contoso.com"})
    [error] = exc.value.errors()
    assert error["loc"] == ("mailbox",)


@pytest.mark.parametrize(
    "mailbox",
    ["room 1@contoso.com", "room-1@contoso", "room@1@contoso.com", "room\x1f1@contoso.com"],
)
def test_an_address_with_a_space_or_separator_is_refused(mailbox: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate({**SETTINGS, "mailbox": mailbox})
    [error] = exc.value.errors()
    assert error["loc"] == ("mailbox",)


def test_a_subscriptions_client_state_is_revealed_only_to_storage() -> None:
    record = SubscriptionRecord(
        subscription_id="sub-1",
        resource_id="room-1",
        mailbox="room-1@contoso.com",
        client_state=SecretStr("s3cret-state"),
        expires_at=T0,
        created_at=T0,
    )
    assert "s3cret-state" not in record.model_dump_json()
    assert "s3cret-state" in record.model_dump_json(context={"reveal_secrets": True})
    assert "s3cret-state" not in record.model_dump_json(context={"reveal_secrets": False})


def test_domain_errors_keep_their_details() -> None:
    assert DomainError("plain").details == []
    detail = [{"field": "start", "message": "bad"}]
    assert DomainError("with", details=detail).details == detail
    throttled = GraphThrottled("slow down", retry_after_seconds=7)
    assert (throttled.message, throttled.retry_after_seconds, throttled.details) == (
        "slow down",
        7,
        [],
    )


def test_calendar_events_and_booking_events_round_trip_by_their_wire_names() -> None:
    event = CalendarEvent.model_validate(
        {"eventId": "ev-1", "start": NOW, "end": LATER, "changeKey": "ck"}
    )
    assert event.change_key == "ck"
    published = BookingEvent.model_validate(EVENT)
    assert BookingEvent.model_validate_json(published.model_dump_json()) == published
    change = EventChange.model_validate(CHANGE)
    assert change.change_key is None
    assert Resource.model_validate_json(resource().model_dump_json()) == resource()


def test_flags_default_to_the_safe_side() -> None:
    settings = ResourceSettings.model_validate(SETTINGS)
    assert (settings.active, settings.block_working_elsewhere) == (True, False)
    new = EventMapping.model_validate(MAPPING)
    assert (new.detached, new.booking_version, new.recreations) == (False, 0, 0)
    assert WebhookDelivery.model_validate({"event": EVENT}).attempt == 1
    block = Unavailability.model_validate(BLOCK)
    assert (block.is_all_day, block.private) == (False, False)
    event = CalendarEvent.model_validate({"eventId": "ev-1", "start": NOW, "end": LATER})
    assert (event.is_all_day, event.is_cancelled) == (False, False)
    assert PushBooking(booking_id="bk-1", booking_version=1).include_past is False
    # A resource starts with no failed round and no round put off.
    status = ConnectionStatus.model_validate({})
    assert (status.failed_rounds, status.retry_at) == (0, None)


def test_the_live_look_at_a_slot_is_on_unless_turned_off() -> None:
    """README: `liveSlotCheck: false` on a resource turns the look off; it is on otherwise."""
    settings = ResourceSettings.model_validate(SETTINGS)
    made = Resource(resource_id="room-1", settings=settings, created_at=T0, updated_at=T0)
    assert LiveSlotCheck.applies_to(made)
    off = ResourceSettings.model_validate({**SETTINGS, "liveSlotCheck": False})
    assert not LiveSlotCheck.applies_to(made.model_copy(update={"settings": off}))


def test_a_pull_message_without_a_slice_length_pulls_a_week() -> None:
    """README: the busy time is pulled a slice per message, a week at first."""
    work = PullBusyTime.model_validate(PULL)
    assert timedelta(days=work.slice_days) == timedelta(weeks=1)


def test_models_speak_camel_case_on_the_wire_and_snake_case_in_python() -> None:
    published = BookingEvent.model_validate(EVENT)
    assert set(json.loads(published.model_dump_json())) == {
        "eventId",
        "type",
        "bookingId",
        "occurredAt",
        "source",
        "data",
    }
    by_name = BookingEvent(
        event_id="e", type="booking.created", booking_id="bk-1", occurred_at=T0, source="api"
    )
    assert by_name.booking_id == "bk-1"


def test_models_are_immutable_and_strip_their_strings() -> None:
    parsed = BookingRequest.model_validate({**REQUEST, "title": "  Intro call  "})
    assert parsed.title == "Intro call"
    with pytest.raises(ValidationError, match="frozen"):
        parsed.title = "Changed"  # type: ignore[misc]
