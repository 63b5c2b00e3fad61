"""Connection status per resource: connected → failing(reason) → connected.

Permanent Graph errors (auth, permission, mailbox gone) and lost subscriptions make a
resource failing; its availability and new bookings then answer 503 (fail closed). The
next good sync makes it connected again. A reconcile round that fails that way is counted
(`failed_rounds`) and puts the resource's next timer round off (`retry_at`); a good sync
clears both.
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
            if status.state is ConnectionState.DISCONNECTING:
                return None  # its events are being removed; it ends disconnected
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

    async def record_failed_round(
        self,
        resource_id: str,
        round_at: datetime,
        put_off: Callable[[int], timedelta],
    ) -> Resource | None:
        """Count a reconcile round that failed on a permanent condition (after
        `mark_failing`): `failed_rounds` + 1, no timer round before `round_at +
        put_off(failed_rounds)`, and `round_at` as the resource's last round. Idempotent
        for one round (a repeat counts once). Returns the resource as written, or None
        when nothing changed (a repeat, or the resource is gone or disconnected)."""

        def change(resource: Resource) -> Resource | None:
            status = resource.status
            if status.state.is_ending:
                return None
            if resource.last_round_at == round_at and status.failed_rounds > 0:
                return None
            failed = status.failed_rounds + 1
            return resource.model_copy(
                update={
                    "status": status.model_copy(
                        update={"failed_rounds": failed, "retry_at": round_at + put_off(failed)}
                    ),
                    "last_round_at": max(resource.last_round_at or round_at, round_at),
                }
            )

        return await self._update(resource_id, change)

    async def mark_synced(self, resource_id: str, *, mirror_refreshed: bool = False) -> bool:
        """A good sync: connected again, lastSyncAt (and the mirror's time) now, the count
        of failed rounds cleared. Returns whether the resource was failing until now."""
        now = self._clock()
        recovered = False

        def change(resource: Resource) -> Resource | None:
            nonlocal recovered
            status = resource.status
            if status.state.is_ending:
                return None
            if status.state is ConnectionState.CONNECTING and status.pull is not None:
                return None  # connected once the pull has the whole window, not before
            recovered = status.state is ConnectionState.FAILING
            recent = status.last_sync_at is not None and now - status.last_sync_at < _QUIET
            quiet = recent and not mirror_refreshed and not status.failed_rounds
            if status.state is ConnectionState.CONNECTED and quiet:
                return None  # keep the resource row cool under bursts of pushes
            update: dict[str, object] = {
                "state": ConnectionState.CONNECTED,
                "reason": None,
                "since": now if recovered else status.since,
                "last_sync_at": now,
                "failed_rounds": 0,
                "retry_at": None,
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
        return recovered

    async def _update(
        self, resource_id: str, change: Callable[[Resource], Resource | None]
    ) -> Resource | None:
        try:
            return await update_resource(self._resources, resource_id, change)
        except ConcurrencyConflict:
            logger.warning("status of resource %s kept changing; not updated", resource_id)
            return None
