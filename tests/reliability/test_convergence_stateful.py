"""Convergence as a property: seeded random runs of API calls, Outlook edits, Graph
outages longer than every retry and lost or duplicated notifications, then one ordinary
reconcile round per resource, then the invariant (tests/reliability/stateful.py says
which rules and which invariant).

`make test` runs CONVERGENCE_RUNS new seeded runs (default 1) of CONVERGENCE_STEPS steps
(default 50); `make soak` runs new seeds for CONVERGENCE_SOAK_MINUTES and prints each seed
and its figures. CONVERGENCE_SEED replays one seed. A seed that ever failed becomes a
plain regression test below.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import aiohttp
import pytest

from local.azurite import Azurite, free_port
from local.graph_emulator import RunningEmulator
from tests.fixtures.stack import Stack
from tests.reliability.hosted import OUTBOX_LEASE_SECONDS, HostProcess
from tests.reliability.stateful import Control, StatefulRun, check_convergence, one_round
from tests.reliability.workload import (
    QUIET_WITHIN_SECONDS,
    Client,
    connect,
    drain_booking_events,
    members_for,
    reconcile_once,
)

pytestmark = pytest.mark.integration

RUNS = int(os.environ.get("CONVERGENCE_RUNS", "1"))
STEPS = int(os.environ.get("CONVERGENCE_STEPS", "50"))
SOAK_MINUTES = float(os.environ.get("CONVERGENCE_SOAK_MINUTES", "0"))
KILL_STEPS = int(os.environ.get("CONVERGENCE_KILL_STEPS", "40"))


def new_seed() -> int:
    """CONVERGENCE_SEED, or a fresh seed. Drawn when a run starts, not when the tests are
    collected: parallel test workers each collect the suite and must see the same ids."""
    if os.environ.get("CONVERGENCE_SEED"):
        return int(os.environ["CONVERGENCE_SEED"])
    return secrets.randbelow(2**32)


async def one_run(
    stack: Stack,
    mailboxes: tuple[str, str, str],
    azurite: Azurite,
    seed: int,
    steps: int,
    *,
    within: float = QUIET_WITHIN_SECONDS,
) -> tuple[StatefulRun, list[str]]:
    client = Client(api=stack.api, graph_url=stack.emulator.graph_url, http=stack.http)
    members = members_for(mailboxes)
    await connect(client, members)
    storage = azurite.connection_string
    # The baseline round (the timer ran long before): the closing round is incremental.
    await reconcile_once(storage, client, [m.resource_id for m in members], within=within)
    run = StatefulRun(client, Control(stack.emulator, client), members, storage, seed, steps)
    await run.run()

    await one_round(run, storage, stack.emulator, within=within)
    await stack.booking_events("")  # drains the queue into stack.emitted
    findings = await check_convergence(run, stack.emitted)
    problems = [*findings.violations, *findings.resent, *findings.stale_claims]
    problems += run.workload.unexpected
    return run, problems


async def fresh_mailboxes(stack: Stack) -> tuple[str, str, str]:
    suffix = secrets.token_hex(3)
    names = (
        f"room-{suffix}@contoso.com",
        f"alice-{suffix}@contoso.com",
        f"bob-{suffix}@contoso.com",
    )
    for name in names:
        await stack.control("POST", "/mailboxes", {"id": name})
    return names


@pytest.mark.parametrize("run_number", range(1 if os.environ.get("CONVERGENCE_SEED") else RUNS))
async def test_random_runs_converge_after_one_round(
    stack: Stack, azurite: Azurite, run_number: int
) -> None:
    seed = new_seed()
    print(f"convergence run {run_number}: seed {seed}")  # shown with any failure
    run, problems = await one_run(stack, await fresh_mailboxes(stack), azurite, seed, STEPS)

    context = f"seed {seed}; rules {run.applied}; outcomes {dict(run.workload.outcomes)}"
    assert not problems, "\n".join([*problems, context])
    # The run did what it is about: bookings made and changed through the API. (A count of
    # creates alone failed runs whose creates met the fault windows, 2 of them answered
    # 201 with 6 reschedules and 3 cancels, as seed 769315228 does.)
    outcomes = run.workload.outcomes
    assert outcomes["create 201"] >= 1, context
    answered = outcomes["create 201"] + outcomes["reschedule 200"] + outcomes["cancel 200"]
    assert answered >= 5, context


# Seeds that once failed, each on the code before the fix named:
# - 15501149: incremental rounds did not check unconfirmed events; a cancel whose push met
#   a 403 window left its event in Outlook.
# - 2612232608: a booking rescheduled after its event was deleted in Outlook unnoticed
#   stayed without an event (a round pushed to it before reading it); later, an event a
#   round's policy restored after its delta was read was confirmed by that same round, so
#   its unnotified delete before the next round was in neither delta.
# - 3255413183: a push recorded between the read of a mapping and the read of its event
#   was taken for an Outlook move (an invented `source: outlook` change).
REGRESSIONS = (15501149, 2612232608, 3255413183, 1479498505)


@pytest.mark.parametrize("seed", REGRESSIONS)
async def test_seeds_that_once_failed_converge(stack: Stack, azurite: Azurite, seed: int) -> None:
    run, problems = await one_run(stack, await fresh_mailboxes(stack), azurite, seed, STEPS)

    context = f"seed {seed}; rules {run.applied}; outcomes {dict(run.workload.outcomes)}"
    assert not problems, "\n".join([*problems, context])


async def test_random_runs_with_host_kills_converge(
    graph_emulator: RunningEmulator,
    own_azurite: Azurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The same, with the app in a host process of its own that a rule kills (SIGKILL)
    and restarts mid-run; host.json's queue timings, as in Azure."""
    seed = new_seed()
    print(f"host-kill run: seed {seed}")  # shown with any failure
    storage = own_azurite.connection_string
    host = HostProcess(
        port=free_port(),
        connection_string=storage,
        emulator=graph_emulator,
        log_path=tmp_path / "host.log",
    )
    await host.start()
    kills = 0

    async def kill() -> None:
        nonlocal kills
        host.kill()
        await host.wait_killed()
        await host.start()
        kills += 1

    try:
        client = Client(api=host.api, graph_url=graph_emulator.graph_url, http=http)
        members = members_for(mailboxes)
        await connect(client, members)
        await reconcile_once(storage, client, [m.resource_id for m in members])
        control = Control(graph_emulator, client)
        run = StatefulRun(client, control, members, storage, seed, KILL_STEPS, kill=kill)
        await run.run()
        await asyncio.sleep(OUTBOX_LEASE_SECONDS)  # requests cut short: their outboxes
        # host.json's timings: a message waits 5 s between tries, and a write a killed
        # host left unanswered holds the next one to its event back for up to 30 s; a round
        # a kill cut off holds its resource's lease for up to 60 s.
        try:
            await one_round(run, storage, graph_emulator, within=180)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}; {kills} kills; rules {run.applied}: {exc}") from exc
        findings = await check_convergence(run, await drain_booking_events(storage))
    finally:
        await host.stop()

    context = (
        f"seed {seed}; {kills} kills; rules {run.applied}; "
        f"outcomes {dict(run.workload.outcomes)}\nhost log:\n{host.log_tail()}"
    )
    # A kill may resend an outbox sent just before it (at least once) and leave the claim
    # of a request it cut short (pruned lazily): reported, allowed, as in test_crash.py.
    assert kills >= 1, context
    assert not findings.violations, "\n".join([*findings.violations, context])
    assert not run.workload.unexpected, "\n".join([*run.workload.unexpected, context])


@pytest.mark.skipif(not SOAK_MINUTES, reason="a soak run: make soak")
async def test_soak(stack: Stack, azurite: Azurite) -> None:
    """New seeds until the time is up. A run that does not settle within the (longer,
    as the machine may be busy) waits is a failure too, reported with its seed; the soak
    goes on with the next seed."""
    deadline = time.monotonic() + SOAK_MINUTES * 60
    failed: list[str] = []
    tried = 0
    while time.monotonic() < deadline:
        seed = secrets.randbelow(2**32)
        started = time.monotonic()
        try:
            run, problems = await one_run(
                stack, await fresh_mailboxes(stack), azurite, seed, STEPS, within=180
            )
        except AssertionError as stalled:
            problems, summary = [f"did not settle: {stalled}"], "?"
        else:
            summary = (
                f"{len(run.applied)} steps, {run.workload.outcomes['create 201']} bookings, "
                f"{sum(1 for r in run.applied if r == 'fault window')} fault windows, "
                f"{run.disconnects} disconnects"
            )
        tried += 1
        outcome = "ok" if not problems else f"FAILED: {problems[:3]}"
        elapsed = time.monotonic() - started
        print(f"soak seed {seed}: {summary}, {elapsed:.0f} s: {outcome}", flush=True)
        if problems:
            failed.append(f"seed {seed}: {problems}")
    print(f"soak: {tried} seeds, {len(failed)} failed", flush=True)
    assert not failed, "\n".join(failed)
