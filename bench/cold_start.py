"""Cold start: `import function_app` in fresh processes, the first request a fresh host
process serves, and the size of the deployment package.

`python -m bench.cold_start` prints the three; `make bench` reports the same rows.

- Import: best and median of 5 fresh interpreters timing `import function_app`, with the
  packages of the dev requirements that the lock does not hold made unimportable (as in
  Azure, where only the lock is installed: httpx, for one, imports rich and click when
  they are there). Wall time, and the process's CPU time beside it, since wall time on a
  shared machine follows its load. The app is imported from a copy of what `.funcignore`
  ships, with no byte code written, as from Azure's read-only package: the app's own
  modules are compiled on every start (about a tenth of the time), the packages' are not
  (pip compiled them when it installed them). The aim is judged on this figure.
- The same import after what the Python worker has imported before it indexes the app in
  Azure (`WORKER_PRELOADS`): the app's own share of indexing there.
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
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import aiohttp

from bench.package import describe, locked, measure, normalize, stage
from bench.report import Row, judged, load_average, ms, render_table
from bench.stack import running_stack
from local.azurite import REPO_ROOT

logger = logging.getLogger("bench.cold_start")

IMPORT_RUNS = 5
IMPORT_AIM_S = 1.0

# In Azure the Python worker imports these before it indexes the app: azure-functions
# (its binding registry, loaded before indexing) and, with telemetry on as `infra/` sets
# it (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY), the Azure Monitor distro and its
# exporter, which import azure-core, azure-identity, requests and OpenTelemetry
# (azure-functions-python-worker: WorkerInit/EnvironmentReload run
# initialize_azure_monitor() and load_binding_registry() before load_function_metadata).
WORKER_PRELOADS = (
    "azure.functions",
    "azure.monitor.opentelemetry",
    "azure.monitor.opentelemetry.exporter",
)

# Run in a fresh interpreter: hide what only the dev requirements install, import what the
# worker would have imported already, then time the import. argv[1]: comma-separated
# top-level module names to hide; argv[2]: comma-separated modules to import first.
IMPORT_PROBE = """
import importlib, importlib.abc, resource, sys, time
hidden = frozenset(sys.argv[1].split(","))
class DevOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, DevOnly())
for name in filter(None, sys.argv[2].split(",")):
    importlib.import_module(name)
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
import function_app
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(wall, cpu)
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


def import_times(runs: int = IMPORT_RUNS, preload: Sequence[str] = ()) -> ImportTimes:
    """`import function_app` in `runs` fresh interpreters, from a staged copy of the
    package with no byte code written; `preload` is imported first, untimed."""
    hidden = ",".join(dev_only_modules())
    wall, cpu = [], []
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="booking-sync-import-") as folder:
        stage(Path(folder) / "app")
        for _ in range(runs):
            done = subprocess.run(  # noqa: S603 - this interpreter, a fixed snippet
                [sys.executable, "-c", IMPORT_PROBE, hidden, ",".join(preload)],
                cwd=Path(folder) / "app",
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            seconds, cpu_seconds = done.stdout.split()
            wall.append(float(seconds))
            cpu.append(float(cpu_seconds))
    return ImportTimes(wall, cpu)


def worker_import_times(runs: int = IMPORT_RUNS) -> ImportTimes:
    """The import after what Azure's Python worker imports before indexing."""
    return import_times(runs, WORKER_PRELOADS)


def import_rows(times: ImportTimes, after_worker: ImportTimes | None = None) -> list[Row]:
    rows = [
        judged(
            f"import function_app, fresh process, lock's packages (best of {len(times.wall_s)})",
            _import_figures(times),
            f"best ≤ {ms(IMPORT_AIM_S)}",
            times.best_s <= IMPORT_AIM_S,
        )
    ]
    if after_worker is not None:
        rows.append(
            Row(
                "import function_app after the worker's own imports (azure-functions, "
                "Azure Monitor distro), as in Azure",
                _import_figures(after_worker),
            )
        )
    return rows


def _import_figures(times: ImportTimes) -> str:
    return (
        f"best {ms(times.best_s)}, median {ms(statistics.median(times.wall_s))}; "
        f"CPU best {ms(min(times.cpu_s))}"
    )


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
    rows = import_rows(import_times(), worker_import_times())
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
