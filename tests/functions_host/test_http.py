"""HTTP triggers through the local host: routing, request and response mapping, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from local.functions_host import HostKeys, HostStartupError, RunningHost
from tests.functions_host.harness import HostStarter, eventually
from tests.functions_host.sample_app import SampleState

HTTP_FUNCTIONS = ("item", "slow", "greet", "teapot", "boom")


@pytest.fixture
async def host(run_host: HostStarter) -> RunningHost:
    return await run_host(*HTTP_FUNCTIONS)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_route_params_query_and_headers_reach_the_function(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    async with client.get(
        f"{host.url}/api/items/42?colour=red&size=s&size=m", headers={"X-Sample": "yes"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        answer = await response.json()
    assert answer["id"] == "42"
    assert answer["method"] == "GET"
    # Repeated query names arrive joined, as the host passes them.
    assert answer["query"] == {"colour": "red", "size": "s,m"}
    assert answer["sample_header"] == "yes"
    assert answer["url"] == f"{host.url}/api/items/42?colour=red&size=s&size=m"


async def test_requests_reach_the_function_as_the_host_passes_them(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    """GrpcMessageConversionExtensions.ToRpcHttp (azure-functions-host): a query value
    that is empty is left out, a repeated header arrives as one value joined with `,`
    (StringValues.ToString)."""
    async with client.get(
        f"{host.url}/api/items/42?empty=&flag&kept=1",
        headers=[("X-Sample", "a"), ("X-Sample", "b")],
    ) as response:
        answer = await response.json()
    assert answer["query"] == {"kept": "1"}
    assert answer["sample_header"] == "a,b"


async def test_a_chunked_request_reaches_the_function_without_its_body(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    """ToRpcHttp reads the body only `if (request.Body != null && request.ContentLength > 0)`:
    a request sent with Transfer-Encoding: chunked has no Content-Length, so the function
    sees an empty body."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"n": '
        yield b"1}"

    async with client.post(f"{host.url}/api/items/abc", data=chunks()) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["body"] == ""


async def test_an_encoded_slash_stays_encoded_in_a_route_value(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    """Kestrel decodes the request path except `%2F`, so ASP.NET routing hands the
    function `a%2Fb` while `%20` arrives as a space."""
    async with client.get(f"{host.url}/api/items/a%2Fb%20c") as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["id"] == "a%2Fb c"


async def test_post_body_reaches_the_function(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{host.url}/api/items/abc", data='{"n": 1}') as response:
        assert response.status == 200
        answer = await response.json()
    assert (answer["id"], answer["method"], answer["body"]) == ("abc", "POST", '{"n": 1}')


async def test_a_client_gone_before_its_body_ended_is_no_error_and_runs_nothing(
    host: RunningHost, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's connection ends halfway through its declared body: the function is not
    # called, and it is not logged as an error of the host (Kestrel: Debug).
    caplog.set_level(logging.INFO)
    port = int(host.url.rsplit(":", 1)[1])
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/items/abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 100\r\nContent-Type: application/json\r\n\r\n" + b'{"n": '
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    # The host goes on serving, and the next request is the only one the function saw.
    async with client.post(f"{host.url}/api/items/abc", data='{"n": 1}') as response:
        assert response.status == 200
    await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    executed = [r for r in caplog.records if "Executing 'Functions.item'" in r.getMessage()]
    assert len(executed) == 1


async def test_a_method_the_route_does_not_allow_is_404(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    """The host registers each function's methods as a route constraint, so a known
    route with another method matches no route: 404, not 405 (WebJobs.Script.WebHost
    routing, functions-bindings-http-webhook-trigger "methods")."""
    async with client.delete(f"{host.url}/api/items/42") as response:
        assert response.status == 404
        assert "Allow" not in response.headers


@pytest.mark.parametrize("path", ["/api/nothing-here", "/api/items", "/items/42", "/api/items/1/2"])
async def test_an_unknown_route_is_404(
    host: RunningHost, client: aiohttp.ClientSession, path: str
) -> None:
    async with client.get(host.url + path) as response:
        assert response.status == 404


async def test_many_requests_are_served_at_once(
    host: RunningHost, client: aiohttp.ClientSession, fresh_sample_state: SampleState
) -> None:
    async def call() -> int:
        async with client.get(f"{host.url}/api/slow") as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(call() for _ in range(50)))

    assert statuses == [200] * 50
    # Each call sleeps 0.2 s; served one after another, at most one would be in flight.
    assert fresh_sample_state.http_max_in_flight >= 25


async def test_a_sync_function_runs_on_a_worker_thread_with_its_context(
    host: RunningHost, client: aiohttp.ClientSession, fresh_sample_state: SampleState
) -> None:
    async with client.get(f"{host.url}/api/greet/ada") as named:
        assert await named.text() == "hello ada from greet"
    async with client.get(f"{host.url}/api/greet") as unnamed:  # {name?} may be left out
        assert await unnamed.text() == "hello nobody from greet"
    assert unnamed.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert fresh_sample_state.sync_threads
    assert "MainThread" not in fresh_sample_state.sync_threads


async def test_status_mimetype_charset_and_repeated_headers_make_the_answer(
    host: RunningHost, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{host.url}/api/teapot") as response:
        assert response.status == 418
        assert response.headers["Content-Type"] == "text/html; charset=iso-8859-1"
        assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert await response.read() == b"<p>short and stout</p>"


async def test_a_failing_function_is_a_500_with_the_traceback_logged(
    host: RunningHost, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with client.get(f"{host.url}/api/boom") as response:
        assert response.status == 500
    failures = [r for r in caplog.records if "Executed 'Functions.boom' (Failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "boom on purpose" in str(failures[0].exc_info[1])


async def test_route_prefix_comes_from_host_json(
    run_host: HostStarter, client: aiohttp.ClientSession
) -> None:
    host = await run_host("item", host_json={"extensions": {"http": {"routePrefix": ""}}})
    async with client.get(f"{host.url}/items/7") as response:
        assert response.status == 200
        assert (await response.json())["id"] == "7"
    async with client.get(f"{host.url}/api/items/7") as response:
        assert response.status == 404


async def test_closing_the_host_stops_accepting_requests(
    run_host: HostStarter, client: aiohttp.ClientSession
) -> None:
    host = await run_host("item")
    await host.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(f"{host.url}/api/items/1"):
            pass


async def test_closing_lets_requests_in_flight_finish(
    run_host: HostStarter, client: aiohttp.ClientSession, fresh_sample_state: SampleState
) -> None:
    host = await run_host("slow", grace_period=5.0)

    async def call() -> tuple[int, str]:
        async with client.get(f"{host.url}/api/slow") as response:
            return response.status, await response.text()

    request = asyncio.ensure_future(call())
    await eventually(lambda: fresh_sample_state.http_in_flight == 1)
    await host.close()

    assert await request == (200, "done")


async def test_a_taken_port_is_a_startup_error(run_host: HostStarter) -> None:
    first = await run_host("item")
    taken = int(first.url.rsplit(":", 1)[1])

    with pytest.raises(HostStartupError, match="cannot listen"):
        await run_host("item", port=taken)


async def test_a_response_log_records_every_answer_for_a_route(
    run_host: HostStarter, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """For tests (not in Azure): the function's answers and the host's own for a route
    (500 for a failing function, 401 without a key), not the router's 404."""
    keys = HostKeys.generate()
    host = await run_host(*HTTP_FUNCTIONS, keys=keys, response_log=tmp_path)
    function_key = {"x-functions-key": keys.function}
    async with client.get(f"{host.url}/api/teapot", headers=function_key) as response:
        assert response.status == 418
    async with client.get(f"{host.url}/api/boom", headers=function_key) as response:
        assert response.status == 500
    async with client.get(f"{host.url}/api/teapot") as response:
        assert response.status == 401
    async with client.get(f"{host.url}/api/nowhere", headers=function_key) as response:
        assert response.status == 404
    lines = read_response_log(tmp_path)
    assert [(a["method"], a["route"], a["status"]) for a in lines] == [
        ("GET", "/api/teapot", 418),
        ("GET", "/api/boom", 500),
        ("GET", "/api/teapot", 401),
    ]
    assert lines[0]["body"] == "<p>short and stout</p>"
    assert lines[0]["contentType"].startswith("text/html")


def read_response_log(folder: Path) -> list[dict[str, Any]]:
    (log,) = folder.glob("*.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]
