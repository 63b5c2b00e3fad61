"""What we know of Outlook calendars: our event mappings, busy time, subscriptions."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, SecretStr, SerializationInfo, StringConstraints, field_serializer

from shared.domain.base import BookingId, DomainModel, EmailAddress, ResourceId, UtcDatetime


class ShowAs(StrEnum):
    FREE = "free"
    TENTATIVE = "tentative"
    BUSY = "busy"
    OOF = "oof"
    WORKING_ELSEWHERE = "workingElsewhere"
    UNKNOWN = "unknown"


class Sensitivity(StrEnum):
    NORMAL = "normal"
    PERSONAL = "personal"
    PRIVATE = "private"
    CONFIDENTIAL = "confidential"

    @property
    def hides_details(self) -> bool:
        return self in (Sensitivity.PRIVATE, Sensitivity.CONFIDENTIAL)


class EventMapping(DomainModel):
    """The Outlook event we wrote for one booking in one resource's calendar."""

    resource_id: ResourceId
    booking_id: BookingId
    mailbox: EmailAddress
    event_id: str | None = None  # None until the push created it
    # changeKey our last write returned: a notification carrying it is our own echo.
    change_key: str | None = None
    pushed_start: UtcDatetime | None = None
    pushed_end: UtcDatetime | None = None
    pushed_subject: str | None = None
    booking_version: int = Field(default=0, ge=0)
    synced_at: UtcDatetime | None = None
    last_error: str | None = None
    # Written before a create is sent: a retry re-sends the same transactionId, so Graph
    # returns the event it made instead of making a second one.
    pending_transaction_id: str | None = None
    # Events recreated after an Outlook delete (restore_event, resync): part of the next
    # create's transactionId, so Graph never hands back the deleted event.
    recreations: int = Field(default=0, ge=0)
    # The Outlook user deleted the event and the policy said ignore: not pushed again.
    detached: bool = False


class Unavailability(DomainModel):
    """A busy block mirrored from a foreign Outlook event (or one occurrence of a series).

    Private and confidential events keep no subject or body: `summary` is None.
    """

    resource_id: ResourceId
    event_id: str  # the occurrence's id for recurring series
    series_master_id: str | None = None
    start: UtcDatetime
    end: UtcDatetime
    show_as: ShowAs
    is_all_day: bool = False
    private: bool = False
    summary: Annotated[str, StringConstraints(max_length=500)] | None = None
    change_key: str | None = None


class SubscriptionRecord(DomainModel):
    """A Graph change-notification subscription on one mailbox's events."""

    subscription_id: str
    resource_id: ResourceId
    mailbox: EmailAddress
    client_state: SecretStr  # random per subscription; compared in constant time
    expires_at: UtcDatetime
    created_at: UtcDatetime

    @field_serializer("client_state", when_used="json")
    def _dump_client_state(self, value: SecretStr, info: SerializationInfo) -> str:
        # Masked everywhere except where storage asks for it explicitly.
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal_secrets") else str(value)


class EventType(StrEnum):
    SINGLE_INSTANCE = "singleInstance"
    OCCURRENCE = "occurrence"
    EXCEPTION = "exception"
    SERIES_MASTER = "seriesMaster"


class EventDraft(DomainModel):
    """An event as we want it written in one calendar (subject/body already rendered)."""

    subject: Annotated[str, StringConstraints(max_length=255)]
    body: Annotated[str, StringConstraints(max_length=8000)] = ""
    location: Annotated[str, StringConstraints(max_length=255)] | None = None
    start: UtcDatetime
    end: UtcDatetime
    time_zone: str = "UTC"  # the resource's IANA zone; Graph gets explicit zones
    booking_id: BookingId  # written to our single-value extended property
    show_as: ShowAs = ShowAs.BUSY


class CalendarEvent(DomainModel):
    """An Outlook event as Graph returned it, trimmed to what the sync uses."""

    event_id: str
    change_key: str | None = None
    subject: str | None = None
    body_preview: str | None = None
    start: UtcDatetime
    end: UtcDatetime
    is_all_day: bool = False
    show_as: ShowAs = ShowAs.BUSY
    sensitivity: Sensitivity = Sensitivity.NORMAL
    type: EventType = EventType.SINGLE_INSTANCE
    series_master_id: str | None = None
    is_cancelled: bool = False
    booking_id: str | None = None  # our extended property, when the event is ours
    last_modified_at: UtcDatetime | None = None


class DeltaRound(DomainModel):
    """One complete calendarView/delta round (all pages followed)."""

    events: list[CalendarEvent]
    removed_ids: list[str]
    delta_link: str  # pass back next round; refused links raise GraphSyncStateLost


class GraphSubscription(DomainModel):
    subscription_id: str
    expires_at: UtcDatetime
