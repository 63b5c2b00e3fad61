"""GET /api/health, calling the decorated function directly over Azurite and the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from functions.health import health
from local.azurite import free_port
from local.graph_emulator import RunningEmulator
from shared import composition
from shared.settings import get_settings


@pytest.fixture
def app_settings(
    monkeypatch: pytest.MonkeyPatch, storage_connection_string: str, graph_emulator: RunningEmulator
) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("GRAPH_TENANT_ID", graph_emulator.config.tenant_id)
    monkeypatch.setenv("PUBLIC_BASE_URL", "http://127.0.0.1:7071")
    monkeypatch.setenv("GRAPH_AUTH_MODE", "emulator")
    monkeypatch.setenv("GRAPH_BASE_URL", graph_emulator.graph_url)
    monkeypatch.setenv("TABLE_NAME_PREFIX", "health")
    monkeypatch.setenv("STORAGE_CONNECTION_STRING", storage_connection_string)
    clear()
    yield monkeypatch
    clear()


def clear() -> None:
    get_settings.cache_clear()
    composition.get_adapters.cache_clear()
    composition.get_services.cache_clear()


async def call_health() -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(method="GET", url="/api/health", body=b"", headers={})
    response = await health.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


async def test_health_is_200_when_storage_and_graph_answer(
    app_settings: pytest.MonkeyPatch,
) -> None:
    status, body = await call_health()

    assert status == 200
    assert body["ok"] is True
    assert body["storage"] == {"ok": True, "detail": None}
    assert body["graph"] == {"ok": True, "detail": None}
    assert body["resources"]["failing"] == []


async def test_health_is_503_when_storage_does_not_answer(
    app_settings: pytest.MonkeyPatch, storage_connection_string: str
) -> None:
    dead = storage_connection_string.replace("TableEndpoint=http://127.0.0.1:", "X=").replace(
        "X=", f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;Y=", 1
    )
    app_settings.setenv("STORAGE_CONNECTION_STRING", dead)

    status, body = await call_health()

    assert status == 503
    assert body["ok"] is False
    assert body["storage"]["ok"] is False
    assert body["resources"] is None


async def test_health_is_503_when_graph_does_not_answer(app_settings: pytest.MonkeyPatch) -> None:
    app_settings.setenv("GRAPH_BASE_URL", f"http://127.0.0.1:{free_port()}/v1.0")

    status, body = await call_health()

    assert status == 503
    assert body["storage"]["ok"] is True
    assert body["graph"]["ok"] is False
    assert body["graph"]["detail"]
