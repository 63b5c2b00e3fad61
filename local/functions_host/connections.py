"""Storage connections as the host reads them: a connection string in the setting, or an
identity-based connection in `<setting>__*` settings, which is how Azure runs the app
(AzureWebJobsStorage__queueServiceUri and the like; no keys anywhere).

The host looks a connection name up as given, then with the `AzureWebJobs` prefix; an
identity-based connection takes `__queueServiceUri` / `__tableServiceUri`, or
`__accountName` (the public cloud's endpoints), `__credential` and `__clientId`
(https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections).

Azurite accepts tokens over HTTPS only, so against an Azurite endpoint (its account
`devstoreaccount1` on a loopback address) the local host signs with Azurite's published
account key where Azure would use the managed identity: the settings keep their
production shape and the host still never reads a key from them. Anywhere else it uses
azure-identity's DefaultAzureCredential (ManagedIdentityCredential with `__clientId`).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from local.functions_host.config import HostStartupError

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (documented by Azurite, not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def transport_options() -> dict[str, Any]:
    """The host's Storage clients trust the environment only when a proxy is set: with
    azure-core's default, aiohttp looks up the proxy variables and ~/.netrc on a worker
    thread for every request (two thread hops per dequeue or delete), which Azure's host
    (.NET) does not cost the Python worker. The app's clients do the same
    (`shared.composition.storage_transport_options`)."""
    return {"use_env_settings": bool(urllib.request.getproxies())}


@dataclass(frozen=True)
class StorageConnection:
    """Where a trigger's storage is and how the host signs in to it."""

    setting: str
    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None

    def queue_client(self, queue_name: str, **options: Any) -> QueueClient:
        options = {**transport_options(), **options}
        if self.connection_string is not None:
            return QueueClient.from_connection_string(self.connection_string, queue_name, **options)
        if self.queue_service_uri is None:
            raise HostStartupError(
                f"connection '{self.setting}' has no queue endpoint: set "
                f"{self.setting}__queueServiceUri or {self.setting}__accountName"
            )
        return QueueClient(
            self.queue_service_uri,
            queue_name,
            credential=self._credential(self.queue_service_uri),
            **options,
        )

    def table_client(self, table_name: str, **options: Any) -> TableClient:
        options = {**transport_options(), **options}
        if self.connection_string is not None:
            return TableClient.from_connection_string(self.connection_string, table_name, **options)
        if self.table_service_uri is None:
            raise HostStartupError(
                f"connection '{self.setting}' has no table endpoint: set "
                f"{self.setting}__tableServiceUri or {self.setting}__accountName"
            )
        credential = self._credential(self.table_service_uri)
        return TableClient(self.table_service_uri, table_name, credential=credential, **options)

    def _credential(self, uri: str) -> Any:
        if is_azurite(uri):
            return AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
        from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

        if self.client_id:
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential()


def is_azurite(uri: str) -> bool:
    parts = urlsplit(uri)
    return (parts.hostname or "") in _LOOPBACK and parts.path.strip("/").startswith(AZURITE_ACCOUNT)


def resolve_storage_connection(
    setting: str, environ: Mapping[str, str], *, what: str
) -> StorageConnection:
    """The connection named `setting`. Raises HostStartupError, naming the settings, when
    neither a connection string nor an identity-based connection is set."""
    for name in (setting, f"AzureWebJobs{setting}"):
        value = environ.get(name)
        if value:
            return StorageConnection(setting=name, connection_string=value)
        prefix = f"{name}__"
        section = {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix)}
        if section:
            return _identity_based(name, section, what)
    raise HostStartupError(
        f"{what}: connection app setting '{setting}' is not set (a Storage connection "
        f"string, e.g. Azurite's, or an identity-based {setting}__queueServiceUri)"
    )


def _identity_based(name: str, section: Mapping[str, str], what: str) -> StorageConnection:
    account = section.get("accountname")
    queue_uri = section.get("queueserviceuri") or (
        f"https://{account}.queue.core.windows.net" if account else None
    )
    table_uri = section.get("tableserviceuri") or (
        f"https://{account}.table.core.windows.net" if account else None
    )
    if queue_uri is None and table_uri is None:
        raise HostStartupError(
            f"{what}: identity-based connection '{name}' names no storage: set "
            f"{name}__queueServiceUri (and {name}__tableServiceUri) or {name}__accountName"
        )
    credential = section.get("credential", "managedidentity").lower()
    if credential != "managedidentity":
        raise HostStartupError(
            f"{what}: {name}__credential must be 'managedidentity', got {credential!r}"
        )
    return StorageConnection(
        setting=name,
        queue_service_uri=queue_uri,
        table_service_uri=table_uri,
        client_id=section.get("clientid"),
    )
