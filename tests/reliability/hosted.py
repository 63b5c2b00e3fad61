"""The app in a local Functions host of its own, a child process, for tests that kill it
or take its storage away.

It needs a storage account of its own too: the queue names are fixed, so two hosts on
one account (the session's in-process stack is one) would take each other's messages;
TABLE_NAME_PREFIX separates only the tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from local.azurite import REPO_ROOT, free_port
from local.functions_host import HostKeys
from local.functions_host.__main__ import FUNCTION_KEY_VARIABLE, MASTER_KEY_VARIABLE
from local.graph_emulator import RunningEmulator
from local.run import app_environment
from tests.fixtures.contract import response_log_folder
from tests.reliability.workload import (
    Client,
    Findings,
    Workload,
    connect,
    drain_booking_events,
    members_for,
    verdict,
    workload_seed,
)

NEVER = "0 0 0 1 1 *"  # timers never fire on their own; tests run what they need
# Every host process runs in keys mode with these keys, as Azure checks keys; the
# suite's HTTP client sends the function key (conftest.py), the admin calls the master.
HOST_KEYS = HostKeys.generate()
KEY_HEADER = "x-functions-key"
# Fast mode: messages of a killed host come back after this, not Azure's 10 minutes.
PROCESSING_LEASE_SECONDS = 3


# Booking changes cut short by a kill or an outage keep their messages held this long
# before a later flush (the verdict's reconcile) may send them; short, to keep runs short.
OUTBOX_LEASE_SECONDS = 2


class HostProcess:
    """`python -m local.functions_host` serving function_app.py on a fixed port (so that
    Graph's subscriptions reach it again after a restart)."""

    def __init__(
        self,
        *,
        port: int,
        connection_string: str,
        emulator: RunningEmulator,
        log_path: Path,
        http_concurrency: int | None = None,
        triggers: str | None = None,
        public_port: int | None = None,
        table_prefix: str | None = None,
        processing_lease: float = PROCESSING_LEASE_SECONDS,
        function_timeout: str | None = None,
    ) -> None:
        """`http_concurrency`: the host's --http-concurrency (default: infra/'s, as in
        Azure); `triggers`: its --triggers (default: all); `public_port`: where Graph
        reaches the webhook when another process serves HTTP (default: this one);
        `table_prefix`: shared by processes of one app (default: a fresh one);
        `function_timeout`: host.json's functionTimeout instead of the repository's (a
        timespan such as "00:00:04"), in a host.json of its own next to `log_path`."""
        self.port = port
        self.script_root = REPO_ROOT
        if function_timeout is not None:
            self.script_root = log_path.parent / f"{log_path.stem}-script-root"
            self.script_root.mkdir(parents=True, exist_ok=True)
            document = json.loads((REPO_ROOT / "host.json").read_text())
            document["functionTimeout"] = function_timeout
            (self.script_root / "host.json").write_text(json.dumps(document, indent=2))
        self.http_concurrency = http_concurrency
        self.processing_lease = processing_lease
        self.triggers = triggers
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.environment = {
            **os.environ,
            **app_environment(connection_string, public_port or port, emulator.port),
            "GRAPH_TENANT_ID": emulator.config.tenant_id,
            "TABLE_NAME_PREFIX": table_prefix or "rel" + secrets.token_hex(4),
            "RECONCILE_SCHEDULE": NEVER,
            "SUBSCRIPTION_UPKEEP_SCHEDULE": NEVER,
            "OUTBOX_LEASE_SECONDS": str(OUTBOX_LEASE_SECONDS),
            MASTER_KEY_VARIABLE: HOST_KEYS.master,
            FUNCTION_KEY_VARIABLE: HOST_KEYS.function,
        }
        self._process: asyncio.subprocess.Process | None = None

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    async def start(self, *, within: float = 60.0) -> None:
        """Start and wait until it answers; fails with the end of its log otherwise."""
        options: list[str] = []
        if self.http_concurrency is not None:
            options += ["--http-concurrency", str(self.http_concurrency)]
        if self.triggers is not None:
            options += ["--triggers", self.triggers]
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "local.functions_host",
                "--port",
                str(self.port),
                "--script-root",
                str(self.script_root),
                "--fast",
                "--processing-lease",
                str(self.processing_lease),
                "--grace-period",
                "2",
                "--log-level",
                "INFO",
                "--keys",
                # Every answer is checked against the document (tests/fixtures/contract.py).
                "--response-log",
                str(response_log_folder()),
                *options,
                cwd=REPO_ROOT,
                env=self.environment,
                stdout=log,
                stderr=log,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession(headers={KEY_HEADER: HOST_KEYS.master}) as http:
            while True:
                if self._process.returncode is not None:
                    raise AssertionError(f"the host exited at start:\n{self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/admin/host/status") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"the host did not start in {within} s\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no grace, nothing flushed, messages in flight stay leased."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)

    async def wait_killed(self) -> None:
        assert self._process is not None
        await self._process.wait()

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_tail(self, records: int = 30) -> str:
        """The first line of each of its last warnings and errors (tracebacks left out);
        the whole log, at INFO, is at `log_path`."""
        if not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        wanted = [
            line
            for line in lines
            if line[:2] == "20" and (" WARNING " in line or " ERROR " in line)
        ]
        return "\n".join([*wanted[-records:], f"(whole log: {self.log_path})"])


@dataclass
class HostedRun:
    """What a workload against a host of its own left: for the tests' assertions."""

    seed: int
    workload: Workload
    findings: Findings
    log_tail: str

    def context(self) -> str:
        return (
            f"seed {self.seed}; outcomes {dict(self.workload.outcomes)}; "
            f"resent {self.findings.resent}; stale claims {self.findings.stale_claims}\n"
            f"host log:\n{self.log_tail}"
        )


async def run_hosted_workload(
    *,
    storage: str,
    emulator: RunningEmulator,
    mailboxes: tuple[str, str, str],
    http: aiohttp.ClientSession,
    log_path: Path,
    api_operations: int,
    outlook_edits: int,
    disrupt: Callable[[int, HostProcess], Awaitable[None]],
    gate: asyncio.Event | None = None,
    queue_processes: int = 0,
    processing_lease: float = PROCESSING_LEASE_SECONDS,
) -> HostedRun:
    """Start a host, connect the mailboxes, run the workload (`disrupt(n, host)` is awaited
    after the n-th operation), settle what stayed uncertain, let the outbox leases of
    requests cut short lapse, then take the verdict after one reconcile.

    With `queue_processes`, the host runs the HTTP functions only and that many more
    processes run the queue and timer functions, as Flex Consumption scales an app out
    (every queue function on instances of its own, each with its own per-mailbox limit
    on Graph requests); their logs go next to `log_path`."""
    seed = workload_seed()
    port = free_port()
    prefix = "rel" + secrets.token_hex(4)
    host = HostProcess(
        port=port,
        connection_string=storage,
        emulator=emulator,
        log_path=log_path,
        triggers="http" if queue_processes else None,
        table_prefix=prefix,
        processing_lease=processing_lease,
    )
    workers = [
        HostProcess(
            port=free_port(),
            connection_string=storage,
            emulator=emulator,
            log_path=log_path.with_name(f"{log_path.stem}-queue{index}{log_path.suffix}"),
            triggers="queue,timer",
            public_port=port,
            table_prefix=prefix,
            processing_lease=processing_lease,
        )
        for index in range(queue_processes)
    ]
    await asyncio.gather(host.start(), *(worker.start() for worker in workers))
    try:
        client = Client(api=host.api, graph_url=emulator.graph_url, http=http)
        members = members_for(mailboxes)
        await connect(client, members)
        workload = Workload(client, members, seed, outage=True)

        async def after(done: int) -> None:
            await disrupt(done, host)

        await workload.run(api_operations, outlook_edits, after=after, gate=gate)
        await workload.settle_uncertain()
        await asyncio.sleep(OUTBOX_LEASE_SECONDS)
        drained: list[dict[str, Any]] = []

        async def emitted() -> list[dict[str, Any]]:
            drained.extend(await drain_booking_events(storage))
            return drained

        try:
            findings = await verdict(storage, emulator, client, workload, emitted)
        except AssertionError as failure:
            logs = "\n".join(process.log_tail() for process in (host, *workers))
            raise AssertionError(f"{failure}\nhost logs:\n{logs}") from None
    finally:
        await asyncio.gather(host.stop(), *(worker.stop() for worker in workers))
    logs = "\n".join(process.log_tail() for process in (host, *workers))
    return HostedRun(seed=seed, workload=workload, findings=findings, log_tail=logs)
