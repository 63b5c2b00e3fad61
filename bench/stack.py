"""Start and stop the local stack the benchmarks run against: Azurite in memory, the Graph
emulator and the local Functions host serving the real `function_app`, each in its own
process on free loopback ports.

The host runs as `python -m local.functions_host` (the repository's host.json, so queue
polling and concurrency are the shipped ones) with `local.run.app_environment(...)` plus a
fresh table prefix and timers that never fire on their own. Like `make run`, it runs as two
processes, as Flex Consumption runs the app: the HTTP triggers in one (`host`) and the
queue and timer triggers in another (`workers`, reached for the admin API only);
`single_host=True` runs all of them in `host`. Azurite runs Queue and Table Storage in
separate processes, as Azure's are separate services (`single_azurite=True`: one process).
Peak memory and CPU time of each are read from `/proc/<pid>/`.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from local.azurite import REPO_ROOT, Azurite, free_port, start_azurite
from local.run import (
    HTTP_TRIGGERS,
    LOCAL_TENANT_ID,
    WORKER_TRIGGERS,
    app_environment,
    host_command,
    wait_for,
)

logger = logging.getLogger(__name__)

# NCRONTAB for "midnight on 1 January": timers run only when a benchmark asks for them.
NEVER = "0 0 0 1 1 *"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Stack:
    """Where the running stack answers, and the processes behind it."""

    azurite: Azurite
    emulator: subprocess.Popen[bytes]
    # The host process serving HTTP (all triggers when `workers` is None).
    host: subprocess.Popen[bytes]
    host_port: int
    graph_port: int
    table_prefix: str
    # The host process running the queue and timer triggers, and its admin API's port.
    workers: subprocess.Popen[bytes] | None = None
    workers_port: int | None = None

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    @property
    def admin_url(self) -> str:
        """Where `POST /admin/functions/<name>` reaches the queue and timer functions."""
        port = self.workers_port if self.workers_port is not None else self.host_port
        return f"http://127.0.0.1:{port}"

    def hosts(self) -> dict[str, subprocess.Popen[bytes]]:
        """The host processes by role: `host` (HTTP) and, when split, `workers`."""
        if self.workers is None:
            return {"host": self.host}
        return {"host": self.host, "workers": self.workers}

    @property
    def api_url(self) -> str:
        return f"{self.host_url}/api"

    @property
    def graph_base(self) -> str:
        return f"http://127.0.0.1:{self.graph_port}"

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    @property
    def tenant_id(self) -> str:
        return LOCAL_TENANT_ID

    def host_peak_rss_bytes(self) -> dict[str, int | None]:
        """VmHWM (peak resident set) of each host process so far; None off Linux."""
        return {role: peak_rss_bytes(process.pid) for role, process in self.hosts().items()}

    def host_rss_bytes(self) -> int | None:
        """VmRSS (resident set now) of the HTTP host process; None off Linux."""
        return rss_bytes(self.host.pid)

    def exited(self) -> str:
        """Which processes of the stack have ended (e.g. killed from outside), or ""."""
        processes = {
            **self.hosts(),
            "emulator": self.emulator,
            **{f"Azurite ({name})": process for name, process in self.azurite.processes.items()},
        }
        ended = [
            f"{name} exited with code {process.returncode}"
            for name, process in processes.items()
            if process.poll() is not None
        ]
        return ", ".join(ended)

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU time (user + system) used so far by each process of the stack and by this
        one; None where /proc cannot tell."""
        return {
            **{role: cpu_seconds(process.pid) for role, process in self.hosts().items()},
            **{
                _azurite_role(name): cpu_seconds(process.pid)
                for name, process in self.azurite.processes.items()
                if name != "blob"  # the app uses no blobs
            },
            "emulator": cpu_seconds(self.emulator.pid),
            "bench": cpu_seconds(os.getpid()),
        }


def _azurite_role(name: str) -> str:
    return "azurite" if name == "azurite" else f"azurite-{name}"


def peak_rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            kilobytes = int(line.split()[1])
            return kilobytes * 1024
    return None


def rss_bytes(pid: int) -> int | None:
    """VmRSS (resident set now) of a process; None off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at field 3 (state).
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(args: list[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own modules, run by this interpreter
        args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


@contextmanager
def running_stack(
    log_dir: Path,
    *,
    host_log_level: str = "INFO",
    single_host: bool = False,
    single_azurite: bool = False,
    table_proxy: Callable[[int], int] | None = None,
) -> Iterator[Stack]:
    """Start Azurite, the emulator and the host processes; stop them all on exit.

    Azurite runs a process per storage service (see `start_azurite`), unless
    `single_azurite`.

    `table_proxy`, given Azurite's Table port, returns the port the hosts are to use for
    Table Storage instead (a counting pass-through, `bench.scale`).

    The emulator's and the hosts' output go to `log_dir/emulator.log`, `log_dir/host.log`
    and `log_dir/workers.log`. Raises RuntimeError when a part does not come up in time.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        azurite = start_azurite(per_service=not single_azurite)
        stack.callback(azurite.stop)
        graph_port, host_port = free_port(), free_port()
        env = dict(os.environ)

        emulator_log = stack.enter_context((log_dir / "emulator.log").open("wb"))
        emulator = _spawn(
            [
                sys.executable, "-m", "bench.emulator",
                "--host", "127.0.0.1", "--port", str(graph_port),
                "--tenant-id", LOCAL_TENANT_ID, "--log-level", "WARNING", "--allow-http",
            ],
            emulator_log,
            env,
        )  # fmt: skip
        stack.callback(_stop, emulator)
        wait_for(f"http://127.0.0.1:{graph_port}/_emulator/mailboxes", READY_TIMEOUT_S, emulator)

        table_prefix = "bench" + secrets.token_hex(4)
        connection_string = azurite.connection_string
        if table_proxy is not None:
            table_port = azurite.ports.table
            connection_string = connection_string.replace(
                f":{table_port}/", f":{table_proxy(table_port)}/"
            )
        host_env = {
            **env,
            **app_environment(connection_string, host_port, graph_port),
            "TABLE_NAME_PREFIX": table_prefix,
            "RECONCILE_SCHEDULE": NEVER,
            "SUBSCRIPTION_UPKEEP_SCHEDULE": NEVER,
        }
        layout = (
            [("host", host_port, None)]
            if single_host
            else [("host", host_port, HTTP_TRIGGERS), ("workers", free_port(), WORKER_TRIGGERS)]
        )
        processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        for role, port, triggers in layout:
            log = stack.enter_context((log_dir / f"{role}.log").open("wb"))
            command = [*host_command(port, triggers=triggers), "--log-level", host_log_level]
            process = _spawn(command, log, host_env)
            stack.callback(_stop, process)
            processes[role] = (process, port)
        for process, port in processes.values():
            wait_for(f"http://127.0.0.1:{port}/admin/host/status", READY_TIMEOUT_S, process)
        workers, workers_port = processes.get("workers", (None, None))
        logger.info(
            "stack up: host %d (%s), emulator %d, Azurite %s",
            host_port,
            "all triggers" if workers is None else f"HTTP; queue and timer on {workers_port}",
            graph_port,
            azurite.ports,
        )
        yield Stack(
            azurite=azurite,
            emulator=emulator,
            host=processes["host"][0],
            host_port=host_port,
            graph_port=graph_port,
            table_prefix=table_prefix,
            workers=workers,
            workers_port=workers_port,
        )
