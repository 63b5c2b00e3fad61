"""The composition root: builds the adapters once per process and hands out services.

Clients are built lazily on first use (no I/O at import, so function discovery never
fails on configuration) and shared by every invocation in the process. Tests build
their own `Adapters` against Azurite or swap in fakes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential
from azure.data.tables.aio import TableServiceClient
from azure.identity.aio import ManagedIdentityCredential
from azure.storage.queue.aio import QueueServiceClient

from shared.adapters.storage.queues import QueueSender
from shared.adapters.storage.repositories import (
    BookingTable,
    EventMappingTable,
    IdempotencyTable,
    ResourceTable,
    SlotLedgerTable,
    SubscriptionTable,
    SyncLogTable,
    UnavailabilityTable,
)
from shared.adapters.storage.tables import TableStore
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Adapters:
    """Every adapter the services use, built once."""

    tables: TableStore
    queues: QueueSender
    resources: ResourceTable
    bookings: BookingTable
    event_mappings: EventMappingTable
    unavailability: UnavailabilityTable
    subscriptions: SubscriptionTable
    sync_log: SyncLogTable
    slot_ledger: SlotLedgerTable
    idempotency: IdempotencyTable

    async def close(self) -> None:
        await self.tables.close()
        await self.queues.close()


def build_adapters(settings: Settings, credential: AsyncTokenCredential | None = None) -> Adapters:
    """Adapters over the storage account the settings name (no I/O happens here)."""
    if settings.storage_connection_string is not None:
        connection = settings.storage_connection_string.get_secret_value()
        table_service = TableServiceClient.from_connection_string(connection)
        queue_service = QueueServiceClient.from_connection_string(connection)
    else:
        account = settings.storage_account_name
        credential = credential or azure_credential(settings.azure_client_id)
        table_service = TableServiceClient(
            f"https://{account}.table.core.windows.net", credential=credential
        )
        queue_service = QueueServiceClient(
            f"https://{account}.queue.core.windows.net", credential=credential
        )
    store = TableStore(table_service, prefix=settings.table_name_prefix)
    return Adapters(
        tables=store,
        queues=QueueSender(queue_service),
        resources=ResourceTable(store),
        bookings=BookingTable(store),
        event_mappings=EventMappingTable(store),
        unavailability=UnavailabilityTable(store),
        subscriptions=SubscriptionTable(store),
        sync_log=SyncLogTable(store),
        slot_ledger=SlotLedgerTable(store),
        idempotency=IdempotencyTable(store),
    )


@functools.cache
def azure_credential(client_id: str | None) -> AsyncTokenCredential:
    """One managed-identity credential per process, shared by storage and Graph."""
    return ManagedIdentityCredential(client_id=client_id)


@functools.cache
def get_adapters() -> Adapters:
    """The process-wide adapters (built on first use)."""
    return build_adapters(get_settings())
