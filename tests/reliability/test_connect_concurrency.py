"""Connecting a resource on a host that runs one HTTP invocation at a time, as a Flex
Consumption instance does for Python by default (functions-concurrency, "HTTP trigger
concurrency"): the PUT must not hold the only slot while Graph's validation POST, which
needs one, waits (Graph gives up after 10 s and refuses the subscription)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from local.azurite import Azurite, free_port
from local.graph_emulator import RunningEmulator
from tests.fixtures.callers import EVERY_ROLE
from tests.fixtures.stack import eventually
from tests.reliability.hosted import HostProcess

pytestmark = pytest.mark.integration


async def test_a_resource_connects_with_http_concurrency_1(
    graph_emulator: RunningEmulator,
    own_azurite: Azurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    room = mailboxes[0]
    host = HostProcess(
        port=free_port(),
        connection_string=own_azurite.connection_string,
        emulator=graph_emulator,
        log_path=tmp_path / "host.log",
        http_concurrency=1,
    )
    await host.start()
    try:
        body = {"mailbox": room, "displayName": "Room"}
        async with http.put(f"{host.api}/resources/r-one", json=body) as response:
            answer = await response.json(content_type=None)
            assert response.status == 202, f"{answer}\n{host.log_tail()}"
        assert answer["status"]["state"] == "connecting"

        async def connected() -> Any:
            async with http.get(f"{host.api}/resources/r-one") as response:
                view = await response.json()
            return view if view["status"]["state"] == "connected" else None

        view = await eventually(connected, within=30)
        assert view["subscription"]["id"] is not None
        # The host checks keys, as Azure does: without the function key, 401.
        async with (
            aiohttp.ClientSession(headers=EVERY_ROLE) as keyless,
            keyless.post(f"{host.api}/bookings", json={}) as response,
        ):
            assert response.status == 401
    finally:
        await host.stop()
