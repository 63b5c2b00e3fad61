"""Start and stop everything a FunctionApp registers, in the current event loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import azure.functions as func

from local.functions_host.app_index import (
    ALL_METHODS,
    DEFAULT_CONNECTION,
    TRIGGER_KINDS,
    AppIndex,
    TriggerKind,
    index_app,
    trigger_kinds,
)
from local.functions_host.config import HOST_JSON, HostConfig, HostStartupError
from local.functions_host.connections import resolve_storage_connection
from local.functions_host.easy_auth import LocalCaller
from local.functions_host.http import AdminInvoke, HostKeys, HttpTriggerServer
from local.functions_host.invocation import Invoker, ThreadRunner
from local.functions_host.queues import QueueTriggerListener
from local.functions_host.schedule_monitor import ScheduleMonitor, TableScheduleMonitor
from local.functions_host.timers import TimerTriggerListener

logger = logging.getLogger(__name__)

DEFAULT_GRACE_PERIOD_SECONDS = 10.0


class RunningHost:
    """A started host. `url` is its base, e.g. http://127.0.0.1:7071 (routes add /api/...)."""

    def __init__(
        self,
        *,
        url: str,
        config: HostConfig,
        index: AppIndex,
        grace_period: float,
        http: HttpTriggerServer,
        queues: list[QueueTriggerListener],
        timers: list[TimerTriggerListener],
        invoker: Invoker,
        keys: HostKeys | None,
        monitor: ScheduleMonitor | None = None,
    ) -> None:
        self.url = url
        self.invoker = invoker
        # The keys requests need (None: keys are not checked).
        self.keys = keys
        self.config = config
        self.index = index
        self.grace_period = grace_period
        self._http = http
        self._queues = queues
        self._timers = timers
        self._monitor = monitor
        self._closed = False

    async def close(self) -> None:
        """Stop accepting requests and polling; let invocations in flight finish within
        the grace period, then cancel them. Queue messages are never deleted unless their
        function succeeded, so abandoned ones reappear after their lease. Idempotent."""
        if self._closed:
            return
        self._closed = True
        logger.info("Stopping the local Functions host (grace period %.1f s)", self.grace_period)
        await _stop_all(self._http, self._queues, self._timers, self.grace_period)
        if self._monitor is not None:
            await self._monitor.close()
        logger.info("Local Functions host stopped")

    async def __aenter__(self) -> RunningHost:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.close()


async def start_host(
    app: func.FunctionRegister,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    host_config: HostConfig | None = None,
    environ: Mapping[str, str] | None = None,
    script_root: Path | None = None,
    grace_period: float = DEFAULT_GRACE_PERIOD_SECONDS,
    triggers: Collection[TriggerKind] = TRIGGER_KINDS,
    keys: HostKeys | None = None,
    http_concurrency: int | None = None,
    response_log: Path | None = None,
    local_caller: LocalCaller | None = None,
) -> RunningHost:
    """Run the app's HTTP, queue and timer functions until `close()` on the result.

    `host_config` defaults to the script root's host.json (Azure's timings: a crashed
    host's queue messages come back after 10 minutes); `HostConfig.with_fast_mode()` is
    the only way to shorter ones. `environ` (default os.environ) supplies app settings:
    `%NAME%` references, queue connections. local.settings.json is not read here (the
    command line does it; see `load_local_settings`).

    `keys` turns on keys mode (see http.py); `http_concurrency` caps the HTTP
    invocations running at once, the rest waiting (None: no cap).

    `local_caller` plays App Service Authentication in front: every HTTP request carries
    that caller's principal, never one its client sent (see easy_auth.py).

    `response_log` (a folder, for tests) records every answer given for a function's
    route there (see http.py).

    `triggers` picks the kinds of trigger this host runs (all by default). Flex
    Consumption runs the HTTP functions on instances of their own, apart from the queue
    and timer functions, so two hosts, one with `("http",)` and one with
    `("queue", "timer")`, behave like that. Every function is still validated, so both
    refuse an app the other would refuse. The HTTP server always listens, for the admin
    endpoints.

    Raises HostStartupError if the app cannot run here (before anything starts) or the
    port is taken.
    """
    root = script_root or Path.cwd()
    if host_config is not None:
        config = host_config
    elif (root / HOST_JSON).exists():
        config = HostConfig.from_file(root / HOST_JSON)
    else:
        config = HostConfig()
    settings = os.environ if environ is None else environ
    try:
        chosen = trigger_kinds(triggers)
    except ValueError as exc:
        raise HostStartupError(str(exc)) from exc
    whole = index_app(app, config, settings)
    index = whole.only(chosen)
    elsewhere = [name for name in whole.names() if name not in index.names()]
    invoker = Invoker(
        threads=ThreadRunner(),
        function_directory=str(root),
        function_timeout=config.function_timeout,
    )
    queues = [
        QueueTriggerListener(q, invoker, config.queues, processing_lease=config.processing_lease)
        for q in index.queues
    ]
    monitor = _schedule_monitor(index, settings)
    timers = [TimerTriggerListener(t, invoker, monitor) for t in index.timers]
    admin: dict[str, AdminInvoke] = {}
    for queue_listener in queues:
        admin[queue_listener.function.function.name] = queue_listener.invoke_now
    for timer_listener in timers:
        admin[timer_listener.function.function.name] = timer_listener.invoke_now
    http = HttpTriggerServer(
        index.http,
        invoker,
        admin_invokers=admin,
        not_here=elsewhere,
        keys=keys,
        concurrency=http_concurrency,
        response_limit=config.http_response_limit,
        response_log=response_log,
        local_caller=local_caller,
    )

    started_queues: list[QueueTriggerListener] = []
    started_timers: list[TimerTriggerListener] = []
    try:
        for queue in queues:
            await queue.start()
            started_queues.append(queue)
        for timer in timers:
            await timer.start()
            started_timers.append(timer)
        url = await http.start(host, port, grace_period=grace_period)
    except BaseException:
        await _stop_all(http, started_queues, started_timers, grace_period=0)
        if monitor is not None:
            await monitor.close()
        raise
    _log_functions(index, url, chosen, elsewhere)
    return RunningHost(
        url=url,
        config=config,
        index=index,
        grace_period=grace_period,
        http=http,
        queues=started_queues,
        timers=started_timers,
        invoker=invoker,
        keys=keys,
        monitor=monitor,
    )


def _schedule_monitor(index: AppIndex, settings: Mapping[str, str]) -> ScheduleMonitor | None:
    """The timers' schedule monitor, in AzureWebJobsStorage; None when no timer uses it
    or that storage is not set (the timers then run without one, with a warning)."""
    if not any(timer.use_monitor for timer in index.timers):
        return None
    try:
        connection = resolve_storage_connection(
            DEFAULT_CONNECTION, settings, what="The schedule monitor"
        )
        return TableScheduleMonitor.for_settings(settings, connection)
    except HostStartupError as error:
        logger.warning(
            "Timers run without the schedule monitor, so a missed run is not made up at start: %s",
            error,
        )
        return None


async def _stop_all(
    http: HttpTriggerServer,
    queues: list[QueueTriggerListener],
    timers: list[TimerTriggerListener],
    grace_period: float,
) -> None:
    # One after another would add the grace periods up; all stop at once instead.
    results = await asyncio.gather(
        http.stop(grace_period),
        *(q.stop(grace_period) for q in queues),
        *(t.stop(grace_period) for t in timers),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            logger.error("Stopping a trigger failed", exc_info=result)


def _log_functions(
    index: AppIndex, url: str, triggers: tuple[TriggerKind, ...], elsewhere: list[str]
) -> None:
    lines = []
    for h in index.http:
        methods = "all methods" if set(h.methods) == set(ALL_METHODS) else ",".join(h.methods)
        lines.append(f"  {h.function.name}: [{methods}] {url}{h.route.path_template}")
    lines.extend(f"  {q.function.name}: queueTrigger ({q.queue_name})" for q in index.queues)
    lines.extend(f"  {t.function.name}: timerTrigger ({t.schedule_text})" for t in index.timers)
    if elsewhere:
        lines.append(
            f"Not run by this host (it runs {', '.join(triggers)} triggers only): "
            + ", ".join(elsewhere)
        )
    logger.info("Local Functions host listening on %s\nFunctions:\n%s", url, "\n".join(lines))
