"""Subscriptions under concurrency: a resource ends with one subscription, whoever races.

Two callers may work from the same stale read of a resource: a connect and the upkeep's
recreate, or a timer that fired twice (a past-due run at start-up and the scheduled one,
as the timer extension does). Whatever they do, one subscription must survive, the one
the resource points to, and no other may stay trusted by the webhook.
"""

from __future__ import annotations

import asyncio

from shared.domain.resources import Resource
from tests.builders import T0, resource
from tests.fakes import Clock, FakeWorld, fake_world

MAILBOX = "room-1@contoso.com"


class DeletedSubscriptions:
    """Records what the gateway was asked to delete in Graph."""

    def __init__(self, world: FakeWorld) -> None:
        self.ids: list[str] = []
        original = world.calendar.delete_subscription

        async def delete(subscription_id: str) -> None:
            self.ids.append(subscription_id)
            await original(subscription_id)

        world.calendar.delete_subscription = delete  # type: ignore[method-assign]


async def _stored(world: FakeWorld) -> Resource:
    stored = await world.resources.get("room-1")
    assert stored is not None
    return stored.value


def _trusted(world: FakeWorld) -> set[str]:
    """Subscriptions the webhook would accept notifications for."""
    return {key[0] for key in world.ports.subscriptions.rows}  # type: ignore[attr-defined]


async def test_two_subscribes_from_one_stale_read_leave_one_subscription() -> None:
    world = fake_world(Clock(T0), (MAILBOX,))
    deleted = DeletedSubscriptions(world)
    await world.resources.add(resource("room-1"))
    stale = await _stored(world)

    await asyncio.gather(
        world.services.subscriptions.subscribe(stale),
        world.services.subscriptions.subscribe(stale),
    )

    current = await _stored(world)
    assert current.subscription_id is not None
    assert _trusted(world) == {current.subscription_id}
    # The loser is dropped (the 409 handling may drop it too: deleting is idempotent).
    assert len(set(deleted.ids)) == 1
    assert current.subscription_id not in deleted.ids


async def test_a_renew_racing_a_recreate_does_not_bring_back_the_dropped_subscription() -> None:
    world = fake_world(Clock(T0), (MAILBOX,))
    await world.resources.add(resource("room-1"))
    first = await world.services.subscriptions.subscribe(await _stored(world))
    stale = await _stored(world)
    assert stale.subscription_id == first.subscription_id

    # A recreate wins, then a renew that read the resource before it lands.
    await world.services.subscriptions.subscribe(stale)
    await world.services.subscriptions.renew(stale)

    current = await _stored(world)
    assert current.subscription_id not in (None, first.subscription_id)
    assert _trusted(world) == {current.subscription_id}
