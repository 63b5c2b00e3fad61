"""A calendar of 5,000 events connected, then resynced, on a host whose functionTimeout is
a few seconds. In Azure an invocation past functionTimeout restarts the worker and the
message is retried until it lands in poison (azure-functions-host,
WebScriptHostExceptionHandler.OnTimeoutExceptionAsync), so pulling six months of a busy
calendar in one invocation would never finish. The pull goes slice by slice, one queue
message each; every invocation stays under the limit, the resource's status shows how far
the pull has come, and the mirror ends exactly the calendar's busy time."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from local.azurite import Azurite, free_port
from local.graph_emulator import RunningEmulator
from local.graph_emulator.events import create_event
from shared.composition import build_adapters
from tests.fixtures.stack import eventually
from tests.fixtures.storage import make_settings
from tests.reliability.hosted import HostProcess

pytestmark = pytest.mark.integration

EVENTS = 5000
EVENTS_PER_DAY = 28
# A pull of the whole mirror window takes longer (docs/benchmarks.md: 6.7 s for a connect
# of 5,000 events on a quiet machine; over 20 s on a busy one), so in one invocation it
# would run past this and never finish; a slice takes well under a second to 2.5 s.
FUNCTION_TIMEOUT_SECONDS = 5
_EXECUTED = re.compile(r"Executed 'Functions\.sync_outbound' \((\w+), Id=[^,]+, Duration=(\d+)ms")


def seed(emulator: RunningEmulator, mailbox: str, count: int, first_day: datetime) -> set[str]:
    """`count` busy 20-minute events, EVENTS_PER_DAY a day from `first_day` 06:00 UTC,
    put straight into the emulator's store (no notifications: nothing subscribes yet)."""
    box = emulator.state.find_mailbox(mailbox)
    assert box is not None
    ids = set()
    now = datetime.now(UTC)
    for index in range(count):
        day, slot = divmod(index, EVENTS_PER_DAY)
        start = first_day + timedelta(days=day, hours=6, minutes=30 * slot)
        body = {
            "subject": f"Seeded {index}",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            "showAs": "busy",
        }
        record = create_event(box, body, now)
        box.events[record.id] = record
        ids.add(record.id)
    return ids


async def warm_up(host: HostProcess, http: aiohttp.ClientSession, mailbox: str) -> None:
    """Connect and resync a resource with an empty calendar, so that the host process
    has imported what a connect and a resync use (msgraph's request builders take
    seconds to import on a busy machine, more than this test's functionTimeout; an
    instance that has served requests has them too). Invocations may time out here."""
    body = {"mailbox": mailbox, "displayName": "Warm-up"}
    async with http.put(f"{host.api}/resources/r-warm", json=body) as response:
        assert response.status == 202, await response.text()

    async def settled() -> bool:
        async with http.get(f"{host.api}/resources/r-warm") as response:
            view = await response.json() if response.status == 200 else None
        return view is not None and view["status"]["state"] == "connected"

    await eventually(settled, within=40, interval=0.2)
    async with http.post(f"{host.api}/resources/r-warm/resync") as response:
        assert response.status == 202, await response.text()

    async def resynced() -> bool:
        async with http.get(f"{host.api}/resources/r-warm/sync-log") as response:
            log = await response.json() if response.status == 200 else {"value": []}
        return any(e["action"] == "resync_busy_time_pulled" for e in log["value"])

    await eventually(resynced, within=40, interval=0.2)


async def test_a_5000_event_calendar_connects_and_resyncs_within_function_timeout(
    graph_emulator: RunningEmulator,
    own_azurite: Azurite,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    room = mailboxes[0]
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow += timedelta(days=1)
    wanted = seed(graph_emulator, room, EVENTS, tomorrow)
    prefix = "pull" + secrets.token_hex(4)
    host = HostProcess(
        port=free_port(),
        connection_string=own_azurite.connection_string,
        emulator=graph_emulator,
        log_path=tmp_path / "host.log",
        table_prefix=prefix,
        function_timeout=f"00:00:{FUNCTION_TIMEOUT_SECONDS:02d}",
    )
    adapters = build_adapters(
        make_settings(own_azurite.connection_string, table_name_prefix=prefix)
    )
    await host.start()
    try:
        await warm_up(host, http, mailboxes[1])
        warm_log = host.log_path.stat().st_size
        progress: list[dict[str, Any]] = []

        async def status(resource_id: str = "r-busy") -> dict[str, Any]:
            async with http.get(f"{host.api}/resources/{resource_id}") as response:
                assert response.status == 200, await response.text()
                view: dict[str, Any] = await response.json()
            if view["status"].get("pull") is not None:
                progress.append(view["status"]["pull"])
            current: dict[str, Any] = view["status"]
            return current

        async def mirrored() -> set[str]:
            blocks = await adapters.unavailability.list_for_resource("r-busy")
            return {block.event_id for block in blocks}

        body = {"mailbox": room, "displayName": "Busy room"}
        async with http.put(f"{host.api}/resources/r-busy", json=body) as response:
            assert response.status == 202, await response.text()

        async def connected() -> bool:
            return bool((await status())["state"] == "connected")

        await eventually(connected, within=90, interval=0.5)
        assert await mirrored() == wanted, host.log_tail()
        # The status showed the pull under way, part of the window done.
        assert any(p["purpose"] == "connect" for p in progress), progress
        assert any(p["pulledThrough"] < p["windowEnd"] for p in progress), progress
        connected_at = (await status())["mirrorRefreshedAt"]

        # The Outlook user's changes nobody was told about: a resync's pull finds them.
        box = graph_emulator.state.find_mailbox(room)
        assert box is not None
        gone = sorted(wanted)[:100]
        for event_id in gone:
            del box.events[event_id]
        wanted = (wanted - set(gone)) | seed(graph_emulator, room, 50, tomorrow + timedelta(30))
        progress.clear()
        async with http.post(f"{host.api}/resources/r-busy/resync") as response:
            assert response.status == 202, await response.text()

        async def resynced() -> bool:
            current = await status()
            return current["pull"] is None and current["mirrorRefreshedAt"] > connected_at

        await eventually(resynced, within=90, interval=0.5)
        assert await mirrored() == wanted, host.log_tail()
        assert any(p["purpose"] == "resync" for p in progress), progress
    finally:
        await host.stop()
        await adapters.close()

    with host.log_path.open("rb") as file:
        file.seek(warm_log)
        log = file.read().decode(errors="replace")
    assert "Timeout value of" not in log, host.log_tail()
    runs = [(outcome, int(ms)) for outcome, ms in _EXECUTED.findall(log)]
    assert runs, host.log_tail()
    assert all(outcome == "Succeeded" for outcome, _ in runs), runs
    # Each invocation under the limit, and the two pulls took a message per slice.
    assert max(ms for _, ms in runs) < FUNCTION_TIMEOUT_SECONDS * 1000, runs
    assert len(runs) > 40, runs
