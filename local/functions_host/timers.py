"""Timer triggers: run a function on its NCRONTAB (or TimeSpan) schedule, as the timer
extension's TimerListener (azure-webjobs-sdk-extensions) does.

- Runs of one function never overlap. After a run, the next occurrence is the one after
  the run's start (the extension's `Next = GetNextOccurrence(invocationTime)`), so a run
  that overran its next occurrence is followed by that missed occurrence at once, and
  only by that one.
- With the schedule monitor (`useMonitor`; on by default for schedules of a minute or
  more), each run's status (Last, Next, LastUpdated) is kept in storage
  (schedule_monitor.py), and a first start writes one for the next occurrence before it
  comes. A host that starts after the recorded Next (it was stopped, or died mid-run,
  which leaves the status of the interrupted occurrence) runs the function at once with
  `past_due` set: a timer may fire twice for one occurrence. A recorded Next the
  schedule would not give is a changed schedule, not a missed run (ScheduleMonitor.
  CheckPastDueAsync).
- `runOnStartup` runs it once at start (unless a past-due run does already). A failing
  run is logged and the schedule goes on.
Not modelled: the singleton lock that keeps a timer to one instance when several run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from azure.functions.timer import TimerRequest

from local.functions_host.app_index import TimerFunction
from local.functions_host.invocation import InvocationOutcome, Invoker
from local.functions_host.schedule_monitor import ScheduleMonitor, ScheduleStatus

logger = logging.getLogger(__name__)


class TimerTriggerListener:
    """Runs one timer-triggered function until `stop()`."""

    def __init__(
        self, function: TimerFunction, invoker: Invoker, monitor: ScheduleMonitor | None = None
    ) -> None:
        self.function = function
        self._invoker = invoker
        self._monitor = monitor if function.use_monitor else None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._status: ScheduleStatus | None = None

    @property
    def name(self) -> str:
        return self.function.function.name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timer {self.name}")

    async def stop(self, grace_period: float) -> None:
        """Stop scheduling; a run in flight gets the grace period, then is cancelled."""
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=grace_period)
        if not done:
            logger.warning(
                "Timer function '%s' still running after the grace period; cancelling it",
                self.name,
            )
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def invoke_now(self, _text: str) -> InvocationOutcome:
        """Run the function once now (the admin API); the schedule status is left alone,
        as the admin API calls the function without the listener."""
        now = datetime.now(UTC)
        status = self._status or ScheduleStatus(
            last=None, next=self.function.schedule.next_after(now), last_updated=None
        )
        request = _request(status, past_due=False)
        return await self._invoker.invoke(
            self.function.function, request, reason="Invoked through the admin API"
        )

    async def _run(self) -> None:
        now = datetime.now(UTC)
        if self._monitor is not None:
            self._status = await self._checked_status(self._monitor, now)
            past_due = now > self._status.next
        else:
            self._status = ScheduleStatus(
                last=None, next=self.function.schedule.next_after(now), last_updated=None
            )
            past_due = False
        if past_due:
            logger.info(
                "Timer '%s' is past due (its occurrence at %s did not run to the end); "
                "running it now",
                self.name,
                self._status.next.isoformat(),
            )
            await self._fire(now, past_due=True, reason="IsPastDue")
        elif self.function.run_on_startup:
            await self._fire(now, run_on_startup=True, reason="RunOnStartup")
        while not self._stopping.is_set():
            due = self._status.next
            delay = (due - datetime.now(UTC)).total_seconds()
            logger.debug("Timer '%s' next fires at %s", self.name, due.isoformat())
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                break
            await self._fire(datetime.now(UTC), reason=f"Timer fired at {due.isoformat()}")

    async def _checked_status(self, monitor: ScheduleMonitor, now: datetime) -> ScheduleStatus:
        """The status the past-due check goes by, as ScheduleMonitor.CheckPastDueAsync
        makes it: with none recorded, one for the next occurrence is written now (so a
        host stopped before it runs it past due at its next start); a recorded Next the
        schedule would not compute from the recorded Last (or LastUpdated) means the
        schedule changed, and the new one's occurrence counts, from now if it passed."""
        schedule = self.function.schedule
        recorded = await monitor.get_status(self.name)
        if recorded is None:
            status = ScheduleStatus(last=None, next=schedule.next_after(now), last_updated=now)
            await monitor.update_status(self.name, status)
            return status
        computed_from = recorded.last or recorded.last_updated or now
        expected = schedule.next_after(computed_from)
        if recorded.next == expected:
            return recorded
        if now > expected:
            expected, computed_from = schedule.next_after(now), now
        status = ScheduleStatus(last=None, next=expected, last_updated=computed_from)
        logger.info(
            "Timer '%s': its recorded next occurrence %s is not its schedule's; now %s",
            self.name,
            recorded.next.isoformat(),
            expected.isoformat(),
        )
        await monitor.update_status(self.name, status)
        return status

    async def _fire(
        self,
        invocation_time: datetime,
        *,
        reason: str,
        past_due: bool = False,
        run_on_startup: bool = False,
    ) -> None:
        assert self._status is not None
        await self._invoker.invoke(
            self.function.function, _request(self._status, past_due=past_due), reason=reason
        )
        # A run that starts a hair before its occurrence counts from the occurrence, so
        # the same Next is never recorded twice (InvokeJobFunction's adjustment).
        adjusted = invocation_time
        if not past_due and not run_on_startup and self._status.next > invocation_time:
            adjusted = self._status.next
        self._status = ScheduleStatus(
            last=adjusted, next=self.function.schedule.next_after(adjusted), last_updated=adjusted
        )
        if self._monitor is not None:
            await self._monitor.update_status(self.name, self._status)


def _request(status: ScheduleStatus, *, past_due: bool) -> TimerRequest:
    return TimerRequest(
        past_due=past_due, schedule_status=status.as_dict(), schedule={"AdjustForDST": True}
    )
