"""GET /api/health, calling the decorated function directly."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest

from functions.health import health
from local.azurite import free_port
from shared import composition
from shared.settings import get_settings


@pytest.fixture
def app_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("GRAPH_TENANT_ID", "00000000-0000-0000-0000-0000000000aa")
    monkeypatch.setenv("PUBLIC_BASE_URL", "http://127.0.0.1:7071")
    monkeypatch.setenv("GRAPH_AUTH_MODE", "emulator")
    get_settings.cache_clear()
    composition.get_adapters.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
    composition.get_adapters.cache_clear()


def call_health() -> func.HttpRequest:
    return func.HttpRequest(method="GET", url="/api/health", body=b"", headers={})


async def test_health_is_200_when_storage_answers(
    app_settings: pytest.MonkeyPatch, storage_connection_string: str
) -> None:
    app_settings.setenv("STORAGE_CONNECTION_STRING", storage_connection_string)

    response = await health.build().get_user_function()(call_health())

    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"ok": True, "storage": {"ok": True, "detail": None}}


async def test_health_is_503_when_storage_does_not_answer(
    app_settings: pytest.MonkeyPatch, storage_connection_string: str
) -> None:
    dead = storage_connection_string.replace("TableEndpoint=http://127.0.0.1:", "X=").replace(
        "X=", f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;Y=", 1
    )
    app_settings.setenv("STORAGE_CONNECTION_STRING", dead)

    response = await health.build().get_user_function()(call_health())

    body = json.loads(response.get_body())
    assert response.status_code == 503
    assert body["ok"] is False
    assert body["storage"]["ok"] is False
