"""Test doubles for talking to the Graph emulator over real HTTP: a small Graph client and a
subscriber (webhook receiver) on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

BOOKING_PROPERTY = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name BookingId"
TEST_TOKEN = "test-token"
# How long a test waits for a notification; deliveries take milliseconds here.
NOTIFICATION_WAIT_S = 3.0


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code"))
        return None


class GraphClient:
    """Raw HTTP against ``graph_url`` (paths like ``/users/a@b/events``) or absolute links."""

    def __init__(self, session: aiohttp.ClientSession, graph_url: str) -> None:
        self.session = session
        self.graph_url = graph_url
        self.token = TEST_TOKEN

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Reply:
        url = path if path.startswith("http") else self.graph_url + path
        all_headers: list[tuple[str, str]] = []
        bearer = self.token if token is None else token
        if bearer:
            all_headers.append(("Authorization", f"Bearer {bearer}"))
        if isinstance(headers, dict):
            all_headers.extend(headers.items())
        elif headers:
            all_headers.extend(headers)
        async with self.session.request(
            method, url, json=json, headers=all_headers, params=params
        ) as response:
            raw = await response.read()
            body = await response.json(content_type=None) if raw else None
            return Reply(response.status, response.headers, body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return await self.call("PATCH", path, json=json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, **kwargs)


def event_body(
    subject: str, start: str, end: str, time_zone: str = "UTC", **extra: Any
) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": time_zone},
        "end": {"dateTime": end, "timeZone": time_zone},
        **extra,
    }


@dataclass
class Receiver:
    """A subscriber's webhook. ``validation`` decides how it answers the handshake:
    ``echo`` (correctly), ``wrong`` (another token), ``json`` (right token, wrong type)."""

    validation: str = "echo"
    fail_next: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    posts: int = 0
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def notification_url(self) -> str:
        return f"{self.base_url}/notify?tenant=contoso"

    @property
    def lifecycle_url(self) -> str:
        return f"{self.base_url}/lifecycle"

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            if self.validation == "wrong":
                return web.Response(text=token + "x", content_type="text/plain")
            if self.validation == "json":
                return web.json_response(token)
            return web.Response(text=token, content_type="text/plain")
        self.posts += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        payload = await request.json()
        target = self.lifecycle if request.path == "/lifecycle" else self.notifications
        target.extend(payload["value"])
        self._changed.set()
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/notify", self._handle)
        app.router.add_post("/lifecycle", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, condition: Callable[[Receiver], bool]) -> None:
        async with asyncio.timeout(NOTIFICATION_WAIT_S):
            while not condition(self):
                self._changed.clear()
                await self._changed.wait()
