"""The benchmarks. Each sets up what it needs on the running stack (its own mailboxes and
resources), measures, and returns rows for the table plus the raw figures for the JSON.

All of them are bounded: a fixed number of samples or a fixed duration, and every wait
has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import cold_start
from bench.client import BenchError, StackClient, poll
from bench.context import (
    SEEDED_PER_DAY,
    Context,
    Outcome,
    mailbox_operations,
    quiet,
    routes_delta,
)
from bench.load import Distribution, timed
from bench.profiles import Profile
from bench.report import Row, judged, mib, ms
from bench.webhook import webhook_flood, webhook_load
from bench.world import (
    add_mailbox,
    booking_body,
    connect,
    create_booking,
    event_path,
    graph_time,
    idempotency_key,
    mailbox_address,
    parse_time,
    seed_events,
    spread_events,
    wait_synced,
)
from shared.domain.messages import ReconcileResource
from shared.services.reconcile import GRAPH_CLOCK_SKEW

logger = logging.getLogger(__name__)

MOVE_AIM_P95_S = 2.0
OUTLOOK_MAILBOX_CONCURRENCY = 4
# Azure's front end drops an HTTP request to a Function App after 230 s.
AZURE_HTTP_TIMEOUT_S = 230


def _p50_p95(dist: Distribution) -> str:
    return f"p50 {ms(dist.p50)}  p95 {ms(dist.p95)}"


# --- import time (no stack) ----------------------------------------------------------------


def measure_import(profile: Profile) -> Outcome:
    """`import function_app` in fresh interpreters, and the deployment package's size
    (bench/cold_start.py)."""
    times = cold_start.import_times(profile.import_runs)
    after_worker = cold_start.worker_import_times(profile.import_runs)
    rows = [*cold_start.import_rows(times, after_worker), cold_start.package_row()]
    return Outcome(
        rows,
        {
            "import_s": times.wall_s,
            "import_cpu_s": times.cpu_s,
            "import_after_worker_s": after_worker.wall_s,
            "import_after_worker_cpu_s": after_worker.cpu_s,
        },
    )


# --- booking create ------------------------------------------------------------------------


async def booking_create(ctx: Context) -> Outcome:
    """Sequential `POST /api/bookings` (with an Idempotency-Key) on one resource, each a
    free slot; pushes run in the background as they would."""
    client = ctx.client
    mailbox = mailbox_address("create-room")
    await add_mailbox(client, mailbox)
    await connect(client, "create-room", mailbox)
    latencies = []
    for index in range(ctx.profile.create_samples):
        start = ctx.day0 + timedelta(hours=index)
        body = booking_body(["create-room"], start)
        headers = {"Idempotency-Key": idempotency_key()}
        started = time.perf_counter()
        status, payload = await client.api("POST", "/bookings", body, headers=headers)
        latencies.append(time.perf_counter() - started)
        if status != 201:
            raise BenchError(f"create answered {status}: {payload!r}")
    dist = Distribution.of(latencies)
    row = Row(f"booking create, {dist.count} sequential (1 resource)", _p50_p95(dist))
    return Outcome([row], {"latency": dist.as_ms()})


# --- Graph requests per booking -------------------------------------------------------------


async def requests_per_booking(ctx: Context) -> Outcome:
    """Graph traffic of one push, for panels of 1, 5 and 20 members. Notifications are
    paused meanwhile so the echoes of our writes add nothing: what is counted is the
    push alone, from `POST /api/bookings` until every member shows `synced`."""
    client = ctx.client
    size = max(ctx.profile.panel_sizes)
    resources = [f"panel-{i:02d}" for i in range(size)]
    for resource_id in resources:
        await add_mailbox(client, mailbox_address(resource_id))
        # The push alone: the live slot check's own requests are the "live-check" row.
        await connect(client, resource_id, mailbox_address(resource_id), liveSlotCheck=False)
    await quiet(client)
    outcome = Outcome()
    await client.control("POST", "/notifications/pause")
    try:
        for n, members in enumerate(ctx.profile.panel_sizes):
            samples = []
            for repeat in range(ctx.profile.panel_repeats):
                start = ctx.day0 + timedelta(hours=10 * n + repeat)
                before_http, before = await client.http_counts(), await client.stats()
                created = await create_booking(client, resources[:members], start)
                await wait_synced(client, created["bookingId"])
                await quiet(client, stable_s=0.3)
                after_http, after = await client.http_counts(), await client.stats()
                samples.append(
                    {
                        "http": after_http["total"] - before_http["total"],
                        "batches": after_http.get("batch", 0) - before_http.get("batch", 0),
                        "operations": after["total"] - before["total"],
                        "routes": routes_delta(before, after),
                    }
                )
            http = max(s["http"] for s in samples)
            batches = max(s["batches"] for s in samples)
            operations = max(s["operations"] for s in samples)
            outcome.figures[f"members_{members}"] = samples
            outcome.rows.append(
                judged(
                    f"Graph HTTP requests per booking, {members} member(s)",
                    f"{http} ({batches} $batch, {operations} Graph operations)",
                    "one $batch",
                    http == 1 and batches == 1,
                )
            )
    finally:
        await client.control("POST", "/notifications/resume")
    return outcome


# --- the live slot check ---------------------------------------------------------------------


async def live_slot_check(ctx: Context) -> Outcome:
    """What the live look at a slot adds to `POST /api/bookings`: Graph HTTP requests and
    operations per create (panels of 1, 5 and 20 members, resources with the check on
    against the same panel with it off, each create until synced, notifications paused so
    echoes add nothing) and the create's latency with the check on and off (1 member)."""
    client = ctx.client
    size = max(ctx.profile.panel_sizes)
    panels: dict[bool, list[str]] = {True: [], False: []}
    for live in (True, False):
        for i in range(size):
            resource_id = f"{'live' if live else 'nolive'}-{i:02d}"
            await add_mailbox(client, mailbox_address(resource_id))
            await connect(client, resource_id, mailbox_address(resource_id), liveSlotCheck=live)
            panels[live].append(resource_id)
    await quiet(client)
    outcome = Outcome()
    hour = 0
    await client.control("POST", "/notifications/pause")
    try:
        cost: dict[int, tuple[int, int]] = {}
        for members in ctx.profile.panel_sizes:
            totals: dict[bool, tuple[int, int]] = {}
            for live in (True, False):
                before_http, before = await client.http_counts(), await client.stats()
                for _ in range(ctx.profile.panel_repeats):
                    created = await create_booking(
                        client, panels[live][:members], ctx.day0 + timedelta(hours=hour)
                    )
                    hour += 1
                    await wait_synced(client, created["bookingId"])
                await quiet(client, stable_s=0.3)
                after_http, after = await client.http_counts(), await client.stats()
                totals[live] = (
                    after_http["total"] - before_http["total"],
                    after["total"] - before["total"],
                )
            repeats = ctx.profile.panel_repeats
            cost[members] = (
                round((totals[True][0] - totals[False][0]) / repeats),
                round((totals[True][1] - totals[False][1]) / repeats),
            )
        outcome.figures["extra_per_create"] = {str(k): list(v) for k, v in cost.items()}
        outcome.rows.append(
            judged(
                "live slot check: extra Graph HTTP requests (operations) per create, "
                + " / ".join(f"{m}" for m in cost)
                + " member(s)",
                " / ".join(f"{http} ({ops})" for http, ops in cost.values()),
                "one $batch",
                all(http == 1 for http, _ in cost.values()),
            )
        )
        latencies: dict[bool, Distribution] = {}
        for live in (True, False):
            samples = []
            for _ in range(ctx.profile.live_check_samples):
                body = booking_body(panels[live][:1], ctx.day0 + timedelta(hours=hour))
                hour += 1
                started = time.perf_counter()
                status, payload = await client.api(
                    "POST", "/bookings", body, headers={"Idempotency-Key": idempotency_key()}
                )
                samples.append(time.perf_counter() - started)
                if status != 201:
                    raise BenchError(f"create answered {status}: {payload!r}")
            latencies[live] = Distribution.of(samples)
        outcome.figures["latency_on"] = latencies[True].as_ms()
        outcome.figures["latency_off"] = latencies[False].as_ms()
        outcome.rows.append(
            Row(
                f"booking create with the live slot check on / off, {latencies[True].count}"
                " sequential (1 resource)",
                f"{_p50_p95(latencies[True])} / {_p50_p95(latencies[False])}",
            )
        )
    finally:
        await client.control("POST", "/notifications/resume")
    return outcome


# --- many pushes to one mailbox at once ----------------------------------------------------


async def push_burst(ctx: Context) -> Outcome:
    """Bookings created all at once on one resource (one per day, so their claims do not
    contend): their pushes reach one mailbox together. With Graph answering in 100 ms
    (the emulator's latency switch) they overlap there; Outlook allows 4 requests in
    flight per mailbox, and the app's own limit should keep it there, with no 429."""
    client, count = ctx.client, ctx.profile.burst_bookings
    mailbox = mailbox_address("burst-room")
    await add_mailbox(client, mailbox)
    await connect(client, "burst-room", mailbox)
    await quiet(client)
    before = await client.stats()
    await client.control("POST", "/latency", {"ms": ctx.profile.baseline_latency_ms})
    try:
        started = time.perf_counter()
        created = await asyncio.gather(
            *(
                create_booking(client, ["burst-room"], ctx.day0 + timedelta(days=day, hours=9))
                for day in range(count)
            )
        )
        await asyncio.gather(*(wait_synced(client, c["bookingId"], within_s=60) for c in created))
        elapsed = time.perf_counter() - started
    finally:
        await client.control("POST", "/latency", {"ms": 0})
    after = await client.stats()
    peak = int(after["peakConcurrency"].get(mailbox, 0))
    throttled = int(after["statuses"].get("429", 0)) - int(before["statuses"].get("429", 0))
    row = judged(
        f"peak Graph requests in flight for one mailbox, {count} bookings created at once "
        f"(Graph latency {ctx.profile.baseline_latency_ms} ms)",
        f"{peak}; {throttled} answered 429; all synced {elapsed:.1f} s after the first POST",
        f"≤ {OUTLOOK_MAILBOX_CONCURRENCY}, no 429",
        peak <= OUTLOOK_MAILBOX_CONCURRENCY and throttled == 0,
    )
    figures = {
        "peak_in_flight": peak,
        "throttled_429": throttled,
        "all_synced_s": round(elapsed, 2),
        "routes": routes_delta(before, after),
    }
    return Outcome([row], figures)


# --- Outlook move → booking updated ----------------------------------------------------------


async def outlook_move(ctx: Context) -> Outcome:
    """The Outlook user moves our event (Graph PATCH on the emulator); time until
    `GET /api/bookings/{id}` shows the new start, polled every 20 ms."""
    client, profile = ctx.client, ctx.profile
    mailbox = mailbox_address("mover")
    await add_mailbox(client, mailbox)
    await connect(client, "mover", mailbox, onOutlookMove="reschedule_booking")
    bookings = []
    for index in range(profile.move_samples):
        start = ctx.day0 + timedelta(hours=2 * index)
        created = await create_booking(client, ["mover"], start, minutes=60)
        bookings.append(created["bookingId"])
    views = [await wait_synced(client, booking_id) for booking_id in bookings]
    await quiet(client)

    latencies: list[float] = []
    timeouts = 0
    for view in views:
        booking_id, event_id = view["bookingId"], view["sync"][0]["eventId"]
        new_start = parse_time(view["start"]) + timedelta(hours=1)
        body = {"start": graph_time(new_start), "end": graph_time(new_start + timedelta(hours=1))}
        started = time.perf_counter()
        await client.graph_ok("PATCH", event_path(mailbox, event_id), body)
        deadline = started + profile.move_within_s
        while True:
            current = await client.api_ok("GET", f"/bookings/{booking_id}")
            if parse_time(current["start"]) == new_start:
                latencies.append(time.perf_counter() - started)
                break
            if time.perf_counter() > deadline:
                timeouts += 1
                break
            await asyncio.sleep(profile.move_poll_s)
    if not latencies:
        raise BenchError("no move reached its booking")
    # A move that never arrived counts as slower than any that did.
    dist = Distribution.of(latencies + [float("inf")] * timeouts)
    lost = f", {timeouts} not within {profile.move_within_s:.0f} s" if timeouts else ""
    row = judged(
        f"Outlook move → booking updated, {dist.count} moves",
        _p50_p95(dist) + lost,
        f"p95 ≤ {MOVE_AIM_P95_S:g} s",
        dist.p95 <= MOVE_AIM_P95_S,
    )
    return Outcome([row], {"latency": dist.as_ms(), "timeouts": timeouts})


# --- availability: mirror vs calendarView ----------------------------------------------------


def _free_slots(
    busy: list[tuple[datetime, datetime]], start: datetime, end: datetime, minutes: int
) -> int:
    """What the baseline does with Graph's answer: count free slots of the duration."""
    slots, cursor, step = 0, start, timedelta(minutes=minutes)
    for busy_start, busy_end in sorted(busy):
        while cursor + step <= min(busy_start, end):
            slots, cursor = slots + 1, cursor + step
        cursor = max(cursor, busy_end)
    while cursor + step <= end:
        slots, cursor = slots + 1, cursor + step
    return slots


# The longer window of the availability benchmark: its cost should follow its days.
LONG_WINDOW_DAYS = 30


async def availability(ctx: Context) -> Outcome:
    """`GET /api/resources/{id}/availability` over a week of a calendar with 5,000
    mirrored busy blocks, against a baseline that asks Graph's calendarView on every
    request with 100 ms of Graph latency."""
    client, profile = ctx.client, ctx.profile
    resource_id, mailbox = await ctx.busy_room()
    await quiet(client)
    outcome = Outcome()

    mirrored = await _mirrored_blocks(client, resource_id, ctx)

    window_start = ctx.day0 + timedelta(days=10)
    window_end = window_start + timedelta(days=profile.availability_days)

    def availability_path(days: int) -> str:
        end = window_start + timedelta(days=days)
        query = _q(f"start={window_start.isoformat()}&end={end.isoformat()}")
        return f"/resources/{resource_id}/availability?{query}&durationMinutes=30"

    path = availability_path(profile.availability_days)
    sample = await client.api_ok("GET", path)
    blocks_in_window = len(sample["busy"])
    long_path = availability_path(LONG_WINDOW_DAYS)
    long_blocks = len((await client.api_ok("GET", long_path))["busy"])

    before = mailbox_operations(await client.stats(), mailbox)
    mirror = [
        await timed(lambda: client.api_ok("GET", path)) for _ in range(profile.availability_samples)
    ]
    long_mirror = [
        await timed(lambda: client.api_ok("GET", long_path))
        for _ in range(profile.availability_samples)
    ]
    graph_calls = mailbox_operations(await client.stats(), mailbox) - before

    view = (
        f"/users/{mailbox}/calendarView?startDateTime={_q(window_start.isoformat())}"
        f"&endDateTime={_q(window_end.isoformat())}&$top=1000"
        "&$select=start,end,showAs"
    )

    async def baseline_once() -> None:
        busy: list[tuple[datetime, datetime]] = []
        next_path: str | None = view
        while next_path is not None:
            page = await client.graph_ok("GET", next_path)
            for event in page["value"]:
                if event.get("showAs") != "free":
                    busy.append(
                        (
                            _graph_utc(event["start"]["dateTime"]),
                            _graph_utc(event["end"]["dateTime"]),
                        )
                    )
            link = page.get("@odata.nextLink")
            next_path = link.split("/v1.0", 1)[1] if link else None
        _free_slots(busy, window_start, window_end, 30)

    await client.control("POST", "/latency", {"ms": profile.baseline_latency_ms})
    try:
        baseline = [await timed(baseline_once) for _ in range(profile.baseline_samples)]
    finally:
        await client.control("POST", "/latency", {"ms": 0})

    from_mirror, from_graph = Distribution.of(mirror), Distribution.of(baseline)
    from_mirror_long = Distribution.of(long_mirror)
    ratio_p50 = from_graph.p50 / from_mirror.p50
    ratio_p95 = from_graph.p95 / from_mirror.p95
    long_p50 = from_mirror_long.p50 / from_mirror.p50
    long_p95 = from_mirror_long.p95 / from_mirror.p95
    days = profile.availability_days
    outcome.rows += [
        Row(
            f"availability from the mirror, {days}-day window, {from_mirror.count} requests",
            f"{_p50_p95(from_mirror)}  ({blocks_in_window} busy, {graph_calls} Graph calls "
            "in both windows)",
        ),
        Row(
            f"availability from the mirror, {LONG_WINDOW_DAYS}-day window, "
            f"{from_mirror_long.count} requests",
            f"{_p50_p95(from_mirror_long)}  ({long_blocks} busy)",
        ),
        Row(
            f"availability baseline: calendarView per request, {profile.baseline_latency_ms} "
            f"ms Graph latency, {from_graph.count} requests",
            _p50_p95(from_graph),
        ),
        judged(
            "availability baseline / mirror",
            f"{ratio_p50:.1f}x at p50, {ratio_p95:.1f}x at p95",
            "≥ 10x at p50 and p95",
            ratio_p50 >= 10 and ratio_p95 >= 10,
        ),
        judged(
            f"availability, {LONG_WINDOW_DAYS}-day / {days}-day window",
            f"{long_p50:.1f}x at p50, {long_p95:.1f}x at p95",
            "≤ 2x",
            long_p50 <= 2 and long_p95 <= 2,
        ),
    ]
    outcome.figures = {
        "mirrored_blocks": mirrored,
        "blocks_in_window": blocks_in_window,
        "graph_calls_while_served_from_mirror": graph_calls,
        "mirror": from_mirror.as_ms(),
        "mirror_long_window": from_mirror_long.as_ms(),
        "long_window_days": LONG_WINDOW_DAYS,
        "blocks_in_long_window": long_blocks,
        "baseline": from_graph.as_ms(),
        "ratio_p50": round(ratio_p50, 2),
        "ratio_p95": round(ratio_p95, 2),
    }
    if mirrored != profile.mirror_events:
        raise BenchError(f"{mirrored} blocks mirrored, expected {profile.mirror_events}")
    return outcome


async def _mirrored_blocks(client: StackClient, resource_id: str, ctx: Context) -> int:
    """Calendar busy blocks the API reports over the seeded calendar's days (≤ 62 days a
    request; the last ends where the calendar does, within the booking horizon)."""
    first_day = ctx.day0 - timedelta(days=2)
    last = first_day + timedelta(days=-(-ctx.profile.mirror_events // SEEDED_PER_DAY))
    mirrored = 0
    first = first_day
    while first < last:
        end = min(first + timedelta(days=60), last)
        query = _q(f"start={first.isoformat()}&end={end.isoformat()}")
        answer = await client.api_ok(
            "GET", f"/resources/{resource_id}/availability?{query}&durationMinutes=30"
        )
        mirrored += sum(1 for b in answer["busy"] if b["source"] == "calendar")
        first = end
    return mirrored


async def connect_pull(ctx: Context) -> Outcome:
    """`PUT /api/resources/{id}` on a calendar that already holds 5,000 events: the
    subscription plus the initial pull into the mirror, in one request."""
    client, profile = ctx.client, ctx.profile
    label = f"connect with {profile.mirror_events:,} events (initial pull into the mirror)"
    if not profile.large_calendar_paths:
        return Outcome([Row(label, "--full only (minutes on Azurite)")], {"skipped": True})
    resource_id, mailbox = "pull-room", mailbox_address("pull-room")
    await add_mailbox(client, mailbox)
    await seed_events(client, mailbox, ctx.seeded_calendar())
    started = time.perf_counter()
    await connect(client, resource_id, mailbox)
    elapsed = time.perf_counter() - started
    mirrored = await _mirrored_blocks(client, resource_id, ctx)
    row = judged(
        label,
        f"{elapsed:.1f} s ({mirrored:,} blocks mirrored)",
        f"< {AZURE_HTTP_TIMEOUT_S} s (Azure HTTP timeout)",
        elapsed < AZURE_HTTP_TIMEOUT_S,
    )
    return Outcome([row], {"seconds": round(elapsed, 2), "mirrored_blocks": mirrored})


def _q(text: str) -> str:
    return text.replace("+", "%2B")


def _graph_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text[:26])
    return moment.replace(tzinfo=UTC)


# --- idle reconcile --------------------------------------------------------------------------

UNCONFIRMED = 40


async def _reconcile_once(
    client: StackClient, resource_id: str, mailbox: str, *, within_s: float = 120
) -> dict[str, Any]:
    """Run one reconcile round through the host's admin API; Graph traffic it caused."""
    await quiet(client)
    resource = await client.api_ok("GET", f"/resources/{resource_id}")
    last_sync = resource["status"]["lastSyncAt"]
    before_http, before = await client.http_counts(), await client.stats()
    message = ReconcileResource(resource_id=resource_id, scheduled_at=datetime.now(UTC))
    started = time.perf_counter()
    await client.run_function("sync_outbound", message.model_dump_json())

    async def finished() -> bool:
        current = await client.api_ok("GET", f"/resources/{resource_id}")
        return bool(current["status"]["lastSyncAt"] != last_sync)

    await poll(finished, within_s=within_s, interval_s=0.1, what=f"reconcile of {resource_id}")
    elapsed = time.perf_counter() - started
    await quiet(client, stable_s=0.3)
    after_http, after = await client.http_counts(), await client.stats()
    return {
        "operations": mailbox_operations(after, mailbox) - mailbox_operations(before, mailbox),
        "http": after_http["total"] - before_http["total"],
        "routes": routes_delta(before, after),
        "seconds": round(elapsed, 3),
    }


def _reconcile_row(label: str, first: dict[str, Any], idle: dict[str, Any]) -> Row:
    return Row(
        f"Graph requests per idle reconcile, mailbox with {label}",
        f"{idle['operations']} ({idle['http']} HTTP, {idle['seconds']:.1f} s); first round "
        f"after connect: {first['operations']} ({first['seconds']:.1f} s)",
    )


async def _two_rounds(
    client: StackClient,
    resource_id: str,
    mailbox: str,
    within_s: float,
    *,
    written_at: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The first round after connecting (it starts the calendar's delta sync) and an idle
    round, with nothing changed since. Events of ours last written (at `written_at`, a
    `time.monotonic()`) less than GRAPH_CLOCK_SKEW before a round are read again by it,
    unconfirmed: so with `written_at`, a round once that has passed confirms them, and
    the idle round is the one after it."""
    first = await _reconcile_once(client, resource_id, mailbox, within_s=within_s)
    if written_at is not None:
        left = written_at + GRAPH_CLOCK_SKEW.total_seconds() + 1 - time.monotonic()
        await asyncio.sleep(max(0.0, left))
        await _reconcile_once(client, resource_id, mailbox, within_s=within_s)
    idle = await _reconcile_once(client, resource_id, mailbox, within_s=within_s)
    return {"first": first, "idle": idle}


async def idle_reconcile(ctx: Context) -> Outcome:
    """Reconcile rounds of resources nothing changes on: a small calendar (a few foreign
    events and bookings) and, with --full, the 5,000-event one."""
    client, profile = ctx.client, ctx.profile
    mailbox = mailbox_address("recon-room")
    await add_mailbox(client, mailbox)
    events = spread_events(profile.reconcile_small_events, ctx.day0, per_day=4)
    await seed_events(client, mailbox, events)
    await connect(client, "recon-room", mailbox)
    for index in range(profile.reconcile_small_bookings):
        start = ctx.day0 + timedelta(days=index, hours=20)
        created = await create_booking(client, ["recon-room"], start)
        await wait_synced(client, created["bookingId"])
    written_at = time.monotonic()
    small = await _two_rounds(client, "recon-room", mailbox, within_s=120, written_at=written_at)
    small_label = (
        f"{profile.reconcile_small_events} events + {profile.reconcile_small_bookings} bookings"
    )
    rows = [_reconcile_row(small_label, small["first"], small["idle"])]
    # Events written since the last round are unconfirmed: the next round reads just
    # those, 20 per $batch, besides its delta request.
    for index in range(UNCONFIRMED):
        start = ctx.day0 + timedelta(days=index % 20, hours=21 + index // 20)
        created = await create_booking(client, ["recon-room"], start)
        await wait_synced(client, created["bookingId"])
    checked = await _reconcile_once(client, "recon-room", mailbox, within_s=120)
    rows.append(
        Row(
            f"Graph requests per incremental reconcile with {UNCONFIRMED} unconfirmed events",
            f"{checked['operations']} ({checked['http']} HTTP, {checked['seconds']:.1f} s)",
        )
    )
    large: dict[str, dict[str, Any]] | None = None
    large_label = f"{profile.mirror_events:,} events"
    if profile.large_calendar_paths:
        busy_id, busy_mailbox = await ctx.busy_room()
        large = await _two_rounds(client, busy_id, busy_mailbox, within_s=600)
        rows.append(_reconcile_row(large_label, large["first"], large["idle"]))
    else:
        rows.append(
            Row(
                f"Graph requests per idle reconcile, mailbox with {large_label}",
                "--full only (minutes on Azurite)",
            )
        )
    return Outcome(rows, {"small": small, "unconfirmed": checked, "large": large})


# --- whole-run figures -------------------------------------------------------------------------


async def whole_run(ctx: Context) -> Outcome:
    """Peak Graph requests in flight per mailbox (the emulator's peakConcurrency since
    start), throttled answers, and each host process's peak memory."""
    stats = await ctx.client.stats()
    peaks: dict[str, int] = stats["peakConcurrency"]
    throttled = int(stats["statuses"].get("429", 0)) - ctx.client.own_throttled
    peak_mailbox, peak = max(peaks.items(), key=lambda kv: kv[1], default=("-", 0))
    rss = ctx.client.stack.host_peak_rss_bytes()
    gone = ctx.client.stack.exited() or "no /proc"
    rows = [
        judged(
            "peak Graph requests in flight per mailbox (whole run)",
            f"{peak} ({peak_mailbox}); {throttled} answered 429",
            f"≤ {OUTLOOK_MAILBOX_CONCURRENCY}, no 429",
            peak <= OUTLOOK_MAILBOX_CONCURRENCY and throttled == 0,
        ),
        Row(
            "peak memory of each host process (VmHWM, whole run)",
            ", ".join(
                f"{role} {mib(size) if size is not None else f'n/a ({gone})'}"
                for role, size in rss.items()
            ),
        ),
    ]
    figures = {
        "peak_concurrency": peaks,
        "throttled_429": throttled,
        "graph_operations_total": stats["total"],
        "host_vmhwm_bytes": rss,
    }
    return Outcome(rows, figures)


Scenario = Callable[[Context], Awaitable[Outcome]]

# In run order: the heavy open-loop load last, so its backlog cannot disturb the others.
SCENARIOS: dict[str, Scenario] = {
    "create": booking_create,
    "per-booking": requests_per_booking,
    "live-check": live_slot_check,
    "burst": push_burst,
    "move": outlook_move,
    "availability": availability,
    "reconcile": idle_reconcile,
    "connect-pull": connect_pull,
    "webhook": webhook_load,
    "webhook-flood": webhook_flood,
}
