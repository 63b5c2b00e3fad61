"""``POST /users/{id}/calendar/getSchedule``: free/busy of up to 20 mailboxes over < 62 days."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from local.graph_emulator.calendar_view import instances_in_window
from local.graph_emulator.errors import GraphError
from local.graph_emulator.lookups import (
    context_url,
    preference_headers,
    preferred_zone,
    require_mailbox,
)
from local.graph_emulator.router import GraphRequest, GraphResponse, Params, ok
from local.graph_emulator.state import EventRecord, Mailbox
from local.graph_emulator.timezones import format_date_time_time_zone, parse_date_time_time_zone

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator

MAX_SCHEDULES = 20
MAX_WINDOW = timedelta(days=62)
# availabilityView digits, and which status wins when items overlap in a slot.
_DIGIT = {
    "free": "0",
    "tentative": "1",
    "busy": "2",
    "unknown": "2",
    "oof": "3",
    "workingElsewhere": "4",
}
_RANK = {"free": 0, "workingElsewhere": 1, "tentative": 2, "busy": 3, "unknown": 3, "oof": 4}


def _invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidParameter", message)


def _schedule_item(record: EventRecord, zone: str | None) -> dict[str, Any]:
    sensitivity = record.props.get("sensitivity")
    private = sensitivity in ("private", "confidential")
    item: dict[str, Any] = {
        "isPrivate": private,
        "status": record.props.get("showAs", "busy"),
        "isMeeting": bool(record.props.get("attendees")),
        "isRecurring": record.type != "singleInstance",
        "isException": record.type == "exception",
        "isReminderSet": bool(record.props.get("isReminderOn")),
        "start": format_date_time_time_zone(record.start, zone),
        "end": format_date_time_time_zone(record.end, zone),
    }
    if not private:
        item["subject"] = record.props.get("subject", "")
        item["location"] = (record.props.get("location") or {}).get("displayName", "")
    return item


def _availability_view(
    items: list[EventRecord], start: datetime, end: datetime, interval: timedelta
) -> str:
    slots = math.ceil((end - start) / interval)
    digits: list[str] = []
    for index in range(slots):
        slot_start = start + index * interval
        slot_end = min(slot_start + interval, end)
        statuses = [
            str(i.props.get("showAs", "busy"))
            for i in items
            if i.start < slot_end and i.end > slot_start
        ]
        winner = max(statuses, key=lambda s: _RANK.get(s, 3), default="free")
        digits.append(_DIGIT.get(winner, "2"))
    return "".join(digits)


def _schedule(
    mailbox: Mailbox | None,
    address: str,
    start: datetime,
    end: datetime,
    interval: timedelta,
    zone: str | None,
) -> dict[str, Any]:
    if mailbox is None:
        return {
            "scheduleId": address,
            "availabilityView": "",
            "scheduleItems": [],
            "error": {
                "message": f"The recipient '{address}' could not be found.",
                "responseCode": "ErrorMailRecipientNotFound",
            },
        }
    # Free/busy counts real overlap: an item merely touching the window is not busy in it.
    items = [
        i
        for i in instances_in_window(mailbox, start, end)
        if i.start < end and i.end > start and not i.props.get("isCancelled")
    ]
    return {
        "scheduleId": address,
        "availabilityView": _availability_view(items, start, end, interval),
        "scheduleItems": [_schedule_item(i, zone) for i in items],
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": "UTC"},
        },
    }


async def get_schedule(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    require_mailbox(emu, params)
    # Action parameters are matched case-insensitively (msgraph-sdk sends "Schedules").
    body = {key.lower(): value for key, value in request.json_object().items()}
    schedules = body.get("schedules")
    if not isinstance(schedules, list) or not schedules:
        raise _invalid("'schedules' must list at least one address.")
    if len(schedules) > MAX_SCHEDULES:
        raise _invalid(f"At most {MAX_SCHEDULES} schedules can be requested at once.")
    start = parse_date_time_time_zone(body.get("starttime"), "startTime")
    end = parse_date_time_time_zone(body.get("endtime"), "endTime")
    if end <= start:
        raise _invalid("'endTime' must be after 'startTime'.")
    if end - start >= MAX_WINDOW:
        raise _invalid("The requested time window must be shorter than 62 days.")
    minutes = body.get("availabilityviewinterval", 30)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 1440:
        raise _invalid("'availabilityViewInterval' must be between 5 and 1440 minutes.")
    zone = preferred_zone(request)
    interval = timedelta(minutes=minutes)
    value = [
        _schedule(emu.state.find_mailbox(str(address)), str(address), start, end, interval, zone)
        for address in schedules
    ]
    return ok(
        {
            "@odata.context": context_url(
                request, "Collection(microsoft.graph.scheduleInformation)"
            ),
            "value": value,
        },
        headers=preference_headers(request),
    )
