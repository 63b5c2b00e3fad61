"""Ports: what the services need from the outside world, as typing.Protocols.

Adapters in shared/adapters implement them against Azure and Microsoft Graph; unit tests
implement them in memory. Every repository method that changes an entity either inserts
it if absent (raising AlreadyExists) or replaces it under the ETag it was read with
(raising ConcurrencyConflict), so concurrent writers never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from shared.domain.bookings import Booking
from shared.domain.calendar import (
    BusyTime,
    CalendarCheck,
    CalendarEvent,
    DeltaRound,
    EventDraft,
    EventMapping,
    GraphSubscription,
    SubscriptionRecord,
    Unavailability,
)
from shared.domain.claims import DayLedger
from shared.domain.errors import DomainError, GraphError
from shared.domain.resources import MailboxClaim, Resource
from shared.domain.sync_log import SyncLogEntry, SyncLogPage, SyncOutcome

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Stored(Generic[M]):
    """A model as read from storage, with the ETag a later update must match."""

    value: M
    etag: str


class ResourceRepository(Protocol):
    async def get(self, resource_id: str) -> Stored[Resource] | None: ...
    async def add(self, resource: Resource) -> Stored[Resource]: ...
    async def update(self, resource: Resource, etag: str) -> Stored[Resource]: ...
    async def delete(self, resource_id: str) -> None: ...
    async def list_all(self) -> list[Stored[Resource]]: ...


class BookingRepository(Protocol):
    async def get(self, booking_id: str) -> Stored[Booking] | None: ...
    async def add(self, booking: Booking) -> Stored[Booking]: ...
    async def update(self, booking: Booking, etag: str) -> Stored[Booking]: ...


class EventMappingRepository(Protocol):
    async def get(self, resource_id: str, booking_id: str) -> Stored[EventMapping] | None: ...
    async def find_by_event(
        self, resource_id: str, event_id: str
    ) -> Stored[EventMapping] | None: ...
    async def add(self, mapping: EventMapping) -> Stored[EventMapping]: ...
    async def update(self, mapping: EventMapping, etag: str) -> Stored[EventMapping]: ...
    async def list_for_resource(self, resource_id: str) -> list[Stored[EventMapping]]: ...


class CalendarChecks(Protocol):
    """Which bookings' events each resource's calendar has not confirmed yet."""

    async def mark(self, resource_id: str, versions: Mapping[str, int]) -> None:
        """Record (or refresh) the checks of these bookings (id → the version being
        written) on one resource; unconditional, so any writer may mark."""
        ...

    async def pending(self, resource_id: str) -> list[Stored[CalendarCheck]]: ...
    async def clear(self, check: Stored[CalendarCheck]) -> bool:
        """Remove the check unless it was marked again since it was read; True if removed."""
        ...


class MailboxClaims(Protocol):
    """One mailbox is one resource: which resource holds each mailbox (case-insensitive)."""

    async def holder(self, mailbox: str) -> Stored[MailboxClaim] | None: ...
    async def claim(
        self, mailbox: str, resource_id: str, etag: str | None, claimed_at: datetime
    ) -> bool:
        """Insert (etag None) or take over that version of a claim; False if beaten."""
        ...

    async def release(self, mailbox: str, resource_id: str) -> None:
        """Drop the claim if `resource_id` holds it; idempotent."""
        ...


class UnavailabilityRepository(Protocol):
    async def replace_event(
        self, resource_id: str, event_id: str, blocks: list[Unavailability]
    ) -> None:
        """Make the blocks stored for one event (a series: all its occurrences) exactly
        `blocks`; an empty list removes them. Idempotent."""
        ...

    async def remove_event(self, resource_id: str, event_id: str) -> None:
        """Remove the blocks of an event gone from the calendar: a single event's, a
        series' (by its master's id) or one occurrence's (by the occurrence's own id,
        wherever its series is grouped). Idempotent."""
        ...

    async def replace_events(
        self, resource_id: str, events: Mapping[str, list[Unavailability] | None]
    ) -> None:
        """For each event id, `replace_event` with its blocks, or `remove_event` when they
        are None, as one write: the rows of all of them in as few transactions as the
        partition allows, their day rows updated once. Idempotent; not atomic."""
        ...

    async def replace_all(self, resource_id: str, blocks: list[Unavailability]) -> None:
        """Make the resource's whole mirror exactly `blocks` (of every event), writing
        only what differs. Idempotent; not atomic (a failure halfway leaves a mix that
        the next full replace heals)."""
        ...

    async def replace_starting_between(
        self,
        resource_id: str,
        start: datetime | None,
        end: datetime | None,
        blocks: list[Unavailability],
    ) -> None:
        """Make the blocks that start in [start, end) exactly `blocks` (None: unbounded on
        that side), writing only what differs; blocks starting elsewhere stay. Every one
        of `blocks` must start in the range. Idempotent; not atomic."""
        ...

    async def list_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        """The blocks overlapping [start, end), by start, from the rows kept per day (one
        range of days: the cost follows the window's days, not the calendar's size).
        Complete only for a resource whose mirror layout is current."""
        ...

    async def scan_between(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Unavailability]:
        """The same from the block rows, by a scan of the resource's partition: for a
        resource whose day rows are not built yet (a legacy mirror layout)."""
        ...

    async def list_for_resource(self, resource_id: str) -> list[Unavailability]: ...


@dataclass(frozen=True, slots=True)
class DayView:
    """What a window of a resource's days holds: the mirror's busy time (times and
    show-as only, no event details, by start) and the slot ledger's day rows."""

    busy: list[BusyTime]
    ledger: list[DayLedger]


class DayViews(Protocol):
    async def day_view(self, resource_id: str, start: datetime, end: datetime) -> DayView:
        """The mirror's blocks overlapping [start, end), each once, and the ledger rows of
        the days it touches, in one read: both are kept by UTC day in one partition (what
        availability asks, at a cost that follows the window's days). The busy time is
        complete only for a resource whose mirror layout is current."""
        ...


class SubscriptionRepository(Protocol):
    async def get(self, subscription_id: str) -> Stored[SubscriptionRecord] | None: ...
    async def list_all(self) -> list[Stored[SubscriptionRecord]]: ...
    async def save(self, record: SubscriptionRecord) -> Stored[SubscriptionRecord]: ...
    async def delete(self, subscription_id: str) -> None: ...


class SlotLedger(Protocol):
    async def read_days(
        self, resource_id: str, start: datetime, end: datetime
    ) -> list[Stored[DayLedger]]:
        """The existing day rows touched by [start, end), oldest day first."""
        ...

    async def write_days(self, rows: list[tuple[DayLedger, str | None]]) -> None:
        """Write one resource's day rows atomically: an ETag replaces exactly that
        version, None inserts. Raises ConcurrencyConflict or AlreadyExists when another
        writer got there first (nothing is written then)."""
        ...


class IdempotencyRecord(BaseModel):
    key: str
    request_hash: str
    booking_id: str
    response_body: str | None = None  # the 201's body; None until a request finished
    # While a request with this key runs (until then, or until it failed), another gets
    # 409; afterwards a retry resumes the booking that request may have written.
    in_progress_until: datetime | None = None
    created_at: datetime


class IdempotencyStore(Protocol):
    async def get(self, key: str) -> Stored[IdempotencyRecord] | None: ...
    async def add(self, record: IdempotencyRecord) -> Stored[IdempotencyRecord]: ...
    async def update(self, record: IdempotencyRecord, etag: str) -> Stored[IdempotencyRecord]: ...
    async def delete(self, key: str) -> None: ...
    async def purge_older_than(self, cutoff: datetime) -> int:
        """Forget records last written before `cutoff`; returns how many."""
        ...


class Leases(Protocol):
    async def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take the named lease for `seconds` unless someone else holds it unexpired."""
        ...

    async def release(self, name: str, holder: str) -> None: ...


class SyncLog(Protocol):
    async def append(self, entry: SyncLogEntry) -> None: ...
    async def append_many(self, entries: Sequence[SyncLogEntry]) -> None:
        """Append every entry, in one transaction per resource and 100 entries."""
        ...

    async def page(
        self,
        resource_id: str,
        limit: int,
        *,
        outcome: SyncOutcome | None = None,
        after: str | None = None,
    ) -> SyncLogPage:
        """Up to `limit` entries, newest first, with `outcome` only when given, starting
        after the cursor `after` (a previous page's `next_page`)."""
        ...

    async def purge_older_than(self, resource_id: str, cutoff: datetime) -> int:
        """Delete the resource's entries from before `cutoff`; returns how many."""
        ...


class MessageQueue(Protocol):
    """Sends queue messages in the encoding the Functions host expects."""

    async def send(
        self, queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        """Enqueue a model (or JSON already rendered from one)."""
        ...


class StorageProbe(Protocol):
    async def check(self) -> None:
        """Raises StorageUnavailable when storage does not answer."""
        ...


@dataclass(frozen=True)
class EventWrite:
    """One write in a batch: create (needs draft + transaction_id), update (event_id +
    draft) or delete (event_id)."""

    mailbox: str
    op: Literal["create", "update", "delete"]
    draft: EventDraft | None = None
    event_id: str | None = None
    transaction_id: str | None = None
    # An update: the changeKey the event had when last seen. When the update's answer may
    # have been lost, the event is read before the update is sent again; it is sent again
    # only while the event still shows this changeKey (or when it is None: unknown).
    change_key: str | None = None


@dataclass(frozen=True)
class EventWriteResult:
    """The outcome of one EventWrite: the event written, or the domain error it met.
    A delete has neither (success) or an error."""

    event: CalendarEvent | None = None
    error: DomainError | None = None
    # Graph refused the zone this name was sent as, so the event was written in UTC (the
    # same instants): the caller must make that visible, never take it silently.
    refused_time_zone: str | None = None
    # An attempt before the one answered met no sure answer (none in time, a 5xx). For a
    # create, Graph may still be making that attempt's event: its transactionId only
    # dedupes an event already made, so a second event may appear after this answer.
    earlier_attempt_unanswered: bool = False


class CalendarGateway(Protocol):
    """Microsoft Graph, as the services need it. Raises the Graph* domain errors.

    Every create carries a transactionId so a retried POST never duplicates an event.
    """

    async def check_reachable(self) -> None:
        """Raises a Graph* error unless Graph answers our token (for health)."""
        ...

    async def check_mailbox(self, mailbox: str) -> None: ...
    async def create_event(
        self, mailbox: str, draft: EventDraft, transaction_id: str
    ) -> CalendarEvent: ...
    async def update_event(
        self, mailbox: str, event_id: str, draft: EventDraft
    ) -> CalendarEvent: ...
    async def delete_event(self, mailbox: str, event_id: str) -> None:
        """Idempotent: an event already gone is not an error; a mailbox that is not
        found is (GraphMailboxNotFound)."""
        ...

    async def get_event(self, mailbox: str, event_id: str) -> CalendarEvent | None: ...
    async def get_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | None]:
        """Several events of one mailbox (None: gone), in as few requests as Graph allows."""
        ...

    async def read_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | GraphError | None]:
        """As `get_events`, but what each read failed with is that event's answer: one
        event's failure does not stop the others from being read."""
        ...

    async def list_our_events(
        self, mailbox: str, *, limit: int | None = None
    ) -> list[CalendarEvent]:
        """Every event carrying our booking-id extended property (never a foreign one);
        with `limit`, at least that many of them where there are, not necessarily all."""
        ...

    async def find_events_for_booking(self, mailbox: str, booking_id: str) -> list[CalendarEvent]:
        """Our events for the booking in the calendar (one, unless a crash left a
        duplicate; none in Deleted Items)."""
        ...

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]: ...
    async def calendar_views(
        self, mailboxes: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[CalendarEvent]]:
        """calendarView of [start, end] in each mailbox, all in as few requests as Graph
        allows (one `$batch` for up to 20 mailboxes), keyed by mailbox as given. Raises
        the first Graph* error a view met, with its `mailbox` set."""
        ...

    async def series_instances(
        self, mailbox: str, master_id: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        """The occurrences and exceptions of one series in [start, end]; none when the
        series is gone."""
        ...

    async def delta(
        self, mailbox: str, start: datetime, end: datetime, delta_link: str | None
    ) -> DeltaRound: ...
    async def write_batch(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        """Many writes, possibly across mailboxes, sent as $batch (20 per request);
        results in the order of `writes`. A delete of an event already gone succeeds;
        a GraphMailboxNotFound result names a missing mailbox, another GraphNotFound an
        update's missing event."""
        ...

    async def create_subscription(
        self,
        mailbox: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires_at: datetime,
    ) -> GraphSubscription:
        """Raises GraphConflict when the app already has a subscription on the mailbox."""
        ...

    async def renew_subscription(
        self, subscription_id: str, expires_at: datetime
    ) -> GraphSubscription: ...
    async def reauthorize_subscription(self, subscription_id: str) -> None: ...
    async def list_subscriptions(self) -> list[GraphSubscription]:
        """The app's subscriptions as Graph lists them (never with their clientState)."""
        ...

    async def delete_subscription(self, subscription_id: str) -> None: ...
