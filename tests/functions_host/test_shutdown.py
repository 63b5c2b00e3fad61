"""The command line host: a clean stop on SIGTERM loses no queue message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from local.azurite import free_port
from tests.functions_host.harness import HostStarter, eventually, fast_queues
from tests.functions_host.sample_app import SampleState

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSING_LEASE_SECONDS = 2


@pytest.fixture
async def slow_queue(
    queue_service: QueueServiceClient, queue_name: str
) -> AsyncIterator[QueueClient]:
    client = queue_service.get_queue_client(
        queue_name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    await client.create_queue()
    yield client
    await client.delete_queue()


async def wait_for_line(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"the host exited before logging {needle!r}:\n" + "".join(seen))
        seen.append(raw.decode(errors="replace"))
        if needle in seen[-1]:
            return


async def test_sigterm_mid_message_exits_0_and_the_message_comes_back(
    tmp_path: Path,
    storage_connection_string: str,
    slow_queue: QueueClient,
    run_host: HostStarter,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sample_state: SampleState,
) -> None:
    host_json = {"version": "2.0", "functions": ["slow_queue"], **fast_queues()}
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    body = json.dumps({"sleep": 60, "slow_attempts": 1})
    await slow_queue.send_message(body)
    env = {
        **os.environ,
        "AzureWebJobsStorage": storage_connection_string,
        "SAMPLE_SLOW_QUEUE": slow_queue.queue_name,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local.functions_host",
        "--app",
        "tests.functions_host.sample_app:app",
        "--script-root",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--fast",
        "--processing-lease",
        str(PROCESSING_LEASE_SECONDS),
        "--grace-period",
        "1",
        cwd=REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        await asyncio.wait_for(
            wait_for_line(process.stderr, "slow_queue started message", log), timeout=20
        )
        # Past one renewal, so the message is held by a renewed lease when the host stops.
        await asyncio.sleep(PROCESSING_LEASE_SECONDS * 0.75)

        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        drain = asyncio.ensure_future(process.stderr.read())
        return_code = await asyncio.wait_for(process.wait(), timeout=10)
        log.append((await drain).decode(errors="replace"))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    output = "".join(log)
    assert return_code == 0, output
    # Grace period 1 s: the 60 s handler is abandoned, not waited for.
    assert time.monotonic() - stopped_at < 5, output
    assert "Local Functions host stopped" in output

    # Not deleted: hidden until its lease runs out, then visible again, untouched.
    assert (await slow_queue.get_queue_properties()).approximate_message_count == 1

    async def visible_again() -> bool:
        return bool(await slow_queue.peek_messages())

    await eventually(visible_again, within=PROCESSING_LEASE_SECONDS + 3)
    [message] = await slow_queue.peek_messages()
    assert (message.content, message.dequeue_count) == (body, 1)

    # A fresh host processes it: second delivery, quick this time.
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("SAMPLE_SLOW_QUEUE", slow_queue.queue_name)
    await run_host("slow_queue", host_json=fast_queues())
    await eventually(lambda: len(fresh_sample_state.deliveries) == 1)
    assert fresh_sample_state.deliveries[0].body == body
    assert fresh_sample_state.deliveries[0].dequeue_count == 2

    async def drained() -> bool:
        properties = await slow_queue.get_queue_properties()
        return properties.approximate_message_count == 0

    await eventually(drained)


async def test_a_startup_error_exits_1_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functions": ["tick"]}))
    env = {k: v for k, v in os.environ.items() if k != "SAMPLE_TIMER_SCHEDULE"}

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local.functions_host",
        "--app",
        "tests.functions_host.sample_app:app",
        "--script-root",
        str(tmp_path),
        "--port",
        str(free_port()),
        cwd=REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    assert process.returncode == 1
    assert b"SAMPLE_TIMER_SCHEDULE" in stderr
    assert b"Traceback" not in stderr
