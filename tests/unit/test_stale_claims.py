"""Reconciliation releases ledger claims that no booking holds (a create or reschedule
cut short), once they are old enough; live claims and young ones stay."""

from __future__ import annotations

from datetime import timedelta

from shared.domain.bookings import TimeRange
from shared.domain.resources import ConnectionStatus
from shared.services.slots import RELEASE_AFTER, SlotKeeper
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, fake_world


def hour(hours: int) -> TimeRange:
    return TimeRange(start=T0 + timedelta(hours=hours), end=T0 + timedelta(hours=hours + 1))


async def test_reconcile_releases_old_claims_no_booking_holds() -> None:
    world = fake_world(Clock(T0 - timedelta(days=1)), ("room-1@contoso.com",))
    await world.resources.add(
        resource("room-1").model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)}
        )
    )
    slots = SlotKeeper(world.ports.slot_ledger, world.bookings, world.clock)
    live = (await world.services.bookings.create(booking_request(), None)).booking_id
    # A create that died after its claim; a reschedule that died after claiming the new
    # time (its booking holds another); then, later, another create that died.
    await slots.claim("room-1", "bk-never-written", hour(2))
    await slots.claim("room-1", live, hour(4))
    world.clock.now += RELEASE_AFTER - timedelta(minutes=1)
    await slots.claim("room-1", "bk-recent", hour(6))
    world.clock.now += timedelta(minutes=2)

    async def holding() -> set[tuple[str, int]]:
        claims = await slots.claims_between("room-1", T0, T0 + timedelta(days=1))
        return {
            (c.booking_id, int((c.start - T0).total_seconds() // 3600))
            for c in claims
            if c.holds_time
        }

    assert await holding() == {(live, 0), ("bk-never-written", 2), (live, 4), ("bk-recent", 6)}

    await world.services.reconcile.reconcile("room-1")  # the first round: a full one

    assert await holding() == {(live, 0), ("bk-recent", 6)}

    world.clock.now += RELEASE_AFTER
    report = await world.services.reconcile.reconcile("room-1")

    assert not report.full
    assert await holding() == {(live, 0)}
