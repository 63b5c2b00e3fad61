"""The local host's own Storage clients (queue triggers' dequeues and deletes, the timers'
schedule monitor) trust the environment only when a proxy is set, as the app's do."""

from __future__ import annotations

import pytest

from local.functions_host.connections import AZURITE_KEY, StorageConnection

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1"
)


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> StorageConnection:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return StorageConnection(setting="AzureWebJobsStorage", connection_string=CONNECTION)


def _trusts_environment(client: object) -> bool:
    """What the client's aiohttp transport was built with (azure-core's attribute)."""
    pipeline = getattr(client, "_pipeline", None) or client._client._client._pipeline  # type: ignore[attr-defined]
    return bool(pipeline._transport._use_env_settings)


def test_without_a_proxy_the_hosts_clients_skip_the_per_request_lookups(
    connection: StorageConnection,
) -> None:
    assert not _trusts_environment(connection.queue_client("sync-inbound", retry_total=3))
    assert not _trusts_environment(connection.table_client("status", retry_total=2))


def test_with_a_proxy_the_hosts_clients_keep_them(
    connection: StorageConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")

    assert _trusts_environment(connection.queue_client("sync-inbound"))
    assert _trusts_environment(connection.table_client("status"))
