"""The local host playing App Service Authentication (`local_caller` / --local-caller):
every request carries the configured caller's principal and never one its client sent
("External requests aren't allowed to set these headers, so they're present only if set
by App Service": https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
Without it, headers pass as sent."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from local.functions_host.__main__ import parse_args
from local.functions_host.easy_auth import LocalCaller
from tests.functions_host.harness import HostStarter

FORGED = {
    "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
        json.dumps({"auth_typ": "aad", "claims": [{"typ": "roles", "val": "Forged"}]}).encode()
    ).decode(),
    "X-MS-CLIENT-PRINCIPAL-ID": "forged-id",
    "X-MS-CLIENT-PRINCIPAL-NAME": "mallory@contoso.com",
    "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged-token",
}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def seen(client: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with client.get(f"{url}/api/whoami", headers=headers) as response:
        assert response.status == 200
        return await response.json()


def roles_in(headers: dict[str, str]) -> list[str]:
    principal = json.loads(base64.b64decode(headers["x-ms-client-principal"]))
    assert principal["auth_typ"] == "aad"
    return [claim["val"] for claim in principal["claims"] if claim["typ"] == "roles"]


async def test_the_local_caller_replaces_whatever_principal_a_client_sends(
    run_host: HostStarter, client: aiohttp.ClientSession
) -> None:
    caller = LocalCaller(roles=("App.Admin", "App.Frontend"))
    host = await run_host("whoami", local_caller=caller)

    for sent in (FORGED, {}):
        headers = await seen(client, host.url, sent)
        assert roles_in(headers) == ["App.Admin", "App.Frontend"]
        assert headers["x-ms-client-principal-id"] == caller.object_id
        assert headers["x-ms-client-principal-name"] == caller.name
        assert headers["x-ms-client-principal-idp"] == "aad"
        assert "x-ms-token-aad-access-token" not in headers


async def test_without_a_local_caller_headers_pass_as_sent(
    run_host: HostStarter, client: aiohttp.ClientSession
) -> None:
    host = await run_host("whoami")

    assert await seen(client, host.url, {}) == {}
    headers = await seen(client, host.url, FORGED)
    assert roles_in(headers) == ["Forged"]  # no Easy Auth in front: the app must not trust
    # a principal it did not get from the platform, and refuses none it gets (401).


@pytest.mark.parametrize(
    ("argument", "roles"),
    [("App.Admin,App.Frontend", ("App.Admin", "App.Frontend")), (" App.Admin , ", ("App.Admin",)),
     ("", ())],
)  # fmt: skip
def test_the_command_line_takes_the_callers_roles(argument: str, roles: tuple[str, ...]) -> None:
    args = parse_args(["--local-caller", argument])
    assert args.local_caller == LocalCaller(roles=roles)
    assert parse_args([]).local_caller is None


def test_make_runs_hosts_play_easy_auth_with_both_roles_unless_told_not_to() -> None:
    from local.run import LOCAL_CALLER_ROLES, host_command
    from shared.domain.callers import Role

    command = host_command(7071, triggers="http")
    assert command[command.index("--local-caller") + 1] == LOCAL_CALLER_ROLES
    assert set(LocalCaller.parse(LOCAL_CALLER_ROLES).roles) == {role.value for role in Role}
    assert "--local-caller" not in host_command(7071, caller_roles=None)
