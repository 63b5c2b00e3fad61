"""Roles over the local stack: the tests stand where App Service Authentication stands
and send each caller's principal. Driven by the OpenAPI operations, so a new protected
route fails here until it has a request below. A booking frontend gets 403 on every
administration route and 2xx on the booking routes, an administrator the reverse (and
the booking reads, which the console shows); no principal, or one that is not, is 401."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from functions.openapi import OPERATIONS
from shared.domain.callers import Role
from tests.fixtures.callers import ADMIN, EVERY_ROLE, FRONTEND
from tests.fixtures.stack import KEY_HEADER, Mailboxes, Stack

pytestmark = pytest.mark.integration

START = (datetime.now(UTC) + timedelta(days=4)).replace(hour=9, minute=0, second=0, microsecond=0)
PROTECTED = {op.operation_id: op for op in OPERATIONS if op.roles}


@dataclass(frozen=True)
class World:
    room: str
    mailbox: str
    booking_id: str


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # no `+` to escape in a query


def window(hours: int) -> str:
    return f"start={iso(START)}&end={iso(START + timedelta(hours=hours))}"


def at(hours: int) -> dict[str, str]:
    start = START + timedelta(hours=hours)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}


# One request per protected operation, in an order in which each answers 2xx to a caller
# holding its role: reads before the changes, the disconnect last.
REQUESTS: dict[str, Callable[[World], tuple[str, str, Any]]] = {
    "healthDetails": lambda w: ("GET", "/health/details", None),
    "getAvailability": lambda w: ("GET", f"/resources/{w.room}/availability?{window(8)}", None),
    "getResource": lambda w: ("GET", f"/resources/{w.room}", None),
    "getSyncLog": lambda w: ("GET", f"/resources/{w.room}/sync-log", None),
    "listResources": lambda w: ("GET", "/resources", None),
    "console": lambda w: ("GET", "/console", None),
    "consoleFile": lambda w: ("GET", "/console/app.js", None),
    "previewTemplates": lambda w: ("POST", "/template-preview", {"subjectTemplate": "{title}"}),
    "listBookings": lambda w: ("GET", f"/bookings?resourceId={w.room}&{window(8)}", None),
    "getBooking": lambda w: ("GET", f"/bookings/{w.booking_id}", None),
    "createBooking": lambda w: ("POST", "/bookings", {
        "resourceIds": [w.room], **at(3), "title": "Second",
        "customer": {"name": "Kim", "email": "kim@example.com"}}),
    "rescheduleBooking": lambda w: ("POST", f"/bookings/{w.booking_id}/reschedule", at(5)),
    "cancelBooking": lambda w: ("POST", f"/bookings/{w.booking_id}/cancel", None),
    "putResource": lambda w: ("PUT", f"/resources/{w.room}", {
        "mailbox": w.mailbox, "displayName": "Renamed"}),
    "resyncResource": lambda w: ("POST", f"/resources/{w.room}/resync", None),
    "deleteResource": lambda w: ("DELETE", f"/resources/{w.room}", None),
}  # fmt: skip


def test_every_protected_operation_has_a_request_here() -> None:
    assert list(REQUESTS) == sorted(REQUESTS, key=list(REQUESTS).index)
    assert set(REQUESTS) == set(PROTECTED)


async def world(stack: Stack, mb: Mailboxes) -> World:
    room = await stack.connect(mb.room)
    status, created = await stack.call(
        "POST",
        "/bookings",
        {"resourceIds": [room], **at(1), "title": "First",
         "customer": {"name": "Ada", "email": "ada@example.com"}},
        headers=FRONTEND,
    )  # fmt: skip
    assert status == 201, created
    return World(room=room, mailbox=mb.room, booking_id=created["bookingId"])


async def send(stack: Stack, w: World, operation: str, headers: dict[str, str]) -> tuple[int, Any]:
    method, path, body = REQUESTS[operation](w)
    return await stack.call(method, path, body, headers=headers)


@pytest.mark.parametrize(
    ("role", "headers"), [(Role.FRONTEND, FRONTEND), (Role.ADMIN, ADMIN)], ids=["frontend", "admin"]
)
async def test_each_role_gets_2xx_where_it_is_named_and_403_elsewhere(
    stack: Stack, mb: Mailboxes, role: Role, headers: dict[str, str]
) -> None:
    w = await world(stack, mb)
    answered = {}
    for operation in REQUESTS:
        status, body = await send(stack, w, operation, headers)
        answered[operation] = status
        if role in PROTECTED[operation].roles:
            assert 200 <= status < 300, (operation, body)
        else:
            assert (status, body["error"]["code"]) == (403, "forbidden"), (operation, body)
            assert any(r.value in body["error"]["message"] for r in PROTECTED[operation].roles)
    refused = {op for op, status in answered.items() if status == 403}
    if role is Role.FRONTEND:
        assert refused == {
            "healthDetails", "getResource", "getSyncLog", "listResources", "console",
            "consoleFile", "previewTemplates", "putResource", "resyncResource",
            "deleteResource",
        }  # fmt: skip
        # Refused means untouched: the resource is still connected, under its old name.
        status, view = await stack.call("GET", f"/resources/{w.room}", headers=ADMIN)
        assert status == 200
        assert (view["status"]["state"], view["settings"]["displayName"]) == ("connected", w.room)
    else:
        assert refused == {
            "getAvailability", "createBooking", "rescheduleBooking", "cancelBooking"
        }  # fmt: skip
        status, booking = await stack.call("GET", f"/bookings/{w.booking_id}", headers=FRONTEND)
        assert (status, booking["status"], booking["start"][:16]) == (
            200, "confirmed", at(1)["start"][:16],
        )  # fmt: skip


def forged(text: str) -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize(
    "principal",
    [{}, {"X-MS-CLIENT-PRINCIPAL": "not base64!"}, forged("{}"), forged('{"auth_typ": "aad"')],
    ids=["none", "not base64", "no claims", "cut-off JSON"],
)
async def test_without_a_readable_principal_every_protected_route_is_401_not_500(
    stack: Stack, mb: Mailboxes, principal: dict[str, str]
) -> None:
    w = await world(stack, mb)
    # A client of its own: the stack's sends a principal with every request.
    async with aiohttp.ClientSession(headers={KEY_HEADER: stack.keys.function}) as bare:
        for operation in REQUESTS:
            method, path, body = REQUESTS[operation](w)
            async with bare.request(method, stack.api + path, json=body, headers=principal) as r:
                answer = await r.json(content_type=None)
                assert (r.status, answer["error"]["code"]) == (401, "unauthorized"), operation
    # Nothing was done: the resource is connected and the booking as it was.
    status, view = await stack.call("GET", f"/resources/{w.room}", headers=EVERY_ROLE)
    assert (status, view["status"]["state"]) == (200, "connected")


async def test_anonymous_routes_need_no_principal(stack: Stack) -> None:
    async with aiohttp.ClientSession() as bare:
        async with bare.get(stack.api + "/health") as r:
            assert r.status in (200, 503)
            assert "resources" not in await r.json()  # terse: the details are the admins'
        async with bare.get(stack.api + "/openapi.json") as r:
            assert r.status == 200
        url = stack.api + "/graph/notifications?validationToken=abc"
        async with bare.post(url) as r:
            assert (r.status, await r.text()) == (200, "abc")
