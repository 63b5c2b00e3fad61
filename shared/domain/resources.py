"""Resources: people and rooms whose mailboxes we keep in sync."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, Field, StringConstraints

from shared.domain.base import DomainModel, EmailAddress, ResourceId, UtcDatetime


class Direction(StrEnum):
    IN = "in"  # pull Outlook into the booking system
    OUT = "out"  # push bookings to Outlook
    BOTH = "both"
    NONE = "none"

    @property
    def pushes(self) -> bool:
        return self in (Direction.OUT, Direction.BOTH)

    @property
    def pulls(self) -> bool:
        return self in (Direction.IN, Direction.BOTH)


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class OnOutlookDelete(StrEnum):
    CANCEL_BOOKING = "cancel_booking"
    RESTORE_EVENT = "restore_event"
    IGNORE = "ignore"


class OnOutlookMove(StrEnum):
    RESCHEDULE_BOOKING = "reschedule_booking"
    RESTORE_EVENT = "restore_event"
    IGNORE = "ignore"


class CancelledEventMode(StrEnum):
    DELETE = "delete"
    PREFIX = "prefix"  # keep the event, subject prefixed "Cancelled: "


class ConnectionState(StrEnum):
    # Accepted by PUT; subscribing and the first pull run on the queue (ConnectResource).
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING = "failing"
    # Accepted by DELETE ?removeEvents=true; our events are removed on the queue.
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"

    @property
    def is_ending(self) -> bool:
        """Disconnected, or on its way there: nothing is synced any more."""
        return self in (ConnectionState.DISCONNECTING, ConnectionState.DISCONNECTED)


# Placeholders a subject/body template may use; filled from the booking.
TEMPLATE_PLACEHOLDERS = frozenset(
    {"title", "customerName", "customerEmail", "location", "notes", "bookingId", "start", "end"}
)


# One part of a template: an escaped brace, a plain placeholder, or anything else that
# involves a brace (a format spec, a conversion, nesting, an unmatched brace), which
# str.format would act on: `{title:>1000000000}` allocates a gigabyte per render, and
# `{title:>{notes}}` lets a customer's notes choose the width.
_TEMPLATE_PART = re.compile(
    r"\{\{|\}\}|\{(?P<name>[A-Za-z]+)\}|(?P<bad>\{(?:[^{}]|\{[^{}]*\})*\}?|\})"
)


def _check_template(value: str) -> str:
    """Text with `{field}` placeholders only (`{{` and `}}` for literal braces), so that
    rendering is a plain substitution that cannot fail or grow beyond its values."""
    allowed = ", ".join("{" + name + "}" for name in sorted(TEMPLATE_PLACEHOLDERS))
    for part in _TEMPLATE_PART.finditer(value):
        bad, name = part.group("bad"), part.group("name")
        if bad is not None:
            raise ValueError(
                f"'{bad}' is not a plain placeholder: a template may hold only {{field}} "
                "(no format spec, conversion or nesting; '{{' and '}}' for literal braces)"
            )
        if name is not None and name not in TEMPLATE_PLACEHOLDERS:
            raise ValueError(f"uses unknown placeholder {{{name}}}; allowed: {allowed}")
    return value


def _check_time_zone(value: str) -> str:
    if value not in _iana_zones():
        raise ValueError(f"'{value}' is not an IANA time zone such as Europe/London")
    try:
        ZoneInfo(value)
    except ZoneInfoNotFoundError as exc:
        raise ValueError(f"'{value}' is not an IANA time zone such as Europe/London") from exc
    return value


@functools.cache
def _iana_zones() -> frozenset[str]:
    # Computed once: available_timezones() scans the tz database on disk.
    return frozenset(available_timezones())


Template = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_check_template)
]
TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_time_zone)]

DEFAULT_BODY_TEMPLATE = "Booked for {customerName} ({customerEmail}).\n{notes}"


class ResourceSettings(DomainModel):
    """What a tenant admin sets for one resource (the body of PUT /api/resources/{id})."""

    mailbox: EmailAddress
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    time_zone: TimeZoneName = "UTC"
    direction: Direction = Direction.BOTH
    inbound_changes: frozenset[ChangeKind] = frozenset(ChangeKind)
    active: bool = True
    on_outlook_delete: OnOutlookDelete = OnOutlookDelete.IGNORE
    on_outlook_move: OnOutlookMove = OnOutlookMove.IGNORE
    block_working_elsewhere: bool = False
    # Before a booking from the API is confirmed, look at the slot in the live calendar
    # too: Graph's notifications may come late, so the mirror may not show new busy time.
    live_slot_check: bool = True
    cancelled_event_mode: CancelledEventMode = CancelledEventMode.DELETE
    subject_template: Template = "{title}"
    body_template: Template = DEFAULT_BODY_TEMPLATE


class PullPurpose(StrEnum):
    CONNECT = "connect"
    RESYNC = "resync"


class PullProgress(DomainModel):
    """A pull of the calendar's busy time under way, one slice of the mirror window per
    queue message (so that no invocation comes near functionTimeout)."""

    pull_id: str
    purpose: PullPurpose
    window_start: UtcDatetime
    window_end: UtcDatetime
    # The slices before this are pulled; window_start until the first one is.
    pulled_through: UtcDatetime
    started_at: UtcDatetime


# How the mirror keeps busy time in storage. 1: one row per busy block only (read by a
# scan of the resource's partition); 2: also one set of rows per UTC day, in a table of
# their own, which availability reads by RowKey range; 3: those day rows next to the
# slot ledger's, so that availability reads a window's busy time and claims in one range.
# A resource of an earlier layout is read from its block rows until a full round has
# rebuilt its day rows in the current one.
LEGACY_MIRROR_LAYOUT = 1
MIRROR_LAYOUT = 3


class ConnectionStatus(DomainModel):
    state: ConnectionState = ConnectionState.CONNECTED
    reason: str | None = None
    since: UtcDatetime | None = None
    last_sync_at: UtcDatetime | None = None
    mirror_refreshed_at: UtcDatetime | None = None
    # Reconcile rounds failed in a row on a condition a retry of the same message cannot
    # heal (mailbox gone, access denied), and the time before which no timer round runs.
    failed_rounds: int = Field(default=0, ge=0)
    retry_at: UtcDatetime | None = None
    # Set while a busy-time pull goes on (connect, resync); None once it is done.
    pull: PullProgress | None = None


class Resource(DomainModel):
    resource_id: ResourceId
    settings: ResourceSettings
    status: ConnectionStatus = Field(default_factory=ConnectionStatus)
    subscription_id: str | None = None
    subscription_expires_at: UtcDatetime | None = None
    # calendarView/delta state: the link of the last round and the window it covers.
    delta_link: str | None = None
    delta_window_start: UtcDatetime | None = None
    # The timer round (its time) that last ran for this resource, well or failing: a
    # repeat of that round (a page sent twice, a past-due run) is skipped.
    last_round_at: UtcDatetime | None = None
    # The latest timer round that met Graph throttling and waits out its Retry-After: an
    # earlier round's message that comes back meanwhile skips (it gave way to this one).
    throttled_round_at: UtcDatetime | None = None
    # Rows written before layouts were recorded parse as the legacy layout.
    mirror_layout: int = LEGACY_MIRROR_LAYOUT
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @property
    def mirror_layout_current(self) -> bool:
        """Whether the mirror's day rows hold all of its busy time (else only its block
        rows do, until a full round rebuilds the day rows)."""
        return self.mirror_layout >= MIRROR_LAYOUT

    def mirror_is_fresh(self, now: datetime, freshness_minutes: int) -> bool:
        refreshed = self.status.mirror_refreshed_at
        return refreshed is not None and (now - refreshed).total_seconds() <= freshness_minutes * 60


class MailboxClaim(DomainModel):
    """The resource that uses a mailbox (one mailbox is one resource)."""

    mailbox: str  # lower case
    resource_id: ResourceId
    claimed_at: UtcDatetime
