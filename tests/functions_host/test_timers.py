"""Timer triggers through the local host."""

from __future__ import annotations

from datetime import datetime

import aiohttp
import pytest

from local.functions_host import HostStartupError
from tests.functions_host.harness import HostStarter, eventually
from tests.functions_host.sample_app import SampleState


async def test_a_timer_fires_on_its_schedule_from_an_app_setting(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch, fresh_sample_state: SampleState
) -> None:
    monkeypatch.setenv("SAMPLE_TIMER_SCHEDULE", "*/1 * * * * *")

    await run_host("tick")

    await eventually(lambda: len(fresh_sample_state.ticks) >= 2, within=3.5)
    first = fresh_sample_state.ticks[0]
    assert first.past_due is False
    # Next is the second after Last: the schedule is every second.
    last = datetime.fromisoformat(first.schedule_status["Last"])
    following = datetime.fromisoformat(first.schedule_status["Next"])
    assert (following - last).total_seconds() == 1


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
