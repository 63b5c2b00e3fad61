"""What the push plans to write, and where: the rendered draft at its limits, the
transactionId of a create or a re-create, and which calendars a push skips, updates,
deletes or leaves alone (through PushService.push_many over a fake Microsoft 365)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingStatus, TimeRange
from shared.domain.calendar import MAX_WRITES_IN_FLIGHT, EventMapping, WrittenTimes
from shared.domain.errors import GraphTransient, StorageUnavailable
from shared.domain.messages import PushBooking
from shared.domain.resources import CancelledEventMode, ConnectionState, ConnectionStatus, Direction
from shared.ports import EventWrite, EventWriteResult
from shared.services.push import CANCELLED_PREFIX, PushIncomplete, render_draft, transaction_id
from tests.builders import T0, booking, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world

ROOM, ALICE, BOB = "room-1@contoso.com", "alice@contoso.com", "bob@contoso.com"
MAILBOX = {"room-1": ROOM, "alice": ALICE, "bob": BOB}


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), (ROOM, ALICE, BOB))
    for resource_id in ("room-1", "alice", "bob"):
        await add(w, resource_id)
    return w


async def add(w: FakeWorld, resource_id: str, **settings: Any) -> None:
    await w.resources.add(
        resource(resource_id, **settings).model_copy(
            update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
        )
    )


async def settle(w: FakeWorld, resource_id: str, **settings: Any) -> None:
    stored = await w.resources.get(resource_id)
    assert stored is not None
    updated = stored.value.settings.model_copy(update=settings)
    await w.resources.update(stored.value.model_copy(update={"settings": updated}), stored.etag)


async def book(w: FakeWorld, *resource_ids: str, hour: int = 0) -> str:
    request = booking_request(
        T0 + timedelta(hours=hour), resourceIds=list(resource_ids or ("room-1", "alice", "bob"))
    )
    view = await w.services.bookings.create(request, None)
    w.queue.sent.clear()  # the test pushes explicitly
    return view.booking_id


def message(booking_id: str, version: int = 1, include_past: bool = False) -> PushBooking:
    return PushBooking(booking_id=booking_id, booking_version=version, include_past=include_past)


def subjects(w: FakeWorld) -> dict[str, list[str]]:
    return {
        rid: sorted(e.subject or "" for e in w.calendar.events[mailbox].values())
        for rid, mailbox in MAILBOX.items()
    }


async def mapping(w: FakeWorld, resource_id: str, booking_id: str) -> EventMapping:
    stored = await w.mappings.get(resource_id, booking_id)
    assert stored is not None
    return stored.value


def test_every_placeholder_is_filled_from_the_booking() -> None:
    template = "{title}|{customerName}|{customerEmail}|{location}|{notes}|{bookingId}|{start}|{end}"
    room = resource(time_zone="Europe/Paris", subject_template=template, body_template=template)
    full = booking(location="Room 1", notes="Bring ID")
    bare = booking()

    filled = render_draft(full, room)
    assert filled is not None
    assert filled.subject == (
        "Intro call|Ada|ada@example.com|Room 1|Bring ID|bk-1|2030-01-07 10:00|2030-01-07 11:00"
    )
    assert filled.location == "Room 1"
    draft = render_draft(bare, room)
    assert draft is not None
    assert draft.subject == (
        "Intro call|Ada|ada@example.com|||bk-1|2030-01-07 10:00|2030-01-07 11:00"
    )
    assert (draft.location, draft.booking_id, draft.time_zone) == (None, "bk-1", "Europe/Paris")


def test_subject_and_body_are_cut_to_what_outlook_keeps() -> None:
    room = resource(subject_template="{title}{title}", body_template="  {notes}{notes}{notes}")
    long = booking(title="t" * 200, notes="n" * 4000)

    draft = render_draft(long, room)
    cancelled = render_draft(
        long.model_copy(update={"status": BookingStatus.CANCELLED}),
        resource(subject_template="{title}{title}", cancelled_event_mode="prefix"),
    )

    assert draft is not None
    assert cancelled is not None
    assert draft.subject == "t" * 255
    assert draft.body == "n" * 8000
    assert cancelled.subject == CANCELLED_PREFIX + "t" * (255 - len(CANCELLED_PREFIX))


def test_a_short_body_is_trimmed_not_cut() -> None:
    draft = render_draft(booking(notes="hello"), resource(body_template="  {notes}\n"))
    assert draft is not None
    assert draft.body == "hello"


@pytest.mark.parametrize(
    ("status", "mode", "subject"),
    [
        (BookingStatus.CONFIRMED, CancelledEventMode.DELETE, "Intro call"),
        (BookingStatus.RESCHEDULED, CancelledEventMode.PREFIX, "Intro call"),
        (BookingStatus.CANCELLED, CancelledEventMode.PREFIX, "Cancelled: Intro call"),
        (BookingStatus.CANCELLED, CancelledEventMode.DELETE, None),
    ],
)
def test_a_cancelled_booking_keeps_an_event_only_in_prefix_mode(
    status: BookingStatus, mode: CancelledEventMode, subject: str | None
) -> None:
    draft = render_draft(booking(status=status), resource(cancelled_event_mode=mode))
    assert (draft.subject if draft else None) == subject


def test_transaction_ids_tell_versions_and_recreations_apart() -> None:
    b = booking("bk-9", version=3)
    assert transaction_id(b, "room-1") == "bk-9.room-1.v3"
    assert transaction_id(b, "room-1", 0) == "bk-9.room-1.v3"
    assert transaction_id(b, "room-1", 2) == "bk-9.room-1.v3.r2"


async def test_one_batch_creates_an_event_in_each_pushing_calendar(world: FakeWorld) -> None:
    booking_id = await book(world)

    await world.services.push.push(message(booking_id))

    assert world.calendar.batches == [3]
    assert subjects(world) == {
        "room-1": ["Intro call"],
        "alice": ["Intro call"],
        "bob": ["Intro call"],
    }
    m = await mapping(world, "alice", booking_id)
    assert m.pending_transaction_id is None
    assert world.calendar.transactions[(ALICE, f"{booking_id}.alice.v1")] == m.event_id


@pytest.mark.parametrize(
    "settings",
    [{"direction": Direction.IN}, {"direction": Direction.NONE}, {"active": False}],
)
async def test_a_calendar_that_does_not_take_pushes_is_skipped(
    world: FakeWorld, settings: dict[str, Any]
) -> None:
    booking_id = await book(world)
    await settle(world, "alice", **settings)  # since the booking was made

    await world.services.push.push(message(booking_id))

    assert world.calendar.batches == [2]
    assert subjects(world)["alice"] == []
    assert await world.mappings.get("alice", booking_id) is None


async def test_an_unknown_booking_or_resource_skips_only_itself(world: FakeWorld) -> None:
    booking_id = await book(world)
    await world.resources.delete("alice")

    await world.services.push.push_many([message("bk-unknown"), message(booking_id)])

    assert subjects(world) == {"room-1": ["Intro call"], "alice": [], "bob": ["Intro call"]}


async def test_only_limits_the_push_to_one_calendar(world: FakeWorld) -> None:
    first, second = await book(world, "room-1", "alice"), await book(world, "bob")

    await world.services.push.push_many([message(first), message(second)], only="alice")

    assert world.calendar.batches == [1]
    assert subjects(world) == {"room-1": [], "alice": ["Intro call"], "bob": []}


async def test_nothing_to_write_sends_no_batch(world: FakeWorld) -> None:
    booking_id = await book(world)
    await world.services.push.push(message(booking_id))

    await world.services.push.push(message(booking_id))
    await world.services.push.push_many([])

    assert world.calendar.batches == [3]


async def test_a_newer_version_or_a_failed_write_is_written_again(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1", "alice")
    await world.services.push.push(message(booking_id))
    alice = await world.mappings.get("alice", booking_id)
    assert alice is not None
    await world.mappings.update(alice.value.model_copy(update={"last_error": "503"}), alice.etag)
    room = await world.mappings.get("room-1", booking_id)
    assert room is not None
    await world.mappings.update(room.value.model_copy(update={"booking_version": 0}), room.etag)
    before = {rid: (await mapping(world, rid, booking_id)).event_id for rid in ("room-1", "alice")}

    await world.services.push.push(message(booking_id))

    assert world.calendar.batches == [2, 2]  # two updates, no new events
    after = {rid: (await mapping(world, rid, booking_id)).event_id for rid in ("room-1", "alice")}
    assert after == before
    assert (await mapping(world, "alice", booking_id)).last_error is None
    assert (await mapping(world, "room-1", booking_id)).booking_version == 1


async def test_a_cancel_deletes_only_events_that_exist(world: FakeWorld) -> None:
    booking_id = await book(world)
    await world.services.push.push(message(booking_id))
    bob = await world.mappings.get("bob", booking_id)
    assert bob is not None
    await world.mappings.update(bob.value.model_copy(update={"event_id": None}), bob.etag)
    del world.mappings.rows[("alice", booking_id)]  # never recorded
    await world.services.bookings.cancel(booking_id)
    world.queue.sent.clear()

    await world.services.push.push(message(booking_id, 2))

    assert world.calendar.batches == [3, 1]  # room-1's delete only
    assert subjects(world)["room-1"] == []


async def test_a_detached_calendar_is_never_written_again(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1", "alice")
    await world.services.push.push(message(booking_id))
    alice = await world.mappings.get("alice", booking_id)
    assert alice is not None
    await world.mappings.update(
        alice.value.model_copy(update={"event_id": None, "detached": True}), alice.etag
    )
    world.calendar.events[ALICE].clear()
    room = await world.mappings.get("room-1", booking_id)
    assert room is not None
    await world.mappings.update(room.value.model_copy(update={"booking_version": 0}), room.etag)

    await world.services.push.push(message(booking_id))

    assert world.calendar.batches == [2, 1]
    assert subjects(world)["alice"] == []


async def test_a_past_booking_is_created_only_when_asked(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1")
    world.clock.now = T0 + timedelta(hours=1)  # it has just ended

    await world.services.push.push(message(booking_id))
    assert world.calendar.batches == []

    await world.services.push.push(message(booking_id, include_past=True))
    assert subjects(world)["room-1"] == ["Intro call"]


async def test_a_booking_not_yet_over_is_still_created(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1")
    world.clock.now = T0 + timedelta(minutes=59, seconds=59)

    await world.services.push.push(message(booking_id))

    assert subjects(world)["room-1"] == ["Intro call"]


async def test_a_recreated_event_gets_a_new_transaction_id(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1")
    await world.services.push.push(message(booking_id))
    first = await world.mappings.get("room-1", booking_id)
    assert first is not None
    world.calendar.events[ROOM].clear()  # deleted in Outlook; restore_event recreates it
    await world.mappings.update(
        first.value.model_copy(
            update={"event_id": None, "change_key": None, "booking_version": 0, "recreations": 1}
        ),
        first.etag,
    )

    await world.services.push.push(message(booking_id))

    again = await mapping(world, "room-1", booking_id)
    assert again.event_id not in (None, first.value.event_id)
    assert world.calendar.transactions[(ROOM, f"{booking_id}.room-1.v1.r1")] == again.event_id


async def test_a_successful_write_marks_its_calendar_synced(world: FakeWorld) -> None:
    booking_id = await book(world, "room-1", "alice")
    await world.services.connection.mark_failing("alice", "graph_transient: 503")

    await world.services.push.push(message(booking_id))

    for resource_id in ("room-1", "alice"):
        stored = await world.resources.get(resource_id)
        assert stored is not None
        assert stored.value.status.state is ConnectionState.CONNECTED
        assert stored.value.status.last_sync_at == world.clock.now


async def test_a_gateway_answer_missing_a_result_fails_the_push(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking_id = await book(world)
    write_batch = world.calendar.write_batch

    async def one_short(writes: list[EventWrite]) -> list[EventWriteResult]:
        return (await write_batch(writes))[:-1]

    monkeypatch.setattr(world.calendar, "write_batch", one_short)

    with pytest.raises(ValueError, match="shorter"):
        await world.services.push.push(message(booking_id))


async def test_a_retry_names_at_most_ten_of_the_writes_that_failed(world: FakeWorld) -> None:
    booking_ids = [await book(world, "room-1", hour=i) for i in range(12)]
    world.calendar.fail(ROOM, *(GraphTransient("503") for _ in booking_ids))

    with pytest.raises(PushIncomplete) as failed:
        await world.services.push.push_many([message(b) for b in booking_ids])

    assert failed.value.message.count(" on room-1") == 10


async def in_flight(w: FakeWorld, resource_id: str, booking_id: str) -> None:
    """Our earlier write to that calendar's event is sent and not answered yet."""
    stored = await w.mappings.get(resource_id, booking_id)
    assert stored is not None
    sent = WrittenTimes(
        booking_version=1, start=T0, end=T0 + timedelta(hours=1), sent_at=w.clock.now
    )
    await w.mappings.update(
        stored.value.model_copy(update={"writes_in_flight": [sent]}), stored.etag
    )


async def answer(w: FakeWorld, resource_id: str, booking_id: str) -> None:
    stored = await w.mappings.get(resource_id, booking_id)
    assert stored is not None
    answered = [x.model_copy(update={"answered": True}) for x in stored.value.writes_in_flight]
    await w.mappings.update(
        stored.value.model_copy(update={"writes_in_flight": answered}), stored.etag
    )


async def test_every_answer_is_recorded_before_the_first_failure_to_record_is_raised(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking_id = await book(world, "alice", "room-1", "bob")
    update = world.mappings.update

    async def failing(mapping: EventMapping, etag: str) -> Any:
        if mapping.event_id is not None and mapping.resource_id in ("alice", "bob"):
            raise StorageUnavailable(f"table down for {mapping.resource_id}")
        return await update(mapping, etag)

    monkeypatch.setattr(world.mappings, "update", failing)

    with pytest.raises(StorageUnavailable, match="alice"):
        await world.services.push.push(message(booking_id))

    assert (await mapping(world, "room-1", booking_id)).event_id is not None


async def test_a_mapping_remembers_only_its_latest_unanswered_writes(world: FakeWorld) -> None:
    """Each push that met no answer leaves its times on the mapping (they may yet land);
    a retry of the same write replaces its entry, and past MAX_WRITES_IN_FLIGHT the oldest
    are forgotten, so the row cannot grow unbounded."""
    booking_id = await book(world, "room-1")
    await world.services.push.push(message(booking_id))
    first = await mapping(world, "room-1", booking_id)
    sent = []
    for version in range(2, MAX_WRITES_IN_FLIGHT + 3):
        moved = TimeRange(
            start=T0 + timedelta(hours=version), end=T0 + timedelta(hours=version + 1)
        )
        await world.services.bookings.reschedule(booking_id, moved)
        world.queue.sent.clear()
        for _ in range(2):  # a try and its retry
            world.clock.now += timedelta(seconds=1)
            world.calendar.fail(ROOM, GraphTransient("503"))
            with pytest.raises(PushIncomplete):
                await world.services.push.push(message(booking_id, version=version))
        sent.append((version, world.clock.now))

    remembered = (await mapping(world, "room-1", booking_id)).writes_in_flight
    assert [(w.booking_version, w.sent_at) for w in remembered] == sent[-MAX_WRITES_IN_FLIGHT:]
    assert all(w.answered for w in remembered)
    assert (await mapping(world, "room-1", booking_id)).booking_version == first.booking_version
