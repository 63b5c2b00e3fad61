"""Reconcile rounds at tenant scale: the timer's fan-out, and what a failing resource's
round does.

The fan-out costs the timer one table listing and one queue message per
RECONCILE_PAGE_SIZE resources, sent side by side; each page's worker sends its resources'
ReconcileResource messages side by side. So the timer's time grows with the pages, not the
resources, and the per-resource sends spread over as many instances as the queue calls
for. A page may be sent twice (its round is then no newer than the resource's last one),
and Azure may run a timer twice for one occurrence (a past-due run after an interrupted
one: within RECONCILE_REPEAT_WITHIN_MINUTES of the resource's last round): either is a
repeat and skips after one table read (`ReconcileService.reconcile`). Only past-due runs
get the window, so a schedule shorter than it (or a run by hand) still runs every round.

A round that meets a condition the same message cannot heal by being retried (the
mailbox is gone, access is denied) records it on the resource (failing, fail closed, as
before) and completes its message: no five deliveries, nothing in `-poison`. The resource
is left out of the timer's rounds until its `retry_at`, which doubles per failed round
from FAILING_RETRY_FIRST_MINUTES up to FAILING_RETRY_MAX_MINUTES; the first round that
succeeds makes it connected again and renews (or recreates) its subscription. Transient
errors (503, 429, timeouts) still raise, for the queue's retries.

A round asked for while another round of that resource holds its lease is not dropped:
the running round may have read the mailbox before whatever made this one be asked, and
its holder may be gone (an instance killed mid-round lets go of the lease within
`LEASE_SECONDS`). The message is sent again later, up to MAX_ROUND_DEFERRALS times,
after a wait that starts short and doubles (`deferral_seconds`): the round it meets is
most often a duplicate's (a page sent twice, two asks at once) and over within a second
or two, while a holder gone mid-round needs its lease to run out. When it comes back
after the other round of the same timer round finished, it is a repeat and skips after
one table read.

A round that Graph throttled past the gateway's retries is sent again after the
Retry-After (`functions/workers.py`) and counts no try, so while a mailbox stays
throttled its rounds would pile up: each timer round one more message, each asking the
throttled mailbox again at every return. The throttled round is recorded on the resource
(`throttled_round_at`, one write per message), and an earlier timer round's message that
comes back after it skips after one table read: one round per mailbox waits out a
throttle, and it runs once the throttle ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from shared.domain.errors import (
    ConcurrencyConflict,
    GraphAccessDenied,
    GraphError,
    GraphNotFound,
    GraphThrottled,
)
from shared.domain.messages import (
    RECONCILE_PAGE_SIZE,
    SYNC_OUTBOUND_QUEUE,
    ReconcilePage,
    ReconcileResource,
)
from shared.domain.resources import Direction, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import MessageQueue, ResourceRepository, SyncLog
from shared.services.connection import ConnectionTracker
from shared.services.reconcile import (
    ANOTHER_ROUND_RUNNING,
    LEASE_SECONDS,
    ReconcileReport,
    ReconcileService,
)
from shared.services.resource_updates import update_resource
from shared.services.subscriptions import SubscriptionService

logger = logging.getLogger(__name__)

# A round that found another holding its resource's lease is asked for again after
# ROUND_DEFERRAL_FIRST_SECONDS, twice as long at each deferral up to
# ROUND_DEFERRAL_MAX_SECONDS: 5, 10, 20, then every 30 s. The first four outlast a lease
# its holder no longer renews (LEASE_SECONDS).
ROUND_DEFERRAL_FIRST_SECONDS = 5
ROUND_DEFERRAL_MAX_SECONDS = int(LEASE_SECONDS // 2)
# Twelve deferrals wait out five minutes of another round; a round runs longer only when
# something is wrong, and the timer's next round asks again anyway.
MAX_ROUND_DEFERRALS = 12

# Queue sends in flight at once from one fan-out (a timer's pages, or a page's resources):
# Queue Storage takes 2,000 messages/s per queue, far above what 16 sends of ~10 ms do.
SEND_CONCURRENCY = 16
# A resource is due when its retry time is at most this far past the round's time: a
# timer run starts a little after its occurrence, and retry times count from rounds.
DUE_SLACK = timedelta(minutes=1)


def in_sync_scope(resource: Resource) -> bool:
    """Active, syncing in some direction, and not disconnected (or disconnecting)."""
    return (
        resource.settings.active
        and resource.settings.direction is not Direction.NONE
        and not resource.status.state.is_ending
    )


def backing_off(resource: Resource, now: datetime) -> bool:
    """Left out of timer rounds (and renewals) until its retry time."""
    retry_at = resource.status.retry_at
    return retry_at is not None and retry_at - now > DUE_SLACK


def deferral_seconds(deferrals: int) -> int:
    """How long a round deferred `deferrals` times already waits before it is sent
    again."""
    doubled = ROUND_DEFERRAL_FIRST_SECONDS << min(deferrals, 8)
    return min(ROUND_DEFERRAL_MAX_SECONDS, doubled)


@dataclass(frozen=True)
class RetrySchedule:
    """How long a resource failing on a permanent condition waits before its next round:
    `first` after one failed round, doubling per further failed round, at most `cap`."""

    first: timedelta
    cap: timedelta

    def after(self, failed_rounds: int) -> timedelta:
        doublings = min(max(failed_rounds, 1) - 1, 30)  # 2**30 minutes is past any cap
        wait: timedelta = self.first * (1 << doublings)
        return min(self.cap, wait)


class ReconcileRounds:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        reconcile: ReconcileService,
        subscriptions: SubscriptionService,
        connection: ConnectionTracker,
        queue: MessageQueue,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
        retry: RetrySchedule,
    ) -> None:
        self._resources = resources
        self._reconcile = reconcile
        self._subscriptions = subscriptions
        self._connection = connection
        self._queue = queue
        self._sync_log = sync_log
        self._clock = clock
        self._retry = retry

    async def fan_out(self, *, past_due: bool = False) -> int:
        """The timer: page the resources in scope and not backing off into ReconcilePage
        messages, sent side by side; `past_due` as the timer said of its run. Returns how
        many resources were paged."""
        round_at = self._clock()
        due: list[str] = []
        backing = 0
        for stored in await self._resources.list_all():
            resource = stored.value
            if not in_sync_scope(resource):
                continue
            if backing_off(resource, round_at):
                backing += 1
                continue
            due.append(resource.resource_id)
        pages = [
            ReconcilePage(
                round_at=round_at,
                resource_ids=due[i : i + RECONCILE_PAGE_SIZE],
                past_due=past_due,
            )
            for i in range(0, len(due), RECONCILE_PAGE_SIZE)
        ]
        await self._send_all(pages)
        logger.info(
            "reconcile round %s: %d resources in %d pages; %d failing ones wait for their retry",
            round_at.isoformat(),
            len(due),
            len(pages),
            backing,
        )
        return len(due)

    async def fan_out_page(self, page: ReconcilePage) -> int:
        """One ReconcileResource per resource of the page, sent side by side. Idempotent:
        a page sent twice sends its messages twice, and their repeats skip."""
        now = self._clock()
        await self._send_all(
            [
                ReconcileResource(
                    resource_id=resource_id,
                    scheduled_at=now,
                    round_at=page.round_at,
                    past_due=page.past_due,
                )
                for resource_id in page.resource_ids
            ]
        )
        return len(page.resource_ids)

    async def run(self, work: ReconcileResource) -> ReconcileReport:
        """One resource's round. A permanent failure (mailbox gone, access denied) is
        recorded on the resource, puts its next timer round off and returns (the message
        completes); transient errors raise. A failing resource that syncs again gets its
        subscription renewed, or recreated if Graph lost it meanwhile; so does a connected
        resource left without one (brought back by a push before any round)."""
        round_at = work.round_at or self._clock()
        try:
            report = await self._reconcile.reconcile(
                work.resource_id, round_at=work.round_at, past_due=work.past_due
            )
        except (GraphAccessDenied, GraphNotFound) as exc:
            return await self._failed(work.resource_id, round_at, exc)
        except GraphThrottled:
            if work.round_at is not None:
                await self._note_throttled(work.resource_id, work.round_at)
            raise
        if report.skipped == ANOTHER_ROUND_RUNNING:
            await self._defer(work)
        if report.recovered or report.unsubscribed:
            await self._renew_subscription(work.resource_id)
        return report

    async def _note_throttled(self, resource_id: str, round_at: datetime) -> None:
        """Record that the timer round `round_at` waits out Graph throttling, unless a
        later one already does: earlier rounds' messages then skip when they come back."""

        def change(resource: Resource) -> Resource | None:
            waiting = resource.throttled_round_at
            if waiting is not None and waiting >= round_at:
                return None
            return resource.model_copy(update={"throttled_round_at": round_at})

        try:
            await update_resource(self._resources, resource_id, change)
        except ConcurrencyConflict:
            # Not this message's failure: it waits out the throttle either way, and an
            # earlier round only keeps asking the mailbox until this one is recorded.
            logger.warning("throttled round of %s not recorded", resource_id)

    async def _defer(self, work: ReconcileResource) -> None:
        """Ask for `work` again later (see the module's docstring)."""
        if work.deferrals >= MAX_ROUND_DEFERRALS:
            logger.warning(
                "round of %s not run: another round held its lease through %d deferrals",
                work.resource_id,
                work.deferrals,
            )
            return
        again = work.model_copy(update={"deferrals": work.deferrals + 1})
        await self._queue.send(
            SYNC_OUTBOUND_QUEUE, again, delay_seconds=deferral_seconds(work.deferrals)
        )

    async def _failed(
        self, resource_id: str, round_at: datetime, error: GraphError
    ) -> ReconcileReport:
        # The round already made the resource failing (fail closed) with the reason.
        written = await self._connection.record_failed_round(
            resource_id, round_at, self._retry.after
        )
        retry_at = written.status.retry_at if written is not None else None
        logger.warning(
            "reconcile of %s failed (%s); next timer round after %s",
            resource_id,
            error.code,
            retry_at.isoformat() if retry_at else "the current one",
        )
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource_id,
                at=self._clock(),
                direction=SyncDirection.RECONCILE,
                action="reconcile",
                outcome=SyncOutcome.FAILED,
                detail=f"{error.code}: {error.message}"[:900]
                + (f"; next round after {retry_at.isoformat()}" if retry_at else ""),
            )
        )
        return ReconcileReport(resource_id=resource_id, skipped=f"failing: {error.code}")

    async def _renew_subscription(self, resource_id: str) -> None:
        stored = await self._resources.get(resource_id)
        if stored is None:
            return
        try:
            await self._subscriptions.renew(stored.value)
        except GraphError as exc:
            # Not this round's failure: the hourly upkeep renews it again.
            logger.warning(
                "resource %s synced again but its subscription was not renewed: %s",
                resource_id,
                exc.code,
            )

    async def _send_all(self, messages: Sequence[BaseModel]) -> None:
        """Send every message, SEND_CONCURRENCY at a time; then raise the first failure
        (the caller's message is retried, and what was sent repeats harmlessly)."""
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def send(message: BaseModel) -> None:
            async with gate:
                await self._queue.send(SYNC_OUTBOUND_QUEUE, message)

        outcomes = await asyncio.gather(*(send(m) for m in messages), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            logger.warning("%d of %d sends failed", len(failures), len(messages))
            raise failures[0]
