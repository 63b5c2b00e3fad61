"""GET /api/health, calling the decorated function directly over Azurite and the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from functions import health as health_functions
from functions.health import health
from local.azurite import free_port
from local.graph_emulator import RunningEmulator
from shared import composition
from shared.domain.errors import GraphAccessDenied
from shared.services import health as health_service
from shared.settings import get_settings
from tests.builders import T0, resource
from tests.fakes import Clock, FakeWorld, fake_world
from tests.fixtures.callers import ADMIN, FRONTEND


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


async def call_health(function: Any = health) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(method="GET", url="/api/health", body=b"", headers=ADMIN)
    response = await function.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


async def test_health_is_200_when_storage_and_graph_answer(
    app_settings: pytest.MonkeyPatch,
) -> None:
    status, body = await call_health()

    assert status == 200
    assert body == {
        "ok": True,
        "storage": {"ok": True, "reason": None},
        "graph": {"ok": True, "reason": None},
    }
    status, details = await call_health(health_functions.health_details)
    assert status == 200
    assert details["storage"] == {"ok": True, "reason": None, "detail": None}
    assert details["resources"]["failing"] == []


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
    assert body["storage"] == {"ok": False, "reason": "storage_unavailable"}
    status, details = await call_health(health_functions.health_details)
    assert status == 503
    assert details["storage"]["detail"]
    assert details["resources"] is None


async def test_health_is_503_when_graph_does_not_answer(app_settings: pytest.MonkeyPatch) -> None:
    app_settings.setenv("GRAPH_BASE_URL", f"http://127.0.0.1:{free_port()}/v1.0")

    status, body = await call_health()

    assert status == 503
    assert body["storage"]["ok"] is True
    assert body["graph"]["ok"] is False
    assert body["graph"]["reason"].startswith("graph_")
    assert "detail" not in body["graph"]


# --- what an anonymous caller sees, over fakes -------------------------------------------

LEAKY = (
    "AADSTS7000215: Invalid client secret provided for app "
    "'3f0e8c52-1111-2222-3333-444455556666' in tenant '00000000-0000-0000-0000-0000000000aa'"
)


@pytest.fixture
def fake_services(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = fake_world(Clock(T0), ("room-1@contoso.com",))
    monkeypatch.setattr(health_functions, "get_services", lambda: world.services)
    return world


async def test_anonymous_health_says_ok_and_a_reason_code_never_graphs_words(
    fake_services: FakeWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused() -> None:
        raise GraphAccessDenied(LEAKY)

    monkeypatch.setattr(fake_services.calendar, "check_reachable", refused)
    await fake_services.resources.add(resource("room-1"))

    status, body = await call_health(health_functions.health)

    assert status == 503
    assert body == {
        "ok": False,
        "storage": {"ok": True, "reason": None},
        "graph": {"ok": False, "reason": "graph_access_denied"},
    }
    assert LEAKY in caplog.text  # the details go to the logs


async def test_health_details_are_for_administrators(
    fake_services: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused() -> None:
        raise GraphAccessDenied(LEAKY)

    monkeypatch.setattr(fake_services.calendar, "check_reachable", refused)
    details = health_functions.health_details.build().get_user_function()

    for headers, status in ((FRONTEND, 403), ({}, 401)):
        request = func.HttpRequest(
            method="GET", url="/api/health/details", body=b"", headers=headers
        )
        response = await details(request)
        assert response.status_code == status
        assert LEAKY not in response.get_body().decode()


async def test_health_details_show_what_the_summary_keeps_back(
    fake_services: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused() -> None:
        raise GraphAccessDenied(LEAKY)

    monkeypatch.setattr(fake_services.calendar, "check_reachable", refused)

    status, body = await call_health(health_functions.health_details)

    assert status == 503
    assert body["graph"] == {"ok": False, "reason": "graph_access_denied", "detail": LEAKY}
    assert body["resources"] == {"total": 0, "failing": [], "subscriptionsExpiring": []}
    trigger = health_functions.health_details.build().get_trigger().get_dict_repr()
    # Reached from an administrator's browser (the console): the role is the lock.
    assert trigger["authLevel"] == func.AuthLevel.ANONYMOUS
    assert trigger["route"] == "health/details"


async def test_a_probe_that_times_out_is_reason_timeout(
    fake_services: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_service, "PROBE_SECONDS", 0.01)

    async def hangs() -> None:
        await asyncio.sleep(1)

    monkeypatch.setattr(fake_services.ports.storage, "check", hangs)

    status, body = await call_health(health_functions.health)

    assert (status, body["storage"]) == (503, {"ok": False, "reason": "timeout"})
