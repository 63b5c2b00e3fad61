"""`python -m local.functions_host`: run function_app.py like `func start` would.

Exits 0 after a clean stop (SIGINT/SIGTERM), 1 when the app cannot start here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import azure.functions as func

from local.functions_host.app_index import TRIGGER_KINDS, TriggerKind, trigger_kinds
from local.functions_host.config import (
    HOST_JSON,
    HostConfig,
    HostStartupError,
    load_local_settings,
)
from local.functions_host.host import DEFAULT_GRACE_PERIOD_SECONDS, start_host
from local.functions_host.queues import DEFAULT_PROCESSING_LEASE_SECONDS

logger = logging.getLogger("local.functions_host")

# Libraries whose INFO logs drown the host's own (every HTTP call to Storage, say).
_QUIET_LOGGERS = ("azure", "aiohttp.access", "urllib3")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.functions_host",
        description="Run an Azure Functions (Python v2) app locally, like `func start`.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7071, help="port to listen on (0: any)")
    parser.add_argument(
        "--app", default="function_app:app", help="the FunctionApp, as module:attribute"
    )
    parser.add_argument(
        "--script-root",
        type=Path,
        default=Path.cwd(),
        help="folder with host.json and local.settings.json (default: current directory)",
    )
    parser.add_argument(
        "--processing-lease",
        type=float,
        default=DEFAULT_PROCESSING_LEASE_SECONDS,
        help="seconds a queue message stays invisible while processed, renewed half-way "
        "(the host's is 600)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=DEFAULT_GRACE_PERIOD_SECONDS,
        help="seconds invocations in flight get to finish on SIGINT/SIGTERM",
    )
    parser.add_argument(
        "--triggers",
        type=_trigger_kinds,
        default=TRIGGER_KINDS,
        metavar="KINDS",
        help="the kinds of trigger to run, comma-separated, of "
        f"{','.join(TRIGGER_KINDS)} (default: all). Flex Consumption runs HTTP functions on "
        "instances apart from queue and timer functions; `--triggers http` and "
        "`--triggers queue,timer` on two ports do the same here",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the host's and the app's log level",
    )
    return parser.parse_args(argv)


def _trigger_kinds(text: str) -> tuple[TriggerKind, ...]:
    try:
        return trigger_kinds({part.strip().lower() for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected some of {','.join(TRIGGER_KINDS)}, comma-separated; got {text!r}"
        ) from exc


def load_app(reference: str, script_root: Path) -> func.FunctionRegister:
    """Import `module:attribute` with the script root importable. Raises HostStartupError."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise HostStartupError(f"--app must look like module:attribute, got {reference!r}")
    root = str(script_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise HostStartupError(f"cannot import {module_name!r}: {error}") from error
    app = getattr(module, attribute, None)
    # FunctionRegister covers FunctionApp and the Asgi/WsgiFunctionApp wrappers.
    if not isinstance(app, func.FunctionRegister):
        raise HostStartupError(f"{reference} is not an azure.functions.FunctionApp")
    return app


async def serve(args: argparse.Namespace, app: func.FunctionRegister, config: HostConfig) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    running = await start_host(
        app,
        host=args.host,
        port=args.port,
        host_config=config,
        script_root=args.script_root,
        processing_lease=args.processing_lease,
        grace_period=args.grace_period,
        triggers=args.triggers,
    )
    try:
        await stop.wait()
    finally:
        await running.close()


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    logger.info("Received %s", signal.Signals(signum).name)
    stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    args.script_root = args.script_root.resolve()
    try:
        load_local_settings(args.script_root)
        config = HostConfig.from_file(args.script_root / HOST_JSON)
        app = load_app(args.app, args.script_root)
        # This process is the host, so it owns the event loop the app's code runs on.
        asyncio.run(serve(args, app, config))  # noqa: TID251
    except HostStartupError as error:
        # The message says it all; a traceback would bury it.
        logger.error("The local Functions host cannot start: %s", error)
        return 1
    except KeyboardInterrupt:
        # Ctrl+C before the host installed its own handler (while importing the app).
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
