"""The upkeep's retention: what is older than its setting goes, the rest stays."""

from __future__ import annotations

from datetime import timedelta

from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import IdempotencyRecord
from tests.builders import T0, resource
from tests.fakes import Clock, fake_world


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
    assert [e.action for e in await world.sync_log.newest("room-1", 10)] == ["recent"]
