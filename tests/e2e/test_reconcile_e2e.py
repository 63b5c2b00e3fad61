"""Reconciliation, subscription upkeep and resync over the local stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.composition import Services, get_services
from shared.domain.messages import SYNC_INBOUND_QUEUE, SYNC_OUTBOUND_QUEUE, poison_queue
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from tests.e2e.test_bookings_e2e import START, booking, our_events, slot, synced
from tests.e2e.test_outlook_e2e import booked, subscription_of, when
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration

# How long a test waits for the timer's round of its resource (one of every resource in
# the session's stack). 20 s once ran out in a whole-suite run on 2 busy cores.
TIMER_ROUND_WITHIN = 90

_DAY = {
    "start": (START + timedelta(days=1)).isoformat(),
    "end": (START + timedelta(days=2)).isoformat(),
}


def services() -> Services:
    return get_services()


async def quiet(stack: Stack, seconds: float = 0.6) -> None:
    """Let notifications of earlier writes be delivered and handled."""
    await stack.emulator.notifier.idle()
    await asyncio.sleep(seconds)


async def test_event_written_before_a_crash_is_adopted_not_duplicated(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    created = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    # The worker died after Graph created the event and before the mapping recorded it:
    # the mapping holds only the create's intent.
    mappings = services().ports.event_mappings
    stored = await mappings.get(room, created["bookingId"])
    assert stored is not None
    await mappings.update(
        stored.value.model_copy(
            update={"event_id": None, "change_key": None, "pending_transaction_id": "tx-lost"}
        ),
        stored.etag,
    )

    report = await services().reconcile.reconcile(room)

    assert report.adopted == 1
    assert [e["id"] for e in await our_events(stack, mb.room)] == [event["id"]]
    adopted = await mappings.get(room, created["bookingId"])
    assert adopted is not None
    assert adopted.value.event_id == event["id"]
    assert adopted.value.pending_transaction_id is None


async def test_ten_changes_missed_while_paused_are_applied_by_one_round(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(
        mb.room, onOutlookDelete="cancel_booking", onOutlookMove="reschedule_booking"
    )
    made = [await booked(stack, [room]) for _ in range(1)]
    for hours in range(2, 14, 2):  # six more bookings, two hours apart
        status, created = await stack.call(
            "POST", "/bookings", booking([room], **slot(hours=hours))
        )
        assert status == 201
        made.append(created)
    for created in made:
        await eventually(partial(synced, stack, created["bookingId"]))
    await quiet(stack)
    assert (await services().reconcile.reconcile(room)).full  # the baseline round
    ours = {
        e["singleValueExtendedProperties"][0]["value"]: e["id"]
        for e in await our_events(stack, mb.room)
    }

    await stack.control("POST", "/notifications/pause")
    try:
        for created in made[:3]:  # three deletes → cancelled
            await stack.graph("DELETE", f"/users/{mb.room}/events/{ours[created['bookingId']]}")
        for index, created in enumerate(made[3:6]):  # three moves → rescheduled
            await stack.graph(
                "PATCH",
                f"/users/{mb.room}/events/{ours[created['bookingId']]}",
                when(hours=20 + index),
            )
        foreign = []
        for hours in (30, 31, 32, 33):  # four foreign events: busy time
            _, event = await stack.graph(
                "POST",
                f"/users/{mb.room}/events",
                {"subject": "x", "showAs": "busy", **when(hours)},
            )
            foreign.append(event["id"])
    finally:
        await stack.control("POST", "/notifications/resume")

    report = await services().reconcile.reconcile(room)

    assert not report.full
    statuses = []
    for created in made:
        _, view = await stack.call("GET", f"/bookings/{created['bookingId']}")
        statuses.append(view["status"])
    assert statuses == ["cancelled"] * 3 + ["rescheduled"] * 3 + ["confirmed"]
    window = {"start": START.isoformat(), "end": (START + timedelta(hours=40)).isoformat()}
    _, availability = await stack.call("GET", f"/resources/{room}/availability", params=window)
    calendar = [b for b in availability["busy"] if b["source"] == "calendar"]
    assert len(calendar) == 4


async def test_upkeep_renews_an_expiring_subscription_and_recreates_a_lost_one(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    before = await subscription_of(stack, mb.room)
    resources = services().ports.resources
    stored = await resources.get(room)
    assert stored is not None
    soon = datetime.now(UTC) + timedelta(hours=1)
    await resources.update(
        stored.value.model_copy(update={"subscription_expires_at": soon}), stored.etag
    )

    await services().upkeep.renew_subscriptions()

    renewed = await subscription_of(stack, mb.room)
    assert renewed["id"] == before["id"]
    # Renewed in Graph (expiries are jittered up to a day early, so not necessarily later
    # than the first one), and recorded well past the hour it had left.
    assert renewed["expirationDateTime"] != before["expirationDateTime"]
    _, view = await stack.call("GET", f"/resources/{room}")
    assert view["subscription"]["expiresAt"] > (soon + timedelta(days=1)).isoformat()

    # Graph lost it (expired while we were down): the next upkeep recreates it.
    await stack.control(
        "POST", f"/subscriptions/{before['id']}/lifecycle", {"event": "subscriptionRemoved"}
    )
    await eventually(lambda: _subscription_replaced(stack, room, before["id"]))


async def test_the_upkeep_timer_purges_sync_log_entries_past_their_retention(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    old = datetime.now(UTC) - timedelta(days=31)  # SYNC_LOG_RETENTION_DAYS is 30
    await services().ports.sync_log.append(
        SyncLogEntry(
            resource_id=room,
            at=old,
            direction=SyncDirection.INBOUND,
            action="long_ago",
            outcome=SyncOutcome.OK,
        )
    )

    async def actions() -> list[str]:
        _, log = await stack.call("GET", f"/resources/{room}/sync-log")
        return [entry["action"] for entry in log["value"]]

    assert "long_ago" in await actions()
    await stack.run_function("subscription_upkeep_timer")

    async def purged() -> bool:
        remaining = await actions()
        return "long_ago" not in remaining and len(remaining) > 0

    await eventually(purged)


async def _subscription_replaced(stack: Stack, room: str, old_id: str) -> bool:
    _, view = await stack.call("GET", f"/resources/{room}")
    return view["subscription"]["id"] not in (None, old_id)


async def test_subscription_removed_is_recreated_and_the_mailbox_caught_up(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room, onOutlookDelete="cancel_booking")
    created = await booked(stack, [room])
    [event] = await our_events(stack, mb.room)
    old = await subscription_of(stack, mb.room)
    await stack.control(
        "POST", f"/subscriptions/{old['id']}/lifecycle", {"event": "subscriptionRemoved"}
    )
    # While no subscription exists, the Outlook user deletes the event.
    await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")

    await eventually(lambda: _subscription_replaced(stack, room, old["id"]), within=5)

    async def cancelled() -> bool:
        _, view = await stack.call("GET", f"/bookings/{created['bookingId']}")
        return bool(view["status"] == "cancelled")

    await eventually(cancelled, within=5)
    new = await subscription_of(stack, mb.room)
    assert new["id"] != old["id"]


async def test_expired_delta_token_means_a_full_round_without_duplicates(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    await booked(stack, [room])
    await stack.graph(
        "POST", f"/users/{mb.room}/events", {"subject": "f", "showAs": "busy", **when(5)}
    )
    await quiet(stack)
    await services().reconcile.reconcile(room)
    assert not (await services().reconcile.reconcile(room)).full

    await stack.control("POST", "/delta/expire", {"mailbox": mb.room})
    report = await services().reconcile.reconcile(room)

    assert report.full
    assert (report.adopted, report.duplicates_removed) == (0, 0)
    assert len(await our_events(stack, mb.room)) == 1
    blocks = await services().ports.unavailability.list_for_resource(room)
    assert len(blocks) == 1


async def test_resync_recreates_ours_and_leaves_foreign_events_alone(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    for index in range(50):
        status, _ = await stack.graph(
            "POST",
            f"/users/{mb.room}/events",
            {"subject": f"foreign {index}", "showAs": "free", **when(200 + index)},
        )
        assert status == 201
    # Twelve hours apart: a resync is under test here, not 20 writers on one day's ledger.
    bodies = [booking([room], **slot(hours=12 * index)) for index in range(200)]
    created: list[dict[str, Any]] = []
    for start in range(0, len(bodies), 20):
        answers = await asyncio.gather(
            *(stack.call("POST", "/bookings", b) for b in bodies[start : start + 20])
        )
        assert {status for status, _ in answers} == {201}
        created += [payload for _, payload in answers]

    async def all_pushed() -> bool:
        return len(await our_events_all(stack, mb.room)) == 200

    await eventually(all_pushed, within=60, interval=2)
    before = {e["id"]: e["changeKey"] for e in await all_events(stack, mb.room)}
    ours_before = {e["id"] for e in await our_events_all(stack, mb.room)}
    foreign_before = {k: v for k, v in before.items() if k not in ours_before}
    assert len(foreign_before) == 50

    status, _ = await stack.call("POST", f"/resources/{room}/resync")
    assert status == 202

    async def finished() -> bool:
        _, log = await stack.call("GET", f"/resources/{room}/sync-log", params={"limit": "5"})
        return any(e["action"] == "resync_finished" for e in log["value"])

    # 200 deletes and 200 creates, and their notifications, on the test's shared machine:
    # the time is the benchmarks' to judge, the outcome this test's.
    await eventually(finished, within=120)
    after = {e["id"]: e["changeKey"] for e in await all_events(stack, mb.room)}
    ours_after = {e["id"] for e in await our_events_all(stack, mb.room)}
    assert len(ours_after) == 200
    assert not ours_after & ours_before  # every one of ours was recreated
    assert {k: v for k, v in after.items() if k not in ours_after} == foreign_before


async def all_events(stack: Stack, mailbox: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    path = f"/users/{mailbox}/calendar/events?$top=500"
    while path:
        status, page = await stack.graph("GET", path)
        assert status == 200
        found += page["value"]
        link = page.get("@odata.nextLink")
        path = link.split("/v1.0", 1)[1] if link else ""
    return found


async def our_events_all(stack: Stack, mailbox: str) -> list[dict[str, Any]]:
    from shared.adapters.graph.mapping import EXPAND_BOOKING_ID

    found: list[dict[str, Any]] = []
    path = f"/users/{mailbox}/calendar/events?$top=500&$expand={EXPAND_BOOKING_ID}"
    while path:
        _, page = await stack.graph("GET", path)
        found += [e for e in page["value"] if e.get("singleValueExtendedProperties")]
        link = page.get("@odata.nextLink")
        path = link.split("/v1.0", 1)[1] if link else ""
    return found


async def test_full_rounds_rebuild_a_mirror_of_more_than_a_hundred_events(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)

    async def create(hours: int) -> str:
        status, event = await stack.graph(
            "POST", f"/users/{mb.room}/events", {"subject": "f", "showAs": "busy", **when(hours)}
        )
        assert status == 201
        return str(event["id"])

    await stack.control("POST", "/notifications/pause")
    try:
        seeded = [await create(2 + index) for index in range(120)]
        assert (await services().reconcile.reconcile(room)).full  # the baseline round
        # Changes no notification reports: 30 deletes, 30 moves, 30 new events.
        for event_id in seeded[:30]:
            await stack.graph("DELETE", f"/users/{mb.room}/events/{event_id}")
        for index, event_id in enumerate(seeded[30:60]):
            await stack.graph("PATCH", f"/users/{mb.room}/events/{event_id}", when(200 + index))
        added = [await create(300 + index) for index in range(30)]
        await stack.control("POST", "/delta/expire", {"mailbox": mb.room})
        report = await services().reconcile.reconcile(room)
    finally:
        await stack.control("POST", "/notifications/resume")

    assert report.full
    untouched = {(e, START + timedelta(hours=62 + i)) for i, e in enumerate(seeded[60:])}
    moved = {(e, START + timedelta(hours=200 + i)) for i, e in enumerate(seeded[30:60])}
    new = {(e, START + timedelta(hours=300 + i)) for i, e in enumerate(added)}
    blocks = await services().ports.unavailability.list_for_resource(room)
    assert {(b.event_id, b.start) for b in blocks} == untouched | moved | new
    assert len(blocks) == 120


async def _poisoned(resource_id: str) -> list[str]:
    """Messages about the resource in the sync queues' -poison queues."""
    found: list[str] = []
    for name in (SYNC_OUTBOUND_QUEUE, SYNC_INBOUND_QUEUE):
        queue = QueueClient.from_connection_string(
            os.environ["STORAGE_CONNECTION_STRING"],
            poison_queue(name),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        async with queue:
            with contextlib.suppress(ResourceNotFoundError):
                peeked = await queue.peek_messages(max_messages=32)
                found += [m.content for m in peeked if resource_id in m.content]
    return found


async def test_a_gone_mailbox_completes_its_round_backs_off_and_recovers_when_it_returns(
    stack: Stack, mb: Mailboxes
) -> None:
    room = await stack.connect(mb.room)
    old = await subscription_of(stack, mb.room)
    # The user leaves: the mailbox goes, and Graph removes its subscription (with a
    # subscriptionRemoved lifecycle event, whose new subscription meets a 404).
    await stack.control("DELETE", f"/mailboxes/{mb.room}")

    await stack.run_function("reconcile_timer")

    async def failed_rounds() -> list[dict[str, Any]]:
        _, log = await stack.call("GET", f"/resources/{room}/sync-log")
        return [e for e in log["value"] if e["action"] == "reconcile" and e["outcome"] == "failed"]

    # The timer runs a round of every resource the session's earlier tests left connected,
    # the room's among them: on a busy machine that takes a while.
    await eventually(failed_rounds, within=TIMER_ROUND_WITHIN)
    _, view = await stack.call("GET", f"/resources/{room}")
    assert view["status"]["state"] == "failing"
    assert view["status"]["failedRounds"] == 1
    assert view["status"]["retryAt"] > datetime.now(UTC).isoformat()
    status, _ = await stack.call("GET", f"/resources/{room}/availability", params=_DAY)
    assert status == 503  # fail closed, as before
    # One worker run, and its message completed: no redelivery, nothing in -poison.
    await asyncio.sleep(3)  # the host's fast-mode retries would have come by now
    assert len(await failed_rounds()) == 1
    assert await _poisoned(room) == []

    # The mailbox returns; once its retry time has come, the next round brings it back.
    await stack.control("POST", "/mailboxes", {"id": mb.room})
    resources = services().ports.resources
    stored = await resources.get(room)
    assert stored is not None
    past = datetime.now(UTC) - timedelta(hours=1)
    await resources.update(
        stored.value.model_copy(
            update={
                "last_round_at": past,
                "status": stored.value.status.model_copy(update={"retry_at": past}),
            }
        ),
        stored.etag,
    )
    await stack.run_function("reconcile_timer")

    async def connected_again() -> bool:
        _, view = await stack.call("GET", f"/resources/{room}")
        return bool(
            view["status"]["state"] == "connected"
            and view["subscription"]["id"] not in (None, old["id"])
        )

    await eventually(connected_again, within=TIMER_ROUND_WITHIN)
    assert (await subscription_of(stack, mb.room))["id"] != old["id"]
    status, _ = await stack.call("GET", f"/resources/{room}/availability", params=_DAY)
    assert status == 200
    assert await _poisoned(room) == []
