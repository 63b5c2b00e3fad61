"""What a full reconcile round decides for each booking of a resource: push it (never
written, behind, failed, interrupted), adopt an unmapped event of ours, remove duplicates,
apply the Outlook policy to drift, or leave it alone (through ReconcileService.reconcile
over a fake Microsoft 365; the first round of a resource is a full one)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus, TimeRange
from shared.domain.calendar import CalendarCheck, CalendarEvent, EventMapping
from shared.domain.errors import StorageUnavailable
from shared.domain.messages import SYNC_OUTBOUND_QUEUE
from shared.domain.resources import ConnectionStatus, OnOutlookDelete
from shared.ports import Stored
from shared.services.reconcile import ABANDONED_CHECK, ReconcileReport
from shared.services.slots import SlotKeeper
from tests.builders import T0, booking_request, resource
from tests.builders import booking as _booking
from tests.fakes import Clock, FakeCalendarChecks, FakeWorld, fake_world

ROOM = "room-1@contoso.com"
LATER = (T0 + timedelta(hours=3), T0 + timedelta(hours=4))


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, "alice@contoso.com"))
    for resource_id in ("room-1", "alice"):
        await w.resources.add(
            resource(resource_id, on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING).model_copy(
                update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
            )
        )
    return w


async def book(w: FakeWorld, *, pushed: bool = True, **fields: Any) -> str:
    booking_id = (await w.services.bookings.create(booking_request(**fields), None)).booking_id
    if pushed:
        await w.push_all()
    w.queue.sent.clear()
    w.calendar.reads.clear()
    return booking_id


async def edit_mapping(w: FakeWorld, booking_id: str, **fields: Any) -> None:
    stored = await w.mappings.get("room-1", booking_id)
    assert stored is not None
    await w.mappings.update(stored.value.model_copy(update=fields), stored.etag)


async def mapping(w: FakeWorld, booking_id: str) -> EventMapping:
    stored = await w.mappings.get("room-1", booking_id)
    assert stored is not None
    return stored.value


def events(w: FakeWorld) -> list[CalendarEvent]:
    return sorted(w.calendar.events[ROOM].values(), key=lambda e: e.event_id)


def _hour(hours: int) -> TimeRange:
    return TimeRange(start=T0 + timedelta(hours=hours), end=T0 + timedelta(hours=hours + 1))


def counts(report: ReconcileReport) -> tuple[int, int, int, int]:
    return report.pushed, report.adopted, report.duplicates_removed, report.policies_applied


async def reconcile(w: FakeWorld) -> ReconcileReport:
    """A full round on its own: the calendar checks the setup's writes left (which every
    round confirms, full or not) are dropped first, so the counts are the full round's."""
    checks = w.ports.calendar_checks
    assert isinstance(checks, FakeCalendarChecks)
    checks.rows.clear()
    report = await w.services.reconcile.reconcile("room-1")
    assert report.full
    return report


async def test_a_calendar_in_step_is_read_once_and_left_alone(world: FakeWorld) -> None:
    booking_id = await book(world)
    before = await mapping(world, booking_id)

    report = await reconcile(world)

    assert counts(report) == (0, 0, 0, 0)
    assert world.calendar.reads == []  # every mapped event was in the listing
    assert world.calendar.batches == [1]  # the create only
    assert await mapping(world, booking_id) == before


async def test_a_booking_never_pushed_is_pushed(world: FakeWorld) -> None:
    booking_id = await book(world, pushed=False)

    report = await reconcile(world)

    assert counts(report) == (1, 0, 0, 0)
    assert [e.booking_id for e in events(world)] == [booking_id]


async def test_a_past_or_cancelled_booking_never_pushed_is_not_pushed(world: FakeWorld) -> None:
    cancelled = await book(world, pushed=False)
    await world.services.bookings.cancel(cancelled)
    await book(world, pushed=False, start=T0 + timedelta(hours=2))
    world.clock.now = T0 + timedelta(hours=3)  # the second one is over

    report = await reconcile(world)

    assert report.pushed == 0
    assert events(world) == []


@pytest.mark.parametrize(
    "drift",
    [
        {"booking_version": 0},  # the booking changed since the last push
        {"last_error": "graph_transient: 503"},  # the last push failed
    ],
)
async def test_a_mapping_behind_or_failed_is_pushed_again(
    world: FakeWorld, drift: dict[str, Any]
) -> None:
    booking_id = await book(world)
    await edit_mapping(world, booking_id, **drift)

    report = await reconcile(world)

    assert counts(report) == (1, 0, 0, 0)
    assert world.calendar.batches == [1, 1]
    updated = await mapping(world, booking_id)
    assert (updated.booking_version, updated.last_error) == (1, None)


async def test_an_interrupted_create_is_sent_again_with_its_transaction_id(
    world: FakeWorld,
) -> None:
    booking_id = await book(world, pushed=False)
    tx = f"{booking_id}.room-1.v1"
    await world.mappings.add(
        EventMapping(
            resource_id="room-1", booking_id=booking_id, mailbox=ROOM, pending_transaction_id=tx
        )
    )

    report = await reconcile(world)

    assert counts(report) == (1, 0, 0, 0)
    assert world.calendar.transactions[(ROOM, tx)] == (await mapping(world, booking_id)).event_id


async def test_a_forgotten_event_is_recreated_but_a_detached_one_never(world: FakeWorld) -> None:
    forgotten = await book(world)
    detached = await book(world, start=T0 + timedelta(hours=2))
    for booking_id, fields in ((forgotten, {}), (detached, {"detached": True})):
        await edit_mapping(world, booking_id, event_id=None, change_key=None, **fields)
    world.calendar.events[ROOM].clear()

    report = await reconcile(world)

    assert counts(report) == (1, 0, 0, 0)
    assert [e.booking_id for e in events(world)] == [forgotten]


async def test_an_unmapped_event_of_ours_is_adopted_in_step(world: FakeWorld) -> None:
    booking_id = await book(world)
    [event] = events(world)
    del world.mappings.rows[("room-1", booking_id)]  # a crash before the mapping was written

    report = await reconcile(world)

    assert counts(report) == (0, 1, 0, 0)
    adopted = await mapping(world, booking_id)
    assert (adopted.event_id, adopted.change_key, adopted.booking_version) == (
        event.event_id,
        event.change_key,
        1,
    )
    assert (adopted.pushed_start, adopted.pushed_end) == (T0, T0 + timedelta(hours=1))
    assert adopted.synced_at == world.clock.now
    assert [e.action for e in world.sync_log.entries if e.action == "adopted_event"] == [
        "adopted_event"
    ]


async def test_an_adopted_event_the_booking_no_longer_wants_is_corrected(
    world: FakeWorld,
) -> None:
    moved = await book(world)
    cancelled = await book(world, start=T0 + timedelta(hours=5))
    await world.services.bookings.reschedule(moved, TimeRange(start=LATER[0], end=LATER[1]))
    await world.services.bookings.cancel(cancelled)
    world.queue.sent.clear()  # their pushes were lost...
    for booking_id in (moved, cancelled):  # ...and so were the mappings of the creates
        del world.mappings.rows[("room-1", booking_id)]
    # A mapping pointing at the first event, as an interrupted create left it.
    await world.mappings.add(
        EventMapping(
            resource_id="room-1",
            booking_id=moved,
            mailbox=ROOM,
            pending_transaction_id=f"{moved}.room-1.v1",
        )
    )

    report = await reconcile(world)

    assert (report.adopted, report.pushed) == (2, 2)
    [event] = events(world)  # the cancelled booking's event is deleted
    assert (event.booking_id, event.start, event.end) == (moved, *LATER)
    assert (await mapping(world, moved)).pending_transaction_id is None


async def test_duplicates_are_removed_keeping_the_mapped_event(world: FakeWorld) -> None:
    booking_id = await book(world)
    [mapped] = events(world)
    duplicate = mapped.model_copy(update={"event_id": "ev-0-duplicate", "change_key": "ck-dup"})
    world.calendar.events[ROOM][duplicate.event_id] = duplicate

    report = await reconcile(world)

    assert counts(report) == (0, 0, 1, 0)
    assert [e.event_id for e in events(world)] == [mapped.event_id]
    assert (await mapping(world, booking_id)).event_id == mapped.event_id


async def test_without_a_mapping_the_last_modified_event_is_kept(world: FakeWorld) -> None:
    booking_id = await book(world)
    [first] = events(world)
    del world.mappings.rows[("room-1", booking_id)]
    del world.calendar.events[ROOM][first.event_id]
    # One with no modification time reported:
    world.calendar.events[ROOM]["ev-a"] = first.model_copy(
        update={"event_id": "ev-a", "last_modified_at": None}
    )
    for event_id, modified in (("ev-b", T0), ("ev-c", T0 - timedelta(hours=1))):
        world.calendar.events[ROOM][event_id] = first.model_copy(
            update={"event_id": event_id, "last_modified_at": modified}
        )

    report = await reconcile(world)

    assert counts(report) == (0, 1, 2, 0)
    # Events Graph reports a modification time for come first, then by id.
    assert [e.event_id for e in events(world)] == ["ev-b"]
    assert (await mapping(world, booking_id)).event_id == "ev-b"


async def test_a_mapped_event_gone_from_the_calendar_gets_the_delete_policy(
    world: FakeWorld,
) -> None:
    booking_id = await book(world)
    [event] = events(world)
    world.calendar.events[ROOM].clear()

    report = await reconcile(world)

    # (The cancel's own push is the round's confirmation of the change it wrote.)
    assert (report.adopted, report.duplicates_removed, report.policies_applied) == (0, 0, 1)
    assert world.calendar.reads == [(ROOM, event.event_id)]  # asked for directly first
    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.status is BookingStatus.CANCELLED


async def test_an_event_of_ours_for_another_resources_booking_is_left_alone(
    world: FakeWorld,
) -> None:
    alices = await book(world, resourceIds=["alice"])
    stray = CalendarEvent(
        event_id="ev-stray",
        change_key="ck",
        start=T0,
        end=T0 + timedelta(hours=1),
        booking_id=alices,
    )
    world.calendar.events[ROOM]["ev-stray"] = stray

    report = await reconcile(world)

    assert counts(report) == (0, 0, 0, 0)
    assert [e.event_id for e in events(world)] == ["ev-stray"]
    assert await world.mappings.get("room-1", alices) is None


async def test_a_change_a_crash_left_unsent_is_sent(world: FakeWorld) -> None:
    world.queue.fail_next = 1  # the create's messages are not sent...
    with pytest.raises(StorageUnavailable):
        await world.services.bookings.create(booking_request(), None)
    [(_, stored)] = world.bookings.rows.items()
    assert stored.value.outbox
    world.clock.now += timedelta(seconds=31)  # ...and the request that wrote them died

    await reconcile(world)

    assert world.queue.bodies(SYNC_OUTBOUND_QUEUE)
    after = await world.bookings.get(stored.value.booking_id)
    assert after is not None
    assert after.value.outbox == []


async def test_an_adopted_event_moved_before_it_was_mapped_is_put_back(world: FakeWorld) -> None:
    booking_id = await book(world)
    [event] = events(world)
    del world.mappings.rows[("room-1", booking_id)]
    world.calendar.events[ROOM][event.event_id] = event.model_copy(
        update={"start": LATER[0], "end": LATER[1], "change_key": "ck-user"}
    )

    report = await reconcile(world)

    assert (report.adopted, report.pushed) == (1, 1)
    [restored] = events(world)
    assert (restored.event_id, restored.start, restored.end) == (
        event.event_id,
        T0,
        T0 + timedelta(hours=1),
    )


async def test_bookings_after_one_that_is_unknown_or_elsewhere_are_still_reconciled(
    world: FakeWorld,
) -> None:
    booking_id = await book(world, pushed=False)
    # Sorted before it: the claim of a booking never written, and an event of ours for a
    # booking of another resource.
    slots = SlotKeeper(world.ports.slot_ledger, world.bookings, world.clock)
    await slots.claim("room-1", "0-ghost", _hour(6))
    await world.bookings.add(_booking("0-stray", resource_ids=["alice"]))
    world.calendar.events[ROOM]["ev-stray"] = CalendarEvent(
        event_id="ev-stray", start=LATER[0], end=LATER[1], booking_id="0-stray"
    )

    report = await reconcile(world)

    assert report.pushed == 1
    assert sorted(e.booking_id or "" for e in events(world)) == ["0-stray", booking_id]


async def test_bookings_after_one_the_policy_handled_are_still_reconciled(
    world: FakeWorld,
) -> None:
    first, second = sorted([await book(world), await book(world, start=LATER[0])])
    deleted = (await mapping(world, first)).event_id
    assert deleted is not None
    del world.calendar.events[ROOM][deleted]  # the Outlook user deletes the first
    await edit_mapping(world, second, booking_version=0)  # the second is behind

    report = await reconcile(world)

    assert report.policies_applied == 1
    assert (await mapping(world, second)).booking_version == 1


def _checks(w: FakeWorld) -> FakeCalendarChecks:
    checks = w.ports.calendar_checks
    assert isinstance(checks, FakeCalendarChecks)
    return checks


def _check(w: FakeWorld, booking_id: str, version: int, age: timedelta) -> None:
    """A calendar check marked `age` ago, as a write that may not have happened leaves."""
    value = CalendarCheck(
        resource_id="room-1",
        booking_id=booking_id,
        booking_version=version,
        marked_at=w.clock.now - age,
    )
    _checks(w).rows[("room-1", booking_id)] = Stored(value=value, etag=f"check-{booking_id}")


async def test_a_check_waits_for_its_change_then_is_dropped_when_abandoned(
    world: FakeWorld,
) -> None:
    behind = await book(world, start=LATER[0])
    never_pushed = await book(world, pushed=False)
    await reconcile(world)  # settles what the setup left; the next round is incremental
    _checks(world).rows.clear()
    _check(world, "0-abandoned", 1, ABANDONED_CHECK + timedelta(seconds=1))
    _check(world, "0-in-progress", 1, ABANDONED_CHECK)
    _check(world, behind, 2, timedelta(0))  # its version 2 is not written yet
    del world.mappings.rows[("room-1", never_pushed)]
    world.calendar.events[ROOM] = {
        k: e for k, e in world.calendar.events[ROOM].items() if e.booking_id != never_pushed
    }
    _check(world, never_pushed, 1, timedelta(0))

    report = await world.services.reconcile.reconcile("room-1")

    assert not report.full
    assert (report.checked, report.confirmed, report.pushed) == (4, 1, 1)
    assert sorted(b for _, b in _checks(world).rows) == sorted(
        ["0-in-progress", behind, never_pushed]
    )


async def test_a_check_of_a_detached_or_foreign_calendar_is_confirmed(world: FakeWorld) -> None:
    detached = await book(world)
    alices = await book(world, resourceIds=["alice"])
    await reconcile(world)
    await edit_mapping(world, detached, event_id=None, change_key=None, detached=True)
    world.calendar.events[ROOM].clear()
    _checks(world).rows.clear()
    _check(world, detached, 1, timedelta(0))
    _check(world, alices, 1, timedelta(0))

    report = await world.services.reconcile.reconcile("room-1")

    assert (report.checked, report.confirmed, report.pushed) == (2, 2, 0)
    assert _checks(world).rows == {}


async def test_a_checked_event_deleted_without_a_notification_gets_the_policy(
    world: FakeWorld,
) -> None:
    await reconcile(world)
    booking_id = await book(world)  # after the round: the next delta would report it new
    _checks(world).rows.clear()
    _check(world, booking_id, 1, timedelta(0))
    world.calendar.events[ROOM].clear()  # its notification was lost; delta never saw it

    report = await world.services.reconcile.reconcile("room-1")

    assert not report.full
    assert report.policies_applied == 1
    stored = await world.bookings.get(booking_id)
    assert stored is not None
    assert stored.value.status is BookingStatus.CANCELLED
