"""Bad domain input is rejected with a message that names the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.bookings import BookingRequest, TimeRange
from shared.domain.resources import (
    ChangeKind,
    Direction,
    ResourceSettings,
)


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceIds": ["room-1"],
        "start": "2030-01-07T09:00:00+01:00",
        "end": "2030-01-07T10:00:00+01:00",
        "title": "Intro call",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    }
    body.update(overrides)
    return body


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.value.errors()}


def test_valid_request_is_stored_in_utc() -> None:
    parsed = BookingRequest.model_validate(request_body())
    assert parsed.start == datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
    assert parsed.start.utcoffset() is not None
    assert parsed.start.tzinfo == UTC


def test_end_before_start_is_rejected() -> None:
    with pytest.raises(ValidationError, match="end must be after start"):
        BookingRequest.model_validate(request_body(end="2030-01-07T08:00:00+01:00"))


def test_end_equal_to_start_is_rejected() -> None:
    with pytest.raises(ValidationError, match="end must be after start"):
        TimeRange.model_validate({"start": "2030-01-07T09:00Z", "end": "2030-01-07T09:00Z"})


@pytest.mark.parametrize("field", ["start", "end"])
def test_datetime_without_offset_is_rejected_naming_the_field(field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(**{field: "2030-01-07T09:00:00"}))
    assert field in error_fields(exc)
    assert "timezone" in str(exc.value)


def test_unknown_direction_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate(
            {"mailbox": "room@contoso.com", "displayName": "Room", "direction": "sideways"}
        )
    assert error_fields(exc) == {"direction"}
    assert "'in', 'out', 'both' or 'none'" in str(exc.value)


def test_over_long_title_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(title="x" * 256))
    assert error_fields(exc) == {"title"}
    assert "at most 255 characters" in str(exc.value)


def test_more_than_twenty_resources_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(resourceIds=[f"r{i}" for i in range(21)]))
    assert error_fields(exc) == {"resourceIds"}


def test_repeated_resource_is_rejected() -> None:
    with pytest.raises(ValidationError, match="must not repeat"):
        BookingRequest.model_validate(request_body(resourceIds=["a", "a"]))


@pytest.mark.parametrize("bad_id", ["", "a/b", "a#b", "x" * 65, "a b"])
def test_resource_ids_must_be_safe_keys(bad_id: str) -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(resourceIds=[bad_id]))
    assert error_fields(exc) == {"resourceIds.0"}


def test_bad_customer_email_names_the_nested_field() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(customer={"name": "Ada", "email": "nope"}))
    assert error_fields(exc) == {"customer.email"}


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(colour="red"))
    assert error_fields(exc) == {"colour"}


def test_resource_settings_defaults_follow_the_product() -> None:
    settings = ResourceSettings.model_validate(
        {"mailbox": "Room@Contoso.com", "displayName": "Room"}
    )
    assert settings.mailbox == "room@contoso.com"
    assert settings.direction is Direction.BOTH
    assert settings.inbound_changes == frozenset(ChangeKind)
    assert settings.on_outlook_delete.value == "ignore"
    assert settings.on_outlook_move.value == "ignore"
    assert settings.subject_template == "{title}"
    assert settings.block_working_elsewhere is False


def test_template_with_unknown_placeholder_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate(
            {"mailbox": "r@contoso.com", "displayName": "R", "subjectTemplate": "{titel}"}
        )
    assert error_fields(exc) == {"subjectTemplate"}
    assert "{titel}" in str(exc.value)


def test_accessplanit_style_subject_template_is_expressible() -> None:
    settings = ResourceSettings.model_validate(
        {"mailbox": "r@contoso.com", "displayName": "R", "subjectTemplate": "Training: {title}"}
    )
    assert settings.subject_template == "Training: {title}"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "GMT+25", "../etc/passwd"])
def test_time_zone_must_be_iana(zone: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ResourceSettings.model_validate(
            {"mailbox": "r@contoso.com", "displayName": "R", "timeZone": zone}
        )
    assert error_fields(exc) == {"timeZone"}


def test_touching_ranges_do_not_overlap() -> None:
    a = TimeRange.model_validate({"start": "2030-01-07T09:00Z", "end": "2030-01-07T10:00Z"})
    b = TimeRange.model_validate({"start": "2030-01-07T10:00Z", "end": "2030-01-07T11:00Z"})
    c = TimeRange.model_validate({"start": "2030-01-07T09:59Z", "end": "2030-01-07T11:00Z"})
    assert not a.overlaps(b)
    assert a.overlaps(c)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"title": "Intro\x00call"}, "title"),
        ({"notes": "line\x0bbreak"}, "notes"),
        ({"location": "Room\x1f1"}, "location"),
        ({"title": "Intro\ufffe"}, "title"),
        ({"customer": {"name": "Ada\x07", "email": "ada@example.com"}}, "customer"),
        ({"externalId": "crm\x00-42"}, "externalId"),
    ],
)
def test_control_characters_in_text_written_to_events_are_refused(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        BookingRequest.model_validate(request_body(**override))
    assert error_fields(exc) == {field}
    assert "control characters" in str(exc.value)


def test_tabs_and_line_breaks_in_notes_are_kept() -> None:
    request = BookingRequest.model_validate(request_body(notes="a\tb\r\nc\nd"))
    assert request.notes == "a\tb\r\nc\nd"
