"""A request another site makes the administrator's browser send: the browser attaches the
sign-in (Easy Auth's session cookie in Azure; `make run`'s local caller is attached to
every request) to a cross-site form POST, which needs no CORS preflight. Such a request
must not change anything."""

from __future__ import annotations

from datetime import timedelta

import pytest

from functions import resources
from shared.domain.messages import SYNC_OUTBOUND_QUEUE
from tests.builders import T0
from tests.fakes import Clock, FakeWorld, fake_world
from tests.fixtures.callers import ADMIN
from tests.functions.test_api import call

# What Chromium sends for <form method="post" action="https://app/api/..."> submitted
# from https://evil.example (a "simple" request: no preflight, cookies included).
CROSS_SITE_FORM = {
    **ADMIN,
    "Origin": "https://evil.example",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Content-Type": "application/x-www-form-urlencoded",
}


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), ("room-1@contoso.com",))
    monkeypatch.setattr(resources, "get_services", lambda: w.services)
    return w


async def test_a_cross_site_form_post_cannot_resync_a_resource(world: FakeWorld) -> None:
    body = {"mailbox": "room-1@contoso.com", "displayName": "Room 1"}
    status, _ = await call(resources.put_resource, "PUT", {"resourceId": "room-1"}, body)
    assert status == 202
    await world.finish_connects()
    queued = len(world.queue.bodies(SYNC_OUTBOUND_QUEUE))

    status, answer = await call(
        resources.resync_resource,
        "POST",
        {"resourceId": "room-1"},
        raw=b"x=1",
        headers=CROSS_SITE_FORM,
    )

    assert status == 403, answer
    assert len(world.queue.bodies(SYNC_OUTBOUND_QUEUE)) == queued


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 202),  # a server: no browser headers
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, 202),  # the console
        ({"Sec-Fetch-Site": "none"}, 202),  # typed by the user
        ({"Sec-Fetch-Site": "same-site"}, 403),  # a sibling app on the same site
        ({"Origin": "http://localhost"}, 202),  # no Fetch Metadata: the Origin decides
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),  # a sandboxed frame or a file
    ],
)
async def test_only_the_own_origin_or_a_server_may_change_things(
    world: FakeWorld, headers: dict[str, str], status: int
) -> None:
    body = {"mailbox": "room-1@contoso.com", "displayName": "Room 1"}
    await call(resources.put_resource, "PUT", {"resourceId": "room-1"}, body)
    await world.finish_connects()

    got, answer = await call(
        resources.resync_resource,
        "POST",
        {"resourceId": "room-1"},
        headers={"Host": "localhost", **headers},
    )

    assert got == status, answer
    if status == 403:
        assert answer["error"]["code"] == "forbidden"


async def test_reading_from_another_origin_is_left_to_the_browser_s_cors(
    world: FakeWorld,
) -> None:
    """A GET changes nothing; the browser keeps its answer from the other site (no CORS)."""
    got, _ = await call(resources.list_resources, "GET", headers={"Origin": "https://evil.example"})
    assert got == 200
