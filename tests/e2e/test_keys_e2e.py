"""Keys over the local stack, whose host checks them as Azure does (keys mode): the
routes only booking frontends call need the function key as a second lock besides the
caller's role; the routes an administrator's browser calls (the console), Graph's
webhook routes and health none; the host's admin API the master key
(https://learn.microsoft.com/azure/azure-functions/function-keys-how-to)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures.callers import EVERY_ROLE
from tests.fixtures.stack import KEY_HEADER, Stack

pytestmark = pytest.mark.integration

NO_KEY = {KEY_HEADER: ""}


async def _status(stack: Stack, method: str, url: str, headers: dict[str, str]) -> int:
    async with stack.http.request(method, url, headers=headers) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/bookings"),
        ("POST", "/bookings/b-1/cancel"),
        ("POST", "/bookings/b-1/reschedule"),
        ("GET", "/resources/r-1/availability"),
    ],
)
async def test_the_frontends_routes_answer_401_without_the_function_key(
    stack: Stack, method: str, path: str
) -> None:
    assert await _status(stack, method, stack.api + path, NO_KEY) == 401
    wrong = {KEY_HEADER: "not-the-key"}
    assert await _status(stack, method, stack.api + path, wrong) == 401


async def test_the_function_key_opens_the_api_in_the_header_or_as_code(stack: Stack) -> None:
    with_header = {KEY_HEADER: stack.keys.function}
    cancel = stack.api + "/bookings/b-none/cancel"
    assert await _status(stack, "POST", cancel, with_header) == 404
    as_code = f"{cancel}?code={stack.keys.function}"
    # The header, when sent (even empty), is the key and ?code= is not read: the host's
    # AuthenticationLevelHandler. So ?code= is tried from a client that sends no header.
    assert await _status(stack, "POST", as_code, NO_KEY) == 401
    async with (
        aiohttp.ClientSession(headers=EVERY_ROLE) as bare,
        bare.post(as_code) as response,
    ):
        assert response.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/resources/r-none"), ("GET", "/bookings/b-none"), ("GET", "/health/details")],
)
async def test_the_routes_a_browser_calls_need_no_key_only_the_role(
    stack: Stack, method: str, path: str
) -> None:
    assert await _status(stack, method, stack.api + path, NO_KEY) in (200, 404, 503)


async def test_graphs_routes_and_health_need_no_key(stack: Stack) -> None:
    validation = f"{stack.api}/graph/notifications?validationToken=abc"
    assert await _status(stack, "POST", validation, NO_KEY) == 200
    assert await _status(stack, "GET", stack.api + "/health", NO_KEY) in (200, 503)


async def test_the_admin_api_needs_the_master_key(stack: Stack) -> None:
    status = f"{stack.host_url}/admin/host/status"

    assert await _status(stack, "GET", status, {KEY_HEADER: stack.keys.function}) == 401
    assert await _status(stack, "GET", status, {KEY_HEADER: stack.keys.master}) == 200
