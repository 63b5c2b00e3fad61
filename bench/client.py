"""HTTP access to the running stack: the app's API, the emulator's Graph API (acting as the
Outlook user), its control API, and the host's admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from bench.emulator import HTTP_COUNTS_PATH
from bench.stack import Stack

T = TypeVar("T")

REQUEST_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    """A step of a benchmark did not go as set up (not a slow figure: a broken run)."""


class StackClient:
    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.http = session
        # 429s the benchmarks' own Graph calls (seeding) met, so that the whole-run count
        # of throttled answers can leave them out.
        self.own_throttled = 0

    async def _request(
        self,
        method: str,
        url: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.http.request(
            method, url, json=body, headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            if not text:
                return response.status, None
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def api(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> tuple[int, Any]:
        return await self._request(method, self.stack.api_url + path, body, headers, timeout_s)

    async def api_ok(
        self, method: str, path: str, body: object = None, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> Any:
        status, payload = await self.api(method, path, body, timeout_s=timeout_s)
        if status >= 300:
            raise BenchError(f"{method} /api{path} answered {status}: {payload!r}")
        return payload

    async def graph(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """Straight to the emulator's Graph API, as the Outlook user would act."""
        headers = {"Authorization": "Bearer outlook-user"}
        return await self._request(method, f"{self.stack.graph_base}/v1.0{path}", body, headers)

    async def graph_ok(self, method: str, path: str, body: object = None) -> Any:
        status, payload = await self.graph(method, path, body)
        if status >= 300:
            raise BenchError(f"Graph {method} {path} answered {status}: {payload!r}")
        return payload

    async def control(self, method: str, path: str, body: object = None) -> Any:
        status, payload = await self._request(
            method, f"{self.stack.graph_base}/_emulator{path}", body
        )
        if status >= 300:
            raise BenchError(f"emulator control {method} {path} answered {status}: {payload!r}")
        return payload

    async def post_raw(self, url: str, body: bytes) -> tuple[int, str]:
        """POST a ready-made JSON body; (status, answer text)."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        headers = {"Content-Type": "application/json"}
        async with self.http.post(url, data=body, headers=headers, timeout=timeout) as response:
            return response.status, await response.text()

    async def stats(self) -> dict[str, Any]:
        payload: dict[str, Any] = await self.control("GET", "/stats")
        return payload

    async def http_counts(self) -> dict[str, int]:
        """Top-level Graph HTTP requests so far (`bench.emulator`'s counter)."""
        _, payload = await self._request("GET", self.stack.graph_base + HTTP_COUNTS_PATH)
        return {str(k): int(v) for k, v in dict(payload).items()}

    async def run_function(self, name: str, payload: str = "") -> None:
        """Run a queue or timer function now through the host's admin API (answers 202)."""
        status, answer = await self._request(
            "POST", f"{self.stack.admin_url}/admin/functions/{name}", {"input": payload}
        )
        if status != 202:
            raise BenchError(f"admin run of {name} answered {status}: {answer!r}")


async def poll(
    check: Callable[[], Awaitable[T | None]],
    *,
    within_s: float,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """`check()` every `interval_s` until it returns a value other than None/False.

    Raises BenchError after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not reached within {within_s:.0f} s")
        await asyncio.sleep(interval_s)
