"""`python -m bench.queue_depth`: what a queue message costs Azurite as its queue grows.

Not the app: the local stack's Queue service. Azurite's in-memory queue store (LokiJS,
`LokiQueueMetadataStore` in `node_modules/azurite/dist/src/queue/persistence/`) looks for
expired messages among all of a queue's messages on every get, put, update and delete
(`clearExpiredMessages`), and sorts every visible message on each get, so each of those
costs more the deeper the queue. Azure Queue Storage's targets do not depend on the
depth (2,000 messages a second per queue). An inbound backlog therefore slows the
whole local stack (the webhook's puts, the worker's gets and deletes), which the scale
profile's inbound figures include and Azure would not.

With Azurite's Queue service alone (its own process, in memory), the queue is filled to
each `--depth` and then kept there while `--cycles` times a page of 16 messages is taken
(as the Functions host's listener takes them), deleted and put back (as the webhook
writes): the Queue process's CPU a message and the messages a second, one client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from azure.storage.queue.aio import QueueClient

from bench.report import Row, print_measured
from bench.stack import cpu_seconds
from local.azurite import start_azurite

PAGE = 16
PUT_CONCURRENCY = 16
BODY = "x" * 200  # about the size of one change's inbound message


async def fill(queue: QueueClient, count: int) -> None:
    gate = asyncio.Semaphore(PUT_CONCURRENCY)

    async def put() -> None:
        async with gate:
            await queue.send_message(BODY)

    await asyncio.gather(*(put() for _ in range(count)))


async def cycle(queue: QueueClient) -> int:
    """One page taken, deleted and put back; the messages it held."""
    pager = queue.receive_messages(messages_per_page=PAGE, visibility_timeout=60)
    async for page in pager.by_page():
        taken = [message async for message in page]
        break
    else:
        return 0
    await asyncio.gather(*(queue.delete_message(message) for message in taken))
    await asyncio.gather(*(queue.send_message(BODY) for _ in taken))
    return len(taken)


async def measure(depths: Sequence[int], cycles: int) -> list[Row]:
    rows: list[Row] = []
    azurite = start_azurite(per_service=True)
    try:
        pid = azurite.processes["queue"].pid
        async with QueueClient.from_connection_string(azurite.connection_string, "depth") as queue:
            await queue.create_queue()
            depth = 0
            for target in sorted(depths):
                await fill(queue, target - depth)
                depth = target
                cpu_before, started, messages = cpu_seconds(pid), time.perf_counter(), 0
                for _ in range(cycles):
                    messages += await cycle(queue)
                wall = time.perf_counter() - started
                cpu_after = cpu_seconds(pid)
                cpu = (cpu_after - cpu_before) if cpu_before and cpu_after else float("nan")
                rows.append(
                    Row(
                        f"queue of {target:,} messages: Azurite Queue CPU a message taken, "
                        "deleted and put; messages a second",
                        f"{cpu * 1000 / max(messages, 1):.2f} ms; {messages / wall:.0f}/s",
                    )
                )
    finally:
        azurite.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_depth", description=__doc__)
    parser.add_argument(
        "--depth",
        type=int,
        action="append",
        help="queue depths to measure at (repeatable; default 50, 1000, 3000, 7000)",
    )
    parser.add_argument("--cycles", type=int, default=20, help="pages a depth (20)")
    args = parser.parse_args(argv)
    return print_measured(
        "Azurite's Queue service by queue depth",
        measure(args.depth or [50, 1000, 3000, 7000], args.cycles),
    )


if __name__ == "__main__":
    sys.exit(main())
