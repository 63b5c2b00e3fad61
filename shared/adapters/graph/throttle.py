"""Staying inside Outlook's limits: at most 4 requests in flight per mailbox, and one
bounded retry policy for 429/503/504 (and lost connections) that honours Retry-After.

This replaces msgraph-sdk's RetryHandler, which is left out of the middleware chain (see
client.py): that handler waits out any Retry-After up to 180 s with no bound on the total
time, holds our mailbox slot while it sleeps, and cannot see a 429 inside a `$batch`
answer. One layer here covers top-level requests and inner batch answers alike, so
attempts never multiply.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from shared.adapters.graph.errors import (
    GRAPH_CALL_ERRORS,
    GraphFailure,
    failure_from_exception,
    to_domain_error,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Outlook's limit per app per mailbox; a process never uses more than this itself.
MAILBOX_CONCURRENCY = 4


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may keep trying.

    A retry happens only for a retryable failure (429, 503, 504, no answer), while
    attempts remain, when the server's Retry-After (or our backoff when it names none) is
    at most `max_wait_s`, and when waiting would not take the request past `max_elapsed_s`
    since its first attempt. Otherwise the failure is raised as a domain error.
    """

    max_attempts: int = 4
    max_elapsed_s: float = 60.0
    max_wait_s: float = 30.0
    backoff_s: float = 1.0  # first wait when the server names none; doubles per attempt

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def delay_before_retry(
        self, failure: GraphFailure, attempt: int, elapsed_s: float, *, idempotent: bool = True
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if not failure.retryable or attempt >= self.max_attempts:
            return None
        if failure.status is None and not idempotent:
            # No answer: the request may have been applied; only repeat what is safe.
            return None
        if failure.retry_after_s is not None:
            delay = failure.retry_after_s
        else:
            delay = self.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4)  # noqa: S311 - jitter, not cryptography
        if delay > self.max_wait_s or elapsed_s + delay > self.max_elapsed_s:
            return None
        return delay


class MailboxSlots:
    """At most `per_mailbox` requests in flight per mailbox within this process.

    A `$batch` takes several slots at once (one per inner request Outlook may run in
    parallel for that mailbox). Multi-slot takers queue on a per-mailbox lock and take
    mailboxes in sorted order, so two batches never each hold half of what they need.
    """

    def __init__(self, per_mailbox: int = MAILBOX_CONCURRENCY) -> None:
        if per_mailbox < 1:
            raise ValueError("per_mailbox must be at least 1")
        self.per_mailbox = per_mailbox
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def key(mailbox: str) -> str:
        return mailbox.strip().lower()

    def _semaphore(self, key: str) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(self.per_mailbox)
        return semaphore

    @asynccontextmanager
    async def slot(self, mailbox: str | None) -> AsyncIterator[None]:
        """One slot of `mailbox` (no limit when None: the request touches no mailbox)."""
        if mailbox is None:
            yield
            return
        async with self._semaphore(self.key(mailbox)):
            yield

    @asynccontextmanager
    async def slots(self, wanted: Mapping[str, int]) -> AsyncIterator[None]:
        """`wanted[mailbox]` slots of each mailbox (capped at `per_mailbox`), all held
        until the block ends."""
        counts: dict[str, int] = {}
        for mailbox, count in wanted.items():
            key = self.key(mailbox)
            counts[key] = min(self.per_mailbox, counts.get(key, 0) + count)
        async with AsyncExitStack() as stack:
            for key in sorted(counts):
                semaphore = self._semaphore(key)
                lock = self._locks.setdefault(key, asyncio.Lock())
                async with lock:
                    for _ in range(counts[key]):
                        await semaphore.acquire()
                        stack.callback(semaphore.release)
            yield


class GraphCaller:
    """Runs one SDK call under its mailbox's slot and the retry policy, and turns what it
    raises into a domain error. Slots are given back while waiting to retry."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        slots: MailboxSlots | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.slots = slots or MailboxSlots()
        self.sleep = sleep
        self.clock = clock

    async def call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        mailbox: str | None,
        context: str,
        idempotent: bool = True,
    ) -> T:
        """The result of `send()`; raises the Graph* domain error it finally failed with.

        `send` is called once per attempt and must build its request afresh (a create
        carries the same transactionId every time, so a repeat never duplicates).
        """
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.slots.slot(mailbox):
                    return await send()
            except GRAPH_CALL_ERRORS as exc:
                failure = failure_from_exception(exc)
                delay = self.policy.delay_before_retry(
                    failure, attempt, self.clock() - started, idempotent=idempotent
                )
                if delay is None:
                    raise to_domain_error(failure, context) from exc
            logger.warning(
                "graph %s failed (%s), attempt %s; retrying in %.1fs",
                context,
                failure.describe(),
                attempt,
                delay,
            )
            await self.sleep(delay)
