"""Updating an event mapping under its ETag, re-reading when someone else wrote first.

A mapping is written by the push worker, the inbound worker and reconciliation, often at
the same moment (a push's answer and the notification of the same write arrive
together). Each writer states its change as a function of the latest version, so a
conflict costs a re-read, never a lost write or an aborted push.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.domain.calendar import EventMapping
from shared.domain.errors import ConcurrencyConflict
from shared.ports import EventMappingRepository, Stored

ATTEMPTS = 5


async def update_mapping(
    mappings: EventMappingRepository,
    resource_id: str,
    booking_id: str,
    change: Callable[[EventMapping], EventMapping | None],
    *,
    first: Stored[EventMapping] | None = None,
) -> Stored[EventMapping] | None:
    """Apply `change` to the latest stored mapping and write it under that version's ETag
    (starting from `first` when the caller just read it), re-reading and re-applying on
    a conflict. Returns what was written, or None when the mapping is absent or `change`
    returned None (nothing to do).

    Raises ConcurrencyConflict when the mapping kept changing for ATTEMPTS rounds.
    """
    stored = first
    for _ in range(ATTEMPTS):
        if stored is None:
            stored = await mappings.get(resource_id, booking_id)
            if stored is None:
                return None
        changed = change(stored.value)
        if changed is None:
            return None
        try:
            return await mappings.update(changed, stored.etag)
        except ConcurrencyConflict:
            stored = None
    raise ConcurrencyConflict(f"mapping of booking {booking_id} on {resource_id} kept changing")
