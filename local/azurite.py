"""Start Azurite (the Azure Storage emulator, pinned in package.json) as a child process.

Used by the run command (persistent data under `.azurite/`) and by the test suite
(in memory, free loopback ports).
"""

from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# Where the kernel takes the source ports of outgoing connections (Linux's default when
# /proc does not say; IANA's dynamic range starts higher). Ports for our servers are
# picked below it, above Azurite's default 10000-10002.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICKED = 15000


def ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the range of
    outgoing connections' source ports where there is room. A port from that range (what
    binding port 0 gives) can become the source port of a connection made before the
    server meant for it starts, which then cannot listen on it ("address already in use")."""
    below = ephemeral_ports().start
    if below > _LOWEST_PICKED + 1000:
        for _ in range(200):
            port = random.randrange(_LOWEST_PICKED, below)  # noqa: S311 - not a secret
            if _bindable(port):
                return port
    # No room below the range (an unusual kernel setting): the kernel's pick.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        picked: int = sock.getsockname()[1]
        return picked


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int

    @classmethod
    def free(cls) -> AzuritePorts:
        return cls(blob=free_port(), queue=free_port(), table=free_port())

    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={base}:{self.blob}/{DEV_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue}/{DEV_ACCOUNT};"
            f"TableEndpoint={base}:{self.table}/{DEV_ACCOUNT};"
        )


# The storage services this app uses and Azurite can run one per process.
SERVICES = ("blob", "queue", "table")


class Azurite:
    """A running Azurite: one process serving Blob, Queue and Table, or one process per
    service (`processes` by name: "azurite", or "blob", "queue" and "table"). `stop()`
    ends them all."""

    def __init__(self, ports: AzuritePorts, processes: dict[str, subprocess.Popen[bytes]]):
        self.ports = ports
        self.processes = processes

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process serving Table Storage (the only one, unless one runs per service)."""
        return self.processes.get("table") or next(iter(self.processes.values()))

    @property
    def connection_string(self) -> str:
        return self.ports.connection_string()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Terminate, and kill what has not exited after `grace_seconds`."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + grace_seconds
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_azurite(
    ports: AzuritePorts | None = None,
    *,
    data_dir: Path | None = None,
    ready_timeout: float = 30.0,
    per_service: bool = False,
) -> Azurite:
    """Start Azurite and wait until its three services accept connections.

    `data_dir=None` keeps everything in memory. `per_service` runs Blob, Queue and Table
    in a process each (`azurite-blob`, `azurite-queue`, `azurite-table`) instead of one:
    Azurite serves every request of a process on one Node.js event loop, so in one process
    a burst of table requests delays queue writes, which Azure's separate services never
    do. Raises RuntimeError when Azurite is not installed (run `npm ci`) or does not come
    up in time, or when one of the ports is already in use (refused before starting).
    """
    executable = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite")
    if executable is None:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
    ports = ports or AzuritePorts.free()
    # Another process on a port (a second stack's Azurite) would pass the readiness check
    # below while ours fails to bind and exits, and this stack would share its storage.
    for port in (ports.blob, ports.queue, ports.table):
        if _listening(port):
            raise RuntimeError(
                f"port {port} is in use by another process (another Azurite?), whose "
                "storage this stack would share: stop it first"
            )
    common = ["--silent", "--skipApiVersionCheck", "--disableProductStyleUrl"]
    if data_dir is None:
        common.append("--inMemoryPersistence")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        common += ["--location", str(data_dir)]
    listen = {
        service: [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(getattr(ports, service))]
        for service in SERVICES
    }
    commands: dict[str, list[str]] = {}
    if per_service:
        for service in SERVICES:
            service_executable = Path(executable).with_name(f"azurite-{service}")
            commands[service] = [str(service_executable), *common, *listen[service]]
    else:
        commands["azurite"] = [str(executable), *common, *(a for s in SERVICES for a in listen[s])]
    processes = {
        name: subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        for name, args in commands.items()
    }
    azurite = Azurite(ports, processes)
    deadline = time.monotonic() + ready_timeout
    pending = {ports.blob, ports.queue, ports.table}
    while pending:
        for name, process in processes.items():
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                azurite.stop(grace_seconds=1)
                raise RuntimeError(
                    f"Azurite ({name}) exited with code {process.returncode}: {stderr[-2000:]}"
                )
        if time.monotonic() > deadline:
            azurite.stop()
            raise RuntimeError(f"Azurite did not listen on ports {sorted(pending)} in time")
        for port in list(pending):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pending.discard(port)
            except OSError:
                pass
        if pending:
            time.sleep(0.1)
    logger.info(
        "Azurite ready on ports %s%s", ports, " (a process per service)" if per_service else ""
    )
    return azurite
