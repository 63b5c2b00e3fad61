"""Change-notification subscriptions: create (with the expiry clamp), renew, reauthorize,
delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from aiohttp import web

from shared.adapters.graph import GraphCalendarGateway
from shared.domain.errors import GraphConflict, GraphNotFound
from tests.gateway.conftest import ALICE, EmulatorControl


@pytest_asyncio.fixture(loop_scope="session")
async def webhook() -> AsyncIterator[str]:
    """A notification endpoint that passes Graph's validation handshake."""

    async def handle(request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            return web.Response(text=token, content_type="text/plain")
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_subscription_lifecycle(
    gateway: GraphCalendarGateway, control: EmulatorControl, webhook: str
) -> None:
    asked = datetime.now(UTC) + timedelta(minutes=10_080)  # more than Graph accepts

    created = await gateway.create_subscription(
        ALICE, f"{webhook}/notify", f"{webhook}/lifecycle", "client-state-1", asked
    )

    # Refused once (400), then granted with the shorter expiry.
    clamped = datetime.now(UTC) + timedelta(minutes=4230)
    assert abs((created.expires_at - clamped).total_seconds()) < 60
    assert await control.request_count("POST", "/subscriptions") == 2
    stored = await control._json(
        "GET", f"{control.emulator.control_url}/subscriptions/{created.subscription_id}"
    )
    assert stored["resource"].lower().endswith(f"/users/{ALICE}/events")
    assert stored["changeType"] == "created,updated,deleted"
    assert stored["lifecycleNotificationUrl"] == f"{webhook}/lifecycle"

    later = datetime.now(UTC) + timedelta(days=3)
    renewed = await gateway.renew_subscription(created.subscription_id, later)
    assert renewed.subscription_id == created.subscription_id
    assert abs((renewed.expires_at - later).total_seconds()) < 1

    await gateway.reauthorize_subscription(created.subscription_id)

    await gateway.delete_subscription(created.subscription_id)
    await gateway.delete_subscription(created.subscription_id)  # idempotent
    with pytest.raises(GraphNotFound):
        await gateway.renew_subscription(created.subscription_id, later)


async def test_a_duplicate_subscription_raises_graph_conflict_and_is_listed(
    gateway: GraphCalendarGateway, webhook: str
) -> None:
    expiry = datetime.now(UTC) + timedelta(days=2)
    first = await gateway.create_subscription(
        ALICE, f"{webhook}/notify", f"{webhook}/lifecycle", "state-1", expiry
    )
    with pytest.raises(GraphConflict):
        await gateway.create_subscription(
            ALICE, f"{webhook}/notify", f"{webhook}/lifecycle", "state-2", expiry
        )
    [listed] = await gateway.list_subscriptions()
    assert listed.subscription_id == first.subscription_id
    assert listed.resource is not None
    assert ALICE in listed.resource
    await gateway.delete_subscription(first.subscription_id)
    assert await gateway.list_subscriptions() == []
