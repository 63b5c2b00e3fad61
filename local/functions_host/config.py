"""host.json and app-setting resolution for the local Functions host.

Only the host.json keys the local host acts on are read; everything else (logging,
extension bundles, ...) is ignored, as it has no meaning outside the real host. Keys are
matched case-insensitively, like the host's configuration system does.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

HOST_JSON = "host.json"
LOCAL_SETTINGS_JSON = "local.settings.json"

# The queue extension's bounds and defaults (QueuesOptions in
# Microsoft.Azure.WebJobs.Extensions.Storage.Queues 5.x).
MAX_BATCH_SIZE = 32
MIN_POLLING_INTERVAL_SECONDS = 0.1
DEFAULT_MAX_POLLING_INTERVAL_SECONDS = 60.0

MessageEncoding = Literal["base64", "none"]

# How long the queue extension keeps a message it is processing invisible (renewed
# half-way): QueueListener's 10-minute visibility for messages in flight. A host that
# dies mid-run leaves its messages invisible that long.
HOST_PROCESSING_LEASE_SECONDS = 600.0
# functionTimeout when host.json sets none: Flex Consumption's default, 30 minutes
# (https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout).
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 1800.0
# The longest an HTTP-triggered function may take to answer: Azure Load Balancer's idle
# timeout, whatever functionTimeout says; the caller then gets a 502 while the function
# runs on (https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout).
HTTP_RESPONSE_LIMIT_SECONDS = 230.0


# HTTP invocations per instance on Flex Consumption for Python when the app sets none
# (https://learn.microsoft.com/azure/azure-functions/functions-concurrency, "HTTP trigger
# concurrency"). One slot: a request that waits for another (Graph's validation POST
# during a subscribe) waits unless the platform adds an instance.
FLEX_PYTHON_HTTP_CONCURRENCY = 1
# What infra/ sets as triggers.http.perInstanceConcurrency (httpPerInstanceConcurrency),
# for when the Bicep files set none; a test keeps the two equal.
APP_HTTP_CONCURRENCY = 16
INFRA_DIR = "infra"


class HostStartupError(Exception):
    """The host cannot start: bad host.json, a missing app setting, an unsupported binding."""


@dataclass(frozen=True)
class QueuesOptions:
    """`extensions.queues` of host.json, with the queue extension's defaults."""

    max_polling_interval: float = DEFAULT_MAX_POLLING_INTERVAL_SECONDS
    visibility_timeout: float = 0.0
    batch_size: int = 16
    # None: the extension's default, batch_size / 2 * processor count.
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    message_encoding: MessageEncoding = "base64"

    @property
    def effective_new_batch_threshold(self) -> int:
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return self.batch_size // 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class FastMode:
    """Timings shorter than Azure's, for tests that cannot wait for Azure's own.

    Only in this explicit mode may a host run faster than Azure: a crashed host's messages
    come back after `processing_lease` instead of 10 minutes, an idle queue is polled at
    least every `max_polling_interval` and a failed message is retried after at most
    `visibility_timeout`. `http_response_limit` replaces the 230 s answer limit (to test
    it). Everything else (batch sizes, dequeue counts, functionTimeout) stays host.json's.
    """

    processing_lease: float = 3.0
    max_polling_interval: float = 0.2
    visibility_timeout: float = 0.0
    http_response_limit: float = HTTP_RESPONSE_LIMIT_SECONDS


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the local host honours."""

    route_prefix: str = "api"
    queues: QueuesOptions = field(default_factory=QueuesOptions)
    # host.json `functions`: the functions to run; None runs all of them.
    functions: tuple[str, ...] | None = None
    # host.json `functionTimeout` in seconds; None: unbounded ("-1", allowed on Flex).
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT_SECONDS
    # Set by `with_fast_mode` only.
    fast: FastMode | None = None

    @property
    def processing_lease(self) -> float:
        return self.fast.processing_lease if self.fast else HOST_PROCESSING_LEASE_SECONDS

    @property
    def http_response_limit(self) -> float:
        return self.fast.http_response_limit if self.fast else HTTP_RESPONSE_LIMIT_SECONDS

    def with_fast_mode(self, fast: FastMode | None = None) -> HostConfig:
        """This configuration with `fast`'s shorter timings (see FastMode)."""
        fast = fast or FastMode()
        queues = replace(
            self.queues,
            max_polling_interval=min(self.queues.max_polling_interval, fast.max_polling_interval),
            visibility_timeout=min(self.queues.visibility_timeout, fast.visibility_timeout),
        )
        return replace(self, queues=queues, fast=fast)

    @classmethod
    def from_file(cls, path: Path | str) -> HostConfig:
        """Read a host.json file. Raises HostStartupError if it is missing or invalid."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise HostStartupError(f"{path} not found: the script root needs a host.json") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise HostStartupError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(document, source=str(path))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, source: str = "host.json") -> HostConfig:
        """Build from a parsed host.json document. Raises HostStartupError on bad values."""
        if not isinstance(document, Mapping):
            raise HostStartupError(f"{source}: expected a JSON object")
        version = _get(document, "version")
        if version is not None and str(version) != "2.0":
            logger.warning("%s: version %r; the local host reads the 2.0 schema", source, version)
        extensions = _section(document, "extensions", source)
        http = _section(extensions, "http", f"{source}: extensions")
        queues = _section(extensions, "queues", f"{source}: extensions")

        route_prefix = _get(http, "routePrefix", "api")
        if not isinstance(route_prefix, str):
            raise HostStartupError(f"{source}: extensions.http.routePrefix must be a string")

        functions = _get(document, "functions")
        if functions is not None and (
            not isinstance(functions, list) or not all(isinstance(f, str) for f in functions)
        ):
            raise HostStartupError(f"{source}: functions must be a list of function names")

        return cls(
            route_prefix=route_prefix.strip("/"),
            queues=_queues_options(queues, f"{source}: extensions.queues"),
            # An empty list means "all functions" for the real host too.
            functions=tuple(functions) if functions else None,
            function_timeout=_function_timeout(_get(document, "functionTimeout"), source),
        )


def load_host_config(source: Path | str | Mapping[str, Any] | None) -> HostConfig:
    """HostConfig from a host.json path, a parsed document, or None for the defaults."""
    if source is None:
        return HostConfig()
    if isinstance(source, Mapping):
        return HostConfig.from_dict(source)
    return HostConfig.from_file(source)


def _function_timeout(value: object, source: str) -> float | None:
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT_SECONDS
    if isinstance(value, str) and value.strip() == "-1":
        return None  # unbounded, which Flex Consumption and Premium allow
    seconds = parse_timespan(value, f"{source}: functionTimeout")
    if seconds <= 0:
        raise HostStartupError(f"{source}: functionTimeout must be positive, or '-1'")
    return seconds


def _queues_options(section: Mapping[str, Any], where: str) -> QueuesOptions:
    defaults = QueuesOptions()
    max_polling = _get(section, "maxPollingInterval")
    if max_polling is None:
        max_polling_interval = defaults.max_polling_interval
    elif isinstance(max_polling, int | float) and not isinstance(max_polling, bool):
        # The extension still accepts the v1 form, a number of milliseconds.
        max_polling_interval = max_polling / 1000
    else:
        max_polling_interval = parse_timespan(max_polling, f"{where}.maxPollingInterval")
    if max_polling_interval < MIN_POLLING_INTERVAL_SECONDS:
        raise HostStartupError(f"{where}.maxPollingInterval must be at least 100 ms")

    visibility = _get(section, "visibilityTimeout")
    visibility_timeout = (
        defaults.visibility_timeout
        if visibility is None
        else parse_timespan(visibility, f"{where}.visibilityTimeout")
    )

    batch_size = _int(section, "batchSize", defaults.batch_size, where)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise HostStartupError(f"{where}.batchSize must be between 1 and {MAX_BATCH_SIZE}")
    threshold = _get(section, "newBatchThreshold")
    new_batch_threshold = (
        None if threshold is None else _int(section, "newBatchThreshold", 0, where)
    )
    if new_batch_threshold is not None and new_batch_threshold < 0:
        raise HostStartupError(f"{where}.newBatchThreshold must not be negative")
    max_dequeue_count = _int(section, "maxDequeueCount", defaults.max_dequeue_count, where)
    if max_dequeue_count < 1:
        raise HostStartupError(f"{where}.maxDequeueCount must be at least 1")

    encoding = str(_get(section, "messageEncoding", defaults.message_encoding)).lower()
    if encoding not in ("base64", "none"):
        raise HostStartupError(f"{where}.messageEncoding must be 'base64' or 'none'")

    return QueuesOptions(
        max_polling_interval=max_polling_interval,
        visibility_timeout=visibility_timeout,
        batch_size=batch_size,
        new_batch_threshold=new_batch_threshold,
        max_dequeue_count=max_dequeue_count,
        message_encoding="base64" if encoding == "base64" else "none",
    )


# .NET TimeSpan text: [-][d.]hh:mm[:ss[.fffffff]], or a bare number of days.
_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{1,2})"
    r"(?::(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,7}))?)?$"
)
_TIMESPAN_DAYS = re.compile(r"^\d+$")


def parse_timespan(value: object, what: str = "TimeSpan") -> float:
    """Seconds in a .NET TimeSpan string such as "00:00:05" or "1.02:00:00.5".

    Raises HostStartupError for anything else (negative spans included).
    """
    if not isinstance(value, str):
        raise HostStartupError(f"{what}: expected a TimeSpan string like '00:00:05', got {value!r}")
    text = value.strip()
    if _TIMESPAN_DAYS.match(text):
        return int(text) * 86_400.0
    match = _TIMESPAN.match(text)
    if match is None:
        raise HostStartupError(f"{what}: {value!r} is not a TimeSpan like '00:00:05'")
    hours, minutes = int(match["hours"]), int(match["minutes"])
    seconds = int(match["seconds"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise HostStartupError(f"{what}: {value!r} is out of range")
    fraction = float(f"0.{match['fraction']}") if match["fraction"] else 0.0
    days = int(match["days"] or 0)
    return days * 86_400.0 + hours * 3_600.0 + minutes * 60.0 + seconds + fraction


def looks_like_timespan(value: str) -> bool:
    return _TIMESPAN.match(value.strip()) is not None


_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def resolve_setting_references(value: str, environ: Mapping[str, str], what: str) -> str:
    """Replace every `%NAME%` in a binding value with the app setting NAME.

    Raises HostStartupError naming the first setting that is not set.
    """

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise HostStartupError(
                f"{what} refers to app setting '{name}' ({value!r}), which is not set"
            )
        return environ[name]

    return _SETTING_REFERENCE.sub(replace, value)


def load_local_settings(
    script_root: Path, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Copy `Values` of local.settings.json into the environment, as `func start` does.

    Variables that are already set win. Returns the names that were set. A missing file is
    not an error; an encrypted or malformed one is (HostStartupError).
    """
    target: MutableMapping[str, str] = os.environ if environ is None else environ
    path = script_root / LOCAL_SETTINGS_JSON
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise HostStartupError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise HostStartupError(f"{path}: expected a JSON object")
    if document.get("IsEncrypted"):
        raise HostStartupError(f"{path} is encrypted; the local host reads plain values only")
    values = document.get("Values") or {}
    if not isinstance(values, dict):
        raise HostStartupError(f"{path}: Values must be an object")
    applied = []
    for name, value in values.items():
        if name in target:
            continue
        target[name] = _setting_text(value)
        applied.append(name)
    logger.info("Loaded %d app settings from %s", len(applied), path)
    return applied


def _setting_text(value: object) -> str:
    if isinstance(value, str):
        return value
    # Non-string JSON values reach the app as their JSON text ("true", "5").
    return json.dumps(value)


def _get(section: Mapping[str, Any], key: str, default: Any = None) -> Any:
    lowered = key.lower()
    for name, value in section.items():
        if name.lower() == lowered:
            return value
    return default


def _section(document: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(document, key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HostStartupError(f"{where}.{key} must be an object")
    return value


def _int(section: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = _get(section, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HostStartupError(f"{where}.{key} must be an integer, got {value!r}")
    return value


_PER_INSTANCE_CONCURRENCY = re.compile(r"\bperInstanceConcurrency\s*:\s*([A-Za-z_]\w*|\d+)")


def infra_http_concurrency(infra: Path) -> int | None:
    """`triggers.http.perInstanceConcurrency` as the Bicep files under `infra` set it: a
    number, or a parameter whose default is a number; None when they set none."""
    if not infra.is_dir():
        return None
    sources = [path.read_text(encoding="utf-8") for path in sorted(infra.rglob("*.bicep"))]
    for text in sources:
        for match in _PER_INSTANCE_CONCURRENCY.finditer(text):
            value = match[1]
            if value.isdigit():
                return int(value)
            default = _bicep_int_default(value, sources)
            if default is not None:
                return default
    return None


def _bicep_int_default(name: str, sources: list[str]) -> int | None:
    # A module parameter is often passed through from main.bicep under the same name.
    pattern = re.compile(rf"\bparam\s+{re.escape(name)}\s+int\s*=\s*(\d+)")
    for text in sources:
        found = pattern.search(text)
        if found:
            return int(found[1])
    return None


def default_http_concurrency(script_root: Path) -> int:
    """What the command line's --http-concurrency defaults to: infra/'s value, else
    APP_HTTP_CONCURRENCY (the same number, once infra/ sets it)."""
    configured = infra_http_concurrency(script_root / INFRA_DIR)
    return APP_HTTP_CONCURRENCY if configured is None else configured
