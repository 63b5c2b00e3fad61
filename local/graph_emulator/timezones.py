"""Graph's date-time shapes: ``dateTimeTimeZone`` in, UTC inside, any requested zone out.

Graph reads IANA names and Windows names. The standard library has no Windows→IANA table,
so CLDR's windowsZones.xml is read from the repo's generated copy; an unknown name fails
like Graph does. Writes take Windows names and only the IANA names Graph lists
(`check_writable_zone`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from local.graph_emulator.errors import GraphError
from shared.domain.windows_zones import WINDOWS_TO_IANA as CLDR_WINDOWS_TO_IANA

# Windows names (CLDR windowsZones.xml; the generated table the app uses too: data, not
# behaviour) and the UTC aliases Graph writes.
WINDOWS_TO_IANA: dict[str, str] = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "tzone://microsoft/utc": "UTC",
    **{name.lower(): iana for name, iana in CLDR_WINDOWS_TO_IANA.items() if name != "UTC"},
}


# The IANA names Graph lists as "additional time zones" a dateTimeTimeZone may carry, besides
# every Windows name (https://learn.microsoft.com/graph/api/resources/datetimetimezone).
# The page gives four with a second name in brackets (Europe/Kyiv (Kiev), Asia/Toshkent
# (Tashkent), Asia/Astana (Almaty), Asia/Yangon (Rangoon)): the tz database's names of
# those are listed here.
# Matched exactly, as the tz database spells them (the harsher reading; ZoneInfo is case
# sensitive too).
GRAPH_LISTED_IANA_ZONES: frozenset[str] = frozenset(
    (
        "Etc/GMT+12", "Etc/GMT+11", "Pacific/Honolulu", "America/Anchorage",
        "America/Santa_Isabel", "America/Los_Angeles", "America/Phoenix", "America/Chihuahua",
        "America/Denver", "America/Guatemala", "America/Chicago", "America/Mexico_City",
        "America/Regina", "America/Bogota", "America/New_York", "America/Indiana/Indianapolis",
        "America/Caracas", "America/Asuncion", "America/Halifax", "America/Cuiaba",
        "America/La_Paz", "America/Santiago", "America/St_Johns", "America/Sao_Paulo",
        "America/Argentina/Buenos_Aires", "America/Cayenne", "America/Godthab",
        "America/Montevideo", "America/Bahia", "Etc/GMT+2", "Atlantic/Azores",
        "Atlantic/Cape_Verde", "Africa/Casablanca", "Etc/GMT", "Europe/London",
        "Atlantic/Reykjavik", "Europe/Berlin", "Europe/Budapest", "Europe/Paris",
        "Europe/Warsaw", "Africa/Lagos", "Africa/Windhoek", "Europe/Bucharest", "Asia/Beirut",
        "Africa/Cairo", "Asia/Damascus", "Africa/Johannesburg", "Europe/Kyiv", "Europe/Kiev",
        "Europe/Istanbul", "Asia/Jerusalem", "Asia/Amman", "Asia/Baghdad",
        "Europe/Kaliningrad", "Asia/Riyadh", "Africa/Nairobi", "Asia/Tehran", "Asia/Dubai",
        "Asia/Baku", "Europe/Moscow", "Indian/Mauritius", "Asia/Tbilisi", "Asia/Yerevan",
        "Asia/Kabul", "Asia/Karachi", "Asia/Tashkent", "Asia/Kolkata", "Asia/Colombo",
        "Asia/Kathmandu", "Asia/Almaty", "Asia/Dhaka", "Asia/Yekaterinburg", "Asia/Yangon",
        "Asia/Rangoon", "Asia/Bangkok", "Asia/Novosibirsk", "Asia/Shanghai",
        "Asia/Krasnoyarsk", "Asia/Singapore", "Australia/Perth", "Asia/Taipei",
        "Asia/Ulaanbaatar", "Asia/Irkutsk", "Asia/Tokyo", "Asia/Seoul", "Australia/Adelaide",
        "Australia/Darwin", "Australia/Brisbane", "Australia/Sydney", "Pacific/Port_Moresby",
        "Australia/Hobart", "Asia/Yakutsk", "Pacific/Guadalcanal", "Asia/Vladivostok",
        "Pacific/Auckland", "Etc/GMT-12", "Pacific/Fiji", "Asia/Magadan", "Pacific/Tongatapu",
        "Pacific/Apia", "Pacific/Kiritimati",
    )
)  # fmt: skip


def _not_supported(name: str) -> GraphError:
    return GraphError(
        400,
        "TimeZoneNotSupportedException",
        f"A valid TimeZone value must be specified. The following TimeZone value is "
        f"not supported: '{name}'.",
    )


def check_writable_zone(name: object, *, any_iana: bool = False) -> None:
    """Refuse (400 TimeZoneNotSupportedException) a zone a write may not carry: only UTC,
    Windows names and the IANA names Graph lists are taken; with `any_iana` (the kinder
    reading) every IANA name the tz database knows is."""
    if name is None or name == "":
        return
    if not isinstance(name, str):
        raise _not_supported(str(name))
    if name.strip().lower() in WINDOWS_TO_IANA or name.strip() in GRAPH_LISTED_IANA_ZONES:
        return
    if not any_iana:
        raise _not_supported(name)
    resolve_zone(name)


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
        raise _not_supported(name) from exc


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
