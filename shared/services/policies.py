"""What to do when the Outlook user deletes or moves an event we wrote.

Pure decisions (PRODUCT.md "Outlook → bookings"): a primary member's change applies to
the booking (and so to every panel member's event); an additional member's change is
disregarded, or undone under `restore_event`.
"""

from __future__ import annotations

from enum import StrEnum

from shared.domain.bookings import BookingStatus
from shared.domain.resources import OnOutlookDelete, OnOutlookMove


class Action(StrEnum):
    CANCEL_BOOKING = "cancel_booking"
    RESCHEDULE_BOOKING = "reschedule_booking"
    RESTORE_EVENT = "restore_event"
    IGNORE = "ignore"
    # The deleted event was one of two of ours for the booking (a crash left a duplicate):
    # the calendar still holds the booking, so the survivor becomes its event.
    KEEP_DUPLICATE = "keep_duplicate"
    # The booking is cancelled and keeps no event: its deletion is what the cancel wanted,
    # whoever did it first (our cancel's own delete, seen before its answer came back, or
    # the Outlook user): recorded as the cancel's removal, nothing detached.
    GONE_WITH_BOOKING = "gone_with_booking"


def on_delete(
    policy: OnOutlookDelete,
    *,
    is_primary: bool,
    status: BookingStatus,
    keeps_cancelled_event: bool = False,
) -> Action:
    """Our event was deleted in Outlook. `keeps_cancelled_event`: the resource keeps a
    cancelled booking's event (prefixed) rather than deleting it."""
    if not status.holds_time:
        # The booking is cancelled already: the event was meant to go, or to stay
        # prefixed, in which case the Outlook user's delete is left as it is.
        return Action.IGNORE if keeps_cancelled_event else Action.GONE_WITH_BOOKING
    if policy is OnOutlookDelete.RESTORE_EVENT:
        return Action.RESTORE_EVENT
    if policy is OnOutlookDelete.CANCEL_BOOKING and is_primary:
        return Action.CANCEL_BOOKING
    return Action.IGNORE


def on_move(policy: OnOutlookMove, *, is_primary: bool, status: BookingStatus) -> Action:
    """Our event's start or end was changed in Outlook."""
    if not status.holds_time:
        return Action.IGNORE
    if policy is OnOutlookMove.RESTORE_EVENT:
        return Action.RESTORE_EVENT
    if policy is OnOutlookMove.RESCHEDULE_BOOKING and is_primary:
        return Action.RESCHEDULE_BOOKING
    return Action.IGNORE
