"""The push worker over a fake Microsoft 365: create, update, cancel, retries, failures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingRequest, TimeRange
from shared.domain.errors import (
    AlreadyExists,
    GraphAccessDenied,
    GraphMailboxNotFound,
    GraphTransient,
)
from shared.domain.resources import (
    CancelledEventMode,
    ConnectionState,
    ConnectionStatus,
    Direction,
    ResourceSettings,
)
from shared.domain.sync_log import SyncOutcome
from shared.services.push import PushIncomplete
from tests.builders import T0, resource
from tests.fakes import Clock, FakeWorld, fake_world

MAILBOXES = ("room-1@contoso.com", "alice@contoso.com", "bob@contoso.com")


@pytest.fixture
async def world() -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), MAILBOXES)
    for resource_id in ("room-1", "alice", "bob"):
        await add_resource(w, resource_id)
    return w


async def add_resource(w: FakeWorld, resource_id: str, **settings: Any) -> None:
    value = resource(resource_id, **settings).model_copy(
        update={"status": ConnectionStatus(mirror_refreshed_at=w.clock.now)}
    )
    await w.resources.add(value)


def request(**fields: Any) -> BookingRequest:
    values: dict[str, Any] = {
        "resourceIds": ["room-1", "alice", "bob"],
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "title": "Panel interview",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    }
    values.update(fields)
    return BookingRequest.model_validate(values)


def events_of(w: FakeWorld, mailbox: str) -> list[Any]:
    return list(w.calendar.events[mailbox].values())


async def test_panel_booking_is_one_batch_with_an_event_per_calendar(world: FakeWorld) -> None:
    view = await world.services.bookings.create(request(), None)

    await world.push_all()

    assert world.calendar.batches == [3]
    for mailbox in MAILBOXES:
        [event] = events_of(world, mailbox)
        assert event.booking_id == view.booking_id
        assert event.subject == "Panel interview"
    synced = await world.services.bookings.get(view.booking_id)
    assert [s.state for s in synced.sync] == ["synced"] * 3
    assert all(s.event_id for s in synced.sync)


async def test_the_sync_log_names_each_event_created(world: FakeWorld) -> None:
    view = await world.services.bookings.create(request(), None)

    await world.push_all()

    for resource_id, mailbox in zip(("room-1", "alice", "bob"), MAILBOXES, strict=True):
        [event] = events_of(world, mailbox)
        [entry] = [
            e
            for e in (await world.sync_log.page(resource_id, 10)).value
            if e.action == "create_event"
        ]
        assert (entry.booking_id, entry.event_id) == (view.booking_id, event.event_id)


async def test_template_is_applied(world: FakeWorld) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    settings = stored.value.settings.model_copy(update={"subject_template": "Training: {title}"})
    await world.resources.update(
        stored.value.model_copy(update={"settings": settings}), stored.etag
    )

    await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    await world.push_all()

    assert [e.subject for e in events_of(world, "room-1@contoso.com")] == [
        "Training: Panel interview"
    ]


async def test_repeated_push_writes_nothing_more(world: FakeWorld) -> None:
    await world.services.bookings.create(request(), None)
    [message] = world.outbound()
    await world.push_all()

    await world.services.push.push(message)

    assert world.calendar.batches == [3]


async def test_transient_failure_retries_only_what_failed_with_the_same_transaction(
    world: FakeWorld,
) -> None:
    await world.services.bookings.create(request(), None)
    [message] = world.outbound()
    world.calendar.fail("alice@contoso.com", GraphTransient("503"))

    with pytest.raises(PushIncomplete, match="alice"):
        await world.services.push.push(message)
    await world.services.push.push(message)  # the queue's retry

    assert world.calendar.batches == [3, 1]
    assert all(len(events_of(world, m)) == 1 for m in MAILBOXES)


async def test_retry_after_a_lost_mapping_write_does_not_duplicate(world: FakeWorld) -> None:
    view = await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    [message] = world.outbound()
    await world.services.push.push(message)
    # Simulate a crash after Graph created the event but before the mapping recorded it.
    mapping = await world.mappings.get("room-1", view.booking_id)
    assert mapping is not None
    tx = f"{view.booking_id}.room-1.v1"
    await world.mappings.update(
        mapping.value.model_copy(update={"event_id": None, "pending_transaction_id": tx}),
        mapping.etag,
    )

    await world.services.push.push(message)

    assert len(events_of(world, "room-1@contoso.com")) == 1


async def test_access_denied_marks_the_resource_failing_and_shows_on_the_booking(
    world: FakeWorld,
) -> None:
    view = await world.services.bookings.create(request(), None)
    world.calendar.fail("bob@contoso.com", GraphAccessDenied("403 ErrorAccessDenied"))

    await world.push_all()  # permanent: recorded, not retried

    shown = await world.services.bookings.get(view.booking_id)
    bob = next(s for s in shown.sync if s.resource_id == "bob")
    assert bob.state == "failed"
    assert "403" in (bob.error or "")
    stored = await world.resources.get("bob")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.FAILING
    assert any(
        e.outcome is SyncOutcome.FAILED for e in (await world.sync_log.page("bob", 10)).value
    )


async def test_cancel_deletes_every_event(world: FakeWorld) -> None:
    view = await world.services.bookings.create(request(), None)
    await world.push_all()

    await world.services.bookings.cancel(view.booking_id)
    await world.push_all()

    assert all(events_of(world, m) == [] for m in MAILBOXES)


async def test_cancel_with_prefix_mode_keeps_a_cancelled_event(world: FakeWorld) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    settings: ResourceSettings = stored.value.settings.model_copy(
        update={"cancelled_event_mode": CancelledEventMode.PREFIX}
    )
    await world.resources.update(
        stored.value.model_copy(update={"settings": settings}), stored.etag
    )
    view = await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    await world.push_all()

    await world.services.bookings.cancel(view.booking_id)
    await world.push_all()

    assert [e.subject for e in events_of(world, "room-1@contoso.com")] == [
        "Cancelled: Panel interview"
    ]


async def test_reschedule_moves_every_event(world: FakeWorld) -> None:
    view = await world.services.bookings.create(request(), None)
    await world.push_all()
    new = TimeRange(start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=4))

    await world.services.bookings.reschedule(view.booking_id, new)
    await world.push_all()

    for mailbox in MAILBOXES:
        [event] = events_of(world, mailbox)
        assert (event.start, event.end) == (new.start, new.end)


async def test_inbound_only_resources_get_no_event(world: FakeWorld) -> None:
    await add_resource(world, "reader", direction=Direction.IN, mailbox="alice@contoso.com")

    await world.services.bookings.create(request(resourceIds=["reader"]), None)
    await world.push_all()

    assert events_of(world, "alice@contoso.com") == []


async def test_past_bookings_are_not_pushed(world: FakeWorld) -> None:
    await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    world.clock.now = T0 + timedelta(days=2)

    await world.push_all()

    assert events_of(world, "room-1@contoso.com") == []


async def test_a_time_zone_graph_refuses_keeps_the_time_blocked_and_says_so(
    world: FakeWorld,
) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    settings = stored.value.settings.model_copy(update={"time_zone": "Antarctica/Troll"})
    await world.resources.update(
        stored.value.model_copy(update={"settings": settings}), stored.etag
    )
    world.calendar.refused_zones = {"Antarctica/Troll"}

    view = await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    await world.push_all()

    # The room's time is blocked (same instants, written in UTC) ...
    [event] = events_of(world, "room-1@contoso.com")
    assert (event.start, event.end) == (T0, T0 + timedelta(hours=1))
    # ... and the fallback is visible: on the booking's sync state and in the sync log.
    [state] = (await world.services.bookings.get(view.booking_id)).sync
    assert state.state == "synced"
    assert state.warning is not None
    assert "Antarctica/Troll" in state.warning
    assert "UTC" in state.warning
    [entry] = [
        e for e in (await world.sync_log.page("room-1", 10)).value if e.action == "create_event"
    ]
    assert entry.detail is not None
    assert "Antarctica/Troll" in entry.detail

    # Once Graph takes the zone again, the next write clears the warning.
    world.calendar.refused_zones = set()
    await world.services.bookings.reschedule(
        view.booking_id, TimeRange(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))
    )
    await world.push_all()
    [state] = (await world.services.bookings.get(view.booking_id)).sync
    assert (state.state, state.warning) == ("synced", None)


async def test_a_mailbox_gone_under_an_update_marks_the_resource_failing(
    world: FakeWorld,
) -> None:
    """Not found on a PATCH may name the event; a mailbox that is not there names the
    calendar as a whole, as for a create or a delete: bookings are refused until it
    answers again."""
    view = await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    await world.push_all()
    new = TimeRange(start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=4))
    await world.services.bookings.reschedule(view.booking_id, new)
    world.calendar.fail("room-1@contoso.com", GraphMailboxNotFound("404 ErrorInvalidUser"))

    await world.push_all()

    [shown] = (await world.services.bookings.get(view.booking_id)).sync
    assert shown.state == "failed"
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.FAILING


async def test_a_push_that_meets_the_mapping_another_push_just_added_goes_on(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two pushes of one booking (made, then at once rescheduled) both find no mapping;
    # the other adds it first, so this one's add meets AlreadyExists.
    view = await world.services.bookings.create(request(resourceIds=["room-1"]), None)
    mappings = world.ports.event_mappings
    add = mappings.add
    calls = 0

    async def the_other_push_adds_first(value: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await add(value)
            raise AlreadyExists(f"mapping of {value.booking_id} already exists")
        return await add(value)

    monkeypatch.setattr(mappings, "add", the_other_push_adds_first)

    await world.push_all()

    [event] = events_of(world, "room-1@contoso.com")
    assert event.booking_id == view.booking_id
    synced = await world.services.bookings.get(view.booking_id)
    assert [s.state for s in synced.sync] == ["synced"]
