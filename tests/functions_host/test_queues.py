"""Queue triggers through the local host, against Azurite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from local.functions_host import FastMode
from tests.functions_host.harness import HostStarter, eventually, fast_queues
from tests.functions_host.sample_app import Delivery, SampleState

pytestmark = pytest.mark.integration


@pytest.fixture
async def base64_queue(
    queue_service: QueueServiceClient, queue_name: str
) -> AsyncIterator[QueueClient]:
    """The queue as the app's queue adapter writes to it: base64 text."""
    client = queue_service.get_queue_client(
        queue_name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    await client.create_queue()
    yield client
    await client.delete_queue()


async def peek(queue: QueueClient) -> list[str]:
    """Visible messages' text; none while the host has not created the queue yet."""
    try:
        return [m.content for m in await queue.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


async def message_count(queue: QueueClient) -> int:
    """Messages in the queue, hidden ones included."""
    properties = await queue.get_queue_properties()
    return int(properties.approximate_message_count or 0)


async def test_a_base64_message_reaches_the_function_decoded_and_is_deleted(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    base64_queue: QueueClient,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", base64_queue.queue_name)
    text = json.dumps({"booking": "b-1", "note": "café ☕"})
    await base64_queue.send_message(text)

    await run_host("record", host_json=fast_queues())

    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    delivery = fresh_sample_state.deliveries[0]
    assert (delivery.body, delivery.dequeue_count) == (text, 1)
    await eventually(lambda: _is_empty(base64_queue))


async def test_messages_are_read_as_plain_text_with_encoding_none(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    queue_service: QueueServiceClient,
    queue_name: str,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", queue_name)
    await run_host("record", host_json=fast_queues(messageEncoding="none"))
    plain = queue_service.get_queue_client(queue_name)  # the host created the queue
    await plain.send_message("not base64 at all!")

    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    assert fresh_sample_state.deliveries[0].body == "not base64 at all!"


async def test_a_failing_message_goes_to_the_poison_queue_after_max_dequeue_count(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    queue_service: QueueServiceClient,
    base64_queue: QueueClient,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_FAILING_QUEUE", base64_queue.queue_name)
    poison = queue_service.get_queue_client(
        f"{base64_queue.queue_name}-poison", message_decode_policy=TextBase64DecodePolicy()
    )
    text = "poison me ☠"
    await base64_queue.send_message(text)

    await run_host("always_fails", host_json=fast_queues(maxDequeueCount=3))

    async def poisoned() -> bool:
        return bool(await peek(poison))

    await eventually(poisoned)
    assert await peek(poison) == [text]  # same encoding, body intact
    assert fresh_sample_state.failed_dequeue_counts == [1, 2, 3]
    assert await message_count(base64_queue) == 0
    await poison.delete_queue()


async def test_a_message_that_is_not_base64_is_poisoned_without_running_the_function(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    queue_service: QueueServiceClient,
    queue_name: str,
    fresh_sample_state: SampleState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", queue_name)
    raw = queue_service.get_queue_client(queue_name)
    await raw.create_queue()
    await raw.send_message("{not base64}")
    poison = queue_service.get_queue_client(f"{queue_name}-poison")

    await run_host("record", host_json=fast_queues())

    async def poisoned() -> bool:
        return bool(await peek(poison))

    await eventually(poisoned)
    assert await peek(poison) == ["{not base64}"]
    assert fresh_sample_state.deliveries == []
    assert await message_count(raw) == 0
    # Moved for what it is, not for a dequeue count it never reached.
    assert not [r for r in caplog.records if "MaxDequeueCount" in r.getMessage()]


async def test_batch_size_and_new_batch_threshold_bound_concurrency(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    base64_queue: QueueClient,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", base64_queue.queue_name)
    for _ in range(8):
        await base64_queue.send_message("sleep:0.3")

    await run_host("record", host_json=fast_queues(batchSize=2, newBatchThreshold=1))

    await eventually(lambda: len(fresh_sample_state.deliveries) == 8)
    # Up to batchSize + newBatchThreshold at once, and more than one.
    assert 2 <= fresh_sample_state.queue_max_in_flight <= 3


async def test_the_lease_is_renewed_while_a_long_function_runs(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    base64_queue: QueueClient,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_SLOW_QUEUE", base64_queue.queue_name)
    # Runs 3 s on a 2 s lease: without renewal it would be delivered a second time.
    await base64_queue.send_message(json.dumps({"sleep": 3, "slow_attempts": 1}))

    await run_host("slow_queue", host_json=fast_queues(), fast=FastMode(processing_lease=2))

    await eventually(lambda: len(fresh_sample_state.deliveries) == 1, within=8)
    assert fresh_sample_state.slow_started == [1]
    await eventually(lambda: _is_empty(base64_queue))


async def test_the_admin_api_runs_a_queue_function_now(
    run_host: HostStarter,
    storage_env: str,
    monkeypatch: pytest.MonkeyPatch,
    queue_name: str,
    fresh_sample_state: SampleState,
) -> None:
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", queue_name)
    host = await run_host("record", host_json=fast_queues())

    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{host.url}/admin/functions/record", json={"input": "by hand"}) as response,
    ):
        assert response.status == 202

    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    assert fresh_sample_state.deliveries[0] == Delivery(
        "record", fresh_sample_state.deliveries[0].message_id, "by hand", 1
    )


async def _is_empty(queue: QueueClient) -> bool:
    return await message_count(queue) == 0


async def test_a_queue_trigger_runs_on_an_identity_based_connection(
    run_host: HostStarter,
    storage_connection_string: str,
    monkeypatch: pytest.MonkeyPatch,
    base64_queue: QueueClient,
    fresh_sample_state: SampleState,
) -> None:
    """AzureWebJobsStorage__queueServiceUri, as in Azure, against Azurite: no connection
    string in the settings at all."""
    endpoints = dict(
        part.split("=", 1) for part in storage_connection_string.split(";") if "=" in part
    )
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__queueServiceUri", endpoints["QueueEndpoint"])
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", endpoints["TableEndpoint"])
    monkeypatch.setenv("SAMPLE_RECORD_QUEUE", base64_queue.queue_name)
    await base64_queue.send_message("through an identity")

    host = await run_host("record", host_json=fast_queues())

    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    assert fresh_sample_state.deliveries[0].body == "through an identity"
    assert host.index.queues[0].connection.identity_based
