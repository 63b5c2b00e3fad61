"""host.json, TimeSpans, app settings and local.settings.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.functions_host import (
    HostConfig,
    HostStartupError,
    QueuesOptions,
    load_host_config,
    load_local_settings,
)
from local.functions_host.config import parse_timespan, resolve_setting_references


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
