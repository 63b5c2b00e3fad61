"""Subscribing when Graph already holds a subscription of ours on the mailbox (409)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.calendar import GraphSubscription
from shared.domain.errors import GraphConflict
from shared.services.subscriptions import subscribed_mailbox
from tests.builders import T0, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0), (ROOM,))
    await w.resources.add(resource("room-1"))
    return w


async def test_a_stale_subscription_on_the_mailbox_is_replaced_once(world: FakeWorld) -> None:
    # Left by a connect that crashed after Graph subscribed and before we recorded it.
    stale = await world.calendar.create_subscription(
        ROOM, "https://x/n", "https://x/l", "lost-state", T0 + timedelta(days=3)
    )
    stored = await world.resources.get("room-1")
    assert stored is not None

    subscribed = await world.services.subscriptions.subscribe(stored.value)

    assert subscribed.subscription_id is not None
    assert subscribed.subscription_id != stale.subscription_id
    assert list(world.calendar.subscriptions) == [subscribed.subscription_id]


async def test_a_conflict_that_listing_cannot_resolve_fails_with_a_clear_reason(
    world: FakeWorld,
) -> None:
    # Graph lists the holder under a resource we cannot match (e.g. by user id).
    world.calendar.subscriptions["elsewhere"] = GraphSubscription(
        subscription_id="elsewhere",
        expires_at=T0 + timedelta(days=3),
        resource=f"/users/{ROOM}/events",
    )

    async def hidden() -> list[GraphSubscription]:
        return []

    world.calendar.list_subscriptions = hidden  # type: ignore[method-assign]
    stored = await world.resources.get("room-1")
    assert stored is not None

    with pytest.raises(GraphConflict, match="another subscription of this app holds it"):
        await world.services.subscriptions.subscribe(stored.value)


@pytest.mark.parametrize(
    ("resource_path", "mailbox"),
    [
        ("/users/Room-1@contoso.com/events", "room-1@contoso.com"),
        ("users/room-1@contoso.com/events/", "room-1@contoso.com"),
        ("/users('room-1@contoso.com')/events", None),
        ("/users/room-1@contoso.com/messages", None),
        (None, None),
    ],
)
def test_subscribed_mailbox_reads_the_resource(
    resource_path: str | None, mailbox: str | None
) -> None:
    assert subscribed_mailbox(resource_path) == mailbox
