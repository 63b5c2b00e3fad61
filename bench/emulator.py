"""`python -m bench.emulator`: the Graph emulator (same options as `python -m local.graph_emulator`)
that also counts top-level HTTP requests.

The emulator's own `GET /_emulator/stats` counts Graph operations: a `$batch` counts once
for itself and once per inner request, with nothing telling the two apart. "Graph HTTP
requests per booking" needs the requests that went over the wire, so this wrapper adds a
middleware counting requests under `/v1.0` and serves them at `GET /_bench/http`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from local.graph_emulator.__main__ import build_parser, config_from
from local.graph_emulator.app import GRAPH_PREFIX, create_app
from local.graph_emulator.config import EmulatorConfig
from local.graph_emulator.emulator import GraphEmulator

logger = logging.getLogger("bench.emulator")

HTTP_COUNTS_PATH = "/_bench/http"
_COUNTS = web.AppKey("bench_http_counts", Counter[str])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _kind(request: web.Request) -> str:
    """`batch` for `POST /v1.0/$batch`, else `single`."""
    tail = request.path[len(GRAPH_PREFIX) :].strip("/")
    return "batch" if tail == "$batch" else "single"


@web.middleware
async def count_http(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(GRAPH_PREFIX + "/"):
        request.app[_COUNTS][_kind(request)] += 1
    return await handler(request)


async def http_counts(request: web.Request) -> web.Response:
    counts = request.app[_COUNTS]
    return web.json_response({"total": sum(counts.values()), **counts})


def build_app(config: EmulatorConfig) -> web.Application:
    app = create_app(GraphEmulator(config))
    app[_COUNTS] = Counter()
    app.middlewares.append(count_http)
    app.router.add_get(HTTP_COUNTS_PATH, http_counts)
    return app


async def serve(host: str, port: int, config: EmulatorConfig) -> None:
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info("Graph emulator (counting HTTP requests) on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A CLI process of its own, so it owns its event loop.
    asyncio.run(serve(args.host, args.port, config_from(args)))  # noqa: TID251
    return 0


if __name__ == "__main__":
    sys.exit(main())
