"""`python -m bench.webhook_cpu`: CPU time per webhook POST in the HTTP host's process.

Azurite (Queue and Table Storage, a process each, in memory) runs apart; the local
Functions host's HTTP triggers run in this process, on one event loop, with the real
`function_app` and the host's INFO logging (to a file), as `make run` starts them. A
child process sends `--posts` POSTs of `--batch` valid change notifications each (spread
over `--subscriptions` stored subscriptions) to `/api/graph/notifications` at `--rate`
POSTs a second, open loop. The figure is this process's CPU time (`time.process_time`)
over those POSTs divided by their number: unlike latency, the machine's load distorts
it little. With `--profile FILE` the load runs under cProfile, the stats go to FILE and
the functions with the most own time are printed.

Every POST must be answered 202 and its notifications reach the sync-inbound queue
(counted at the end), so a faster path that drops work cannot pass for a cheaper one.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient
from pydantic import SecretStr

import function_app
from bench.load import Distribution, open_loop
from bench.report import load_average
from local.azurite import REPO_ROOT, start_azurite
from local.functions_host import start_host
from local.functions_host.config import default_http_concurrency
from local.run import LOCAL_TENANT_ID, app_environment
from shared.composition import get_adapters
from shared.domain.calendar import SubscriptionRecord
from shared.domain.messages import SYNC_INBOUND_QUEUE

logger = logging.getLogger("bench.webhook_cpu")

WARMUP_POSTS = 50
RESULTS = REPO_ROOT / "bench" / "results"
_QUIET_LOGGERS = ("azure", "aiohttp.access", "urllib3")  # as local.functions_host sets them
_HOST_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class GcClock:
    """CPU time and passes of the cyclic garbage collector, per generation, while on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.passes = [0, 0, 0]
        self._started = 0.0
        self._on = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self._on:
            return
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.passes[info["generation"]] += 1

    def __enter__(self) -> GcClock:
        self._on = True
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._on = False
        gc.callbacks.remove(self)


def notification(record: SubscriptionRecord, event_id: str) -> dict[str, Any]:
    """One `updated` change notification as Graph sends it for `record`'s mailbox."""
    resource = f"Users/{record.mailbox}/Events/{event_id}"
    return {
        "subscriptionId": record.subscription_id,
        "subscriptionExpirationDateTime": record.expires_at.isoformat(),
        "changeType": "updated",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": f'W/"{secrets.token_hex(8)}"',
            "id": event_id,
        },
        "clientState": record.client_state.get_secret_value(),
        "tenantId": LOCAL_TENANT_ID,
    }


def subscription_records(count: int) -> list[SubscriptionRecord]:
    now = datetime.now(UTC)
    return [
        SubscriptionRecord(
            subscription_id=str(uuid.uuid4()),
            resource_id=f"hook-{n:05d}",
            mailbox=f"hook-{n:05d}@contoso.com",
            client_state=SecretStr(secrets.token_urlsafe(32)),
            expires_at=now + timedelta(days=3),
            created_at=now,
        )
        for n in range(count)
    ]


def bodies(records: Sequence[SubscriptionRecord], posts: int, batch: int) -> list[str]:
    """`posts` POST bodies of `batch` notifications each, round-robin over the records
    (a POST's items of one subscription, as Graph batches them)."""
    out = []
    for index in range(posts):
        record = records[index % len(records)]
        items = [notification(record, f"AAMk-{index}-{j}") for j in range(batch)]
        out.append(json.dumps({"value": items}))
    return out


async def drive(url: str, posts: list[str], rate: float) -> dict[str, Any]:
    """The child's load: every body once, `rate` a second. Returns statuses and latency."""
    # Ready (imports done, bodies read): the parent starts its CPU clock, then says go.
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

        async def send(index: int) -> int:
            async with session.post(url, data=posts[index], headers=headers) as answer:
                await answer.read()
                return answer.status

        result = await open_loop(send, rate=rate, duration_s=len(posts) / rate)
    return {
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "errors": dict(result.errors),
        "latency": Distribution.of(result.latencies_s).as_ms() if result.latencies_s else {},
    }


async def load_from_child(
    url: str, posts: list[str], rate: float, on_start: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """The child's figures. `on_start` is called once the child is ready to send, just
    before it is told to, so that the child's start-up is not measured."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bodies.json"
        path.write_text(json.dumps(posts))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.webhook_cpu",
            "--drive",
            url,
            "--bodies",
            str(path),
            "--rate",
            str(rate),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        if child.stdout is None or child.stdin is None:
            raise RuntimeError("the load driver has no pipes")
        if await child.stdout.readline() != b"ready\n":
            raise RuntimeError("the load driver did not start")
        on_start()
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the load driver exited with {child.returncode}")
    answer: dict[str, Any] = json.loads(out)
    return answer


async def inbound_notifications(connection_string: str) -> tuple[int, int]:
    """Change notifications and messages waiting in sync-inbound (all taken): the
    messages are the queue writes, which group commit shares between POSTs."""
    count = messages = 0
    async with QueueClient.from_connection_string(
        connection_string, SYNC_INBOUND_QUEUE, message_decode_policy=TextBase64DecodePolicy()
    ) as queue:
        while True:
            batch = [m async for m in queue.receive_messages(max_messages=32)]
            if not batch:
                return count, messages
            messages += len(batch)
            for message in batch:
                count += message.content.count('"eventId"')
                await queue.delete_message(message)


async def measure(connection_string: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(app_environment(connection_string, host_port=7071, graph_port=7072))
    os.environ["TABLE_NAME_PREFIX"] = "wh" + secrets.token_hex(5)
    # The app reads its settings lazily, on the first get_adapters() or request.
    records = subscription_records(args.subscriptions)
    adapters = get_adapters()
    await adapters.queues.ensure_queues()
    for record in records:
        await adapters.subscriptions.save(record)
    host = await start_host(
        function_app.app,
        triggers=["http"],
        script_root=REPO_ROOT,
        http_concurrency=default_http_concurrency(REPO_ROOT),
    )
    try:
        url = host.url + "/api/graph/notifications"
        # The first POSTs build the services and read each subscription once.
        warmup = await load_from_child(url, bodies(records, WARMUP_POSTS, args.batch), 20)
        await inbound_notifications(connection_string)
        posts = bodies(records, args.posts, args.batch)
        # CPU time, not wall time: the machine's other work is not this code's cost.
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        started = [0.0, 0.0]

        def start_clocks() -> None:
            started[:] = [time.process_time(), time.perf_counter()]
            if profiler is not None:
                profiler.enable()

        with GcClock() as collector:
            load = await load_from_child(url, posts, args.rate, start_clocks)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - started[0], time.perf_counter() - started[1]
    finally:
        await host.close()
        await adapters.close()
    enqueued, writes = await inbound_notifications(connection_string)
    if profiler is not None:
        profiler.dump_stats(args.profile)
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        sys.stdout.write(text.getvalue())
    return {
        "posts": args.posts,
        "batch": args.batch,
        "rate": args.rate,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us_per_post": cpu / args.posts * 1e6,
        "gc_cpu_s": collector.seconds,
        "gc_passes_by_generation": collector.passes,
        "tracked_objects": len(gc.get_objects()),
        "frozen_objects": gc.get_freeze_count(),
        "enqueued": enqueued,
        "queue_writes": writes,
        "load": load,
        "warmup_statuses": warmup["statuses"],
        "profiled": bool(args.profile),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_cpu", description=__doc__)
    parser.add_argument("--posts", type=int, default=2000, help="POSTs measured (2000)")
    parser.add_argument("--rate", type=float, default=100, help="POSTs a second (100)")
    parser.add_argument("--batch", type=int, default=1, help="notifications per POST (1)")
    parser.add_argument("--subscriptions", type=int, default=100, help="subscriptions (100)")
    parser.add_argument("--profile", type=Path, help="run under cProfile, stats to this file")
    parser.add_argument("--top", type=int, default=40, help="profile lines printed (40)")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the child: the target URL
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drive:
        result = asyncio.run(drive(args.drive, json.loads(args.bodies.read_text()), args.rate))  # noqa: TID251
        sys.stdout.write(json.dumps(result))
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The host's own logging, as `python -m local.functions_host` sets it, to a file.
    logging.basicConfig(
        filename=RESULTS / "webhook_cpu-host.log", level=logging.INFO, format=_HOST_LOG_FORMAT
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    load_at_start = load_average()
    azurite = start_azurite(per_service=True, ready_timeout=120.0)
    try:
        figures = asyncio.run(measure(azurite.connection_string, args))  # noqa: TID251
    finally:
        azurite.stop(grace_seconds=1)
    latency = figures["load"]["latency"]
    expected = args.posts * args.batch
    sys.stdout.write(
        f"webhook CPU per POST ({args.batch} per POST, {args.rate:g} POSTs/s, "
        f"{args.posts} POSTs{', under cProfile' if args.profile else ''}): "
        f"{figures['cpu_us_per_post']:.0f} µs "
        f"({figures['cpu_s']:.2f} s CPU over {figures['wall_s']:.1f} s; garbage collector "
        f"{figures['gc_cpu_s']:.2f} s in {figures['gc_passes_by_generation']} passes by "
        f"generation, {figures['tracked_objects']:,} objects tracked, "
        f"{figures['frozen_objects']:,} frozen); "
        f"statuses {figures['load']['statuses']}, errors {figures['load']['errors']}; "
        f"ack p50 {latency.get('p50_ms', 0):.1f} ms p99 {latency.get('p99_ms', 0):.1f} ms; "
        f"{figures['enqueued']}/{expected} notifications enqueued in "
        f"{figures['queue_writes']} queue writes ({figures['queue_writes'] / args.posts:.2f} "
        "a POST); "
        f"load average {load_at_start} at start, {load_average()} at end\n"
    )
    (RESULTS / "webhook_cpu.json").write_text(json.dumps(figures, indent=2))
    ok = figures["load"]["statuses"] == {"202": args.posts} and figures["enqueued"] == expected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
