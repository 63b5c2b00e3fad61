"""Outlook's per-app, per-mailbox limits: concurrent requests and a request budget per window."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from local.graph_emulator.errors import GraphError


@dataclass
class _Window:
    started: float
    used: int


class MailboxThrottle:
    """Admission control. ``admit`` raises GraphError(429) or takes a slot that the caller
    must give back with ``release``."""

    def __init__(
        self,
        concurrency: int,
        budget: int,
        window_s: float,
        concurrency_retry_after_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.budget = budget
        self.window_s = window_s
        self.concurrency_retry_after_s = concurrency_retry_after_s
        self._clock = clock
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}

    def admit(self, mailbox: str) -> None:
        if self.in_flight.get(mailbox, 0) >= self.concurrency:
            self.rejected[mailbox] = self.rejected.get(mailbox, 0) + 1
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                headers={"Retry-After": str(self.concurrency_retry_after_s)},
            )
        now = self._clock()
        window = self._windows.get(mailbox)
        if window is None or now - window.started >= self.window_s:
            window = self._windows[mailbox] = _Window(started=now, used=0)
        if window.used >= self.budget:
            self.rejected[mailbox] = self.rejected.get(mailbox, 0) + 1
            retry_after = max(1, math.ceil(window.started + self.window_s - now))
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its request limit for this mailbox.",
                headers={"Retry-After": str(retry_after)},
            )
        window.used += 1
        current = self.in_flight.get(mailbox, 0) + 1
        self.in_flight[mailbox] = current
        self.peak[mailbox] = max(self.peak.get(mailbox, 0), current)

    def release(self, mailbox: str) -> None:
        remaining = self.in_flight.get(mailbox, 0) - 1
        if remaining > 0:
            self.in_flight[mailbox] = remaining
        else:
            self.in_flight.pop(mailbox, None)

    def reset(self) -> None:
        """Forget counters; slots held by requests still running are kept so they balance."""
        self.peak.clear()
        self.rejected.clear()
        self._windows.clear()
