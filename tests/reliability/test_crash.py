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
from typing import Any

import aiohttp
import pytest

from local.azurite import Azurite, free_port
from local.graph_emulator import RunningEmulator
from tests.reliability.hosted import OUTBOX_LEASE_SECONDS, HostProcess
from tests.reliability.workload import (
    Client,
    Workload,
    connect,
    drain_booking_events,
    members_for,
    verdict,
    workload_seed,
)

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
    seed = workload_seed()
    storage = own_azurite.connection_string
    host = HostProcess(
        port=free_port(),
        connection_string=storage,
        emulator=graph_emulator,
        log_path=tmp_path / "host.log",
    )
    await host.start()
    try:
        client = Client(api=host.api, graph_url=graph_emulator.graph_url, http=http)
        members = members_for(mailboxes)
        await connect(client, members)
        workload = Workload(client, members, seed, outage=True)
        running = asyncio.Event()
        running.set()
        restarts = 0

        async def crash_and_restart(done: int) -> None:
            nonlocal restarts
            if done != KILL_AFTER:
                return
            running.clear()
            host.kill()
            await host.wait_killed()
            await host.start()
            restarts += 1
            running.set()

        await workload.run(API_OPERATIONS, OUTLOOK_EDITS, after=crash_and_restart, gate=running)
        await workload.settle_uncertain()
        # Messages of changes cut short stay held by their dead request until this passes.
        await asyncio.sleep(OUTBOX_LEASE_SECONDS)
        drained: list[dict[str, Any]] = []

        async def emitted() -> list[dict[str, Any]]:
            drained.extend(await drain_booking_events(storage))
            return drained

        try:
            findings = await verdict(storage, graph_emulator, client, workload, emitted)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nhost log:\n{host.log_tail()}") from None
    finally:
        await host.stop()
    context = (
        f"seed {seed}; outcomes {dict(workload.outcomes)}; resent {findings.resent}; "
        f"stale claims {findings.stale_claims}\n"
        f"host log:\n{host.log_tail()}"
    )
    assert restarts == 1
    assert not workload.unexpected, "\n".join([*workload.unexpected, context])
    assert not findings.violations, "\n".join([*findings.violations, context])
    assert workload.outcomes["create 201"] + workload.outcomes["retried create 201"] >= 10, context
