"""The API calls the console needs besides the resource routes: the resource list, the
sync log by outcome and page, and the preview of a resource's templates."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from functions import console, resources
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from tests.builders import T0
from tests.fakes import Clock, FakeWorld, fake_world
from tests.fixtures.callers import ADMIN, FRONTEND
from tests.functions.test_api import call, error_fields


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), ("room-1@contoso.com", "alice@contoso.com"))
    monkeypatch.setattr(resources, "get_services", lambda: w.services)
    return w


async def connect(resource_id: str, **settings: object) -> None:
    body = {"mailbox": f"{resource_id}@contoso.com", "displayName": resource_id, **settings}
    status, answer = await call(resources.put_resource, "PUT", {"resourceId": resource_id}, body)
    assert status == 202, answer


async def test_the_list_shows_every_resource_by_id_with_its_status(world: FakeWorld) -> None:
    await connect("room-1", displayName="Room 1")
    await connect("alice")
    await world.finish_connects()
    await call(resources.delete_resource, "DELETE", {"resourceId": "alice"})

    status, body = await call(resources.list_resources, "GET")

    assert status == 200
    shown = [
        (r["resourceId"], r["settings"]["displayName"], r["status"]["state"]) for r in body["value"]
    ]
    assert shown == [("alice", "alice", "disconnected"), ("room-1", "Room 1", "connected")]
    assert body["value"][1]["mappedEvents"] == 0


async def test_the_list_is_empty_without_resources(world: FakeWorld) -> None:
    assert await call(resources.list_resources, "GET") == (200, {"value": []})


def _log(world: FakeWorld, count: int) -> None:
    for i in range(count):
        world.sync_log.entries.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 + timedelta(minutes=i),
                direction=SyncDirection.OUTBOUND,
                action=f"a{i}",
                outcome=SyncOutcome.FAILED if i % 3 == 0 else SyncOutcome.OK,
            )
        )


async def test_the_sync_log_pages_newest_first_by_outcome(world: FakeWorld) -> None:
    await connect("room-1")
    world.sync_log.entries.clear()
    _log(world, 10)  # failed: a0, a3, a6, a9

    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", "outcome": "failed", **({"after": after} if after else {})}
        status, body = await call(
            resources.get_sync_log, "GET", {"resourceId": "room-1"}, params=params
        )
        assert status == 200, body
        seen += [entry["action"] for entry in body["value"]]
        pages += 1
        after = body.get("nextPage")
        if not after:
            break
    assert seen == ["a9", "a6", "a3", "a0"]
    assert pages == 2


async def test_a_full_last_page_says_no_more_follow(world: FakeWorld) -> None:
    await connect("room-1")
    world.sync_log.entries.clear()
    _log(world, 4)
    status, body = await call(
        resources.get_sync_log, "GET", {"resourceId": "room-1"}, params={"limit": "4"}
    )
    assert status == 200
    assert [e["action"] for e in body["value"]] == ["a3", "a2", "a1", "a0"]
    assert body["nextPage"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [({"outcome": "great"}, "outcome"), ({"after": "x' or 1 eq 1"}, "after")],
)
async def test_a_bad_outcome_or_cursor_is_refused(
    world: FakeWorld, params: dict[str, str], field: str
) -> None:
    await connect("room-1")
    status, body = await call(
        resources.get_sync_log, "GET", {"resourceId": "room-1"}, params=params
    )
    assert (status, error_fields(body)) == (422, {field})


async def test_the_preview_renders_a_sample_booking_in_the_time_zone(world: FakeWorld) -> None:
    status, body = await call(
        resources.preview_templates,
        "POST",
        body={
            "subjectTemplate": "Training: {title} {{ok}}",
            "bodyTemplate": "For {customerName} at {start}",
            "timeZone": "America/New_York",
        },
    )
    assert status == 200, body
    assert body["subject"] == "Training: Consultation {ok}"
    # Tomorrow (of the clock, in New York) at 09:00 there, in UTC on the wire.
    assert body["body"] == "For Kim Lee at 2030-01-07 09:00"
    assert body["sample"]["start"] == "2030-01-07T14:00:00Z"


async def test_the_preview_refuses_what_a_resource_would_refuse(world: FakeWorld) -> None:
    status, body = await call(
        resources.preview_templates,
        "POST",
        body={"subjectTemplate": "{title:>99}", "bodyTemplate": "{price}", "timeZone": "Mars/Base"},
    )
    assert (status, error_fields(body)) == (422, {"subjectTemplate", "bodyTemplate", "timeZone"})


async def serve(route_params: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    function = console.console_file if route_params else console.console_page
    handler = function.build().get_user_function()
    request = func.HttpRequest(
        method="GET",
        url="http://localhost/api/console",
        body=b"",
        headers={**ADMIN, **(headers or {})},
        route_params=route_params,
    )
    return await handler(request)


async def test_the_console_takes_the_administrator_role() -> None:
    for route_params in ({}, {"file": "console.js"}):
        function = console.console_file if route_params else console.console_page
        handler = function.build().get_user_function()
        for headers, status in ((FRONTEND, 403), ({}, 401)):
            request = func.HttpRequest(
                method="GET",
                url="http://localhost/api/console",
                body=b"",
                headers=headers,
                route_params=route_params,
            )
            assert (await handler(request)).status_code == status


@pytest.mark.parametrize(
    ("route_params", "media_type"),
    [
        ({}, "text/html"),
        ({"file": "app.js"}, "text/javascript"),
        ({"file": "console.css"}, "text/css"),
    ],
)
async def test_console_files_come_with_their_type_a_strict_policy_and_an_etag(
    route_params: dict[str, str], media_type: str
) -> None:
    response = await serve(route_params)
    assert response.status_code == 200
    assert response.mimetype == media_type
    assert response.charset == "utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    again = await serve(route_params, {"If-None-Match": f'"x", W/{response.headers["ETag"]}'})
    assert (again.status_code, again.get_body()) == (304, b"")


def test_the_page_loads_nothing_inline_and_nothing_from_elsewhere() -> None:
    page = (console.ASSETS / "index.html").read_text()
    assert "<script>" not in page
    assert "style=" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


@pytest.mark.parametrize(("name", "status"), [("nothing.js", 404), ("..", 422), (".env", 422)])
async def test_anything_else_is_refused(name: str, status: int) -> None:
    response = await serve({"file": name})
    assert response.status_code == status
