"""The app's Storage clients use the endpoints the settings name, never a built-in DNS suffix,
so the same code runs in sovereign clouds; bad endpoint settings fail with the setting named."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.credentials import AccessToken
from pydantic import ValidationError

from shared.composition import build_adapters
from shared.settings import Settings

# Azure operated by 21Vianet: the account's endpoints end in core.chinacloudapi.cn.
TABLE_ENDPOINT = "https://stexample.table.core.chinacloudapi.cn/"
QUEUE_ENDPOINT = "https://stexample.queue.core.chinacloudapi.cn/"


class NoTokens:
    """An async credential that is never asked for a token here (no request is made)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise AssertionError("no request was expected")

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> NoTokens:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes: the test session sets Azurite's connection string."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def azure_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_table_endpoint": TABLE_ENDPOINT,
        "storage_queue_endpoint": QUEUE_ENDPOINT,
        "graph_tenant_id": "00000000-0000-0000-0000-000000000001",
        "public_base_url": "https://func-example.azurewebsites.net",
        **overrides,
    }
    return Settings(**values)


async def test_clients_talk_to_the_endpoints_from_the_settings() -> None:
    adapters = build_adapters(azure_settings(), credential=NoTokens())
    try:
        table_url = adapters.tables._service.url
        queue_url = adapters.queues._service.url
    finally:
        await adapters.close()

    assert table_url.startswith("https://stexample.table.core.chinacloudapi.cn")
    assert queue_url.startswith("https://stexample.queue.core.chinacloudapi.cn")


@pytest.mark.parametrize("missing", ["storage_table_endpoint", "storage_queue_endpoint"])
def test_without_a_connection_string_both_endpoints_are_required(missing: str) -> None:
    with pytest.raises(ValidationError, match="STORAGE_TABLE_ENDPOINT and STORAGE_QUEUE_ENDPOINT"):
        azure_settings(**{missing: None})


def test_an_endpoint_over_plain_http_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="storage_queue_endpoint") as error:
        azure_settings(storage_queue_endpoint="http://stexample.queue.core.windows.net/")

    assert "https" in str(error.value)


def test_azurite_needs_no_endpoints() -> None:
    settings = azure_settings(
        storage_table_endpoint=None,
        storage_queue_endpoint=None,
        storage_connection_string="UseDevelopmentStorage=true",
    )

    assert settings.storage_table_endpoint is None
