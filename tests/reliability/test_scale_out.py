"""The workload on an app scaled out as Flex Consumption scales it: one process of HTTP
functions and three of queue and timer functions, all on one storage account, against
the emulator's limit of 4 concurrent Graph requests per mailbox (Graph's
MailboxConcurrency). Each process keeps its own per-mailbox limit, as Azure's instances
do, so Graph throttles; throttled work waits in its queue (functions/workers.py) rather
than walking toward poison. After quiescence and one reconcile per resource the
invariant holds (tests/reliability/workload.py) and no message is in a poison queue."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from local.azurite import Azurite
from local.functions_host.config import HOST_PROCESSING_LEASE_SECONDS
from local.graph_emulator import RunningEmulator
from tests.reliability.hosted import HostProcess, run_hosted_workload

pytestmark = pytest.mark.integration

API_OPERATIONS = 80
OUTLOOK_EDITS = 20
QUEUE_PROCESSES = 3


async def test_workload_on_three_queue_processes_converges_with_nothing_in_poison(
    graph_emulator: RunningEmulator,
    own_azurite: Azurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    assert graph_emulator.config.mailbox_concurrency == 4

    async def undisturbed(_done: int, _host: HostProcess) -> None:
        return None

    run = await run_hosted_workload(
        storage=own_azurite.connection_string,
        emulator=graph_emulator,
        mailboxes=mailboxes,
        http=http,
        log_path=tmp_path / "host.log",
        api_operations=API_OPERATIONS,
        outlook_edits=OUTLOOK_EDITS,
        disrupt=undisturbed,
        queue_processes=QUEUE_PROCESSES,
        # Azure's 10-minute lease: nothing is killed here, and a short one would hand a
        # message still running on a loaded machine to another process.
        processing_lease=HOST_PROCESSING_LEASE_SECONDS,
    )

    context = run.context()
    assert not run.workload.unexpected, "\n".join([*run.workload.unexpected, context])
    # The verdict counts a poison message as a violation.
    assert not run.findings.violations, "\n".join([*run.findings.violations, context])
    assert run.workload.outcomes["create 201"] >= 10, context
