"""`make run`: the whole service on this machine, without Azure.

Starts Azurite (data under .azurite/), the Graph emulator on 127.0.0.1:7072 and
function_app.py in the local Functions host, wired together through configuration only
(GRAPH_BASE_URL, GRAPH_AUTH_MODE=emulator, STORAGE_CONNECTION_STRING). The host plays
App Service Authentication with one local caller holding both app roles (--caller-roles),
so the API and the console work without Microsoft Entra. As on Flex
Consumption, where HTTP functions run on instances of their own, the host runs as two
processes: the HTTP triggers on 127.0.0.1:7071 and the queue and timer triggers on
127.0.0.1:7073 (its admin API only); `--single-host` runs everything in one process on
7071 instead. Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.azurite import REPO_ROOT, AzuritePorts, start_azurite
from shared.domain.callers import Role

logger = logging.getLogger("local.run")

LOCAL_TENANT_ID = "00000000-0000-0000-0000-00000000e1e1"
DEMO_MAILBOXES = ("alice@contoso.com", "bob@contoso.com", "room-1@contoso.com")
DEFAULT_AZURITE_PORTS = AzuritePorts(blob=10000, queue=10001, table=10002)
# Which triggers each host process runs: the HTTP functions apart from the queue and timer
# ones, as Flex Consumption scales them (see local/functions_host/__init__.py).
HTTP_TRIGGERS = "http"
WORKER_TRIGGERS = "queue,timer"
# The local caller's app roles: an administrator who is also a booking frontend, so that
# every route answers (see local/functions_host/easy_auth.py).
LOCAL_CALLER_ROLES = f"{Role.ADMIN},{Role.FRONTEND}"


def app_environment(connection_string: str, host_port: int, graph_port: int) -> dict[str, str]:
    """The app settings of the local stack (what local.settings.json holds for func)."""
    return {
        "AzureWebJobsStorage": connection_string,
        "STORAGE_CONNECTION_STRING": connection_string,
        "GRAPH_TENANT_ID": LOCAL_TENANT_ID,
        "GRAPH_AUTH_MODE": "emulator",
        "GRAPH_BASE_URL": f"http://127.0.0.1:{graph_port}/v1.0",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{host_port}",
        "RECONCILE_SCHEDULE": os.environ.get("RECONCILE_SCHEDULE", "0 */15 * * * *"),
        "SUBSCRIPTION_UPKEEP_SCHEDULE": os.environ.get(
            "SUBSCRIPTION_UPKEEP_SCHEDULE", "0 5 * * * *"
        ),
    }


def host_command(
    port: int, *, triggers: str | None = None, caller_roles: str | None = LOCAL_CALLER_ROLES
) -> list[str]:
    """`python -m local.functions_host` on 127.0.0.1:`port` serving this repository's app,
    running the `triggers` kinds only (all when None), with Easy Auth in front passing on
    a local caller holding `caller_roles` (None: no Easy Auth, callers send a principal)."""
    args = [sys.executable, "-m", "local.functions_host", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--script-root", str(REPO_ROOT)]
    if triggers is not None:
        args += ["--triggers", triggers]
    if caller_roles is not None:
        args += ["--local-caller", caller_roles]
    return args


def wait_for(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback URL we built
                if answer.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__)
    parser.add_argument("--host-port", type=int, default=7071)
    parser.add_argument("--graph-port", type=int, default=7072)
    parser.add_argument(
        "--workers-port",
        type=int,
        default=7073,
        help="admin API of the host process running the queue and timer triggers",
    )
    parser.add_argument(
        "--single-host",
        action="store_true",
        help="run HTTP, queue and timer triggers in one host process (as `func start` does)",
    )
    parser.add_argument("--mailbox", action="append", help="emulator mailbox (repeatable)")
    parser.add_argument(
        "--caller-roles",
        default=LOCAL_CALLER_ROLES,
        metavar="ROLES",
        help="app roles of the local caller that the host's Easy Auth passes on with every "
        f"request, comma-separated (default {LOCAL_CALLER_ROLES}; '' signs in without a "
        "role: every route but health and Graph's answers 403)",
    )
    parser.add_argument(
        "--no-local-caller",
        action="store_true",
        help="no Easy Auth in front: requests reach the app as sent, so each must carry an "
        "X-MS-CLIENT-PRINCIPAL header or be refused with 401, as in Azure without one",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".azurite")
    parser.add_argument(
        "--azurite-port",
        type=int,
        default=DEFAULT_AZURITE_PORTS.blob,
        metavar="PORT",
        help="Azurite's Blob port; Queue and Table take the two after it (default "
        f"{DEFAULT_AZURITE_PORTS.blob}, the ports Azure's tools expect), so a second stack "
        "can run beside the first",
    )
    args = parser.parse_args(argv)
    azurite_ports = AzuritePorts(
        blob=args.azurite_port, queue=args.azurite_port + 1, table=args.azurite_port + 2
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    azurite = start_azurite(azurite_ports, data_dir=args.data_dir)
    children: list[subprocess.Popen[bytes]] = []
    try:
        mailboxes = args.mailbox or list(DEMO_MAILBOXES)
        emulator_args = [sys.executable, "-m", "local.graph_emulator", "--host", "127.0.0.1"]
        emulator_args += ["--port", str(args.graph_port), "--tenant-id", LOCAL_TENANT_ID]
        emulator_args += ["--allow-http"]  # the local host serves the webhook on plain http
        for mailbox in mailboxes:
            emulator_args += ["--mailbox", mailbox]
        emulator = subprocess.Popen(emulator_args, cwd=REPO_ROOT)  # noqa: S603 - our own module
        children.append(emulator)
        wait_for(f"http://127.0.0.1:{args.graph_port}/_emulator/mailboxes", 30, emulator)

        env = {
            **os.environ,
            **app_environment(azurite.connection_string, args.host_port, args.graph_port),
        }
        hosts = (
            [(args.host_port, None)]
            if args.single_host
            else [(args.host_port, HTTP_TRIGGERS), (args.workers_port, WORKER_TRIGGERS)]
        )
        started = []
        for port, triggers in hosts:
            host = subprocess.Popen(  # noqa: S603 - our own module
                host_command(
                    port,
                    triggers=triggers,
                    caller_roles=None if args.no_local_caller else args.caller_roles,
                ),
                cwd=REPO_ROOT,
                env=env,
            )
            children.append(host)
            started.append((host, port))
        for host, port in started:
            wait_for(f"http://127.0.0.1:{port}/admin/host/status", 60, host)
        http_host = started[0][0]
        wait_for(f"http://127.0.0.1:{args.host_port}/api/health", 60, http_host)
        logger.info(
            "ready: API http://127.0.0.1:%d/api (console: /api/console), "
            "Graph emulator http://127.0.0.1:%d/v1.0 (mailboxes %s), Azurite ports %s%s",
            args.host_port,
            args.graph_port,
            ", ".join(mailboxes),
            azurite_ports,
            ""
            if args.single_host
            else f", queue and timer triggers in a second host (admin API on {args.workers_port})",
        )
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [child for child in children if child.poll() not in (None, 0)]
        return 1 if failed else 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        azurite.stop()
        logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
