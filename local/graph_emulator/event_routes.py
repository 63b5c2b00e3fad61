"""``/users/{id}/events`` (and ``/calendar/events``): create, list, get, update, delete,
permanentDelete.

Writes publish change notifications whoever makes them, the app or a test playing the
Outlook user. Occurrences of a series are addressed by their own ids: updating one turns it
into an exception, deleting one removes it from the series, and both notify only an update
of the series master (none for the exception or occurrence itself); a room mailbox sends
several, each with its own changeKey (`master_updates_per_occurrence_change`).

DELETE is a soft delete, as in Outlook: the event moves to Deleted Items (it leaves the
calendar, calendarView and delta, and subscribers get ``deleted``), where a GET by its
immutable id may still find it. ``permanentDelete`` purges it.
"""

from __future__ import annotations

import copy as copy_module
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from local.graph_emulator.calendar_view import find_event, make_exception
from local.graph_emulator.errors import not_found_item
from local.graph_emulator.events import create_event, patch_event, render_event, touch
from local.graph_emulator.ids import new_event_id
from local.graph_emulator.lookups import (
    check_if_match,
    context_url,
    path_url,
    preference_headers,
    preferred_zone,
    require_mailbox,
)
from local.graph_emulator.odata import (
    apply_orderby,
    apply_select,
    link_with,
    page_window,
    parse_expand,
    parse_filter,
)
from local.graph_emulator.router import GraphRequest, GraphResponse, Params, no_content, ok
from local.graph_emulator.state import EventRecord, Mailbox
from local.graph_emulator.timezones import check_writable_zone, utc_now

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator


def _find(emu: GraphEmulator, mailbox: Mailbox, event_id: str) -> EventRecord:
    """The addressed event: in the calendar, or (when the emulator lets deleted items be
    read, the default) in Deleted Items. Raises 404 otherwise."""
    record = find_event(mailbox, event_id)
    if record is None and emu.config.deleted_items_readable:
        record = mailbox.deleted_items.get(event_id)
    if record is None:
        raise not_found_item()
    return record


def _attendee_mailboxes(
    emu: GraphEmulator, organiser: Mailbox, record: EventRecord
) -> list[Mailbox]:
    found: list[Mailbox] = []
    for attendee in record.props.get("attendees") or []:
        address = (
            attendee.get("emailAddress", {}).get("address") if isinstance(attendee, dict) else None
        )
        mailbox = emu.state.find_mailbox(address) if isinstance(address, str) else None
        if mailbox is not None and mailbox.key != organiser.key and mailbox not in found:
            found.append(mailbox)
    return found


def _copies(
    emu: GraphEmulator, organiser: Mailbox, record: EventRecord
) -> list[tuple[Mailbox, EventRecord]]:
    """The attendee copies of an organiser's meeting, wherever they are."""
    origin = (organiser.key, record.id)
    return [
        (mailbox, copy)
        for mailbox in emu.state.mailboxes.values()
        for copy in mailbox.events.values()
        if copy.copy_of == origin
    ]


def _sync_copies(emu: GraphEmulator, organiser: Mailbox, record: EventRecord) -> None:
    """A meeting organised in one mailbox appears in each attendee mailbox (people and
    rooms) as that mailbox's own item: isOrganizer false, accepted, its own id; later
    changes of the organiser's event update the copies. Single instances only."""
    if record.type != "singleInstance" or record.copy_of is not None:
        return
    existing = {mailbox.key: copy for mailbox, copy in _copies(emu, organiser, record)}
    now = utc_now()
    for mailbox in _attendee_mailboxes(emu, organiser, record):
        copy = existing.get(mailbox.key)
        if copy is None:
            copy = replace(
                record,
                id=new_event_id(),
                ical_uid=record.ical_uid,
                props=copy_module.deepcopy(record.props),
                extended={},  # extended properties stay with the organiser's item
                transaction_id=None,
                parent_folder_id=mailbox.calendar_id,
                copy_of=(organiser.key, record.id),
                response="accepted",
                exceptions={},
                cancelled_occurrences=set(),
            )
            touch(copy, now)
            mailbox.events[copy.id] = copy
            emu.notifier.publish_change(mailbox, copy.id, "created", copy.change_key)
        else:
            copy.start, copy.end = record.start, record.end
            copy.start_zone, copy.end_zone = record.start_zone, record.end_zone
            copy.is_all_day = record.is_all_day
            copy.props = copy_module.deepcopy(record.props)
            touch(copy, now)
            emu.notifier.publish_change(mailbox, copy.id, "updated", copy.change_key)


def _cancel_copies(emu: GraphEmulator, organiser: Mailbox, record: EventRecord) -> None:
    """The organiser deleted (cancelled) the meeting: each copy gets isCancelled (an
    `updated`), or is removed (`deleted`) from a mailbox that processes meetings itself."""
    now = utc_now()
    for mailbox, copy in _copies(emu, organiser, record):
        if mailbox.auto_processing:
            del mailbox.events[copy.id]
            touch(copy, now)
            emu.notifier.publish_change(mailbox, copy.id, "deleted", copy.change_key)
        else:
            copy.props["isCancelled"] = True
            touch(copy, now)
            emu.notifier.publish_change(mailbox, copy.id, "updated", copy.change_key)


def _notify_master(emu: GraphEmulator, mailbox: Mailbox, master: EventRecord) -> None:
    """One occurrence changed: the master gets a new changeKey and `updated` (several
    times, each with its own changeKey, when the emulator models a room mailbox)."""
    for _ in range(max(1, emu.config.master_updates_per_occurrence_change)):
        touch(master, utc_now())
        emu.notifier.publish_change(mailbox, master.id, "updated", master.change_key)


def _write_answer_zone(emu: GraphEmulator, request: GraphRequest, record: EventRecord) -> str:
    """The zone a create or update is answered in: the event's own (Graph ignores the UTC
    preference there), or the preferred one with the kinder option."""
    if emu.config.answer_writes_in_written_zone:
        return record.start_zone
    return preferred_zone(request) or "UTC"


def _entity(request: GraphRequest, mailbox: Mailbox, rendered: dict[str, Any]) -> dict[str, Any]:
    context = context_url(request, f"users('{mailbox.upn}')/events/$entity")
    return {"@odata.context": context, **rendered}


async def list_calendar_events(
    emu: GraphEmulator, request: GraphRequest, params: Params
) -> GraphResponse:
    """``/users/{id}/calendar/events``: the calendar's events ("List events" of a
    calendar: "Retrieve a list of events in a calendar")."""
    return _list(emu, request, params, with_deleted_items=False)


async def list_mailbox_events(
    emu: GraphEmulator, request: GraphRequest, params: Params
) -> GraphResponse:
    """``/users/{id}/events``: "a list of event objects in the user's mailbox" (the v1.0
    "List events" of a user). Deleted Items is in the mailbox, so by default the events
    there are listed too, the harsher reading; `mailbox_events_include_deleted_items=False`
    lists the calendar's alone."""
    return _list(
        emu,
        request,
        params,
        with_deleted_items=emu.config.mailbox_events_include_deleted_items,
    )


def _list(
    emu: GraphEmulator, request: GraphRequest, params: Params, *, with_deleted_items: bool
) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    zone = preferred_zone(request)
    expansion = parse_expand(request.param("$expand"))
    predicate = parse_filter(request.param("$filter"))
    held = list(mailbox.events.values())
    if with_deleted_items:
        held += mailbox.deleted_items.values()
    records = [r for r in held if predicate is None or predicate(r)]
    records = apply_orderby(records, request.param("$orderby"))
    skip, size, _ = page_window(
        request.query, request.prefs, emu.config.default_page_size, emu.config.max_page_size
    )
    select = request.param("$select")
    page = records[skip : skip + size]
    body: dict[str, Any] = {
        "@odata.context": context_url(request, f"users('{mailbox.upn}')/events"),
        "value": [
            apply_select(
                render_event(
                    r,
                    zone=zone,
                    expansion=expansion,
                    parent_folder=emu.config.event_parent_folder_id,
                ),
                select,
            )
            for r in page
        ],
    }
    if skip + size < len(records):
        body["@odata.nextLink"] = link_with(path_url(request), request.query, skip=str(skip + size))
    return ok(body, headers=preference_headers(request, page_size_applied=True))


def _check_written_zones(emu: GraphEmulator, body: dict[str, Any]) -> None:
    """Writes take Windows names and only the IANA names Graph lists (400 otherwise)."""
    any_iana = emu.config.accept_any_iana_zone
    for field in ("start", "end"):
        value = body.get(field)
        if isinstance(value, dict):
            check_writable_zone(value.get("timeZone"), any_iana=any_iana)
    recurrence = body.get("recurrence")
    range_ = recurrence.get("range") if isinstance(recurrence, dict) else None
    if isinstance(range_, dict):
        check_writable_zone(range_.get("recurrenceTimeZone"), any_iana=any_iana)


async def create(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    body = request.json_object()
    preferred_zone(request)  # validated even where it is not applied
    _check_written_zones(emu, body)
    transaction_id = body.get("transactionId")
    if transaction_id:
        existing = mailbox.events.get(mailbox.transactions.get(str(transaction_id), ""))
        if existing is not None:
            # A retried create: Graph answers with the first event and creates nothing.
            zone = _write_answer_zone(emu, request, existing)
            return ok(
                _entity(
                    request,
                    mailbox,
                    render_event(
                        existing, zone=zone, parent_folder=emu.config.event_parent_folder_id
                    ),
                ),
                201,
            )
    record = create_event(mailbox, body, utc_now())
    mailbox.events[record.id] = record
    if record.transaction_id:
        mailbox.transactions[record.transaction_id] = record.id
    emu.notifier.publish_change(mailbox, record.id, "created", record.change_key)
    _sync_copies(emu, mailbox, record)
    rendered = render_event(
        record,
        zone=_write_answer_zone(emu, request, record),
        parent_folder=emu.config.event_parent_folder_id,
    )
    return ok(_entity(request, mailbox, rendered), 201, preference_headers(request))


async def get(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    record = _find(emu, mailbox, params["eventId"])
    rendered = render_event(
        record,
        zone=preferred_zone(request),
        expansion=parse_expand(request.param("$expand")),
        parent_folder=emu.config.event_parent_folder_id,
    )
    rendered = apply_select(rendered, request.param("$select"))
    return ok(_entity(request, mailbox, rendered), headers=preference_headers(request))


async def update(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    record = _find(emu, mailbox, params["eventId"])
    check_if_match(request, record.change_key)
    body = request.json_object()
    _check_written_zones(emu, body)
    now = utc_now()
    if record.type in ("occurrence", "exception"):
        master = mailbox.events[str(record.series_master_id)]
        assert record.original_start is not None
        changed = make_exception(record) if record.type == "occurrence" else record
        patch_event(changed, body, now)
        master.exceptions[record.original_start] = changed
        _notify_master(emu, mailbox, master)
        record = changed
    elif record.id in mailbox.deleted_items:
        patch_event(record, body, now)  # an item in Deleted Items: no calendar to notify of
    else:
        patch_event(record, body, now)
        emu.notifier.publish_change(mailbox, record.id, "updated", record.change_key)
        _sync_copies(emu, mailbox, record)
    rendered = render_event(
        record,
        zone=_write_answer_zone(emu, request, record),
        parent_folder=emu.config.event_parent_folder_id,
    )
    return ok(_entity(request, mailbox, rendered), headers=preference_headers(request))


async def delete(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    """Soft delete: the event moves to Deleted Items (deleting it there purges it)."""
    return await _remove(emu, request, params, permanent=False)


async def permanent_delete(
    emu: GraphEmulator, request: GraphRequest, params: Params
) -> GraphResponse:
    """``POST .../events/{id}/permanentDelete``: purge the event, wherever it is."""
    return await _remove(emu, request, params, permanent=True)


async def _remove(
    emu: GraphEmulator, request: GraphRequest, params: Params, *, permanent: bool
) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    event_id = params["eventId"]
    if event_id in mailbox.deleted_items and (permanent or emu.config.deleted_items_readable):
        check_if_match(request, mailbox.deleted_items[event_id].change_key)
        del mailbox.deleted_items[event_id]  # out of the calendar already: nothing to notify
        return no_content()
    record = find_event(mailbox, event_id)
    if record is None:
        raise not_found_item()
    check_if_match(request, record.change_key)
    if record.type in ("occurrence", "exception"):
        master = mailbox.events[str(record.series_master_id)]
        assert record.original_start is not None
        master.exceptions.pop(record.original_start, None)
        master.cancelled_occurrences.add(record.original_start)
        _notify_master(emu, mailbox, master)
        return no_content()
    del mailbox.events[record.id]
    if record.transaction_id:
        mailbox.transactions.pop(record.transaction_id, None)
    _cancel_copies(emu, mailbox, record)
    if not permanent:
        # Moving an item to another folder gives it a new changeKey (its id is immutable).
        touch(record, utc_now())
        record.parent_folder_id = mailbox.deleted_items_id
        mailbox.deleted_items[record.id] = record
    emu.notifier.publish_change(mailbox, record.id, "deleted", record.change_key)
    return no_content()
