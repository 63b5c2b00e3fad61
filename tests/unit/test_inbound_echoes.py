"""Which Outlook notifications the inbound worker acts on: echoes of our own writes,
repeats, changes of events we replaced, filtered kinds and resources that take no
changes are recognised before anything is read or changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus
from shared.domain.calendar import CalendarEvent, EventMapping
from shared.domain.errors import GraphAccessDenied, GraphError, GraphMailboxNotFound, GraphTransient
from shared.domain.messages import EventChange, EventChanges, ReconcileResource
from shared.domain.resources import (
    ChangeKind,
    ConnectionState,
    ConnectionStatus,
    Direction,
    OnOutlookDelete,
    OnOutlookMove,
)
from shared.domain.sync_log import SyncOutcome
from shared.ports import Stored
from shared.services.inbound import change_key_from_etag
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM = "room-1@contoso.com"
LATER = (T0 + timedelta(hours=3), T0 + timedelta(hours=4))


class Inbox:
    def __init__(self, world: FakeWorld, booking_id: str) -> None:
        self.world = world
        self.booking_id = booking_id

    @property
    def event(self) -> CalendarEvent:
        [event] = [e for e in self.world.calendar.events[ROOM].values() if e.booking_id]
        return event

    async def mapping(self) -> Stored[EventMapping]:
        stored = await self.world.mappings.get("room-1", self.booking_id)
        assert stored is not None
        return stored

    async def settle(self, **settings: Any) -> None:
        stored = await self.world.resources.get("room-1")
        assert stored is not None
        updated = stored.value.settings.model_copy(update=settings)
        await self.world.resources.update(
            stored.value.model_copy(update={"settings": updated}), stored.etag
        )

    def move_in_outlook(self) -> CalendarEvent:
        moved = self.event.model_copy(
            update={"start": LATER[0], "end": LATER[1], "change_key": "ck-user"}
        )
        self.world.calendar.events[ROOM][moved.event_id] = moved
        return moved

    async def notify(
        self, change_type: str = "updated", event_id: str | None = None, **fields: Any
    ) -> None:
        values: dict[str, Any] = {
            "subscription_id": "sub-1",
            "resource_id": "room-1",
            "change_type": change_type,
            "event_id": event_id or self.event.event_id,
            "received_at": self.world.clock.now,
            **fields,
        }
        await self.world.services.inbound.handle_change(EventChange(**values))

    async def status(self) -> tuple[BookingStatus, Any]:
        stored = await self.world.bookings.get(self.booking_id)
        assert stored is not None
        return stored.value.status, stored.value.start

    def log(self) -> list[tuple[str, SyncOutcome]]:
        return [
            (e.action, e.outcome) for e in self.world.sync_log.entries if e.direction == "inbound"
        ]


@pytest.fixture
async def inbox() -> Inbox:
    world = fake_world(Clock(T0 - timedelta(days=1)), (ROOM,))
    await world.resources.add(
        resource(
            "room-1",
            on_outlook_delete=OnOutlookDelete.CANCEL_BOOKING,
            on_outlook_move=OnOutlookMove.RESCHEDULE_BOOKING,
        ).model_copy(update={"status": ConnectionStatus(mirror_refreshed_at=world.clock.now)})
    )
    booking_id = (await world.services.bookings.create(booking_request(), None)).booking_id
    await world.push_all()
    world.calendar.reads.clear()
    return Inbox(world, booking_id)


@pytest.mark.parametrize(
    ("etag", "change_key"),
    [
        ('W/"abc=="', "abc=="),
        ('"abc=="', "abc=="),
        ("abc==", "abc=="),
        ('W/""', None),
        ("", None),
        (None, None),
    ],
)
def test_the_change_key_is_read_from_a_weak_etag(etag: str | None, change_key: str | None) -> None:
    assert change_key_from_etag(etag) == change_key


async def test_an_echo_of_our_own_write_is_recognised_without_reading_the_event(
    inbox: Inbox,
) -> None:
    ours = (await inbox.mapping()).value.change_key
    assert ours is not None

    await inbox.notify(change_key=ours)

    assert inbox.world.calendar.reads == []
    assert inbox.log() == []


async def test_a_change_with_another_change_key_is_read_and_applied(inbox: Inbox) -> None:
    moved = inbox.move_in_outlook()

    await inbox.notify(change_key=moved.change_key)

    assert inbox.world.calendar.reads == [(ROOM, moved.event_id)]
    assert await inbox.status() == (BookingStatus.RESCHEDULED, LATER[0])


async def test_a_change_without_a_change_key_is_read_and_our_own_write_found_unchanged(
    inbox: Inbox,
) -> None:
    before = await inbox.mapping()

    await inbox.notify(change_key=None)

    assert inbox.world.calendar.reads == [(ROOM, inbox.event.event_id)]
    assert await inbox.mapping() == before
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


def looked_up_before_the_answer(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change's mapping is looked for by event id before the create's answer is
    recorded (its notification came first), and the event read after it was."""

    async def not_yet(resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        return None

    monkeypatch.setattr(inbox.world.mappings, "find_by_event", not_yet)


async def test_a_change_of_ours_recorded_after_its_lookup_is_applied_as_ours(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up_before_the_answer(inbox, monkeypatch)
    moved = inbox.move_in_outlook()

    await inbox.notify(change_key=moved.change_key)

    assert await inbox.status() == (BookingStatus.RESCHEDULED, LATER[0])
    assert all("left to reconcile" not in action for action, _ in inbox.log())


async def test_an_echo_recorded_after_its_lookup_changes_and_logs_nothing(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up_before_the_answer(inbox, monkeypatch)
    before = await inbox.mapping()

    await inbox.notify(change_key=None)

    assert inbox.log() == []
    assert await inbox.mapping() == before
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


async def test_a_delete_is_never_an_echo_even_with_our_change_key(inbox: Inbox) -> None:
    ours = (await inbox.mapping()).value.change_key
    event_id = inbox.event.event_id
    inbox.world.calendar.events[ROOM].clear()

    await inbox.notify("deleted", event_id, change_key=ours)

    assert await inbox.status() == (BookingStatus.CANCELLED, T0)


async def test_a_change_of_an_event_we_replaced_is_ignored(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = await inbox.mapping()

    async def former(resource_id: str, event_id: str) -> Stored[EventMapping] | None:
        # The storage adapter finds a mapping by an event it used to point at.
        return current if event_id == "ev-former" else None

    monkeypatch.setattr(inbox.world.mappings, "find_by_event", former)
    inbox.world.calendar.events[ROOM]["ev-former"] = inbox.event.model_copy(
        update={"event_id": "ev-former", "start": LATER[0], "end": LATER[1]}
    )

    await inbox.notify(event_id="ev-former", change_key="ck-other")

    assert inbox.world.calendar.reads == []
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


@pytest.mark.parametrize(
    "settings", [{"active": False}, {"direction": Direction.NONE}], ids=["inactive", "none"]
)
async def test_a_resource_that_takes_no_changes_logs_a_skip(
    inbox: Inbox, settings: dict[str, Any]
) -> None:
    inbox.move_in_outlook()
    await inbox.settle(**settings)

    await inbox.notify(change_key="ck-user")

    assert inbox.world.calendar.reads == []
    assert inbox.log() == [("skipped: resource inactive or direction none", SyncOutcome.SKIPPED)]
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


async def test_a_filtered_kind_of_change_logs_a_skip(inbox: Inbox) -> None:
    event_id = inbox.event.event_id
    await inbox.settle(inbound_changes=frozenset({ChangeKind.CREATED, ChangeKind.UPDATED}))
    inbox.world.calendar.events[ROOM].clear()

    await inbox.notify("deleted", event_id)

    assert inbox.log() == [("skipped: deleted changes are filtered out", SyncOutcome.SKIPPED)]
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


async def test_our_events_in_a_calendar_we_no_longer_push_to_are_left_alone(
    inbox: Inbox,
) -> None:
    moved = inbox.move_in_outlook()
    await inbox.settle(direction=Direction.IN)

    await inbox.notify(change_key=moved.change_key)

    assert inbox.world.calendar.reads == []
    assert await inbox.status() == (BookingStatus.CONFIRMED, T0)


def foreign(event_id: str) -> CalendarEvent:
    return CalendarEvent(event_id=event_id, change_key="ck-f", start=LATER[0], end=LATER[1])


@pytest.mark.parametrize(
    ("direction", "mirrored"),
    [(Direction.BOTH, True), (Direction.IN, True), (Direction.OUT, False)],
)
async def test_a_foreign_event_is_mirrored_only_where_the_resource_pulls(
    inbox: Inbox, direction: Direction, mirrored: bool
) -> None:
    await inbox.settle(direction=direction)
    inbox.world.calendar.events[ROOM]["ev-foreign"] = foreign("ev-foreign")

    await inbox.notify("created", "ev-foreign")

    blocks = await inbox.world.ports.unavailability.list_for_resource("room-1")
    assert [b.event_id for b in blocks] == (["ev-foreign"] if mirrored else [])


@pytest.mark.parametrize(
    "refusal",
    [
        GraphAccessDenied("403 ErrorAccessDenied"),
        GraphMailboxNotFound("404 ErrorInvalidUser: the mailbox is not found"),
    ],
    ids=["403", "404-mailbox"],
)
async def test_a_calendar_refusing_the_read_is_marked_failing_and_the_round_after_catches_up(
    inbox: Inbox, refusal: GraphError
) -> None:
    """Every delivery would meet the same answer: the message completes (rather than
    walking to -poison), the resource is failing, and the change is the round's once the
    calendar answers again, as a round's own refusal is."""
    assert (await inbox.world.services.reconcile.reconcile("room-1")).full  # the baseline
    inbox.world.calendar.events[ROOM]["ev-foreign"] = foreign("ev-foreign")
    inbox.world.calendar.fail(ROOM, refusal)

    await inbox.notify("created", "ev-foreign")

    stored = await inbox.world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.FAILING
    assert inbox.log() == [("left to the next round", SyncOutcome.FAILED)]
    [entry] = inbox.world.sync_log.entries[-1:]
    assert entry.detail == f"{refusal.code}: {refusal.message}"
    assert await inbox.world.ports.unavailability.list_for_resource("room-1") == []

    await inbox.world.services.rounds.run(
        ReconcileResource(resource_id="room-1", scheduled_at=inbox.world.clock.now)
    )

    blocks = await inbox.world.ports.unavailability.list_for_resource("room-1")
    assert [b.event_id for b in blocks] == ["ev-foreign"]
    stored = await inbox.world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.CONNECTED


async def test_every_change_is_tried_and_the_first_failure_is_raised(inbox: Inbox) -> None:
    inbox.world.calendar.events[ROOM]["ev-c"] = foreign("ev-c")
    inbox.world.calendar.fail(ROOM, GraphTransient("first"), GraphTransient("second"))
    work = EventChanges(
        subscription_id="sub-1",
        resource_id="room-1",
        changes=[
            EventChange(
                subscription_id="sub-1",
                resource_id="room-1",
                change_type="created",
                event_id=event_id,
                received_at=T0,
            )
            for event_id in ("ev-a", "ev-b", "ev-c")
        ],
    )

    with pytest.raises(GraphTransient, match="first"):
        await inbox.world.services.inbound.handle_change(work)

    blocks = await inbox.world.ports.unavailability.list_for_resource("room-1")
    assert [b.event_id for b in blocks] == ["ev-c"]  # the third still ran


@pytest.mark.parametrize(("repeats", "logged"), [(0, []), (2, ["2 repeated changes skipped"])])
async def test_skipped_repeats_are_counted_in_the_log(
    inbox: Inbox, caplog: pytest.LogCaptureFixture, repeats: int, logged: list[str]
) -> None:
    change = EventChange(
        subscription_id="sub-1",
        resource_id="room-1",
        change_type="deleted",
        event_id="ev-gone",
        received_at=T0,
    )
    others = [change.model_copy(update={"event_id": f"ev-{i}"}) for i in range(2)]
    work = EventChanges(
        subscription_id="sub-1",
        resource_id="room-1",
        changes=[change, *others, *[change] * repeats],
    )

    with caplog.at_level("DEBUG", logger="shared.services.inbound"):
        await inbox.world.services.inbound.handle_change(work)

    assert [r.getMessage() for r in caplog.records if "repeated" in r.getMessage()] == logged
