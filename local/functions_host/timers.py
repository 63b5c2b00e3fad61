"""Timer triggers: run a function on its NCRONTAB (or TimeSpan) schedule.

As in the host, runs of one function never overlap: the next occurrence is computed
after a run ends, so occurrences missed while it ran are skipped, not queued. A failing
run is logged and the schedule goes on. `runOnStartup` runs it once at start. The
TimerRequest is never past due here: that flag comes from the host's schedule monitor
(`useMonitor`), which keeps state in storage that the local host does not keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from azure.functions.timer import TimerRequest

from local.functions_host.app_index import TimerFunction
from local.functions_host.invocation import InvocationOutcome, Invoker

logger = logging.getLogger(__name__)


class TimerTriggerListener:
    """Runs one timer-triggered function until `stop()`."""

    def __init__(self, function: TimerFunction, invoker: Invoker) -> None:
        self.function = function
        self._invoker = invoker
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last: datetime | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timer {self.function.function.name}")

    async def stop(self, grace_period: float) -> None:
        """Stop scheduling; a run in flight gets the grace period, then is cancelled."""
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=grace_period)
        if not done:
            logger.warning(
                "Timer function '%s' still running after the grace period; cancelling it",
                self.function.function.name,
            )
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def invoke_now(self, _text: str) -> InvocationOutcome:
        """Run the function once now (the admin API)."""
        now = datetime.now(UTC)
        return await self._fire(now, reason="Invoked through the admin API")

    async def _run(self) -> None:
        name = self.function.function.name
        schedule = self.function.schedule
        if self.function.run_on_startup:
            await self._fire(datetime.now(UTC), reason="RunOnStartup")
        previous: datetime | None = None
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            # Never before the occurrence just run: the loop may wake a hair early.
            due = schedule.next_after(max(now, previous) if previous else now)
            logger.debug("Timer '%s' next fires at %s", name, due.isoformat())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=max(0.0, (due - now).total_seconds())
                )
            if self._stopping.is_set():
                break
            await self._fire(due, reason=f"Timer fired at {due.isoformat()}")
            previous = due

    async def _fire(self, scheduled: datetime, *, reason: str) -> InvocationOutcome:
        now = datetime.now(UTC)
        status = {
            "Last": (self._last or scheduled).isoformat(),
            "Next": self.function.schedule.next_after(max(now, scheduled)).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = TimerRequest(
            past_due=False, schedule_status=status, schedule={"AdjustForDST": True}
        )
        self._last = scheduled
        return await self._invoker.invoke(self.function.function, request, reason=reason)
