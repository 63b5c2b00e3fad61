"""Graph ``patternedRecurrence`` → occurrence start times, with python-dateutil's rrule.

Occurrences are generated on the wall clock of the series' zone, so a weekly 09:00 meeting
stays at 09:00 across a daylight-saving change, as Outlook does.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

from dateutil import rrule

from local.graph_emulator.errors import GraphError
from local.graph_emulator.timezones import resolve_zone

PATTERN_TYPES = (
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
)
RANGE_TYPES = ("endDate", "noEnd", "numbered")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS = dict(zip(DAYS, rrule.weekdays, strict=True))
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_NO_END_DATE = "0001-01-01"
_Frequency = Literal[0, 1, 2, 3, 4, 5, 6]  # dateutil's YEARLY..SECONDLY
# Guards a runaway expansion (a daily series without end over decades).
MAX_OCCURRENCES_PER_QUERY = 5000


def _invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def _canonical(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if isinstance(value, str):
        for candidate in allowed:
            if candidate.lower() == value.lower():
                return candidate
    raise _invalid(f"'{value}' is not a valid {what}; expected one of {', '.join(allowed)}.")


def _int(value: Any, what: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"'{what}' must be an integer.")
    return value


def _date(value: Any, what: str) -> date:
    if not isinstance(value, str):
        raise _invalid(f"'{what}' must be a date (yyyy-mm-dd).")
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise _invalid(f"'{what}' must be a date (yyyy-mm-dd).") from exc


def normalize_recurrence(raw: Any, start: datetime, start_zone: str) -> dict[str, Any]:
    """Validate a recurrence from a request and fill Graph's defaults. Raises GraphError."""
    if not isinstance(raw, dict):
        raise _invalid("'recurrence' must be an object with 'pattern' and 'range'.")
    pattern = raw.get("pattern")
    range_ = raw.get("range")
    if not isinstance(pattern, dict) or not isinstance(range_, dict):
        raise _invalid("'recurrence' must have 'pattern' and 'range'.")

    pattern_type = _canonical(pattern.get("type"), PATTERN_TYPES, "recurrence pattern type")
    interval = _int(pattern.get("interval"), "interval", default=1)
    if interval < 1:
        raise _invalid("'interval' must be at least 1.")
    days = [_canonical(d, DAYS, "day of week") for d in pattern.get("daysOfWeek") or []]
    day_of_month = _int(pattern.get("dayOfMonth"), "dayOfMonth")
    month = _int(pattern.get("month"), "month")
    index = _canonical(pattern.get("index") or "first", tuple(_INDEX), "week index")
    first_day = _canonical(pattern.get("firstDayOfWeek") or "sunday", DAYS, "firstDayOfWeek")
    if pattern_type in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise _invalid(f"A {pattern_type} pattern needs 'daysOfWeek'.")
    if pattern_type in ("absoluteMonthly", "absoluteYearly") and not 1 <= day_of_month <= 31:
        raise _invalid(f"A {pattern_type} pattern needs 'dayOfMonth' between 1 and 31.")
    if pattern_type in ("absoluteYearly", "relativeYearly") and not 1 <= month <= 12:
        raise _invalid(f"A {pattern_type} pattern needs 'month' between 1 and 12.")

    range_type = _canonical(range_.get("type"), RANGE_TYPES, "recurrence range type")
    zone_name = range_.get("recurrenceTimeZone") or start_zone
    zone = resolve_zone(zone_name)
    start_date = (
        _date(range_["startDate"], "startDate")
        if range_.get("startDate")
        else start.astimezone(zone).date()
    )
    end_date = _NO_END_DATE
    occurrences = 0
    if range_type == "endDate":
        end = _date(range_.get("endDate"), "endDate")
        if end < start_date:
            raise _invalid("'endDate' must not be before 'startDate'.")
        end_date = end.isoformat()
    elif range_type == "numbered":
        occurrences = _int(range_.get("numberOfOccurrences"), "numberOfOccurrences")
        if occurrences < 1:
            raise _invalid("A numbered range needs 'numberOfOccurrences' of at least 1.")

    return {
        "pattern": {
            "type": pattern_type,
            "interval": interval,
            "month": month,
            "dayOfMonth": day_of_month,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day,
            "index": index,
        },
        "range": {
            "type": range_type,
            "startDate": start_date.isoformat(),
            "endDate": end_date,
            "recurrenceTimeZone": zone_name,
            "numberOfOccurrences": occurrences,
        },
    }


def _rule(
    recurrence: dict[str, Any], first_start: datetime
) -> tuple[rrule.rrule, tzinfo, datetime]:
    pattern = recurrence["pattern"]
    range_ = recurrence["range"]
    zone = resolve_zone(range_["recurrenceTimeZone"])
    wall = first_start.astimezone(zone).time()
    dtstart = datetime.combine(
        date.fromisoformat(range_["startDate"]), time(wall.hour, wall.minute, wall.second)
    ).replace(tzinfo=zone)
    kwargs: dict[str, Any] = {"dtstart": dtstart, "interval": pattern["interval"]}
    weekdays = [_WEEKDAYS[d] for d in pattern["daysOfWeek"]]
    kind = pattern["type"]
    freq: _Frequency
    if kind == "daily":
        freq = rrule.DAILY
    elif kind == "weekly":
        freq = rrule.WEEKLY
        kwargs.update(byweekday=weekdays, wkst=_WEEKDAYS[pattern["firstDayOfWeek"]])
    elif kind == "absoluteMonthly":
        freq = rrule.MONTHLY
        kwargs.update(bymonthday=pattern["dayOfMonth"])
    elif kind == "relativeMonthly":
        freq = rrule.MONTHLY
        kwargs.update(byweekday=weekdays, bysetpos=_INDEX[pattern["index"]])
    elif kind == "absoluteYearly":
        freq = rrule.YEARLY
        kwargs.update(bymonth=pattern["month"], bymonthday=pattern["dayOfMonth"])
    else:
        freq = rrule.YEARLY
        kwargs.update(
            bymonth=pattern["month"], byweekday=weekdays, bysetpos=_INDEX[pattern["index"]]
        )
    if range_["type"] == "endDate":
        last_day = date.fromisoformat(range_["endDate"])
        kwargs["until"] = datetime.combine(last_day, time(23, 59, 59)).replace(tzinfo=zone)
    elif range_["type"] == "numbered":
        kwargs["count"] = range_["numberOfOccurrences"]
    return rrule.rrule(freq, **kwargs), zone, dtstart


def occurrence_starts(
    recurrence: dict[str, Any], first_start: datetime, earliest: datetime, latest: datetime
) -> list[datetime]:
    """Original start times (UTC) of the occurrences starting within [earliest, latest]."""
    rule, zone, _ = _rule(recurrence, first_start)
    starts: list[datetime] = []
    for moment in rule.xafter(earliest.astimezone(zone), inc=True):
        if moment > latest:
            break
        starts.append(moment.astimezone(first_start.tzinfo))
        if len(starts) >= MAX_OCCURRENCES_PER_QUERY:
            break
    return starts


def is_occurrence_start(
    recurrence: dict[str, Any], first_start: datetime, candidate: datetime
) -> bool:
    rule, zone, _ = _rule(recurrence, first_start)
    found = rule.after(candidate.astimezone(zone) - timedelta(seconds=1), inc=True)
    return found is not None and found == candidate
