"""A randomised, stateful run against the local stack, and the convergence invariant.

Each step applies one rule, drawn from a seeded generator, so a seed replays the same
choices (not the same interleaving of the workers underneath):

- **api**: create (with an Idempotency-Key), cancel or reschedule a booking;
- **outlook**: as the Outlook user, move, delete or rename one of our events, add busy
  time of their own, or delete one occurrence of a recurring series of their own;
- **fault window**: Graph refuses every request to one mailbox with 503, 429 or 403 for
  the next steps, each answer with a Retry-After beyond what the gateway waits, so every
  write gives up at once and its queue message ends in the poison queue (the Outlook user,
  meeting the same outage, edits nothing in that mailbox meanwhile);
- **notifications**: paused for the next steps (whatever changes meanwhile is never
  notified), or delivered in duplicate;
- **host kill** (when the run has a host process of its own): SIGKILL of the Functions
  host in the middle of whatever is under way, and a restart;
- **disconnect**: a resource disconnected with `removeEvents` (the worker removes our
  events from its calendar) and connected again a few steps later with the same
  settings, whatever the removal has done by then (API calls and Outlook edits go on);
- **timer**: the reconcile timer fires (a round per resource is queued, not awaited);
- **wait**: let the workers get on with it (1-3 s).

A baseline round runs right after connecting, as the timer would have long before, so
the closing round is an ordinary incremental one unless the app itself picks a full one.

Then the faults stop (every window closed, notifications resumed), the work queues drain
and **one ordinary reconcile round** per resource runs (whatever kind the app picks). The
invariant, read only from the API and Graph (and the booking-events queue):

- every live booking has exactly one event per booked calendar, at its time; a cancelled
  booking has none; no event of ours exists without a booking the client was told of;
- no foreign event was changed or deleted by us;
- no two live bookings overlap on a resource, and the ledger holds exactly their time;
- every booking change was emitted once; a change with source `outlook` happened only to
  a booking the Outlook user touched;
- every live booking's calendars say `synced`, and every resource is `connected`.
Messages in poison queues are expected here (the windows outlast the retries): healing
them is the round's job.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from local.graph_emulator import RunningEmulator
from shared.domain.base import utc_now
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, ReconcileResource
from tests.reliability.workload import (
    QUIET_WITHIN_SECONDS,
    Client,
    Findings,
    Member,
    Workload,
    check_invariant,
    queue_client,
    reconcile_once,
    wait_quiet,
)

logger = logging.getLogger(__name__)

RULES = (
    ("api", 40),
    ("outlook", 25),
    ("fault window", 8),
    ("pause notifications", 6),
    ("duplicate notifications", 4),
    ("timer", 4),
    ("disconnect", 3),
    ("wait", 10),
)
FAULT_STATUSES = (503, 429, 403)
# Past the gateway's longest wait (30 s): each faulted request gives up at once.
BEYOND_RETRIES = 31


@dataclass
class Control:
    """The Graph emulator's control API, over the run's HTTP client."""

    emulator: RunningEmulator
    client: Client

    async def call(self, method: str, path: str, body: object = None) -> Any:
        url = self.emulator.control_url + path
        async with self.client.http.request(method, url, json=body) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            return await response.json(content_type=None) if text else None


@dataclass
class StatefulRun:
    """One seeded run: its rules, the workload underneath, what is open right now."""

    client: Client
    control: Control
    members: list[Member]
    connection_string: str
    seed: int
    steps: int
    # SIGKILL the Functions host and start it again; None where it runs in-process.
    kill: Callable[[], Awaitable[None]] | None = None
    workload: Workload = field(init=False)
    # mailbox → (fault id, steps left)
    faults: dict[str, tuple[str, int]] = field(default_factory=dict)
    paused_for: int = 0
    duplicates_for: int = 0
    applied: list[str] = field(default_factory=list)
    # Foreign events the Outlook user made: id → (mailbox, changeKey they last saw).
    foreign: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Resources disconnected: id → steps until they are connected again.
    disconnected: dict[str, int] = field(default_factory=dict)
    disconnects: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.workload = Workload(self.client, self.members, self.seed, outage=True)

    async def run(self) -> None:
        rules = [*RULES, ("host kill", 3)] if self.kill is not None else list(RULES)
        names = [name for name, _ in rules]
        weights = [weight for _, weight in rules]
        try:
            for step in range(self.steps):
                rule = self.rng.choices(names, weights)[0]
                if (
                    step == self.steps // 2
                    and "host kill" in names
                    and "host kill" not in self.applied
                ):
                    rule = "host kill"  # at least one per run that has a host to kill
                self.applied.append(rule)
                await self._apply(rule)
                await self._tick()
        finally:
            await self.stop_faults()

    async def _apply(self, rule: str) -> None:
        if rule == "api":
            await self.workload.api_operation()
        elif rule == "outlook":
            await self._outlook()
        elif rule == "fault window":
            await self._open_fault()
        elif rule == "pause notifications":
            if not self.paused_for:
                await self.control.call("POST", "/notifications/pause")
            self.paused_for = self.rng.randint(3, 8)
        elif rule == "host kill" and self.kill is not None:
            await self.kill()
        elif rule == "disconnect":
            await self._disconnect()
        elif rule == "timer":
            await enqueue_rounds(self.connection_string, [m.resource_id for m in self.members])
        elif rule == "duplicate notifications":
            await self.control.call("POST", "/notifications/duplicates", {"enabled": True})
            self.duplicates_for = self.rng.randint(3, 8)
        else:
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))

    async def _outlook(self) -> None:
        reachable = [m for m in self.members if m.mailbox not in self.faults]
        roll = self.rng.random()
        if roll < 0.1:
            pulling = [m for m in reachable if m.pulls]
            if pulling:
                await self._foreign_series_occurrence(self.rng.choice(pulling))
            return
        if roll < 0.25:
            pulling = [m for m in reachable if m.pulls]
            if pulling:
                await self._foreign_event(self.rng.choice(pulling))
            return
        await self.workload.outlook_edit(among=reachable)

    async def _foreign_event(self, member: Member) -> None:
        start, end = self.workload.random_range()
        fmt = "%Y-%m-%dT%H:%M:%S"
        body = {
            "subject": "Dentist",
            "showAs": "busy",
            "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": end.strftime(fmt), "timeZone": "UTC"},
        }
        status, event = await self.client.graph("POST", f"/users/{member.mailbox}/events", body)
        assert status == 201, event
        self.foreign[event["id"]] = (member.mailbox, event["changeKey"])

    async def _foreign_series_occurrence(self, member: Member) -> None:
        """A weekly series of the Outlook user's own, and one of its occurrences deleted."""
        start, end = self.workload.random_range()
        fmt = "%Y-%m-%dT%H:%M:%S"
        body = {
            "subject": "Team sync",
            "showAs": "busy",
            "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": end.strftime(fmt), "timeZone": "UTC"},
            "recurrence": {
                "pattern": {
                    "type": "daily",
                    "interval": 1,
                },
                "range": {
                    "type": "numbered",
                    "startDate": start.strftime("%Y-%m-%d"),
                    "numberOfOccurrences": 3,
                },
            },
        }
        path = f"/users/{member.mailbox}/events"
        status, series = await self.client.graph("POST", path, body)
        assert status == 201, series
        since, until = self.workload.window
        window = f"startDateTime={since.strftime(fmt)}Z&endDateTime={until.strftime(fmt)}Z"
        series_path = f"{path}/{quote(series['id'], safe='')}"
        status, instances = await self.client.graph("GET", f"{series_path}/instances?{window}")
        assert status == 200, instances
        occurrence = self.rng.choice(instances["value"])
        status, _ = await self.client.graph("DELETE", f"{path}/{quote(occurrence['id'], safe='')}")
        assert status == 204
        status, master = await self.client.graph("GET", series_path)
        assert status == 200, master
        self.foreign[master["id"]] = (member.mailbox, master["changeKey"])

    async def _disconnect(self) -> None:
        member = self.rng.choice(self.members)
        if member.resource_id in self.disconnected:
            return
        path = f"/resources/{member.resource_id}?removeEvents=true"
        status, view = await self.client.call("DELETE", path)
        if status >= 400 and member.mailbox in self.faults:
            return  # Graph refused to drop the subscription: still connected
        assert status in (200, 202), f"DELETE {path}: {status} {view}"
        self.disconnected[member.resource_id] = self.rng.randint(1, 6)
        self.disconnects += 1

    async def _reconnect(self, resource_id: str) -> bool:
        """PUT the resource again as it was; False while Graph refuses it (a fault: 503,
        or 422 when it answers 403 to the look at the mailbox)."""
        member = next(m for m in self.members if m.resource_id == resource_id)
        body = {"mailbox": member.mailbox, "displayName": resource_id, **member.settings}
        status, view = await self.client.call("PUT", f"/resources/{resource_id}", body)
        if status in (422, 503) and member.mailbox in self.faults:
            return False
        assert status in (200, 202), f"PUT /resources/{resource_id}: {status} {view}"
        del self.disconnected[resource_id]
        return True

    async def _open_fault(self) -> None:
        member = self.rng.choice(self.members)
        if member.mailbox in self.faults:
            return
        status = self.rng.choice(FAULT_STATUSES)
        fault = await self.control.call(
            "POST",
            "/faults",
            {"mailbox": member.mailbox, "status": status, "retryAfter": BEYOND_RETRIES},
        )
        self.faults[member.mailbox] = (fault["id"], self.rng.randint(3, 10))

    async def _tick(self) -> None:
        """One step passed: close what has run its course."""
        for mailbox, (fault_id, left) in list(self.faults.items()):
            if left <= 1:
                await self.control.call("DELETE", f"/faults/{fault_id}")
                del self.faults[mailbox]
            else:
                self.faults[mailbox] = (fault_id, left - 1)
        if self.paused_for:
            self.paused_for -= 1
            if not self.paused_for:
                await self.control.call("POST", "/notifications/resume")
        if self.duplicates_for:
            self.duplicates_for -= 1
            if not self.duplicates_for:
                await self.control.call("POST", "/notifications/duplicates", {"enabled": False})
        for resource_id, left in list(self.disconnected.items()):
            if left <= 1:
                await self._reconnect(resource_id)
            else:
                self.disconnected[resource_id] = left - 1

    async def stop_faults(self) -> None:
        for fault_id, _ in self.faults.values():
            await self.control.call("DELETE", f"/faults/{fault_id}")
        self.faults.clear()
        await self.control.call("POST", "/notifications/resume")
        await self.control.call("POST", "/notifications/duplicates", {"enabled": False})
        self.paused_for = self.duplicates_for = 0
        for resource_id in list(self.disconnected):
            assert await self._reconnect(resource_id), f"{resource_id} not connected again"


async def enqueue_rounds(connection_string: str, resource_ids: list[str]) -> None:
    """What the reconcile timer does: a ReconcileResource message per resource."""
    queue = queue_client(connection_string, SYNC_OUTBOUND_QUEUE)
    try:
        for resource_id in resource_ids:
            message = ReconcileResource(resource_id=resource_id, scheduled_at=utc_now())
            await queue.send_message(message.model_dump_json())
    finally:
        await queue.close()


async def one_round(
    run: StatefulRun,
    connection_string: str,
    emulator: RunningEmulator,
    *,
    within: float = QUIET_WITHIN_SECONDS,
) -> None:
    """After the run: settle unanswered creates, let the queues drain, one reconcile round
    per resource (a queue message each, as the timer sends), drain again."""
    await run.workload.settle_uncertain()
    await wait_quiet(connection_string, emulator, within=within)
    resource_ids = [m.resource_id for m in run.members]
    await reconcile_once(connection_string, run.client, resource_ids, within=within)
    await wait_quiet(connection_string, emulator, within=within)


async def check_convergence(run: StatefulRun, emitted: list[dict[str, Any]]) -> Findings:
    """The invariant (module docstring); `emitted` holds every booking event so far."""
    workload, client = run.workload, run.client
    # Poison is expected here (see the module docstring): the round heals what it held.
    findings = await check_invariant(client, workload, emitted, poisoned=[])
    violations = findings.violations
    for event_id, (mailbox, change_key) in sorted(run.foreign.items()):
        status, event = await client.graph(
            "GET", f"/users/{mailbox}/events/{quote(event_id, safe='')}"
        )
        if status != 200:
            violations.append(f"foreign event {event_id} in {mailbox} is gone ({status})")
        elif event["changeKey"] != change_key:
            violations.append(f"foreign event {event_id} in {mailbox} was changed")
    for booking_id in sorted(workload.acked):
        sources = {
            e["source"]
            for e in emitted
            if e["bookingId"] == booking_id and e["type"] != "booking.conflict"
        }
        if "outlook" in sources and booking_id not in workload.edited:
            violations.append(f"booking {booking_id}: an Outlook change nobody made was applied")
        status, view = await client.call("GET", f"/bookings/{booking_id}")
        if status == 200 and view["status"] != "cancelled":
            for state in view["sync"]:
                if state["state"] not in ("synced", "not_pushed"):
                    violations.append(
                        f"booking {booking_id} on {state['resourceId']}: sync {state['state']}"
                        f" ({state.get('error')})"
                    )
    for member in run.members:
        status, resource = await client.call("GET", f"/resources/{member.resource_id}")
        if status != 200 or resource["status"]["state"] != "connected":
            shown = resource["status"] if status == 200 else status
            violations.append(f"{member.resource_id} is not connected: {shown}")
    return findings
