"""The Table Storage adapter against Azurite: claims, conflicts, paging, transactions."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from shared.adapters.storage.repositories import BOOKINGS, RESOURCES
from shared.adapters.storage.tables import Transaction, encode_key
from shared.composition import Adapters
from shared.domain.base import utc_now
from shared.domain.bookings import BookingStatus, TimeRange
from shared.domain.calendar import EventMapping, SubscriptionRecord
from shared.domain.claims import Claim, DayLedger
from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    SlotUnavailable,
    TransactionTooLarge,
)
from shared.domain.sync_log import SyncDirection, SyncLogEntry, SyncOutcome
from shared.ports import IdempotencyRecord
from shared.services.slots import MAX_CLAIMS_PER_DAY, SlotKeeper
from tests.builders import T0, booking, busy_block, resource

HOUR = timedelta(hours=1)

pytestmark = pytest.mark.integration


async def test_two_concurrent_updates_of_one_entity_exactly_one_wins(adapters: Adapters) -> None:
    stored = await adapters.resources.add(resource("room-1"))
    renamed = [
        stored.value.model_copy(
            update={"settings": stored.value.settings.model_copy(update={"display_name": name})}
        )
        for name in ("Room A", "Room B")
    ]

    results = await asyncio.gather(
        *(adapters.resources.update(value, stored.etag) for value in renamed),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(winners) == 1
    assert len(conflicts) == 1
    current = await adapters.resources.get("room-1")
    assert current is not None
    assert current.value.settings.display_name == winners[0].value.settings.display_name
    assert current.etag == winners[0].etag


async def test_insert_is_a_claim_the_second_insert_gets_already_exists(adapters: Adapters) -> None:
    await adapters.bookings.add(booking("bk-1"))

    with pytest.raises(AlreadyExists):
        await adapters.bookings.add(booking("bk-1", title="Someone else"))

    current = await adapters.bookings.get("bk-1")
    assert current is not None
    assert current.value.title == "Intro call"


async def test_stale_etag_update_is_a_conflict_and_changes_nothing(adapters: Adapters) -> None:
    first = await adapters.bookings.add(booking("bk-1"))
    await adapters.bookings.update(first.value.model_copy(update={"version": 2}), first.etag)

    with pytest.raises(ConcurrencyConflict):
        await adapters.bookings.update(first.value.model_copy(update={"version": 3}), first.etag)

    current = await adapters.bookings.get("bk-1")
    assert current is not None
    assert current.value.version == 2


async def test_query_follows_continuation_tokens_past_one_page(adapters: Adapters) -> None:
    # 1,050 rows: Table Storage returns at most 1,000 per page.
    blocks = [busy_block(f"ev-{i}", T0 + timedelta(minutes=30 * i)) for i in range(1050)]
    for chunk_start in range(0, len(blocks), 100):
        transaction = Transaction()
        for block in blocks[chunk_start : chunk_start + 100]:
            transaction.create(adapters.unavailability.to_entity(block))
        await adapters.unavailability.commit(transaction)

    stored = await adapters.unavailability.list_for_resource("room-1")

    assert len(stored) == 1050
    assert {b.event_id for b in stored} == {f"ev-{i}" for i in range(1050)}


async def test_transaction_over_100_entities_is_refused_before_sending(adapters: Adapters) -> None:
    transaction = Transaction()
    for i in range(101):
        transaction.create(adapters.unavailability.to_entity(busy_block(f"ev-{i}", T0)))

    with pytest.raises(TransactionTooLarge, match="at most 100"):
        await adapters.unavailability.commit(transaction)

    assert await adapters.unavailability.list_for_resource("room-1") == []


async def test_transaction_across_partitions_is_refused(adapters: Adapters) -> None:
    transaction = Transaction()
    transaction.create(adapters.unavailability.to_entity(busy_block("a", T0)))
    other = busy_block("b", T0, resource_id="room-2")
    transaction.create(adapters.unavailability.to_entity(other))

    with pytest.raises(TransactionTooLarge, match="one partition"):
        await adapters.unavailability.commit(transaction)

    assert await adapters.unavailability.list_for_resource("room-1") == []


async def test_failed_transaction_writes_nothing(adapters: Adapters) -> None:
    await adapters.unavailability.replace_event("room-1", "taken", [busy_block("taken", T0)])
    transaction = Transaction()
    transaction.create(adapters.unavailability.to_entity(busy_block("new", T0)))
    transaction.create(adapters.unavailability.to_entity(busy_block("taken", T0)))

    with pytest.raises(AlreadyExists):
        await adapters.unavailability.commit(transaction)

    stored = await adapters.unavailability.list_for_resource("room-1")
    assert [b.event_id for b in stored] == ["taken"]


async def test_event_ids_with_slashes_are_legal_keys_and_indexed(adapters: Adapters) -> None:
    event_id = "AAMkAGI2T/+G=="
    mapping = EventMapping(
        resource_id="room-1", booking_id="bk-1", mailbox="room-1@contoso.com", event_id=event_id
    )
    added = await adapters.event_mappings.add(mapping)
    moved = mapping.model_copy(update={"change_key": "ck2"})
    await adapters.event_mappings.update(moved, added.etag)

    found = await adapters.event_mappings.find_by_event("room-1", event_id)

    assert found is not None
    assert found.value.change_key == "ck2"
    assert encode_key(event_id) != event_id
    assert await adapters.event_mappings.find_by_event("room-1", "other") is None
    assert [
        m.value.booking_id for m in await adapters.event_mappings.list_for_resource("room-1")
    ] == ["bk-1"]


async def test_replace_event_blocks_is_exact_and_idempotent(adapters: Adapters) -> None:
    series = [
        busy_block(f"occ-{i}", T0 + timedelta(days=i), series_master_id="master") for i in range(3)
    ]
    await adapters.unavailability.replace_event("room-1", "master", series)
    await adapters.unavailability.replace_event("room-1", "single", [busy_block("single", T0)])

    # One occurrence deleted in Outlook: the series is re-expanded without it.
    await adapters.unavailability.replace_event("room-1", "master", [series[0], series[2]])
    await adapters.unavailability.replace_event("room-1", "master", [series[0], series[2]])

    stored = await adapters.unavailability.list_for_resource("room-1")
    assert sorted(b.event_id for b in stored) == ["occ-0", "occ-2", "single"]

    await adapters.unavailability.replace_event("room-1", "master", [])
    assert [b.event_id for b in await adapters.unavailability.list_for_resource("room-1")] == [
        "single"
    ]


async def test_list_between_uses_half_open_overlap(adapters: Adapters) -> None:
    blocks = [
        busy_block("before", T0 - timedelta(minutes=30)),  # ends exactly at the window start
        busy_block("inside", T0 + timedelta(minutes=10)),
        busy_block("after", T0 + timedelta(hours=1)),  # starts exactly at the window end
    ]
    for block in blocks:
        await adapters.unavailability.replace_event("room-1", block.event_id, [block])

    found = await adapters.unavailability.list_between("room-1", T0, T0 + timedelta(hours=1))

    assert [b.event_id for b in found] == ["inside"]


async def test_subscription_client_state_is_stored_but_never_dumped(adapters: Adapters) -> None:
    record = SubscriptionRecord(
        subscription_id="sub-1",
        resource_id="room-1",
        mailbox="room-1@contoso.com",
        client_state=SecretStr("s3cret-state"),
        expires_at=T0,
        created_at=T0,
    )
    await adapters.subscriptions.save(record)

    stored = await adapters.subscriptions.get("sub-1")

    assert stored is not None
    assert stored.value.client_state.get_secret_value() == "s3cret-state"
    assert "s3cret-state" not in stored.value.model_dump_json()
    listed = {s.value.subscription_id: s.value for s in await adapters.subscriptions.list_all()}
    assert listed["sub-1"].client_state.get_secret_value() == "s3cret-state"


async def test_sync_log_lists_newest_first(adapters: Adapters) -> None:
    for minutes in (0, 2, 1):
        await adapters.sync_log.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 + timedelta(minutes=minutes),
                direction=SyncDirection.OUTBOUND,
                action=f"push-{minutes}",
                outcome=SyncOutcome.OK,
            )
        )

    newest = (await adapters.sync_log.page("room-1", limit=2)).value

    assert [entry.action for entry in newest] == ["push-2", "push-1"]


async def test_sync_log_keeps_the_order_of_entries_within_one_second(adapters: Adapters) -> None:
    # A disconnect's "disconnecting" and "disconnected", say, a few hundred ms apart.
    for action, milliseconds in (("disconnecting", 100), ("removed", 400), ("disconnected", 900)):
        await adapters.sync_log.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 + timedelta(milliseconds=milliseconds),
                direction=SyncDirection.OUTBOUND,
                action=action,
                outcome=SyncOutcome.OK,
            )
        )

    newest = (await adapters.sync_log.page("room-1", limit=10)).value

    assert [entry.action for entry in newest] == ["disconnected", "removed", "disconnecting"]
    assert newest[0].at == T0 + timedelta(milliseconds=900)


async def test_sync_log_entries_appended_together_land_in_their_resources_logs(
    adapters: Adapters,
) -> None:
    entries = [
        SyncLogEntry(
            resource_id=f"room-{n % 2}",
            at=T0 + timedelta(seconds=n),
            direction=SyncDirection.INBOUND,
            action=f"change-{n}",
            outcome=SyncOutcome.OK,
        )
        for n in range(250)
    ]

    await adapters.sync_log.append_many(entries)

    for room in ("room-0", "room-1"):
        page = await adapters.sync_log.page(room, limit=200)
        assert len(page.value) == 125
        assert page.value[0].action == ("change-248" if room == "room-0" else "change-249")


async def test_sync_log_pages_by_outcome_follow_on_after_the_cursor(adapters: Adapters) -> None:
    # 25 entries a minute apart, every fifth failed; another resource's failure between.
    for minutes in range(25):
        await adapters.sync_log.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 + timedelta(minutes=minutes),
                direction=SyncDirection.OUTBOUND,
                action=f"push-{minutes}",
                outcome=SyncOutcome.FAILED if minutes % 5 == 0 else SyncOutcome.OK,
            )
        )
    await adapters.sync_log.append(
        SyncLogEntry(
            resource_id="room-2",
            at=T0 + timedelta(minutes=12),
            direction=SyncDirection.OUTBOUND,
            action="elsewhere",
            outcome=SyncOutcome.FAILED,
        )
    )

    pages = []
    after = None
    while True:
        page = await adapters.sync_log.page("room-1", 2, outcome=SyncOutcome.FAILED, after=after)
        pages.append([entry.action for entry in page.value])
        after = page.next_page
        if after is None:
            break

    assert pages == [["push-20", "push-15"], ["push-10", "push-5"], ["push-0"]]
    everything = await adapters.sync_log.page("room-1", 25)
    assert len(everything.value) == 25
    assert everything.next_page is None


async def test_sync_log_purge_removes_exactly_the_older_entries(adapters: Adapters) -> None:
    # 150 entries a minute apart (more than one transaction's worth), and another
    # resource's entry of the same age.
    for minutes in range(150):
        await adapters.sync_log.append(
            SyncLogEntry(
                resource_id="room-1",
                at=T0 + timedelta(minutes=minutes),
                direction=SyncDirection.INBOUND,
                action=f"change-{minutes}",
                outcome=SyncOutcome.OK,
            )
        )
    await adapters.sync_log.append(
        SyncLogEntry(
            resource_id="room-2",
            at=T0,
            direction=SyncDirection.INBOUND,
            action="elsewhere",
            outcome=SyncOutcome.OK,
        )
    )

    purged = await adapters.sync_log.purge_older_than("room-1", T0 + timedelta(minutes=120))

    assert purged == 120
    kept = (await adapters.sync_log.page("room-1", limit=1000)).value
    assert [entry.action for entry in kept] == [f"change-{m}" for m in range(149, 119, -1)]
    assert [e.action for e in (await adapters.sync_log.page("room-2", limit=10)).value] == [
        "elsewhere"
    ]


async def test_idempotency_purge_goes_by_the_last_write(adapters: Adapters) -> None:
    record = IdempotencyRecord(
        key="key-1", request_hash="h", booking_id="bk-1", created_at=utc_now()
    )
    await adapters.idempotency.add(record)

    assert await adapters.idempotency.purge_older_than(utc_now() - timedelta(hours=1)) == 0
    assert await adapters.idempotency.get("key-1") is not None
    assert await adapters.idempotency.purge_older_than(utc_now() + timedelta(minutes=1)) == 1
    assert await adapters.idempotency.get("key-1") is None


async def test_a_single_entity_azure_would_refuse_for_its_size_is_never_sent(
    adapters: Adapters,
) -> None:
    # Azurite keeps a string property over 64 KiB (UTF-16) that Azure refuses: inserts,
    # replaces and upserts are checked as transactions are, and nothing is written.
    small = IdempotencyRecord(key="key-1", request_hash="h", booking_id="bk-1", created_at=T0)
    # A character outside the Basic Multilingual Plane is 4 bytes of UTF-16: 16,385 of them
    # take the record's JSON past 64 KiB, 16,000 do not.
    huge = small.model_copy(update={"response_body": "\U0001f600" * 16_385})
    with pytest.raises(TransactionTooLarge, match="64 KiB"):
        await adapters.idempotency.add(huge)
    assert await adapters.idempotency.get("key-1") is None

    stored = await adapters.idempotency.add(small)
    with pytest.raises(TransactionTooLarge, match="64 KiB"):
        await adapters.idempotency.update(huge, stored.etag)
    kept = await adapters.idempotency.get("key-1")
    assert kept is not None
    assert kept.value.response_body is None
    near_the_limit = small.model_copy(update={"response_body": "\U0001f600" * 16_000})
    await adapters.idempotency.update(near_the_limit, kept.etag)
    kept = await adapters.idempotency.get("key-1")
    assert kept is not None
    assert kept.value.response_body == near_the_limit.response_body

    record = SubscriptionRecord(
        subscription_id="sub-1",
        resource_id="room-1",
        mailbox="room-1@contoso.com",
        client_state=SecretStr("s" * 40),
        expires_at=T0,
        created_at=T0,
    )
    with pytest.raises(TransactionTooLarge, match="64 KiB"):
        await adapters.subscriptions.save(record.model_copy(update={"mailbox": "m" * 32_769}))
    assert await adapters.subscriptions.get("sub-1") is None


async def test_a_table_client_is_built_once_per_table_not_per_call(adapters: Adapters) -> None:
    # Building one costs a pipeline of policies (about 0.13 ms of CPU) on every call.
    first = await adapters.tables.table(RESOURCES)
    await adapters.resources.add(resource("room-1"))

    assert await adapters.tables.table(RESOURCES) is first
    assert await adapters.tables.table(BOOKINGS) is not first


def cancelled_claims(count: int, day_start: datetime) -> list[Claim]:
    """One-minute bookings that were cancelled, with 64-character ids (the longest)."""
    return [
        Claim(
            booking_id=f"{n:064d}",
            start=day_start + timedelta(minutes=n),
            end=day_start + timedelta(minutes=n + 1),
            status=BookingStatus.CANCELLED,
            claimed_at=day_start - timedelta(days=1, minutes=count - n),
        )
        for n in range(count)
    ]


async def test_a_day_of_many_cancelled_bookings_still_takes_a_booking_within_the_row_limit(
    adapters: Adapters,
) -> None:
    # A frontend that books and cancels over and over: the day's ledger row would pass
    # Table Storage's 64 KiB a property, and Azure refuses the write that does.
    day = T0.replace(hour=0)
    ledger = DayLedger(resource_id="room-1", day=day.date(), claims=cancelled_claims(400, day))
    with pytest.raises(TransactionTooLarge):
        await adapters.slot_ledger.write_days([(ledger, None)])
    # 160 of them fit (63 KB); ten more would not.
    fits = ledger.model_copy(update={"claims": ledger.claims[:160]})
    await adapters.slot_ledger.write_days([(fits, None)])
    slots = SlotKeeper(adapters.slot_ledger, adapters.bookings, lambda: T0 - timedelta(days=1))

    for n in range(10):
        start = T0 + timedelta(hours=n)
        await slots.claim("room-1", f"live-{n}", TimeRange(start=start, end=start + HOUR))

    claims = await slots.claims_between("room-1", day, day + timedelta(days=1))
    assert len(claims) == MAX_CLAIMS_PER_DAY
    assert [c.booking_id for c in claims if c.holds_time] == [f"live-{n}" for n in range(10)]
    # The oldest cancelled claims made room: 160 + 10 - 140 of them.
    cancelled = {c.booking_id for c in claims if not c.holds_time}
    assert f"{29:064d}" not in cancelled
    assert f"{30:064d}" in cancelled


async def test_a_day_full_of_live_bookings_refuses_one_more_and_says_why(
    adapters: Adapters,
) -> None:
    day = T0.replace(hour=0)
    live = [
        claim.model_copy(update={"status": BookingStatus.CONFIRMED})
        for claim in cancelled_claims(MAX_CLAIMS_PER_DAY, day)
    ]
    await adapters.slot_ledger.write_days(
        [(DayLedger(resource_id="room-1", day=day.date(), claims=live), None)]
    )
    slots = SlotKeeper(adapters.slot_ledger, adapters.bookings, lambda: T0 - timedelta(days=1))
    late = day + timedelta(hours=20)

    with pytest.raises(SlotUnavailable, match="2030-01-07"):
        await slots.claim("room-1", "one-more", TimeRange(start=late, end=late + HOUR))

    # A booking of the full day moves within it: its new time is claimed while its old
    # one still holds, so the day briefly keeps one more.
    moved, evening = live[-1], TimeRange(start=late, end=late + HOUR)
    await slots.claim("room-1", moved.booking_id, evening)
    await slots.release("room-1", moved.booking_id, moved.time_range)
    claims = await slots.claims_between("room-1", day, day + timedelta(days=1))
    assert len(claims) == MAX_CLAIMS_PER_DAY
    assert [c.start for c in claims if c.booking_id == moved.booking_id] == [late]

    # Releasing is never refused, and frees a place.
    first = live[0]
    await slots.release("room-1", first.booking_id, first.time_range)
    later = late + 2 * HOUR
    await slots.claim("room-1", "one-more", TimeRange(start=later, end=later + HOUR))
