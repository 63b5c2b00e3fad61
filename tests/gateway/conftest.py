"""Fixtures for the Graph gateway tests: a gateway on the Graph emulator (built from
Settings the way the app builds it, with a short retry policy) and the emulator's control
API over real HTTP. Needs the `tests.fixtures.graph_emulator` plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from local.graph_emulator import RunningEmulator
from shared.adapters.graph import GraphCalendarGateway, RetryPolicy, build_calendar_gateway
from shared.settings import GraphAuthMode, Settings

ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
ROOM = "room-1@contoso.com"

# Short waits so the suite stays fast; Retry-After: 1 is still honoured.
FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed_s=10.0, max_wait_s=2.0, backoff_s=0.05)


class EmulatorControl:
    """The emulator's control API and raw Graph calls (as an Outlook user would make)."""

    def __init__(self, session: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
        self.session = session
        self.emulator = emulator

    async def _json(self, method: str, url: str, body: Any = None) -> Any:
        async with self.session.request(method, url, json=body) as response:
            raw = await response.read()
            assert response.status < 300, (response.status, raw)
            return await response.json(content_type=None) if raw else None

    async def add_fault(self, **fault: Any) -> None:
        await self._json("POST", f"{self.emulator.control_url}/faults", fault)

    async def set_latency(self, ms: int) -> None:
        await self._json("POST", f"{self.emulator.control_url}/latency", {"ms": ms})

    async def expire_delta(self, mailbox: str) -> None:
        await self._json("POST", f"{self.emulator.control_url}/delta/expire", {"mailbox": mailbox})

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._json("GET", f"{self.emulator.control_url}/stats")
        return stats

    async def request_count(self, method: str, route: str, mailbox: str | None = None) -> int:
        rows = (await self.stats())["requests"]
        return sum(
            row["count"]
            for row in rows
            if row["method"] == method
            and row["route"] == route
            and (mailbox is None or row["mailbox"] == mailbox)
        )

    async def graph(self, method: str, path: str, body: Any = None) -> Any:
        """A Graph call outside the gateway (`path` relative to /v1.0, or a full URL)."""
        url = path if path.startswith("http") else self.emulator.graph_url + path
        headers = {"Authorization": "Bearer outlook-user"}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            raw = await response.read()
            assert response.status < 300, (response.status, raw)
            return await response.json(content_type=None) if raw else None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def control(http_session: aiohttp.ClientSession, emulator: RunningEmulator) -> EmulatorControl:
    return EmulatorControl(http_session, emulator)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_gateway(
    graph_emulator: RunningEmulator,
) -> AsyncIterator[GraphCalendarGateway]:
    settings = Settings(
        graph_tenant_id=graph_emulator.config.tenant_id,
        graph_base_url=graph_emulator.graph_url,
        graph_auth_mode=GraphAuthMode.EMULATOR,
        public_base_url="http://localhost:7071",
        storage_connection_string="UseDevelopmentStorage=true",
    )
    gateway = build_calendar_gateway(settings, retry=FAST_RETRY)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
def gateway(
    session_gateway: GraphCalendarGateway, emulator: RunningEmulator
) -> GraphCalendarGateway:
    """The process-wide gateway, on an emulator emptied for this test."""
    return session_gateway
