"""The timer trigger's schedule monitor: each timer's status (Last, Next, LastUpdated)
kept in storage, so a host that starts after a missed occurrence runs it at once.

The timer extension keeps the status in the `azure-webjobs-hosts` blob container of
AzureWebJobsStorage (StorageScheduleMonitor in azure-webjobs-sdk-extensions); the local
host keeps the same three values in a table of that account, one row per host id and
function, as it reaches Storage through the Table and Queue SDKs only. The host id comes
from `AzureFunctionsWebHost__hostid`, as in Azure, else "local".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from local.functions_host.connections import StorageConnection

logger = logging.getLogger(__name__)

STATUS_TABLE = "AzureWebJobsHostTimers"
HOST_ID_SETTING = "AzureFunctionsWebHost__hostid"
DEFAULT_HOST_ID = "local"
NEVER_RUN = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ScheduleStatus:
    """What the monitor records after each run (the extension's ScheduleStatus)."""

    last: datetime | None
    next: datetime
    last_updated: datetime | None

    def as_dict(self) -> dict[str, str]:
        """As TimerRequest.schedule_status shows it to the function; never run yet is the
        extension's DefaultDateTime, 0001-01-01."""
        return {
            "Last": (self.last or NEVER_RUN).isoformat(),
            "Next": self.next.isoformat(),
            "LastUpdated": (self.last_updated or NEVER_RUN).isoformat(),
        }


class ScheduleMonitor(Protocol):
    async def get_status(self, function_name: str) -> ScheduleStatus | None: ...
    async def update_status(self, function_name: str, status: ScheduleStatus) -> None: ...
    async def close(self) -> None: ...


class TableScheduleMonitor:
    """ScheduleMonitor on a Storage table. Storage failures are logged, never raised: a
    timer must run on without its monitor, as the extension's GetSafeStatusAsync does."""

    def __init__(self, connection: StorageConnection | str, host_id: str) -> None:
        if isinstance(connection, str):
            connection = StorageConnection(setting="", connection_string=connection)
        self._table = connection.table_client(STATUS_TABLE, retry_total=2)
        self._host_id = host_id
        self._created = False

    @classmethod
    def for_settings(
        cls, environ: Mapping[str, str], connection: StorageConnection
    ) -> TableScheduleMonitor:
        return cls(connection, environ.get(HOST_ID_SETTING) or DEFAULT_HOST_ID)

    async def get_status(self, function_name: str) -> ScheduleStatus | None:
        try:
            entity = await self._table.get_entity(self._host_id, function_name.lower())
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            logger.warning("Timer '%s': cannot read its schedule status: %s", function_name, error)
            return None
        try:
            return ScheduleStatus(
                last=_moment(entity.get("Last")),
                next=datetime.fromisoformat(str(entity["Next"])),
                last_updated=_moment(entity.get("LastUpdated")),
            )
        except (KeyError, ValueError):
            logger.warning("Timer '%s': its stored schedule status is unreadable", function_name)
            return None

    async def update_status(self, function_name: str, status: ScheduleStatus) -> None:
        entity = {
            "PartitionKey": self._host_id,
            "RowKey": function_name.lower(),
            "Last": status.last.isoformat() if status.last else "",
            "Next": status.next.isoformat(),
            "LastUpdated": status.last_updated.isoformat() if status.last_updated else "",
        }
        try:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    await self._table.create_table()
                self._created = True
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as error:
            logger.warning(
                "Timer '%s': cannot record its schedule status: %s", function_name, error
            )

    async def close(self) -> None:
        await self._table.close()


def _moment(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None
