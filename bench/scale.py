"""`python -m bench.scale`: the product at tenant size on the local stack (minutes; not part
of `make test` or `make bench`).

The stack of `python -m bench` (Azurite a process per service, the Graph emulator, the
HTTP host and the queue/timer host), with `--resources` (1,000) mailboxes, each holding
`--events` (200) events seeded through Graph `$batch`, connected for real (`PUT
/api/resources/{id}`: subscription and initial pull by the queue worker). Subscriptions
are made to expire 45 minutes after they are created (SUBSCRIPTION_EXPIRY_MINUTES, no
jitter), so that all of them are due for the upkeep together, and a round is never
skipped as a repeat of the one before (RECONCILE_REPEAT_WITHIN_MINUTES 0). Then:

- a first reconcile round (every resource's first delta round), not measured; then the
  idle round: the reconcile timer run through the admin API, until the sync-outbound
  queue is empty and Graph quiet: wall time, Graph HTTP requests per resource, peak
  queue depth (sampled every 0.25 s), Table Storage requests per resource;
- the subscription upkeep renewing every subscription (all due): wall time, Graph
  requests;
- `--rate` (200) change notifications a second, one per POST, spread round-robin over
  every mailbox's events, for `--duration` (60) s: webhook acknowledgement, the
  sync-inbound messages still queued when the load ends, how long until the queue is
  empty (every change applied), and the changes a second that makes for the one inbound
  worker process;
- the memory (VmRSS now, VmHWM peak) of each host process at the end.

Table Storage requests are counted by a pass-through proxy in front of Azurite's Table
service, which the hosts use instead of Azurite itself (an entity-group transaction is one
request). The emulator counts Graph HTTP requests (`bench.emulator`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from azure.storage.queue.aio import QueueClient

from bench.client import StackClient
from bench.context import quiet
from bench.load import Distribution, open_loop
from bench.report import Row, judged, load_average, load_text, mib, ms, render_table
from bench.stack import Stack, peak_rss_bytes, rss_bytes, running_stack
from bench.webhook import cpu_share, drain_inbound
from bench.world import add_mailbox, connect, day_zero, mailbox_address, seed_events, spread_events
from local.azurite import REPO_ROOT
from shared.domain.messages import SYNC_INBOUND_QUEUE, SYNC_OUTBOUND_QUEUE

logger = logging.getLogger("bench.scale")

RESULTS_DIR = REPO_ROOT / "bench" / "results" / "scale"
SEED_CONCURRENCY = 8
CONNECT_CONCURRENCY = 16
SAMPLE_S = 0.25
ROUND_WITHIN_S = 1800.0
IDLE_ROUND_AIM_S = 60.0
INBOUND_AIM_PER_S = 150.0
WEBHOOK_AIM_P99_S = 0.050
# The subscriptions' lifetime here: all of them due for the upkeep (renewed within 24 h).
EXPIRY_MINUTES = "45"
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(?:GET|POST|PUT|PATCH|DELETE|MERGE|HEAD|OPTIONS) /")


class Counting:
    """A TCP pass-through on a free loopback port to Azurite's Table service, on a thread
    of its own (the hosts start while this process waits for them), counting the HTTP
    request lines the clients send: a `$batch` is one, its inner requests carry absolute
    URLs."""

    def __init__(self) -> None:
        self.requests = 0
        self._loop = asyncio.new_event_loop()

    def start(self, target_port: int) -> int:
        """Start proxying to `target_port`; returns the proxy's port."""
        ready: Future[int] = Future()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                asyncio.start_server(
                    lambda r, w: self._connection(r, w, target_port), "127.0.0.1", 0
                )
            )
            ready.set_result(server.sockets[0].getsockname()[1])
            self._loop.run_forever()

        threading.Thread(target=serve, name="table-proxy", daemon=True).start()
        return ready.result(timeout=10)

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target_port: int
    ) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            self._pipe(client_r, server_w, count=True), self._pipe(server_r, client_w, count=False)
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if count:
                    self.requests += len(_REQUEST_LINE.findall(chunk))
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def bounded(calls: Sequence[Callable[[], Awaitable[object]]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def queue_depth(queue: QueueClient) -> int:
    return int((await queue.get_queue_properties()).approximate_message_count or 0)


async def until_drained(queue: QueueClient, within_s: float) -> tuple[float, int]:
    """Seconds until `queue` is empty twice in a row (messages in flight count), and the
    peak depth seen, sampling every SAMPLE_S."""
    started, peak, empty = time.perf_counter(), 0, 0
    while time.perf_counter() - started < within_s:
        depth = await queue_depth(queue)
        peak = max(peak, depth)
        empty = empty + 1 if depth == 0 else 0
        if empty == 2:
            return time.perf_counter() - started - SAMPLE_S, peak
        await asyncio.sleep(SAMPLE_S)
    raise RuntimeError(f"{queue.queue_name} not empty within {within_s:.0f} s")


@dataclass
class Scale:
    client: StackClient
    counting: Counting
    args: argparse.Namespace
    names: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.names)

    async def set_up(self) -> list[Row]:
        self.names = [f"scale-{n:05d}" for n in range(self.args.resources)]
        day0 = day_zero()
        events = spread_events(self.args.events, day0, per_day=8)
        started = time.perf_counter()

        async def seed(name: str) -> None:
            mailbox = mailbox_address(name)
            await add_mailbox(self.client, mailbox)
            await seed_events(self.client, mailbox, events)

        await bounded([functools.partial(seed, n) for n in self.names], SEED_CONCURRENCY)
        seeded_s = time.perf_counter() - started
        logger.info("seeded %d mailboxes in %.0f s", self.count, seeded_s)
        started = time.perf_counter()

        async def connect_one(name: str) -> None:
            await connect(self.client, name, mailbox_address(name))

        await bounded([functools.partial(connect_one, n) for n in self.names], CONNECT_CONCURRENCY)
        connected_s = time.perf_counter() - started
        logger.info("connected %d resources in %.0f s", self.count, connected_s)
        self.figures["seed_s"], self.figures["connect_s"] = seeded_s, connected_s
        return [
            Row(
                f"set-up: {self.count:,} mailboxes, {self.args.events} events seeded "
                f"(Graph $batch, {SEED_CONCURRENCY} at once); connected for real "
                f"({CONNECT_CONCURRENCY} at once)",
                f"{seeded_s:.0f} s; {connected_s:.0f} s "
                f"({connected_s / self.count * 1000:.0f} ms a resource)",
            )
        ]

    async def reconcile(self, outbound: QueueClient) -> list[Row]:
        logger.info("first reconcile round (not measured)")
        await self.client.run_function("reconcile_timer")
        await asyncio.sleep(1)
        await until_drained(outbound, ROUND_WITHIN_S)
        await quiet(self.client, within_s=120)
        logger.info("idle reconcile round")
        graph_before, tables_before = await self.client.http_counts(), self.counting.requests
        await self.client.run_function("reconcile_timer")
        await asyncio.sleep(SAMPLE_S)
        drained_s, peak = await until_drained(outbound, ROUND_WITHIN_S)
        wall_s = SAMPLE_S + drained_s  # from the timer's run until the queue is empty
        await quiet(self.client, within_s=120)
        graph = (await self.client.http_counts())["total"] - graph_before["total"]
        tables = self.counting.requests - tables_before
        per_graph, per_table = graph / self.count, tables / self.count
        self.figures["idle_round"] = {
            "wall_s": wall_s,
            "graph_requests": graph,
            "table_requests": tables,
            "peak_outbound_depth": peak,
        }
        return [
            judged(
                f"reconcile fan-out of {self.count:,} idle resources: until all rounds finish; "
                "Graph HTTP requests per resource",
                f"{wall_s:.1f} s; {per_graph:.2f} ({graph:,} in all)",
                f"≤ {IDLE_ROUND_AIM_S:.0f} s; 1",
                wall_s <= IDLE_ROUND_AIM_S and graph == self.count,
            ),
            Row(
                "  Table Storage requests per resource (a transaction is one); peak "
                "sync-outbound depth",
                f"{per_table:.1f} ({tables:,} in all); {peak:,}",
            ),
        ]

    async def upkeep(self) -> list[Row]:
        logger.info("subscription upkeep, all due")
        before = await self.client.stats()
        graph_before = await self.client.http_counts()
        tables_before = self.counting.requests
        started = time.perf_counter()
        await self.client.run_function("subscription_upkeep_timer")
        stable_s = 1.0
        await asyncio.sleep(0.5)
        await quiet(self.client, stable_s=stable_s, within_s=900)
        wall_s = time.perf_counter() - started - stable_s
        after = await self.client.stats()
        renewals = sum(r["count"] for r in after["requests"] if r["method"] == "PATCH") - sum(
            r["count"] for r in before["requests"] if r["method"] == "PATCH"
        )
        graph = (await self.client.http_counts())["total"] - graph_before["total"]
        tables = self.counting.requests - tables_before
        self.figures["upkeep"] = {
            "wall_s": wall_s,
            "renewals": renewals,
            "graph_requests": graph,
            "table_requests": tables,
        }
        return [
            judged(
                f"subscription upkeep, {self.count:,} due together: wall time; renewals "
                "(Graph PATCH); Graph HTTP requests; Table requests",
                f"{wall_s:.1f} s; {renewals:,}; {graph:,}; {tables:,}",
                "all renewed in one run",
                renewals == self.count,
            )
        ]

    async def notifications(self, per_post: int) -> list[list[dict[str, Any]]]:
        """POST bodies' items: one `updated` notification per event of every mailbox, with
        each subscription's clientState, `per_post` of one mailbox in each, interleaved
        across mailboxes."""
        listed = (await self.client.control("GET", "/subscriptions"))["value"]
        subscriptions = {s["mailbox"]: s for s in listed}
        per_mailbox: list[list[dict[str, Any]]] = []

        async def events_of(name: str) -> None:
            mailbox = mailbox_address(name)
            path = f"/users/{mailbox}/calendar/events?$top=1000&$select=id,changeKey"
            page = await self.client.graph_ok("GET", path)
            subscription = subscriptions[mailbox]
            per_mailbox.append(
                [
                    {
                        "subscriptionId": subscription["id"],
                        "changeType": "updated",
                        "resource": f"Users/{mailbox}/Events/{event['id']}",
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Event",
                            "@odata.etag": f'W/"{event["changeKey"]}"',
                            "id": event["id"],
                        },
                        "clientState": subscription["clientState"],
                        "tenantId": subscription["tenantId"],
                    }
                    for event in page["value"]
                ]
            )

        await bounded([functools.partial(events_of, n) for n in self.names], SEED_CONCURRENCY)
        posts = [
            [items[first : first + per_post] for first in range(0, len(items), per_post)]
            for items in per_mailbox
        ]
        return [post for group in zip(*posts, strict=False) for post in group]

    async def inbound(self) -> list[Row]:
        rate, duration, per_post = self.args.rate, self.args.duration, self.args.per_post
        posts = await self.notifications(per_post)
        await quiet(self.client, within_s=120)
        total = int(rate * duration / per_post)
        bodies = [json.dumps({"value": posts[i % len(posts)]}).encode() for i in range(total)]
        url = self.client.stack.api_url + "/graph/notifications"
        headers = {"Content-Type": "application/json"}
        logger.info(
            "webhook: %.0f notifications/s, %d per POST, for %.0f s", rate, per_post, duration
        )
        graph_before, tables_before = await self.client.http_counts(), self.counting.requests
        stack = self.client.stack
        cpu_before, started = stack.cpu_seconds(), time.perf_counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

            async def send(index: int) -> int:
                async with session.post(url, data=bodies[index], headers=headers) as answer:
                    await answer.read()
                    return answer.status

            result = await open_loop(send, rate=rate / per_post, duration_s=duration)
        async with QueueClient.from_connection_string(
            stack.connection_string, SYNC_INBOUND_QUEUE
        ) as inbound:
            # What the worker had not caught up with when the load ended (messages, each
            # of one or more changes), and the changes they came in.
            behind = await queue_depth(inbound)
        drained_s, left = await drain_inbound(self.client, self.args.drain_within)
        applied_s = time.perf_counter() - started
        cpu = cpu_share(cpu_before, stack.cpu_seconds(), applied_s)
        graph = (await self.client.http_counts())["total"] - graph_before["total"]
        tables = self.counting.requests - tables_before
        accepted = sum(len(posts[i % len(posts)]) for i in range(result.statuses.get(202, 0)))
        workers_cpu_ms = cpu.get("workers", 0.0) * applied_s * 1000 / max(accepted, 1)
        dist = Distribution.of(result.latencies_s or [float("inf")])
        per_s = accepted / applied_s if drained_s is not None else None
        if drained_s is None:
            # Not drained: the changes applied so far, counting each message left as one.
            per_s = max(0, accepted - left) / applied_s
        self.figures["inbound"] = {
            "offered": result.offered,
            "accepted": accepted,
            "errors": dict(result.errors),
            "latency": dist.as_ms(),
            "applied_after_s": applied_s if drained_s is not None else None,
            "messages_behind_at_load_end": behind,
            "left": left,
            "graph_requests": graph,
            "table_requests": tables,
            "cpu_share_of_one_core": {k: round(v, 3) for k, v in cpu.items()},
            "workers_cpu_ms_per_change": workers_cpu_ms,
        }
        applied = (
            f"{applied_s:.1f} s from the first POST ({drained_s:.1f} s after the load, "
            f"{behind:,} messages behind when it ended)"
            if drained_s is not None
            else f"not within {self.args.drain_within:.0f} s after the load ({left} left)"
        )
        return [
            judged(
                f"webhook ack, {rate:.0f} notifications/s over {self.count:,} mailboxes for "
                f"{duration:.0f} s, {per_post} per POST",
                f"p50 {ms(dist.p50)}  p99 {ms(dist.p99)} ({result.statuses.get(202, 0):,}/"
                f"{result.offered:,} POSTs answered 202)",
                f"p99 ≤ {WEBHOOK_AIM_P99_S * 1000:.0f} ms",
                dist.p99 <= WEBHOOK_AIM_P99_S and result.statuses.get(202, 0) == result.offered,
            ),
            judged(
                "  every change applied; inbound changes/s (one worker process)",
                f"{applied}; {per_s:.0f}/s" + ("" if drained_s is not None else " at most"),
                f"≥ {INBOUND_AIM_PER_S:.0f}/s",
                per_s is not None and per_s >= INBOUND_AIM_PER_S,
            ),
            Row(
                "  per change: Graph HTTP requests; Table requests; workers' CPU",
                f"{graph / max(accepted, 1):.2f}; {tables / max(accepted, 1):.1f}; "
                f"{workers_cpu_ms:.1f} ms",
            ),
            Row(
                "  CPU over that time (share of one core)",
                ", ".join(f"{name} {share:.0%}" for name, share in cpu.items()),
            ),
        ]

    def memory(self) -> list[Row]:
        hosts = self.client.stack.hosts()
        now = {role: rss_bytes(p.pid) for role, p in hosts.items()}
        peak = {role: peak_rss_bytes(p.pid) for role, p in hosts.items()}
        self.figures["memory"] = {"rss": now, "peak": peak}
        return [
            Row(
                "memory at the end, RSS (peak): " + ", ".join(hosts),
                ", ".join(f"{mib(now[r])} ({mib(peak[r])})" for r in hosts),
            )
        ]


async def run(stack: Stack, counting: Counting, args: argparse.Namespace) -> Scale:
    async with aiohttp.ClientSession() as session:
        scale = Scale(StackClient(stack, session), counting, args)
        rows = await scale.set_up()
        if args.only in (None, "reconcile"):
            async with QueueClient.from_connection_string(
                stack.connection_string, SYNC_OUTBOUND_QUEUE
            ) as outbound:
                rows += await scale.reconcile(outbound)
        if args.only in (None, "upkeep"):
            rows += await scale.upkeep()
        if args.only in (None, "inbound"):
            rows += await scale.inbound()
        rows += scale.memory()
        scale.figures["rows"] = [r.__dict__ for r in rows]
        scale.figures["table"] = render_table(rows)
    return scale


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--resources", type=int, default=1000, help="mailboxes (1000)")
    parser.add_argument("--events", type=int, default=200, help="events a mailbox (200)")
    parser.add_argument("--rate", type=float, default=200, help="notifications/s (200)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (60)")
    parser.add_argument(
        "--drain-within", type=float, default=900, help="wait for the inbound backlog (900 s)"
    )
    parser.add_argument(
        "--per-post",
        type=int,
        default=1,
        help="notifications of one mailbox in each POST (1: every POST another mailbox's)",
    )
    parser.add_argument(
        "--only",
        choices=("reconcile", "upkeep", "inbound"),
        help="after the set-up, measure this part alone (default: all of them)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    os.environ["SUBSCRIPTION_EXPIRY_MINUTES"] = EXPIRY_MINUTES
    os.environ["SUBSCRIPTION_EXPIRY_JITTER_MINUTES"] = "0"
    # The idle round comes minutes after the first: not to be skipped as a repeat of it.
    os.environ["RECONCILE_REPEAT_WITHIN_MINUTES"] = "0"
    load_at_start, started = load_average(), time.perf_counter()
    counting = Counting()
    scale = asyncio.run(_main(args, counting))  # noqa: TID251 - a command line tool owns its loop
    header = (
        f"Booking Sync at scale: {args.resources:,} resources, "
        f"{time.perf_counter() - started:.0f} s, load average {load_text(load_at_start)} at start, "
        f"{load_text(load_average())} at end, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    sys.stdout.write(header + "\n" + scale.figures["table"] + "\n")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "scale.json").write_text(
        json.dumps({"header": header, "args": vars(args), **scale.figures}, indent=2, default=str)
    )
    return 0


async def _main(args: argparse.Namespace, counting: Counting) -> Scale:
    with running_stack(RESULTS_DIR, table_proxy=counting.start) as stack:
        return await run(stack, counting, args)


if __name__ == "__main__":
    sys.exit(main())
