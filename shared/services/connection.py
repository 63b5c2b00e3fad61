"""Connection status per resource: connected → failing(reason) → connected.

Permanent Graph errors (auth, permission, mailbox gone) and lost subscriptions make a
resource failing; its availability and new bookings then answer 503 (fail closed). The
next good sync makes it connected again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.domain.errors import ConcurrencyConflict
from shared.domain.resources import ConnectionState, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import ResourceRepository, SyncLog
from shared.services.resource_updates import update_resource

logger = logging.getLogger(__name__)

# lastSyncAt is refreshed at most this often by pushes (reconciles always refresh it).
_QUIET = timedelta(seconds=30)


class ConnectionTracker:
    def __init__(
        self, resources: ResourceRepository, sync_log: SyncLog, clock: Callable[[], datetime]
    ) -> None:
        self._resources = resources
        self._sync_log = sync_log
        self._clock = clock

    async def mark_failing(self, resource_id: str, reason: str) -> None:
        """Idempotent; the first failure's time is kept as `since`."""
        now = self._clock()

        def change(resource: Resource) -> Resource | None:
            status = resource.status
            if status.state is ConnectionState.FAILING and status.reason == reason:
                return None
            since = status.since if status.state is ConnectionState.FAILING else now
            return resource.model_copy(
                update={
                    "status": status.model_copy(
                        update={"state": ConnectionState.FAILING, "reason": reason, "since": since}
                    )
                }
            )

        if await self._update(resource_id, change):
            logger.warning("resource %s is failing: %s", resource_id, reason)
            await self._sync_log.append(
                SyncLogEntry(
                    resource_id=resource_id,
                    at=now,
                    direction=SyncDirection.CONNECTION,
                    action="connection_failing",
                    outcome=SyncOutcome.FAILED,
                    detail=reason[:1000],
                )
            )

    async def mark_synced(self, resource_id: str, *, mirror_refreshed: bool = False) -> None:
        """A good sync: connected again, lastSyncAt (and the mirror's time) now."""
        now = self._clock()
        recovered = False

        def change(resource: Resource) -> Resource | None:
            nonlocal recovered
            status = resource.status
            if status.state is ConnectionState.DISCONNECTED:
                return None
            recovered = status.state is ConnectionState.FAILING
            recent = status.last_sync_at is not None and now - status.last_sync_at < _QUIET
            if status.state is ConnectionState.CONNECTED and recent and not mirror_refreshed:
                return None  # keep the resource row cool under bursts of pushes
            update: dict[str, object] = {
                "state": ConnectionState.CONNECTED,
                "reason": None,
                "since": now if recovered else status.since,
                "last_sync_at": now,
            }
            if mirror_refreshed:
                update["mirror_refreshed_at"] = now
            return resource.model_copy(update={"status": status.model_copy(update=update)})

        await self._update(resource_id, change)
        if recovered:
            logger.info("resource %s is connected again", resource_id)
            await self._sync_log.append(
                SyncLogEntry(
                    resource_id=resource_id,
                    at=now,
                    direction=SyncDirection.CONNECTION,
                    action="connection_recovered",
                    outcome=SyncOutcome.OK,
                )
            )

    async def _update(
        self, resource_id: str, change: Callable[[Resource], Resource | None]
    ) -> Resource | None:
        try:
            return await update_resource(self._resources, resource_id, change)
        except ConcurrencyConflict:
            logger.warning("status of resource %s kept changing; not updated", resource_id)
            return None
