"""`python -m bench` (`make bench`): start the local stack, run every benchmark bounded in
count and time, print one table of figures and write `bench/results/latest.json`.

`--quick` (the default) takes about 2 minutes on 2 cores; `--full` (about 7) runs the
webhook load for 30 s, takes more samples everywhere and times the 5,000-event calendar
paths. Progress goes to stderr, the table to stdout; the host's and the emulator's logs
to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench import cold_start
from bench.client import StackClient
from bench.context import Context, Outcome
from bench.profiles import FULL, PROFILES, QUICK, Profile
from bench.report import Row, Verdict, load_average, load_text, render_table, write_json
from bench.scenarios import SCENARIOS, Scenario, measure_import, whole_run
from bench.stack import Stack, running_stack
from local.azurite import REPO_ROOT

logger = logging.getLogger("bench")

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SCENARIO_TIMEOUT_S = 1800.0
IMPORT = "import"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short runs (the default)")
    size.add_argument("--full", action="store_true", help="30 s of webhook load, more samples")
    parser.add_argument("--rate", type=float, help="webhook notifications per second (200)")
    parser.add_argument("--duration", type=float, help="seconds of webhook load")
    parser.add_argument(
        "--webhook-batch",
        type=int,
        action="append",
        help="notifications per webhook POST, one run each (repeatable; default 10, --full also 1)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[IMPORT, *SCENARIOS],
        help="run only these benchmarks (repeatable)",
    )
    parser.add_argument(
        "--single-host",
        action="store_true",
        help="run every trigger in one host process (by default HTTP triggers run apart "
        "from queue and timer triggers, as on Flex Consumption)",
    )
    parser.add_argument(
        "--single-azurite",
        action="store_true",
        help="run Azurite's Blob, Queue and Table services in one process (by default each "
        "has its own, as Azure's services are separate)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG")
    return parser.parse_args(argv)


def _failed(name: str, error: BaseException, stack: Stack) -> Outcome:
    message = str(error) or type(error).__name__
    gone = stack.exited()
    if gone:
        # Say so: a process of the stack ending mid-run explains any error that follows.
        message = f"{gone}; {message}"
    return Outcome([Row(f"{name}: could not run", message[:160], verdict=Verdict.FAILED)])


async def _run_one(name: str, scenario: Scenario, context: Context) -> Outcome:
    logger.info("running %s", name)
    started = time.perf_counter()
    try:
        outcome = await asyncio.wait_for(scenario(context), timeout=SCENARIO_TIMEOUT_S)
    except Exception as exc:  # one broken benchmark must not lose the others' figures
        logger.exception("benchmark %s failed", name)
        return _failed(name, exc, context.client.stack)
    logger.info("%s done in %.1f s", name, time.perf_counter() - started)
    return outcome


async def run_on_stack(
    stack: Stack, profile: Profile, selected: Sequence[str]
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    # First, before anything has used the app: the first request a fresh host serves.
    first, second = await cold_start.first_requests(stack.host_url)
    outcomes["first-request"] = Outcome(
        [cold_start.first_request_row(first, second)],
        {"first_s": first, "second_s": second},
    )
    async with aiohttp.ClientSession() as session:
        context = Context(client=StackClient(stack, session), profile=profile)
        for name in selected:
            outcomes[name] = await _run_one(name, SCENARIOS[name], context)
        outcomes["whole-run"] = await _run_one("whole-run", whole_run, context)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    base = FULL if args.full else QUICK
    profile = PROFILES[base.name].with_overrides(
        rate=args.rate,
        seconds=args.duration,
        batches=tuple(args.webhook_batch) if args.webhook_batch else None,
    )
    selected = args.only or [IMPORT, *SCENARIOS]
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    load_at_start = load_average()

    outcomes: dict[str, Outcome] = {}
    if IMPORT in selected:
        logger.info("running %s", IMPORT)
        outcomes[IMPORT] = measure_import(profile)
    on_stack = [name for name in selected if name in SCENARIOS]
    with running_stack(
        RESULTS_DIR, single_host=args.single_host, single_azurite=args.single_azurite
    ) as stack:
        # This CLI is its own process, so it owns its event loop.
        outcomes |= asyncio.run(run_on_stack(stack, profile, on_stack))  # noqa: TID251

    rows = [row for outcome in outcomes.values() for row in outcome.rows]
    elapsed = time.perf_counter() - started
    load = {"start": load_at_start, "end": load_average()}
    print(
        f"Booking Sync benchmarks, profile {profile.name}, {elapsed:.0f} s, "
        f"{os.cpu_count()} CPUs, load average {load_text(load['start'])} at start, "
        f"{load_text(load['end'])} at end; "
        + ("one host process" if args.single_host else "HTTP and queue/timer hosts apart")
        + ("; one Azurite process" if args.single_azurite else "; an Azurite process per service")
    )
    print(render_table(rows))
    write_json(
        args.out,
        load=load,
        profile=profile.to_json(),
        rows=rows,
        figures={name: outcome.figures for name, outcome in outcomes.items()},
        started_at=started_at,
        command=shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
    )
    print(f"figures written to {args.out}")
    return 1 if any(row.verdict is Verdict.FAILED for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
