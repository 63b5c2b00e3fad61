"""Domain errors. Entry points translate them into statuses; adapters raise them."""

from __future__ import annotations

from typing import TypeGuard


class DomainError(Exception):
    """Base of every error the services and adapters raise on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(DomainError):
    code = "not_found"


class AlreadyExists(DomainError):
    """An insert-if-absent found the entity present: the claim belongs to someone else."""

    code = "already_exists"


class ConcurrencyConflict(DomainError):
    """The entity changed since it was read (ETag mismatch); re-read and decide again."""

    code = "concurrency_conflict"


class InvalidInput(DomainError):
    code = "invalid_input"


class BookingTimeRefused(InvalidInput):
    """A booking's time lies outside what may be booked (`BookingWindow`)."""

    code = "booking_time_refused"


class StartInPast(BookingTimeRefused):
    code = "start_in_past"


class BeyondHorizon(BookingTimeRefused):
    """Past the mirror's horizon: Outlook busy time there is not known."""

    code = "beyond_horizon"


class DurationTooLong(BookingTimeRefused):
    code = "duration_too_long"


class SlotUnavailable(DomainError):
    code = "slot_unavailable"


class MailboxInUse(DomainError):
    """Another resource is connected to the mailbox (one mailbox is one resource)."""

    code = "mailbox_in_use"


class CalendarUnavailable(DomainError):
    """The resource's calendar cannot be trusted right now (fail closed)."""

    code = "calendar_unavailable"


class LiveCalendarUnreadable(CalendarUnavailable):
    """The live look at a slot could not read a calendar just now (Graph down, slow or
    throttled): fail closed as ever, but this passes, so the answer says when to retry
    (Graph's own Retry-After when it throttled)."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class StorageUnavailable(DomainError):
    code = "storage_unavailable"


class TransactionTooLarge(DomainError):
    """A table transaction broke Azure's rules (one partition, at most 100 entities)."""

    code = "transaction_invalid"


# Microsoft Graph, translated at the gateway.
class GraphError(DomainError):
    code = "graph_error"
    # The mailbox whose read or write met it, where a call spans several mailboxes.
    mailbox: str | None = None


class GraphNotFound(GraphError):
    code = "graph_not_found"


class GraphMailboxNotFound(GraphNotFound):
    """The mailbox itself is not found (ErrorInvalidUser and kin: a leaving user, a
    licence taken away, a typo): every call to it meets the same answer until someone
    acts, so the resource is failing. A plain GraphNotFound may name an item."""


class GraphAccessDenied(GraphError):
    """Token, permission or mailbox-scope failure: the resource's connection is failing."""

    code = "graph_access_denied"


def calendar_refused(failure: BaseException) -> TypeGuard[GraphError]:
    """A failure of the calendar as a whole (access taken away, mailbox gone), not of
    one event: every try meets it until someone acts on the tenant."""
    return isinstance(failure, GraphAccessDenied | GraphMailboxNotFound)


class GraphThrottled(GraphError):
    code = "graph_throttled"

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class GraphConflict(GraphError):
    """Graph refused a write as conflicting with what exists (409), e.g. a second
    subscription with the same resource and change types."""

    code = "graph_conflict"


class GraphTransient(GraphError):
    code = "graph_transient"


class GraphSyncStateLost(GraphError):
    """A delta token was refused (410 syncStateNotFound): start over with a full sync."""

    code = "graph_sync_state_lost"


# The caller (see shared/domain/callers.py), checked at the HTTP boundary.
class Unauthorized(DomainError):
    """No caller, or no caller that can be read: the platform in front sent no principal."""

    code = "unauthorized"


class Forbidden(DomainError):
    """The caller lacks every role the route takes; the message names them."""

    code = "forbidden"
