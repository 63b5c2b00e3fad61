"""The app settings infra/ gives the Function App agree with what the app and the host read.

Every field of `shared.settings.Settings` is either set by infra/ or deliberately left at its
default (listed below with the reason), and infra/ sets nothing that neither the app nor the
Functions host knows. The settings are read from the delimited block in infra/app/api.bicep
(one `NAME: value` per line). Names compare case-insensitively, as pydantic-settings reads them.
No network, no Bicep compiler.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from croniter import croniter
from pydantic import BaseModel, HttpUrl, SecretStr

from shared.settings import GraphAuthMode, Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
API_BICEP = INFRA / "app" / "api.bicep"
MAIN_BICEP = INFRA / "main.bicep"

BLOCK_START = "// <app-settings>"
BLOCK_END = "// </app-settings>"

# Settings the Functions host (or the platform) reads, not shared.settings.Settings.
HOST_SETTINGS: dict[str, str] = {
    # AzureWebJobsStorage as an identity-based connection: the host's leases, timer state and
    # keys (blob), queue triggers and their -poison queues (queue); tables for completeness.
    "AzureWebJobsStorage__credential": "connection authenticates with a managed identity",
    "AzureWebJobsStorage__clientId": "which identity: the user-assigned one",
    "AzureWebJobsStorage__blobServiceUri": "host blob endpoint",
    "AzureWebJobsStorage__queueServiceUri": "queue triggers' endpoint",
    "AzureWebJobsStorage__tableServiceUri": "host table endpoint",
    # Where the host and the Python worker's Azure Monitor distro send telemetry.
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights resource",
    # Ingestion with a Microsoft Entra token, because local auth is off on Application Insights.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=<identity>;Authorization=AAD",
    # The Python worker starts the distro, attaches the host's trace to each invocation and
    # tells the host not to export the worker's logs again (host.json telemetryMode).
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
}

# Settings fields infra/ leaves unset on purpose, so the app uses the default in
# shared/settings.py. A new Settings field fails this test until it is set in
# infra/app/api.bicep or listed here with the reason its default is right in Azure.
DEFAULTS_KEPT_IN_AZURE: dict[str, str] = {
    "storage_connection_string": "Azurite only; in Azure the identity reaches the account",
    "table_name_prefix": "one deployment owns its storage account",
    "graph_base_url": "the real Microsoft Graph v1.0; only local runs use the emulator",
    "graph_client_id": "client_secret mode only; Azure uses the managed identity",
    "graph_client_secret": "client_secret mode only; no Graph secret exists in Azure",
    "subscription_expiry_minutes": "tuned to Graph's limits in the app",
    "subscription_renew_within_hours": "tuned to the upkeep timer in the app",
    "subscription_expiry_jitter_minutes": "tuned to the renewal window in the app",
    "reconcile_repeat_within_minutes": "tied to the reconcile schedule's 15 minutes",
    "failing_retry_first_minutes": "tied to the reconcile schedule's 15 minutes",
    "failing_retry_max_minutes": "product default",
    "mirror_days_back": "product default",
    "outbox_lease_seconds": "product default",
    "sync_log_retention_days": "product default",
    "mirror_days_ahead": "product default",
    "mirror_freshness_minutes": "product default, tied to the reconcile schedule",
    "booking_start_grace_minutes": "product default",
    "idempotency_retention_hours": "product default",
}

# Never set: Flex Consumption does not support the FUNCTIONS_*, WEBSITE_* and build ones (runtime
# and version come from functionAppConfig, the package from the deployment container); the
# key-based ones would need shared keys or local auth, both of which are off.
NEVER_SET = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}

SETTING_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<value>\S.*)$")
VAR_OPEN = re.compile(r"^var\s+(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*\{$")
QUOTED_LITERAL = re.compile(r"^'(?P<text>[^'$]*)'$")


@dataclass(frozen=True)
class InfraSetting:
    name: str
    value: str  # the Bicep expression, verbatim
    var: str  # the object literal it belongs to


def parse_app_settings(bicep: str) -> list[InfraSetting]:
    """The settings between the markers; raises ValueError on any line of another shape."""
    try:
        block = bicep.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0]
    except IndexError:
        raise ValueError(f"markers {BLOCK_START!r} / {BLOCK_END!r} not found") from None
    settings: list[InfraSetting] = []
    var: str | None = None
    for number, raw in enumerate(block.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        if opened := VAR_OPEN.match(line):
            var = opened["var"]
        elif line == "}" and var is not None:
            var = None
        elif (
            (setting := SETTING_LINE.match(line))
            and var is not None
            and is_balanced(setting["value"])
        ):
            settings.append(InfraSetting(setting["name"], setting["value"].strip(), var))
        else:
            raise ValueError(f"line {number} of the block is not `NAME: value`: {raw!r}")
    if var is not None:
        raise ValueError(f"object literal {var!r} is not closed inside the block")
    return settings


def is_balanced(expression: str) -> bool:
    """True when every bracket opened in the expression closes on the same line."""
    depth = 0
    for char in expression:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.fixture(scope="module")
def api_bicep() -> str:
    return API_BICEP.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def infra_settings(api_bicep: str) -> list[InfraSetting]:
    return parse_app_settings(api_bicep)


@pytest.fixture(scope="module")
def infra_names(infra_settings: list[InfraSetting]) -> set[str]:
    return {setting.name.lower() for setting in infra_settings}


def setting(infra_settings: list[InfraSetting], name: str) -> InfraSetting:
    return next(s for s in infra_settings if s.name.lower() == name.lower())


def required_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


def unclassified_fields(model: type[BaseModel], infra_names: set[str]) -> set[str]:
    """Fields neither set by infra nor listed as a default kept on purpose."""
    return set(model.model_fields) - infra_names - set(DEFAULTS_KEPT_IN_AZURE)


def annotation_types(model: type[BaseModel], name: str) -> set[Any]:
    annotation = model.model_fields[name].annotation
    found = set(typing.get_args(annotation)) | {annotation}
    # Annotated[HttpUrl, UrlConstraints(...)] inside a union counts as HttpUrl.
    return found | {typing.get_args(t)[0] for t in found if typing.get_origin(t) is Annotated}


def referenced_in_code(pattern: re.Pattern[str]) -> set[str]:
    """Names matched by `pattern` in the app's entry points (function_app.py, functions/)."""
    sources = [REPO / "function_app.py", *sorted((REPO / "functions").rglob("*.py"))]
    return {
        match
        for path in sources
        if path.is_file()
        for match in pattern.findall(path.read_text(encoding="utf-8"))
    }


# --- the block itself ------------------------------------------------------------------------


def test_block_parses_into_unique_settings(infra_settings: list[InfraSetting]) -> None:
    names = [s.name.lower() for s in infra_settings]

    assert names, "no app settings found between the markers"
    assert len(names) == len(set(names)), "a setting appears twice (union would hide one)"


def test_parser_rejects_a_setting_it_cannot_read() -> None:
    bicep = f"{BLOCK_START}\nvar appSettings = {{\n  NESTED: {{\n    a: 1\n  }}\n}}\n{BLOCK_END}"

    with pytest.raises(ValueError, match="not `NAME: value`"):
        parse_app_settings(bicep)


def test_only_the_block_reaches_the_function_app(
    api_bicep: str, infra_settings: list[InfraSetting]
) -> None:
    block_vars = {s.var for s in infra_settings}
    assignments = re.findall(r"^\s*appSettingsKeyValuePairs:\s*(.+)$", api_bicep, re.MULTILINE)
    assert len(assignments) == 1
    declared_vars = set(re.findall(r"^var\s+([A-Za-z_]\w*)\s*=", api_bicep, re.MULTILINE))
    used_vars = set(re.findall(r"[A-Za-z_]\w*", assignments[0])) & declared_vars
    assert used_vars == block_vars
    # No other way to set app settings anywhere in infra/.
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text(encoding="utf-8")
        # sites/config resources other than App Service Authentication's (appsettings
        # would replace the block's settings).
        configs = re.findall(
            r"'Microsoft\.Web/sites/config@[^']+' = \{\s*parent: \w+\s*name: '(\w+)'", text
        )
        assert text.count("Microsoft.Web/sites/config") == len(configs), path
        assert set(configs) <= {"authsettingsV2"}, path
        assert not re.search(r"^\s*appSettings:\s*\[", text, re.MULTILINE), path


# --- app and infra agree -------------------------------------------------------------------


def test_every_required_setting_is_set_by_infra(infra_names: set[str]) -> None:
    assert required_fields(Settings) - infra_names == set()


def test_every_setting_is_set_by_infra_or_keeps_a_reviewed_default(infra_names: set[str]) -> None:
    assert unclassified_fields(Settings, infra_names) == set(), (
        "set it in infra/app/api.bicep or add it to DEFAULTS_KEPT_IN_AZURE with a reason"
    )


def test_a_new_settings_field_without_infra_fails_the_check(infra_names: set[str]) -> None:
    class SettingsWithNewFields(Settings):
        calendar_webhook_region: str
        booking_page_size: int = 50

    new_required = required_fields(SettingsWithNewFields) - required_fields(Settings)
    new_unclassified = unclassified_fields(SettingsWithNewFields, infra_names) - (
        unclassified_fields(Settings, infra_names)
    )

    assert new_required - infra_names == {"calendar_webhook_region"}
    assert new_unclassified == {"calendar_webhook_region", "booking_page_size"}


def test_defaults_kept_in_azure_are_current_settings_not_set_by_infra(
    infra_names: set[str],
) -> None:
    kept = set(DEFAULTS_KEPT_IN_AZURE)

    assert kept - set(Settings.model_fields) == set(), "stale entry: no such Settings field"
    assert kept & infra_names == set(), "listed as kept at its default but infra sets it"
    assert kept & required_fields(Settings) == set(), "a required setting has no default"


def test_infra_sets_nothing_the_app_or_host_does_not_know(infra_names: set[str]) -> None:
    known = {name.lower() for name in Settings.model_fields} | {n.lower() for n in HOST_SETTINGS}

    assert infra_names - known == set()


def test_no_name_is_both_an_app_and_a_host_setting() -> None:
    host = {name.lower() for name in HOST_SETTINGS}

    assert host & set(Settings.model_fields) == set()


def test_infra_sets_every_host_setting(infra_names: set[str]) -> None:
    assert {name.lower() for name in HOST_SETTINGS} - infra_names == set()


def test_infra_sets_no_setting_flex_consumption_rejects_or_that_needs_keys(
    infra_names: set[str],
) -> None:
    assert {name.lower() for name in NEVER_SET} & infra_names == set()


def test_settings_validate_with_exactly_what_infra_sets(
    infra_settings: list[InfraSetting], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in Azure, the app settings arrive as environment variables; with and without the
    # optional webhook block.
    for variant in ({s.var for s in infra_settings}, {"appSettings"}):
        for name in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.upper(), raising=False)
        for infra in infra_settings:
            if infra.var in variant and infra.name.lower() in Settings.model_fields:
                monkeypatch.setenv(infra.name, sample_value(infra))

        settings = Settings()

        assert settings.storage_connection_string is None
        assert settings.graph_auth_mode is GraphAuthMode.MANAGED_IDENTITY


def sample_value(infra: InfraSetting) -> str:
    """The literal infra sets, or a value of the field's type for a computed one."""
    if literal := QUOTED_LITERAL.match(infra.value):
        return literal["text"]
    name = infra.name.lower()
    field = Settings.model_fields[name]
    types = annotation_types(Settings, name)
    if HttpUrl in types:
        return "https://func-api-example.azurewebsites.net"
    if SecretStr in types:
        return "@Microsoft.KeyVault(VaultName=kv-example;SecretName=example)"
    if not field.is_required() and field.default is not None:
        return str(field.default)
    return "example"


# --- values --------------------------------------------------------------------------------


def test_graph_auth_mode_is_managed_identity(infra_settings: list[InfraSetting]) -> None:
    mode = setting(infra_settings, "GRAPH_AUTH_MODE").value

    assert mode == f"'{GraphAuthMode.MANAGED_IDENTITY.value}'"


def test_app_and_host_use_the_same_identity(infra_settings: list[InfraSetting]) -> None:
    app_identity = setting(infra_settings, "AZURE_CLIENT_ID").value

    assert setting(infra_settings, "AzureWebJobsStorage__clientId").value == app_identity
    assert setting(infra_settings, "AzureWebJobsStorage__credential").value == "'managedidentity'"
    authentication = setting(infra_settings, "APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
    assert app_identity in authentication.value


def test_secrets_are_key_vault_references(infra_settings: list[InfraSetting]) -> None:
    secret_fields = {
        name for name in Settings.model_fields if SecretStr in annotation_types(Settings, name)
    }
    set_secrets = [s for s in infra_settings if s.name.lower() in secret_fields]

    assert set_secrets, "expected at least the booking-events webhook secret"
    for secret in set_secrets:
        assert secret.value.startswith("'@Microsoft.KeyVault("), secret


def test_webhook_url_and_secret_are_set_together(infra_settings: list[InfraSetting]) -> None:
    url = setting(infra_settings, "BOOKING_EVENTS_WEBHOOK_URL")
    secret = setting(infra_settings, "BOOKING_EVENTS_WEBHOOK_SECRET")

    assert url.var == secret.var != "appSettings"


def test_infra_defaults_agree_with_settings_defaults(infra_settings: list[InfraSetting]) -> None:
    main = MAIN_BICEP.read_text(encoding="utf-8")
    checked = 0
    for infra in infra_settings:
        name = infra.name.lower()
        field = Settings.model_fields.get(name)
        param = re.search(rf"^param {re.escape(infra.value)} string = '([^']*)'$", main, re.M)
        if field is None or field.is_required() or param is None or not param[1]:
            continue
        assert param[1] == str(field.default), infra.name
        checked += 1

    assert checked >= 2  # at least the two timer schedules


@pytest.mark.parametrize("name", ["RECONCILE_SCHEDULE", "SUBSCRIPTION_UPKEEP_SCHEDULE"])
def test_timer_schedules_are_six_field_ncrontab(name: str) -> None:
    schedule = Settings.model_fields[name.lower()].default

    assert len(schedule.split()) == 6
    assert croniter.is_valid(schedule, second_at_beginning=True)


# --- names the entry points bind to --------------------------------------------------------


def test_binding_expressions_in_functions_are_set_by_infra(infra_names: set[str]) -> None:
    placeholders = referenced_in_code(re.compile(r"%([A-Z][A-Z0-9_]*)%"))

    assert {name.lower() for name in placeholders} - infra_names == set()


def test_trigger_connections_are_set_by_infra(infra_names: set[str]) -> None:
    connections = referenced_in_code(re.compile(r"""connection\s*=\s*["']([^"']+)["']"""))

    for connection in connections:
        assert f"{connection}__credential".lower() in infra_names, connection


# --- storage endpoints, telemetry, scale-out -----------------------------------------------

HOST_JSON = REPO / "host.json"
README = REPO / "README.md"


@pytest.mark.parametrize(
    ("name", "service"), [("STORAGE_TABLE_ENDPOINT", "table"), ("STORAGE_QUEUE_ENDPOINT", "queue")]
)
def test_storage_endpoints_come_from_the_account(
    infra_settings: list[InfraSetting], name: str, service: str
) -> None:
    # The account's own endpoint carries its cloud's DNS suffix (sovereign clouds included).
    assert setting(infra_settings, name).value == f"stg.properties.primaryEndpoints.{service}"


def test_the_app_names_no_storage_dns_suffix() -> None:
    sources = [
        REPO / "function_app.py",
        *(REPO / "functions").rglob("*.py"),
        *(REPO / "shared").rglob("*.py"),
    ]

    assert [p for p in sources if "core.windows.net" in p.read_text(encoding="utf-8")] == []


def test_one_telemetry_path_the_workers_inside_the_hosts_trace(
    infra_settings: list[InfraSetting],
) -> None:
    host = json.loads(HOST_JSON.read_text(encoding="utf-8"))

    assert host["telemetryMode"] == "OpenTelemetry"
    assert setting(infra_settings, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY").value == "'true'"


def test_host_logging_keeps_successful_invocations() -> None:
    levels = json.loads(HOST_JSON.read_text(encoding="utf-8"))["logging"]["logLevel"]
    order = ["Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"]
    # Host.Results are the invocation results (requests); a level above Information drops
    # the successful ones.
    effective = levels.get("Host.Results", levels.get("Host", levels.get("default", "Information")))

    assert order.index(effective) <= order.index("Information")


def http_per_instance_concurrency() -> int:
    main = MAIN_BICEP.read_text(encoding="utf-8")
    found = re.search(r"^param httpPerInstanceConcurrency int = (\d+)$", main, re.MULTILINE)
    assert found, "infra/main.bicep declares httpPerInstanceConcurrency with a default"
    return int(found[1])


def test_http_concurrency_per_instance_is_set_and_above_pythons_default(api_bicep: str) -> None:
    main = MAIN_BICEP.read_text(encoding="utf-8")

    assert http_per_instance_concurrency() > 1  # Flex Consumption's default for Python is 1
    assert "httpPerInstanceConcurrency: httpPerInstanceConcurrency" in main
    assert re.search(
        r"triggers:\s*\{\s*http:\s*\{\s*perInstanceConcurrency:\s*httpPerInstanceConcurrency\s*\}",
        api_bicep,
    )


def test_readme_states_the_http_concurrency_infra_sets() -> None:
    readme = README.read_text(encoding="utf-8")
    row = next(
        line
        for line in readme.splitlines()
        if line.startswith("| `functionAppConfig") and "perInstanceConcurrency" in line
    )

    assert f"| {http_per_instance_concurrency()} |" in row
