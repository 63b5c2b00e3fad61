"""Azurite with a process per storage service, as the benchmarks start it."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueClient

from local.azurite import AzuritePorts, start_azurite

pytestmark = pytest.mark.integration


async def test_each_service_runs_in_its_own_process_and_stop_ends_them_all() -> None:
    azurite = start_azurite(per_service=True)
    try:
        assert set(azurite.processes) == {"blob", "queue", "table"}
        assert len({p.pid for p in azurite.processes.values()}) == 3
        assert azurite.process is azurite.processes["table"]

        name = f"ps-{uuid.uuid4().hex[:12]}"
        async with QueueClient.from_connection_string(azurite.connection_string, name) as queue:
            await queue.create_queue()
            await queue.send_message("hello")
            assert [m.content async for m in queue.receive_messages()] == ["hello"]
        async with TableServiceClient.from_connection_string(azurite.connection_string) as tables:
            table = await tables.create_table(name.replace("-", ""))
            await table.create_entity({"PartitionKey": "p", "RowKey": "r"})
            assert (await table.get_entity("p", "r"))["RowKey"] == "r"
    finally:
        azurite.stop(grace_seconds=5)
    assert all(p.poll() is not None for p in azurite.processes.values())


@pytest.mark.parametrize("taken", ["blob", "queue", "table"])
def test_a_port_another_process_listens_on_is_refused_before_starting(
    taken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Azurite (say, a second `make run`) on the ports answers the readiness check
    while ours fails to bind and exits, so the stack would share that one's queues and
    tables: its hosts taking this stack's messages and the other way round. Refused
    before anything starts."""
    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    ports = AzuritePorts.free()
    port = getattr(ports, taken)
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()

        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            start_azurite(ports, ready_timeout=1)
    assert started == []
