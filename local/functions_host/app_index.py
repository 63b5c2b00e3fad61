"""Read a FunctionApp into what the local host runs: HTTP routes, queue and timer listeners.

All validation happens here, before anything starts: a binding the local host does not
support, a parameter the worker could not fill, an app setting that is not set, or a bad
schedule or route is a HostStartupError naming the function.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

import azure.functions as func

from local.functions_host.config import HostConfig, HostStartupError, resolve_setting_references
from local.functions_host.connections import StorageConnection, resolve_storage_connection
from local.functions_host.routes import RouteTemplate, RouteTemplateError
from local.functions_host.schedules import Schedule, ScheduleError, parse_schedule

logger = logging.getLogger(__name__)

DEFAULT_CONNECTION = "AzureWebJobsStorage"
# The Python worker fills a parameter with this name with the invocation context.
CONTEXT_PARAMETER = "context"
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")

# The kinds of trigger the local host runs; one host process may run a subset of them.
TriggerKind = Literal["http", "queue", "timer"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = ("http", "queue", "timer")


def trigger_kinds(names: Collection[str]) -> tuple[TriggerKind, ...]:
    """`names` as trigger kinds, in TRIGGER_KINDS order. Raises ValueError when one is
    unknown or there are none."""
    unknown = sorted(set(names) - set(TRIGGER_KINDS))
    if unknown or not names:
        raise ValueError(
            f"triggers must be some of {', '.join(TRIGGER_KINDS)}; got {sorted(names)}"
        )
    return tuple(kind for kind in TRIGGER_KINDS if kind in names)


@dataclass(frozen=True)
class IndexedFunction:
    """A user function and how to call it."""

    name: str
    user_function: Callable[..., Any]
    trigger_arg: str
    wants_context: bool
    # HTTP functions return their response through the `$return` binding; other
    # functions have no output binding, so returning a value is an error (as in the worker).
    returns_output: bool

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


@dataclass(frozen=True)
class HttpFunction:
    function: IndexedFunction
    route: RouteTemplate
    methods: tuple[str, ...]
    auth_level: str


@dataclass(frozen=True)
class QueueFunction:
    function: IndexedFunction
    queue_name: str
    connection_setting: str
    connection: StorageConnection


@dataclass(frozen=True)
class TimerFunction:
    function: IndexedFunction
    schedule: Schedule
    schedule_text: str
    run_on_startup: bool
    # The schedule monitor keeps its status in storage (see timers.py).
    use_monitor: bool


@dataclass(frozen=True)
class AppIndex:
    http: tuple[HttpFunction, ...]
    queues: tuple[QueueFunction, ...]
    timers: tuple[TimerFunction, ...]

    def only(self, triggers: Collection[TriggerKind]) -> AppIndex:
        """The functions whose trigger kind is one of `triggers`."""
        return AppIndex(
            http=self.http if "http" in triggers else (),
            queues=self.queues if "queue" in triggers else (),
            timers=self.timers if "timer" in triggers else (),
        )

    def names(self) -> list[str]:
        groups: tuple[tuple[HttpFunction | QueueFunction | TimerFunction, ...], ...] = (
            self.http,
            self.queues,
            self.timers,
        )
        return [f.function.name for group in groups for f in group]


def index_app(
    app: func.FunctionRegister, config: HostConfig, environ: Mapping[str, str]
) -> AppIndex:
    """Every function the host should run, validated. Raises HostStartupError."""
    functions = _list_functions(app)
    names = {_function_name(fn) for fn in functions}
    if config.functions is not None:
        for unknown in sorted(set(config.functions) - names):
            logger.warning("host.json functions lists '%s', which the app does not define", unknown)

    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    timers: list[TimerFunction] = []
    for fn in functions:
        name = _function_name(fn)
        if config.functions is not None and name not in config.functions:
            continue
        if _is_disabled(name, environ):
            logger.info(
                "Function '%s' is disabled by app setting AzureWebJobs.%s.Disabled", name, name
            )
            continue
        trigger = fn.get_trigger()
        if trigger is None:
            raise HostStartupError(f"Function '{name}' has no trigger")
        spec = _plain(trigger.get_dict_repr())
        trigger_type = spec.get("type")
        _check_bindings(fn, name, trigger_type)
        if trigger_type == "httpTrigger":
            http.append(_http_function(fn, name, spec, config))
        elif trigger_type == "queueTrigger":
            queues.append(_queue_function(fn, name, spec, environ))
        elif trigger_type == "timerTrigger":
            timers.append(_timer_function(fn, name, spec, environ))
        else:
            raise HostStartupError(
                f"Function '{name}': trigger type '{trigger_type}' is not supported by the local "
                "Functions host (it runs httpTrigger, queueTrigger and timerTrigger); use "
                "`func start` for it"
            )
    return AppIndex(http=tuple(http), queues=tuple(queues), timers=tuple(timers))


def _list_functions(app: func.FunctionRegister) -> list[func.Function]:
    # get_functions() records the names it has seen on the app and rejects them on a
    # second call; the real worker indexes once per process, while the local host may be
    # started several times in one process (tests), so start each listing afresh.
    app.functions_bindings = None
    try:
        return list(app.get_functions())
    except ValueError as error:
        raise HostStartupError(f"The function app is invalid: {error}") from error


def _function_name(fn: func.Function) -> str:
    return fn.get_function_name() or fn.get_user_function().__name__


def _is_disabled(name: str, environ: Mapping[str, str]) -> bool:
    value = environ.get(f"AzureWebJobs.{name}.Disabled", "")
    return value.strip().lower() in ("true", "1")


def _check_bindings(fn: func.Function, name: str, trigger_type: object) -> None:
    for binding in fn.get_bindings():
        spec = _plain(binding.get_dict_repr())
        if spec.get("type") == trigger_type and spec.get("direction") == "IN":
            continue
        if trigger_type == "httpTrigger" and spec.get("type") == "http":
            continue  # the `$return` HTTP response
        raise HostStartupError(
            f"Function '{name}': binding '{spec.get('name')}' of type '{spec.get('type')}' is "
            "not supported by the local Functions host, which runs trigger bindings only; do "
            "the I/O through SDK clients, or use `func start`"
        )


def _indexed(
    fn: func.Function, name: str, trigger_arg: str, returns_output: bool
) -> IndexedFunction:
    user_function = fn.get_user_function()
    parameters = inspect.signature(user_function).parameters
    if trigger_arg not in parameters:
        raise HostStartupError(
            f"Function '{name}': the trigger binds parameter '{trigger_arg}', which the Python "
            "function does not declare"
        )
    unbound = [p for p in parameters if p not in (trigger_arg, CONTEXT_PARAMETER)]
    if unbound:
        raise HostStartupError(f"Function '{name}': parameters {unbound} are bound to no binding")
    return IndexedFunction(
        name=name,
        user_function=user_function,
        trigger_arg=trigger_arg,
        wants_context=CONTEXT_PARAMETER in parameters and trigger_arg != CONTEXT_PARAMETER,
        returns_output=returns_output,
    )


def _http_function(
    fn: func.Function, name: str, spec: Mapping[str, Any], config: HostConfig
) -> HttpFunction:
    template = spec.get("route") or name
    try:
        route = RouteTemplate(template, prefix=config.route_prefix)
    except RouteTemplateError as error:
        raise HostStartupError(f"Function '{name}': {error}") from error
    methods = tuple(str(m).upper() for m in spec.get("methods") or ()) or ALL_METHODS
    return HttpFunction(
        function=_indexed(fn, name, str(spec["name"]), returns_output=True),
        route=route,
        methods=methods,
        auth_level=str(spec.get("authLevel") or "function"),
    )


def _queue_function(
    fn: func.Function, name: str, spec: Mapping[str, Any], environ: Mapping[str, str]
) -> QueueFunction:
    queue_name = resolve_setting_references(
        str(spec.get("queueName") or ""), environ, f"Function '{name}' queueName"
    ).lower()
    if not queue_name:
        raise HostStartupError(f"Function '{name}': the queue trigger has no queueName")
    setting = str(spec.get("connection") or DEFAULT_CONNECTION)
    return QueueFunction(
        function=_indexed(fn, name, str(spec["name"]), returns_output=False),
        queue_name=queue_name,
        connection_setting=setting,
        connection=resolve_storage_connection(setting, environ, what=f"Function '{name}'"),
    )


def _timer_function(
    fn: func.Function, name: str, spec: Mapping[str, Any], environ: Mapping[str, str]
) -> TimerFunction:
    raw = str(spec.get("schedule") or "")
    text = resolve_setting_references(raw, environ, f"Function '{name}' schedule")
    try:
        schedule = parse_schedule(text, environ)
    except ScheduleError as error:
        raise HostStartupError(f"Function '{name}': {error}") from error
    use_monitor = spec.get("useMonitor")
    return TimerFunction(
        function=_indexed(fn, name, str(spec["name"]), returns_output=False),
        schedule=schedule,
        schedule_text=text,
        run_on_startup=bool(spec.get("runOnStartup")),
        # TimerTriggerAttribute.UseMonitor: on unless set, but the extension turns it off
        # for schedules more frequent than once a minute.
        use_monitor=bool(use_monitor) if use_monitor is not None else _minute_or_more(schedule),
    )


def _minute_or_more(schedule: Schedule) -> bool:
    first = schedule.next_after(datetime.now(UTC))
    return (schedule.next_after(first) - first).total_seconds() >= 60


def _plain(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The binding dict with enums (HttpMethod, AuthLevel, direction) turned into names."""
    plain: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, list):
            plain[key] = [_enum_text(item) for item in value]
        else:
            plain[key] = _enum_text(value)
    return plain


def _enum_text(value: object) -> object:
    if isinstance(value, Enum):
        # HttpMethod.GET / AuthLevel.ANONYMOUS carry text; BindingDirection.IN carries 0.
        return value.value if isinstance(value.value, str) else value.name
    return value
