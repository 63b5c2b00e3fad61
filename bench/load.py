"""An open-loop rate driver and the percentiles the report quotes.

Open loop: request i is due at `start + i / rate` whether or not earlier ones have been
answered, and its latency is counted from when it was due, not from when it was sent.
A slow server therefore cannot slow the offered load down and hide its own queueing
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Distribution:
    """Summary of latencies (seconds)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values),
            mean=sum(values) / len(values),
        )

    def as_ms(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": round(self.p50 * 1000, 2),
            "p95_ms": round(self.p95 * 1000, 2),
            "p99_ms": round(self.p99 * 1000, 2),
            "max_ms": round(self.max * 1000, 2),
            "mean_ms": round(self.mean * 1000, 2),
        }


@dataclass
class LoadResult:
    """What an open-loop run saw. `latencies_s` holds answered requests only."""

    offered: int
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # How late the driver itself was in sending (its own scheduling delay), worst case.
    max_send_lag_s: float = 0.0
    # (seconds from the start when it was due, latency) of each answered request.
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def slowest(self, count: int) -> list[tuple[float, float]]:
        """The `count` slowest answered requests, by when they were due."""
        return sorted(sorted(self.timeline, key=lambda t: t[1])[-count:])

    @property
    def answered(self) -> int:
        return len(self.latencies_s)

    @property
    def achieved_rate(self) -> float:
        return self.answered / self.duration_s if self.duration_s else 0.0


async def open_loop(
    send: Callable[[int], Awaitable[int]],
    *,
    rate: float,
    duration_s: float,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Call `send(i)` (which returns an HTTP status) `rate` times a second for
    `duration_s` seconds. Each call is bounded by `timeout_s`; the run by
    `duration_s + timeout_s`."""
    total = int(rate * duration_s)
    result = LoadResult(offered=total, duration_s=duration_s)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int, due: float) -> None:
        try:
            status = await asyncio.wait_for(send(index), timeout=timeout_s)
        except TimeoutError:
            result.errors["timeout"] += 1
            return
        except (OSError, aiohttp.ClientError) as exc:  # refused or reset: not coping
            result.errors[type(exc).__name__] += 1
            return
        latency = loop.time() - due
        result.latencies_s.append(latency)
        result.timeline.append((due - start, latency))
        result.statuses[status] += 1

    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.max_send_lag_s = max(result.max_send_lag_s, loop.time() - due)
        task = asyncio.create_task(one(index, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s + 1)
    return result


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds one awaited call took (wall clock, monotonic)."""
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started
