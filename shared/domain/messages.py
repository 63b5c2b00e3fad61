"""Queue message models. Serialized with model_dump_json / model_validate_json."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from shared.domain.base import BookingId, DomainModel, ResourceId, UtcDatetime

SYNC_OUTBOUND_QUEUE = "sync-outbound"
SYNC_INBOUND_QUEUE = "sync-inbound"
BOOKING_EVENTS_QUEUE = "booking-events"
# Work queue of the signed webhook POSTs (when BOOKING_EVENTS_WEBHOOK_URL is set), kept
# apart from booking-events so that queue stays the booking system's to consume.
BOOKING_WEBHOOKS_QUEUE = "booking-webhooks"
QUEUES = (SYNC_OUTBOUND_QUEUE, SYNC_INBOUND_QUEUE, BOOKING_EVENTS_QUEUE, BOOKING_WEBHOOKS_QUEUE)


# A queue message holds at most 64 KiB; a change is well under 400 bytes of JSON.
MAX_CHANGES_PER_MESSAGE = 100
# Queue Storage takes messages of up to 64 KiB of text, and base64 (host.json's
# messageEncoding) turns 3 bytes into 4: a message's JSON may hold 48 KiB.
MAX_MESSAGE_BYTES = 48 * 1024


def poison_queue(name: str) -> str:
    return f"{name}-poison"


class PushBooking(DomainModel):
    """sync-outbound: make every out-direction resource's calendar match this booking."""

    kind: Literal["push_booking"] = "push_booking"
    booking_id: BookingId
    booking_version: int = Field(ge=1)
    include_past: bool = False  # resyncs push past bookings too


class ResyncResource(DomainModel):
    """sync-outbound: delete our events in one calendar and recreate them; re-pull."""

    kind: Literal["resync_resource"] = "resync_resource"
    resource_id: ResourceId
    reason: str


class ConnectResource(DomainModel):
    """sync-outbound: finish connecting a resource to `mailbox` (subscribe, pull its busy
    time). Off the PUT, because Graph's validation POST needs an HTTP invocation of its
    own, which a PUT holding the instance's only one would never let run."""

    kind: Literal["connect_resource"] = "connect_resource"
    resource_id: ResourceId
    mailbox: str


class PullBusyTime(DomainModel):
    """sync-outbound: pull one slice of a resource's calendar into its mirror, then send
    the next slice's message (a connect's or a resync's pull; the resource's
    `status.pull` says which pull is current and how far it has come)."""

    kind: Literal["pull_busy_time"] = "pull_busy_time"
    resource_id: ResourceId
    pull_id: str
    slice_start: UtcDatetime
    slice_days: int = Field(default=7, ge=1)


class DisconnectResource(DomainModel):
    """sync-outbound: remove our events from the calendar of a resource that DELETE
    ?removeEvents=true left `disconnecting`, a chunk per message, each sending the next;
    then mark it disconnected. Off the DELETE, which Azure cuts off after 230 s."""

    kind: Literal["disconnect_resource"] = "disconnect_resource"
    resource_id: ResourceId
    mailbox: str


class ReconcileResource(DomainModel):
    """sync-outbound: one reconcile round for one resource."""

    kind: Literal["reconcile_resource"] = "reconcile_resource"
    resource_id: ResourceId
    scheduled_at: UtcDatetime
    # The timer round that asked for it (from its ReconcilePage); None when something
    # else did (a new subscription, a `missed` lifecycle event), which always runs.
    round_at: UtcDatetime | None = None
    # From a past-due timer run: skipped when the resource's last round was within
    # RECONCILE_REPEAT_WITHIN_MINUTES (the interrupted occurrence may have reached it).
    past_due: bool = False
    # How many times it was sent again because another round held the resource's lease.
    deferrals: int = Field(default=0, ge=0)


# Resources per ReconcilePage: 100 ids of at most 64 characters stay far under a queue
# message's 48 KiB of JSON, and one page's sends take well under a second.
RECONCILE_PAGE_SIZE = 100


class ReconcilePage(DomainModel):
    """sync-outbound: a page of the timer's fan-out; its worker sends one ReconcileResource
    per resource. Sent twice (a retried send), its resources' rounds are skipped as
    repeats of `round_at`; from a past-due timer run, as repeats of a round shortly before."""

    kind: Literal["reconcile_page"] = "reconcile_page"
    round_at: UtcDatetime
    past_due: bool = False
    resource_ids: Annotated[list[ResourceId], Field(min_length=1, max_length=RECONCILE_PAGE_SIZE)]


OutboundWork = Annotated[
    PushBooking
    | ResyncResource
    | ReconcileResource
    | ReconcilePage
    | ConnectResource
    | PullBusyTime
    | DisconnectResource,
    Field(discriminator="kind"),
]


class EventChange(DomainModel):
    """sync-inbound: one change notification Graph delivered, validated and trimmed."""

    kind: Literal["event_change"] = "event_change"
    subscription_id: str
    resource_id: ResourceId
    change_type: Literal["created", "updated", "deleted"]
    event_id: str
    change_key: str | None = None
    received_at: UtcDatetime


class EventChanges(DomainModel):
    """sync-inbound: the changes one notification POST carried for one subscription.
    A POST for several subscriptions wraps theirs in one InboundBatch."""

    kind: Literal["event_changes"] = "event_changes"
    subscription_id: str
    resource_id: ResourceId
    changes: Annotated[list[EventChange], Field(min_length=1, max_length=MAX_CHANGES_PER_MESSAGE)]


class LifecycleEvent(DomainModel):
    """sync-inbound: a Graph lifecycle notification for one subscription."""

    kind: Literal["lifecycle"] = "lifecycle"
    subscription_id: str
    resource_id: ResourceId
    lifecycle_event: Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
    received_at: UtcDatetime


SubscriptionWork = Annotated[EventChanges | LifecycleEvent, Field(discriminator="kind")]


class InboundBatch(DomainModel):
    """sync-inbound: what one notification POST carried for several subscriptions, in one
    queue message, so that the webhook writes once per POST whatever the POST holds. Each
    item is handled as if it had come in a message of its own. At most
    MAX_CHANGES_PER_MESSAGE changes in all (a lifecycle event counts as one) and
    MAX_MESSAGE_BYTES of JSON."""

    kind: Literal["inbound_batch"] = "inbound_batch"
    items: Annotated[
        list[SubscriptionWork], Field(min_length=1, max_length=MAX_CHANGES_PER_MESSAGE)
    ]


InboundWork = Annotated[
    EventChange | EventChanges | LifecycleEvent | InboundBatch, Field(discriminator="kind")
]


class BookingEventType(StrEnum):
    CREATED = "booking.created"
    CANCELLED = "booking.cancelled"
    RESCHEDULED = "booking.rescheduled"
    SYNC_FAILED = "booking.sync_failed"
    CONFLICT = "booking.conflict"


class EventSource(StrEnum):
    API = "api"
    OUTLOOK = "outlook"
    RECONCILE = "reconcile"


class BookingEvent(DomainModel):
    """booking-events: `{type, bookingId, occurredAt, source, data}` for the booking system.

    `event_id` is stable for one change, so consumers (and the webhook's `webhook-id`)
    can drop duplicates.
    """

    event_id: str
    type: BookingEventType
    booking_id: BookingId
    occurred_at: UtcDatetime
    source: EventSource
    data: dict[str, Any] = Field(default_factory=dict)


class WebhookDelivery(DomainModel):
    """booking-webhooks: one booking event to POST, and how many tries it has had."""

    kind: Literal["webhook_delivery"] = "webhook_delivery"
    event: BookingEvent
    attempt: int = Field(default=1, ge=1)
