"""Timer work: keep subscriptions alive, and forget what is past its retention
(Idempotency-Keys, sync log entries). The reconcile fan-out is in rounds.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.domain.base import EARLIEST_DATETIME
from shared.domain.errors import GraphError, GraphThrottled, GraphTransient
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, ReconcileResource
from shared.domain.resources import Resource
from shared.ports import IdempotencyStore, MessageQueue, ResourceRepository, SyncLog
from shared.services.connection import ConnectionTracker
from shared.services.rounds import backing_off, in_sync_scope
from shared.services.subscriptions import SubscriptionService

logger = logging.getLogger(__name__)


# Renewals in flight at once. Each touches one subscription of one mailbox (Outlook's 4
# per mailbox are never approached) and Graph's per-app limit is 130,000 requests per 10 s
# (https://learn.microsoft.com/graph/throttling-limits): the bound keeps one process's
# connections and memory modest, not Graph's limits.
RENEW_CONCURRENCY = 16
# Renewals are started a page at a time, and none (but the first RENEW_CONCURRENCY, so
# every run gets somewhere) after RENEW_BUDGET: the timer's functionTimeout is 10 minutes,
# a renewal throttled all the way takes up to the gateway's minute of retries, and the
# purge runs after. What is left waits for the next hourly run
# (SUBSCRIPTION_RENEW_WITHIN_HOURS gives it many).
RENEW_PAGE_SIZE = 100
RENEW_BUDGET = timedelta(minutes=6)


class Upkeep:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        subscriptions: SubscriptionService,
        connection: ConnectionTracker,
        queue: MessageQueue,
        clock: Callable[[], datetime],
        renew_within: timedelta,
        idempotency: IdempotencyStore,
        sync_log: SyncLog,
        idempotency_retention: timedelta,
        sync_log_retention: timedelta,
    ) -> None:
        self._idempotency = idempotency
        self._sync_log = sync_log
        self._idempotency_retention = idempotency_retention
        self._sync_log_retention = sync_log_retention
        self._resources = resources
        self._subscriptions = subscriptions
        self._connection = connection
        self._queue = queue
        self._clock = clock
        self._renew_within = renew_within

    async def renew_subscriptions(self, *, budget: timedelta = RENEW_BUDGET) -> int:
        """Renew the subscriptions expiring within the renewal window, soonest first,
        RENEW_CONCURRENCY at a time; recreate missing or lost ones (and then reconcile
        that mailbox). Past the first RENEW_CONCURRENCY, no renewal starts after `budget` (throttled
        renewals can each take the gateway's whole retry time, so a page started just
        before it could otherwise run minutes over): the rest wait for the next run.
        A permanent failure makes the resource failing; a transient one leaves
        it for the next run. Resources backing off from failed rounds wait for their
        retry (a round that succeeds renews them). Returns renewals."""
        started = time.monotonic()
        now = self._clock()
        due = sorted(
            (s.value for s in await self._resources.list_all() if self._renewal_due(s.value, now)),
            key=lambda r: r.subscription_expires_at or EARLIEST_DATETIME,
        )
        gate = asyncio.Semaphore(RENEW_CONCURRENCY)
        deadline = started + budget.total_seconds()

        async def renew(index: int, resource: Resource) -> bool | None:
            """Whether it was renewed; None when left for the next run."""
            async with gate:
                if index >= RENEW_CONCURRENCY and time.monotonic() > deadline:
                    return None
                return await self._renew(resource, now)

        renewed = 0
        for first in range(0, len(due), RENEW_PAGE_SIZE):
            page = due[first : first + RENEW_PAGE_SIZE]
            outcomes = await asyncio.gather(*(renew(first + i, r) for i, r in enumerate(page)))
            renewed += sum(1 for outcome in outcomes if outcome)
            if None in outcomes:
                left = outcomes.count(None) + len(due) - first - len(page)
                logger.warning("subscription upkeep: %d renewals left for the next run", left)
                break
        logger.info("subscription upkeep: %d of %d due renewed or recreated", renewed, len(due))
        return renewed

    def _renewal_due(self, resource: Resource, now: datetime) -> bool:
        if not in_sync_scope(resource) or backing_off(resource, now):
            return False
        expires = resource.subscription_expires_at
        return (
            resource.subscription_id is None
            or expires is None
            or expires - now <= self._renew_within
        )

    async def _renew(self, resource: Resource, now: datetime) -> bool:
        try:
            updated = await self._subscriptions.renew(resource)
        except (GraphThrottled, GraphTransient) as exc:
            logger.warning(
                "subscription of %s not renewed (%s); the next run tries again",
                resource.resource_id,
                exc.code,
            )
            return False
        except GraphError as exc:
            await self._connection.mark_failing(
                resource.resource_id, f"subscription could not be renewed: {exc.code}"
            )
            return False
        if updated.subscription_id != resource.subscription_id:
            # A new subscription: whatever happened meanwhile was not notified.
            await self._queue.send(
                SYNC_OUTBOUND_QUEUE,
                ReconcileResource(resource_id=resource.resource_id, scheduled_at=now),
            )
        return True

    async def purge_expired(self) -> tuple[int, int]:
        """Forget Idempotency-Keys and sync log entries past their retention; returns
        (keys, log entries) removed. Every resource's log is kept, connected or not."""
        now = self._clock()
        keys = await self._idempotency.purge_older_than(now - self._idempotency_retention)
        entries = 0
        for stored in await self._resources.list_all():
            entries += await self._sync_log.purge_older_than(
                stored.value.resource_id, now - self._sync_log_retention
            )
        logger.info("retention: %d idempotency keys and %d sync log entries removed", keys, entries)
        return keys, entries
