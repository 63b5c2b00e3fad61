"""The host is killed with SIGKILL in the middle of a workload and started again: after
quiescence and one reconcile per resource the invariant holds (tests/reliability/workload.py).

Requests under way when the host dies get no answer; creates among them are sent again
with their Idempotency-Key, as a client would. Allowed here (and shown if the test fails):
identical copies of a booking event (an outbox sent just before the kill is sent again
after it: at least once) and stale ledger claims of a create or reschedule cut short
(slots.py prunes them lazily).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from local.azurite import Azurite
from local.graph_emulator import RunningEmulator
from tests.reliability.hosted import HostProcess, run_hosted_workload

pytestmark = pytest.mark.integration

API_OPERATIONS = 60
OUTLOOK_EDITS = 15
KILL_AFTER = 25  # operations completed; the other workers are mid-request then


async def test_host_killed_mid_workload_converges(
    graph_emulator: RunningEmulator,
    own_azurite: Azurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    running = asyncio.Event()
    running.set()
    restarts = 0

    async def crash_and_restart(done: int, host: HostProcess) -> None:
        nonlocal restarts
        if done != KILL_AFTER:
            return
        running.clear()
        host.kill()
        await host.wait_killed()
        await host.start()
        restarts += 1
        running.set()

    run = await run_hosted_workload(
        storage=own_azurite.connection_string,
        emulator=graph_emulator,
        mailboxes=mailboxes,
        http=http,
        log_path=tmp_path / "host.log",
        api_operations=API_OPERATIONS,
        outlook_edits=OUTLOOK_EDITS,
        disrupt=crash_and_restart,
        gate=running,
    )
    workload, findings, context = run.workload, run.findings, run.context()
    assert restarts == 1
    assert not workload.unexpected, "\n".join([*workload.unexpected, context])
    assert not findings.violations, "\n".join([*findings.violations, context])
    assert workload.outcomes["create 201"] + workload.outcomes["retried create 201"] >= 10, context
