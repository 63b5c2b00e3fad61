"""The per-resource sync log: every action taken in either direction."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from shared.domain.base import DomainModel, RecordedAt, ResourceId


class SyncDirection(StrEnum):
    OUTBOUND = "outbound"  # booking → Outlook
    INBOUND = "inbound"  # Outlook → booking system
    RECONCILE = "reconcile"
    CONNECTION = "connection"


class SyncOutcome(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


class SyncLogEntry(DomainModel):
    resource_id: ResourceId
    at: RecordedAt
    direction: SyncDirection
    action: Annotated[str, StringConstraints(max_length=100)]
    outcome: SyncOutcome
    booking_id: str | None = None
    event_id: str | None = None
    detail: Annotated[str, StringConstraints(max_length=1000)] | None = None


# A page's cursor: the sync log's own row key of the last entry shown (opaque to callers).
PageCursor = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_\-]{1,64}$")]


class SyncLogPage(DomainModel):
    """Entries newest first; `next_page`, when set, continues after the last of them."""

    value: list[SyncLogEntry]
    next_page: PageCursor | None = None
