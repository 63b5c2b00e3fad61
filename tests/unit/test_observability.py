"""Correlation ids on log records, the redaction filter, the export scope, and the
once-per-process configuration (with the Azure Monitor distro replaced by a recorder)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import observability
from shared.observability import (
    MASK,
    CorrelationFilter,
    ExportScopeFilter,
    RedactionFilter,
    configure_observability,
    correlate,
    correlation_ids,
    redact,
)
from shared.settings import Settings

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


@pytest.mark.parametrize(
    "text",
    [
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
    ],
)
def test_redact_masks_secrets(text: str) -> None:
    masked = redact(text)

    assert SECRET not in masked
    assert MASK in masked


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


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_account_name": "stexample",
        "graph_tenant_id": "00000000-0000-0000-0000-000000000001",
        "public_base_url": "https://func-example.azurewebsites.net",
        "applicationinsights_connection_string": None,
        "azure_client_id": None,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[ListHandler]:
    """configure_observability as if not yet called, with one extra root handler."""
    monkeypatch.setattr(observability, "_configured", False)
    handler = ListHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


class DistroRecorder:
    """Stands in for azure.monitor.opentelemetry.configure_azure_monitor: records the call
    and, like the distro, adds a logging handler to the logger it was given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.handler = ListHandler()
        self.error = error

    def __call__(self, **options: Any) -> None:
        self.calls.append(options)
        if self.error is not None:
            raise self.error
        logging.getLogger(options["logger_name"]).addHandler(self.handler)


@pytest.fixture
def distro(monkeypatch: pytest.MonkeyPatch) -> Iterator[DistroRecorder]:
    recorder = DistroRecorder()
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", recorder)
    yield recorder
    logging.getLogger().removeHandler(recorder.handler)


def kinds(handler: logging.Handler) -> list[type]:
    return [type(item) for item in handler.filters]


def test_without_a_connection_string_filters_go_on_root_handlers_once(
    fresh_process: ListHandler, distro: DistroRecorder
) -> None:
    configure_observability(settings())
    configure_observability(settings(applicationinsights_connection_string="InstrumentationKey=x"))

    assert kinds(fresh_process) == [CorrelationFilter, RedactionFilter]
    assert distro.calls == []  # the second call did nothing


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
    configure_observability(settings())

    assert not http_logging_logger.isEnabledFor(logging.INFO)
    assert http_logging_logger.isEnabledFor(logging.WARNING)


def test_a_level_set_on_the_http_logging_policy_logger_is_kept(
    fresh_process: ListHandler, http_logging_logger: logging.Logger
) -> None:
    http_logging_logger.setLevel(logging.DEBUG)  # someone debugging Storage calls
    configure_observability(settings())

    assert http_logging_logger.level == logging.DEBUG


def test_with_a_connection_string_logs_export_with_the_managed_identity(
    fresh_process: ListHandler, distro: DistroRecorder
) -> None:
    from azure.identity import ManagedIdentityCredential

    connection = "InstrumentationKey=00000000-0000-0000-0000-00000000000a"
    configure_observability(
        settings(applicationinsights_connection_string=connection, azure_client_id="client-1")
    )

    [call] = distro.calls
    assert call["connection_string"] == connection
    assert call["logger_name"] == ""
    assert isinstance(call["credential"], ManagedIdentityCredential)  # sync, as the exporter needs
    assert kinds(distro.handler) == [ExportScopeFilter, CorrelationFilter, RedactionFilter]
    assert kinds(fresh_process) == [CorrelationFilter, RedactionFilter]


def test_without_a_client_id_the_exporter_chooses_its_credential(
    fresh_process: ListHandler, distro: DistroRecorder
) -> None:
    configure_observability(settings(applicationinsights_connection_string="InstrumentationKey=x"))

    [call] = distro.calls
    assert "credential" not in call


def test_a_rejected_connection_string_leaves_export_off_and_the_app_running(
    fresh_process: ListHandler, distro: DistroRecorder
) -> None:
    distro.error = ValueError("Invalid instrumentation key. It should be a valid UUID.")

    configure_observability(settings(applicationinsights_connection_string="InstrumentationKey=x"))

    assert kinds(fresh_process) == [CorrelationFilter, RedactionFilter]
    [error] = [r for r in fresh_process.records if r.levelno == logging.ERROR]
    assert "Application Insights export is off" in error.getMessage()


def test_the_distro_is_not_imported_without_a_connection_string() -> None:
    script = (
        "import sys, function_app\n"
        "from shared.observability import configure_observability\n"
        "from shared.settings import Settings\n"
        "configure_observability(Settings(storage_account_name='s', graph_tenant_id='t',"
        " public_base_url='https://x.example'))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('azure.monitor'))\n"
        "print(loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}

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
    assert result.stdout.strip() == "[]"
