"""A stateful Microsoft Graph v1.0 emulator for the subset Booking Sync uses: mailboxes,
events (with recurrence), calendarView and its delta, getSchedule, subscriptions with
change and lifecycle notifications, $batch, throttling, auth and injected faults.

Run it with ``python -m local.graph_emulator --port 7072`` or ``await start_emulator()``.
"""

from __future__ import annotations

from local.graph_emulator.config import DEFAULT_TENANT_ID, EmulatorConfig
from local.graph_emulator.server import RunningEmulator, start_emulator

__all__ = ["DEFAULT_TENANT_ID", "EmulatorConfig", "RunningEmulator", "start_emulator"]
