"""The upkeep: retention (what is older than its setting goes, the rest stays), and
subscription renewals at scale (side by side, paged under a time budget, spread)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from shared.domain.calendar import GraphSubscription
from shared.domain.errors import GraphTransient
from shared.domain.resources import ConnectionState, ConnectionStatus
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import IdempotencyRecord
from shared.services.upkeep import RENEW_CONCURRENCY, RENEW_PAGE_SIZE
from tests.builders import T0, resource
from tests.fakes import Clock, FakeWorld, fake_world


async def test_purge_removes_keys_and_log_entries_past_their_retention() -> None:
    world = fake_world(Clock(T0), ("room-1@contoso.com",))
    await world.resources.add(resource("room-1"))
    idempotency = world.ports.idempotency
    for key, age in (("old", timedelta(hours=49)), ("recent", timedelta(hours=47))):
        await idempotency.add(
            IdempotencyRecord(key=key, request_hash="h", booking_id="bk", created_at=T0 - age)
        )
    for action, age in (("old", timedelta(days=31)), ("recent", timedelta(days=29))):
        await world.sync_log.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 - age,
                direction=SyncDirection.OUTBOUND,
                action=action,
                outcome=SyncOutcome.OK,
            )
        )

    assert await world.services.upkeep.purge_expired() == (1, 1)

    assert await idempotency.get("old") is None
    assert await idempotency.get("recent") is not None
    assert [e.action for e in (await world.sync_log.page("room-1", 10)).value] == ["recent"]


# --- renewals at scale -----------------------------------------------------------------


class SlowRenewals:
    """Graph's renewals taking `seconds` each; counts how many were in flight at once."""

    def __init__(self, world: FakeWorld, seconds: float) -> None:
        self.in_flight = self.peak = self.calls = 0

        async def renew(subscription_id: str, expires_at: datetime) -> GraphSubscription:
            self.in_flight += 1
            self.calls += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(seconds)
            self.in_flight -= 1
            return GraphSubscription(subscription_id=subscription_id, expires_at=expires_at)

        world.calendar.renew_subscription = renew  # type: ignore[method-assign]


async def due_world(count: int, *, expires_in: timedelta = timedelta(hours=2)) -> FakeWorld:
    world = fake_world(Clock(T0), tuple(f"room-{n}@contoso.com" for n in range(count)))
    for n in range(count):
        await world.resources.add(
            resource(f"room-{n}").model_copy(
                update={"subscription_id": f"sub-{n}", "subscription_expires_at": T0 + expires_in}
            )
        )
    return world


async def renewed_ids(world: FakeWorld) -> set[str]:
    return {
        s.value.resource_id
        for s in await world.resources.list_all()
        if s.value.subscription_expires_at is not None
        and s.value.subscription_expires_at > T0 + timedelta(days=5)
    }


async def test_a_thousand_due_subscriptions_renew_side_by_side_in_one_bounded_run() -> None:
    world = await due_world(1000)
    graph = SlowRenewals(world, seconds=0.01)
    started = time.monotonic()

    renewed = await world.services.upkeep.renew_subscriptions()

    elapsed = time.monotonic() - started
    assert renewed == 1000
    assert len(await renewed_ids(world)) == 1000
    assert graph.calls == 1000
    assert graph.peak == RENEW_CONCURRENCY
    assert elapsed < 1000 * 0.01 / 4  # one at a time would take 10 s


async def test_renewals_past_the_budget_wait_for_the_next_run_soonest_expiry_first() -> None:
    world = await due_world(250)
    # The last 50 expire soonest: they are renewed first.
    for n in range(200, 250):
        stored = await world.resources.get(f"room-{n}")
        assert stored is not None
        await world.resources.update(
            stored.value.model_copy(update={"subscription_expires_at": T0}), stored.etag
        )

    runs = [await world.services.upkeep.renew_subscriptions(budget=timedelta(0))]
    assert runs == [RENEW_CONCURRENCY]  # past the budget at once: one set in flight
    assert await renewed_ids(world) <= {f"room-{n}" for n in range(200, 250)}
    while sum(runs) < 250:
        runs.append(await world.services.upkeep.renew_subscriptions(budget=timedelta(0)))
        assert runs[-1] > 0
        if sum(runs) >= 50:
            assert {f"room-{n}" for n in range(200, 250)} <= await renewed_ids(world)

    assert runs == [RENEW_CONCURRENCY] * 15 + [10]
    assert len(await renewed_ids(world)) == 250


async def test_no_renewal_starts_past_the_budget_even_within_a_page() -> None:
    """Throttled renewals can each take the gateway's whole retry time (a minute): a page
    of 100 at 16 at once started just before the budget would then run some 7 minutes
    past it, beyond the timer's functionTimeout. The budget bounds each renewal's start."""
    world = await due_world(RENEW_PAGE_SIZE)
    graph = SlowRenewals(world, seconds=0.1)
    started = time.monotonic()

    first = await world.services.upkeep.renew_subscriptions(budget=timedelta(seconds=0.2))

    elapsed = time.monotonic() - started
    assert first < RENEW_PAGE_SIZE  # one page at once would have taken 7 x 0.1 s
    assert elapsed < 0.2 + 0.1 + 0.15  # the budget, one renewal, and some slack
    assert graph.calls == first
    rest = await world.services.upkeep.renew_subscriptions()
    assert first + rest == RENEW_PAGE_SIZE
    assert len(await renewed_ids(world)) == RENEW_PAGE_SIZE


async def test_subscriptions_made_together_expire_spread_over_the_jitter() -> None:
    world = fake_world(Clock(T0), tuple(f"room-{n}@contoso.com" for n in range(200)))
    for n in range(200):
        await world.resources.add(resource(f"room-{n}"))

    assert await world.services.upkeep.renew_subscriptions() == 200

    expiries = [s.expires_at for s in world.calendar.subscriptions.values()]
    latest = T0 + timedelta(minutes=10_000)  # SUBSCRIPTION_EXPIRY_MINUTES
    earliest = latest - timedelta(minutes=1440)  # SUBSCRIPTION_EXPIRY_JITTER_MINUTES
    assert all(earliest <= e <= latest for e in expiries)
    assert max(expiries) - min(expiries) > timedelta(hours=20)
    # Spread over the hours of the jitter, not bunched in a few upkeep runs.
    assert len({e.replace(minute=0, second=0, microsecond=0) for e in expiries}) >= 20


async def test_a_transient_renewal_failure_leaves_the_resource_connected() -> None:
    world = await due_world(1)

    async def unavailable(subscription_id: str, expires_at: datetime) -> GraphSubscription:
        raise GraphTransient("503")

    world.calendar.renew_subscription = unavailable  # type: ignore[method-assign]

    assert await world.services.upkeep.renew_subscriptions() == 0

    stored = await world.resources.get("room-0")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.CONNECTED


async def test_a_resource_backing_off_waits_for_its_round_not_the_upkeep() -> None:
    world = await due_world(2)
    stored = await world.resources.get("room-0")
    assert stored is not None
    failing = ConnectionStatus(
        state=ConnectionState.FAILING, failed_rounds=2, retry_at=T0 + timedelta(minutes=30)
    )
    await world.resources.update(stored.value.model_copy(update={"status": failing}), stored.etag)
    graph = SlowRenewals(world, seconds=0)

    assert await world.services.upkeep.renew_subscriptions() == 1

    assert graph.calls == 1
    assert await renewed_ids(world) == {"room-1"}
