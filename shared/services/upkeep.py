"""Timer work: fan reconciliation out per resource, keep subscriptions alive, and forget
what is past its retention (Idempotency-Keys, sync log entries)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.domain.errors import GraphError
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, ReconcileResource
from shared.domain.resources import ConnectionState, Direction, Resource
from shared.ports import IdempotencyStore, MessageQueue, ResourceRepository, SyncLog
from shared.services.connection import ConnectionTracker
from shared.services.subscriptions import SubscriptionService

logger = logging.getLogger(__name__)


def _in_sync_scope(resource: Resource) -> bool:
    return (
        resource.settings.active
        and resource.settings.direction is not Direction.NONE
        and resource.status.state is not ConnectionState.DISCONNECTED
    )


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

    async def fan_out_reconcile(self) -> int:
        """One ReconcileResource message per resource in scope (no long-running timer)."""
        now = self._clock()
        count = 0
        for stored in await self._resources.list_all():
            if _in_sync_scope(stored.value):
                await self._queue.send(
                    SYNC_OUTBOUND_QUEUE,
                    ReconcileResource(resource_id=stored.value.resource_id, scheduled_at=now),
                )
                count += 1
        logger.info("reconcile fanned out to %d resources", count)
        return count

    async def renew_subscriptions(self) -> int:
        """Renew subscriptions expiring soon; recreate missing or lost ones (and then
        reconcile that mailbox). Failures make the resource failing. Returns renewals."""
        now = self._clock()
        renewed = 0
        for stored in await self._resources.list_all():
            resource = stored.value
            if not _in_sync_scope(resource):
                continue
            expires = resource.subscription_expires_at
            if (
                resource.subscription_id is not None
                and expires is not None
                and expires - now > self._renew_within
            ):
                continue
            try:
                updated = await self._subscriptions.renew(resource)
            except GraphError as exc:
                await self._connection.mark_failing(
                    resource.resource_id, f"subscription could not be renewed: {exc.code}"
                )
                continue
            renewed += 1
            if updated.subscription_id != resource.subscription_id:
                # A new subscription: whatever happened meanwhile was not notified.
                await self._queue.send(
                    SYNC_OUTBOUND_QUEUE,
                    ReconcileResource(resource_id=resource.resource_id, scheduled_at=now),
                )
        logger.info("subscription upkeep: %d renewed or recreated", renewed)
        return renewed

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
