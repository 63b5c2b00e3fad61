"""The one table of figures a run prints, and `bench/results/latest.json`."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Verdict(StrEnum):
    MET = "met"
    MISSED = "MISSED"
    NONE = "-"  # a figure with no aim
    FAILED = "FAILED"  # the benchmark itself could not run


@dataclass(frozen=True)
class Row:
    figure: str
    result: str
    aim: str = ""
    verdict: Verdict = Verdict.NONE


def judged(figure: str, result: str, aim: str, met: bool) -> Row:
    return Row(figure, result, aim, Verdict.MET if met else Verdict.MISSED)


def ms(seconds: float) -> str:
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f} ms" if milliseconds < 100 else f"{milliseconds:.0f} ms"


def mib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 2**20:.0f} MiB"


HEADERS = ("figure", "result", "aim", "")


def render_table(rows: Sequence[Row]) -> str:
    """Rows as aligned columns under a header line."""
    cells = [HEADERS, *((r.figure, r.result, r.aim, str(r.verdict)) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def load_text(load: tuple[float, float, float] | None) -> str:
    """The 1-minute load average as the reports print it."""
    return "n/a" if load is None else f"{load[0]:.1f}"


def print_measured(title: str, measured: Coroutine[Any, Any, list[Row]]) -> int:
    """Run `measured` (a command line tool's own event loop) and print its rows under
    `title` with the load average at start and at end; the exit status."""
    load_at_start = load_text(load_average())
    rows = asyncio.run(measured)  # noqa: TID251 - a command line tool owns its loop
    sys.stdout.write(
        f"{title}, load average {load_at_start} at start, {load_text(load_average())} at "
        f"end\n{render_table(rows)}\n"
    )
    return 0


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages (other work on the machine skews every figure)."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def write_json(
    path: Path,
    *,
    load: dict[str, tuple[float, float, float] | None],
    profile: dict[str, Any],
    rows: Sequence[Row],
    figures: dict[str, Any],
    started_at: datetime,
    command: str,
) -> None:
    document = {
        "taken_at": started_at.astimezone(UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "load_average": load,
        "profile": profile,
        "rows": [asdict(r) for r in rows],
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
