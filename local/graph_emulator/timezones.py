"""Graph's date-time shapes: ``dateTimeTimeZone`` in, UTC inside, any requested zone out.

Graph accepts IANA names and Windows names. The standard library has no Windows→IANA table
and no package in the project's requirements carries one, so the common names from CLDR's
windowsZones.xml are listed here; an unknown name fails like Graph does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from local.graph_emulator.errors import GraphError

WINDOWS_TO_IANA: dict[str, str] = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "tzone://microsoft/utc": "UTC",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "Atlantic/Reykjavik",
    "w. europe standard time": "Europe/Berlin",
    "central europe standard time": "Europe/Budapest",
    "romance standard time": "Europe/Paris",
    "central european standard time": "Europe/Warsaw",
    "e. europe standard time": "Europe/Chisinau",
    "fle standard time": "Europe/Kiev",
    "gtb standard time": "Europe/Bucharest",
    "russian standard time": "Europe/Moscow",
    "turkey standard time": "Europe/Istanbul",
    "israel standard time": "Asia/Jerusalem",
    "egypt standard time": "Africa/Cairo",
    "south africa standard time": "Africa/Johannesburg",
    "w. central africa standard time": "Africa/Lagos",
    "morocco standard time": "Africa/Casablanca",
    "arab standard time": "Asia/Riyadh",
    "arabian standard time": "Asia/Dubai",
    "pakistan standard time": "Asia/Karachi",
    "india standard time": "Asia/Kolkata",
    "se asia standard time": "Asia/Bangkok",
    "singapore standard time": "Asia/Singapore",
    "china standard time": "Asia/Shanghai",
    "taipei standard time": "Asia/Taipei",
    "tokyo standard time": "Asia/Tokyo",
    "korea standard time": "Asia/Seoul",
    "w. australia standard time": "Australia/Perth",
    "cen. australia standard time": "Australia/Adelaide",
    "e. australia standard time": "Australia/Brisbane",
    "aus eastern standard time": "Australia/Sydney",
    "new zealand standard time": "Pacific/Auckland",
    "hawaiian standard time": "Pacific/Honolulu",
    "alaskan standard time": "America/Anchorage",
    "pacific standard time": "America/Los_Angeles",
    "us mountain standard time": "America/Phoenix",
    "mountain standard time": "America/Denver",
    "central standard time": "America/Chicago",
    "central standard time (mexico)": "America/Mexico_City",
    "central america standard time": "America/Guatemala",
    "eastern standard time": "America/New_York",
    "sa pacific standard time": "America/Bogota",
    "atlantic standard time": "America/Halifax",
    "newfoundland standard time": "America/St_Johns",
    "e. south america standard time": "America/Sao_Paulo",
    "argentina standard time": "America/Buenos_Aires",
}


def resolve_zone(name: str | None) -> tzinfo:
    """The zone for a Graph time-zone name; ``None``/empty means UTC. Raises GraphError(400)."""
    if not name:
        return UTC
    mapped = WINDOWS_TO_IANA.get(name.strip().lower())
    if mapped == "UTC":
        return UTC
    try:
        return ZoneInfo(mapped or name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. The following TimeZone value is "
            f"not supported: '{name}'.",
        ) from exc


def _parse_iso(value: str, what: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise GraphError(
            400, "ErrorInvalidParameter", f"The value '{value}' of {what} is not a date-time."
        ) from exc


def parse_date_time_time_zone(value: object, what: str) -> datetime:
    """``{"dateTime", "timeZone"}`` → aware UTC datetime. An offset inside dateTime wins."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise GraphError(400, "ErrorInvalidRequest", f"'{what}' must have a dateTime.")
    zone = resolve_zone(value.get("timeZone"))
    parsed = _parse_iso(value["dateTime"], what)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_query_date_time(value: str, what: str) -> datetime:
    """A query-string date-time (calendarView window): its own offset, else UTC."""
    parsed = _parse_iso(value, what)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_timestamp(value: object, what: str) -> datetime:
    """A DateTimeOffset property such as a subscription's expirationDateTime."""
    if not isinstance(value, str):
        raise GraphError(400, "InvalidRequest", f"'{what}' must be a date-time string.")
    parsed = _parse_iso(value, what)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _seven_digits(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}0"


def format_date_time_time_zone(moment: datetime, zone_name: str | None) -> dict[str, str]:
    """UTC datetime → Graph ``dateTimeTimeZone`` in the requested zone (UTC when none)."""
    name = zone_name or "UTC"
    local = moment.astimezone(resolve_zone(name)).replace(tzinfo=None)
    return {"dateTime": _seven_digits(local), "timeZone": name}


def format_floating_date(day: date, zone_name: str | None) -> dict[str, str]:
    """All-day events float: midnight of their date in whatever zone is asked for."""
    midnight = datetime(day.year, day.month, day.day)
    return {"dateTime": _seven_digits(midnight), "timeZone": zone_name or "UTC"}


def format_timestamp(moment: datetime) -> str:
    """DateTimeOffset as Graph writes it: seven fractional digits and ``Z``."""
    return _seven_digits(moment.astimezone(UTC).replace(tzinfo=None)) + "Z"


def is_midnight(moment: datetime, zone: tzinfo) -> bool:
    local = moment.astimezone(zone)
    return local.time() == datetime.min.time()


def utc_now() -> datetime:
    return datetime.now(UTC)
