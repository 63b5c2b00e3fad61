"""Fixtures of the reliability suite: storage of its own, fresh mailboxes, an HTTP client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from local.azurite import Azurite, start_azurite
from local.graph_emulator import RunningEmulator
from tests.fixtures.callers import EVERY_ROLE
from tests.reliability.hosted import HOST_KEYS, KEY_HEADER


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # The hosts of tests/reliability/hosted.py check keys, as Azure does.
    # The tests stand where Easy Auth stands: a principal holding both app roles.
    headers = {KEY_HEADER: HOST_KEYS.function, **EVERY_ROLE}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def own_azurite() -> AsyncIterator[Azurite]:
    """An in-memory Azurite for one test's host alone (see tests/reliability/hosted.py).
    Started in a thread: the session's emulator shares this event loop."""
    server = await asyncio.to_thread(start_azurite)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop, 1)


@pytest_asyncio.fixture(loop_scope="session")
async def mailboxes(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession
) -> tuple[str, str, str]:
    """Room, alice and bob mailboxes of this test alone."""
    suffix = secrets.token_hex(3)
    names = (
        f"room-{suffix}@contoso.com",
        f"alice-{suffix}@contoso.com",
        f"bob-{suffix}@contoso.com",
    )
    room, alice, bob = names
    for name in names:
        async with http.post(f"{graph_emulator.control_url}/mailboxes", json={"id": name}) as r:
            assert r.status == 201, await r.text()
    return room, alice, bob
