"""Start Azurite (the Azure Storage emulator, pinned in package.json) as a child process.

Used by the run command (persistent data under `.azurite/`) and by the test suite
(in memory, free loopback ports).
"""

from __future__ import annotations

import logging
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


class Azurite:
    """A running Azurite process; `stop()` ends it."""

    def __init__(self, ports: AzuritePorts, process: subprocess.Popen[bytes]) -> None:
        self.ports = ports
        self.process = process

    @property
    def connection_string(self) -> str:
        return self.ports.connection_string()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Terminate, and kill if it has not exited after `grace_seconds`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_azurite(
    ports: AzuritePorts | None = None,
    *,
    data_dir: Path | None = None,
    ready_timeout: float = 30.0,
) -> Azurite:
    """Start Azurite and wait until its three services accept connections.

    `data_dir=None` keeps everything in memory. Raises RuntimeError when Azurite is not
    installed (run `npm ci`) or does not come up in time.
    """
    executable = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite")
    if executable is None:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
    ports = ports or AzuritePorts.free()
    args = [
        str(executable),
        "--silent",
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
        "--blobHost", "127.0.0.1", "--blobPort", str(ports.blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(ports.queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(ports.table),
    ]  # fmt: skip
    if data_dir is None:
        args.append("--inMemoryPersistence")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(data_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    azurite = Azurite(ports, process)
    deadline = time.monotonic() + ready_timeout
    pending = {ports.blob, ports.queue, ports.table}
    while pending:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"Azurite exited with code {process.returncode}: {stderr[-2000:]}")
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
    logger.info("Azurite ready on ports %s", ports)
    return azurite
