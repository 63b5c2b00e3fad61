"""What goes on the wire: one Prefer header per request, always with IdType="ImmutableId",
merged with the request's own preferences; inner `$batch` requests carry their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest_asyncio
from aiohttp import web
from kiota_http.middleware import (
    BodyInspectionHandler,
    HeadersInspectionHandler,
    ParametersNameDecodingHandler,
    RetryHandler,
    UrlReplaceHandler,
)
from msgraph_core.middleware import GraphTelemetryHandler

from shared.adapters.graph import GraphCalendarGateway, StaticTokenCredential
from shared.adapters.graph.client import (
    PreferHeaderHandler,
    graph_middleware,
    graph_scope,
    merge_preferences,
)
from shared.ports import EventWrite
from tests.gateway.conftest import ALICE, FAST_RETRY
from tests.gateway.test_events import START, draft

IMMUTABLE = 'IdType="ImmutableId"'
UTC_ZONE = 'outlook.timezone="UTC"'


@dataclass
class Seen:
    method: str
    path: str
    prefer: list[str]
    authorization: str | None
    body: Any = None


@dataclass
class Recorder:
    """A stand-in Graph that answers every read with an empty page and records requests."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.headers.getall("Prefer", []),
                request.headers.get("Authorization"),
                body,
            )
        )
        if request.path.endswith("/$batch") and isinstance(body, dict):
            answers = [{"id": r["id"], "status": 204} for r in body["requests"]]
            return web.json_response({"responses": answers})
        return web.json_response(
            {"value": [], "@odata.deltaLink": f"{self.url}/v1.0/users/x/calendarView/delta?t=1"}
        )


@pytest_asyncio.fixture(loop_scope="session")
async def recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


async def test_every_request_sends_one_merged_prefer_header(recorder: Recorder) -> None:
    gateway = GraphCalendarGateway.connect(
        recorder.url + "/v1.0", StaticTokenCredential("t0k3n"), retry=FAST_RETRY, page_size=7
    )
    try:
        await gateway.calendar_view(ALICE, START, START + timedelta(days=1))
        await gateway.delta(ALICE, START, START + timedelta(days=1), None)
        await gateway.delete_event(ALICE, "AAMkAGx")
        await gateway.write_batch(
            [
                EventWrite(mailbox=ALICE, op="delete", event_id="AAMkAGx"),
                EventWrite(mailbox=ALICE, op="create", draft=draft("b"), transaction_id="t"),
            ]
        )
    finally:
        await gateway.close()

    view, delta, delete, batch = recorder.seen
    assert all(len(seen.prefer) == 1 for seen in recorder.seen)
    assert all(IMMUTABLE in seen.prefer[0] for seen in recorder.seen)
    assert all(seen.authorization == "Bearer t0k3n" for seen in recorder.seen)
    assert UTC_ZONE in view.prefer[0]
    assert UTC_ZONE in delta.prefer[0]
    assert "odata.maxpagesize=7" in delta.prefer[0]
    assert delta.path == "/v1.0/users/alice@contoso.com/calendarView/delta()"
    assert delete.method == "DELETE"

    inner = batch.body["requests"]
    assert [r["method"] for r in inner] == ["DELETE", "POST"]
    assert all(r["url"].startswith("/users/alice%40contoso.com/events") for r in inner)
    assert all(IMMUTABLE in r["headers"]["Prefer"] for r in inner)
    assert UTC_ZONE in inner[1]["headers"]["Prefer"]
    assert inner[1]["body"]["transactionId"] == "t"
    assert inner[1]["body"]["start"]["timeZone"] == "W. Europe Standard Time"


def test_preferences_merge_without_overwriting() -> None:
    merged = merge_preferences(
        ['outlook.timezone="UTC", odata.maxpagesize=50', 'IdType="RestId"'], IMMUTABLE
    )
    # The request's own IdType wins over the default; nothing is dropped or repeated.
    assert merged == 'outlook.timezone="UTC", odata.maxpagesize=50, IdType="RestId"'
    assert merge_preferences([], IMMUTABLE) == IMMUTABLE
    assert merge_preferences(['outlook.timezone="A, B"'], IMMUTABLE) == (
        f'outlook.timezone="A, B", {IMMUTABLE}'
    )


def test_tokens_are_asked_for_the_graph_host_scope() -> None:
    assert graph_scope("https://graph.microsoft.com/v1.0") == "https://graph.microsoft.com/.default"
    assert graph_scope("https://graph.microsoft.us/v1.0") == "https://graph.microsoft.us/.default"


def test_the_middleware_holds_no_handler_that_only_acts_on_options_the_app_never_sets() -> None:
    # Each handler costs every request its tracing span; the URL replacer also parses the
    # URL again (Graph's `/me`, which app-only tokens cannot use).
    kinds = {type(handler) for handler in graph_middleware()}

    assert not kinds & {
        RetryHandler,
        UrlReplaceHandler,
        HeadersInspectionHandler,
        BodyInspectionHandler,
    }
    assert {PreferHeaderHandler, ParametersNameDecodingHandler, GraphTelemetryHandler} <= kinds
