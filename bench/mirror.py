"""Filling a resource's unavailability mirror in bulk, with the rows the app itself writes.

The availability benchmark needs a mirror of 5,000 blocks, not the pull that fills it,
so it reads the calendar once through Graph, maps it with the app's own code
(`calendar_event`, `group_blocks`) and writes the blocks with the app's table adapter
(`UnavailabilityTable.replace_all`: the block rows, 100 per transaction, and the day
rows). `--full` also times the real pull (the `connect-pull` benchmark);
`python -m bench.mirror_bulk` times the mirror's bulk paths without the host.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.data.tables.aio import TableServiceClient

from bench.client import StackClient
from shared.adapters.graph.mapping import booking_id_of, calendar_event
from shared.adapters.storage.repositories import UnavailabilityTable
from shared.adapters.storage.tables import TableStore
from shared.services.mirror import group_blocks, mirror_window
from shared.settings import Settings

PAGE_SIZE = 1000


def app_mirror_window() -> tuple[datetime, datetime]:
    """The window the host mirrors (the settings' defaults, which the bench keeps)."""
    fields = Settings.model_fields
    days_back = fields["mirror_days_back"].default
    days_ahead = fields["mirror_days_ahead"].default
    return mirror_window(datetime.now(UTC), int(days_back), int(days_ahead))


async def calendar_items(
    client: StackClient, mailbox: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Every event of the calendarView over the window, as Graph JSON."""
    path: str | None = (
        f"/users/{mailbox}/calendarView?startDateTime={quote(start.isoformat())}"
        f"&endDateTime={quote(end.isoformat())}&$top={PAGE_SIZE}"
    )
    items: list[dict[str, Any]] = []
    while path is not None:
        page = await client.graph_ok("GET", path)
        items.extend(page["value"])
        link = page.get("@odata.nextLink")
        path = link.split("/v1.0", 1)[1] if link else None
    return items


async def bulk_load_mirror(client: StackClient, resource_id: str, mailbox: str) -> int:
    """Write the mirror rows of the calendar's current busy time; returns their count."""
    start, end = app_mirror_window()
    events = [
        calendar_event(item, booking_id=booking_id_of(item))
        for item in await calendar_items(client, mailbox, start, end)
    ]
    blocks = [
        block
        for group in group_blocks(resource_id, events, time_zone="UTC").values()
        for block in group
    ]
    service = TableServiceClient.from_connection_string(client.stack.connection_string)
    store = TableStore(service, prefix=client.stack.table_prefix)
    try:
        await UnavailabilityTable(store).replace_all(resource_id, blocks)
    finally:
        await store.close()
    return len(blocks)
