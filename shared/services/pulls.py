"""Busy-time pulls in slices: a connect's first pull and a resync's re-pull.

Six months of a busy calendar take seconds to read and mirror (the 5,000-event calendar
of docs/benchmarks.md took 6.7 s), and an invocation that runs past functionTimeout
restarts the worker in Azure, failing the message until it lands in poison. So a pull
takes one slice of the mirror window (`MirrorService.pull_slice`) per sync-outbound
message, and each message sends the next slice's, longer or shorter by how many events
the last one held.

The resource's `status.pull` is the pull's record: which pull is current, its window and
how far it has come. A new pull, or a PUT that reconnects (it resets the status),
supersedes it: the old pull's messages are then dropped. A message for a slice already
done is dropped too, so a redelivered message repeats at most its own slice, and a
duplicate chain ends at its next slice. The last slice marks the mirror refreshed (a
connect's resource connected) and clears `status.pull`. A chain whose message ended in
poison is taken up by the resource's next reconcile round (`resume`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.domain.errors import GraphError, GraphThrottled, GraphTransient
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, PullBusyTime
from shared.domain.resources import PullProgress, PullPurpose, Resource
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import MessageQueue, ResourceRepository, SyncLog
from shared.services.connection import ConnectionTracker
from shared.services.mirror import MirrorService
from shared.services.resource_updates import update_resource

logger = logging.getLogger(__name__)

# A slice aims at some 200 events (well under a second of work; the 5,000-event calendar
# of docs/benchmarks.md has 196 a week): the first is a week, and each next one is twice
# as long after a slice of fewer than half that, half as long after one of more than
# twice that. An empty calendar takes five messages, a busy one a message a week.
FIRST_SLICE_DAYS = 7
SLICE_EVENTS = 200


class BusyTimePulls:
    def __init__(
        self,
        *,
        resources: ResourceRepository,
        mirror: MirrorService,
        queue: MessageQueue,
        connection: ConnectionTracker,
        sync_log: SyncLog,
        clock: Callable[[], datetime],
    ) -> None:
        self._resources = resources
        self._mirror = mirror
        self._queue = queue
        self._connection = connection
        self._sync_log = sync_log
        self._clock = clock

    async def start(self, resource_id: str, purpose: PullPurpose) -> bool:
        """Record a new pull over the current mirror window in the resource's status and
        send its first slice; a pull under way is superseded. Returns False (and sends
        nothing) when the resource is gone or disconnected."""
        window_start, window_end = self._mirror.window()
        progress = PullProgress(
            pull_id=uuid.uuid4().hex,
            purpose=purpose,
            window_start=window_start,
            window_end=window_end,
            pulled_through=window_start,
            started_at=self._clock(),
        )

        def begin(current: Resource) -> Resource | None:
            if current.status.state.is_ending:
                return None
            status = current.status.model_copy(update={"pull": progress})
            return current.model_copy(update={"status": status})

        if await update_resource(self._resources, resource_id, begin) is None:
            return False
        await self._queue.send(
            SYNC_OUTBOUND_QUEUE,
            PullBusyTime(
                resource_id=resource_id,
                pull_id=progress.pull_id,
                slice_start=window_start,
                slice_days=FIRST_SLICE_DAYS,
            ),
        )
        logger.info("%s pull of %s started (%s)", purpose, resource_id, progress.pull_id)
        return True

    async def resume(self, resource_id: str) -> bool:
        """Send the next slice of the pull under way again. A slice's message that ended
        in poison (a Graph or storage outage longer than the queue's retries) ends its
        chain, and nothing else would finish the pull: a connect would stay `connecting`
        and its availability refused. The rounds call this; when the chain is alive all
        the same, the two meet at its next slice and one goes on (a message for a slice
        already pulled is dropped). Returns whether a message was sent."""
        stored = await self._resources.get(resource_id)
        if stored is None:
            return False
        pull = stored.value.status.pull
        if pull is None or stored.value.status.state.is_ending:
            return False
        await self._queue.send(
            SYNC_OUTBOUND_QUEUE,
            PullBusyTime(
                resource_id=resource_id,
                pull_id=pull.pull_id,
                slice_start=pull.pulled_through,
                slice_days=FIRST_SLICE_DAYS,
            ),
        )
        logger.info(
            "%s pull of %s resumed from %s (%s)",
            pull.purpose,
            resource_id,
            pull.pulled_through.isoformat(),
            pull.pull_id,
        )
        return True

    async def go_on(self, work: PullBusyTime) -> None:
        """Pull the message's slice and send the next one, or finish the pull. Nothing
        happens for a pull that is not current or a slice already pulled. Graph
        throttling and transient errors are raised (the queue tries again); other Graph
        errors make the resource failing and end the pull where it stands."""
        stored = await self._resources.get(work.resource_id)
        if stored is None:
            return
        resource = stored.value
        pull = resource.status.pull
        if pull is None or pull.pull_id != work.pull_id or resource.status.state.is_ending:
            logger.info("pull %s of %s is no longer current", work.pull_id, work.resource_id)
            return
        if work.slice_start < pull.pulled_through:
            logger.info("slice %s of %s was pulled already", work.slice_start, work.resource_id)
            return
        window = (pull.window_start, pull.window_end)
        try:
            next_start, events = await self._mirror.pull_slice(
                resource, window, work.slice_start, timedelta(days=work.slice_days)
            )
        except (GraphThrottled, GraphTransient):
            raise
        except GraphError as exc:
            await self._connection.mark_failing(
                resource.resource_id, f"{pull.purpose} pull failed: {exc.code}"
            )
            return
        if next_start is None:
            await self._finish(resource.resource_id, pull)
            return
        # Sent before the progress is recorded: a failure between the two repeats this
        # slice, never skips the next.
        await self._queue.send(
            SYNC_OUTBOUND_QUEUE,
            work.model_copy(
                update={
                    "slice_start": next_start,
                    "slice_days": _next_slice_days(work.slice_days, events),
                }
            ),
        )
        await update_resource(
            self._resources, resource.resource_id, _advanced(pull.pull_id, next_start)
        )

    async def _finish(self, resource_id: str, pull: PullProgress) -> None:
        def done(current: Resource) -> Resource | None:
            if current.status.pull is None or current.status.pull.pull_id != pull.pull_id:
                return None
            return current.model_copy(
                update={"status": current.status.model_copy(update={"pull": None})}
            )

        if await update_resource(self._resources, resource_id, done) is None:
            return  # superseded meanwhile: the newer pull finishes
        await self._connection.mark_synced(resource_id, mirror_refreshed=True)
        connect = pull.purpose is PullPurpose.CONNECT
        await self._sync_log.append(
            SyncLogEntry(
                resource_id=resource_id,
                at=self._clock(),
                direction=SyncDirection.CONNECTION if connect else SyncDirection.RECONCILE,
                action="connected" if connect else "resync_busy_time_pulled",
                outcome=SyncOutcome.OK,
            )
        )
        logger.info("%s pull of %s finished (%s)", pull.purpose, resource_id, pull.pull_id)


def _next_slice_days(days: int, events: int) -> int:
    if events < SLICE_EVENTS // 2:
        return days * 2
    if events > SLICE_EVENTS * 2:
        return max(1, days // 2)
    return days


def _advanced(pull_id: str, pulled_through: datetime) -> Callable[[Resource], Resource | None]:
    """The change recording a pull's progress; it only ever moves forward."""

    def change(current: Resource) -> Resource | None:
        pull = current.status.pull
        if pull is None or pull.pull_id != pull_id or pull.pulled_through >= pulled_through:
            return None
        status = current.status.model_copy(
            update={"pull": pull.model_copy(update={"pulled_through": pulled_through})}
        )
        return current.model_copy(update={"status": status})

    return change
