"""One host process running some kinds of trigger only (`--triggers`), so that HTTP
functions can run apart from queue and timer functions, as on Flex Consumption."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from local.functions_host import HostStartupError
from local.functions_host.__main__ import parse_args
from tests.functions_host.harness import HostStarter, eventually, fast_queues
from tests.functions_host.sample_app import SampleState

pytestmark = pytest.mark.integration

FUNCTIONS = ("item", "record", "startup_tick")


@pytest.fixture
async def record_queue(
    queue_service: QueueServiceClient,
    queue_name: str,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[QueueClient]:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", queue_name)
    client = queue_service.get_queue_client(
        queue_name, message_encode_policy=TextBase64EncodePolicy()
    )
    await client.create_queue()
    yield client
    await client.delete_queue()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_an_http_only_host_serves_http_and_leaves_queues_and_timers_alone(
    run_host: HostStarter,
    record_queue: QueueClient,
    client: aiohttp.ClientSession,
    fresh_sample_state: SampleState,
) -> None:
    host = await run_host(*FUNCTIONS, host_json=fast_queues(), triggers=("http",))
    await record_queue.send_message("for the other host")

    async with client.get(f"{host.url}/api/items/1") as response:
        assert response.status == 200
    async with client.post(f"{host.url}/admin/functions/record", json={"input": "x"}) as response:
        assert response.status == 404
        assert "another host" in await response.text()
    await asyncio.sleep(0.6)  # three polling intervals of a host that did poll
    assert fresh_sample_state.deliveries == []
    assert fresh_sample_state.startup_ticks == []  # runOnStartup is the timer host's
    assert [f.function.name for f in host.index.http] == ["item"]
    assert (host.index.queues, host.index.timers) == ((), ())


async def test_a_queue_and_timer_host_runs_those_and_answers_no_http_function(
    run_host: HostStarter,
    record_queue: QueueClient,
    client: aiohttp.ClientSession,
    fresh_sample_state: SampleState,
) -> None:
    host = await run_host(*FUNCTIONS, host_json=fast_queues(), triggers=("queue", "timer"))
    await record_queue.send_message("for this host")

    await eventually(lambda: [d.body for d in fresh_sample_state.deliveries] == ["for this host"])
    await eventually(lambda: len(fresh_sample_state.startup_ticks) == 1)
    async with client.get(f"{host.url}/api/items/1") as response:
        assert response.status == 404
    async with client.get(f"{host.url}/admin/host/status") as response:
        assert response.status == 200
    async with client.post(
        f"{host.url}/admin/functions/startup_tick", json={"input": ""}
    ) as response:
        assert response.status == 202
    await eventually(lambda: len(fresh_sample_state.startup_ticks) == 2)


async def test_two_hosts_split_the_app_between_them(
    run_host: HostStarter,
    record_queue: QueueClient,
    client: aiohttp.ClientSession,
    fresh_sample_state: SampleState,
) -> None:
    http = await run_host(*FUNCTIONS, host_json=fast_queues(), triggers=("http",))
    workers = await run_host(*FUNCTIONS, host_json=fast_queues(), triggers=("queue", "timer"))
    await record_queue.send_message("once")

    async with client.get(f"{http.url}/api/items/2") as response:
        assert (await response.json())["id"] == "2"
    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    await asyncio.sleep(0.3)
    assert [d.body for d in fresh_sample_state.deliveries] == ["once"]
    assert len(fresh_sample_state.startup_ticks) == 1
    assert workers.url != http.url


async def test_functions_another_host_runs_are_still_validated(
    run_host: HostStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # record's queue name comes from an app setting that is not set: the HTTP-only host
    # refuses the app as the other host would, rather than start half of it.
    monkeypatch.delenv("SAMPLE_RECORD_QUEUE", raising=False)
    with pytest.raises(HostStartupError, match="SAMPLE_RECORD_QUEUE"):
        await run_host("item", "record", triggers=("http",))


@pytest.mark.parametrize("triggers", [(), ("http", "blob")])
async def test_no_or_unknown_trigger_kinds_are_refused(
    run_host: HostStarter, triggers: tuple[str, ...]
) -> None:
    with pytest.raises(HostStartupError, match="triggers must be some of"):
        await run_host("item", triggers=triggers)


def test_the_command_line_takes_a_comma_separated_list() -> None:
    assert parse_args([]).triggers == ("http", "queue", "timer")
    assert parse_args(["--triggers", "timer, queue"]).triggers == ("queue", "timer")
    assert parse_args(["--triggers", "HTTP"]).triggers == ("http",)


@pytest.mark.parametrize("text", ["", "http,blob", ","])
def test_the_command_line_refuses_other_kinds(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--triggers", text])
    assert "expected some of http,queue,timer" in capsys.readouterr().err
