"""Setting the stage: mailboxes, foreign Outlook events, connected resources, bookings."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from bench.client import BenchError, StackClient, poll

GRAPH_TIME = "%Y-%m-%dT%H:%M:%S"
BATCH_LIMIT = 20
SEED_ATTEMPTS = 10
CONNECT_TIMEOUT_S = 600.0  # connecting pulls the whole calendar into the mirror
SHOW_AS_CYCLE = ("busy", "tentative", "oof", "busy")


def day_zero() -> datetime:
    """Midnight UTC three days from now: far enough ahead that nothing is in the past."""
    return (datetime.now(UTC) + timedelta(days=3)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


def graph_time(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(UTC).strftime(GRAPH_TIME), "timeZone": "UTC"}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def mailbox_address(name: str) -> str:
    return f"{name}@contoso.com"


def event_path(mailbox: str, event_id: str) -> str:
    return f"/users/{mailbox}/events/{quote(event_id, safe='')}"


async def add_mailbox(client: StackClient, mailbox: str) -> None:
    await client.control("POST", "/mailboxes", {"id": mailbox})


def foreign_event(index: int, start: datetime, minutes: int) -> dict[str, Any]:
    """A busy-time event somebody else put in the calendar (mirrored: never `free`)."""
    return {
        "subject": f"Seeded meeting {index}",
        "body": {"contentType": "text", "content": "Agenda to follow."},
        "start": graph_time(start),
        "end": graph_time(start + timedelta(minutes=minutes)),
        "showAs": SHOW_AS_CYCLE[index % len(SHOW_AS_CYCLE)],
        "sensitivity": "private" if index % 10 == 0 else "normal",
    }


def spread_events(count: int, first_day: datetime, per_day: int) -> list[dict[str, Any]]:
    """`count` 20-minute events, `per_day` a day every 30 minutes from 06:00 UTC."""
    events = []
    for index in range(count):
        day, slot = divmod(index, per_day)
        start = first_day + timedelta(days=day, hours=6, minutes=30 * slot)
        events.append(foreign_event(index, start, 20))
    return events


async def seed_events(client: StackClient, mailbox: str, events: Sequence[dict[str, Any]]) -> None:
    """Create the events through Graph `$batch` (20 a request). Raises BenchError if any
    is refused (a 429 is sent again once)."""
    for first in range(0, len(events), BATCH_LIMIT):
        chunk = list(events[first : first + BATCH_LIMIT])
        pending = {str(i): body for i, body in enumerate(chunk)}
        for _attempt in range(SEED_ATTEMPTS):
            requests = [
                {
                    "id": key,
                    "method": "POST",
                    "url": f"/users/{mailbox}/events",
                    "headers": {"Content-Type": "application/json"},
                    "body": body,
                }
                for key, body in pending.items()
            ]
            answer = await client.graph_ok("POST", "/$batch", {"requests": requests})
            for item in answer["responses"]:
                if item["status"] == 201:
                    pending.pop(str(item["id"]), None)
                elif item["status"] == 429:
                    client.own_throttled += 1
                else:
                    raise BenchError(f"seeding {mailbox}: inner status {item['status']}")
            if not pending:
                break
            await asyncio.sleep(1)
        if pending:
            raise BenchError(f"seeding {mailbox}: {len(pending)} events refused")


async def connect(client: StackClient, resource_id: str, mailbox: str, **settings: Any) -> Any:
    """PUT the resource, then wait while the queue worker connects it (subscription +
    initial pull); the resource's status says when it is done."""
    body = {"mailbox": mailbox, "displayName": resource_id, **settings}
    view = await client.api_ok("PUT", f"/resources/{resource_id}", body)
    deadline = asyncio.get_running_loop().time() + CONNECT_TIMEOUT_S
    while view["status"]["state"] == "connecting":
        if asyncio.get_running_loop().time() > deadline:
            raise BenchError(f"{resource_id} still connecting after {CONNECT_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.2)
        view = await client.api_ok("GET", f"/resources/{resource_id}")
    return view


def booking_body(
    resource_ids: Sequence[str], start: datetime, minutes: int = 30, title: str = "Bench"
) -> dict[str, Any]:
    return {
        "resourceIds": list(resource_ids),
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        "title": title,
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
    }


async def create_booking(
    client: StackClient, resource_ids: Sequence[str], start: datetime, minutes: int = 30
) -> dict[str, Any]:
    body = booking_body(resource_ids, start, minutes)
    status, payload = await client.api(
        "POST", "/bookings", body, headers={"Idempotency-Key": idempotency_key()}
    )
    if status != 201:
        raise BenchError(f"POST /api/bookings answered {status}: {payload!r}")
    created: dict[str, Any] = payload
    return created


async def synced_view(client: StackClient, booking_id: str) -> dict[str, Any] | None:
    view: dict[str, Any] = await client.api_ok("GET", f"/bookings/{booking_id}")
    return view if all(s["state"] == "synced" for s in view["sync"]) else None


async def wait_synced(
    client: StackClient, booking_id: str, *, within_s: float = 30, interval_s: float = 0.05
) -> dict[str, Any]:
    return await poll(
        lambda: synced_view(client, booking_id),
        within_s=within_s,
        interval_s=interval_s,
        what=f"booking {booking_id} synced",
    )


def idempotency_key() -> str:
    return "bench-" + secrets.token_hex(8)
