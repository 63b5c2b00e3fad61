"""What the host refuses to run, and which functions it runs."""

from __future__ import annotations

import azure.functions as func
import pytest

from local.functions_host import HostConfig, HostStartupError
from local.functions_host.app_index import index_app
from tests.functions_host import sample_app

CONNECTION = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_the_sample_app_indexes_into_http_queue_and_timer_functions() -> None:
    environ = {
        **CONNECTION,
        "SAMPLE_RECORD_QUEUE": "Records",
        "SAMPLE_FAILING_QUEUE": "failing",
        "SAMPLE_SLOW_QUEUE": "slow",
        "SAMPLE_TIMER_SCHEDULE": "0 */5 * * * *",
    }

    index = index_app(sample_app.app, HostConfig(), environ)

    assert {h.function.name for h in index.http} == {
        "item",
        "slow",
        "nap",
        "open_door",
        "locked",
        "greet",
        "teapot",
        "boom",
        "whoami",
    }
    assert {q.queue_name for q in index.queues} == {"records", "failing", "slow"}
    assert {t.function.name: t.schedule_text for t in index.timers} == {
        "tick": "0 */5 * * * *",
        "startup_tick": "0 0 0 1 1 *",
        "failing_tick": "*/1 * * * * *",
        "overrun_tick": "*/1 * * * * *",
    }
    # The schedule monitor: on for schedules of a minute or more (TimerTriggerAttribute).
    assert {t.function.name for t in index.timers if t.use_monitor} == {"tick", "startup_tick"}
    [item] = [h for h in index.http if h.function.name == "item"]
    assert item.methods == ("GET", "POST")
    assert item.function.is_async


def test_host_json_functions_and_disabled_settings_choose_what_runs() -> None:
    environ = {"AzureWebJobs.greet.Disabled": "true"}
    config = HostConfig(functions=("item", "greet"))

    index = index_app(sample_app.app, config, environ)

    assert [h.function.name for h in index.http] == ["item"]
    assert index.queues == ()
    assert index.timers == ()


def test_an_output_binding_is_refused_with_a_clear_message() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="out", connection="AzureWebJobsStorage")
    def forward(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode())

    with pytest.raises(HostStartupError, match=r"'forward'.*'out'.*'queue'.*not supported"):
        index_app(app, HostConfig(), CONNECTION)


def test_an_unsupported_trigger_is_refused() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        return None

    with pytest.raises(HostStartupError, match="blobTrigger"):
        index_app(app, HostConfig(), CONNECTION)


def test_a_parameter_no_binding_fills_is_refused() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="x")
    def handler(req: func.HttpRequest, extra: str) -> func.HttpResponse:
        return func.HttpResponse(extra)

    with pytest.raises(HostStartupError, match="'extra'"):
        index_app(app, HostConfig(), {})


def test_a_missing_queue_connection_is_refused_naming_the_setting() -> None:
    with pytest.raises(HostStartupError, match="'AzureWebJobsStorage' is not set"):
        index_app(sample_app.app, HostConfig(functions=("record",)), {"SAMPLE_RECORD_QUEUE": "q"})


def test_an_identity_based_connection_is_read_from_its_settings() -> None:
    """functions-reference, "Common properties for identity-based connections"."""
    environ = {
        "SAMPLE_RECORD_QUEUE": "q",
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
        "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-0000000000c1",
    }

    [queue] = index_app(sample_app.app, HostConfig(functions=("record",)), environ).queues

    assert queue.connection.identity_based
    assert queue.connection.queue_service_uri == "https://acct.queue.core.windows.net"
    assert queue.connection.client_id == "00000000-0000-0000-0000-0000000000c1"


def test_an_identity_based_account_name_means_the_public_clouds_endpoints() -> None:
    environ = {"SAMPLE_RECORD_QUEUE": "q", "AzureWebJobsStorage__accountName": "acct"}

    [queue] = index_app(sample_app.app, HostConfig(functions=("record",)), environ).queues

    assert queue.connection.queue_service_uri == "https://acct.queue.core.windows.net"
    assert queue.connection.table_service_uri == "https://acct.table.core.windows.net"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"AzureWebJobsStorage__clientId": "x"}, "__queueServiceUri"),
        (
            {"AzureWebJobsStorage__accountName": "a", "AzureWebJobsStorage__credential": "key"},
            "__credential",
        ),
    ],
)
def test_an_incomplete_identity_based_connection_is_refused_naming_the_setting(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(HostStartupError, match=message):
        index_app(
            sample_app.app,
            HostConfig(functions=("record",)),
            {"SAMPLE_RECORD_QUEUE": "q", **settings},
        )


def test_a_missing_queue_name_setting_is_refused_naming_it() -> None:
    with pytest.raises(HostStartupError, match="SAMPLE_RECORD_QUEUE"):
        index_app(sample_app.app, HostConfig(functions=("record",)), CONNECTION)
