"""Expanding a mailbox into the instances a calendar view shows: single instances,
occurrences (synthesised from their series master), and exceptions.

Graph's window rule: an event is in the view when it overlaps the window, and one that only
touches an edge (ends exactly at the start, or starts exactly at the end) is included too.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime

from local.graph_emulator.ids import occurrence_id, parse_occurrence_id
from local.graph_emulator.recurrence import is_occurrence_start, occurrence_starts
from local.graph_emulator.state import EventRecord, Mailbox


def in_window(start: datetime, end: datetime, window_start: datetime, window_end: datetime) -> bool:
    return start <= window_end and end >= window_start


def synthesize_occurrence(master: EventRecord, original_start: datetime) -> EventRecord:
    """The occurrence of ``master`` originally starting at ``original_start`` (not stored)."""
    return replace(
        master,
        id=occurrence_id(master.id, original_start),
        type="occurrence",
        series_master_id=master.id,
        original_start=original_start,
        start=original_start,
        end=original_start + (master.end - master.start),
        recurrence=None,
        transaction_id=None,
        exceptions={},
        cancelled_occurrences=set(),
    )


def make_exception(occurrence: EventRecord) -> EventRecord:
    """A stored copy of an occurrence that can be changed on its own."""
    return replace(
        occurrence,
        type="exception",
        props=copy.deepcopy(occurrence.props),
        extended=dict(occurrence.extended),
    )


def series_instances(
    master: EventRecord, window_start: datetime, window_end: datetime
) -> list[EventRecord]:
    assert master.recurrence is not None
    duration = master.end - master.start
    found: list[EventRecord] = []
    for original in occurrence_starts(
        master.recurrence, master.start, window_start - duration, window_end
    ):
        if original in master.cancelled_occurrences or original in master.exceptions:
            continue
        occurrence = synthesize_occurrence(master, original)
        if in_window(occurrence.start, occurrence.end, window_start, window_end):
            found.append(occurrence)
    found.extend(
        exception
        for exception in master.exceptions.values()
        if in_window(exception.start, exception.end, window_start, window_end)
    )
    return found


def instances_in_window(
    mailbox: Mailbox, window_start: datetime, window_end: datetime
) -> list[EventRecord]:
    """Every instance in the window, ordered by start time."""
    found: list[EventRecord] = []
    for record in mailbox.events.values():
        if record.type == "seriesMaster":
            found.extend(series_instances(record, window_start, window_end))
        elif in_window(record.start, record.end, window_start, window_end):
            found.append(record)
    found.sort(key=lambda e: (e.start, e.end, e.id))
    return found


def find_event(mailbox: Mailbox, event_id: str) -> EventRecord | None:
    """A stored event, an exception, or a synthesised occurrence by id; None if absent."""
    stored = mailbox.events.get(event_id)
    if stored is not None:
        return stored
    parsed = parse_occurrence_id(event_id)
    if parsed is None:
        return None
    master_id, original = parsed
    master = mailbox.events.get(master_id)
    if master is None or master.recurrence is None:
        return None
    if original in master.exceptions:
        return master.exceptions[original]
    if original in master.cancelled_occurrences:
        return None
    if is_occurrence_start(master.recurrence, master.start, original):
        return synthesize_occurrence(master, original)
    return None
