"""Where the local host is as strict as Azure: keys, HTTP concurrency, the 230 s answer
limit and functionTimeout. Each test names the doc page or host source it follows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from local.functions_host import FastMode, HostKeys, RunningHost
from tests.functions_host.harness import HostStarter, eventually, fast_queues
from tests.functions_host.sample_app import SampleState

KEYS = HostKeys(master="master-secret", function="function-secret")


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def keyed_host(run_host: HostStarter) -> RunningHost:
    return await run_host("item", "open_door", "locked", keys=KEYS)


async def _status(client: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> int:
    async with client.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


# Keys: https://learn.microsoft.com/azure/azure-functions/function-keys-how-to
# ("Authorization scopes"; a key goes in x-functions-key or the code query parameter).


async def test_keys_mode_a_function_route_needs_a_key(
    keyed_host: RunningHost, client: aiohttp.ClientSession
) -> None:
    url = f"{keyed_host.url}/api/items/1"

    assert await _status(client, "GET", url) == 401
    assert await _status(client, "GET", url, headers={"x-functions-key": "wrong"}) == 401
    assert await _status(client, "GET", url, headers={"x-functions-key": KEYS.function}) == 200
    assert await _status(client, "GET", url, params={"code": KEYS.function}) == 200
    # The master key opens every route.
    assert await _status(client, "GET", url, headers={"x-functions-key": KEYS.master}) == 200


async def test_keys_mode_a_key_header_wins_over_code_even_when_empty(
    keyed_host: RunningHost, client: aiohttp.ClientSession
) -> None:
    """The header, when sent at all, is the key: `?code=` is read only without it
    (azure-functions-host, AuthenticationLevelHandler.GetAuthorizationKeyInfoAsync), so
    an empty or wrong header beside a good code is 401."""
    url = f"{keyed_host.url}/api/items/1"
    good_code = {"code": KEYS.function}

    for header in ("", "wrong"):
        sent = {"x-functions-key": header}
        assert await _status(client, "GET", url, headers=sent, params=good_code) == 401
    assert await _status(client, "GET", url, params={"code": ""}) == 401
    # Repeated keys: the first one counts (StringValues.First()).
    repeated = [("code", KEYS.function), ("code", "wrong")]
    assert await _status(client, "GET", url, params=repeated) == 200
    repeated = [("code", "wrong"), ("code", KEYS.function)]
    assert await _status(client, "GET", url, params=repeated) == 401


async def test_keys_mode_anonymous_routes_need_none_and_admin_routes_the_master_key(
    keyed_host: RunningHost, client: aiohttp.ClientSession
) -> None:
    assert await _status(client, "GET", f"{keyed_host.url}/api/open") == 200
    locked = f"{keyed_host.url}/api/locked"
    assert await _status(client, "GET", locked, params={"code": KEYS.function}) == 401
    assert await _status(client, "GET", locked, params={"code": KEYS.master}) == 200


async def test_keys_mode_the_admin_api_needs_the_master_key(
    keyed_host: RunningHost, client: aiohttp.ClientSession
) -> None:
    status = f"{keyed_host.url}/admin/host/status"

    assert await _status(client, "GET", status) == 401
    assert await _status(client, "GET", status, headers={"x-functions-key": KEYS.function}) == 401
    assert await _status(client, "GET", status, headers={"x-functions-key": KEYS.master}) == 200


async def test_without_keys_mode_no_key_is_asked_for(
    run_host: HostStarter, client: aiohttp.ClientSession
) -> None:
    host = await run_host("item", "locked")

    assert await _status(client, "GET", f"{host.url}/api/items/1") == 200
    assert await _status(client, "GET", f"{host.url}/api/locked") == 200


# HTTP concurrency: https://learn.microsoft.com/azure/azure-functions/functions-concurrency
# ("HTTP trigger concurrency"; Flex Consumption's per-instance concurrency).


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_http_concurrency_n_runs_n_at_once_and_the_rest_wait(
    run_host: HostStarter,
    client: aiohttp.ClientSession,
    fresh_sample_state: SampleState,
    concurrency: int,
) -> None:
    host = await run_host("slow", http_concurrency=concurrency)

    statuses = await asyncio.gather(
        *(_status(client, "GET", f"{host.url}/api/slow") for _ in range(8))
    )

    assert statuses == [200] * 8
    assert fresh_sample_state.http_max_in_flight == concurrency


async def test_waiting_requests_do_not_hold_up_the_admin_api(
    run_host: HostStarter, client: aiohttp.ClientSession, fresh_sample_state: SampleState
) -> None:
    host = await run_host("slow", http_concurrency=1)
    calls = [
        asyncio.ensure_future(_status(client, "GET", f"{host.url}/api/slow")) for _ in range(5)
    ]
    await eventually(lambda: fresh_sample_state.http_in_flight == 1)

    assert await _status(client, "GET", f"{host.url}/admin/host/status") == 200
    assert not all(call.done() for call in calls)
    assert await asyncio.gather(*calls) == [200] * 5


# The 230 s answer limit: https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout


async def test_a_function_that_has_not_answered_by_the_limit_gets_its_caller_a_502_and_runs_on(
    run_host: HostStarter, client: aiohttp.ClientSession, fresh_sample_state: SampleState
) -> None:
    host = await run_host("nap", fast=FastMode(http_response_limit=0.5), grace_period=5.0)

    status = await _status(client, "GET", f"{host.url}/api/nap", params={"seconds": "1.5"})

    assert status == 502
    assert fresh_sample_state.naps_finished == 0
    await eventually(lambda: fresh_sample_state.naps_finished == 1, within=5)


async def test_the_answer_limit_is_230_seconds_without_fast_mode(run_host: HostStarter) -> None:
    host = await run_host("nap")

    assert host.config.http_response_limit == 230


# functionTimeout: a timeout restarts the worker, failing every invocation on it
# (azure-functions-host, WebScriptHostExceptionHandler.OnTimeoutExceptionAsync).


@pytest.fixture
async def slow_queue(
    queue_service: QueueServiceClient,
    queue_name: str,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[QueueClient]:
    monkeypatch.setenv("SAMPLE_SLOW_QUEUE", queue_name)
    client = queue_service.get_queue_client(
        queue_name, message_encode_policy=TextBase64EncodePolicy()
    )
    await client.create_queue()
    yield client
    await client.delete_queue()


@pytest.mark.integration
async def test_a_timeout_fails_every_invocation_on_the_worker_and_each_counts_a_dequeue(
    run_host: HostStarter, slow_queue: QueueClient, fresh_sample_state: SampleState
) -> None:
    host_json = {**fast_queues(), "functionTimeout": "00:00:02"}
    host = await run_host("slow_queue", host_json=host_json)
    # The first runs past the timeout on its first delivery only.
    await slow_queue.send_message(json.dumps({"sleep": 60, "slow_attempts": 1, "n": 1}))
    await eventually(lambda: fresh_sample_state.slow_started == [1])
    # The second starts later, so it is still running when the first times out.
    await slow_queue.send_message(json.dumps({"sleep": 60, "slow_attempts": 1, "n": 2}))

    await eventually(lambda: len(fresh_sample_state.deliveries) == 2, within=15)

    # Both failed on their first delivery and succeeded on the second.
    assert sorted(d.dequeue_count or 0 for d in fresh_sample_state.deliveries) == [2, 2]
    assert sorted(c or 0 for c in fresh_sample_state.slow_started) == [1, 1, 2, 2]
    # One timeout, one worker restart: the second message failed with the first.
    assert host.invoker.worker_restarts == 1


async def test_function_timeout_defaults_to_flex_consumptions_30_minutes(
    run_host: HostStarter,
) -> None:
    host = await run_host("item")

    assert host.config.function_timeout == 1800
