"""Keys over the local stack, whose host checks them as Azure does (keys mode): the API
needs the function key, Graph's webhook routes and health none, the admin API the master
key (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to)."""

from __future__ import annotations

import pytest

from tests.fixtures.stack import KEY_HEADER, Stack

pytestmark = pytest.mark.integration

NO_KEY = {KEY_HEADER: ""}


async def _status(stack: Stack, method: str, url: str, headers: dict[str, str]) -> int:
    async with stack.http.request(method, url, headers=headers) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/bookings"), ("PUT", "/resources/r-1"), ("POST", "/resources/r-1/resync")],
)
async def test_the_api_answers_401_without_the_function_key(
    stack: Stack, method: str, path: str
) -> None:
    assert await _status(stack, method, stack.api + path, NO_KEY) == 401
    wrong = {KEY_HEADER: "not-the-key"}
    assert await _status(stack, method, stack.api + path, wrong) == 401


async def test_the_function_key_opens_the_api_in_the_header_or_as_code(stack: Stack) -> None:
    with_header = {KEY_HEADER: stack.keys.function}
    assert await _status(stack, "GET", stack.api + "/resources/r-none", with_header) == 404
    as_code = f"{stack.api}/resources/r-none?code={stack.keys.function}"
    assert await _status(stack, "GET", as_code, NO_KEY) == 404


async def test_graphs_routes_and_health_need_no_key(stack: Stack) -> None:
    validation = f"{stack.api}/graph/notifications?validationToken=abc"
    assert await _status(stack, "POST", validation, NO_KEY) == 200
    assert await _status(stack, "GET", stack.api + "/health", NO_KEY) in (200, 503)


async def test_the_admin_api_needs_the_master_key(stack: Stack) -> None:
    status = f"{stack.host_url}/admin/host/status"

    assert await _status(stack, "GET", status, {KEY_HEADER: stack.keys.function}) == 401
    assert await _status(stack, "GET", status, {KEY_HEADER: stack.keys.master}) == 200
