"""Fixtures for the local Functions host: the sample app's state, queues, hosts to start."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from azure.storage.queue.aio import QueueServiceClient

from local.functions_host import FastMode, HostConfig, RunningHost, start_host
from tests.functions_host import sample_app
from tests.functions_host.harness import HostStarter


@pytest.fixture(autouse=True)
def fresh_sample_state() -> Iterator[sample_app.SampleState]:
    sample_app.state.reset()
    yield sample_app.state
    sample_app.state.reset()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses (Azurite lives for the whole session)."""
    return f"fh-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch, storage_connection_string: str) -> str:
    """AzureWebJobsStorage pointing at the session's Azurite."""
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    return storage_connection_string


@pytest.fixture
async def queue_service(storage_connection_string: str) -> AsyncIterator[QueueServiceClient]:
    async with QueueServiceClient.from_connection_string(storage_connection_string) as service:
        yield service


@pytest.fixture
async def run_host() -> AsyncIterator[HostStarter]:
    """Start the sample app with only the named functions; every host is closed after."""
    hosts: list[RunningHost] = []

    async def start(
        *functions: str,
        host_json: dict[str, Any] | None = None,
        fast: FastMode | None = None,
        **options: Any,
    ) -> RunningHost:
        document = {"version": "2.0", **(host_json or {}), "functions": list(functions)}
        options.setdefault("grace_period", 1.0)
        config = HostConfig.from_dict(document)
        if fast is not None:
            config = config.with_fast_mode(fast)
        host = await start_host(sample_app.app, host_config=config, **options)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        await host.close()
