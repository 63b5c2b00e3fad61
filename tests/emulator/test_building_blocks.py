"""The emulator's pure parts: recurrence expansion, Prefer and $filter parsing, the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from local.graph_emulator.__main__ import build_parser, config_from
from local.graph_emulator.errors import GraphError
from local.graph_emulator.odata import normalize_property_id, parse_filter, parse_prefer
from local.graph_emulator.recurrence import normalize_recurrence, occurrence_starts
from local.graph_emulator.state import EventRecord


def _starts(recurrence: dict[str, object], first: datetime, zone: str) -> list[str]:
    normalized = normalize_recurrence(recurrence, first, zone)
    return [
        s.strftime("%Y-%m-%d %H:%M")
        for s in occurrence_starts(
            normalized, first, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
        )
    ]


def test_relative_monthly_last_friday_and_yearly() -> None:
    first = datetime(2025, 1, 31, 15, 0, tzinfo=UTC)
    last_friday = {
        "pattern": {"type": "relativeMonthly", "daysOfWeek": ["friday"], "index": "last"},
        "range": {"type": "numbered", "startDate": "2025-01-31", "numberOfOccurrences": 3},
    }
    assert _starts(last_friday, first, "UTC") == [
        "2025-01-31 15:00",
        "2025-02-28 15:00",
        "2025-03-28 15:00",
    ]
    yearly = {
        "pattern": {"type": "absoluteYearly", "month": 3, "dayOfMonth": 15},
        "range": {"type": "noEnd", "startDate": "2025-03-15"},
    }
    assert _starts(yearly, datetime(2025, 3, 15, 9, tzinfo=UTC), "UTC") == ["2025-03-15 09:00"]


def test_weekly_pattern_respects_interval_days_and_end_date() -> None:
    every_other_week = {
        "pattern": {"type": "weekly", "interval": 2, "daysOfWeek": ["tuesday", "thursday"]},
        "range": {"type": "endDate", "startDate": "2025-01-06", "endDate": "2025-01-31"},
    }
    assert _starts(every_other_week, datetime(2025, 1, 6, 8, tzinfo=UTC), "UTC") == [
        "2025-01-07 08:00",
        "2025-01-09 08:00",
        "2025-01-21 08:00",
        "2025-01-23 08:00",
    ]


def test_invalid_recurrence_is_a_graph_400() -> None:
    with pytest.raises(GraphError) as raised:
        normalize_recurrence(
            {"pattern": {"type": "weekly"}, "range": {"type": "noEnd"}},
            datetime(2025, 1, 1, tzinfo=UTC),
            "UTC",
        )
    assert raised.value.status == 400


def test_prefer_headers_combine_and_unquote() -> None:
    prefs = parse_prefer(
        ['outlook.timezone="W. Europe Standard Time", IdType="ImmutableId"', "odata.maxpagesize=5"]
    )
    assert prefs == {
        "outlook.timezone": "W. Europe Standard Time",
        "idtype": "ImmutableId",
        "odata.maxpagesize": "5",
    }


def test_filter_language() -> None:
    record = EventRecord(
        id="e1",
        ical_uid="u",
        change_key="k",
        created=datetime(2025, 1, 1, tzinfo=UTC),
        last_modified=datetime(2025, 1, 1, tzinfo=UTC),
        start=datetime(2025, 1, 2, 9, tzinfo=UTC),
        end=datetime(2025, 1, 2, 10, tzinfo=UTC),
        start_zone="UTC",
        end_zone="UTC",
        is_all_day=False,
        props={"subject": "Team O'Brien", "showAs": "busy"},
        extended={normalize_property_id("String 0x1234"): ("String 0x1234", "Abc")},
    )
    matching = [
        "subject eq 'team o''brien'",
        "startswith(subject, 'Team') and showAs eq 'busy'",
        "start/dateTime ge '2025-01-02T00:00:00' and start/dateTime lt 2025-01-03T00:00:00Z",
        "singleValueExtendedProperties/any(ep: ep/id eq 'string 0x1234' "
        "and contains(ep/value, 'b'))",
        "(isAllDay eq false)",
    ]
    for text in matching:
        predicate = parse_filter(text)
        assert predicate is not None
        assert predicate(record), text
    not_matching = parse_filter("showAs ne 'busy'")
    assert not_matching is not None
    assert not not_matching(record)
    with pytest.raises(GraphError):
        parse_filter("subject eq 'x' or subject eq 'y'")


def test_cli_options_build_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--port",
            "7090",
            "--mailbox",
            "a@contoso.com",
            "--mailbox",
            "b@contoso.com",
            "--strict-auth",
            "--client",
            "app:secret",
            "--mailbox-budget",
            "50",
            "--notification-retry-delays",
            "0.1,0.2",
            "--duplicates",
        ]
    )
    config = config_from(args)
    assert args.port == 7090
    assert config.startup_mailboxes == ("a@contoso.com", "b@contoso.com")
    assert config.strict_auth is True
    assert dict(config.client_credentials) == {"app": "secret"}
    assert config.mailbox_budget == 50
    assert config.notification_max_attempts == 3
    assert config.duplicate_notifications is True
