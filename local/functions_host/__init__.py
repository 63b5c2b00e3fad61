"""A local Azure Functions host, for machines without Core Tools (`func start`).

It loads a Python v2-model FunctionApp (default `function_app:app`) and runs what it
registers the way `func start` would:

- HTTP triggers at http://127.0.0.1:7071/<routePrefix>/<route> (aiohttp, one event loop).
  Route templates, 404s (also for a route without the method, as the host answers),
  500s with the traceback logged; requests passed as the host passes them (http.py).
  As strict as Azure: at most `--http-concurrency` invocations at once (default:
  infra/'s perInstanceConcurrency), 502 after 230 s, and with `--keys` the
  function/master keys checked (http.py). With `--local-caller ROLES` it plays App
  Service Authentication in front: each request carries one local Entra caller's
  principal, and client-sent principal headers are dropped (easy_auth.py).
- Queue triggers polling Storage (Azurite) with host.json's queue settings: base64 or
  plain encoding, batchSize/newBatchThreshold concurrency, a renewed lease while a
  message is processed, retries after visibilityTimeout and `<queue>-poison` after
  maxDequeueCount (queues.py); connections as strings or identity-based settings
  (connections.py).
- Timer triggers on NCRONTAB schedules (6 fields, or 5; croniter) or TimeSpans,
  `%SETTING%` resolved, runOnStartup, a schedule monitor that runs missed occurrences
  past due, and overruns followed by the missed occurrence (timers.py).
- host.json's functionTimeout: a run past it restarts the worker, failing every
  invocation on it (invocation.py).
- Azure's timings (a crashed host's messages come back after 10 minutes) unless `--fast`,
  for tests only (config.FastMode).

Only trigger bindings run here; an app with output or input bindings is refused at
startup with a message naming the binding. SIGINT/SIGTERM stop it gracefully.

Command line (from the repository root):

    python -m local.functions_host [--host 127.0.0.1] [--port 7071]
        [--app function_app:app] [--script-root .] [--triggers http,queue,timer]
        [--http-concurrency N] [--keys] [--local-caller ROLES]
        [--fast [--processing-lease S]]

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
