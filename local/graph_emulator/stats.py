"""Counters the control API reports: requests by method, route template and mailbox, and
notification deliveries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestStats:
    requests: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    notifications_sent: int = 0
    notification_posts: int = 0
    notifications_dropped: int = 0
    notifications_failed: int = 0
    lifecycle_sent: int = 0
    validations: int = 0

    def count_request(self, method: str, route: str, mailbox: str | None) -> None:
        self.requests[(method, route, mailbox)] += 1

    def count_status(self, status: int) -> None:
        self.statuses[status] += 1

    def request_count(
        self, method: str | None = None, route: str | None = None, mailbox: str | None = None
    ) -> int:
        """Sum of requests matching the given parts (None matches anything)."""
        return sum(
            count
            for (m, r, mb), count in self.requests.items()
            if (method is None or m == method)
            and (route is None or r == route)
            and (mailbox is None or mb == mailbox)
        )

    def reset(self) -> None:
        self.requests.clear()
        self.statuses.clear()
        self.notifications_sent = 0
        self.notification_posts = 0
        self.notifications_dropped = 0
        self.notifications_failed = 0
        self.lifecycle_sent = 0
        self.validations = 0

    def to_json(self, peak: dict[str, int], in_flight: dict[str, int]) -> dict[str, Any]:
        rows = [
            {"method": method, "route": route, "mailbox": mailbox, "count": count}
            for (method, route, mailbox), count in sorted(
                self.requests.items(), key=lambda item: (item[0][1], item[0][0], item[0][2] or "")
            )
        ]
        return {
            "requests": rows,
            "total": sum(self.requests.values()),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "peakConcurrency": dict(peak),
            "inFlight": dict(in_flight),
            "notificationsSent": self.notifications_sent,
            "notificationPosts": self.notification_posts,
            "notificationsDropped": self.notifications_dropped,
            "notificationsFailed": self.notifications_failed,
            "lifecycleNotificationsSent": self.lifecycle_sent,
            "validationRequests": self.validations,
        }
