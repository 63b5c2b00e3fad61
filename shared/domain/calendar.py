"""What we know of Outlook calendars: our event mappings, busy time, subscriptions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import Field, SecretStr, SerializationInfo, StringConstraints, field_serializer

from shared.domain.base import BookingId, DomainModel, EmailAddress, ResourceId, UtcDatetime
from shared.domain.errors import GraphThrottled


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


class WrittenTimes(DomainModel):
    """Times we sent to an event in a write whose success is not recorded yet."""

    booking_version: int = Field(ge=0)
    start: UtcDatetime
    end: UtcDatetime
    sent_at: UtcDatetime
    # Answered with an error that may still have been applied (a 5xx, no answer): the
    # event may show these times, but no write is under way any more.
    answered: bool = False

    def still_in_flight(self, now: datetime) -> bool:
        return not self.answered and self.sent_at > now - timedelta(seconds=WRITE_IN_FLIGHT_SECONDS)


# How many unanswered writes a mapping remembers (a write that met no answer stays until
# a later one is recorded); more would mean a mailbox failing for a long time anyway.
MAX_WRITES_IN_FLIGHT = 5
# How many changeKeys of the event's earlier states a mapping remembers (see
# EventMapping.earlier_change_keys): a read older than the mapping read after it is at
# most a few writes behind.
MAX_EARLIER_CHANGE_KEYS = 5
# How long an unanswered write may still land: a live worker retries a write for up to
# the gateway's retry budget (60 s of waiting plus the attempts themselves), and records
# the answer; only a worker that died mid-write leaves one unanswered for good.
WRITE_IN_FLIGHT_SECONDS = 120
# How long whatever waits for a create still on its way (a cancel's push, the removal of
# our events on a disconnect) waits before it looks again.
CREATE_WAIT_SECONDS = 5


class EventMapping(DomainModel):
    """The Outlook event we wrote for one booking in one resource's calendar."""

    resource_id: ResourceId
    booking_id: BookingId
    mailbox: EmailAddress
    event_id: str | None = None  # None until the push created it
    # changeKey our last write returned: a notification carrying it is our own echo.
    change_key: str | None = None
    # changeKeys the same event had before (our earlier writes, or changes already
    # handled), newest last. A read of the event can be older than the mapping read after
    # it: taken before our latest write landed, it shows one of these, not an Outlook edit.
    earlier_change_keys: list[str] = Field(default_factory=list)
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
    # Times of writes sent (recorded before sending) whose answers are not recorded yet.
    # The event may show any of them before the answer comes back: an event at one of
    # these times is our own write, never an Outlook move.
    writes_in_flight: list[WrittenTimes] = Field(default_factory=list)
    # The create that made the event had an earlier attempt Graph never answered (slow
    # past the client's timeout): until this instant, that attempt may still make a
    # second event. Its notification has it removed as a duplicate; a disconnect that
    # removes our events, which no notification reaches, waits for it.
    stray_create_until: UtcDatetime | None = None
    # Graph refused the resource's time zone on our last write, so the event is in UTC
    # (same instants): shown on the booking's sync state until a write keeps the zone.
    zone_warning: str | None = None

    @property
    def waits_out_throttling(self) -> bool:
        """Whether the last write failed only because Graph throttled it: its message is
        sent again after the Retry-After, counting no try, so the write is still to come."""
        return self.last_error is not None and self.last_error.startswith(f"{GraphThrottled.code}:")

    def create_may_land(self, now: datetime) -> bool:
        """Whether a create of this mapping's event was sent, is not recorded, and may
        still make its event (one of its writes is still in flight)."""
        return (
            self.event_id is None
            and self.pending_transaction_id is not None
            and any(w.still_in_flight(now) for w in self.writes_in_flight)
        )

    def event_may_still_land(self, now: datetime) -> bool:
        """Whether an attempt of a create may still make an event here: the create is
        not recorded yet (`create_may_land`), or it is, but an earlier attempt of it was
        never answered (`stray_create_until`)."""
        stray = self.stray_create_until is not None and self.stray_create_until > now
        return stray or self.create_may_land(now)

    def knows_change_key(self, change_key: str | None) -> bool:
        """Whether an event (or its notification) carrying `change_key` shows a state of
        this event that we wrote or already handled: the latest, or an earlier one."""
        if change_key is None:
            return False
        return change_key == self.change_key or change_key in self.earlier_change_keys

    def keeping_change_key(self, change_key: str | None) -> dict[str, Any]:
        """The update that makes `change_key` the event's latest known one, the one it
        replaces remembered among the earlier ones (same event only)."""
        earlier = self.earlier_change_keys
        if self.change_key is not None and self.change_key != change_key:
            earlier = [*earlier, self.change_key][-MAX_EARLIER_CHANGE_KEYS:]
        return {"change_key": change_key, "earlier_change_keys": earlier}

    def written_by_us(self, start: datetime, end: datetime) -> bool:
        """Whether an event at [start, end) shows a write of ours (recorded or in flight)."""
        if (start, end) == (self.pushed_start, self.pushed_end):
            return True
        return any((w.start, w.end) == (start, end) for w in self.writes_in_flight)


class CalendarCheck(DomainModel):
    """A booking whose event in one resource's calendar is not confirmed yet.

    Marked (upserted) before anything changes what the calendar should hold: a booking
    change, a push. Reconciliation reads a resource's checks, looks at just those events,
    heals what differs and removes a check once the calendar agrees with the booking at
    `booking_version` or later. So a push that failed for longer than the queue retries,
    or an event deleted before anyone looked, is found by the next ordinary round.
    """

    resource_id: ResourceId
    booking_id: BookingId
    booking_version: int = Field(ge=1)
    marked_at: UtcDatetime


def mirror_start(now: datetime, days_back: int) -> datetime:
    """Where the unavailability mirror's window begins: midnight UTC `days_back` days
    before `now` (MIRROR_DAYS_BACK). No busy time before it is kept."""
    return (now - timedelta(days=days_back)).replace(hour=0, minute=0, second=0, microsecond=0)


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


class BusyTime(NamedTuple):
    """A mirrored block as availability needs it: its time and how it is shown, nothing
    about the event (kept apart from Unavailability so that a window of hundreds of them
    costs no model validation)."""

    start: datetime
    end: datetime
    show_as: ShowAs


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
    resource: str | None = None  # as Graph lists it, e.g. /users/room-1@contoso.com/events


def event_to_keep(events: Sequence[CalendarEvent]) -> CalendarEvent:
    """Which of a booking's several events of ours stays its event (the others are
    duplicates), the same whichever path asks: one Graph gave a modification time, then
    the smallest id."""
    return min(events, key=lambda e: (e.last_modified_at is None, e.event_id))
