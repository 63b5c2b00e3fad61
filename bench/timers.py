"""`python -m bench.timers` (`make bench-timers`): the timers at tenant scale.

Azurite (in memory, a process per service, as `python -m bench` starts it) and the app's
own services and storage adapters in this process; Graph is answered from memory after
`--graph-ms` (100) per request, and `--failing` of the mailboxes (10%) are gone (404).
`--resources` (1,000) connected resources, each with a subscription due for renewal.
The Functions host is played by a loop that takes sync-outbound messages 32 at a time
and runs 16 at once (host.json's batchSize 16), completing a message when its handler
returns and counting the ones that raise (the host would deliver those again, five
times, then `-poison`). It measures:

- the subscription upkeep renewing every due subscription (`Upkeep.renew_subscriptions`);
- the reconcile fan-out: the timer's run (`ReconcileRounds.fan_out`), then its pages taken
  in one batch and run side by side, until every resource's message is in the queue;
- a reconcile round of `--round-resources` (200; a round costs each about a dozen table
  operations, slow on a busy Azurite), `--failing` of them gone: Graph requests per
  failing resource (a worker run costs one) and messages raised; then the same round
  again at once (a past-due timer run): resources paged, Graph requests;
- with `--before`, the serial loop the timer ran until now: one send after another.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient
from pydantic import TypeAdapter

from bench.report import Row, judged, load_average, render_table
from local.azurite import start_azurite
from shared.composition import Services, build_adapters, build_services
from shared.domain.calendar import CalendarEvent, DeltaRound, GraphSubscription
from shared.domain.errors import GraphNotFound
from shared.domain.messages import (
    RECONCILE_PAGE_SIZE,
    SYNC_OUTBOUND_QUEUE,
    OutboundWork,
    ReconcilePage,
    ReconcileResource,
)
from shared.domain.resources import ConnectionStatus, Resource, ResourceSettings
from shared.ports import CalendarGateway, EventWrite, EventWriteResult
from shared.settings import Settings

logger = logging.getLogger("bench.timers")

FUNCTION_TIMEOUT_S = 600.0  # host.json functionTimeout
HOST_BATCH = 32  # messages taken at once (batchSize 16 + newBatchThreshold 8, rounded up)
HOST_CONCURRENCY = 16
PARTS = ("upkeep", "fan-out", "round")
_outbound = TypeAdapter[OutboundWork](OutboundWork)


class LatencyGraph:
    """The Graph calls a timer round and a renewal make, after `latency_s` each; the
    mailboxes in `gone` answer 404. Counts requests per mailbox."""

    def __init__(self, latency_s: float, gone: set[str]) -> None:
        self.latency_s = latency_s
        self.gone = gone
        self.requests: Counter[str] = Counter()
        self.renewals = 0

    async def _request(self, mailbox: str) -> None:
        self.requests[mailbox] += 1
        await asyncio.sleep(self.latency_s)
        if mailbox in self.gone:
            raise GraphNotFound(f"mailbox {mailbox} not found")

    async def delta(
        self, mailbox: str, start: datetime, end: datetime, delta_link: str | None
    ) -> DeltaRound:
        await self._request(mailbox)
        return DeltaRound(events=[], removed_ids=[], delta_link=f"{mailbox}-delta")

    async def list_our_events(self, mailbox: str) -> list[CalendarEvent]:
        await self._request(mailbox)
        return []

    async def get_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | None]:
        await self._request(mailbox)
        return dict.fromkeys(event_ids)

    async def write_batch(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        return [EventWriteResult() for _ in writes]

    async def renew_subscription(
        self, subscription_id: str, expires_at: datetime
    ) -> GraphSubscription:
        self.renewals += 1
        await asyncio.sleep(self.latency_s)
        return GraphSubscription(subscription_id=subscription_id, expires_at=expires_at)


@dataclass
class Drained:
    handled: Counter[str]  # by message kind
    raised: int
    empty_s: float  # since the drain started, when the queue was empty


async def drain(queue: QueueClient, services: Services) -> Drained:
    """Play the host on sync-outbound until it stays empty."""
    started = time.perf_counter()
    handled: Counter[str] = Counter()
    raised = 0
    gate = asyncio.Semaphore(HOST_CONCURRENCY)

    async def handle(message: Any) -> None:
        nonlocal raised
        work = _outbound.validate_json(message.content)
        async with gate:
            try:
                if isinstance(work, ReconcilePage):
                    await services.rounds.fan_out_page(work)
                elif isinstance(work, ReconcileResource):
                    await services.rounds.run(work)
                else:
                    raise TypeError(f"unexpected {work.kind}")
            except Exception:  # counted: the host would deliver it again
                logger.exception("a %s message raised", work.kind)
                raised += 1
                return
        handled[work.kind] += 1
        await queue.delete_message(message)

    idle = 0
    while idle < 2:
        batch = [
            m
            async for m in queue.receive_messages(
                messages_per_page=HOST_BATCH, max_messages=HOST_BATCH, visibility_timeout=300
            )
        ]
        if not batch:
            idle += 1
            await asyncio.sleep(0.2)
            continue
        idle = 0
        await asyncio.gather(*(handle(m) for m in batch))
    return Drained(handled, raised, time.perf_counter() - started)


def settings_for(connection_string: str) -> Settings:
    return Settings.model_validate(
        {
            "storage_connection_string": connection_string,
            "table_name_prefix": "tm" + secrets.token_hex(5),
            "graph_tenant_id": "00000000-0000-0000-0000-0000000000aa",
            "graph_auth_mode": "emulator",
            "public_base_url": "http://127.0.0.1:7071",
        }
    )


def resource(n: int, now: datetime) -> Resource:
    return Resource(
        resource_id=f"room-{n:05d}",
        settings=ResourceSettings(mailbox=f"room-{n:05d}@contoso.com", display_name=f"Room {n}"),
        status=ConnectionStatus(last_sync_at=now, mirror_refreshed_at=now),
        subscription_id=f"sub-{n:05d}",
        # Connected together an hour ago, long before expiries were spread: all due now.
        subscription_expires_at=now + timedelta(hours=2),
        created_at=now,
        updated_at=now,
    )


async def gathered(calls: Sequence[Callable[[], Awaitable[object]]], limit: int = 16) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


class App:
    """The app's services over a fresh table prefix, Graph answered by `graph`."""

    def __init__(self, connection_string: str, graph: LatencyGraph) -> None:
        settings = settings_for(connection_string)
        self.adapters = build_adapters(settings)
        self.services = build_services(
            settings, self.adapters.ports(), cast(CalendarGateway, graph)
        )

    async def add(self, resources: Sequence[Resource]) -> None:
        logger.info("adding %d resources", len(resources))
        await gathered([functools.partial(self.adapters.resources.add, r) for r in resources])


async def run(connection_string: str, args: argparse.Namespace) -> list[Row]:
    count, graph_ms = args.resources, args.graph_ms
    now = datetime.now(UTC)
    graph = LatencyGraph(graph_ms / 1000, set())
    queue = QueueClient.from_connection_string(
        connection_string, SYNC_OUTBOUND_QUEUE, message_decode_policy=TextBase64DecodePolicy()
    )
    rows: list[Row] = []
    scale = App(connection_string, graph)
    try:
        await scale.adapters.queues.ensure_queues()
        resources = [resource(n, now) for n in range(count)]
        await scale.add(resources)
        if args.before:
            rows.append(await serial_fan_out(scale, resources, now))
        if "upkeep" in args.parts:
            rows.append(await upkeep(scale, graph, count, graph_ms))
        if "fan-out" in args.parts:
            rows.append(await fan_out(scale, queue, count))
    finally:
        await scale.adapters.close()
    round_app = App(connection_string, graph)
    try:
        if "round" in args.parts:
            rows += await failing_round(round_app, graph, queue, args.round_resources, args.failing)
    finally:
        await round_app.adapters.close()
        await queue.close()
    return rows


async def serial_fan_out(app: App, resources: Sequence[Resource], now: datetime) -> Row:
    """What the timer did until now: one send after another (to a queue of its own)."""
    logger.info("the serial fan-out (before)")
    serial = "bench-serial-" + secrets.token_hex(3)
    started = time.perf_counter()
    for r in resources:
        message = ReconcileResource(resource_id=r.resource_id, scheduled_at=now)
        await app.adapters.queues.send(serial, message)
    taken = time.perf_counter() - started
    return Row(
        f"reconcile fan-out of {len(resources):,} resources, one send after another (before)",
        f"{taken:.1f} s ({taken / len(resources) * 1000:.1f} ms a message)",
    )


async def upkeep(app: App, graph: LatencyGraph, count: int, graph_ms: float) -> Row:
    logger.info("upkeep: %d due subscriptions", count)
    started = time.perf_counter()
    renewed = await app.services.upkeep.renew_subscriptions()
    taken = time.perf_counter() - started
    return judged(
        f"upkeep renewing {count:,} due subscriptions (Graph {graph_ms:.0f} ms each)",
        f"{taken:.1f} s, {renewed:,} renewed ({graph.renewals:,} Graph requests); "
        f"one at a time: over {count * graph_ms / 1000:.0f} s of Graph alone",
        f"all, ≤ {FUNCTION_TIMEOUT_S / 2:.0f} s",
        renewed == count and taken <= FUNCTION_TIMEOUT_S / 2,
    )


async def fan_out(app: App, queue: QueueClient, count: int) -> Row:
    """The timer's run, then its pages taken in one batch and run side by side, as one
    host instance would (batchSize 16): until every resource's message is in the queue."""
    logger.info("reconcile fan-out: %d resources", count)
    cpu = time.process_time()
    started = time.perf_counter()
    paged = await app.services.rounds.fan_out()
    timer_s = time.perf_counter() - started
    expected = -(-paged // RECONCILE_PAGE_SIZE)
    pages: list[ReconcilePage] = []
    while len(pages) < expected:
        async for message in queue.receive_messages(
            messages_per_page=HOST_BATCH, max_messages=HOST_BATCH, visibility_timeout=300
        ):
            pages.append(ReconcilePage.model_validate_json(message.content))
            await queue.delete_message(message)
    await asyncio.gather(*(app.services.rounds.fan_out_page(page) for page in pages))
    fan_out_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    sent = (await queue.get_queue_properties()).approximate_message_count
    await queue.clear_messages()
    return judged(
        f"reconcile fan-out of {count:,} resources: the timer's run; until all are sent",
        f"{timer_s:.2f} s ({len(pages)} pages); {fan_out_s:.1f} s ({sent:,} messages; "
        f"{cpu_s:.1f} s of this process's CPU)",
        "≤ 10 s",
        paged == count == sent and fan_out_s <= 10,
    )


async def failing_round(
    app: App, graph: LatencyGraph, queue: QueueClient, count: int, failing: float
) -> list[Row]:
    now = datetime.now(UTC)
    resources = [resource(n, now) for n in range(count)]
    gone = {r.settings.mailbox for r in resources[: round(count * failing)]}
    graph.gone |= gone
    graph.requests.clear()
    await app.add(resources)
    logger.info("reconcile round: %d resources, %d failing", count, len(gone))
    started = time.perf_counter()
    await app.services.rounds.fan_out()
    drained = await drain(queue, app.services)
    round_s = time.perf_counter() - started
    per_failing = sum(graph.requests[m] for m in gone) / max(len(gone), 1)
    healthy = [r.settings.mailbox for r in resources if r.settings.mailbox not in gone]
    per_healthy = sum(graph.requests[m] for m in healthy) / max(len(healthy), 1)
    rows = [
        judged(
            f"round of {count:,} resources, {len(gone):,} failing ({failing:.0%}): worker runs "
            "per failing resource; messages raised (each would come back, up to -poison)",
            f"{per_failing:.2f}; {drained.raised}",
            "1; none",
            per_failing == 1 and drained.raised == 0,
        ),
        Row(
            f"  the whole round: {drained.handled['reconcile_resource']:,} resources",
            f"{round_s:.1f} s ({round_s / count * 1000:.0f} ms a resource); Graph requests per "
            f"healthy resource {per_healthy:.2f} (a first round: delta + our events)",
        ),
    ]
    logger.info("the round again at once (a past-due run)")
    requests = sum(graph.requests.values())
    started = time.perf_counter()
    again = await app.services.rounds.fan_out(past_due=True)
    repeat = await drain(queue, app.services)
    repeated = sum(graph.requests.values()) - requests
    rows.append(
        judged(
            "  the round again at once (a past-due timer run): resources paged; Graph requests",
            f"{again:,} ({repeat.handled['reconcile_resource']:,} messages, "
            f"{time.perf_counter() - started:.1f} s); {repeated}",
            f"{count - len(gone):,} (the failing wait); 0",
            again == count - len(gone) and repeated == 0,
        )
    )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__)
    parser.add_argument("--resources", type=int, default=1000, help="resources (1000)")
    parser.add_argument(
        "--round-resources",
        type=int,
        default=200,
        help="resources of the reconcile round with failing ones (200; a round costs each "
        "about a dozen table operations, slow on a busy Azurite)",
    )
    parser.add_argument("--failing", type=float, default=0.1, help="share gone (0.1)")
    parser.add_argument("--graph-ms", type=float, default=100, help="Graph latency (100)")
    parser.add_argument(
        "--before", action="store_true", help="also time the serial fan-out of before"
    )
    parser.add_argument(
        "--only",
        dest="parts",
        action="append",
        choices=PARTS,
        help="run only these parts (repeatable; default all)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.parts = args.parts or list(PARTS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("shared").setLevel(logging.ERROR)  # one line per resource otherwise
    load_at_start = load_average()
    started = time.perf_counter()
    azurite = start_azurite(per_service=True, ready_timeout=120.0)
    try:
        work = run(azurite.connection_string, args)
        rows = asyncio.run(work)  # noqa: TID251 - a command line tool owns its loop
    finally:
        azurite.stop(grace_seconds=1)
    sys.stdout.write(
        f"Booking Sync timers at scale, {args.resources:,} resources, "
        f"{time.perf_counter() - started:.0f} s, load average "
        f"{load_at_start} at start, {load_average()} at end\n"
    )
    sys.stdout.write(render_table(rows) + "\n")
    return 1 if any(r.verdict == "MISSED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
