"""The Storage clients' transport trusts the environment only when a proxy is set."""

from __future__ import annotations

import pytest

from shared.composition import storage_transport_options

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_without_a_proxy_the_per_request_environment_lookups_are_off(
    no_proxy_environment: pytest.MonkeyPatch,
) -> None:
    assert storage_transport_options() == {"use_env_settings": False}


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "http_proxy"])
def test_a_configured_proxy_keeps_them_on(
    no_proxy_environment: pytest.MonkeyPatch, name: str
) -> None:
    no_proxy_environment.setenv(name, "http://proxy.example:3128")
    assert storage_transport_options() == {"use_env_settings": True}
