"""How much each benchmark does: `quick` (the default, a few minutes in all) or `full`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    # Webhook acknowledgement under an open-loop load.
    webhook_rate: float
    webhook_seconds: float
    webhook_batches: tuple[int, ...]  # notifications per POST, one run each
    webhook_mailboxes: int
    webhook_events_per_mailbox: int
    drain_within_s: float  # bound on waiting for the inbound backlog afterwards
    # Outlook move → booking updated.
    move_samples: int
    move_poll_s: float
    move_within_s: float
    # Availability from the mirror vs calendarView per request.
    mirror_events: int
    availability_samples: int
    baseline_samples: int
    baseline_latency_ms: int
    availability_days: int
    # Time the real initial pull of `mirror_events` and an idle reconcile of that calendar
    # (minutes on Azurite, so --full only).
    large_calendar_paths: bool
    # Booking create latency.
    create_samples: int
    # Graph requests per booking.
    panel_sizes: tuple[int, ...]
    panel_repeats: int
    # Booking create latency with the live slot check on, and off.
    live_check_samples: int
    # Bookings created at once on one resource (their pushes meet at one mailbox).
    burst_bookings: int
    # Idle reconcile.
    reconcile_small_events: int
    reconcile_small_bookings: int
    # Import time of function_app.
    import_runs: int

    def with_overrides(
        self,
        *,
        rate: float | None = None,
        seconds: float | None = None,
        batches: tuple[int, ...] | None = None,
    ) -> Profile:
        changed = self
        if rate is not None:
            changed = replace(changed, webhook_rate=rate)
        if seconds is not None:
            changed = replace(changed, webhook_seconds=seconds)
        if batches:
            changed = replace(changed, webhook_batches=batches)
        return changed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Profile(
    name="quick",
    webhook_rate=200,
    webhook_seconds=5,
    webhook_batches=(10,),
    webhook_mailboxes=4,
    webhook_events_per_mailbox=25,
    drain_within_s=60,
    move_samples=20,
    move_poll_s=0.02,
    move_within_s=15,
    mirror_events=5_000,
    availability_samples=100,
    baseline_samples=20,
    baseline_latency_ms=100,
    availability_days=7,
    large_calendar_paths=False,
    create_samples=50,
    panel_sizes=(1, 5, 20),
    panel_repeats=2,
    live_check_samples=20,
    burst_bookings=16,
    reconcile_small_events=25,
    reconcile_small_bookings=5,
    import_runs=5,
)

FULL = replace(
    QUICK,
    name="full",
    webhook_seconds=30,
    drain_within_s=420,
    move_samples=100,
    availability_samples=500,
    baseline_samples=100,
    create_samples=300,
    panel_repeats=5,
    live_check_samples=100,
    large_calendar_paths=True,
    webhook_batches=(10, 1),
)

PROFILES = {p.name: p for p in (QUICK, FULL)}
