"""Cold start: `import function_app` in fresh processes, the first request a fresh host
process serves, and the size of the deployment package.

`python -m bench.cold_start` prints the three; `make bench` reports the same rows.

- Import: best and median of 5 fresh interpreters timing `import function_app`, with the
  packages of the dev requirements that the lock does not hold made unimportable (as in
  Azure, where only the lock is installed: httpx, for one, imports rich and click when
  they are there). Wall time, and the process's CPU time beside it, since wall time on a
  shared machine follows its load.
- First request: the local stack (Azurite, the Graph emulator, the host processes) is
  started; then `GET /api/health` twice on the HTTP host, which has indexed the app but
  served nothing yet. The first builds the clients (settings, Storage, Graph) and calls
  Storage and Graph; the second shows what a warm instance takes for the same request.
- Package: see bench/package.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata

import aiohttp

from bench.package import describe, locked, measure, normalize
from bench.report import Row, judged, load_average, ms, render_table
from bench.stack import running_stack
from local.azurite import REPO_ROOT

logger = logging.getLogger("bench.cold_start")

IMPORT_RUNS = 5
IMPORT_AIM_S = 1.0

# Run in a fresh interpreter: hide what only the dev requirements install, then time the
# import. argv[1]: comma-separated top-level module names to hide.
IMPORT_PROBE = """
import importlib.abc, resource, sys, time
hidden = frozenset(sys.argv[1].split(","))
class DevOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, DevOnly())
started = time.perf_counter()
import function_app
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(wall, usage.ru_utime + usage.ru_stime)
"""


def dev_only_modules() -> list[str]:
    """Top-level modules that only distributions outside the lock provide."""
    lock = set(locked())
    owners = metadata.packages_distributions()
    return sorted(
        module
        for module, dists in owners.items()
        if module.isidentifier() and not {normalize(d) for d in dists} & lock
    )


@dataclass(frozen=True)
class ImportTimes:
    wall_s: list[float]
    cpu_s: list[float]

    @property
    def best_s(self) -> float:
        return min(self.wall_s)


def import_times(runs: int = IMPORT_RUNS) -> ImportTimes:
    hidden = ",".join(dev_only_modules())
    wall, cpu = [], []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 - this interpreter, a fixed snippet
            [sys.executable, "-c", IMPORT_PROBE, hidden],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        seconds, cpu_seconds = done.stdout.split()
        wall.append(float(seconds))
        cpu.append(float(cpu_seconds))
    return ImportTimes(wall, cpu)


def import_rows(times: ImportTimes) -> list[Row]:
    return [
        judged(
            f"import function_app, fresh process, lock's packages (best of {len(times.wall_s)})",
            f"best {ms(times.best_s)}, median {ms(statistics.median(times.wall_s))}; "
            f"CPU best {ms(min(times.cpu_s))}",
            f"best ≤ {ms(IMPORT_AIM_S)}",
            times.best_s <= IMPORT_AIM_S,
        )
    ]


async def first_requests(base_url: str) -> tuple[float, float]:
    """Seconds of the first and the second `GET /api/health` on a host that served nothing."""
    seconds = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            started = time.perf_counter()
            async with session.get(f"{base_url}/api/health") as response:
                await response.read()
                if response.status >= 500 and response.status != 503:
                    raise RuntimeError(f"/api/health answered {response.status}")
            seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def first_request_row(first: float, second: float) -> Row:
    return Row(
        "first request on a fresh host process (GET /api/health: builds the clients)",
        f"first {ms(first)}, second {ms(second)}",
    )


def package_row() -> Row:
    return Row("deployment package (.funcignore, the lock)", describe(measure()))


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    load = load_average()
    logger.info("import function_app, %d fresh processes", IMPORT_RUNS)
    rows = import_rows(import_times())
    logger.info("starting the local stack")
    with running_stack(REPO_ROOT / "bench" / "results" / "cold-start") as stack:
        # This CLI is its own process, so it owns its event loop.
        first, second = asyncio.run(first_requests(stack.host_url))  # noqa: TID251
    rows.append(first_request_row(first, second))
    rows.append(package_row())
    print(
        f"Cold start, {os.cpu_count()} CPUs, load average "
        f"{'n/a' if load is None else f'{load[0]:.1f}'} at start"
    )
    print(render_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
