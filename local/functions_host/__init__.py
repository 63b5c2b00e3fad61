"""A local Azure Functions host, for machines without Core Tools (`func start`).

It loads a Python v2-model FunctionApp (default `function_app:app`) and runs what it
registers the way `func start` would:

- HTTP triggers at http://127.0.0.1:7071/<routePrefix>/<route> (aiohttp, one event loop,
  requests served concurrently). Route templates, methods (405 otherwise), 404s, and
  500s with the traceback logged. **Keys are not enforced**: `authLevel` is ignored,
  as `func start` ignores it locally too, so never expose this host beyond localhost.
- Queue triggers polling Storage (Azurite) with host.json's queue settings: base64 or
  plain encoding, batchSize/newBatchThreshold concurrency, a renewed lease while a
  message is processed, retries after visibilityTimeout and `<queue>-poison` after
  maxDequeueCount.
- Timer triggers on NCRONTAB schedules (6 fields, or 5; croniter) or TimeSpans,
  `%SETTING%` resolved, and runOnStartup honoured.

Only trigger bindings run here; an app with output or input bindings is refused at
startup with a message naming the binding. SIGINT/SIGTERM stop it gracefully.

Command line (from the repository root):

    python -m local.functions_host [--host 127.0.0.1] [--port 7071]
        [--app function_app:app] [--script-root .] [--triggers http,queue,timer]

`--triggers` runs a subset of the trigger kinds in this process. On Flex Consumption
the HTTP functions scale together on instances of their own and each queue or timer
function on its own instances, so a webhook never waits behind queue work on one event
loop; `make run` and `make bench` mirror that with two processes, `--triggers http` on
port 7071 and `--triggers queue,timer` on another (whose HTTP server only answers the
admin endpoints). Without the option one process runs everything, as `func start` does.

In-process (tests): `host = await start_host(app, port=0, host_config=...)`, then
`host.url` and `await host.close()`; `triggers=("http",)` and the like as on the command
line.
"""

from local.functions_host.config import (
    FastMode,
    HostConfig,
    HostStartupError,
    QueuesOptions,
    load_host_config,
    load_local_settings,
)
from local.functions_host.host import RunningHost, start_host
from local.functions_host.http import HostKeys

__all__ = [
    "FastMode",
    "HostConfig",
    "HostKeys",
    "HostStartupError",
    "QueuesOptions",
    "RunningHost",
    "load_host_config",
    "load_local_settings",
    "start_host",
]
