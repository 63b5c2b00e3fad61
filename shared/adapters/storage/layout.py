"""Going back to a release of mirror layout 2 after this one has run on the same storage.

Layout 3 keeps the mirror's day rows in table `slotledger`, among the slot ledger's own
rows (busy_days.py). A release of layout 2 reads every row of a ledger day range as a
ledger row, so these pages break its bookings, availability and reconcile rounds; and
it takes a resource of layout 3 for one whose rows in `busydays` are current, which
they stopped being. `downgrade` undoes both, with the app stopped:

- every resource's mirror is marked legacy (layout 1): the earlier release reads it
  from its block rows, which this release kept up to date, until its next full
  reconcile round has rebuilt `busydays` and recorded layout 2;
- the busy pages are deleted from `slotledger`; the ledger's rows stay as they are.

Then start the earlier release. Run from the repository, with the storage settings the
app has (STORAGE_CONNECTION_STRING, or STORAGE_TABLE_ENDPOINT and an identity that may
write the tables: `az login`, then DefaultAzureCredential finds it; TABLE_NAME_PREFIX):

    .venv/bin/python -m shared.adapters.storage.layout --downgrade-to 2

It is idempotent: a run cut short is finished by running it again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from azure.data.tables.aio import TableServiceClient

from shared.adapters.storage.busy_days import SLOT_LEDGER, BusyDayTable, is_ledger_row
from shared.adapters.storage.repositories import ResourceTable
from shared.adapters.storage.tables import MAX_TRANSACTION_ENTITIES, TableStore, Transaction
from shared.domain.resources import LEGACY_MIRROR_LAYOUT, Resource
from shared.services.resource_updates import update_resource


@dataclass(frozen=True)
class Downgraded:
    resources_marked: int
    pages_deleted: int


async def downgrade(store: TableStore) -> Downgraded:
    """Ready the storage for a release of mirror layout 2 (see the module's docstring)."""
    resources = ResourceTable(store)

    def legacy(resource: Resource) -> Resource | None:
        if resource.mirror_layout == LEGACY_MIRROR_LAYOUT:
            return None
        return resource.model_copy(update={"mirror_layout": LEGACY_MIRROR_LAYOUT})

    marked = 0
    for listed in await resources.list_all():
        if await update_resource(resources, listed.value.resource_id, legacy) is not None:
            marked += 1
    days = BusyDayTable(store)
    client = await store.table(SLOT_LEDGER)
    pages: dict[str, list[str]] = {}
    async for entity in client.list_entities(select=["PartitionKey", "RowKey"]):
        if not is_ledger_row(str(entity["RowKey"])):
            pages.setdefault(str(entity["PartitionKey"]), []).append(str(entity["RowKey"]))
    deleted = 0
    for partition, row_keys in pages.items():
        for first in range(0, len(row_keys), MAX_TRANSACTION_ENTITIES):
            transaction = Transaction()
            for row_key in row_keys[first : first + MAX_TRANSACTION_ENTITIES]:
                transaction.delete(partition, row_key)
            await days.commit(transaction)
            deleted += len(transaction.operations)
    return Downgraded(resources_marked=marked, pages_deleted=deleted)


def _store() -> TableStore:
    prefix = os.environ.get("TABLE_NAME_PREFIX", "bookingsync")
    connection = os.environ.get("STORAGE_CONNECTION_STRING")
    if connection:
        return TableStore(TableServiceClient.from_connection_string(connection), prefix=prefix)
    endpoint = os.environ.get("STORAGE_TABLE_ENDPOINT")
    if not endpoint:
        raise SystemExit("set STORAGE_CONNECTION_STRING, or STORAGE_TABLE_ENDPOINT")
    from azure.identity.aio import DefaultAzureCredential

    return TableStore(
        TableServiceClient(endpoint, credential=DefaultAzureCredential()), prefix=prefix
    )


async def _run() -> Downgraded:
    store = _store()
    try:
        return await downgrade(store)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.adapters.storage.layout", description=__doc__
    )
    parser.add_argument(
        "--downgrade-to",
        type=int,
        choices=[2],
        required=True,
        help="the mirror layout of the release to go back to",
    )
    parser.parse_args(argv)
    done = asyncio.run(_run())  # noqa: TID251 - a command line tool owns its loop
    sys.stdout.write(
        f"{done.resources_marked} resources marked legacy, "
        f"{done.pages_deleted} busy pages deleted from {SLOT_LEDGER}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
