"""`python -m bench.table_size`: what a read costs Azurite's Table service as a table grows.

Not the app: the local stack's Table service. Azurite (LokiJS, `LokiTableMetadataStore.
queryTableEntities` in `node_modules/azurite/dist/src/table/persistence/`) answers a query
by evaluating its filter on every entity of the table (`.chain().where(filter)`), whatever
its PartitionKey, then sorting what matched. A query within one partition therefore costs
it in proportion to the whole table. Azure's Table service serves a query on one
partition's RowKey range as an index seek, and a point read alike.

The inbound worker makes one such query per change (a mirror event's block rows, a
RowKey range in the resource's partition, `UnavailabilityTable._event_rows`), so at 1,000
mailboxes of 20 events, whose mirror is about 40,000 rows, each change makes Azurite go
through them all. With Azurite's Table service alone (its own process, in memory), a
table is filled to each `--rows` (partitions of `--per-partition` rows, as a resource's
mirror), then `--reads` range queries of one event's rows and as many point reads are
made, each of a random partition: the Table process's CPU a read, one client.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from azure.data.tables.aio import TableClient

from bench.report import Row, print_measured
from bench.stack import cpu_seconds
from local.azurite import start_azurite

TRANSACTION = 100  # entities a transaction (Table Storage's limit)
FILL_CONCURRENCY = 8
PAYLOAD = "x" * 300  # about a block row's size


def row_key(row: int) -> str:
    return f"event-{row:05d}|2026-12-{1 + row % 28:02d}T09:00:00+00:00"


async def fill(table: TableClient, first: int, last: int, per_partition: int) -> None:
    """Rows `first` up to `last` of the table, `per_partition` to a partition."""
    gate = asyncio.Semaphore(FILL_CONCURRENCY)

    async def commit(partition: int, rows: range) -> None:
        async with gate:
            await table.submit_transaction(
                [
                    (
                        "upsert",
                        {"PartitionKey": f"r-{partition:05d}", "RowKey": row_key(r), "P": PAYLOAD},
                    )
                    for r in rows
                ]
            )

    work = []
    for partition in range(first // per_partition, -(-last // per_partition)):
        rows = range(
            max(first, partition * per_partition), min(last, (partition + 1) * per_partition)
        )
        for start in range(rows.start, rows.stop, TRANSACTION):
            work.append(commit(partition, range(start, min(rows.stop, start + TRANSACTION))))
    await asyncio.gather(*work)


async def per_read(pid: int, reads: int, read: Callable[[], Awaitable[object]]) -> float:
    """The Table process's CPU seconds a read, `reads` of them one after another."""
    before = cpu_seconds(pid)
    for _ in range(reads):
        await read()
    after = cpu_seconds(pid)
    return (after - before) / reads if before is not None and after is not None else float("nan")


async def range_query(
    table: TableClient, pick: random.Random, partitions: int, per_partition: int
) -> None:
    """One event's rows in a random partition, as `UnavailabilityTable._event_rows` reads."""
    partition = pick.randrange(partitions)
    low = f"event-{partition * per_partition:05d}|"
    found = table.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": f"r-{partition:05d}", "lo": low, "hi": low[:-1] + "}"},
    )
    if not [entity async for entity in found]:
        raise RuntimeError("the range matched nothing")


async def point_read(
    table: TableClient, pick: random.Random, partitions: int, per_partition: int
) -> None:
    partition = pick.randrange(partitions)
    await table.get_entity(f"r-{partition:05d}", row_key(partition * per_partition))


async def measure(sizes: Sequence[int], per_partition: int, reads: int) -> list[Row]:
    rows: list[Row] = []
    pick = random.Random(7)  # which partition to read
    azurite = start_azurite(per_service=True)
    try:
        pid = azurite.processes["table"].pid
        async with TableClient.from_connection_string(
            azurite.connection_string, "tablesize"
        ) as table:
            await table.create_table()
            size = 0
            for target in sorted(sizes):
                started = time.perf_counter()
                await fill(table, size, target, per_partition)
                fill_s, size = time.perf_counter() - started, target
                partitions = -(-size // per_partition)

                shape = (table, pick, partitions, per_partition)
                query_cpu = await per_read(pid, reads, functools.partial(range_query, *shape))
                point_cpu = await per_read(pid, reads, functools.partial(point_read, *shape))
                rows.append(
                    Row(
                        f"table of {size:,} rows ({partitions:,} partitions): Azurite Table "
                        "CPU a range query in one partition; a point read (filled in)",
                        f"{query_cpu * 1000:.2f} ms; {point_cpu * 1000:.2f} ms ({fill_s:.0f} s)",
                    )
                )
    finally:
        azurite.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table_size", description=__doc__)
    parser.add_argument(
        "--rows",
        type=int,
        action="append",
        help="table sizes to measure at (repeatable; default 1000, 10000, 40000)",
    )
    parser.add_argument("--per-partition", type=int, default=40, help="rows a partition (40)")
    parser.add_argument("--reads", type=int, default=200, help="reads of each kind a size (200)")
    args = parser.parse_args(argv)
    return print_measured(
        "Azurite's Table service by table size",
        measure(args.rows or [1000, 10_000, 40_000], args.per_partition, args.reads),
    )


if __name__ == "__main__":
    sys.exit(main())
