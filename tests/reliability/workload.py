"""A mixed booking workload against a running stack, and the sync invariant checked after it.

The workload books, cancels and reschedules through the HTTP API while the Outlook user
moves, deletes and edits our events (and adds busy time of their own) through the Graph
emulator. The resources' policies are chosen so that the invariant below is what the
product promises whatever the order of events: a primary member's Outlook changes
cancel or reschedule the booking, the other members' are undone (`restore_event`).
With `ignore` an Outlook delete or move is left standing by design, so no resource
here uses it.

The invariant, after quiescence and one reconcile per resource:
- every booking that holds time has exactly one event per out-direction member, at the
  booking's time; no event of a cancelled booking remains (`cancelledEventMode=delete`);
- no booking, and no event of ours, exists that the client was never told about;
- no two bookings that hold time overlap on a resource, and each holds its time on the
  slot ledger (as the availability API shows it); claims the ledger holds beyond those
  are reported apart (`Findings.stale_claims`);
- every booking change was emitted to `booking-events` exactly once, none lost;
- no message of these bookings or resources sits in a poison queue.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from local.graph_emulator import RunningEmulator
from shared.adapters.graph.mapping import BOOKING_ID_PROPERTY, EXPAND_BOOKING_ID
from shared.domain.base import utc_now
from shared.domain.calendar import CREATE_WAIT_SECONDS, WRITE_IN_FLIGHT_SECONDS
from shared.domain.messages import (
    BOOKING_EVENTS_QUEUE,
    SYNC_INBOUND_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    ReconcileResource,
    poison_queue,
)

logger = logging.getLogger(__name__)

OUTLOOK_USER = {"Authorization": "Bearer outlook-user"}
# No answer at all (connection refused or reset, or our own client timeout).
NO_ANSWER = 0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=45)
GRID = timedelta(minutes=30)
GRID_SLOTS = 60  # 3 days of 08:00-18:00 in half hours
WORK_QUEUES = (SYNC_OUTBOUND_QUEUE, SYNC_INBOUND_QUEUE)


def workload_seed() -> int:
    """RELIABILITY_SEED, or a fresh one; tests print it so a failure can be replayed
    (the choices repeat; the interleaving under concurrency does not)."""
    return int(os.environ.get("RELIABILITY_SEED") or secrets.randbelow(2**32))


def grid_start() -> datetime:
    """08:00 UTC three days from now: in the future and well inside the mirror window."""
    day = datetime.now(UTC) + timedelta(days=3)
    return day.replace(hour=8, minute=0, second=0, microsecond=0)


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def graph_time(event: dict[str, Any], which: str) -> datetime:
    """An event's start or end from Graph JSON (the emulator answers in UTC)."""
    part = event[which]
    assert part["timeZone"] == "UTC", part
    return parse_time(part["dateTime"])


@dataclass(frozen=True)
class Member:
    """A resource of the workload and the mailbox behind it."""

    resource_id: str
    mailbox: str
    settings: dict[str, Any]

    @property
    def pulls(self) -> bool:
        return self.settings.get("direction", "both") in ("in", "both")


def members_for(mailboxes: tuple[str, str, str]) -> list[Member]:
    """Three resources with fresh ids: a room whose Outlook changes cancel or reschedule
    the booking, and two people whose changes are undone (one of them push-only)."""
    suffix = secrets.token_hex(3)
    room, alice, bob = mailboxes
    return [
        Member(
            f"room-{suffix}",
            room,
            {"onOutlookDelete": "cancel_booking", "onOutlookMove": "reschedule_booking"},
        ),
        Member(
            f"alice-{suffix}",
            alice,
            {
                "onOutlookDelete": "restore_event",
                "onOutlookMove": "restore_event",
                "timeZone": "Europe/Berlin",
            },
        ),
        Member(
            f"bob-{suffix}",
            bob,
            {
                "onOutlookDelete": "restore_event",
                "onOutlookMove": "restore_event",
                "direction": "out",
                "subjectTemplate": "Training: {title}",
            },
        ),
    ]


@dataclass
class Client:
    """HTTP to the app's API and, as the Outlook user, to the emulator's Graph API."""

    api: str  # http://127.0.0.1:PORT/api
    graph_url: str
    http: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, JSON or text); status NO_ANSWER when the app did not answer."""
        try:
            async with self.http.request(
                method,
                self.api + path,
                json=body,
                headers=headers,
                params=params,
                timeout=REQUEST_TIMEOUT,
            ) as response:
                text = await response.text()
                try:
                    payload = json.loads(text) if text else None
                except ValueError:
                    payload = text
                return response.status, payload
        except (aiohttp.ClientError, TimeoutError):
            return NO_ANSWER, None

    async def graph(
        self, method: str, path_or_url: str, body: object = None, *, attempts: int = 20
    ) -> tuple[int, Any]:
        """As the Outlook user; throttling and injected 429/503 are retried, as Outlook does."""
        url = path_or_url if path_or_url.startswith("http") else self.graph_url + path_or_url
        for _ in range(attempts):
            async with self.http.request(
                method, url, json=body, headers=OUTLOOK_USER, timeout=REQUEST_TIMEOUT
            ) as response:
                text = await response.text()
                if response.status in (429, 503, 504):
                    await asyncio.sleep(0.02)
                    continue
                return response.status, (json.loads(text) if text else None)
        raise AssertionError(f"{method} {url} stayed throttled for {attempts} attempts")

    async def our_events(self, mailbox: str) -> list[dict[str, Any]]:
        """Every event in the mailbox that carries our booking id, all pages."""
        url: str | None = f"/users/{mailbox}/calendar/events?$top=500&$expand={EXPAND_BOOKING_ID}"
        found: list[dict[str, Any]] = []
        while url is not None:
            status, page = await self.graph("GET", url)
            assert status == 200, page
            for event in page["value"]:
                if event.get("singleValueExtendedProperties"):
                    found.append(event)
            url = page.get("@odata.nextLink")
        return found

    async def events_of_booking(self, mailbox: str, booking_id: str) -> list[dict[str, Any]]:
        condition = (
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{BOOKING_ID_PROPERTY}'"
            f" and ep/value eq '{booking_id}')"
        )
        status, page = await self.graph(
            "GET", f"/users/{mailbox}/calendar/events?$filter={quote(condition)}"
        )
        assert status == 200, page
        events: list[dict[str, Any]] = page["value"]
        return events


async def connect(client: Client, members: Iterable[Member]) -> None:
    for member in members:
        body = {"mailbox": member.mailbox, "displayName": member.resource_id, **member.settings}
        status, payload = await client.call("PUT", f"/resources/{member.resource_id}", body)
        assert status == 202, payload  # connecting: the queue worker subscribes and pulls
        for _ in range(300):
            if payload["status"]["state"] != "connecting":
                break
            await asyncio.sleep(0.1)
            status, payload = await client.call("GET", f"/resources/{member.resource_id}")
        assert payload["status"]["state"] == "connected", payload


def _error_code(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        code: str | None = payload["error"].get("code")
        return code
    return None


def _event_booking_id(event: dict[str, Any]) -> str:
    value: str = event["singleValueExtendedProperties"][0]["value"]
    return value


@dataclass
class Workload:
    """Random API operations and Outlook edits, `concurrency` at a time.

    Statuses the API may answer are listed per operation; with `outage` set (a host
    crash, a storage restart) no answer and 503 are allowed too. Anything else is kept in
    `unexpected`, for the test to fail on.
    """

    client: Client
    members: list[Member]
    seed: int
    outage: bool = False
    start: datetime = field(default_factory=grid_start)
    acked: dict[str, list[str]] = field(default_factory=dict)  # booking id -> resources
    # Creates without an answer (or 503): retried with their Idempotency-Key later.
    uncertain: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    # Bookings whose events the Outlook user moved, deleted or renamed.
    edited: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """Every time the workload books or moves anything lies in here."""
        return self.start - timedelta(days=1), self.start + timedelta(days=4)

    # -- the run ---------------------------------------------------------------------
    async def run(
        self,
        api_operations: int,
        outlook_edits: int,
        *,
        concurrency: int = 4,
        after: Callable[[int], Awaitable[None]] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        """Run the operations in random order; `after(n)` is awaited (by the worker that
        finished it) once the n-th operation has completed. While `gate` is clear no new
        operation starts (those under way go on)."""
        plan = ["api"] * api_operations + ["outlook"] * outlook_edits
        self.rng.shuffle(plan)
        pending = iter(plan)
        done = 0

        async def worker() -> None:
            nonlocal done
            for kind in pending:
                if gate is not None:
                    await gate.wait()
                if kind == "api":
                    await self.api_operation()
                else:
                    await self.outlook_edit()
                done += 1
                if after is not None:
                    await after(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def settle_uncertain(self, *, within: float = 60.0) -> None:
        """Send every unanswered create again with its key, as a client would once the
        service is back: the same booking comes back if the first attempt booked it."""
        deadline = asyncio.get_running_loop().time() + within
        while self.uncertain:
            key, body = self.uncertain.pop(0)
            status, payload = await self._post_booking(key, body)
            in_progress = status == 409 and _error_code(payload) == "concurrency_conflict"
            if status in (NO_ANSWER, 503) or in_progress:
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"create {key} kept failing: {status} {payload}")
                self.uncertain.append((key, body))
                await asyncio.sleep(0.2)
                continue
            self._note("retried create", status, payload, allowed=(201, 409))

    # -- API operations ------------------------------------------------------------
    async def api_operation(self) -> None:
        roll = self.rng.random()
        if not self.acked or roll < 0.5:
            await self._create()
        elif roll < 0.7:
            await self._cancel(self.rng.choice(sorted(self.acked)))
        else:
            await self._reschedule(self.rng.choice(sorted(self.acked)))

    def random_range(self) -> tuple[datetime, datetime]:
        slots = self.rng.choice((1, 2, 3))
        first = self.rng.randrange(GRID_SLOTS - slots)
        # A day holds 20 half hours from 08:00: keep a booking within its day.
        day, index = divmod(first, 20)
        index = min(index, 20 - slots)
        start = self.start + timedelta(days=day) + index * GRID
        return start, start + slots * GRID

    def _random_resources(self) -> list[str]:
        count = self.rng.choice((1, 1, 2, 3))
        # In member order: the room, when booked, is the primary; only a primary's Outlook
        # change may cancel or reschedule (as an additional member it would be ignored).
        chosen = sorted(self.rng.sample(self.members, count), key=self.members.index)
        return [m.resource_id for m in chosen]

    async def _create(self) -> None:
        start, end = self.random_range()
        body = {
            "resourceIds": self._random_resources(),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "title": f"Session {self.rng.randrange(1000)}",
            "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
            "notes": "reliability workload",
        }
        key = "wl-" + secrets.token_hex(8)
        status, payload = await self._post_booking(key, body)
        # A calendar that cannot be trusted (fail closed) is a clear refusal, not an outage.
        refused = _error_code(payload) == "calendar_unavailable"
        if status in (NO_ANSWER, 503) and self.outage and not refused:
            self.uncertain.append((key, body))
        self._note("create", status, payload, allowed=(201, 409))

    async def _post_booking(self, key: str, body: dict[str, Any]) -> tuple[int, Any]:
        status, payload = await self.client.call(
            "POST", "/bookings", body, headers={"Idempotency-Key": key}
        )
        if status == 201:
            self.acked[payload["bookingId"]] = payload["resourceIds"]
        return status, payload

    async def _cancel(self, booking_id: str) -> None:
        status, payload = await self.client.call("POST", f"/bookings/{booking_id}/cancel")
        # 409: the booking kept changing under Outlook-driven updates; the client retries.
        self._note("cancel", status, payload, allowed=(200, 409))

    async def _reschedule(self, booking_id: str) -> None:
        start, end = self.random_range()
        body = {"start": start.isoformat(), "end": end.isoformat()}
        status, payload = await self.client.call("POST", f"/bookings/{booking_id}/reschedule", body)
        # 409: the time is taken; 422: the booking is cancelled.
        self._note("reschedule", status, payload, allowed=(200, 409, 422))

    def _note(self, kind: str, status: int, payload: Any, *, allowed: tuple[int, ...]) -> None:
        self.outcomes[f"{kind} {status}"] += 1
        if status in allowed or (self.outage and status in (NO_ANSWER, 503)):
            return
        if (
            kind in ("create", "retried create", "reschedule")
            and status == 503
            and _error_code(payload) == "calendar_unavailable"
        ):
            # The live look at the slot met Graph failing past its short retries: the
            # booking is refused, nothing written (fail closed), whatever the phase.
            return
        self.unexpected.append(f"{kind} answered {status}: {str(payload)[:300]}")

    # -- Outlook edits ---------------------------------------------------------------
    async def outlook_edit(self, among: list[Member] | None = None) -> None:
        """One edit as the Outlook user, in the mailboxes of `among` (default: all)."""
        members = self.members if among is None else among
        roll = self.rng.random()
        if not self.acked or roll < 0.15:
            if any(m.pulls for m in members):
                await self._foreign_busy_time(members)
            return
        booking_id = self.rng.choice(sorted(self.acked))
        reachable = [r for r in self.acked[booking_id] if any(m.resource_id == r for m in members)]
        if not reachable:
            return
        resource_id = self.rng.choice(reachable)
        member = next(m for m in members if m.resource_id == resource_id)
        events = await self.client.events_of_booking(member.mailbox, booking_id)
        if not events:
            self.outcomes["outlook no event yet"] += 1
            return
        event = events[0]
        self.edited.add(booking_id)
        path = f"/users/{member.mailbox}/events/{quote(event['id'], safe='')}"
        if roll < 0.45:
            shift = self.rng.choice((-2, -1, 1, 2)) * GRID
            moved = {
                which: {
                    "dateTime": (graph_time(event, which) + shift).strftime("%Y-%m-%dT%H:%M:%S"),
                    "timeZone": "UTC",
                }
                for which in ("start", "end")
            }
            status, _ = await self.client.graph("PATCH", path, moved)
            self.outcomes[f"outlook move {status}"] += 1
        elif roll < 0.7:
            status, _ = await self.client.graph("DELETE", path)
            self.outcomes[f"outlook delete {status}"] += 1
        else:
            status, _ = await self.client.graph("PATCH", path, {"subject": "Renamed in Outlook"})
            self.outcomes[f"outlook rename {status}"] += 1

    async def _foreign_busy_time(self, members: list[Member]) -> None:
        member = self.rng.choice([m for m in members if m.pulls])
        start, end = self.random_range()
        fmt = "%Y-%m-%dT%H:%M:%S"
        body = {
            "subject": "Dentist",
            "showAs": "busy",
            "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
            "end": {"dateTime": end.strftime(fmt), "timeZone": "UTC"},
        }
        status, _ = await self.client.graph("POST", f"/users/{member.mailbox}/events", body)
        self.outcomes[f"outlook busy time {status}"] += 1


# -- waiting for quiescence ---------------------------------------------------------------


def queue_client(connection_string: str, name: str) -> QueueClient:
    """Base64 both ways, as host.json's messageEncoding says."""
    return QueueClient.from_connection_string(
        connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


async def queue_length(queue: QueueClient) -> int:
    try:
        properties = await queue.get_queue_properties()
    except ResourceNotFoundError:
        return 0
    count: int = properties.approximate_message_count or 0
    return count


# How long the queues may take to empty after a run: a push that wants no event waits for
# a create still on its way for up to WRITE_IN_FLIGHT_SECONDS since it was sent (the
# README's recovery table) -- a host killed mid-create leaves one -- plus the last
# look's delay and time to do the work.
QUIET_WITHIN_SECONDS = WRITE_IN_FLIGHT_SECONDS + CREATE_WAIT_SECONDS + 25.0


async def wait_quiet(
    connection_string: str, emulator: RunningEmulator, *, within: float = QUIET_WITHIN_SECONDS
) -> None:
    """Until the work queues are empty (a message being processed stays in its queue,
    invisible, until it succeeded) and the emulator has no notification to deliver, three
    times in a row. Fails after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    queues = [queue_client(connection_string, name) for name in WORK_QUEUES]
    try:
        calm = 0
        lengths: list[int] = []
        while calm < 3:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"no quiescence within {within} s: queue lengths {lengths} of {WORK_QUEUES}"
                )
            try:
                await asyncio.wait_for(emulator.emulator.notifier.idle(), timeout=remaining)
            except TimeoutError:
                continue
            lengths = [await queue_length(q) for q in queues]
            calm = calm + 1 if not any(lengths) else 0
            await asyncio.sleep(0.3)
    finally:
        for queue in queues:
            await queue.close()


async def reconcile_once(
    connection_string: str, client: Client, resource_ids: list[str], *, within: float = 60.0
) -> None:
    """One reconcile per resource, as the timer's fan-out asks for it: a ReconcileResource
    message on sync-outbound (so the host retries a failed round, as in Azure), waited
    for until the round is in the resource's sync log."""
    asked = utc_now().replace(microsecond=0)  # the sync log keeps whole seconds
    queue = queue_client(connection_string, SYNC_OUTBOUND_QUEUE)
    try:
        for resource_id in resource_ids:
            message = ReconcileResource(resource_id=resource_id, scheduled_at=asked)
            await queue.send_message(message.model_dump_json())
    finally:
        await queue.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for resource_id in resource_ids:
        while not await _reconciled_since(client, resource_id, asked):
            if loop.time() > deadline:
                raise AssertionError(f"no reconcile of {resource_id} logged within {within} s")
            await asyncio.sleep(0.2)


async def _reconciled_since(client: Client, resource_id: str, since: datetime) -> bool:
    status, log = await client.call(
        "GET", f"/resources/{resource_id}/sync-log", params={"limit": "50"}
    )
    assert status == 200, log
    return any(
        entry["action"] == "reconcile" and parse_time(entry["at"]) >= since
        for entry in log["value"]
    )


# -- reading what happened -------------------------------------------------------------------


async def drain_booking_events(connection_string: str) -> list[dict[str, Any]]:
    """Every message in booking-events, removed as read."""
    queue = queue_client(connection_string, BOOKING_EVENTS_QUEUE)
    found: list[dict[str, Any]] = []
    try:
        while True:
            batch = [m async for m in queue.receive_messages(max_messages=32)]
            if not batch:
                return found
            for message in batch:
                found.append(json.loads(message.content))
                await queue.delete_message(message)
    except ResourceNotFoundError:
        return found
    finally:
        await queue.close()


async def poison_messages(connection_string: str) -> list[str]:
    """The text of the messages in the work queues' poison queues, left in place (the
    first 32 of each: Storage peeks no further)."""
    texts: list[str] = []
    for name in WORK_QUEUES:
        queue = queue_client(connection_string, poison_queue(name))
        try:
            texts += [str(m.content) for m in await queue.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            pass
        finally:
            await queue.close()
    return texts


# -- the invariant ---------------------------------------------------------------------------


async def booking_history(client: Client, resource_id: str, booking_id: str) -> list[str]:
    """What the resource's sync log says of the booking, oldest first (for diagnosis)."""
    status, log = await client.call(
        "GET", f"/resources/{resource_id}/sync-log", params={"limit": "500"}
    )
    if status != 200:
        return [f"sync log answered {status}"]
    return [
        f"{e['at'][11:23]} {e['direction']} {e['action']} {e['outcome']} {e.get('detail') or ''}"
        for e in reversed(log["value"])
        if e.get("bookingId") == booking_id
    ]


@dataclass
class Findings:
    """What the invariant check found, in words."""

    violations: list[str] = field(default_factory=list)
    # Identical copies of one booking event (same id, same content): an outbox sent twice.
    resent: list[str] = field(default_factory=list)
    # Ledger claims of bookings that do not hold that time: what an interrupted create or
    # reschedule leaves (slots.py prunes them lazily, when a booking needs the time).
    stale_claims: list[str] = field(default_factory=list)


async def check_invariant(
    client: Client,
    workload: Workload,
    emitted: list[dict[str, Any]],
    poisoned: list[str],
) -> Findings:
    """Check the invariant (module docstring) over what the workload was told and what
    the calendars, the API, the booking-events queue and the poison queues hold now."""
    findings = Findings()
    violations = findings.violations
    bookings: dict[str, dict[str, Any]] = {}
    for booking_id in sorted(workload.acked):
        status, view = await client.call("GET", f"/bookings/{booking_id}")
        if status != 200:
            violations.append(f"acknowledged booking {booking_id} reads {status}: {view}")
            continue
        bookings[booking_id] = view
    members = {m.resource_id: m for m in workload.members}

    # Calendars against bookings.
    for member in workload.members:
        by_booking: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in await client.our_events(member.mailbox):
            by_booking[_event_booking_id(event)].append(event)
        for booking_id, events in sorted(by_booking.items()):
            view = bookings.get(booking_id)
            if view is None:
                violations.append(
                    f"{member.resource_id}: {len(events)} event(s) of booking {booking_id}, "
                    "which the client was never told about"
                )
            elif member.resource_id not in view["resourceIds"]:
                violations.append(f"{member.resource_id}: event of foreign booking {booking_id}")
            elif view["status"] == "cancelled":
                violations.append(
                    f"{member.resource_id}: {len(events)} event(s) left of cancelled "
                    f"booking {booking_id}"
                )
        for booking_id, view in sorted(bookings.items()):
            if view["status"] == "cancelled" or member.resource_id not in view["resourceIds"]:
                continue
            events = by_booking.get(booking_id, [])
            want = (parse_time(view["start"]), parse_time(view["end"]))
            times = [(graph_time(e, "start"), graph_time(e, "end")) for e in events]
            if times != [want]:
                shown = [f"{s:%d %H:%M}-{e:%H:%M}" for s, e in times]
                found = (
                    f"has its one event at {shown[0]}" if len(times) == 1 else f"has events {shown}"
                )
                history = await booking_history(client, member.resource_id, booking_id)
                violations.append(
                    f"{member.resource_id}: booking {booking_id} ({view['status']}, "
                    f"{want[0]:%d %H:%M}-{want[1]:%H:%M}) {found}, want one at its time; "
                    f"its sync log: {history}"
                )

    # Bookings against each other and against the slot ledger.
    start, end = workload.window
    for resource_id, member in members.items():
        live = sorted(
            (parse_time(v["start"]), parse_time(v["end"]), v["bookingId"])
            for v in bookings.values()
            if resource_id in v["resourceIds"] and v["status"] != "cancelled"
        )
        for (_, first_end, first), (second_start, _, second) in itertools.pairwise(live):
            if second_start < first_end:
                violations.append(f"{resource_id}: bookings {first} and {second} overlap")
        status, listed = await client.call(
            "GET",
            "/bookings",
            params={"resourceId": resource_id, "start": start.isoformat(), "end": end.isoformat()},
        )
        if status != 200:
            violations.append(f"{resource_id}: the booking list answered {status}")
        else:
            for view in listed["value"]:
                if view["bookingId"] not in bookings:
                    violations.append(
                        f"{resource_id}: booking {view['bookingId']} ({view['status']}) exists, "
                        "but the client was never told about it"
                    )
        status, availability = await client.call(
            "GET",
            f"/resources/{resource_id}/availability",
            params={"start": start.isoformat(), "end": end.isoformat(), "durationMinutes": "30"},
        )
        if status != 200:
            violations.append(f"{member.resource_id}: availability answered {status}")
            continue
        claimed = {
            (parse_time(b["start"]), parse_time(b["end"]), b["bookingId"])
            for b in availability["busy"]
            if b["source"] == "booking"
        }
        for missing in sorted(set(live) - claimed):
            violations.append(f"{resource_id}: booking {missing[2]} holds no claim on the ledger")
        for extra in sorted(claimed - set(live)):
            findings.stale_claims.append(
                f"{resource_id}: the ledger holds {extra[0]:%d %H:%M}-{extra[1]:%H:%M} for "
                f"{extra[2]}, which does not hold that time"
            )

    # Booking events: each change once, none lost.
    for booking_id, view in sorted(bookings.items()):
        ids = [
            e["eventId"]
            for e in emitted
            if e["bookingId"] == booking_id and e["type"] != "booking.conflict"
        ]
        for repeated in sorted(i for i, n in Counter(ids).items() if n > 1):
            copies = [e for e in emitted if e["eventId"] == repeated]
            if all(copy == copies[0] for copy in copies):
                findings.resent.append(f"{repeated} sent {len(copies)} times")
            else:
                violations.append(f"event {repeated} emitted with different contents: {copies}")
        # event ids read "<bookingId>.v<version>.<type>"
        versions = sorted({int(i[len(booking_id) + 2 :].split(".")[0]) for i in ids})
        if versions != list(range(1, view["version"] + 1)):
            violations.append(
                f"booking {booking_id} is at version {view['version']} but events were "
                f"emitted for versions {versions}"
            )

    # Poison queues: nothing of ours.
    ours = [*workload.acked, *members]
    for text in poisoned:
        if any(name in text for name in ours):
            violations.append(f"poison message: {text[:300]}")
    return findings


# -- the verdict -----------------------------------------------------------------------------


async def verdict(
    connection_string: str,
    emulator: RunningEmulator,
    client: Client,
    workload: Workload,
    emitted: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> Findings:
    """Quiescence, one reconcile per resource, quiescence, then the invariant.
    `emitted()` returns every booking event emitted so far."""
    await wait_quiet(connection_string, emulator)
    await reconcile_once(connection_string, client, [m.resource_id for m in workload.members])
    await wait_quiet(connection_string, emulator)
    findings = await check_invariant(
        client, workload, await emitted(), await poison_messages(connection_string)
    )
    logger.info("after one reconcile round: %s", findings)
    return findings
