"""Queue workers over fake ports: what goes back to the queue, and how."""

from __future__ import annotations

from datetime import timedelta

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from functions import timers, workers
from shared.domain.calendar import CREATE_WAIT_SECONDS
from shared.domain.errors import DomainError, GraphAccessDenied, GraphThrottled, GraphTransient
from shared.domain.messages import (
    SYNC_INBOUND_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    ConnectResource,
    EventChange,
    EventChanges,
    InboundBatch,
    ReconcilePage,
    ReconcileResource,
)
from shared.domain.resources import ConnectionState, ConnectionStatus
from shared.services.bookings import BookingView
from tests.builders import T0, booking_request, resource
from tests.fakes import Clock, FakeWorld, fake_world
from tests.unit.test_convergence import lose_the_answer

MAILBOX = "room-1@contoso.com"


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0), (MAILBOX,))
    monkeypatch.setattr(workers, "get_services", lambda: w.services)
    connecting = ConnectionStatus(state=ConnectionState.CONNECTING, since=T0)
    await w.resources.add(resource("room-1").model_copy(update={"status": connecting}))
    return w


async def test_a_throttled_message_goes_back_to_the_queue_after_retry_after(
    world: FakeWorld,
) -> None:
    """Graph's 4 concurrent requests per mailbox hold across every process Azure runs (each
    queue function scales out on its own), so a MailboxConcurrency 429 that outlasts the
    gateway's retries is no failure: the message is sent again, delayed by Retry-After,
    instead of failing toward `<queue>-poison` after maxDequeueCount deliveries."""
    body = ConnectResource(resource_id="room-1", mailbox=MAILBOX).model_dump_json()
    world.calendar.fail(MAILBOX, GraphThrottled("MailboxConcurrency", retry_after_seconds=7))
    handler = workers.sync_outbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    assert world.queue.sent == [(SYNC_OUTBOUND_QUEUE, body)]
    assert world.queue.delays == [7]


async def test_a_throttled_message_without_retry_after_waits_a_few_seconds(
    world: FakeWorld,
) -> None:
    body = ConnectResource(resource_id="room-1", mailbox=MAILBOX).model_dump_json()
    world.calendar.fail(MAILBOX, GraphThrottled("throttled"))
    handler = workers.sync_outbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    [delay] = world.queue.delays
    assert 1 <= delay <= workers.MAX_THROTTLE_DELAY_SECONDS


async def booked_on_a_connected_room(world: FakeWorld) -> tuple[BookingView, str]:
    """room-1 connected, one booking made on it, and its push message."""
    stored = await world.resources.get("room-1")
    assert stored is not None
    connected = ConnectionStatus(mirror_refreshed_at=world.clock.now)
    await world.resources.update(stored.value.model_copy(update={"status": connected}), stored.etag)
    booking = await world.services.bookings.create(booking_request(), None)
    [(_, push)] = [sent for sent in world.queue.sent if sent[0] == SYNC_OUTBOUND_QUEUE]
    return booking, push


async def test_a_push_throttled_past_the_gateway_goes_back_after_retry_after(
    world: FakeWorld,
) -> None:
    """The push records each calendar's answer before it raises: a write Graph throttled
    is a throttle to the worker too, not a failed try toward `-poison`."""
    booking, body = await booked_on_a_connected_room(world)
    world.queue.sent.clear()
    world.queue.delays.clear()
    world.calendar.fail(MAILBOX, GraphThrottled("MailboxConcurrency", retry_after_seconds=31))
    handler = workers.sync_outbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    assert world.queue.sent == [(SYNC_OUTBOUND_QUEUE, body)]
    assert world.queue.delays == [31]
    assert world.calendar.events[MAILBOX] == {}
    [waiting] = (await world.services.bookings.get(booking.booking_id)).sync
    assert waiting.state == "pending"  # sent again for sure: not a failure
    assert (waiting.error or "").startswith("graph_throttled:")  # but why it waits shows
    await handler(func.QueueMessage(body=body.encode()))  # Graph is back
    [event] = world.calendar.events[MAILBOX].values()
    assert event.booking_id == booking.booking_id
    [landed] = (await world.services.bookings.get(booking.booking_id)).sync
    assert (landed.state, landed.error) == ("synced", None)


@pytest.mark.parametrize(
    "error",
    [GraphThrottled("MailboxConcurrency", retry_after_seconds=31), GraphAccessDenied("403")],
    ids=["throttled", "refused"],
)
async def test_a_booking_cancelled_before_its_failed_create_landed_ends_removed(
    world: FakeWorld, error: DomainError
) -> None:
    """The create failed (throttled: it would be sent again; refused), then the booking
    was cancelled: nothing is left to write, so its failure is moot. It showed `pending`
    (or `failed`) for ever: the push of the cancel found nothing to do and left the
    create's error on the mapping."""
    booking, create = await booked_on_a_connected_room(world)
    world.calendar.fail(MAILBOX, error)
    handler = workers.sync_outbound.build().get_user_function()
    await handler(func.QueueMessage(body=create.encode()))
    world.queue.sent.clear()
    await world.services.bookings.cancel(booking.booking_id)
    [(_, cancel)] = [sent for sent in world.queue.sent if sent[0] == SYNC_OUTBOUND_QUEUE]

    await handler(func.QueueMessage(body=cancel.encode()))  # Graph is back
    await handler(func.QueueMessage(body=create.encode()))  # the create's message again

    [state] = (await world.services.bookings.get(booking.booking_id)).sync
    assert (state.state, state.error) == ("removed", None)
    assert world.calendar.events[MAILBOX] == {}


async def test_a_round_of_a_gone_mailbox_completes_and_nothing_goes_back_to_the_queue(
    world: FakeWorld,
) -> None:
    """A mailbox that no longer exists fails every delivery alike: the round records it on
    the resource and completes, instead of five deliveries and `-poison` every round."""
    world.calendar.events.pop(MAILBOX)
    body = ReconcileResource(resource_id="room-1", scheduled_at=T0, round_at=T0).model_dump_json()
    handler = workers.sync_outbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    assert world.queue.sent == []
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.status.state is ConnectionState.FAILING
    assert stored.value.status.retry_at is not None


async def test_a_reconcile_page_becomes_one_message_per_resource(world: FakeWorld) -> None:
    body = ReconcilePage(round_at=T0, resource_ids=["room-1", "room-2"]).model_dump_json()
    handler = workers.sync_outbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    sent = [ReconcileResource.model_validate_json(b) for _, b in world.queue.sent]
    assert [(m.resource_id, m.round_at) for m in sent] == [("room-1", T0), ("room-2", T0)]


@pytest.mark.parametrize("past_due", [False, True])
async def test_the_reconcile_timer_says_in_its_pages_whether_its_run_was_past_due(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, past_due: bool
) -> None:
    monkeypatch.setattr(timers, "get_services", lambda: world.services)
    handler = timers.reconcile_timer.build().get_user_function()

    await handler(TimerRequest(past_due=past_due))

    [page] = [ReconcilePage.model_validate_json(b) for _, b in world.queue.sent]
    assert (page.resource_ids, page.past_due) == (["room-1"], past_due)


# --- a notification POST's subscriptions in one message ---------------------------------

ROOM_2 = "room-2@contoso.com"


@pytest.fixture
async def two_rooms(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0), (MAILBOX, ROOM_2))
    monkeypatch.setattr(workers, "get_services", lambda: w.services)
    await w.resources.add(resource("room-1"))
    await w.resources.add(resource("room-2", mailbox=ROOM_2))
    return w


def changes_of(resource_id: str, event_id: str) -> EventChanges:
    change = EventChange(
        subscription_id=f"sub-{resource_id}",
        resource_id=resource_id,
        change_type="updated",
        event_id=event_id,
        received_at=T0,
    )
    return EventChanges(
        subscription_id=change.subscription_id, resource_id=resource_id, changes=[change]
    )


async def test_one_mailboxs_refusal_does_not_take_another_mailboxs_throttled_change_with_it(
    two_rooms: FakeWorld,
) -> None:
    """One POST's subscriptions share a message, but each must fare as if it had come
    alone: a refused mailbox's change is left to that resource's rounds (it is marked
    failing; no try would fare better), a throttled one goes back after its Retry-After
    without counting a try."""
    refused, throttled = changes_of("room-1", "ev-1"), changes_of("room-2", "ev-2")
    two_rooms.calendar.fail(MAILBOX, GraphAccessDenied("ErrorAccessDenied"))
    two_rooms.calendar.fail(ROOM_2, GraphThrottled("MailboxConcurrency", retry_after_seconds=7))
    body = InboundBatch(items=[refused, throttled]).model_dump_json()
    handler = workers.sync_inbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))  # completes: nothing raised

    sent = dict(
        zip(two_rooms.queue.bodies(SYNC_INBOUND_QUEUE), two_rooms.queue.delays, strict=True)
    )
    assert sent == {throttled.model_dump_json(): 7}
    room_1 = await two_rooms.resources.get("room-1")
    assert room_1 is not None
    assert room_1.value.status.state is ConnectionState.FAILING


async def test_only_the_failed_items_of_a_shared_message_go_again(two_rooms: FakeWorld) -> None:
    applied, failed = changes_of("room-1", "ev-1"), changes_of("room-2", "ev-2")
    two_rooms.calendar.fail(ROOM_2, GraphTransient("503"))
    body = InboundBatch(items=[applied, failed]).model_dump_json()
    handler = workers.sync_inbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    assert two_rooms.queue.bodies(SYNC_INBOUND_QUEUE) == [failed.model_dump_json()]
    assert [e.resource_id for e in two_rooms.sync_log.entries] == ["room-1"]


async def test_a_shared_message_whose_items_all_apply_sends_nothing_again(
    two_rooms: FakeWorld,
) -> None:
    body = InboundBatch(
        items=[changes_of("room-1", "ev-1"), changes_of("room-2", "ev-2")]
    ).model_dump_json()
    handler = workers.sync_inbound.build().get_user_function()

    await handler(func.QueueMessage(body=body.encode()))

    assert two_rooms.queue.sent == []
    assert sorted(e.resource_id for e in two_rooms.sync_log.entries) == ["room-1", "room-2"]


async def test_a_change_waiting_for_a_create_under_way_goes_again_after_its_delay(
    two_rooms: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notification of an event of ours moved in Outlook before its create's answer
    was recorded is looked at again after CREATE_WAIT_SECONDS, counting no try; its
    message's other items are done."""
    two_rooms.clock.now = T0 - timedelta(days=1)
    room = await two_rooms.resources.get("room-1")
    assert room is not None
    fresh = ConnectionStatus(mirror_refreshed_at=two_rooms.clock.now)
    await two_rooms.resources.update(room.value.model_copy(update={"status": fresh}), room.etag)
    await two_rooms.services.bookings.create(booking_request(), None)
    await lose_the_answer(two_rooms, monkeypatch)
    two_rooms.queue.sent.clear()
    two_rooms.queue.delays.clear()
    [made] = two_rooms.calendar.events[MAILBOX]
    event = two_rooms.calendar.events[MAILBOX][made]
    later = {"start": event.start + timedelta(hours=2), "end": event.end + timedelta(hours=2)}
    two_rooms.calendar.events[MAILBOX][made] = event.model_copy(update=later)
    waiting, other = changes_of("room-1", made), changes_of("room-2", "ev-2")
    handler = workers.sync_inbound.build().get_user_function()

    await handler(
        func.QueueMessage(body=InboundBatch(items=[waiting, other]).model_dump_json().encode())
    )
    await handler(func.QueueMessage(body=waiting.model_dump_json().encode()))

    sent = list(
        zip(two_rooms.queue.bodies(SYNC_INBOUND_QUEUE), two_rooms.queue.delays, strict=True)
    )
    assert sent == [(waiting.model_dump_json(), CREATE_WAIT_SECONDS)] * 2
