"""A mixed workload while Graph answers 20% of requests with 429 or 503: after quiescence
and one reconcile per resource, calendars, bookings, ledger and emitted events agree
(the invariant of tests/reliability/workload.py)."""

from __future__ import annotations

from typing import Any

import pytest

from local.azurite import Azurite
from tests.fixtures.stack import Mailboxes, Stack
from tests.reliability.workload import (
    Client,
    Workload,
    connect,
    members_for,
    verdict,
    workload_seed,
)

pytestmark = pytest.mark.integration

API_OPERATIONS = 200
OUTLOOK_EDITS = 30
# Of the requests Graph sees for these mailboxes: 10% 429, then 1/9 of the rest (10% of
# all) 503; Retry-After 0 so that the run stays short.
FAULTS = ((429, 0.1), (503, 1 / 9))


async def test_workload_under_graph_faults_converges(
    stack: Stack, mb: Mailboxes, azurite: Azurite
) -> None:
    seed = workload_seed()
    client = Client(api=stack.api, graph_url=stack.emulator.graph_url, http=stack.http)
    members = members_for((mb.room, mb.alice, mb.bob))
    await connect(client, members)
    before = (await stack.control("GET", "/stats"))["statuses"]
    fault_ids = []
    for member in members:
        for status, probability in FAULTS:
            body = {
                "mailbox": member.mailbox,
                "status": status,
                "probability": probability,
                "retryAfter": 0,
                "seed": seed + status,
            }
            fault_ids.append((await stack.control("POST", "/faults", body))["id"])
    workload = Workload(client, members, seed)

    try:
        await workload.run(API_OPERATIONS, OUTLOOK_EDITS)
    finally:
        for fault_id in fault_ids:
            await stack.control("DELETE", f"/faults/{fault_id}")
    after = (await stack.control("GET", "/stats"))["statuses"]

    async def emitted() -> list[dict[str, Any]]:
        await stack.booking_events("")  # drains the queue into stack.emitted
        return stack.emitted

    findings = await verdict(azurite.connection_string, stack.emulator, client, workload, emitted)
    faulted = {code: after.get(code, 0) - before.get(code, 0) for code in ("429", "503")}
    context = f"seed {seed}; outcomes {dict(workload.outcomes)}; Graph faults {faulted}"
    assert not workload.unexpected, "\n".join([*workload.unexpected, context])
    assert not findings.violations, "\n".join([*findings.violations, context])
    # No crash here: every booking event was sent exactly once.
    assert not findings.resent, "\n".join([*findings.resent, context])
    # Every request here was answered: none may leave a claim behind.
    assert not findings.stale_claims, "\n".join([*findings.stale_claims, context])
    # The run did what it is about: bookings were made and moved, and Graph failed often.
    assert workload.outcomes["create 201"] >= 20, context
    assert workload.outcomes["reschedule 200"] >= 5, context
    assert min(faulted.values()) >= 10, context
