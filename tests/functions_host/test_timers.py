"""Timer triggers through the local host."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from local.functions_host import HostStartupError
from local.functions_host.schedule_monitor import (
    HOST_ID_SETTING,
    ScheduleMonitor,
    ScheduleStatus,
    TableScheduleMonitor,
)
from tests.functions_host.harness import HostStarter, eventually
from tests.functions_host.sample_app import SampleState


async def test_a_timer_fires_on_its_schedule_from_an_app_setting(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch, fresh_sample_state: SampleState
) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "*/1 * * * * *")

    await run_host("tick")

    await eventually(lambda: len(fresh_sample_state.ticks) >= 2, within=3.5)
    first, second = fresh_sample_state.ticks[:2]
    assert first.past_due is False
    # The first run follows no run; each names the occurrence it runs as Next, and the
    # schedule is every second.
    assert datetime.fromisoformat(first.schedule_status["Last"]).year == 1
    assert second.schedule_status["Last"] >= first.schedule_status["Next"]
    gap = datetime.fromisoformat(second.schedule_status["Next"]) - datetime.fromisoformat(
        first.schedule_status["Next"]
    )
    assert gap.total_seconds() == 1


async def test_a_missing_schedule_setting_is_a_startup_error_naming_it(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAMPLE_TIMER_SCHEDULE", raising=False)

    with pytest.raises(HostStartupError, match="SAMPLE_TIMER_SCHEDULE") as raised:
        await run_host("tick")
    assert "'tick'" in str(raised.value)


async def test_a_bad_schedule_is_a_startup_error(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "every minute")

    with pytest.raises(HostStartupError, match="every minute"):
        await run_host("tick")


async def test_run_on_startup_runs_the_function_at_once(
    run_host: HostStarter, fresh_sample_state: SampleState
) -> None:
    await run_host("startup_tick")  # its schedule is once a year, on 1 January

    await eventually(lambda: len(fresh_sample_state.startup_ticks) == 1, within=2)


async def test_a_failing_run_is_logged_and_the_schedule_goes_on(
    run_host: HostStarter, fresh_sample_state: SampleState, caplog: pytest.LogCaptureFixture
) -> None:
    await run_host("failing_tick")

    await eventually(lambda: fresh_sample_state.failing_ticks >= 2, within=3.5)
    failures = [r for r in caplog.records if "'Functions.failing_tick' (Failed" in r.getMessage()]
    assert len(failures) >= 2
    assert all(r.exc_info is not None for r in failures)


async def test_the_admin_api_runs_a_timer_function_now(
    run_host: HostStarter, fresh_sample_state: SampleState
) -> None:
    host = await run_host("startup_tick")
    await eventually(lambda: len(fresh_sample_state.startup_ticks) == 1, within=2)

    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{host.url}/admin/functions/startup_tick", json={}) as response,
    ):
        assert response.status == 202

    await eventually(lambda: len(fresh_sample_state.startup_ticks) == 2, within=2)


# The timer extension's TimerListener (azure-webjobs-sdk-extensions,
# src/WebJobs.Extensions/Extensions/Timers/Listener/TimerListener.cs).


async def test_a_run_past_its_next_occurrence_is_followed_by_that_occurrence_at_once(
    run_host: HostStarter, fresh_sample_state: SampleState
) -> None:
    """Next is computed from the run's start, so the occurrence missed while it ran fires
    as soon as it ends (and only that one: the next one after it follows the schedule)."""
    await run_host("overrun_tick")

    await eventually(lambda: len(fresh_sample_state.overrun_ticks) >= 3, within=8)
    first, second, third = fresh_sample_state.overrun_ticks[:3]
    occurrence = [datetime.fromisoformat(t.schedule_status["Next"]) for t in (first, second)]
    # The second run is the occurrence one second after the first, though it started
    # 2.5 s later; the old way (skip what was missed) would have run the one 3 s after.
    assert (occurrence[1] - occurrence[0]).total_seconds() == 1
    assert not second.past_due
    assert datetime.fromisoformat(third.schedule_status["Next"]) > occurrence[1]


@pytest.fixture
def host_id(monkeypatch: pytest.MonkeyPatch, storage_env: str) -> str:
    """A host id of this test alone, so statuses of other tests' timers stay apart."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(HOST_ID_SETTING, value)
    return value


# The monitor's past-due check is ScheduleMonitor.CheckPastDueAsync (azure-webjobs-sdk-
# extensions, src/WebJobs.Extensions/Extensions/Timers/Scheduling/ScheduleMonitor.cs).
EVERY_FIVE_MINUTES = "0 */5 * * * *"  # a minute or more apart: monitored


def _five_minute_mark(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


@pytest.fixture
async def monitor(storage_connection_string: str, host_id: str) -> AsyncIterator[ScheduleMonitor]:
    table_monitor = TableScheduleMonitor(storage_connection_string, host_id)
    yield table_monitor
    await table_monitor.close()


async def _recorded_next_is_ahead(monitor: ScheduleMonitor) -> bool:
    status = await monitor.get_status("tick")
    return status is not None and status.next > datetime.now(UTC)


@pytest.mark.integration
async def test_a_missed_occurrence_runs_at_start_up_past_due(
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
    monitor: ScheduleMonitor,
) -> None:
    """The monitor recorded a run and the Next it computed from it, and Next passed while
    no host ran (or the host died mid-run, leaving the status of the interrupted
    occurrence): the function runs at once with isPastDue, and the status moves on."""
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", EVERY_FIVE_MINUTES)
    mark = _five_minute_mark(datetime.now(UTC))
    last, missed = mark - timedelta(minutes=10), mark - timedelta(minutes=5)
    await monitor.update_status("tick", ScheduleStatus(last=last, next=missed, last_updated=last))

    await run_host("tick")

    await eventually(lambda: len(fresh_sample_state.ticks) >= 1, within=3)
    assert fresh_sample_state.ticks[0].past_due is True
    assert datetime.fromisoformat(fresh_sample_state.ticks[0].schedule_status["Next"]) == missed
    await eventually(lambda: _recorded_next_is_ahead(monitor), within=3)


@pytest.mark.integration
async def test_a_first_start_records_the_next_occurrence_before_any_run(
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
    monitor: ScheduleMonitor,
) -> None:
    """With no status yet, the host writes one at start (Next, and LastUpdated = now), so
    a host that stops or dies before the first occurrence runs it past due at its next
    start, as the next test shows."""
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *")  # once a year
    before = datetime.now(UTC)

    await run_host("tick")

    async def written() -> bool:
        return await monitor.get_status("tick") is not None

    await eventually(written, within=3)
    status = await monitor.get_status("tick")
    assert status is not None
    assert status.last is None
    assert status.last_updated is not None
    assert status.last_updated >= before
    assert status.next > before
    assert (status.next.month, status.next.day) == (1, 1)
    assert fresh_sample_state.ticks == []


@pytest.mark.integration
async def test_an_occurrence_missed_before_the_first_run_runs_at_start_up_past_due(
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
    monitor: ScheduleMonitor,
) -> None:
    """What a host that started, then stopped before the first occurrence, left behind."""
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", EVERY_FIVE_MINUTES)
    mark = _five_minute_mark(datetime.now(UTC))
    started, missed = mark - timedelta(minutes=9), mark - timedelta(minutes=5)
    status = ScheduleStatus(last=None, next=missed, last_updated=started)
    await monitor.update_status("tick", status)

    await run_host("tick")

    await eventually(lambda: len(fresh_sample_state.ticks) >= 1, within=3)
    assert fresh_sample_state.ticks[0].past_due is True
    await eventually(lambda: _recorded_next_is_ahead(monitor), within=3)


@pytest.mark.integration
async def test_a_status_from_another_schedule_is_not_past_due(
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
    monitor: ScheduleMonitor,
) -> None:
    """A recorded Next that the schedule would not compute from the recorded Last means
    the schedule changed: the host takes the new schedule's next occurrence from now
    instead of running at once."""
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *")
    last = datetime.now(UTC) - timedelta(minutes=10)
    old_next = last + timedelta(minutes=5)  # an old five-minute schedule's
    await monitor.update_status("tick", ScheduleStatus(last=last, next=old_next, last_updated=last))

    await run_host("tick")

    await eventually(lambda: _recorded_next_is_ahead(monitor), within=3)
    await asyncio.sleep(0.5)  # a past-due run would have started at once
    assert fresh_sample_state.ticks == []


@pytest.mark.integration
async def test_without_a_missed_occurrence_nothing_runs_at_start_up(
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
    host_id: str,
) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *")

    host = await run_host("tick")
    await asyncio.sleep(1.0)  # a past-due run would have started at once

    assert fresh_sample_state.ticks == []
    assert [t.use_monitor for t in host.index.timers] == [True]


async def test_the_monitor_is_off_for_schedules_more_frequent_than_a_minute(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "*/30 * * * * *")

    host = await run_host("tick")

    assert [t.use_monitor for t in host.index.timers] == [False]
