"""Bookings and their lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from shared.domain.base import (
    BookingId,
    DomainModel,
    EmailAddress,
    LongText,
    PositiveVersion,
    ResourceId,
    ShortText,
    UtcDatetime,
    refuse_control_characters,
)
from shared.domain.calendar import mirror_start
from shared.domain.errors import BeyondHorizon, DurationTooLong, StartInPast

MAX_RESOURCES_PER_BOOKING = 20
# A booking's day rows of the slot ledger are written in one Table Storage transaction
# (at most 100 entities), so the limit must stay well below 100 days.
MAX_BOOKING_DURATION = timedelta(days=31)


class BookingStatus(StrEnum):
    CONFIRMED = "confirmed"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"

    @property
    def holds_time(self) -> bool:
        """Whether a booking in this status occupies its resources' time."""
        return self is not BookingStatus.CANCELLED


class Customer(DomainModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: EmailAddress


class TimeRange(DomainModel):
    """A half-open interval [start, end) in UTC; touching ranges do not overlap."""

    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _start_before_end(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def overlaps(self, other: TimeRange) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class BookingWindow:
    """When a booking may be: the one rule for create, reschedule, availability and
    Outlook moves.

    A booking starts no earlier than now less `grace` (a client's clock a little behind
    ours; anything older would never be pushed), ends by the horizon, `horizon_days`
    from now (the unavailability mirror's MIRROR_DAYS_AHEAD: beyond it Outlook busy time
    is not known, so a booking there could overlap it unseen), and lasts at most
    `max_duration`."""

    grace: timedelta
    horizon_days: int
    max_duration: timedelta = MAX_BOOKING_DURATION
    # The mirror's MIRROR_DAYS_BACK: it keeps busy time from midnight UTC that many days
    # ago; what availability is asked of must start by then.
    history_days: int = 1

    def check_booking(self, time_range: TimeRange, now: datetime) -> None:
        """Raises DurationTooLong, StartInPast or BeyondHorizon (all InvalidInput)."""
        if time_range.end - time_range.start > self.max_duration:
            days = self.max_duration / timedelta(days=1)
            raise DurationTooLong(
                f"a booking may last at most {days:g} days",
                details=[{"field": "end", "message": f"at most {days:g} days after start"}],
            )
        earliest = now - self.grace
        if time_range.start < earliest:
            minutes = self.grace / timedelta(minutes=1)
            raise StartInPast(
                f"start must not be in the past (more than {minutes:g} minutes before now, "
                f"{earliest.isoformat()})",
                details=[{"field": "start", "message": "in the past"}],
            )
        self.check_within_horizon(time_range, now)

    def check_known(self, time_range: TimeRange, now: datetime) -> None:
        """Raises BeyondHorizon when `time_range` starts before the busy time the mirror
        keeps (midnight UTC `history_days` ago) or ends after its horizon: outside them
        the mirror knows no busy time, and an answer would show the time free."""
        earliest = mirror_start(now, self.history_days)
        if time_range.start < earliest:
            raise BeyondHorizon(
                f"start must be on or after {earliest.isoformat()} ({self.history_days} "
                "days back, from midnight UTC): busy time before it is not kept",
                details=[{"field": "start", "message": f"before {earliest.isoformat()}"}],
            )
        self.check_within_horizon(time_range, now)

    def check_within_horizon(self, time_range: TimeRange, now: datetime) -> None:
        """Raises BeyondHorizon when `time_range` ends after the horizon."""
        horizon = now + timedelta(days=self.horizon_days)
        if time_range.end > horizon:
            raise BeyondHorizon(
                f"end must be within the horizon of {self.horizon_days} days from now "
                f"({horizon.isoformat()}): busy time beyond it is not known",
                details=[{"field": "end", "message": f"after the horizon, {horizon.isoformat()}"}],
            )


class BookingRequest(DomainModel):
    """The body of POST /api/bookings."""

    resource_ids: Annotated[
        list[ResourceId], Field(min_length=1, max_length=MAX_RESOURCES_PER_BOOKING)
    ]
    start: UtcDatetime
    end: UtcDatetime
    title: ShortText
    customer: Customer
    location: Annotated[str, StringConstraints(max_length=255)] | None = None
    notes: LongText | None = None
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    # Field validators, not a model one: the refusal names the field to fix. Only the
    # request refuses control characters: bookings stored before it still read. The
    # external id is in no event, but every booking event carries it to the frontends.
    @field_validator("title", "location", "notes", "external_id")
    @classmethod
    def _writable_text(cls, value: str | None) -> str | None:
        return refuse_control_characters(value)

    @field_validator("customer")
    @classmethod
    def _writable_customer(cls, customer: Customer) -> Customer:
        try:
            refuse_control_characters(customer.name)
        except ValueError as exc:
            raise ValueError(f"customer.name {exc}") from None
        return customer

    @field_validator("resource_ids")
    @classmethod
    def _distinct(cls, resource_ids: list[str]) -> list[str]:
        if len(set(resource_ids)) != len(resource_ids):
            raise ValueError("resourceIds must not repeat a resource")
        return resource_ids

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")  # absent when start itself was refused
        if start is not None and end <= start:
            raise ValueError("end must be after start")
        return end


class OutboxMessage(DomainModel):
    """A queue message written with the booking change that causes it, sent afterwards.

    `claimed_by` names the one request sending it until `claimed_until`: the request
    that wrote the change, or one that took the message over after that claim lapsed
    (its writer died before sending)."""

    queue: Annotated[str, StringConstraints(min_length=3, max_length=63)]
    body: str  # the message model's JSON
    claimed_by: str | None = None
    claimed_until: UtcDatetime | None = None

    def held_for_another(self, owner: str, now: datetime) -> bool:
        return (
            self.claimed_by is not None
            and self.claimed_by != owner
            and self.claimed_until is not None
            and self.claimed_until > now
        )


class Booking(DomainModel):
    booking_id: BookingId
    resource_ids: Annotated[
        list[ResourceId], Field(min_length=1, max_length=MAX_RESOURCES_PER_BOOKING)
    ]
    start: UtcDatetime
    end: UtcDatetime
    title: ShortText
    customer: Customer
    location: Annotated[str, StringConstraints(max_length=255)] | None = None
    notes: LongText | None = None
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    status: BookingStatus = BookingStatus.CONFIRMED
    # Bumped on every change; pushes and transactionIds are keyed by it.
    version: PositiveVersion = 1
    created_at: UtcDatetime
    updated_at: UtcDatetime
    cancelled_at: UtcDatetime | None = None
    # Transactional outbox: queue messages written with the change that caused them and
    # sent afterwards, so a crash between the two loses nothing (sending is retried).
    outbox: list[OutboxMessage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _start_before_end(self) -> Booking:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    @property
    def primary_resource_id(self) -> str:
        return self.resource_ids[0]

    @property
    def time_range(self) -> TimeRange:
        return TimeRange(start=self.start, end=self.end)

    def is_in_past(self, now: datetime) -> bool:
        return self.end <= now
