"""A Python client generated from the served /api/openapi.json with openapi-python-client,
as a booking frontend would make one, drives the README's walk through the local stack:
connect, book with an Idempotency-Key (and again: the same booking), read, availability,
a 409 for a taken slot, reschedule, cancel. The generator must print no warning; the
client goes to a temporary folder, never into the repository."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fixtures.callers import EVERY_ROLE
from tests.fixtures.stack import KEY_HEADER, Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration

PACKAGE = "booking_sync_client"


def generator() -> str:
    """The openapi-python-client of this interpreter's environment (requirements-dev.txt)."""
    here = Path(sys.executable).parent / "openapi-python-client"
    found = str(here) if here.exists() else shutil.which("openapi-python-client")
    if found is None:
        # Not a skip: `make test` installs requirements-dev.txt, so a missing generator
        # is a broken environment, and a skip would hide that the contract is unchecked.
        pytest.fail("openapi-python-client is not installed: install requirements-dev.txt")
    return found


def generate(document: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(document))
    # The generator formats its output with ruff, which it looks for on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(  # noqa: S603  # a fixed command on a file this test wrote
        [generator(), "generate", "--path", str(spec), "--output-path", str(folder / PACKAGE),
         "--meta", "none"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PATH": path},
    )  # fmt: skip


@pytest.fixture
def client_modules(tmp_path: Path) -> Iterator[Path]:
    """A folder importable for this test; the generated package is forgotten after."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_walks_through_booking(
    stack: Stack, mb: Mailboxes, client_modules: Path
) -> None:
    status, document = await stack.call("GET", "/openapi.json")
    assert status == 200
    generated = await asyncio.to_thread(generate, document, client_modules)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    said = [
        line
        for line in (generated.stdout + generated.stderr).splitlines()
        if line.strip() and not line.startswith("Generating ")
    ]
    assert said == [], "the generator warned:\n" + "\n".join(said)

    api, models = load("client"), load("models")
    put_resource = load("api.administration.put_resource")
    get_resource = load("api.administration.get_resource")
    create_booking = load("api.frontend.create_booking")
    get_booking = load("api.frontend.get_booking")
    get_availability = load("api.frontend.get_availability")
    reschedule_booking = load("api.frontend.reschedule_booking")
    cancel_booking = load("api.frontend.cancel_booking")

    # Easy Auth in Azure turns the caller's Entra token into a principal; the test stands
    # where Easy Auth stands and sends the principal itself.
    client = api.AuthenticatedClient(
        base_url=stack.host_url,
        token=stack.keys.function,
        prefix="",
        auth_header_name=KEY_HEADER,
        headers=dict(EVERY_ROLE),  # the client writes its key into the dict it is given
    )
    async with client:
        # 1. Connect a room: 202 and `connecting`; GET says when it is connected.
        room = "room-" + uuid.uuid4().hex[:8]
        settings = models.ResourceSettings(mailbox=mb.room, display_name="Room 1")
        connect = await put_resource.asyncio_detailed(room, client=client, body=settings)
        assert connect.status_code == 202
        assert isinstance(connect.parsed, models.ResourceView)
        assert connect.parsed.status.state == models.ConnectionState.CONNECTING

        async def connected() -> bool:
            view = await get_resource.asyncio(room, client=client)
            return bool(view.status.state == models.ConnectionState.CONNECTED)

        await eventually(connected, within=15)

        # 2. Book with an Idempotency-Key; the same key and body again: the same booking.
        day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0,
                                                              microsecond=0)  # fmt: skip
        request = models.BookingRequest(
            resource_ids=[room],
            start=day,
            end=day + timedelta(hours=1),
            title="Onboarding",
            customer=models.Customer(name="Ada", email="ada@example.com"),
        )
        key = str(uuid.uuid4())
        booked = await create_booking.asyncio_detailed(
            client=client, body=request, idempotency_key=key
        )
        assert booked.status_code == 201
        assert isinstance(booked.parsed, models.BookingView)
        booking_id = booked.parsed.booking_id
        again = await create_booking.asyncio(client=client, body=request, idempotency_key=key)
        assert isinstance(again, models.BookingView)
        assert again.booking_id == booking_id

        # 3. Read it, and the room's availability with the booking as busy time.
        read = await get_booking.asyncio(booking_id, client=client)
        assert isinstance(read, models.BookingView)
        assert read.status == models.BookingStatus.CONFIRMED
        availability = await get_availability.asyncio(
            room, client=client, start=day - timedelta(hours=1), end=day + timedelta(hours=3)
        )
        assert isinstance(availability, models.Availability)
        assert [(b.start, b.end) for b in availability.busy] == [(day, day + timedelta(hours=1))]

        # 4. The same slot under another key: 409 slot_unavailable, a typed error.
        taken = await create_booking.asyncio_detailed(
            client=client, body=request, idempotency_key=str(uuid.uuid4())
        )
        assert taken.status_code == 409
        assert isinstance(taken.parsed, models.CreateBooking409Error)
        assert taken.parsed.error.code == models.CreateBooking409ErrorBodyCode.SLOT_UNAVAILABLE

        # 5. Reschedule an hour later, then cancel.
        later = models.RescheduleRequest(
            start=day + timedelta(hours=1), end=day + timedelta(hours=2)
        )
        moved = await reschedule_booking.asyncio(booking_id, client=client, body=later)
        assert isinstance(moved, models.BookingView)
        assert moved.start == day + timedelta(hours=1)
        cancelled = await cancel_booking.asyncio(booking_id, client=client)
        assert isinstance(cancelled, models.BookingView)
        assert cancelled.status == models.BookingStatus.CANCELLED
