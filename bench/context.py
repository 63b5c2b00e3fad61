"""What every benchmark gets (the client, the profile, shared set-ups) and returns (rows
and raw figures), and the helpers that read the emulator's counters."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.client import BenchError, StackClient
from bench.mirror import bulk_load_mirror
from bench.profiles import Profile
from bench.report import Row
from bench.world import add_mailbox, connect, day_zero, mailbox_address, seed_events, spread_events

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


# Events a day in the seeded calendar: 5,000 fill 179 days from yesterday on.
SEEDED_PER_DAY = 28


@dataclass
class Context:
    client: StackClient
    profile: Profile
    day0: datetime = field(default_factory=day_zero)
    _busy_room: tuple[str, str] | None = None
    _busy_room_failed: bool = False
    _busy_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def busy_room(self) -> tuple[str, str]:
        """(resource id, mailbox) of a connected resource whose calendar holds
        `mirror_events` foreign events, all in its mirror; created on first use.

        The resource is connected with an empty calendar, the events are created with
        notifications paused, and the mirror is written in bulk (see bench.mirror)."""
        async with self._busy_lock:
            if self._busy_room_failed:
                raise BenchError("the 5,000-event calendar could not be set up (see above)")
            if self._busy_room is None:
                self._busy_room_failed = True
                resource_id, mailbox = "busy-room", mailbox_address("busy-room")
                await add_mailbox(self.client, mailbox)
                await connect(self.client, resource_id, mailbox)
                await self.client.control("POST", "/notifications/pause")
                try:
                    await seed_events(self.client, mailbox, self.seeded_calendar())
                finally:
                    await self.client.control("POST", "/notifications/resume")
                loaded = await bulk_load_mirror(self.client, resource_id, mailbox)
                logger.info(
                    "busy-room: %d events, %d mirror rows", self.profile.mirror_events, loaded
                )
                self._busy_room = (resource_id, mailbox)
                self._busy_room_failed = False
            return self._busy_room

    def seeded_calendar(self) -> list[dict[str, Any]]:
        """28 events a day from yesterday on: 5,000 fill about six months."""
        first_day = self.day0 - timedelta(days=2)
        return spread_events(self.profile.mirror_events, first_day, per_day=SEEDED_PER_DAY)


# --- helpers -----------------------------------------------------------------------------


def mailbox_operations(stats: dict[str, Any], mailbox: str) -> int:
    return sum(r["count"] for r in stats["requests"] if r["mailbox"] == mailbox.lower())


def routes_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Graph operations by `METHOD route` between two stats snapshots (non-zero only)."""

    def summed(stats: dict[str, Any]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for r in stats["requests"]:
            key = f"{r['method']} {r['route']}"
            totals[key] = totals.get(key, 0) + r["count"]
        return totals

    old, new = summed(before), summed(after)
    return {k: v - old.get(k, 0) for k, v in sorted(new.items()) if v - old.get(k, 0)}


async def quiet(client: StackClient, *, stable_s: float = 0.5, within_s: float = 30) -> None:
    """Wait until the emulator has seen no Graph request for `stable_s` seconds."""
    deadline = time.monotonic() + within_s
    last = (await client.stats())["total"]
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        total = (await client.stats())["total"]
        if total != last:
            last, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= stable_s:
            return
    raise BenchError(f"Graph traffic did not settle within {within_s:.0f} s")
