"""host.json, TimeSpans, app settings and local.settings.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.azurite import REPO_ROOT
from local.functions_host import (
    FastMode,
    HostConfig,
    HostStartupError,
    QueuesOptions,
    load_host_config,
    load_local_settings,
    start_host,
)
from local.functions_host.__main__ import host_config_for, parse_args
from local.functions_host.config import (
    APP_HTTP_CONCURRENCY,
    FLEX_PYTHON_HTTP_CONCURRENCY,
    default_http_concurrency,
    infra_http_concurrency,
    parse_timespan,
    resolve_setting_references,
)
from tests.functions_host import sample_app


def test_defaults_are_the_hosts() -> None:
    config = load_host_config({"version": "2.0"})

    assert config.route_prefix == "api"
    assert config.functions is None
    assert config.queues == QueuesOptions(
        max_polling_interval=60.0,
        visibility_timeout=0.0,
        batch_size=16,
        new_batch_threshold=None,
        max_dequeue_count=5,
        message_encoding="base64",
    )


def test_queue_and_http_settings_are_read_case_insensitively(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(
        json.dumps(
            {
                "version": "2.0",
                "functions": ["a", "b"],
                "extensions": {
                    "http": {"routePrefix": "/v1/"},
                    "Queues": {
                        "maxPollingInterval": "00:00:01",
                        "VisibilityTimeout": "00:00:05.5",
                        "batchSize": 4,
                        "newBatchThreshold": 2,
                        "maxDequeueCount": 3,
                        "messageEncoding": "None",
                    },
                },
            }
        )
    )

    config = load_host_config(host_json)

    assert config == HostConfig(
        route_prefix="v1",
        functions=("a", "b"),
        queues=QueuesOptions(
            max_polling_interval=1.0,
            visibility_timeout=5.5,
            batch_size=4,
            new_batch_threshold=2,
            max_dequeue_count=3,
            message_encoding="none",
        ),
    )
    assert config.queues.effective_new_batch_threshold == 2


def test_max_polling_interval_may_be_milliseconds() -> None:
    config = load_host_config({"extensions": {"queues": {"maxPollingInterval": 2000}}})

    assert config.queues.max_polling_interval == 2.0


def test_new_batch_threshold_defaults_to_half_a_batch_per_processor() -> None:
    options = QueuesOptions(batch_size=8)

    assert options.effective_new_batch_threshold % 4 == 0
    assert options.effective_new_batch_threshold >= 4


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:05", 5.0),
        ("00:01:00", 60.0),
        ("01:00", 3600.0),
        ("00:00:00.250", 0.25),
        ("1.02:03:04", 93784.0),
        ("2", 172800.0),
    ],
)
def test_timespans_are_read_like_dotnet(text: str, seconds: float) -> None:
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5s", "00:60:00", "-00:00:01", "", 5])
def test_bad_timespans_are_startup_errors(text: object) -> None:
    with pytest.raises(HostStartupError):
        parse_timespan(text)


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 0},
        {"batchSize": 33},
        {"maxDequeueCount": 0},
        {"newBatchThreshold": -1},
        {"maxPollingInterval": "00:00:00.050"},
        {"messageEncoding": "utf8"},
        {"batchSize": "16"},
    ],
)
def test_out_of_range_queue_settings_are_startup_errors(queues: dict[str, object]) -> None:
    with pytest.raises(HostStartupError):
        load_host_config({"extensions": {"queues": queues}})


def test_a_missing_host_json_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(HostStartupError, match=r"host\.json"):
        HostConfig.from_file(tmp_path / "host.json")


def test_setting_references_resolve_from_the_environment() -> None:
    environ = {"QUEUE": "bookings", "ENV": "dev"}

    assert resolve_setting_references("%QUEUE%-%ENV%", environ, "queueName") == "bookings-dev"
    assert resolve_setting_references("plain", environ, "queueName") == "plain"
    with pytest.raises(HostStartupError, match="'MISSING'"):
        resolve_setting_references("%MISSING%", environ, "Function 'f' schedule")


def test_local_settings_fill_the_environment_without_overriding_it(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"FROM_FILE": "file", "ALREADY_SET": "file", "FLAG": True},
            }
        )
    )
    environ = {"ALREADY_SET": "environment"}

    applied = load_local_settings(tmp_path, environ)

    assert environ == {"FROM_FILE": "file", "ALREADY_SET": "environment", "FLAG": "true"}
    assert sorted(applied) == ["FLAG", "FROM_FILE"]


def test_no_local_settings_file_is_fine(tmp_path: Path) -> None:
    environ: dict[str, str] = {}

    assert load_local_settings(tmp_path, environ) == []
    assert environ == {}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 1800.0), ("00:10:00", 600.0), ("-1", None), ("1.00:00:00", 86400.0)],
)
def test_function_timeout_comes_from_host_json(value: str | None, seconds: float | None) -> None:
    """functionTimeout: a TimeSpan, "-1" for none (Flex Consumption allows it), and Flex
    Consumption's 30 minutes when unset (functions-scale#timeout)."""
    document = {"version": "2.0"} if value is None else {"version": "2.0", "functionTimeout": value}

    assert load_host_config(document).function_timeout == seconds


def test_a_bad_function_timeout_is_a_startup_error() -> None:
    with pytest.raises(HostStartupError, match="functionTimeout"):
        load_host_config({"version": "2.0", "functionTimeout": "ten minutes"})


def test_azures_timings_unless_fast_mode_is_asked_for() -> None:
    config = load_host_config(
        {
            "extensions": {
                "queues": {"maxPollingInterval": "00:00:01", "visibilityTimeout": "00:00:05"}
            }
        }
    )

    assert config.fast is None
    assert config.processing_lease == 600
    assert config.http_response_limit == 230
    fast = config.with_fast_mode(FastMode(processing_lease=2))
    assert fast.processing_lease == 2
    assert fast.queues.max_polling_interval == 0.2
    assert fast.queues.visibility_timeout == 0
    # What fast mode does not touch stays host.json's.
    assert fast.queues.batch_size == config.queues.batch_size
    assert fast.function_timeout == config.function_timeout


def test_the_command_line_shortens_timings_only_with_fast(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text('{"version": "2.0"}')

    slow = parse_args(["--script-root", str(tmp_path), "--processing-lease", "2"])
    slow.script_root = tmp_path
    with pytest.raises(HostStartupError, match="--fast"):
        host_config_for(slow)
    fast = parse_args(["--script-root", str(tmp_path), "--fast", "--processing-lease", "2"])
    fast.script_root = tmp_path
    assert host_config_for(fast).processing_lease == 2
    plain = parse_args(["--script-root", str(tmp_path)])
    plain.script_root = tmp_path
    assert host_config_for(plain).processing_lease == 600


async def test_start_host_reads_the_script_roots_host_json_by_default(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "functions": ["item"], "functionTimeout": "00:03:00"})
    )

    host = await start_host(sample_app.app, script_root=tmp_path)
    try:
        assert host.config.function_timeout == 180
        assert [h.function.name for h in host.index.http] == ["item"]
    finally:
        await host.close()


def test_http_concurrency_is_read_from_infra(tmp_path: Path) -> None:
    """Flex Consumption's functionAppConfig.scaleAndConcurrency.triggers.http.
    perInstanceConcurrency, as a number or through a parameter's default."""
    infra = tmp_path / "infra"
    (infra / "app").mkdir(parents=True)
    assert infra_http_concurrency(infra) is None
    assert default_http_concurrency(tmp_path) == APP_HTTP_CONCURRENCY

    (infra / "app" / "api.bicep").write_text(
        "triggers: {\n  http: {\n    perInstanceConcurrency: httpPerInstanceConcurrency\n  }\n}\n"
    )
    (infra / "main.bicep").write_text("param httpPerInstanceConcurrency int = 16\n")
    assert default_http_concurrency(tmp_path) == 16

    (infra / "app" / "api.bicep").write_text("triggers: { http: { perInstanceConcurrency: 4 } }")
    assert default_http_concurrency(tmp_path) == 4


def test_the_command_lines_http_concurrency_is_what_this_repositorys_infra_sets() -> None:
    """APP_HTTP_CONCURRENCY stands in for infra/'s value; once infra/ sets one, they agree
    (and it is not Flex Consumption's default for Python, 1, which would need an
    instance per concurrent request)."""
    configured = infra_http_concurrency(REPO_ROOT / "infra")

    if configured is not None:
        assert configured == APP_HTTP_CONCURRENCY
    assert default_http_concurrency(REPO_ROOT) == APP_HTTP_CONCURRENCY
    assert APP_HTTP_CONCURRENCY > FLEX_PYTHON_HTTP_CONCURRENCY
