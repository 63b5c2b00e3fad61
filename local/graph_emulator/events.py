"""Event resources: validating writes, applying them to records, and rendering Graph JSON."""

from __future__ import annotations

import copy
import html
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from local.graph_emulator.errors import GraphError
from local.graph_emulator.ids import new_change_key, new_event_id, new_ical_uid
from local.graph_emulator.odata import Expansion, expanded_properties, normalize_property_id
from local.graph_emulator.recurrence import normalize_recurrence
from local.graph_emulator.state import EventRecord, Mailbox
from local.graph_emulator.timezones import (
    format_date_time_time_zone,
    format_floating_date,
    format_timestamp,
    is_midnight,
    parse_date_time_time_zone,
    resolve_zone,
)

SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
SENSITIVITY = ("normal", "personal", "private", "confidential")
IMPORTANCE = ("low", "normal", "high")
BODY_TYPES = ("text", "html")

# Writable properties kept as given (after enum checks) and echoed back.
_PLAIN_PROPERTIES = (
    "subject",
    "body",
    "location",
    "locations",
    "attendees",
    "categories",
    "importance",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "allowNewTimeProposals",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "hideAttendees",
    "showAs",
    "sensitivity",
    "organizer",
)
_SPECIAL_PROPERTIES = (
    "start",
    "end",
    "isAllDay",
    "recurrence",
    "transactionId",
    "singleValueExtendedProperties",
)
# Read-only or computed properties: Graph ignores them in a request body.
_IGNORED_PROPERTIES = frozenset(
    name.lower()
    for name in (
        "id",
        "changeKey",
        "createdDateTime",
        "lastModifiedDateTime",
        "iCalUId",
        "type",
        "seriesMasterId",
        "originalStart",
        "originalStartTimeZone",
        "originalEndTimeZone",
        "webLink",
        "hasAttachments",
        "isOrganizer",
        "isDraft",
        "bodyPreview",
        "onlineMeetingUrl",
        "onlineMeeting",
        "responseStatus",
        # Read-only: set when the organiser cancels a meeting, never by a write
        # (https://learn.microsoft.com/graph/api/event-update?view=graph-rest-1.0).
        "isCancelled",
        "multiValueExtendedProperties",
        "attachments",
        "calendar",
        "extensions",
        "instances",
    )
)
_KNOWN = {name.lower(): name for name in _PLAIN_PROPERTIES + _SPECIAL_PROPERTIES}


def _default_props(mailbox: Mailbox) -> dict[str, Any]:
    return {
        "subject": "",
        "body": {"contentType": "html", "content": ""},
        "location": {
            "displayName": "",
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        },
        "locations": [],
        "attendees": [],
        "categories": [],
        "importance": "normal",
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "responseRequested": True,
        "allowNewTimeProposals": True,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "hideAttendees": False,
        "showAs": "busy",
        "sensitivity": "normal",
        "isCancelled": False,
        "organizer": {"emailAddress": {"name": mailbox.display_name, "address": mailbox.upn}},
    }


def _body_read_error(message: str) -> GraphError:
    return GraphError(400, "RequestBodyRead", message)


def _canonical_enum(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if isinstance(value, str):
        for candidate in allowed:
            if candidate.lower() == value.lower():
                return candidate
    raise _body_read_error(
        f"Cannot convert the literal '{value}' to the expected type 'microsoft.graph.{name}'."
    )


def _check_keys(body: dict[str, Any]) -> dict[str, Any]:
    """Canonical-cased known properties of a request body. Unknown ones fail like Graph."""
    known: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata.") or key.lower() in _IGNORED_PROPERTIES:
            continue
        canonical = _KNOWN.get(key.lower())
        if canonical is None:
            raise _body_read_error(
                f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make "
                "sure to only use property names that are defined by the type or mark the "
                "type as open type."
            )
        known[canonical] = value
    return known


def _plain_value(name: str, value: Any) -> Any:
    if name == "showAs":
        return _canonical_enum(value, SHOW_AS, "freeBusyStatus")
    if name == "sensitivity":
        return _canonical_enum(value, SENSITIVITY, "sensitivity")
    if name == "importance":
        return _canonical_enum(value, IMPORTANCE, "importance")
    if name == "subject":
        return "" if value is None else str(value)
    if name == "body":
        if not isinstance(value, dict):
            raise _body_read_error("'body' must be an itemBody object.")
        content_type = _canonical_enum(value.get("contentType", "html"), BODY_TYPES, "bodyType")
        return {"contentType": content_type, "content": str(value.get("content") or "")}
    if name == "location":
        if not isinstance(value, dict):
            raise _body_read_error("'location' must be a location object.")
        return {"displayName": "", "locationType": "default", **value}
    booleans = ("isReminderOn", "isOnlineMeeting", "hideAttendees")
    if name in booleans and not isinstance(value, bool):
        raise _body_read_error(f"'{name}' must be a boolean.")
    return copy.deepcopy(value)


def _extended_properties(value: Any) -> dict[str, tuple[str, str]]:
    if not isinstance(value, list):
        raise _body_read_error("'singleValueExtendedProperties' must be an array.")
    result: dict[str, tuple[str, str]] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise _body_read_error("Each extended property needs an 'id' and a 'value'.")
        raw_value = item.get("value")
        result[normalize_property_id(item["id"])] = (
            item["id"],
            "" if raw_value is None else str(raw_value),
        )
    return result


def _times(start_raw: Any, end_raw: Any, is_all_day: bool) -> tuple[datetime, datetime, str, str]:
    start = parse_date_time_time_zone(start_raw, "start")
    end = parse_date_time_time_zone(end_raw, "end")
    start_zone = str(start_raw.get("timeZone") or "UTC")
    end_zone = str(end_raw.get("timeZone") or "UTC")
    if end < start:
        raise GraphError(
            400, "ErrorInvalidRequest", "The event's end time must not be before its start time."
        )
    if is_all_day and not (
        is_midnight(start, resolve_zone(start_zone))
        and is_midnight(end, resolve_zone(end_zone))
        and end - start >= timedelta(days=1)
    ):
        raise GraphError(
            400,
            "ErrorPropertyValidationFailure",
            "An all-day event must start and end at midnight and last at least one day.",
        )
    return start, end, start_zone, end_zone


def create_event(mailbox: Mailbox, body: Any, now: datetime) -> EventRecord:
    """A new single instance or series master from a POST body. Raises GraphError(400)."""
    if not isinstance(body, dict):
        raise _body_read_error("The request body must be a JSON object.")
    fields = _check_keys(body)
    if "start" not in fields or "end" not in fields:
        raise GraphError(400, "ErrorInvalidRequest", "An event needs 'start' and 'end'.")
    is_all_day = bool(fields.get("isAllDay", False))
    start, end, start_zone, end_zone = _times(fields["start"], fields["end"], is_all_day)
    props = _default_props(mailbox)
    for name in _PLAIN_PROPERTIES:
        if name in fields:
            props[name] = _plain_value(name, fields[name])
    record = EventRecord(
        id=new_event_id(),
        ical_uid=new_ical_uid(),
        change_key=new_change_key(),
        created=now,
        last_modified=now,
        start=start,
        end=end,
        start_zone=start_zone,
        end_zone=end_zone,
        is_all_day=is_all_day,
        props=props,
        transaction_id=str(fields["transactionId"]) if fields.get("transactionId") else None,
        parent_folder_id=mailbox.calendar_id,
    )
    if "singleValueExtendedProperties" in fields:
        record.extended = _extended_properties(fields["singleValueExtendedProperties"])
    if fields.get("recurrence") is not None:
        record.recurrence = normalize_recurrence(fields["recurrence"], start, start_zone)
        record.type = "seriesMaster"
    return record


def patch_event(record: EventRecord, body: Any, now: datetime) -> bool:
    """Apply a PATCH body in place and give the record a new changeKey. Returns whether the
    schedule (start, end or recurrence) changed. Raises GraphError(400)."""
    if not isinstance(body, dict):
        raise _body_read_error("The request body must be a JSON object.")
    fields = _check_keys(body)
    if "transactionId" in fields:
        raise GraphError(
            400, "ErrorInvalidRequest", "The transactionId of an event cannot be changed."
        )
    schedule_changed = False
    if {"start", "end", "isAllDay"} & fields.keys():
        is_all_day = bool(fields.get("isAllDay", record.is_all_day))
        start_raw = fields.get("start") or {
            "dateTime": record.start.isoformat(),
            "timeZone": record.start_zone,
        }
        end_raw = fields.get("end") or {"dateTime": record.end.isoformat(), "timeZone": "UTC"}
        start, end, start_zone, end_zone = _times(start_raw, end_raw, is_all_day)
        if "end" not in fields:
            end_zone = record.end_zone
        schedule_changed = (start, end) != (record.start, record.end)
        record.start, record.end = start, end
        record.start_zone, record.end_zone = start_zone, end_zone
        record.is_all_day = is_all_day
    if "recurrence" in fields:
        if record.type in ("occurrence", "exception") and fields["recurrence"] is not None:
            raise GraphError(
                400, "ErrorInvalidRequest", "An occurrence of a series cannot have a recurrence."
            )
        if record.type in ("singleInstance", "seriesMaster"):
            if fields["recurrence"] is None:
                record.recurrence = None
                record.type = "singleInstance"
            else:
                record.recurrence = normalize_recurrence(
                    fields["recurrence"], record.start, record.start_zone
                )
                record.type = "seriesMaster"
            schedule_changed = True
    if record.type == "seriesMaster" and schedule_changed and record.recurrence is not None:
        # Outlook drops a series' exceptions when its pattern or times change.
        record.recurrence = normalize_recurrence(record.recurrence, record.start, record.start_zone)
        record.exceptions.clear()
        record.cancelled_occurrences.clear()
    for name in _PLAIN_PROPERTIES:
        if name in fields:
            record.props[name] = _plain_value(name, fields[name])
    if "singleValueExtendedProperties" in fields:
        record.extended.update(_extended_properties(fields["singleValueExtendedProperties"]))
    touch(record, now)
    return schedule_changed


def touch(record: EventRecord, now: datetime) -> None:
    record.change_key = new_change_key()
    record.last_modified = now


_TAGS = re.compile(r"<[^>]+>")


def _preview(body: dict[str, Any]) -> str:
    content = str(body.get("content") or "")
    if body.get("contentType") == "html":
        content = html.unescape(_TAGS.sub(" ", content))
    return " ".join(content.split())[:255]


def _when(record: EventRecord, moment: datetime, own_zone: str, zone: str | None) -> dict[str, str]:
    if record.is_all_day:
        return format_floating_date(moment.astimezone(resolve_zone(own_zone)).date(), zone)
    return format_date_time_time_zone(moment, zone)


def render_event(
    record: EventRecord,
    *,
    zone: str | None = None,
    expansion: Expansion | None = None,
    parent_folder: bool = True,
) -> dict[str, Any]:
    """Graph's JSON for an event. ``zone`` is the Prefer outlook.timezone (UTC if None);
    ``parent_folder`` False leaves out `parentFolderId`, as Graph's event resource has
    none (EmulatorConfig.event_parent_folder_id)."""
    props = record.props
    rendered: dict[str, Any] = {
        "@odata.etag": f'W/"{record.change_key}"',
        "id": record.id,
        "createdDateTime": format_timestamp(record.created),
        "lastModifiedDateTime": format_timestamp(record.last_modified),
        "changeKey": record.change_key,
        "categories": props["categories"],
        "transactionId": record.transaction_id,
        "originalStartTimeZone": record.start_zone,
        "originalEndTimeZone": record.end_zone,
        "iCalUId": record.ical_uid,
        "parentFolderId": record.parent_folder_id,
        "reminderMinutesBeforeStart": props["reminderMinutesBeforeStart"],
        "isReminderOn": props["isReminderOn"],
        "hasAttachments": False,
        "subject": props["subject"],
        "bodyPreview": _preview(props["body"]),
        "importance": props["importance"],
        "sensitivity": props["sensitivity"],
        "isAllDay": record.is_all_day,
        "isCancelled": props["isCancelled"],
        "isOrganizer": record.copy_of is None,
        "responseRequested": props["responseRequested"],
        "seriesMasterId": record.series_master_id,
        "showAs": props["showAs"],
        "type": record.type,
        "webLink": "https://outlook.office365.com/owa/?itemid="
        + quote(record.id, safe="")
        + "&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": props["isOnlineMeeting"],
        "onlineMeetingProvider": props["onlineMeetingProvider"],
        "allowNewTimeProposals": props["allowNewTimeProposals"],
        "isDraft": False,
        "hideAttendees": props["hideAttendees"],
        "responseStatus": {"response": record.response, "time": "0001-01-01T00:00:00Z"},
        "body": props["body"],
        "start": _when(record, record.start, record.start_zone, zone),
        "end": _when(record, record.end, record.end_zone, zone),
        "location": props["location"],
        "locations": props["locations"],
        "recurrence": record.recurrence,
        "attendees": props["attendees"],
        "organizer": props["organizer"],
        "onlineMeeting": None,
    }
    if record.original_start is not None:
        rendered["originalStart"] = format_timestamp(record.original_start)
    if expansion is not None:
        rendered["singleValueExtendedProperties"] = expanded_properties(record, expansion)
    if not parent_folder:
        rendered.pop("parentFolderId", None)
    return rendered
