"""Structured logs: correlation ids on every record, secrets masked, export scoped.

- `correlate(booking_id=..., resource_id=..., ...)` puts ids into a context variable for a
  block (nested blocks merge; each asyncio task sees its own); `CorrelationFilter` copies
  them onto every LogRecord as attributes, which OpenTelemetry's logging handler exports
  as Application Insights custom dimensions.
- `RedactionFilter` masks bearer tokens, clientState values, OAuth tokens and signed-URL
  or connection-string keys in messages. It is the last line of defence only: the code
  itself never logs tokens, clientState, or event subjects and bodies. It also escapes
  control characters in logged values (a request's value holding a newline would
  otherwise forge a log line).
- `configure_observability()` installs both filters on the root logger's handlers once per
  process (and ExportScopeFilter on the OpenTelemetry exporter's, which the Functions
  Python worker starts in Azure) and quiets azure-core's per-request HTTP logging.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

logger = logging.getLogger(__name__)

# The ids a record can carry, as attribute names (and custom-dimension names).
CORRELATION_FIELDS = ("booking_id", "resource_id", "mailbox", "subscription_id", "event_id")

# Loggers exported at every level; any other logger only from WARNING up.
APP_LOGGERS = ("shared", "functions", "function_app")
# The exporter's own loggers are never exported (a failing export must not feed itself).
EXPORTER_LOGGERS = ("azure.monitor.opentelemetry", "opentelemetry")
# azure-core's HttpLoggingPolicy logs every Storage request and response, with its
# headers, at INFO: formatting them costs each call CPU, and the Functions host would ship
# every line to Application Insights. Its warnings (failed requests) are kept.
HTTP_LOGGING_POLICY_LOGGER = "azure.core.pipeline.policies.http_logging_policy"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_correlation: ContextVar[Mapping[str, str]] = ContextVar("correlation", default=_EMPTY)


@contextmanager
def correlate(
    *,
    booking_id: str | None = None,
    resource_id: str | None = None,
    mailbox: str | None = None,
    subscription_id: str | None = None,
    event_id: str | None = None,
) -> Iterator[None]:
    """Within the block, every log record carries the given ids (None ones are left out)
    on top of those of any enclosing block; the previous ids are back after it."""
    given = {
        "booking_id": booking_id,
        "resource_id": resource_id,
        "mailbox": mailbox,
        "subscription_id": subscription_id,
        "event_id": event_id,
    }
    merged = {**_correlation.get(), **{k: v for k, v in given.items() if v is not None}}
    token = _correlation.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _correlation.reset(token)


def correlation_ids() -> Mapping[str, str]:
    """The ids in effect here (read-only)."""
    return _correlation.get()


class CorrelationFilter(logging.Filter):
    """Copies the current correlation ids onto each record as attributes. An id the log
    call passed itself (`extra={"booking_id": ...}`) is kept. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _correlation.get().items():
            record.__dict__.setdefault(name, value)
        return True


MASK = "***"
_BASE64ISH = r"[A-Za-z0-9\-._~+/]+=*"
SECRET_PATTERNS = (
    # Authorization header values: `Bearer <token>`, storage `SharedKey account:signature`.
    re.compile(rf"(?i)(\bbearer\s+){_BASE64ISH}"),
    re.compile(r"(?i)(\bSharedKey(?:Lite)?\s+[^:\s]+:)[A-Za-z0-9+/=]+"),
    # `name=value`, `name: value`, `"name": "value"`, `name='value'` (a model's repr).
    re.compile(
        r"""(?i)(\b(?:client_?state|access_token|refresh_token|id_token|client_secret)"""
        r"""["']?\s*[:=]\s*["']?)[^"'\s,;&)}]+"""
    ),
    # Function keys and SAS signatures in URLs (`?code=`, `&sig=`).
    re.compile(r"""(?i)([?&;](?:code|sig)=)[^&\s"'#;]+"""),
    # Keys inside connection strings.
    re.compile(r"""(?i)(\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)=)[^;\s"']+"""),
)

# Attributes every LogRecord has; anything else was added by `extra=` or a filter.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# Each of SECRET_PATTERNS needs one of these words (in any case) to match at all: a text
# that holds none (most log lines) is returned as it is after one cheap look, instead of
# five case-insensitive regular expressions per text, on every record the app logs.
SECRET_KEYWORDS = (
    "bearer",
    "sharedkey",
    "client",  # client_state, clientState, client_secret
    "_token",  # access_token, refresh_token, id_token
    "code=",
    "sig=",
    "accountkey",
    "sharedaccess",  # SharedAccessKey, SharedAccessSignature
)


# What a case-insensitive pattern takes for i but casefold() folds elsewhere: the dotted
# capital I (to i and a combining dot) and the dotless i (kept).
_AS_I = str.maketrans({"\u0130": "i", "\u0131": "i"})


def may_hold_secret(text: str) -> bool:
    """False only when no pattern of SECRET_PATTERNS can match `text`."""
    # casefold() folds the rest a case-insensitive pattern takes (the Kelvin sign for k,
    # the long s for s).
    folded = text.translate(_AS_I).casefold()
    return any(word in folded for word in SECRET_KEYWORDS)


def redact(text: str) -> str:
    """`text` with every secret SECRET_PATTERNS recognises replaced by MASK."""
    if not may_hold_secret(text):
        return text
    for pattern in SECRET_PATTERNS:
        # A function, not a "\g<1>" template: for a template, `sub` imports `re` to parse
        # it, and imports fail for records logged while the interpreter shuts down.
        text = pattern.sub(_keep_name_mask_value, text)
    return text


def _keep_name_mask_value(match: re.Match[str]) -> str:
    return match.group(1) + MASK


# C0 and C1 control characters and DEL.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """`text` with each control character written as its Python escape (`\\n`, `\\x1b`)."""
    return _CONTROL_CHARACTERS.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def _escape_arg(value: object) -> object:
    return escape_controls(value) if isinstance(value, str) else value


class RedactionFilter(logging.Filter):
    """Masks secrets in a record's message (merging its args), its string attributes and
    its formatted traceback; escapes control characters in its args and string
    attributes. The record is changed in place, so every handler after this
    one sees the masked version too. Never drops a record. (OpenTelemetry's handler formats
    exceptions from `exc_info` itself; those are out of a filter's reach.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        # Values (not the code's own format string) may come from a request.
        if isinstance(record.args, tuple):
            record.args = tuple(_escape_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _escape_arg(arg) for key, arg in record.args.items()}
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: left as is
            message = None
        if message is not None:
            masked = redact(message)
            if masked != message:
                record.msg, record.args = masked, None
        for name in vars(record).keys() - _STANDARD_ATTRIBUTES:
            value = getattr(record, name)
            if isinstance(value, str):
                setattr(record, name, redact(escape_controls(value)))
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text instead of formatting the exception again.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class ExportScopeFilter(logging.Filter):
    """For the Azure Monitor handler: the app's loggers at every level, other libraries'
    from WARNING up (azure-core logs each HTTP request at INFO), never the exporter's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _within(record.name, EXPORTER_LOGGERS):
            return False
        return record.levelno >= logging.WARNING or _within(record.name, APP_LOGGERS)


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def install_filters(handler: logging.Handler) -> None:
    """Adds CorrelationFilter then RedactionFilter to `handler`, each at most once."""
    for kind in (CorrelationFilter, RedactionFilter):
        if not any(isinstance(existing, kind) for existing in handler.filters):
            handler.addFilter(kind())


_configured = False
_configure_lock = threading.Lock()


def is_exporter_handler(handler: logging.Handler) -> bool:
    """True for OpenTelemetry's logging handler (the Azure Monitor distro's), without
    importing OpenTelemetry: a process that never started it has no such handler."""
    return type(handler).__module__.split(".", 1)[0] == "opentelemetry"


def configure_observability() -> None:
    """Once per process (later calls return at once): azure-core's per-request HTTP logs
    down to WARNING (unless that logger's level was set already), then the correlation and
    redaction filters on every handler of the root logger: the Functions worker's, and in
    Azure the OpenTelemetry exporter's, which also gets ExportScopeFilter.

    Export itself is not started here. In Azure the Python worker starts the Azure Monitor
    distro before it imports the app (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY, set by
    infra/) and runs every invocation inside the host's trace, so the app's logs and its
    Storage and Graph calls land in the host's request; a second exporter here would send
    everything twice and outside that trace.
    """
    global _configured
    with _configure_lock:
        if _configured:
            return
        _configured = True
        http_logging = logging.getLogger(HTTP_LOGGING_POLICY_LOGGER)
        if http_logging.level == logging.NOTSET:
            http_logging.setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            if is_exporter_handler(handler) and not any(
                isinstance(existing, ExportScopeFilter) for existing in handler.filters
            ):
                handler.addFilter(ExportScopeFilter())
            install_filters(handler)
