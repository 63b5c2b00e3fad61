"""Real Graph answers the emulator does not give, fed through the gateway.

A small canned Graph on loopback answers each request with the next payload queued for
it. Every payload names where its shape comes from (a Microsoft docs example, or an answer
a user posted in a Graph SDK or docs issue); ids and subjects are this test's own. Add to
this corpus whenever Graph surprises the app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from shared.adapters.graph import BOOKING_ID_PROPERTY, GraphCalendarGateway, build_calendar_gateway
from shared.domain.calendar import EventDraft, ShowAs
from shared.domain.errors import GraphError
from shared.ports import EventWrite
from shared.settings import GraphAuthMode, Settings
from tests.gateway.conftest import FAST_RETRY

ROOM = "room-1@contoso.com"
START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


@dataclass
class CannedGraph:
    """Answers `METHOD /path` (after /v1.0, query ignored) with queued (status, headers,
    body) in order; records every request as (method, path, JSON body)."""

    answers: dict[str, list[tuple[int, dict[str, str], Any]]] = field(default_factory=dict)
    seen: list[tuple[str, str, Any]] = field(default_factory=list)

    def queue(
        self, key: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        self.answers.setdefault(key, []).append((status, headers or {}, body))

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/v1.0")
        raw = await request.read()
        self.seen.append((request.method, path, json.loads(raw) if raw else None))
        queued = self.answers.get(f"{request.method} {path}")
        if not queued:
            return web.json_response({"error": {"code": "NotCanned", "message": path}}, status=500)
        status, headers, body = queued.pop(0)
        return web.json_response(body, status=status, headers=headers)


@pytest_asyncio.fixture
async def canned() -> AsyncIterator[tuple[CannedGraph, GraphCalendarGateway]]:
    graph = CannedGraph()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", graph.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = Settings(
        graph_tenant_id="00000000-0000-0000-0000-0000000000aa",
        graph_base_url=f"http://127.0.0.1:{port}/v1.0",
        graph_auth_mode=GraphAuthMode.EMULATOR,
        public_base_url="http://localhost:7071",
        storage_connection_string="UseDevelopmentStorage=true",
    )
    gateway = build_calendar_gateway(settings, retry=FAST_RETRY)
    try:
        yield graph, gateway
    finally:
        await gateway.close()
        await runner.cleanup()


def _draft(zone: str) -> EventDraft:
    return EventDraft(
        subject="Interview",
        start=START,
        end=START + timedelta(hours=1),
        time_zone=zone,
        booking_id="bk-1",
    )


def _event(event_id: str, start: str, end: str, zone: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "changeKey": "DwAAABYAAADiJ+9DE2VNRqSHd4/nWAsxAAAMk9Wv",
        "subject": "Interview",
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        "showAs": "busy",
        "type": "singleInstance",
    }


# getSchedule answers carry capitalised statuses. Shape: the example of
# https://learn.microsoft.com/graph/api/calendar-getschedule?view=graph-rest-1.0 and a
# real answer in https://github.com/microsoftgraph/msgraph-metadata/issues/598.
GET_SCHEDULE_CAPITALISED = {
    "value": [
        {
            "scheduleId": ROOM,
            "availabilityView": "0220",
            "scheduleItems": [
                {
                    "isPrivate": False,
                    "status": "Busy",
                    "subject": "Board",
                    "start": {"dateTime": "2030-03-04T09:30:00.0000000", "timeZone": "UTC"},
                    "end": {"dateTime": "2030-03-04T10:30:00.0000000", "timeZone": "UTC"},
                },
                {
                    "isPrivate": True,
                    "status": "Tentative",
                    "start": {"dateTime": "2030-03-04T11:00:00.0000000", "timeZone": "UTC"},
                    "end": {"dateTime": "2030-03-04T11:30:00.0000000", "timeZone": "UTC"},
                },
            ],
        }
    ]
}

# A schedule Graph could not read answers with an `error` instead of items (same page:
# "scheduleInformation ... error").
GET_SCHEDULE_WITH_ERROR = {
    "value": [
        {
            "scheduleId": ROOM,
            "availabilityView": "",
            "error": {
                "message": "The user or resource is not found.",
                "responseCode": "ErrorMailRecipientNotFound",
            },
        }
    ]
}


async def test_get_schedule_statuses_are_read_case_insensitively(
    canned: tuple[CannedGraph, GraphCalendarGateway],
) -> None:
    graph, gateway = canned
    graph.queue(f"POST /users/{ROOM}/calendar/getSchedule", 200, GET_SCHEDULE_CAPITALISED)

    blocks = await gateway.get_schedule(ROOM, [ROOM], START, START + timedelta(hours=8))

    assert [(b.show_as, b.subject) for b in blocks] == [
        (ShowAs.BUSY, "Board"),
        (ShowAs.TENTATIVE, None),
    ]


async def test_a_schedule_error_is_never_read_as_free_time(
    canned: tuple[CannedGraph, GraphCalendarGateway],
) -> None:
    graph, gateway = canned
    graph.queue(f"POST /users/{ROOM}/calendar/getSchedule", 200, GET_SCHEDULE_WITH_ERROR)

    with pytest.raises(GraphError, match="ErrorMailRecipientNotFound"):
        await gateway.get_schedule(ROOM, [ROOM], START, START + timedelta(hours=8))


# Graph answers a create in the zone the event was written in, whatever the UTC preference:
# https://github.com/microsoftgraph/microsoft-graph-docs/issues/116
# https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/8645
CREATED_IN_PACIFIC_STANDARD_TIME = _event(
    "AAMkAGI2",
    "2030-03-04T01:00:00.0000000",
    "2030-03-04T02:00:00.0000000",
    "Pacific Standard Time",
)


async def test_a_create_answered_in_a_windows_zone_is_read(
    canned: tuple[CannedGraph, GraphCalendarGateway],
) -> None:
    graph, gateway = canned
    graph.queue(f"POST /users/{ROOM}/events", 201, CREATED_IN_PACIFIC_STANDARD_TIME)

    created = await gateway.create_event(ROOM, _draft("America/Los_Angeles"), "tx-1")

    # 01:00 Pacific Standard Time (UTC-8) is 09:00 UTC.
    assert (created.start, created.end) == (START, START + timedelta(hours=1))
    [(_, _, sent)] = graph.seen
    assert sent["start"] == {"dateTime": "2030-03-04T01:00:00", "timeZone": "Pacific Standard Time"}


# A zone refused as ErrorPropertyValidationFailure, not TimeZoneNotSupportedException:
# https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/19286
ZONE_REFUSED_AS_PROPERTY_VALIDATION = {
    "error": {
        "code": "ErrorPropertyValidationFailure",
        "message": "At least one property failed validation. TimeZone 'Africa/Casablanca' is "
        "not supported.",
    }
}


async def test_a_zone_refused_as_property_validation_failure_is_a_zone_refusal(
    canned: tuple[CannedGraph, GraphCalendarGateway],
) -> None:
    graph, gateway = canned
    events = f"POST /users/{ROOM}/events"
    graph.queue(events, 400, ZONE_REFUSED_AS_PROPERTY_VALIDATION)
    graph.queue(
        events,
        201,
        _event("AAMkAGI1", "2030-03-04T09:00:00.0000000", "2030-03-04T10:00:00.0000000", "UTC"),
    )

    created = await gateway.create_event(ROOM, _draft("Africa/Casablanca"), "tx-1")

    assert (created.start, created.end) == (START, START + timedelta(hours=1))
    [(_, _, first), (_, _, second)] = graph.seen
    assert first["start"]["timeZone"] != "UTC"
    assert second["start"]["timeZone"] == "UTC"


# A throttled $batch: the outer status is 424 and each step carries its own answer, a
# throttled one its own Retry-After. https://learn.microsoft.com/graph/throttling
# ("Throttling and batching"); Dev Proxy answers the same way.
def _batch_answer(responses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"responses": responses}


async def test_an_outer_424_batch_is_read_step_by_step_honouring_retry_after(
    canned: tuple[CannedGraph, GraphCalendarGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, gateway = canned
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(gateway._caller, "sleep", record)
    created = _event(
        "AAMkAGI1", "2030-03-04T09:00:00.0000000", "2030-03-04T10:00:00.0000000", "UTC"
    )
    throttled = {
        "error": {"code": "ApplicationThrottled", "message": "Application is over its limit."}
    }
    graph.queue(
        "POST /$batch",
        424,
        _batch_answer(
            [
                {"id": "0", "status": 201, "headers": {}, "body": created},
                {"id": "1", "status": 429, "headers": {"Retry-After": "1"}, "body": throttled},
            ]
        ),
    )
    graph.queue(
        "POST /$batch",
        200,
        _batch_answer([{"id": "1", "status": 201, "headers": {}, "body": {**created, "id": "B"}}]),
    )

    results = await gateway.write_batch(
        [
            EventWrite(mailbox=ROOM, op="create", draft=_draft("UTC"), transaction_id="tx-a"),
            EventWrite(mailbox=ROOM, op="create", draft=_draft("UTC"), transaction_id="tx-b"),
        ]
    )

    assert [r.error for r in results] == [None, None]
    assert [r.event.event_id if r.event else None for r in results] == ["AAMkAGI1", "B"]
    second_batch = graph.seen[1][2]
    assert [step["id"] for step in second_batch["requests"]] == ["1"]
    assert waits == [1.0]


@pytest.mark.parametrize(
    "listing",
    [None, {}, {"value": "not a list"}],
    ids=["no-body", "no-value", "value-not-a-list"],
)
async def test_a_calendar_listing_that_cannot_be_read_is_a_doubt_not_a_delete(
    canned: tuple[CannedGraph, GraphCalendarGateway], listing: Any
) -> None:
    # Not a captured payload: a 2xx step whose body holds no listing. Whether our event is
    # in the calendar is then unknown, and a doubt must never read as deleted (a delete
    # would cancel the booking under cancel_booking).
    graph, gateway = canned
    ours = {
        **_event("AAMkOurs", "2030-03-04T09:00:00.0000000", "2030-03-04T10:00:00.0000000", "UTC"),
        "singleValueExtendedProperties": [{"id": BOOKING_ID_PROPERTY, "value": "bk-1"}],
    }
    graph.queue(f"GET /users/{ROOM}/events/AAMkOurs", 200, ours)
    graph.queue("POST /$batch", 200, _batch_answer([{"id": "0", "status": 200, "body": listing}]))

    with pytest.raises(GraphError):
        await gateway.get_event(ROOM, "AAMkOurs")


@pytest.mark.parametrize(
    ("in_view", "expected"),
    [([{"id": "AAMkOurs"}], "present"), ([], "gone"), ([{"id": "other"}], "gone")],
    ids=["listing-lags-the-view-holds-it", "neither-holds-it", "the-view-holds-another"],
)
async def test_an_event_the_calendar_listing_misses_is_looked_for_in_its_view(
    canned: tuple[CannedGraph, GraphCalendarGateway], in_view: list[dict[str, str]], expected: str
) -> None:
    # Not a captured payload: the booking-id listing leaves our event out (a filter that
    # lags a fresh event would), so the calendar's view of the event's own times decides.
    graph, gateway = canned
    ours = {
        **_event("AAMkOurs", "2030-03-04T09:00:00.0000000", "2030-03-04T10:00:00.0000000", "UTC"),
        "singleValueExtendedProperties": [{"id": BOOKING_ID_PROPERTY, "value": "bk-1"}],
    }
    graph.queue(f"GET /users/{ROOM}/events/AAMkOurs", 200, ours)
    graph.queue(
        "POST /$batch", 200, _batch_answer([{"id": "0", "status": 200, "body": {"value": []}}])
    )
    graph.queue(
        "POST /$batch", 200, _batch_answer([{"id": "0", "status": 200, "body": {"value": in_view}}])
    )

    read = await gateway.get_event(ROOM, "AAMkOurs")

    assert (read is not None) == (expected == "present")
    view_step = graph.seen[-1][2]["requests"][0]
    assert "/calendar/calendarView?" in view_step["url"]
    assert "startDateTime=2030-03-04T09%3A00%3A00Z" in view_step["url"] or (
        "startDateTime=2030-03-04T09:00:00Z" in view_step["url"]
    )
