"""Azurite (persistent) is stopped and started again in the middle of a workload: no
acknowledged booking is lost, and after quiescence and one reconcile per resource the
invariant holds (tests/reliability/workload.py).

Requests during the outage may fail (503, or no answer in time), but none may half
succeed: creates that failed are sent again with their Idempotency-Key once storage is
back, and afterwards no booking exists that the client was not told about. Stale ledger
claims of requests cut short and identical copies of a booking event are allowed, as
after a crash (and shown if the test fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from local.azurite import Azurite, AzuritePorts, start_azurite
from local.graph_emulator import RunningEmulator
from tests.reliability.hosted import HostProcess, run_hosted_workload

pytestmark = pytest.mark.integration

API_OPERATIONS = 40
OUTLOOK_EDITS = 10
STOP_AFTER = 15  # operations completed; the others are mid-request then
OUTAGE_SECONDS = 1.0  # besides the stop itself, which takes seconds (connections drain)


class RestartableAzurite:
    """Azurite keeping its data in a folder, on ports that stay the same across restarts
    (the app's connection string names them)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = AzuritePorts.free()
        self.server: Azurite | None = None

    @property
    def connection_string(self) -> str:
        return self.ports.connection_string()

    async def start(self) -> None:
        self.server = await asyncio.to_thread(start_azurite, self.ports, data_dir=self.data_dir)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """A clean stop (SIGTERM): Azurite writes its data out, as on a service restart."""
        if self.server is not None:
            await asyncio.to_thread(self.server.stop, grace_seconds)
            self.server = None


@pytest_asyncio.fixture(loop_scope="session")
async def persistent_azurite(tmp_path: Path) -> AsyncIterator[RestartableAzurite]:
    azurite = RestartableAzurite(tmp_path / "azurite")
    await azurite.start()
    try:
        yield azurite
    finally:
        await azurite.stop(grace_seconds=1)  # its data is not needed any more


async def test_storage_restart_mid_workload_loses_nothing(
    graph_emulator: RunningEmulator,
    persistent_azurite: RestartableAzurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    restarts = 0

    async def restart_storage(done: int, host: HostProcess) -> None:
        nonlocal restarts
        if done != STOP_AFTER:
            return
        await persistent_azurite.stop()
        await asyncio.sleep(OUTAGE_SECONDS)
        await persistent_azurite.start()
        restarts += 1

    run = await run_hosted_workload(
        storage=persistent_azurite.connection_string,
        emulator=graph_emulator,
        mailboxes=mailboxes,
        http=http,
        log_path=tmp_path / "host.log",
        api_operations=API_OPERATIONS,
        outlook_edits=OUTLOOK_EDITS,
        disrupt=restart_storage,
    )
    workload, findings, context = run.workload, run.findings, run.context()
    assert restarts == 1
    # Some requests met the outage (the workers go on while storage is down).
    assert any(k.endswith((" 503", " 0")) for k in workload.outcomes), context
    assert not workload.unexpected, "\n".join([*workload.unexpected, context])
    assert not findings.violations, "\n".join([*findings.violations, context])
    assert workload.outcomes["create 201"] + workload.outcomes["retried create 201"] >= 5, context
