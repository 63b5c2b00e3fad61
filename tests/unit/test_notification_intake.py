"""The Graph webhook's intake over fake storage: what is trusted, and one queue write per
POST whatever the POST holds; and the inbound worker taking such a write apart again."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from pydantic import BaseModel, SecretStr, TypeAdapter

from functions import graph, workers
from shared.domain.calendar import SubscriptionRecord
from shared.domain.errors import StorageUnavailable
from shared.domain.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    SYNC_INBOUND_QUEUE,
    EventChange,
    EventChanges,
    InboundBatch,
    InboundWork,
    LifecycleEvent,
)
from shared.observability import RedactionFilter
from shared.ports import Stored, SubscriptionRepository
from shared.services import inbound
from shared.services.inbound import NotificationBatch, NotificationIntake, pack_inbound_work
from tests.builders import T0
from tests.fakes import Clock, FakeQueue, FakeWorld, fake_world

TENANT = "00000000-0000-0000-0000-0000000000aa"  # fake_world's GRAPH_TENANT_ID
ROOMS = ("room-1", "room-2", "room-3")
# Graph's subscription ids are GUIDs.
SUBSCRIPTIONS = {room: f"00000000-0000-4000-8000-00000000000{i}" for i, room in enumerate(ROOMS)}
NOBODY = "ffffffff-0000-4000-8000-000000000000"
_inbound = TypeAdapter[InboundWork](InboundWork)


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0), tuple(f"{room}@contoso.com" for room in ROOMS))
    for room in ROOMS:
        await w.ports.subscriptions.save(
            SubscriptionRecord(
                subscription_id=SUBSCRIPTIONS[room],
                resource_id=room,
                mailbox=f"{room}@contoso.com",
                client_state=SecretStr(f"state-{room}"),
                expires_at=T0 + timedelta(days=3),
                created_at=T0,
            )
        )
    monkeypatch.setattr(graph, "get_services", lambda: w.services)
    return w


def change(room: str, event_id: str, **fields: Any) -> dict[str, Any]:
    item = {
        "subscriptionId": SUBSCRIPTIONS[room],
        "clientState": f"state-{room}",
        "tenantId": TENANT,
        "changeType": "updated",
        "resource": f"Users/x/Events/{event_id}",
        "resourceData": {"id": event_id, "@odata.etag": f'W/"ck-{event_id}"'},
    }
    item.update(fields)
    return item


def lifecycle(room: str, event: str = "missed") -> dict[str, Any]:
    return {
        "subscriptionId": SUBSCRIPTIONS[room],
        "clientState": f"state-{room}",
        "tenantId": TENANT,
        "lifecycleEvent": event,
    }


async def accept(w: FakeWorld, *items: dict[str, Any]) -> tuple[int, int]:
    return await w.services.intake.accept(NotificationBatch.model_validate({"value": items}))


def size(message: EventChanges | LifecycleEvent | InboundBatch) -> int:
    """Changes in a message; a lifecycle event counts as one."""
    if isinstance(message, InboundBatch):
        return sum(size(item) for item in message.items)
    return len(message.changes) if isinstance(message, EventChanges) else 1


def sent(w: FakeWorld) -> list[Any]:
    return [_inbound.validate_json(body) for body in w.queue.bodies(SYNC_INBOUND_QUEUE)]


async def test_one_subscription_is_one_event_changes_message(world: FakeWorld) -> None:
    assert await accept(world, change("room-1", "e1"), change("room-1", "e2")) == (2, 0)

    [message] = sent(world)
    assert isinstance(message, EventChanges)
    assert (message.subscription_id, message.resource_id) == (SUBSCRIPTIONS["room-1"], "room-1")
    assert [(c.event_id, c.change_key) for c in message.changes] == [
        ("e1", "ck-e1"),
        ("e2", "ck-e2"),
    ]


async def test_a_post_for_several_subscriptions_is_still_one_write(world: FakeWorld) -> None:
    items = [change(room, f"{room}-e{i}") for i in range(3) for room in ROOMS]
    assert await accept(world, *items, lifecycle("room-2")) == (10, 0)

    [message] = sent(world)
    assert isinstance(message, InboundBatch)
    first, *groups = message.items
    assert isinstance(first, LifecycleEvent)
    assert (first.resource_id, first.lifecycle_event) == ("room-2", "missed")
    assert [
        (g.resource_id, [c.event_id for c in g.changes])
        for g in groups
        if isinstance(g, EventChanges)
    ] == [(room, [f"{room}-e{i}" for i in range(3)]) for room in ROOMS]


async def test_untrusted_items_are_dropped_and_the_rest_enqueued(world: FakeWorld) -> None:
    accepted = await accept(
        world,
        change("room-1", "good"),
        change("room-2", "forged", clientState="not-the-secret"),
        change("room-3", "other-tenant", tenantId="11111111-1111-1111-1111-111111111111"),
        change("room-1", "unknown", subscriptionId=NOBODY),
        change("room-1", "bad-type", changeType="missed"),
    )

    assert accepted == (1, 4)
    [message] = sent(world)
    assert isinstance(message, EventChanges)
    assert [c.event_id for c in message.changes] == ["good"]


async def test_nothing_trusted_writes_nothing(world: FakeWorld) -> None:
    assert await accept(world, change("room-1", "e", clientState="wrong")) == (0, 1)
    assert sent(world) == []


async def test_a_large_post_is_split_at_the_message_budget(world: FakeWorld) -> None:
    count = MAX_CHANGES_PER_MESSAGE * 2 + 10
    items = [change(ROOMS[i % 2], f"e{i}") for i in range(count)]
    assert await accept(world, *items) == (count, 0)

    messages = sent(world)
    assert all(size(m) <= MAX_CHANGES_PER_MESSAGE for m in messages)
    assert sum(size(m) for m in messages) == count
    assert len(messages) == 3  # the fewest that hold them


def queued_change(room: str, event_id: str) -> EventChange:
    return EventChange(
        subscription_id=f"sub-{room}-0123456789abcdef0123456789",
        resource_id=room,
        change_type="updated",
        event_id=event_id,
        change_key="DwAAABYAAAB3hTcDh4T9Rb9bhx2B0CpdAAH+Z7ko",
        received_at=T0,
    )


@pytest.mark.parametrize(
    ("subscriptions", "per_subscription", "id_length"),
    [(100, 1, 152), (1, 100, 600), (7, 40, 152), (300, 1, 152)],
)
def test_no_message_outgrows_queue_storage(
    subscriptions: int, per_subscription: int, id_length: int
) -> None:
    changes = [
        queued_change(f"room-{s}", f"{s}-{i}-".ljust(id_length, "A"))
        for i in range(per_subscription)
        for s in range(subscriptions)
    ]

    messages = pack_inbound_work(changes)

    for message in messages:
        text = message.model_dump_json().encode()
        assert len(text) <= MAX_MESSAGE_BYTES
        assert len(base64.b64encode(text)) <= 64 * 1024  # Queue Storage's limit
        assert size(message) <= MAX_CHANGES_PER_MESSAGE
    carried = [
        change.event_id
        for message in messages
        for item in (message.items if isinstance(message, InboundBatch) else [message])
        if isinstance(item, EventChanges)
        for change in item.changes
    ]
    assert sorted(carried) == sorted(c.event_id for c in changes)
    # Nearly full: the messages hold at least three quarters of what the budget allows.
    total = sum(len(m.model_dump_json().encode()) for m in messages)
    assert len(messages) <= max(
        total // (MAX_MESSAGE_BYTES * 3 // 4) + 1,
        -(-len(changes) // MAX_CHANGES_PER_MESSAGE),
    )


def test_packing_fills_messages_in_order_and_unwraps_single_items() -> None:
    def changes(room: str, n: int) -> list[EventChange]:
        return [
            EventChange(
                subscription_id=f"sub-{room}",
                resource_id=room,
                change_type="updated",
                event_id=f"{room}-{i}",
                received_at=T0,
            )
            for i in range(n)
        ]

    def grouped(part: list[EventChange]) -> EventChanges:
        return EventChanges(
            subscription_id=part[0].subscription_id, resource_id=part[0].resource_id, changes=part
        )

    one, two = changes("room-1", MAX_CHANGES_PER_MESSAGE - 1), changes("room-2", 3)
    assert pack_inbound_work(one) == [grouped(one)]
    # room-2's changes fill the first message and go on in the second.
    assert pack_inbound_work([*one, *two]) == [
        InboundBatch(items=[grouped(one), grouped(two[:1])]),
        grouped(two[1:]),
    ]
    assert pack_inbound_work([]) == []


# --- group commit: POSTs that overlap a write ---------------------------------------------


class GatedQueue(FakeQueue):
    """A queue whose writes wait until the test lets them through, failing on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.writes_started = 0
        self.gate = asyncio.Event()

    async def send(
        self, queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        self.writes_started += 1
        await self.gate.wait()
        await super().send(queue_name, message, delay_seconds=delay_seconds)


@pytest.fixture
def gated(world: FakeWorld) -> tuple[NotificationIntake, GatedQueue]:
    queue = GatedQueue()
    intake = NotificationIntake(
        subscriptions=world.ports.subscriptions,
        queue=queue,
        tenant_id=TENANT,
        clock=lambda: T0,
    )
    return intake, queue


def one_post(room: str, event_id: str) -> NotificationBatch:
    return NotificationBatch.model_validate({"value": [change(room, event_id)]})


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def forming(intake: NotificationIntake) -> list[Any]:
    """The work gathered for the next group write."""
    group = intake._writer._forming
    return [] if group is None else group[0]


def carried(queue: FakeQueue) -> list[list[str]]:
    """The event ids of each message written, in order."""
    messages = [_inbound.validate_json(body) for body in queue.bodies(SYNC_INBOUND_QUEUE)]
    return [
        [
            c.event_id
            for item in (m.items if isinstance(m, InboundBatch) else [m])
            if isinstance(item, EventChanges)
            for c in item.changes
        ]
        for m in messages
    ]


async def test_posts_that_come_during_a_write_are_written_together_after_it(
    gated: tuple[NotificationIntake, GatedQueue],
) -> None:
    intake, queue = gated
    first = asyncio.ensure_future(intake.accept(one_post("room-1", "a")))
    await until(lambda: queue.writes_started == 1)  # the first POST's write is in flight
    others = [
        asyncio.ensure_future(intake.accept(one_post(ROOMS[i % 3], f"b{i}"))) for i in range(6)
    ]
    # Each has read its subscription and joined the next group, behind the write in flight.
    await until(lambda: len(forming(intake)) == 6)
    assert not any(task.done() for task in others)
    assert queue.writes_started == 1  # they wait for the write in flight

    queue.gate.set()
    assert await first == (1, 0)
    assert await asyncio.gather(*others) == [(1, 0)] * 6

    # One write for the six, each subscription's changes together in arrival order.
    assert carried(queue) == [["a"], ["b0", "b3", "b1", "b4", "b2", "b5"]]


class TimedQueue(FakeQueue):
    """A queue that notes the event loop's time each write begins."""

    def __init__(self) -> None:
        super().__init__()
        self.began: list[float] = []

    async def send(
        self, queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        self.began.append(asyncio.get_running_loop().time())
        await super().send(queue_name, message, delay_seconds=delay_seconds)


async def test_an_idle_webhook_writes_at_once() -> None:
    queue = TimedQueue()
    writer = inbound.InboundWriter(queue, spacing=60.0)

    await asyncio.wait_for(writer.write([queued_change("room-1", "a")]), timeout=5)

    assert carried(queue) == [["a"]]


async def test_posts_soon_after_a_write_began_wait_for_the_spacing_and_go_in_one_write() -> None:
    # At one notification per POST and a queue that answers at once, every POST would be
    # a message of its own: a queue round trip for the webhook, and a dequeue, an
    # invocation and a delete for the worker.
    queue, spacing = TimedQueue(), 0.2
    writer = inbound.InboundWriter(queue, spacing=spacing)
    await writer.write([queued_change("room-1", "a")])

    async def post(event_id: str, after: float) -> None:
        await asyncio.sleep(after)
        await writer.write([queued_change("room-2", event_id)])

    await asyncio.gather(post("b", 0), post("c", 0.02), post("d", 0.04))

    assert carried(queue) == [["a"], ["b", "c", "d"]]
    assert queue.began[1] - queue.began[0] >= spacing


async def test_a_write_the_queue_never_answers_is_503_in_time_and_the_next_goes_through() -> None:
    # Graph retries a POST answered within 10 s, even with an error, and may drop what it
    # gets no answer to (change-notifications-delivery-webhooks, "HTTP codes and retry
    # logic"); a storage client retrying a dropped connection waits far longer.
    queue, deadline = GatedQueue(), 0.2
    writer = inbound.InboundWriter(queue, spacing=0, deadline=deadline)
    loop = asyncio.get_running_loop()
    began = loop.time()
    hung = asyncio.ensure_future(writer.write([queued_change("room-1", "a")]))
    await until(lambda: queue.writes_started == 1)
    behind = asyncio.ensure_future(writer.write([queued_change("room-2", "b")]))

    outcomes = await asyncio.wait_for(asyncio.gather(hung, behind, return_exceptions=True), 5)

    assert [type(o) for o in outcomes] == [StorageUnavailable, StorageUnavailable]
    assert loop.time() - began < 4 * deadline
    queue.gate.set()  # the queue is back: the next POST is written at once
    await asyncio.wait_for(writer.write([queued_change("room-3", "c")]), timeout=deadline)
    assert carried(queue) == [["c"]]


async def test_while_the_queue_is_down_posts_beside_the_one_trying_it_are_503_at_once() -> None:
    # A host runs 16 webhook invocations at once: held 5 s each while the queue is down,
    # the POSTs queued in front of the host would wait past Graph's 10 s.
    queue, deadline = GatedQueue(), 0.2
    writer = inbound.InboundWriter(queue, spacing=0, deadline=deadline)
    with pytest.raises(StorageUnavailable):
        await writer.write([queued_change("room-1", "a")])
    trying = asyncio.ensure_future(writer.write([queued_change("room-1", "b")]))
    await until(lambda: queue.writes_started == 2)
    loop = asyncio.get_running_loop()

    began = loop.time()
    with pytest.raises(StorageUnavailable):
        await writer.write([queued_change("room-2", "c")])
    assert loop.time() - began < deadline / 4

    queue.gate.set()  # back: the write trying it lands, and the POSTs after it are written
    await trying
    await writer.write([queued_change("room-3", "d")])
    assert carried(queue) == [["b"], ["d"]]


async def test_a_failed_write_fails_each_post_of_its_group_and_the_next_group_is_written(
    gated: tuple[NotificationIntake, GatedQueue],
) -> None:
    intake, queue = gated
    queue.fail_next = 1
    failing = [asyncio.ensure_future(intake.accept(one_post("room-1", f"x{i}"))) for i in range(3)]
    await until(lambda: queue.writes_started == 1)
    later = asyncio.ensure_future(intake.accept(one_post("room-2", "y")))
    await until(lambda: not later.done())

    queue.gate.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)

    assert all(isinstance(outcome, StorageUnavailable) for outcome in outcomes)  # all 503
    assert await later == (1, 0)
    assert carried(queue) == [["y"]]


async def abandoned_post(intake: NotificationIntake, queue: GatedQueue, event_id: str) -> None:
    """A POST whose write is in flight when Graph stops waiting for it."""
    post = asyncio.ensure_future(intake.accept(one_post("room-1", event_id)))
    await until(lambda: queue.writes_started == 1)
    post.cancel()
    with pytest.raises(asyncio.CancelledError):
        await post


async def test_a_post_that_stops_waiting_does_not_stop_the_write(
    gated: tuple[NotificationIntake, GatedQueue],
) -> None:
    intake, queue = gated
    await abandoned_post(intake, queue, "kept")

    queue.gate.set()
    await until(lambda: bool(queue.sent))
    assert carried(queue) == [["kept"]]


async def test_a_failed_write_nobody_waits_for_is_not_reported_as_never_retrieved(
    gated: tuple[NotificationIntake, GatedQueue],
) -> None:
    intake, queue = gated
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        queue.fail_next = 1
        await abandoned_post(intake, queue, "lost")
        queue.gate.set()
        # A later POST's write replaces the failed one, which nothing refers to then.
        assert await intake.accept(one_post("room-1", "next")) == (1, 0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)

    assert reported == []
    assert carried(queue) == [["next"]]


# --- what the webhook remembers of subscriptions ------------------------------------------


class SlowSubscriptions:
    """The fake subscription table, counting reads; `hold` makes reads wait for `gate`."""

    def __init__(self, inner: SubscriptionRepository) -> None:
        self.inner = inner
        self.reads = 0  # gets and lists
        self.lists = 0
        self.hold = False
        self.gate = asyncio.Event()

    async def get(self, subscription_id: str) -> Stored[SubscriptionRecord] | None:
        self.reads += 1
        if self.hold:
            await self.gate.wait()
        return await self.inner.get(subscription_id)

    async def list_all(self) -> list[Stored[SubscriptionRecord]]:
        self.reads += 1
        self.lists += 1
        if self.hold:
            await self.gate.wait()
        return await self.inner.list_all()

    async def save(self, record: SubscriptionRecord) -> Stored[SubscriptionRecord]:
        return await self.inner.save(record)

    async def delete(self, subscription_id: str) -> None:
        await self.inner.delete(subscription_id)


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def remembering(world: FakeWorld) -> tuple[NotificationIntake, SlowSubscriptions, Ticker]:
    subscriptions = SlowSubscriptions(world.ports.subscriptions)
    ticker = Ticker()
    intake = NotificationIntake(
        subscriptions=subscriptions,
        queue=world.queue,
        tenant_id=TENANT,
        clock=lambda: T0,
        monotonic=ticker,
    )
    return intake, subscriptions, ticker


async def test_a_known_subscription_is_reread_in_the_background_once_a_minute_old(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, ticker = remembering
    assert await intake.accept(one_post("room-1", "a")) == (1, 0)
    assert await intake.accept(one_post("room-1", "b")) == (1, 0)
    assert subscriptions.reads == 1  # the second POST used what the first read

    ticker.now += 61
    subscriptions.hold = True  # Table Storage is slow now
    await world.ports.subscriptions.delete(SUBSCRIPTIONS["room-1"])  # the resource was disconnected
    # Answered from what was read, without waiting on the table; one re-read started.
    assert await asyncio.wait_for(intake.accept(one_post("room-1", "c")), 1) == (1, 0)
    assert await asyncio.wait_for(intake.accept(one_post("room-1", "d")), 1) == (1, 0)
    assert subscriptions.reads == 2

    subscriptions.gate.set()
    await until(lambda: subscriptions.reads == 2 and not intake._reading)
    assert await intake.accept(one_post("room-1", "e")) == (0, 1)  # the re-read took effect


async def test_posts_waiting_on_one_subscriptions_first_read_share_that_read(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, _ = remembering
    subscriptions.hold = True  # Table Storage is slow: the POSTs pile up behind one read
    posts = [asyncio.ensure_future(intake.accept(one_post("room-1", f"e{i}"))) for i in range(20)]
    await until(lambda: subscriptions.reads >= 1)
    await asyncio.sleep(0.01)
    subscriptions.gate.set()

    assert await asyncio.wait_for(asyncio.gather(*posts), 1) == [(1, 0)] * 20
    assert subscriptions.reads == 1


async def test_a_subscription_not_reread_for_ten_minutes_is_read_before_answering(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, ticker = remembering
    assert await intake.accept(one_post("room-1", "a")) == (1, 0)
    ticker.now += 601
    await world.ports.subscriptions.delete(SUBSCRIPTIONS["room-1"])

    assert await intake.accept(one_post("room-1", "b")) == (0, 1)
    assert subscriptions.reads == 2


async def test_an_unknown_subscription_is_looked_up_again_after_five_seconds(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, _, ticker = remembering
    record = await world.ports.subscriptions.get(SUBSCRIPTIONS["room-1"])
    assert record is not None
    await world.ports.subscriptions.delete(SUBSCRIPTIONS["room-1"])
    # Graph notifies before the subscription's record is written...
    assert await intake.accept(one_post("room-1", "early")) == (0, 1)
    await world.ports.subscriptions.save(record.value)
    ticker.now += 2
    assert await intake.accept(one_post("room-1", "soon")) == (0, 1)  # remembered as unknown

    ticker.now += 4  # ...and a few seconds later it is known
    assert await intake.accept(one_post("room-1", "later")) == (1, 0)


# --- a flood of made-up subscription ids ----------------------------------------------------


def made_up(count: int) -> list[dict[str, Any]]:
    return [change("room-1", f"e{i}", subscriptionId=str(uuid.uuid4())) for i in range(count)]


async def test_a_thousand_unknown_ids_cost_one_listing_and_one_log_line(
    world: FakeWorld,
    remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    intake, subscriptions, _ = remembering
    batch = NotificationBatch.model_validate({"value": made_up(1000)})

    with caplog.at_level(logging.INFO, logger="shared.services.inbound"):
        assert await intake.accept(batch) == (0, 1000)

    assert (subscriptions.reads, subscriptions.lists) == (1, 1)
    [line] = [r for r in caplog.records if r.name == "shared.services.inbound"]
    assert line.getMessage() == (
        "graph notifications: 0 enqueued, 1000 dropped (1000 unknown subscription)"
    )
    assert sent(world) == []


async def test_what_is_remembered_stays_flat_across_floods(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, ticker = remembering
    for _ in range(20):
        ticker.now += 6  # each flood comes after the last listing has aged out
        batch = NotificationBatch.model_validate({"value": made_up(1000)})
        assert await intake.accept(batch) == (0, 1000)
        assert await intake.accept(one_post("room-2", "genuine")) == (1, 0)

    assert subscriptions.lists == 20
    assert len(intake._known) == len(ROOMS)  # the stored subscriptions, nothing a sender sent


async def test_the_remembered_subscriptions_are_bounded_least_recently_used_first(
    world: FakeWorld,
    remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    intake, _, ticker = remembering
    monkeypatch.setattr(inbound, "_MAX_REMEMBERED", 2)
    flood = NotificationBatch.model_validate({"value": made_up(1000)})
    assert await intake.accept(flood) == (0, 1000)  # lists all three, keeps two
    assert len(intake._known) == 2
    ticker.now += 6
    for room in ROOMS:
        assert await intake.accept(one_post(room, room)) == (1, 0)
    assert len(intake._known) == 2


async def test_a_subscription_created_just_after_a_listing_is_known_at_once(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, ticker = remembering
    record = await world.ports.subscriptions.get(SUBSCRIPTIONS["room-1"])
    assert record is not None
    await world.ports.subscriptions.delete(SUBSCRIPTIONS["room-1"])
    flood = NotificationBatch.model_validate({"value": made_up(1000)})
    assert await intake.accept(flood) == (0, 1000)  # lists the table
    # A resource is connected a moment later; Graph notifies for it at once.
    await world.ports.subscriptions.save(record.value)
    ticker.now += 1

    assert await intake.accept(one_post("room-1", "first")) == (1, 0)
    assert subscriptions.lists == 1


async def test_a_flood_costs_a_bounded_number_of_reads_even_right_after_a_listing(
    world: FakeWorld, remembering: tuple[NotificationIntake, SlowSubscriptions, Ticker]
) -> None:
    intake, subscriptions, ticker = remembering
    for _ in range(5):
        ticker.now += 1  # within the listing's 5 s: no new listing
        flood = NotificationBatch.model_validate({"value": made_up(1000)})
        assert await intake.accept(flood) == (0, 1000)

    assert subscriptions.lists == 1
    assert subscriptions.reads - subscriptions.lists <= 4 * inbound._MAX_READS_PER_POST
    assert len(intake._unknown) <= 4 * inbound._MAX_READS_PER_POST


@pytest.mark.parametrize(
    "subscription_id",
    [
        f"{SUBSCRIPTIONS['room-1']}\nWARNING forged line",
        "not-a-guid",
        "",
        SUBSCRIPTIONS["room-1"] + "0",
    ],
)
async def test_a_subscription_id_that_is_not_a_guid_is_400_and_never_looked_up_or_logged(
    world: FakeWorld,
    subscription_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriptions = SlowSubscriptions(world.ports.subscriptions)
    monkeypatch.setattr(world.services.intake, "_subscriptions", subscriptions)
    items = [change("room-1", "ok"), change("room-1", "bad", subscriptionId=subscription_id)]

    with caplog.at_level(logging.DEBUG):
        response = await post_raw(json.dumps({"value": items}).encode())

    assert response.status_code == 400
    [detail] = json.loads(response.get_body())["error"]["details"]
    assert detail["field"] == "value.1.subscriptionId"
    assert subscriptions.reads == 0
    assert sent(world) == []
    assert not any("forged" in record.getMessage() for record in caplog.records)


def test_logged_values_have_their_control_characters_escaped() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "unknown lifecycle event %s from %s",
            "args": ("missed\nERROR forged\x1b[31m", 7),
            "mailbox": "a@b.c\r\nforged",
        }
    )

    assert RedactionFilter().filter(record)

    assert record.getMessage() == ("unknown lifecycle event missed\\nERROR forged\\x1b[31m from 7")
    assert record.__dict__["mailbox"] == "a@b.c\\r\\nforged"


# --- the webhook function ----------------------------------------------------------------


async def post(items: list[dict[str, Any]]) -> func.HttpResponse:
    handler = graph.graph_notifications.build().get_user_function()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/graph/notifications",
        body=json.dumps({"value": items}).encode(),
        headers={"content-type": "application/json"},
        params={},
        route_params={},
    )
    response: func.HttpResponse = await handler(request)
    return response


async def test_the_webhook_answers_202_once_enqueued(world: FakeWorld) -> None:
    response = await post([change(room, f"{room}-e") for room in ROOMS])

    assert response.status_code == 202
    assert len(world.queue.bodies(SYNC_INBOUND_QUEUE)) == 1


async def test_the_webhook_answers_503_when_the_queue_is_down(world: FakeWorld) -> None:
    world.queue.fail_next = 1
    response = await post([change("room-1", "e1"), change("room-2", "e2")])

    assert response.status_code == 503  # Graph delivers again later
    assert world.queue.bodies(SYNC_INBOUND_QUEUE) == []


async def post_raw(
    body: bytes, route: Any = graph.graph_notifications, content_type: str = "application/json"
) -> func.HttpResponse:
    handler = route.build().get_user_function()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/graph/notifications",
        body=body,
        headers={"content-type": content_type},
        params={},
        route_params={},
    )
    response: func.HttpResponse = await handler(request)
    return response


def as_graph_sends_it(room: str, event_id: str) -> dict[str, Any]:
    """A change notification with every field Graph sends (about 700 bytes)."""
    long_id = f"AAMkAGI2TG93AAA{event_id}".ljust(152, "A")
    return change(
        room,
        long_id,
        subscriptionExpirationDateTime="2030-01-10T09:00:00.0000000+00:00",
        resource=f"Users/6e6f0e2a-2b1c-4f0e-9d55-5c9b1f0f1f1f/Events/{long_id}",
        resourceData={
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": f"Users/6e6f0e2a-2b1c-4f0e-9d55-5c9b1f0f1f1f/Events/{long_id}",
            "@odata.etag": 'W/"DwAAABYAAADjWTHkCm7xTqKB9Iq0ycHPAAAD6+Aa"',
            "id": long_id,
        },
    )


def notifications_body(count: int) -> bytes:
    return json.dumps(
        {"value": [as_graph_sends_it(ROOMS[i % 3], f"e{i}") for i in range(count)]}
    ).encode()


@pytest.mark.parametrize("count", [100, 1000])
async def test_graphs_batches_up_to_a_thousand_are_taken_whole(
    world: FakeWorld, count: int
) -> None:
    body = notifications_body(count)
    assert len(body) > 64 * 1024

    response = await post_raw(body)

    assert response.status_code == 202
    queued = sum(size(message) for message in sent(world))
    assert queued == count


@pytest.mark.parametrize("route", [graph.graph_notifications, graph.graph_lifecycle])
async def test_above_two_megabytes_or_a_thousand_items_is_413(world: FakeWorld, route: Any) -> None:
    padded = {"value": [as_graph_sends_it("room-1", "x")], "pad": "x" * (2 * 1024 * 1024)}
    too_big = await post_raw(json.dumps(padded).encode(), route)
    too_many = await post_raw(
        json.dumps({"value": [change("room-1", f"e{i}") for i in range(1001)]}).encode(), route
    )

    for response in (too_big, too_many):
        assert response.status_code == 413
        assert json.loads(response.get_body())["error"]["code"] == "body_too_large"
    assert sent(world) == []


@pytest.mark.parametrize(
    "raw",
    [b"[" * 60_000, b'{"value": ' + b"[" * 60_000, b"\xff\xfe{}", b'{"value": [1, 2]}'],
)
async def test_malformed_notification_bodies_are_4xx_and_enqueue_nothing(
    world: FakeWorld, raw: bytes
) -> None:
    response = await post_raw(raw)

    assert response.status_code in (400, 422)
    error = json.loads(response.get_body())["error"]
    assert error["code"]
    assert error["message"]
    assert sent(world) == []


@pytest.mark.parametrize(
    ("field", "item"),
    [
        ("value.0.resourceData.id", {"resourceData": {"id": "A" * 60_000}}),
        ("value.0.resourceData.@odata.etag", {"resourceData": {"@odata.etag": "W" * 60_000}}),
        ("value.0.changeType", {"changeType": "updated" * 10_000}),
        ("value.0.lifecycleEvent", {"lifecycleEvent": "missed" * 10_000}),
    ],
)
async def test_an_item_no_graph_notification_could_be_is_400_and_costs_no_one_else(
    world: FakeWorld, field: str, item: dict[str, Any]
) -> None:
    # With the subscription's clientState, one such item fitted no queue message and failed
    # the whole write it was packed into: every POST sharing it was answered 503.
    oversized = change("room-1", "e1")
    oversized.update(item)
    if "resourceData" in item:
        oversized["resourceData"] = {
            **change("room-1", "e1")["resourceData"],
            **item["resourceData"],
        }

    answers = await asyncio.gather(
        post_raw(json.dumps({"value": [oversized]}).encode()),
        post([change("room-2", "e2")]),
    )

    assert answers[0].status_code == 400
    assert field in json.loads(answers[0].get_body())["error"]["message"]
    assert answers[1].status_code == 202
    assert carried(world.queue) == [["e2"]]


async def test_a_notification_body_declared_as_text_is_415(world: FakeWorld) -> None:
    body = json.dumps({"value": [change("room-1", "e1")]}).encode()

    response = await post_raw(body, content_type="text/plain")

    assert response.status_code == 415
    assert json.loads(response.get_body())["error"]["code"] == "unsupported_media_type"
    assert sent(world) == []


# --- the inbound worker ----------------------------------------------------------------------


class RecordingInbound:
    """Stands in for InboundService: records what it was given, fails on chosen resources."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.handled: list[str] = []

    async def handle_change(self, work: EventChange | EventChanges) -> None:
        self.handled.append(work.resource_id)
        if work.resource_id in self.failing:
            raise RuntimeError(f"{work.resource_id} failed")

    async def handle_lifecycle(self, event: LifecycleEvent) -> None:
        self.handled.append(f"lifecycle:{event.resource_id}")


class Services:
    def __init__(self, inbound: RecordingInbound, queue: FakeQueue) -> None:
        self.inbound = inbound
        self.ports = SimpleNamespace(queue=queue)


async def run_inbound(monkeypatch: pytest.MonkeyPatch, w: FakeWorld, failing: set[str]) -> Any:
    inbound = RecordingInbound(failing)
    [body] = w.queue.bodies(SYNC_INBOUND_QUEUE)
    w.queue.sent.clear()
    w.queue.delays.clear()
    monkeypatch.setattr(workers, "get_services", lambda: Services(inbound, w.queue))
    handler = workers.sync_inbound.build().get_user_function()
    message = func.QueueMessage(body=body.encode())
    return inbound, handler(message)


async def test_the_worker_handles_every_item_of_a_batch(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accept(world, *(change(room, f"{room}-e") for room in ROOMS), lifecycle("room-1"))
    inbound, handling = await run_inbound(monkeypatch, world, failing=set())

    await handling

    assert sorted(inbound.handled) == sorted([*ROOMS, "lifecycle:room-1"])


async def test_a_failing_item_goes_on_alone_after_the_others_ran(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await accept(world, *(change(room, f"{room}-e") for room in ROOMS))
    [batch] = world.queue.bodies(SYNC_INBOUND_QUEUE)
    inbound, handling = await run_inbound(monkeypatch, world, failing={"room-2"})

    await handling  # the message completes; its failed item is a message of its own

    assert sorted(inbound.handled) == sorted(ROOMS)
    [again] = world.queue.bodies(SYNC_INBOUND_QUEUE)
    [item] = [i for i in InboundBatch.model_validate_json(batch).items if i.resource_id == "room-2"]
    assert again == item.model_dump_json()
    assert world.queue.delays == [workers.INBOUND_RETRY_DELAY_SECONDS]
