"""Every path of an Outlook user's change to an event we wrote, through
OutlookChangeApplier.apply: each delete and move policy for a primary and an additional
panel member, echoes of our own writes, detached mappings, a move into a taken slot."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus, TimeRange
from shared.domain.calendar import CalendarEvent, EventMapping
from shared.domain.errors import ConcurrencyConflict
from shared.domain.messages import BOOKING_EVENTS_QUEUE
from shared.domain.resources import ConnectionStatus, OnOutlookDelete, OnOutlookMove
from shared.domain.sync_log import SyncDirection, SyncOutcome
from shared.ports import Stored
from shared.services.events import EventRouting
from shared.services.outlook_changes import OutlookChangeApplier
from shared.services.policies import Action
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM, ALICE = "room-1@contoso.com", "alice@contoso.com"
MAILBOX = {"room-1": ROOM, "alice": ALICE}
INBOUND = SyncDirection.INBOUND


class Outlook:
    """A booking of room-1 (primary) and alice, pushed to both calendars."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.booking_id = ""
        self.applier = OutlookChangeApplier(
            gateway=world.calendar,
            routing=EventRouting(webhooks=False),
            bookings=world.bookings,
            booking_service=world.services.bookings,
            event_mappings=world.mappings,
            checks=world.ports.calendar_checks,
            push=world.services.push,
            queue=world.queue,
            sync_log=world.sync_log,
            clock=world.clock,
        )

    async def policy(
        self,
        resource_id: str,
        delete: OnOutlookDelete = OnOutlookDelete.IGNORE,
        move: OnOutlookMove = OnOutlookMove.IGNORE,
    ) -> None:
        stored = await self.world.resources.get(resource_id)
        assert stored is not None
        settings = stored.value.settings.model_copy(
            update={"on_outlook_delete": delete, "on_outlook_move": move}
        )
        await self.world.resources.update(
            stored.value.model_copy(update={"settings": settings}), stored.etag
        )

    async def mapping(self, resource_id: str) -> Stored[EventMapping]:
        stored = await self.world.mappings.get(resource_id, self.booking_id)
        assert stored is not None
        return stored

    def event(self, resource_id: str) -> CalendarEvent:
        [event] = self.world.calendar.events[MAILBOX[resource_id]].values()
        return event

    async def apply(
        self,
        resource_id: str,
        event: CalendarEvent | None,
        mapping: Stored[EventMapping] | None = None,
        direction: SyncDirection = INBOUND,
    ) -> Action | None:
        stored = await self.world.resources.get(resource_id)
        assert stored is not None
        mapping = mapping or await self.mapping(resource_id)
        return await self.applier.apply(stored.value, mapping, event, direction)

    async def delete(self, resource_id: str) -> Action | None:
        """The Outlook user deletes our event in that calendar."""
        self.world.calendar.events[MAILBOX[resource_id]].clear()
        return await self.apply(resource_id, None)

    async def move(self, resource_id: str, start: datetime, end: datetime) -> Action | None:
        moved = self.event(resource_id).model_copy(
            update={"start": start, "end": end, "change_key": "ck-user"}
        )
        self.world.calendar.events[MAILBOX[resource_id]][moved.event_id] = moved
        return await self.apply(resource_id, moved)

    async def status(self) -> tuple[BookingStatus, datetime, datetime, int]:
        stored = await self.world.bookings.get(self.booking_id)
        assert stored is not None
        b = stored.value
        return b.status, b.start, b.end, b.version

    def log(self) -> list[tuple[str, str, str | None, SyncOutcome, str | None]]:
        return [
            (e.resource_id, e.action, e.event_id, e.outcome, e.detail)
            for e in self.world.sync_log.entries
            if e.direction is INBOUND
        ]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.world.queue.bodies(BOOKING_EVENTS_QUEUE)]


@pytest.fixture
async def outlook() -> Outlook:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, ALICE))
    for resource_id in ("room-1", "alice"):
        await world.resources.add(
            resource(resource_id).model_copy(
                update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)}
            )
        )
    o = Outlook(world)
    request = booking_request(resourceIds=["room-1", "alice"])
    o.booking_id = (await world.services.bookings.create(request, None)).booking_id
    await world.push_all()
    return o


BOOKED = (BookingStatus.CONFIRMED, T0, T0 + timedelta(hours=1), 1)
LATER = (T0 + timedelta(hours=3), T0 + timedelta(hours=4))


async def test_primary_delete_under_cancel_booking_cancels_and_forgets_the_event(
    outlook: Outlook,
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.CANCEL_BOOKING)
    event_id = outlook.event("room-1").event_id

    assert await outlook.delete("room-1") is Action.CANCEL_BOOKING

    status, *_ = await outlook.status()
    assert status is BookingStatus.CANCELLED
    mapping = (await outlook.mapping("room-1")).value
    assert (mapping.event_id, mapping.change_key, mapping.detached) == (None, None, False)
    assert outlook.log() == [
        ("room-1", "outlook_delete:cancel_booking", event_id, SyncOutcome.OK, None)
    ]
    assert [e["type"] for e in outlook.events()] == ["booking.created", "booking.cancelled"]
    await outlook.world.push_all()  # the cancel's push removes alice's event too
    assert outlook.world.calendar.events[ALICE] == {}


@pytest.mark.parametrize("policy", [OnOutlookDelete.CANCEL_BOOKING, OnOutlookDelete.IGNORE])
async def test_a_delete_that_cancels_nothing_detaches_that_calendar(
    outlook: Outlook, policy: OnOutlookDelete
) -> None:
    await outlook.policy("room-1", delete=policy)
    await outlook.policy("alice", delete=policy)  # alice is not the primary member
    event_id = outlook.event("alice").event_id

    assert await outlook.delete("alice") is Action.IGNORE

    assert await outlook.status() == BOOKED
    mapping = (await outlook.mapping("alice")).value
    assert (mapping.event_id, mapping.change_key, mapping.detached) == (None, None, True)
    assert outlook.log() == [("alice", "outlook_delete:ignore", event_id, SyncOutcome.OK, None)]
    # Detached: the booking's next change is not written to that calendar again.
    await outlook.world.services.bookings.reschedule(
        outlook.booking_id, TimeRange(start=LATER[0], end=LATER[1])
    )
    await outlook.world.push_all()
    assert outlook.world.calendar.events[ALICE] == {}
    assert outlook.event("room-1").start == LATER[0]
    assert await outlook.apply("alice", None) is None  # a detached mapping: nothing to do


async def test_restore_event_recreates_a_deleted_event_at_once_each_time(
    outlook: Outlook,
) -> None:
    await outlook.policy("alice", delete=OnOutlookDelete.RESTORE_EVENT)
    first = outlook.event("alice").event_id

    assert await outlook.delete("alice") is Action.RESTORE_EVENT

    second = outlook.event("alice")  # written by the applier itself, not via the queue
    assert second.event_id != first
    assert (second.start, second.end) == (T0, T0 + timedelta(hours=1))
    assert second.booking_id == outlook.booking_id
    mapping = (await outlook.mapping("alice")).value
    assert (mapping.event_id, mapping.recreations, mapping.detached) == (second.event_id, 1, False)
    assert mapping.change_key == second.change_key
    assert mapping.booking_version == 1

    assert await outlook.delete("alice") is Action.RESTORE_EVENT

    third = outlook.event("alice")
    assert third.event_id not in (first, second.event_id)
    assert (await outlook.mapping("alice")).value.recreations == 2
    assert await outlook.status() == BOOKED
    assert [a for _, a, *_ in outlook.log()] == ["outlook_delete:restore_event"] * 2


async def test_restore_event_recreates_the_event_of_a_booking_already_over(
    outlook: Outlook,
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.RESTORE_EVENT)
    outlook.world.clock.now = T0 + timedelta(days=1)  # the calendar keeps its history

    assert await outlook.delete("room-1") is Action.RESTORE_EVENT

    restored = outlook.event("room-1")
    assert (restored.start, restored.end) == (T0, T0 + timedelta(hours=1))


async def test_a_delete_of_a_cancelled_bookings_event_changes_nothing_more(
    outlook: Outlook,
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.RESTORE_EVENT)
    await outlook.world.services.bookings.cancel(outlook.booking_id)

    assert await outlook.delete("room-1") is Action.GONE_WITH_BOOKING

    assert outlook.world.calendar.events[ROOM] == {}  # not restored
    view = await outlook.world.services.bookings.get(outlook.booking_id)
    # As the cancel's push would leave it: in step, not detached by a policy.
    assert [s.state for s in view.sync if s.resource_id == "room-1"] == ["synced"]


async def test_primary_move_under_reschedule_booking_moves_the_booking(outlook: Outlook) -> None:
    await outlook.policy("room-1", move=OnOutlookMove.RESCHEDULE_BOOKING)
    event_id = outlook.event("room-1").event_id

    assert await outlook.move("room-1", *LATER) is Action.RESCHEDULE_BOOKING

    assert await outlook.status() == (BookingStatus.RESCHEDULED, *LATER, 2)
    assert outlook.log() == [
        ("room-1", "outlook_move:reschedule_booking", event_id, SyncOutcome.OK, None)
    ]
    await outlook.world.push_all()
    assert (outlook.event("alice").start, outlook.event("alice").end) == LATER


@pytest.mark.parametrize("moved", ["start", "end"])
async def test_a_move_of_either_end_is_a_move(outlook: Outlook, moved: str) -> None:
    await outlook.policy("room-1", move=OnOutlookMove.RESCHEDULE_BOOKING)
    start, end = T0, T0 + timedelta(hours=1)
    if moved == "start":
        start -= timedelta(minutes=30)
    else:
        end += timedelta(minutes=30)

    assert await outlook.move("room-1", start, end) is Action.RESCHEDULE_BOOKING

    assert await outlook.status() == (BookingStatus.RESCHEDULED, start, end, 2)


@pytest.mark.parametrize(
    ("resource_id", "policy"),
    [
        ("alice", OnOutlookMove.RESCHEDULE_BOOKING),  # not the primary member
        ("room-1", OnOutlookMove.IGNORE),
    ],
)
async def test_a_move_that_reschedules_nothing_is_remembered_and_kept(
    outlook: Outlook, resource_id: str, policy: OnOutlookMove
) -> None:
    await outlook.policy(resource_id, move=policy)
    event_id = outlook.event(resource_id).event_id

    assert await outlook.move(resource_id, *LATER) is Action.IGNORE

    assert await outlook.status() == BOOKED
    mapping = (await outlook.mapping(resource_id)).value
    assert mapping.change_key == "ck-user"  # its next notification is no news
    assert (outlook.event(resource_id).start, outlook.event(resource_id).end) == LATER
    assert outlook.log() == [(resource_id, "outlook_move:ignore", event_id, SyncOutcome.OK, None)]


async def test_restore_event_puts_a_moved_event_back_at_once(outlook: Outlook) -> None:
    await outlook.policy("alice", move=OnOutlookMove.RESTORE_EVENT)
    event_id = outlook.event("alice").event_id

    assert await outlook.move("alice", *LATER) is Action.RESTORE_EVENT

    restored = outlook.event("alice")
    assert (restored.event_id, restored.start, restored.end) == (
        event_id,
        T0,
        T0 + timedelta(hours=1),
    )
    mapping = (await outlook.mapping("alice")).value
    assert (mapping.event_id, mapping.recreations) == (event_id, 0)
    assert mapping.change_key == restored.change_key
    assert await outlook.status() == BOOKED
    assert outlook.log() == [
        ("alice", "outlook_move:restore_event", event_id, SyncOutcome.OK, None)
    ]


@pytest.mark.parametrize("change_key", ["ck-user", None])
async def test_a_move_into_a_taken_slot_restores_the_event_and_reports_the_conflict(
    outlook: Outlook, change_key: str | None
) -> None:
    await outlook.policy("room-1", move=OnOutlookMove.RESCHEDULE_BOOKING)
    taken = booking_request(*LATER)
    await outlook.world.services.bookings.create(taken, None)
    event_id = outlook.event("room-1").event_id
    moved = outlook.event("room-1").model_copy(
        update={"start": LATER[0], "end": LATER[1], "change_key": change_key}
    )
    outlook.world.calendar.events[ROOM][event_id] = moved

    assert await outlook.apply("room-1", moved) is Action.RESCHEDULE_BOOKING

    assert await outlook.status() == BOOKED
    restored = outlook.world.calendar.events[ROOM][event_id]
    assert (restored.start, restored.end) == (T0, T0 + timedelta(hours=1))
    [conflict] = [e for e in outlook.events() if e["type"] == "booking.conflict"]
    assert conflict["eventId"] == f"{outlook.booking_id}.v1.conflict.{change_key or event_id}"
    assert conflict["bookingId"] == outlook.booking_id
    assert conflict["source"] == "outlook"
    reason = conflict["data"]["reason"]
    assert conflict["data"] == {
        "reason": reason,
        "requestedStart": LATER[0].isoformat(),
        "requestedEnd": LATER[1].isoformat(),
        "start": T0.isoformat(),
        "end": (T0 + timedelta(hours=1)).isoformat(),
    }
    assert reason
    assert outlook.log() == [
        ("room-1", "outlook_move:conflict", event_id, SyncOutcome.FAILED, reason)
    ]


async def test_our_own_write_echoed_back_changes_nothing(outlook: Outlook) -> None:
    await outlook.policy("room-1", OnOutlookDelete.CANCEL_BOOKING, OnOutlookMove.RESTORE_EVENT)
    before = await outlook.mapping("room-1")

    assert await outlook.apply("room-1", outlook.event("room-1")) is None

    assert await outlook.mapping("room-1") == before  # not even rewritten
    assert outlook.log() == []


async def test_a_moved_event_without_a_change_key_is_no_echo(outlook: Outlook) -> None:
    await outlook.policy("room-1", move=OnOutlookMove.RESCHEDULE_BOOKING)
    stored = await outlook.mapping("room-1")
    await outlook.world.mappings.update(
        stored.value.model_copy(update={"change_key": None}), stored.etag
    )
    moved = outlook.event("room-1").model_copy(
        update={"start": LATER[0], "end": LATER[1], "change_key": None}
    )

    assert await outlook.apply("room-1", moved) is Action.RESCHEDULE_BOOKING

    assert await outlook.status() == (BookingStatus.RESCHEDULED, *LATER, 2)


async def test_an_edit_that_moves_nothing_is_remembered_only(outlook: Outlook) -> None:
    await outlook.policy("room-1", OnOutlookDelete.CANCEL_BOOKING, OnOutlookMove.RESTORE_EVENT)
    edited = outlook.event("room-1").model_copy(
        update={"subject": "Renamed in Outlook", "change_key": "ck-user"}
    )

    assert await outlook.apply("room-1", edited) is None

    assert (await outlook.mapping("room-1")).value.change_key == "ck-user"
    assert await outlook.status() == BOOKED
    assert outlook.log() == []


def a_push_writes_first(outlook: Outlook, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next mapping write meets a push that recorded a write on the same mapping
    since it was read: its ETag is stale."""
    update = outlook.world.mappings.update
    raced: list[bool] = []

    async def after_a_push(mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        if not raced:
            raced.append(True)
            latest = await outlook.mapping(mapping.resource_id)
            pushed = latest.value.model_copy(update={"synced_at": latest.value.synced_at})
            await update(pushed, latest.etag)
        return await update(mapping, etag)

    monkeypatch.setattr(outlook.world.mappings, "update", after_a_push)


async def test_an_edit_remembered_while_a_push_writes_the_mapping_is_kept_on_the_latest(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push recorded a write on the same mapping between the apply's read and its
    write: the changeKey used to be written under the old ETag, and the conflict failed
    the whole reconcile round (or notification). It is kept on the re-read mapping."""
    await outlook.policy("room-1", OnOutlookDelete.CANCEL_BOOKING, OnOutlookMove.RESTORE_EVENT)
    edited = outlook.event("room-1").model_copy(
        update={"subject": "Renamed in Outlook", "change_key": "ck-user"}
    )
    a_push_writes_first(outlook, monkeypatch)

    assert await outlook.apply("room-1", edited) is None

    assert (await outlook.mapping("room-1")).value.change_key == "ck-user"
    assert await outlook.status() == BOOKED


async def test_a_move_kept_under_ignore_while_a_push_writes_the_mapping_is_remembered(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outlook.policy("room-1", move=OnOutlookMove.IGNORE)
    a_push_writes_first(outlook, monkeypatch)

    assert await outlook.move("room-1", *LATER) is Action.IGNORE

    assert (await outlook.mapping("room-1")).value.change_key == "ck-user"
    assert await outlook.status() == BOOKED


async def test_a_restore_while_a_push_writes_the_mapping_still_puts_the_event_back(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outlook.policy("alice", move=OnOutlookMove.RESTORE_EVENT)
    a_push_writes_first(outlook, monkeypatch)

    assert await outlook.move("alice", *LATER) is Action.RESTORE_EVENT

    restored = outlook.event("alice")
    assert (restored.start, restored.end) == (T0, T0 + timedelta(hours=1))
    assert await outlook.status() == BOOKED


async def test_a_duplicate_kept_while_a_push_writes_the_mapping_is_mapped(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.RESTORE_EVENT)
    mapped = outlook.event("room-1")
    survivor = mapped.model_copy(update={"event_id": "ev-duplicate", "change_key": "ck-dup"})
    calendar = outlook.world.calendar.events[ROOM]
    calendar[survivor.event_id] = survivor
    del calendar[mapped.event_id]
    a_push_writes_first(outlook, monkeypatch)

    assert await outlook.apply("room-1", None) is Action.KEEP_DUPLICATE

    assert (await outlook.mapping("room-1")).value.event_id == survivor.event_id
    assert list(calendar) == [survivor.event_id]


@pytest.mark.parametrize(
    "mapping_update",
    [
        {"event_id": None},  # not created yet, or already forgotten
        {"detached": True},  # deleted in Outlook under the ignore policy
    ],
)
async def test_a_mapping_without_a_live_event_is_left_alone(
    outlook: Outlook, mapping_update: dict[str, Any]
) -> None:
    await outlook.policy("room-1", OnOutlookDelete.CANCEL_BOOKING, OnOutlookMove.RESTORE_EVENT)
    stored = await outlook.mapping("room-1")
    await outlook.world.mappings.update(stored.value.model_copy(update=mapping_update), stored.etag)
    moved = outlook.event("room-1").model_copy(update={"start": LATER[0], "end": LATER[1]})

    assert await outlook.apply("room-1", moved) is None
    assert await outlook.apply("room-1", None) is None

    assert await outlook.status() == BOOKED
    assert outlook.log() == []


async def test_a_mapping_whose_booking_is_gone_is_left_alone(outlook: Outlook) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.CANCEL_BOOKING)
    del outlook.world.bookings.rows[(outlook.booking_id, "")]

    assert await outlook.delete("room-1") is None

    assert outlook.log() == []


async def test_a_mapping_that_keeps_changing_fails_the_delete_after_cancelling(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.CANCEL_BOOKING)
    writes: list[EventMapping] = []

    async def conflicting(mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        writes.append(mapping)
        raise ConcurrencyConflict("changed meanwhile")

    monkeypatch.setattr(outlook.world.mappings, "update", conflicting)

    with pytest.raises(ConcurrencyConflict):
        await outlook.delete("room-1")

    status, *_ = await outlook.status()
    assert status is BookingStatus.CANCELLED  # the retry only tidies the mapping
    assert len(writes) == 5
    assert all(w.event_id is None for w in writes)


async def test_a_delete_the_cancels_push_already_recorded_is_not_written_again(
    outlook: Outlook, monkeypatch: pytest.MonkeyPatch
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.CANCEL_BOOKING)
    read_before = await outlook.mapping("room-1")
    cancel = outlook.world.services.bookings.cancel
    update = outlook.world.mappings.update
    after_push: list[EventMapping] = []

    async def counted(mapping: EventMapping, etag: str) -> Stored[EventMapping]:
        after_push.append(mapping)
        return await update(mapping, etag)

    async def cancel_and_push(*args: Any, **kwargs: Any) -> Any:
        view = await cancel(*args, **kwargs)
        await outlook.world.push_all()  # the push records the event's removal first
        monkeypatch.setattr(outlook.world.mappings, "update", counted)
        return view

    monkeypatch.setattr(outlook.world.services.bookings, "cancel", cancel_and_push)
    outlook.world.calendar.events[ROOM].clear()

    action = await outlook.apply("room-1", None, read_before, SyncDirection.RECONCILE)

    assert action is Action.CANCEL_BOOKING
    assert (await outlook.mapping("room-1")).value.event_id is None
    assert after_push == []
    assert [e.direction for e in outlook.world.sync_log.entries if "outlook" in e.action] == [
        SyncDirection.RECONCILE
    ]


@pytest.mark.parametrize("meanwhile", ["replaced", "removed"])
async def test_an_event_we_replaced_or_removed_since_the_mapping_was_read_is_left_alone(
    outlook: Outlook, meanwhile: str
) -> None:
    """The decision is made on the mapping as it is after the event was read."""
    await outlook.policy("room-1", OnOutlookDelete.CANCEL_BOOKING, OnOutlookMove.RESCHEDULE_BOOKING)
    read_before = await outlook.mapping("room-1")
    if meanwhile == "replaced":  # say, recreated by a restore: a new event id
        await outlook.world.mappings.update(
            read_before.value.model_copy(update={"event_id": "a-newer-event"}), read_before.etag
        )
    else:  # the mapping itself is gone
        del outlook.world.mappings.rows[("room-1", outlook.booking_id)]
    moved = outlook.event("room-1").model_copy(update={"start": LATER[0], "end": LATER[1]})

    assert await outlook.apply("room-1", None, read_before) is None
    assert await outlook.apply("room-1", moved, read_before) is None

    assert await outlook.status() == BOOKED
    assert outlook.log() == []


async def test_an_event_of_a_resource_taken_off_the_booking_is_left_alone(
    outlook: Outlook,
) -> None:
    await outlook.policy("alice", OnOutlookDelete.RESTORE_EVENT, OnOutlookMove.RESTORE_EVENT)
    stored = await outlook.world.bookings.get(outlook.booking_id)
    assert stored is not None
    await outlook.world.bookings.update(
        stored.value.model_copy(update={"resource_ids": ["room-1"]}), stored.etag
    )

    assert await outlook.delete("alice") is None

    assert outlook.world.calendar.events[ALICE] == {}  # not restored
    assert outlook.log() == []


@pytest.mark.parametrize(
    "policy",
    [OnOutlookDelete.CANCEL_BOOKING, OnOutlookDelete.RESTORE_EVENT, OnOutlookDelete.IGNORE],
)
async def test_a_deleted_event_with_a_duplicate_left_in_the_calendar_keeps_the_duplicate(
    outlook: Outlook, policy: OnOutlookDelete
) -> None:
    # Two events of ours for the booking (a crash between a write and its mapping); the
    # Outlook user deletes the mapped one. The calendar still holds the booking: the
    # survivor is kept, as a full reconcile round's de-duplication would keep it.
    await outlook.policy("room-1", delete=policy)
    mapped = outlook.event("room-1")
    survivor = mapped.model_copy(update={"event_id": "ev-duplicate", "change_key": "ck-dup"})
    calendar = outlook.world.calendar.events[ROOM]
    calendar[survivor.event_id] = survivor
    del calendar[mapped.event_id]

    assert await outlook.apply("room-1", None) is Action.KEEP_DUPLICATE

    assert await outlook.status() == BOOKED
    mapping = (await outlook.mapping("room-1")).value
    assert (mapping.event_id, mapping.change_key, mapping.detached) == (
        survivor.event_id,
        survivor.change_key,
        False,
    )
    assert mapping.booking_version == 1  # at the booking's times: nothing to write
    assert list(calendar) == [survivor.event_id]
    assert outlook.log() == [
        ("room-1", "outlook_delete:keep_duplicate", mapped.event_id, SyncOutcome.OK, None)
    ]
    assert [e["type"] for e in outlook.events()] == ["booking.created"]


async def test_a_deleted_event_whose_duplicate_is_at_other_times_puts_the_duplicate_right(
    outlook: Outlook,
) -> None:
    await outlook.policy("room-1", delete=OnOutlookDelete.CANCEL_BOOKING)
    mapped = outlook.event("room-1")
    survivor = mapped.model_copy(
        update={"event_id": "ev-duplicate", "start": LATER[0], "end": LATER[1]}
    )
    calendar = outlook.world.calendar.events[ROOM]
    calendar[survivor.event_id] = survivor
    del calendar[mapped.event_id]

    assert await outlook.apply("room-1", None) is Action.KEEP_DUPLICATE

    assert await outlook.status() == BOOKED
    assert (outlook.event("room-1").start, outlook.event("room-1").end) == (
        T0,
        T0 + timedelta(hours=1),
    )
    assert (await outlook.mapping("room-1")).value.event_id == survivor.event_id
