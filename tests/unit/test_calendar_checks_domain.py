"""The domain of unconfirmed writes: a write in flight and for how long it may land,
which event times are our own writes, and a calendar check's limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.domain.calendar import (
    MAX_EARLIER_CHANGE_KEYS,
    WRITE_IN_FLIGHT_SECONDS,
    CalendarCheck,
    EventMapping,
    WrittenTimes,
)
from tests.builders import T0

HOUR = timedelta(hours=1)


def written(start_hours: int = 0, *, sent_ago: float = 0, answered: bool = False) -> WrittenTimes:
    start = T0 + start_hours * HOUR
    return WrittenTimes(
        booking_version=2,
        start=start,
        end=start + HOUR,
        sent_at=T0 - timedelta(seconds=sent_ago),
        answered=answered,
    )


def mapping(**values: object) -> EventMapping:
    return EventMapping(
        resource_id="room-1", booking_id="bk-1", mailbox="room-1@contoso.com", **values
    )


def test_a_write_is_in_flight_until_answered_or_for_its_window() -> None:
    assert written(sent_ago=0).still_in_flight(T0)
    assert written(sent_ago=WRITE_IN_FLIGHT_SECONDS - 1).still_in_flight(T0)
    assert not written(sent_ago=WRITE_IN_FLIGHT_SECONDS).still_in_flight(T0)
    assert not written(sent_ago=WRITE_IN_FLIGHT_SECONDS + 1).still_in_flight(T0)
    assert not written(sent_ago=0, answered=True).still_in_flight(T0)


def test_a_write_recorded_before_it_is_sent_is_unanswered() -> None:
    recorded = WrittenTimes(booking_version=2, start=T0, end=T0 + HOUR, sent_at=T0)
    assert not recorded.answered
    assert recorded.still_in_flight(T0)


def test_an_unanswered_write_may_land_for_up_to_120_seconds() -> None:
    """docs/convergence.md: its times are known as ours for up to 120 s."""
    assert written(sent_ago=119).still_in_flight(T0)
    assert not written(sent_ago=120).still_in_flight(T0)


def test_the_in_flight_window_outlasts_the_gateways_retry_budget() -> None:
    assert 60 < WRITE_IN_FLIGHT_SECONDS <= 300


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"booking_version": -1}, "booking_version"),
        ({"start": "not a time"}, "start"),
        ({"sent_at": None}, "sent_at"),
    ],
)
def test_written_times_refuse_what_is_not_a_write(values: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "booking_version": 0,
        "start": T0,
        "end": T0 + HOUR,
        "sent_at": T0,
        **values,
    }
    with pytest.raises(ValidationError) as refused:
        WrittenTimes(**fields)
    assert refused.value.errors()[0]["loc"] == (field,)


def test_an_event_at_the_pushed_times_is_our_write() -> None:
    pushed = mapping(pushed_start=T0, pushed_end=T0 + HOUR)
    assert pushed.written_by_us(T0, T0 + HOUR)
    assert not pushed.written_by_us(T0, T0 + 2 * HOUR)  # same start, other end
    assert not pushed.written_by_us(T0 - HOUR, T0 + HOUR)  # other start, same end
    assert not mapping().written_by_us(T0, T0 + HOUR)  # nothing written yet


def test_an_event_at_the_times_of_any_write_in_flight_is_our_write() -> None:
    sent = mapping(
        pushed_start=T0,
        pushed_end=T0 + HOUR,
        writes_in_flight=[written(2), written(4, answered=True)],
    )
    assert sent.written_by_us(T0 + 2 * HOUR, T0 + 3 * HOUR)
    # Answered with an error that may still have been applied: still ours.
    assert sent.written_by_us(T0 + 4 * HOUR, T0 + 5 * HOUR)
    assert not sent.written_by_us(T0 + 2 * HOUR, T0 + 5 * HOUR)
    assert not sent.written_by_us(T0 + 6 * HOUR, T0 + 7 * HOUR)
    assert mapping().writes_in_flight == []


def test_a_mapping_keeps_its_writes_in_flight_over_the_wire() -> None:
    sent = mapping(writes_in_flight=[written(2, answered=True)])
    again = EventMapping.model_validate_json(sent.model_dump_json(by_alias=True))
    assert again == sent
    assert again.writes_in_flight[0].answered


@pytest.mark.parametrize(("version", "accepted"), [(0, False), (1, True), (7, True)])
def test_a_check_names_a_written_version(version: int, accepted: bool) -> None:
    fields = {
        "resource_id": "room-1",
        "booking_id": "bk-1",
        "booking_version": version,
        "marked_at": T0,
    }
    if accepted:
        assert CalendarCheck(**fields).booking_version == version
    else:
        with pytest.raises(ValidationError) as refused:
            CalendarCheck(**fields)
        assert refused.value.errors()[0]["loc"] == ("booking_version",)


@pytest.mark.parametrize(("field", "value"), [("booking_version", -1), ("recreations", -1)])
def test_a_mapping_refuses_negative_counters(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as refused:
        mapping(**{field: value})
    assert refused.value.errors()[0]["loc"] == (field,)


def test_an_event_keeps_the_change_keys_of_its_last_states_we_know() -> None:
    known = mapping(change_key="k0")
    for index in range(1, MAX_EARLIER_CHANGE_KEYS + 2):
        known = known.model_copy(update=known.keeping_change_key(f"k{index}"))

    latest = MAX_EARLIER_CHANGE_KEYS + 1
    assert known.change_key == f"k{latest}"
    assert known.earlier_change_keys == [f"k{i}" for i in range(1, latest)]
    assert all(known.knows_change_key(f"k{i}") for i in range(1, latest + 1))
    assert not known.knows_change_key("k0")  # the oldest is forgotten
    assert not known.knows_change_key("an Outlook edit")
    assert not known.knows_change_key(None)


def test_keeping_the_same_or_no_change_key_forgets_nothing_and_repeats_nothing() -> None:
    known = mapping(change_key="k1", earlier_change_keys=["k0"])
    assert known.keeping_change_key("k1") == {"change_key": "k1", "earlier_change_keys": ["k0"]}
    cleared = known.model_copy(update=known.keeping_change_key(None))
    assert cleared.change_key is None
    assert cleared.earlier_change_keys == ["k0", "k1"]
    assert cleared.knows_change_key("k1")
