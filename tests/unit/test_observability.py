"""Correlation ids on log records, the redaction filter, the export scope, and the
once-per-process configuration (with the Azure Monitor distro replaced by a recorder)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import string
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import observability
from shared.observability import (
    MASK,
    SECRET_PATTERNS,
    CorrelationFilter,
    ExportScopeFilter,
    RedactionFilter,
    configure_observability,
    correlate,
    correlation_ids,
    may_hold_secret,
    redact,
)

REPO = Path(__file__).resolve().parents[2]


class ListHandler(logging.Handler):
    def __init__(self, *filters: logging.Filter) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        for item in filters:
            self.addFilter(item)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, ListHandler]]:
    """A logger of its own (no propagation) whose handler has both filters."""
    target = logging.getLogger("tests.unit.observability")
    handler = ListHandler(CorrelationFilter(), RedactionFilter())
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    target.propagate = False
    yield target, handler
    target.removeHandler(handler)
    target.propagate = True
    target.setLevel(logging.NOTSET)


def ids_of(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: getattr(record, name)
        for name in observability.CORRELATION_FIELDS
        if hasattr(record, name)
    }


# --- correlation ---------------------------------------------------------------------------


def test_ids_of_the_block_appear_on_records(log: tuple[logging.Logger, ListHandler]) -> None:
    target, handler = log

    with correlate(booking_id="b-1", resource_id="r-1"):
        target.info("pushing")

    assert ids_of(handler.records[0]) == {"booking_id": "b-1", "resource_id": "r-1"}


def test_nested_blocks_merge_and_the_inner_value_wins(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log

    with correlate(resource_id="r-1", mailbox="room@contoso.com"):
        with correlate(event_id="e-1", resource_id="r-2"):
            target.info("inner")
        target.info("outer")

    inner, outer = handler.records
    assert ids_of(inner) == {"resource_id": "r-2", "mailbox": "room@contoso.com", "event_id": "e-1"}
    assert ids_of(outer) == {"resource_id": "r-1", "mailbox": "room@contoso.com"}


def test_ids_are_gone_after_the_block_even_when_it_raises(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log

    with pytest.raises(RuntimeError), correlate(subscription_id="s-1"):
        raise RuntimeError("boom")
    target.info("after")

    assert ids_of(handler.records[0]) == {}
    assert correlation_ids() == {}


def test_none_ids_are_left_out_and_an_explicit_extra_is_kept(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log

    with correlate(booking_id="b-1", subscription_id=None):
        target.info("explicit", extra={"booking_id": "b-2"})

    assert ids_of(handler.records[0]) == {"booking_id": "b-2"}


async def test_concurrent_tasks_keep_their_own_ids(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log
    both_inside = asyncio.Barrier(2)

    async def work(booking_id: str) -> None:
        with correlate(booking_id=booking_id):
            await both_inside.wait()
            target.info("working on %s", booking_id)

    await asyncio.gather(work("b-1"), work("b-2"))

    assert sorted((r.getMessage(), ids_of(r)["booking_id"]) for r in handler.records) == [
        ("working on b-1", "b-1"),
        ("working on b-2", "b-2"),
    ]


# --- redaction -----------------------------------------------------------------------------

SECRET = "s3cr3t-VALUE_42"


SECRET_TEXTS = [
    pytest.param(text)
    for text in (
        f"Authorization: Bearer {SECRET}.part2-x_y==",
        f"headers {{'Authorization': 'bearer {SECRET}'}}",
        f'{{"clientState": "{SECRET}", "tenantId": "t"}}',
        f"GraphNotification(subscription_id='s', client_state='{SECRET}')",
        f"clientState={SECRET}&x=1",
        f'{{"token_type": "Bearer", "access_token": "{SECRET}", "expires_in": 3599}}',
        f"refresh_token={SECRET}",
        f"client_secret: {SECRET}",
        f"POST https://func.example.net/api/graph/notifications?code={SECRET}",
        f"https://acct.blob.core.windows.net/c/b?sv=2024&sig={SECRET}&se=2030",
        f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={SECRET};EndpointSuffix=x",
        f"Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey={SECRET}",
        f"Authorization: SharedKey devstoreaccount1:{SECRET}",
    )
]


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_redact_masks_secrets(text: str) -> None:
    masked = redact(text)

    assert SECRET not in masked
    assert MASK in masked


# The texts above, each of its letters in turn replaced by every character a
# case-insensitive pattern takes for it (the Kelvin sign for k, the dotless i for i…).
_LETTERS = re.compile(r"(?i)[a-z]")
_SPELLINGS = {
    letter: [
        c
        for c in _LETTERS.findall("".join(map(chr, range(sys.maxunicode + 1))))
        if re.fullmatch(f"(?i){letter}", c)
    ]
    for letter in string.ascii_lowercase
}


@pytest.mark.parametrize("text", [p.values[0] for p in SECRET_TEXTS])
def test_every_spelling_a_pattern_matches_is_masked(text: str) -> None:
    for index, character in enumerate(text):
        for spelling in _SPELLINGS.get(character.lower(), []):
            variant = text[:index] + spelling + text[index + 1 :]
            if any(pattern.search(variant) for pattern in SECRET_PATTERNS):
                assert may_hold_secret(variant), variant
                assert SECRET not in redact(variant), variant


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "push of booking b-1 to r-2 failed: ErrorItemNotFound (code 404, try 3)"

    assert redact(text) == text


def test_secrets_in_arguments_extras_and_tracebacks_are_masked(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log

    target.info("sent %s", {"Authorization": f"Bearer {SECRET}"})
    target.info("notification", extra={"payload": f'{{"clientState": "{SECRET}"}}'})
    try:
        raise ValueError(f"AccountKey={SECRET};")
    except ValueError:
        target.exception("storage failed")

    formatter = logging.Formatter("%(message)s %(payload)s", defaults={"payload": ""})
    texts = [formatter.format(record) for record in handler.records]
    assert all(SECRET not in text for text in texts), texts
    assert handler.records[0].args is None  # merged into the masked message


def test_a_record_without_secrets_keeps_its_message_and_arguments(
    log: tuple[logging.Logger, ListHandler],
) -> None:
    target, handler = log

    target.info("booking %s created on %s", "b-1", "r-1")

    [record] = handler.records
    assert (record.msg, record.args) == ("booking %s created on %s", ("b-1", "r-1"))


# --- export scope --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level", "exported"),
    [
        ("shared.services.push", logging.DEBUG, True),
        ("functions.workers", logging.INFO, True),
        ("azure.core.pipeline.policies.http_logging_policy", logging.INFO, False),
        ("azure.core.pipeline.policies.http_logging_policy", logging.WARNING, True),
        ("sharedlib", logging.INFO, False),
        ("azure.monitor.opentelemetry.exporter.export._base", logging.ERROR, False),
        ("opentelemetry.sdk._logs", logging.WARNING, False),
    ],
)
def test_export_scope(name: str, level: int, exported: bool) -> None:
    record = logging.makeLogRecord({"name": name, "levelno": level, "msg": "x"})

    assert ExportScopeFilter().filter(record) is exported


# --- configuration -------------------------------------------------------------------------


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[ListHandler]:
    """configure_observability as if not yet called, with one extra root handler."""
    monkeypatch.setattr(observability, "_configured", False)
    handler = ListHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture
def exporter_handler() -> Iterator[logging.Handler]:
    """OpenTelemetry's logging handler on the root logger, as the Functions worker's
    Azure Monitor distro leaves it before the app is imported (no exporter behind it)."""
    # The handler class azure-monitor-opentelemetry's configure_azure_monitor installs.
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider

    handler = LoggingHandler(logger_provider=LoggerProvider())
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def kinds(handler: logging.Handler) -> list[type]:
    return [type(item) for item in handler.filters]


def test_filters_go_on_root_handlers_once(fresh_process: ListHandler) -> None:
    configure_observability()
    configure_observability()

    assert kinds(fresh_process) == [CorrelationFilter, RedactionFilter]


def test_the_workers_exporter_handler_is_scoped_and_filtered(
    fresh_process: ListHandler, exporter_handler: logging.Handler
) -> None:
    configure_observability()

    assert kinds(exporter_handler) == [ExportScopeFilter, CorrelationFilter, RedactionFilter]
    assert kinds(fresh_process) == [CorrelationFilter, RedactionFilter]


@pytest.fixture
def http_logging_logger() -> Iterator[logging.Logger]:
    """azure-core's HTTP logging policy logger, its level restored afterwards."""
    named = logging.getLogger(observability.HTTP_LOGGING_POLICY_LOGGER)
    level = named.level
    yield named
    named.setLevel(level)


def test_azure_cores_per_request_http_logs_are_quieted_to_warnings(
    fresh_process: ListHandler, http_logging_logger: logging.Logger
) -> None:
    http_logging_logger.setLevel(logging.NOTSET)
    configure_observability()

    assert not http_logging_logger.isEnabledFor(logging.INFO)
    assert http_logging_logger.isEnabledFor(logging.WARNING)


def test_a_level_set_on_the_http_logging_policy_logger_is_kept(
    fresh_process: ListHandler, http_logging_logger: logging.Logger
) -> None:
    http_logging_logger.setLevel(logging.DEBUG)  # someone debugging Storage calls
    configure_observability()

    assert http_logging_logger.level == logging.DEBUG


def test_the_app_starts_no_exporter_of_its_own() -> None:
    """Even with Application Insights configured, as in Azure, the app neither imports the
    distro nor adds a handler: the worker's exporter is the only one (one trace per request)."""
    script = (
        "import logging, sys, function_app\n"
        "before = list(logging.getLogger().handlers)\n"
        "from shared.composition import get_services\n"
        "get_services()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('azure.monitor'))\n"
        "print(loaded, logging.getLogger().handlers == before)\n"
    )
    env = {
        **os.environ,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={uuid.UUID(int=170)}",
        "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
        "GRAPH_TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "GRAPH_AUTH_MODE": "emulator",
        "PUBLIC_BASE_URL": "https://func-example.azurewebsites.net",
    }

    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] True"
