"""`python -m local.functions_host`: run function_app.py like `func start` would.

Exits 0 after a clean stop (SIGINT/SIGTERM), 1 when the app cannot start here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import azure.functions as func

from local.functions_host.app_index import TRIGGER_KINDS, TriggerKind, trigger_kinds
from local.functions_host.config import (
    HOST_JSON,
    FastMode,
    HostConfig,
    HostStartupError,
    default_http_concurrency,
    load_local_settings,
)
from local.functions_host.easy_auth import LocalCaller
from local.functions_host.host import DEFAULT_GRACE_PERIOD_SECONDS, start_host
from local.functions_host.http import HostKeys

# Keys mode reads its keys from these variables, or makes random ones and logs them.
MASTER_KEY_VARIABLE = "LOCAL_HOST_MASTER_KEY"
FUNCTION_KEY_VARIABLE = "LOCAL_HOST_FUNCTION_KEY"

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
        "--fast",
        action="store_true",
        help="timings shorter than Azure's, for tests: a crashed host's queue messages come "
        "back after --processing-lease instead of 10 minutes, idle queues are polled at "
        "least every 0.2 s and failed messages retried at once (default: host.json's "
        "timings, as in Azure)",
    )
    parser.add_argument(
        "--processing-lease",
        type=float,
        default=None,
        help="with --fast: seconds a queue message stays invisible while processed, "
        f"renewed half-way (default {FastMode().processing_lease:g}; Azure's is 600)",
    )
    parser.add_argument(
        "--keys",
        action="store_true",
        help="keys mode: function-level routes need the function or master key, the admin "
        f"API the master key (x-functions-key or ?code=); keys from {MASTER_KEY_VARIABLE} "
        f"and {FUNCTION_KEY_VARIABLE}, else random ones, logged at start",
    )
    parser.add_argument(
        "--local-caller",
        type=LocalCaller.parse,
        default=None,
        metavar="ROLES",
        help="play App Service Authentication in front: every HTTP request carries the "
        "principal (X-MS-CLIENT-PRINCIPAL) of a signed-in Entra caller holding these app "
        "roles, comma-separated, and any such header a client sent is dropped (default: "
        "headers pass as sent, as without Easy Auth)",
    )
    parser.add_argument(
        "--http-concurrency",
        type=int,
        default=None,
        metavar="N",
        help="HTTP invocations at once, more requests wait (default: "
        "triggers.http.perInstanceConcurrency in the script root's infra/; Flex "
        "Consumption's own default for Python is 1)",
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
        "--response-log",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="for tests, not in Azure: append every answer given for a function's route "
        "to a JSON-lines file of this process in FOLDER",
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
        grace_period=args.grace_period,
        triggers=args.triggers,
        keys=keys_for(args),
        http_concurrency=args.http_concurrency,
        response_log=args.response_log,
        local_caller=args.local_caller,
    )
    try:
        await stop.wait()
    finally:
        await running.close()


def keys_for(args: argparse.Namespace) -> HostKeys | None:
    """The keys of keys mode, or None without --keys."""
    if not args.keys:
        return None
    master = os.environ.get(MASTER_KEY_VARIABLE)
    function = os.environ.get(FUNCTION_KEY_VARIABLE)
    generated = HostKeys.generate()
    keys = HostKeys(master=master or generated.master, function=function or generated.function)
    if not (master and function):
        logger.info("Keys mode: master key %s, function key %s", keys.master, keys.function)
    return keys


def host_config_for(args: argparse.Namespace) -> HostConfig:
    """host.json's configuration, with the fast mode's timings when asked for."""
    config = HostConfig.from_file(args.script_root / HOST_JSON)
    if args.processing_lease is not None and not args.fast:
        raise HostStartupError("--processing-lease shortens Azure's timings: it needs --fast")
    if not args.fast:
        return config
    fast = FastMode()
    if args.processing_lease is not None:
        fast = FastMode(processing_lease=args.processing_lease)
    logger.warning("Fast mode: queue timings shorter than Azure's (%s)", fast)
    return config.with_fast_mode(fast)


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
        config = host_config_for(args)
        if args.http_concurrency is None:
            args.http_concurrency = default_http_concurrency(args.script_root)
        elif args.http_concurrency < 1:
            raise HostStartupError("--http-concurrency must be at least 1")
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
