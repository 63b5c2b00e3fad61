"""Webhook acknowledgement under an open-loop load of valid Graph change notifications.

Graph delivers many notifications per POST when they come fast: the emulator, like Graph,
gathers them for `notification_batch_window_s` (50 ms), so at 200 notifications/s a POST
carries about 10. Each configured batch size is one run: `rate / size` POSTs a second to
`/api/graph/notifications`, latency counted from when each POST was due. After each run
the inbound backlog is given a bounded time to drain, so the next run starts clean.

A reference figure comes first: how many Queue Storage puts a second Azurite takes from
a bare SDK client on this machine, the ceiling under the webhook's own enqueueing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from azure.storage.queue.aio import QueueClient

from bench.client import BenchError, StackClient
from bench.context import Context, Outcome, quiet
from bench.load import Distribution, open_loop
from bench.report import Row, Verdict, judged, mib, ms
from bench.world import add_mailbox, connect, mailbox_address, seed_events, spread_events
from shared.domain.messages import SYNC_INBOUND_QUEUE

logger = logging.getLogger(__name__)

WEBHOOK_AIM_P99_S = 0.050
CALIBRATION_QUEUE = "bench-calibration"
CALIBRATION_MESSAGES = 400
CALIBRATION_CONCURRENCY = 16  # what the intake uses for one POST's notifications
FAILED = Verdict.FAILED
IDLE_SAMPLES = 20
IDLE_SPACING_S = 0.1
IDLE_POLL_S = 0.05
SLOWEST_POSTS = 20


async def notification_items(ctx: Context) -> list[dict[str, Any]]:
    """Valid `updated` notifications for foreign events of connected resources, with each
    subscription's real clientState and tenant, interleaved across mailboxes."""
    client, profile = ctx.client, ctx.profile
    names = [f"hook-{i}" for i in range(profile.webhook_mailboxes)]
    for name in names:
        mailbox = mailbox_address(name)
        await add_mailbox(client, mailbox)
        events = spread_events(profile.webhook_events_per_mailbox, ctx.day0, per_day=8)
        await seed_events(client, mailbox, events)
        await connect(client, name, mailbox)
    listed = (await client.control("GET", "/subscriptions"))["value"]
    subscriptions = {s["mailbox"]: s for s in listed}
    users = {m["id"]: m["userId"] for m in (await client.control("GET", "/mailboxes"))["value"]}
    per_mailbox: list[list[dict[str, Any]]] = []
    for name in names:
        mailbox = mailbox_address(name)
        subscription, user_id = subscriptions[mailbox], users[mailbox]
        path = f"/users/{mailbox}/calendar/events?$top=1000&$select=id,changeKey"
        page = await client.graph_ok("GET", path)
        per_mailbox.append([_notification(subscription, user_id, event) for event in page["value"]])
    return [item for group in zip(*per_mailbox, strict=False) for item in group]


def _notification(
    subscription: dict[str, Any], user_id: str, event: dict[str, Any]
) -> dict[str, Any]:
    resource = f"Users/{user_id}/Events/{event['id']}"
    return {
        "subscriptionId": subscription["id"],
        "subscriptionExpirationDateTime": subscription["expirationDateTime"],
        "changeType": "updated",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": f'W/"{event["changeKey"]}"',
            "id": event["id"],
        },
        "clientState": subscription["clientState"],
        "tenantId": subscription["tenantId"],
    }


def cpu_share(
    before: dict[str, float | None], after: dict[str, float | None], wall_s: float
) -> dict[str, float]:
    """CPU seconds each process used over `wall_s`, as a share of one core."""
    shares = {}
    for name, start in before.items():
        end = after.get(name)
        if start is not None and end is not None and wall_s > 0:
            shares[name] = (end - start) / wall_s
    return shares


async def queue_put_rate(connection_string: str) -> float:
    """Messages a second Azurite accepts from a bare SDK client, 16 at a time."""
    async with QueueClient.from_connection_string(connection_string, CALIBRATION_QUEUE) as queue:
        await queue.create_queue()
        gate = asyncio.Semaphore(CALIBRATION_CONCURRENCY)

        async def put() -> None:
            async with gate:
                await queue.send_message("calibration")

        started = time.perf_counter()
        await asyncio.gather(*(put() for _ in range(CALIBRATION_MESSAGES)))
        elapsed = time.perf_counter() - started
        await queue.delete_queue()
    return CALIBRATION_MESSAGES / elapsed


async def drain_inbound(
    client: StackClient, within_s: float, *, every_s: float = 0.5
) -> tuple[float | None, int]:
    """Seconds until the sync-inbound queue is empty (None: not within `within_s`) and
    the messages left, looking every `every_s`. The count includes messages being
    processed (invisible), so empty means the inbound worker is idle too."""
    started = time.perf_counter()
    left = -1
    async with QueueClient.from_connection_string(
        client.stack.connection_string, SYNC_INBOUND_QUEUE
    ) as queue:
        while True:
            properties = await queue.get_queue_properties()
            left = int(properties.approximate_message_count or 0)
            elapsed = time.perf_counter() - started
            if left == 0:
                return elapsed, 0
            if elapsed > within_s:
                return None, left
            await asyncio.sleep(every_s)


async def idle_ack(ctx: Context, items: list[dict[str, Any]], size: int) -> Distribution:
    """Acknowledgement of one POST at a time on an otherwise idle stack: the floor under
    the loaded figures. Each POST waits until the inbound worker has handled the previous
    one's notifications, so that it never shares the stack with that work."""
    client = ctx.client
    url = client.stack.api_url + "/graph/notifications"
    latencies = []
    for index in range(IDLE_SAMPLES):
        await drain_inbound(client, ctx.profile.drain_within_s, every_s=IDLE_POLL_S)
        await asyncio.sleep(IDLE_SPACING_S)
        first = index * size
        body = {"value": [items[(first + j) % len(items)] for j in range(size)]}
        started = time.perf_counter()
        status, answer = await client.post_raw(url, json.dumps(body).encode())
        latencies.append(time.perf_counter() - started)
        if status != 202:
            raise BenchError(f"webhook answered {status}: {answer!r}")
    await drain_inbound(client, ctx.profile.drain_within_s)
    return Distribution.of(latencies)


async def _run(ctx: Context, items: list[dict[str, Any]], size: int) -> Outcome:
    client, profile = ctx.client, ctx.profile
    bodies = [
        json.dumps({"value": [items[(k * size + j) % len(items)] for j in range(size)]}).encode()
        for k in range(len(items))
    ]
    url = client.stack.api_url + "/graph/notifications"
    headers = {"Content-Type": "application/json"}
    cpu_before, started = client.stack.cpu_seconds(), time.perf_counter()
    started_at = datetime.now(UTC).isoformat()  # to find the slow POSTs in the hosts' logs
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

        async def send(index: int) -> int:
            async with session.post(url, data=bodies[index % len(bodies)], headers=headers) as r:
                await r.read()
                return r.status

        result = await open_loop(
            send, rate=profile.webhook_rate / size, duration_s=profile.webhook_seconds
        )
    cpu = cpu_share(cpu_before, client.stack.cpu_seconds(), time.perf_counter() - started)
    drained_s, left = await drain_inbound(client, profile.drain_within_s)
    if not result.latencies_s:
        raise BenchError(f"no webhook POST was answered: {dict(result.errors)}")

    accepted = result.statuses.get(202, 0)
    failures = result.offered - accepted
    dist = Distribution.of(result.latencies_s)
    label = (
        f"webhook ack, {profile.webhook_rate:.0f} notifications/s for "
        f"{profile.webhook_seconds:.0f} s, {size} per POST"
    )
    detail = f"p50 {ms(dist.p50)}  p99 {ms(dist.p99)}  ({accepted}/{result.offered} POSTs 202"
    detail += f", {failures} failed)" if failures else ")"
    drain = (
        f"{drained_s:.1f} s after the load"
        if drained_s is not None
        else f"not within {profile.drain_within_s:.0f} s ({left} left)"
    )
    rows = [
        judged(
            label,
            detail,
            f"p99 ≤ {WEBHOOK_AIM_P99_S * 1000:g} ms",
            dist.p99 <= WEBHOOK_AIM_P99_S and failures == 0,
        ),
        Row(f"  inbound backlog ({accepted * size} notifications) drained", drain),
        Row(
            "  CPU during that load (share of one core)",
            ", ".join(f"{name} {share:.0%}" for name, share in cpu.items()),
        ),
    ]
    figures = {
        "notifications_per_post": size,
        "posts_per_second": profile.webhook_rate / size,
        "latency": dist.as_ms(),
        "offered_posts": result.offered,
        "statuses": dict(result.statuses),
        "errors": dict(result.errors),
        "max_send_lag_ms": round(result.max_send_lag_s * 1000, 2),
        "drained_after_s": drained_s,
        "left_in_queue": left,
        "cpu_share_of_one_core": {name: round(share, 3) for name, share in cpu.items()},
        # When the slow tail happened: one stall, or spread over the run.
        "slowest_posts": [
            {"due_s": round(due, 3), "latency_ms": round(latency * 1000, 1)}
            for due, latency in result.slowest(SLOWEST_POSTS)
        ],
        "load_started_at": started_at,
    }
    return Outcome(rows, figures)


async def webhook_load(ctx: Context) -> Outcome:
    """The reference queue-put rate, then one open-loop run per configured batch size."""
    client = ctx.client
    items = await notification_items(ctx)
    await quiet(client)
    rate = await queue_put_rate(client.stack.connection_string)
    outcome = Outcome(
        [
            Row(
                "reference: Azurite queue puts/s from a bare SDK client (16 at once)",
                f"{rate:.0f}/s",
            )
        ],
        {"azurite_queue_puts_per_s": round(rate, 1)},
    )
    for size in ctx.profile.webhook_batches:
        try:
            floor = await idle_ack(ctx, items, size)
            outcome.rows.append(
                Row(
                    f"webhook ack, idle stack, one POST at a time, {size} per POST",
                    f"p50 {ms(floor.p50)}  p95 {ms(floor.p95)}",
                )
            )
            outcome.figures[f"idle_batch_{size}"] = floor.as_ms()
            logger.info("webhook load: %d notifications per POST", size)
            run = await _run(ctx, items, size)
        except (BenchError, aiohttp.ClientError, OSError) as exc:
            # Keep the figures of the runs that finished.
            logger.exception("webhook run with %d per POST failed", size)
            outcome.rows.append(
                Row(f"webhook, {size} per POST: could not run", str(exc)[:120], "", FAILED)
            )
            continue
        outcome.rows += run.rows
        outcome.figures[f"batch_{size}"] = run.figures
    return outcome


FLOOD_ITEMS = 1000
FLOOD_POSTS = 100
FLOOD_WARMUP_POSTS = 10
FLOOD_AIM_P99_S = 1.0
FLOOD_AIM_GROWTH_BYTES = 4 * 1024 * 1024


def flood_body(tenant_id: str) -> bytes:
    """A POST of FLOOD_ITEMS change notifications for made-up subscriptions (fresh GUIDs,
    as a stranger would send them): the most the webhook takes in one POST."""
    items = [
        {
            "subscriptionId": str(uuid.uuid4()),
            "clientState": "guessed",
            "tenantId": tenant_id,
            "changeType": "updated",
            "resource": "Users/x/Events/y",
            "resourceData": {"id": "y"},
        }
        for _ in range(FLOOD_ITEMS)
    ]
    return json.dumps({"value": items}).encode()


async def webhook_flood(ctx: Context) -> Outcome:
    """POSTs of 1,000 unknown subscription ids, one at a time: each must be answered 202
    well under a second (Graph counts over 2.9 s as slow) and the HTTP host's memory must
    stay flat across FLOOD_POSTS of them (unknown ids are never remembered)."""
    client = ctx.client
    url = client.stack.api_url + "/graph/notifications"
    tenant_id = client.stack.tenant_id
    await quiet(client)

    async def post(body: bytes) -> float:
        started = time.perf_counter()
        status, answer = await client.post_raw(url, body)
        elapsed = time.perf_counter() - started
        if status != 202:
            raise BenchError(f"webhook answered {status}: {answer[:200]!r}")
        return elapsed

    for _ in range(FLOOD_WARMUP_POSTS):
        await post(flood_body(tenant_id))
    rss_before = client.stack.host_rss_bytes()
    bodies = [flood_body(tenant_id) for _ in range(FLOOD_POSTS)]
    latencies = [await post(body) for body in bodies]
    rss_after = client.stack.host_rss_bytes()
    dist = Distribution.of(latencies)
    growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    kib = len(bodies[0]) / 1024
    rows = [
        judged(
            f"webhook flood: {FLOOD_ITEMS:,} unknown subscription ids per POST ({kib:.0f} KB), "
            "one POST at a time",
            f"p50 {ms(dist.p50)}  p99 {ms(dist.p99)}  (all {FLOOD_POSTS} answered 202)",
            f"p99 < {FLOOD_AIM_P99_S:g} s",
            dist.p99 < FLOOD_AIM_P99_S,
        ),
        judged(
            f"  HTTP host memory (RSS) across {FLOOD_POSTS} such POSTs",
            f"{mib(rss_before)} → {mib(rss_after)}",
            f"grows < {mib(FLOOD_AIM_GROWTH_BYTES)}",
            growth is not None and growth < FLOOD_AIM_GROWTH_BYTES,
        ),
    ]
    figures = {
        "items_per_post": FLOOD_ITEMS,
        "body_bytes": len(bodies[0]),
        "posts": FLOOD_POSTS,
        "latency": dist.as_ms(),
        "host_rss_before_bytes": rss_before,
        "host_rss_after_bytes": rss_after,
    }
    return Outcome(rows, figures)
