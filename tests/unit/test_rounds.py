"""Reconcile rounds at tenant scale: the paged fan-out and its repeats, and failing
resources that back off instead of walking their messages to `-poison`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.bookings import BookingRequest
from shared.domain.errors import GraphAccessDenied, GraphThrottled, GraphTransient
from shared.domain.messages import (
    RECONCILE_PAGE_SIZE,
    SYNC_OUTBOUND_QUEUE,
    LifecycleEvent,
    ReconcilePage,
    ReconcileResource,
)
from shared.domain.resources import ConnectionState, ConnectionStatus
from shared.domain.sync_log import SyncOutcome
from shared.services import reconcile as reconcile_module
from shared.services.reconcile import ANOTHER_ROUND_RUNNING, LEASE_SECONDS
from shared.services.rounds import (
    MAX_ROUND_DEFERRALS,
    ROUND_DEFERRAL_FIRST_SECONDS,
    RetrySchedule,
    deferral_seconds,
)
from tests.builders import T0, resource
from tests.fakes import Clock, FakeLeases, FakeWorld, fake_world


def mailbox(n: int) -> str:
    return f"room-{n}@contoso.com"


async def world_of(count: int) -> FakeWorld:
    world = fake_world(Clock(T0), tuple(mailbox(n) for n in range(count)))
    for n in range(count):
        await world.resources.add(resource(f"room-{n}"))
    return world


def take(world: FakeWorld, kind: str) -> list[str]:
    """Take the sync-outbound messages of one kind off the fake queue."""
    taken = [b for q, b in world.queue.sent if q == SYNC_OUTBOUND_QUEUE and f'"{kind}"' in b]
    world.queue.sent = [(q, b) for q, b in world.queue.sent if b not in taken]
    return taken


async def run_round(
    world: FakeWorld, *, pages_sent: int = 1, past_due: bool = False
) -> list[ReconcileResource]:
    """The timer, then each page's worker (`pages_sent` times each), then each resource's
    worker, as the host would run them. Returns the resource messages run."""
    await world.services.rounds.fan_out(past_due=past_due)
    pages = [ReconcilePage.model_validate_json(b) for b in take(world, "reconcile_page")]
    for page in pages:
        for _ in range(pages_sent):
            await world.services.rounds.fan_out_page(page)
    work = [ReconcileResource.model_validate_json(b) for b in take(world, "reconcile_resource")]
    for message in work:
        await world.services.rounds.run(message)
    return work


# --- the fan-out -----------------------------------------------------------------------


async def test_the_timer_sends_pages_of_the_resources_in_scope_not_a_message_each() -> None:
    world = await world_of(250)
    await world.resources.add(resource("off", active=False))
    await world.resources.add(resource("none", direction="none"))
    gone = ConnectionStatus(state=ConnectionState.DISCONNECTED)
    await world.resources.add(resource("gone").model_copy(update={"status": gone}))

    paged = await world.services.rounds.fan_out()

    pages = [ReconcilePage.model_validate_json(b) for b in take(world, "reconcile_page")]
    assert paged == 250
    assert [len(p.resource_ids) for p in pages] == [RECONCILE_PAGE_SIZE, RECONCILE_PAGE_SIZE, 50]
    assert sorted(r for p in pages for r in p.resource_ids) == sorted(
        f"room-{n}" for n in range(250)
    )
    assert {p.round_at for p in pages} == {T0}
    assert world.queue.sent == []  # no per-resource message from the timer itself


async def test_a_page_sends_one_reconcile_message_per_resource_of_its_round() -> None:
    world = await world_of(3)
    page = ReconcilePage(round_at=T0, resource_ids=["room-0", "room-1", "room-2"])

    assert await world.services.rounds.fan_out_page(page) == 3

    sent = [ReconcileResource.model_validate_json(b) for b in take(world, "reconcile_resource")]
    assert sorted(m.resource_id for m in sent) == ["room-0", "room-1", "room-2"]
    assert {m.round_at for m in sent} == {T0}


async def test_pages_sent_twice_cost_each_mailbox_one_graph_round() -> None:
    world = await world_of(120)

    work = await run_round(world, pages_sent=2)

    assert len(work) == 240  # every resource's message twice, and one Graph round each
    assert sorted(world.calendar.delta_reads) == sorted(mailbox(n) for n in range(120))


async def test_a_repeat_of_the_round_skips_after_one_table_read() -> None:
    world = await world_of(1)
    await run_round(world)
    again = ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)

    report = await world.services.rounds.run(again)

    assert report.skipped == "a repeat of the last timer round"
    assert world.calendar.delta_reads == [mailbox(0)]


async def test_a_past_due_run_soon_after_a_round_repeats_nothing_and_the_next_round_runs() -> None:
    world = await world_of(2)
    await run_round(world)
    world.clock.now = T0 + timedelta(minutes=1)  # the host restarted: a past-due run

    await run_round(world, past_due=True)
    assert len(world.calendar.delta_reads) == 2

    world.clock.now = T0 + timedelta(minutes=15)
    await run_round(world)
    assert len(world.calendar.delta_reads) == 4


async def test_rounds_on_a_schedule_shorter_than_the_repeat_window_all_run() -> None:
    """Only a past-due run is taken for a possible repeat: with RECONCILE_SCHEDULE every
    3 minutes (or the timer run by hand), each round of the timer runs; before, every
    other one was skipped as a repeat of the one before."""
    world = await world_of(2)
    for minutes in (0, 3, 6):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await run_round(world)

    assert len(world.calendar.delta_reads) == 6


async def test_a_reconcile_asked_for_outside_the_timer_always_runs() -> None:
    world = await world_of(1)
    await run_round(world)

    await world.services.rounds.run(ReconcileResource(resource_id="room-0", scheduled_at=T0))

    assert len(world.calendar.delta_reads) == 2


async def test_a_page_whose_sends_fail_raises_for_the_queue_to_retry() -> None:
    world = await world_of(3)
    world.queue.fail_next = 1
    page = ReconcilePage(round_at=T0, resource_ids=["room-0", "room-1", "room-2"])

    with pytest.raises(Exception, match="queue down"):
        await world.services.rounds.fan_out_page(page)

    assert len(take(world, "reconcile_resource")) == 2  # the others went; a retry repeats them


# --- failing resources -------------------------------------------------------------------


def test_the_retry_schedule_doubles_up_to_its_cap() -> None:
    schedule = RetrySchedule(first=timedelta(minutes=15), cap=timedelta(minutes=60))

    waits = [schedule.after(n) for n in (1, 2, 3, 4, 10_000)]

    assert waits == [timedelta(minutes=m) for m in (15, 30, 60, 60, 60)]


async def status_of(world: FakeWorld, resource_id: str = "room-0") -> ConnectionStatus:
    stored = await world.resources.get(resource_id)
    assert stored is not None
    return stored.value.status


async def test_a_gone_mailbox_completes_its_message_and_backs_off() -> None:
    world = await world_of(1)
    world.calendar.events.pop(mailbox(0))  # the user left: Graph answers 404

    report = await world.services.rounds.run(
        ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
    )

    assert report.skipped is not None
    assert report.skipped.startswith("failing")
    status = await status_of(world)
    assert status.state is ConnectionState.FAILING
    assert status.failed_rounds == 1
    assert status.retry_at == T0 + timedelta(minutes=15)
    [failed] = [e for e in world.sync_log.entries if e.action == "reconcile"]
    assert failed.outcome is SyncOutcome.FAILED
    assert failed.detail is not None
    assert "next round after 2030-01-07T09:15:00" in failed.detail


async def test_access_denied_backs_off_the_same_way() -> None:
    world = await world_of(1)
    world.calendar.fail(mailbox(0), GraphAccessDenied("ErrorAccessDenied"))

    await world.services.rounds.run(
        ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
    )

    assert (await status_of(world)).failed_rounds == 1


async def test_a_repeated_failing_message_counts_once() -> None:
    world = await world_of(1)
    world.calendar.events.pop(mailbox(0))
    work = ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)

    await world.services.rounds.run(work)
    await world.services.rounds.run(work)

    status = await status_of(world)
    assert status.failed_rounds == 1
    assert world.calendar.delta_reads == [mailbox(0)]  # the repeat did not ask Graph again


async def test_transient_errors_still_raise_for_the_queue_to_retry() -> None:
    world = await world_of(1)
    world.calendar.fail(mailbox(0), GraphTransient("503"))

    with pytest.raises(GraphTransient):
        await world.services.rounds.run(
            ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
        )

    status = await status_of(world)
    assert status.failed_rounds == 0
    assert status.retry_at is None


async def test_a_round_waiting_out_throttling_gives_way_to_the_next_timer_rounds() -> None:
    """A throttled round is sent again after the Retry-After and counts no try, so while a
    mailbox stays throttled each timer round added one more message, each asking the
    throttled mailbox again at every return, without limit. Once a later timer round has
    met the throttle too, an earlier one that comes back skips, and the later one runs."""
    world = await world_of(1)
    throttle = GraphThrottled("429 MailboxConcurrency", retry_after_seconds=30)
    world.calendar.fail(mailbox(0), throttle, throttle)
    first = ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
    with pytest.raises(GraphThrottled):
        await world.services.rounds.run(first)
    later = T0 + timedelta(minutes=15)
    world.clock.now = later
    second = ReconcileResource(resource_id="room-0", scheduled_at=later, round_at=later)
    with pytest.raises(GraphThrottled):
        await world.services.rounds.run(second)
    assert len(world.calendar.delta_reads) == 2

    report = await world.services.rounds.run(first)  # back after its Retry-After

    assert report.skipped == "superseded by a later timer round"
    assert len(world.calendar.delta_reads) == 2  # the throttled mailbox was not asked
    report = await world.services.rounds.run(second)
    assert report.skipped is None
    assert len(world.calendar.delta_reads) == 3
    assert (await world.resources.get("room-0")).value.last_round_at == later  # type: ignore[union-attr]


async def test_a_throttled_round_that_nothing_later_met_runs_when_it_comes_back() -> None:
    world = await world_of(1)
    world.calendar.fail(mailbox(0), GraphThrottled("429", retry_after_seconds=30))
    first = ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
    with pytest.raises(GraphThrottled):
        await world.services.rounds.run(first)

    report = await world.services.rounds.run(first)

    assert report.skipped is None
    assert len(world.calendar.delta_reads) == 2


async def test_a_failing_resource_runs_at_most_once_a_round_and_ever_less_often() -> None:
    world = await world_of(10)
    world.calendar.events.pop(mailbox(0))
    runs: list[int] = []
    for quarter in range(12):  # three hours of 15-minute rounds
        world.clock.now = T0 + timedelta(minutes=15 * quarter)
        before = world.calendar.delta_reads.count(mailbox(0))
        await run_round(world, pages_sent=2)
        runs.append(world.calendar.delta_reads.count(mailbox(0)) - before)

    # Rounds at 0, 15, 45 and then hourly (105, 165 minutes): never twice in a round.
    assert runs == [1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert world.calendar.delta_reads.count(mailbox(1)) == 12


async def test_a_failing_resource_recovers_by_itself_when_its_mailbox_returns() -> None:
    world = await world_of(1)
    world.calendar.events.pop(mailbox(0))
    await run_round(world)
    assert (await status_of(world)).state is ConnectionState.FAILING

    world.calendar.events[mailbox(0)] = {}  # the mailbox is back
    world.clock.now = T0 + timedelta(minutes=5)
    await run_round(world)
    assert (await status_of(world)).state is ConnectionState.FAILING  # still waiting

    world.clock.now = T0 + timedelta(minutes=15)
    await run_round(world)

    status = await status_of(world)
    assert status.state is ConnectionState.CONNECTED
    assert (status.failed_rounds, status.retry_at) == (0, None)
    stored = await world.resources.get("room-0")
    assert stored is not None
    assert stored.value.subscription_id is not None
    assert [s.resource for s in world.calendar.subscriptions.values()] == [
        f"/users/{mailbox(0)}/events"
    ]


async def test_the_subscription_removed_with_a_gone_mailbox_completes_its_message() -> None:
    """Graph removes a leaving user's subscriptions with a `subscriptionRemoved` event;
    subscribing again meets the same 404 on every delivery, so it is recorded (failing,
    fail closed) and the message completes; the rounds' retries bring it back."""
    world = await world_of(1)
    stored = await world.resources.get("room-0")
    assert stored is not None
    subscribed = await world.services.subscriptions.subscribe(stored.value)
    assert subscribed.subscription_id is not None
    world.calendar.subscriptions.clear()
    world.calendar.events.pop(mailbox(0))

    await world.services.inbound.handle_lifecycle(
        LifecycleEvent(
            subscription_id=subscribed.subscription_id,
            resource_id="room-0",
            lifecycle_event="subscriptionRemoved",
            received_at=T0,
        )
    )

    assert (await status_of(world)).state is ConnectionState.FAILING


async def test_a_resource_a_push_brought_back_gets_its_removed_subscription_again() -> None:
    """Found on the local stack: the mailbox went (Graph removed the subscription), came
    back, and a cancel's push succeeded before any round: the resource was connected again
    but kept pointing at the removed subscription, so no notification came until the
    upkeep found it due days later."""
    world = await world_of(1)
    stored = await world.resources.get("room-0")
    assert stored is not None
    fresh = stored.value.status.model_copy(update={"mirror_refreshed_at": world.clock.now})
    await world.resources.update(stored.value.model_copy(update={"status": fresh}), stored.etag)
    stored = await world.resources.get("room-0")
    assert stored is not None
    subscribed = await world.services.subscriptions.subscribe(stored.value)
    assert subscribed.subscription_id is not None
    booking = await world.services.bookings.create(
        BookingRequest.model_validate(
            {
                "resourceIds": ["room-0"],
                "start": T0 + timedelta(days=1),
                "end": T0 + timedelta(days=1, hours=1),
                "title": "Interview",
                "customer": {"name": "Ada", "email": "ada@example.com"},
            }
        ),
        None,
    )
    await world.push_all()
    world.calendar.subscriptions.clear()  # the mailbox is gone, and its subscriptions
    world.calendar.events.pop(mailbox(0))
    await world.services.inbound.handle_lifecycle(
        LifecycleEvent(
            subscription_id=subscribed.subscription_id,
            resource_id="room-0",
            lifecycle_event="subscriptionRemoved",
            received_at=T0,
        )
    )
    assert (await status_of(world)).state is ConnectionState.FAILING

    world.calendar.events[mailbox(0)] = {}  # back (empty)
    await world.services.bookings.cancel(booking.booking_id)
    await world.push_all()
    assert (await status_of(world)).state is ConnectionState.CONNECTED  # the push did it
    world.clock.now = T0 + timedelta(minutes=15)
    await run_round(world)

    assert [s.resource for s in world.calendar.subscriptions.values()] == [
        f"/users/{mailbox(0)}/events"
    ]
    current = await world.resources.get("room-0")
    assert current is not None
    assert current.value.subscription_id in world.calendar.subscriptions


# --- a round asked for while another holds the lease ------------------------------------


def held_by_another(world: FakeWorld, resource_id: str) -> FakeLeases:
    leases = world.ports.leases
    assert isinstance(leases, FakeLeases)
    leases.held[f"reconcile:{resource_id}"] = "a round on an instance since killed"
    return leases


async def test_a_round_asked_for_while_another_holds_the_lease_is_asked_for_again_later() -> None:
    world = await world_of(1)
    held_by_another(world, "room-0")
    work = ReconcileResource(resource_id="room-0", scheduled_at=T0)

    report = await world.services.rounds.run(work)

    assert report.skipped == ANOTHER_ROUND_RUNNING
    assert world.calendar.delta_reads == []
    again = [ReconcileResource.model_validate_json(b) for b in take(world, "reconcile_resource")]
    assert again == [work.model_copy(update={"deferrals": 1})]
    assert world.queue.delays == [ROUND_DEFERRAL_FIRST_SECONDS]


async def test_each_deferral_waits_longer_and_together_they_outlast_a_lost_holder() -> None:
    world = await world_of(1)
    held_by_another(world, "room-0")
    work = ReconcileResource(resource_id="room-0", scheduled_at=T0)

    for _ in range(MAX_ROUND_DEFERRALS + 1):
        await world.services.rounds.run(work)
        sent = take(world, "reconcile_resource")
        if not sent:
            break
        work = ReconcileResource.model_validate_json(sent[0])

    delays = world.queue.delays
    assert len(delays) == MAX_ROUND_DEFERRALS
    assert delays[:4] == [5, 10, 20, 30]
    assert set(delays[4:]) == {30}
    # A holder gone mid-round lets go within LEASE_SECONDS: the first four outlast it.
    assert sum(delays[:4]) > LEASE_SECONDS
    # All of them wait out five minutes of another round.
    assert sum(delays) >= 300
    assert [deferral_seconds(n) for n in range(len(delays))] == delays


async def test_the_deferred_round_runs_once_the_lease_is_let_go() -> None:
    world = await world_of(1)
    leases = held_by_another(world, "room-0")
    await world.services.rounds.run(ReconcileResource(resource_id="room-0", scheduled_at=T0))
    leases.held.clear()  # its holder's lease ended

    for body in take(world, "reconcile_resource"):
        report = await world.services.rounds.run(ReconcileResource.model_validate_json(body))
        assert report.skipped is None

    assert world.calendar.delta_reads == [mailbox(0)]
    assert take(world, "reconcile_resource") == []


async def test_a_round_held_back_past_its_deferrals_is_dropped_not_sent_again() -> None:
    world = await world_of(1)
    held_by_another(world, "room-0")
    work = ReconcileResource(resource_id="room-0", scheduled_at=T0, deferrals=MAX_ROUND_DEFERRALS)

    report = await world.services.rounds.run(work)

    assert report.skipped == ANOTHER_ROUND_RUNNING
    assert take(world, "reconcile_resource") == []


async def test_a_deferred_repeat_of_a_finished_round_skips_after_one_table_read() -> None:
    world = await world_of(1)
    # Two messages of one timer round: the second finds the first running.
    leases = held_by_another(world, "room-0")
    work = ReconcileResource(resource_id="room-0", scheduled_at=T0, round_at=T0)
    await world.services.rounds.run(work)
    deferred = [ReconcileResource.model_validate_json(b) for b in take(world, "reconcile_resource")]
    leases.held.clear()
    await world.services.rounds.run(work)  # the first one's round
    assert world.calendar.delta_reads == [mailbox(0)]

    report = await world.services.rounds.run(deferred[0])

    assert report.skipped == "a repeat of the last timer round"
    assert world.calendar.delta_reads == [mailbox(0)]


async def test_a_long_round_renews_its_lease_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await world_of(1)
    monkeypatch.setattr(reconcile_module, "LEASE_RENEW_SECONDS", 0.01)
    renewals: list[str] = []
    leases = held_by_another(world, "room-0")
    leases.held.clear()
    acquire = leases.acquire

    async def counted(name: str, holder: str, seconds: float) -> bool:
        renewals.append(holder)
        return await acquire(name, holder, seconds)

    monkeypatch.setattr(leases, "acquire", counted)
    delta = world.calendar.delta

    async def slow_delta(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.1)
        return await delta(*args, **kwargs)

    monkeypatch.setattr(world.calendar, "delta", slow_delta)

    await world.services.rounds.run(ReconcileResource(resource_id="room-0", scheduled_at=T0))

    # The first take, then renewals by the same holder while Graph was slow.
    assert len(renewals) >= 3
    assert len(set(renewals)) == 1
    assert leases.held == {}  # let go at the end


async def test_a_renewal_in_flight_as_the_round_ends_lands_before_the_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await world_of(1)
    monkeypatch.setattr(reconcile_module, "LEASE_RENEW_SECONDS", 0.05)
    leases = held_by_another(world, "room-0")
    leases.held.clear()
    acquire = leases.acquire
    takes = 0

    async def slow_renewal(name: str, holder: str, seconds: float) -> bool:
        nonlocal takes
        takes += 1
        if takes == 1:
            return await acquire(name, holder, seconds)

        async def sent() -> bool:
            # Storage applies a request once sent, whether or not its caller still waits.
            await asyncio.sleep(0.2)
            return await acquire(name, holder, seconds)

        return await asyncio.shield(sent())

    monkeypatch.setattr(leases, "acquire", slow_renewal)
    delta = world.calendar.delta

    async def slow_delta(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.1)  # the round ends while the first renewal is in flight
        return await delta(*args, **kwargs)

    monkeypatch.setattr(world.calendar, "delta", slow_delta)

    await world.services.rounds.run(ReconcileResource(resource_id="room-0", scheduled_at=T0))
    await asyncio.sleep(0.3)  # anything still in flight has landed

    assert takes == 2
    assert leases.held == {}
