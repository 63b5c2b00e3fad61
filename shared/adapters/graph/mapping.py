"""Graph event models ↔ domain models, in one place.

Writes are SDK models (kiota serializes them). Reads are mapped from Graph's JSON, not
from SDK models: msgraph-sdk's model deserialization costs tens of milliseconds of CPU per
event (msgraph-sdk-python#584: `Entity.get_field_deserializers` runs thousands of imports
per call), which a mirror of several hundred events would spend on the event loop.

Writes carry an explicit time zone: the Windows name (CLDR) of the draft's IANA zone, with
the UTC instants turned into that zone's wall time. Reads ask for UTC (`Prefer:
outlook.timezone="UTC"`), but Graph answers creates and updates in the zone the event was
written in (docs issue #116, docs-contrib #8645), so every time is read with its zone:
UTC, Windows or IANA names. Our booking id travels in one single-value
extended property, `BOOKING_ID_PROPERTY`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.free_busy_status import FreeBusyStatus
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.location import Location
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)

from shared.domain.calendar import CalendarEvent, EventDraft, EventType, Sensitivity, ShowAs
from shared.domain.errors import GraphError, InvalidInput
from shared.domain.windows_zones import IANA_TO_WINDOWS, WINDOWS_TO_IANA

# Our property set. Fixed forever: changing it would orphan every event already written.
BOOKING_PROPERTY_SET = "6f0f3b1c-8c4e-4a57-9d1e-2b7a5c9e4f10"
BOOKING_ID_PROPERTY = f"String {{{BOOKING_PROPERTY_SET}}} Name BookingId"
# Reads expand only our property; Graph returns the others only when asked.
EXPAND_BOOKING_ID = f"singleValueExtendedProperties($filter=id eq '{BOOKING_ID_PROPERTY}')"
# Graph documents `eq` on the id plus `eq`/`ne`/`contains`/`startswith` on a string value
# (not `ne null`): "has our property with a value" is `ne ''`.
HAS_BOOKING_ID_FILTER = (
    f"singleValueExtendedProperties/Any(ep: ep/id eq '{BOOKING_ID_PROPERTY}' and ep/value ne '')"
)

# UTC under its Graph names and the IANA names of UTC (links of Etc/UTC and Etc/GMT;
# CLDR's table gives no Windows name for bare "GMT", and Graph does not list it).
_UTC_NAMES = frozenset(
    {"utc", "coordinated universal time", "tzone://microsoft/utc"}
    | {
        prefix + name
        for prefix in ("", "etc/")
        for name in (
            "utc",
            "uct",
            "gmt",
            "gmt0",
            "gmt+0",
            "gmt-0",
            "greenwich",
            "universal",
            "zulu",
        )
    }
)
_NAMED_PROPERTY = re.compile(r"^\s*(\w+)\s+\{([0-9a-fA-F-]{36})\}\s+Name\s+(.+?)\s*$", re.I)


def booking_id_filter(booking_id: str) -> str:
    """$filter for the events carrying one booking id (value compared case-insensitively)."""
    quoted = booking_id.replace("'", "''")
    return (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{BOOKING_ID_PROPERTY}'"
        f" and ep/value eq '{quoted}')"
    )


def is_booking_property(property_id: str | None) -> bool:
    """Whether an extended-property id is ours (type and GUID compare case-insensitively,
    the name case-sensitively, as Graph does)."""
    if not property_id:
        return False
    match = _NAMED_PROPERTY.match(property_id)
    if match is None:
        return False
    kind, guid, name = match.groups()
    return kind.lower() == "string" and guid.lower() == BOOKING_PROPERTY_SET and name == "BookingId"


_IANA_BY_WINDOWS_NAME = {name.lower(): iana for name, iana in WINDOWS_TO_IANA.items()}


def _zone(name: str) -> tzinfo:
    """The zone of a Graph zone name: UTC, a Windows name (CLDR) or an IANA name."""
    key = name.strip()
    if key.lower() in _UTC_NAMES:
        return UTC
    key = _IANA_BY_WINDOWS_NAME.get(key.lower(), key)
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {name!r}") from exc


def graph_zone_name(iana_zone: str, *moments: datetime) -> str:
    """The name to write for an IANA zone: its Windows name from CLDR (Graph takes every
    Windows name but only some IANA ones); "UTC" for UTC; the IANA name itself when CLDR
    has no Windows name for it (a refusal then shows in the gateway's log), or when that
    Windows name keeps other rules at any of `moments`: Graph reads a Windows name by the
    rules of the zone CLDR names for it, and a table older than the zone's last change
    (America/Scoresbysund under "Azores Standard Time" since tzdata 2023d) would place
    the event an hour or more off."""
    key = iana_zone.strip()
    if key.lower() in _UTC_NAMES:
        return "UTC"
    windows = IANA_TO_WINDOWS.get(key)
    if windows is None:
        return iana_zone
    if moments and not _same_rules(key, WINDOWS_TO_IANA.get(windows), moments):
        return iana_zone
    return windows


def _same_rules(iana_zone: str, reference: str | None, moments: tuple[datetime, ...]) -> bool:
    """Whether the two zones give the same UTC offset at each of the moments."""
    if reference is None:
        return False
    if reference == iana_zone:
        return True
    try:
        ours, theirs = ZoneInfo(iana_zone), ZoneInfo(reference)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return all(m.astimezone(ours).utcoffset() == m.astimezone(theirs).utcoffset() for m in moments)


def _wall_time(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")


def _ambiguous(moment: datetime, zone: tzinfo) -> bool:
    """Whether the moment's wall time in the zone names two instants (the hour repeated
    when DST ends)."""
    local = moment.astimezone(zone)
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def event_from_draft(draft: EventDraft, *, transaction_id: str | None = None) -> Event:
    """The Graph event to POST (with `transaction_id`) or PATCH for a draft: its times as
    wall times in the draft's zone, named by its Windows name, or in UTC when a wall time
    there would be ambiguous.

    Raises InvalidInput when the draft's zone is not an IANA zone.
    """
    zone = _zone(draft.time_zone)
    zone_name = graph_zone_name(draft.time_zone, draft.start, draft.end)
    if _ambiguous(draft.start, zone) or _ambiguous(draft.end, zone):
        zone, zone_name = UTC, "UTC"
    return Event(
        subject=draft.subject,
        body=ItemBody(content_type=BodyType.Text, content=draft.body),
        start=DateTimeTimeZone(date_time=_wall_time(draft.start, zone), time_zone=zone_name),
        end=DateTimeTimeZone(date_time=_wall_time(draft.end, zone), time_zone=zone_name),
        is_all_day=False,
        location=Location(display_name=draft.location or ""),
        show_as=FreeBusyStatus(draft.show_as.value),
        single_value_extended_properties=[
            SingleValueLegacyExtendedProperty(id=BOOKING_ID_PROPERTY, value=draft.booking_id)
        ],
        transaction_id=transaction_id,
    )


def parse_graph_time(value: Any, what: str) -> datetime:
    """An aware UTC datetime from Graph's dateTimeTimeZone JSON (all-day events too: their
    midnight in the zone asked for, UTC here)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("dateTime"), str):
        raise GraphError(f"Graph returned an event without {what}")
    parsed = datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        zone_name = value.get("timeZone") or "UTC"
        try:
            zone = _zone(str(zone_name))
        except InvalidInput as exc:
            raise GraphError(f"Graph returned {what} in unknown zone {zone_name!r}") from exc
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_SHOW_AS_BY_NAME = {status.value.lower(): status for status in ShowAs}


def show_as_of(value: Any) -> ShowAs:
    """Graph's freeBusyStatus as ShowAs, compared case-insensitively (getSchedule answers
    "Busy", "Tentative"); a value added later reads as unknown."""
    if not value:
        return ShowAs.BUSY
    return _SHOW_AS_BY_NAME.get(str(value).lower(), ShowAs.UNKNOWN)


def _sensitivity(value: Any) -> Sensitivity:
    try:
        return Sensitivity(value or "normal")
    except ValueError:
        # A value Graph adds later is treated as the most private one: hide, never leak.
        return Sensitivity.PRIVATE


def _event_type(value: Any) -> EventType:
    try:
        return EventType(value or "singleInstance")
    except ValueError:
        return EventType.SINGLE_INSTANCE


def booking_id_of(item: Mapping[str, Any]) -> str | None:
    """Our booking id from an event's expanded extended properties, if it carries one."""
    for prop in item.get("singleValueExtendedProperties") or []:
        if isinstance(prop, Mapping) and is_booking_property(prop.get("id")):
            value = prop.get("value")
            if isinstance(value, str) and value:
                return value
    return None


def calendar_event(item: Mapping[str, Any], *, booking_id: str | None = None) -> CalendarEvent:
    """The domain view of one Graph event (JSON) read with `outlook.timezone="UTC"`.

    `booking_id` fills in our id when the answer does not carry the property (a create or
    update answer does not expand it). Raises GraphError when the answer lacks an id or a
    start/end.
    """
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise GraphError("Graph returned an event without id")
    return CalendarEvent(
        event_id=event_id,
        change_key=_text(item.get("changeKey")),
        subject=_text(item.get("subject")),
        body_preview=_text(item.get("bodyPreview")),
        start=parse_graph_time(item.get("start"), "start"),
        end=parse_graph_time(item.get("end"), "end"),
        is_all_day=item.get("isAllDay") is True,
        show_as=show_as_of(item.get("showAs")),
        sensitivity=_sensitivity(item.get("sensitivity")),
        type=_event_type(item.get("type")),
        series_master_id=_text(item.get("seriesMasterId")),
        is_cancelled=item.get("isCancelled") is True,
        booking_id=booking_id_of(item) or booking_id,
        last_modified_at=_timestamp(item.get("lastModifiedDateTime")),
    )


def is_removed(item: Mapping[str, Any]) -> bool:
    """A delta entry that only says the event left the view (deleted or moved out)."""
    return "@removed" in item


@dataclass(frozen=True)
class ScheduleBlock:
    """One busy block from getSchedule (no subject when the event is private)."""

    mailbox: str
    start: datetime
    end: datetime
    show_as: ShowAs
    subject: str | None
