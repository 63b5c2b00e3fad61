"""Fixtures for the emulator's own tests (the emulator fixtures come from the plugin
``tests.fixtures.graph_emulator``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from local.graph_emulator import RunningEmulator
from tests.emulator.support import GraphClient, Receiver


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def graph(emulator: RunningEmulator, http_session: aiohttp.ClientSession) -> GraphClient:
    return GraphClient(http_session, emulator.graph_url)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    subscriber = Receiver()
    await subscriber.start()
    try:
        yield subscriber
    finally:
        await subscriber.stop()
