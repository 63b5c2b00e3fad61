"""Resources: people and rooms whose mailboxes we keep in sync."""

from __future__ import annotations

import functools
import string
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
    CONNECTED = "connected"
    FAILING = "failing"
    DISCONNECTED = "disconnected"


# Placeholders a subject/body template may use; filled from the booking.
TEMPLATE_PLACEHOLDERS = frozenset(
    {"title", "customerName", "customerEmail", "location", "notes", "bookingId", "start", "end"}
)


def _check_template(value: str) -> str:
    try:
        parsed = string.Formatter().parse(value)
        fields = [name for _, name, _spec, _conv in parsed if name is not None]
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"is not a valid template: {exc}") from exc
    unknown = sorted({name for name in fields if name not in TEMPLATE_PLACEHOLDERS})
    if unknown or any(not name for name in fields):
        allowed = ", ".join("{" + name + "}" for name in sorted(TEMPLATE_PLACEHOLDERS))
        shown = ", ".join("{" + name + "}" for name in unknown) or "{}"
        raise ValueError(f"uses unknown placeholder(s) {shown}; allowed: {allowed}")
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
    cancelled_event_mode: CancelledEventMode = CancelledEventMode.DELETE
    subject_template: Template = "{title}"
    body_template: Template = DEFAULT_BODY_TEMPLATE


class ConnectionStatus(DomainModel):
    state: ConnectionState = ConnectionState.CONNECTED
    reason: str | None = None
    since: UtcDatetime | None = None
    last_sync_at: UtcDatetime | None = None
    mirror_refreshed_at: UtcDatetime | None = None


class Resource(DomainModel):
    resource_id: ResourceId
    settings: ResourceSettings
    status: ConnectionStatus = Field(default_factory=ConnectionStatus)
    subscription_id: str | None = None
    subscription_expires_at: UtcDatetime | None = None
    # calendarView/delta state: the link of the last round and the window it covers.
    delta_link: str | None = None
    delta_window_start: UtcDatetime | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def mirror_is_fresh(self, now: datetime, freshness_minutes: int) -> bool:
        refreshed = self.status.mirror_refreshed_at
        return refreshed is not None and (now - refreshed).total_seconds() <= freshness_minutes * 60


class MailboxClaim(DomainModel):
    """The resource that uses a mailbox (one mailbox is one resource)."""

    mailbox: str  # lower case
    resource_id: ResourceId
    claimed_at: UtcDatetime
