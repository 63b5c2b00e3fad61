"""Run Cosmic Ray over the core modules and print, per module, how many mutants were
tried, killed, survived, and survived as listed equivalents.

Runs with .venv-mutate's interpreter (Cosmic Ray lives there); the tests run with the
project's .venv. Every module is mutated in a scratch copy of the repository under
.mutate/, never in the work tree, so an interrupted run leaves no mutant behind.
Cosmic Ray's own session files (.mutate/<module>.sqlite) stay for `cr-report`/`cr-html`.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cosmic_ray.plugins
from cosmic_ray.commands import init
from cosmic_ray.mutating import use_mutation
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

from mutation.operators import Provider

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SCRATCH = ROOT / ".mutate"
TEST_PYTHON = ROOT / ".venv" / "bin" / "python"
# Only what the unit tests import; no conftest (its fixtures start Azurite and the
# emulator), no plugins the unit tests do not use: each mutant's run starts in ~2 s.
PYTEST_ARGS = [
    *("-x", "-q", "--no-header", "-p", "no:cacheprovider", "-p", "no:schemathesis"),
    *("-p", "no:anyio", "--noconftest", "-W", "ignore::pytest.PytestAssertRewriteWarning"),
]


@dataclass
class Module:
    name: str
    paths: list[str]
    tests: list[str]
    functions: list[str] = field(default_factory=list)


@dataclass
class Equivalent:
    module: str
    operator: str
    line: str
    reason: str
    mutated: str | None = None


@dataclass
class Tally:
    module: str
    mutants: int = 0
    tried: int = 0
    killed: int = 0
    survived: list[dict[str, Any]] = field(default_factory=list)
    equivalent: list[dict[str, Any]] = field(default_factory=list)
    killed_equivalents: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def score(self) -> float:
        if self.error:
            return 0.0
        counted = self.tried - len(self.equivalent)
        return 100.0 * self.killed / counted if counted else 100.0


def load_config() -> tuple[dict[str, Any], list[Module], list[Equivalent]]:
    config = tomllib.loads((HERE / "config.toml").read_text())
    modules = [Module(**m) for m in config.pop("module")]
    listed = tomllib.loads((HERE / "equivalents.toml").read_text()).get("equivalent", [])
    return config, modules, [Equivalent(**e) for e in listed]


def qualnames(source: str) -> dict[int, str]:
    """Line → qualified name of the innermost def or class around it."""
    names: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                for line in range(first, (child.end_lineno or child.lineno) + 1):
                    names[line] = name
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return names


def in_scope(qualname: str | None, functions: list[str]) -> bool:
    if not functions:
        return True
    return qualname is not None and any(
        qualname == f or qualname.startswith(f"{f}.") for f in functions
    )


def copy_tree(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ("shared", "functions", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("function_app.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)


def pytest_args(module: Module, workdir: Path) -> list[str]:
    present = [t for t in module.tests if (workdir / t.split("::")[0]).exists()]
    return [*PYTEST_ARGS, *present]


class TestRunner:
    """pytest in a fork of a warm interpreter (mutation/forkserver.py), per mutant."""

    def __init__(self, workdir: Path) -> None:
        self._server = subprocess.Popen(  # noqa: S603 - our own command line
            [str(TEST_PYTHON), str(HERE / "forkserver.py")],
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, args: list[str], timeout: float, *, warm: bool = False) -> tuple[int | None, str]:
        assert self._server.stdin is not None
        assert self._server.stdout is not None
        request = {"args": args, "timeout": timeout, "warm": warm}
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        answer = json.loads(self._server.stdout.readline())
        return answer["code"], answer["output"]

    def preloaded(self, modules: list[str]) -> list[str]:
        """Those of `modules` the forks would inherit instead of importing afresh."""
        assert self._server.stdin is not None
        assert self._server.stdout is not None
        self._server.stdin.write(json.dumps({"loaded": modules}) + "\n")
        self._server.stdin.flush()
        found: list[str] = json.loads(self._server.stdout.readline())["loaded"]
        return found

    def close(self) -> None:
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.wait()


def mutate_and_test(runner: TestRunner, item: Any, args: list[str], timeout: float) -> WorkResult:
    """Cosmic Ray's mutate_and_test, with the tests run by `runner`."""
    [mutation] = item.mutations
    operator = cosmic_ray.plugins.get_operator(mutation.operator_name)(**mutation.operator_args)
    with use_mutation(mutation.module_path, operator, mutation.occurrence) as (before, after):
        if after is None:
            return WorkResult(worker_outcome=WorkerOutcome.NO_TEST)
        code, output = runner.run(args, timeout)
    diff = "\n".join(
        difflib.unified_diff(
            before.split("\n"), after.split("\n"), str(mutation.module_path), lineterm="", n=1
        )
    )
    outcome = TestOutcome.SURVIVED if code == 0 else TestOutcome.KILLED  # a timeout kills
    return WorkResult(
        worker_outcome=WorkerOutcome.NORMAL, test_outcome=outcome, output=output, diff=diff
    )


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_module(
    module: Module,
    config: dict[str, Any],
    equivalents: list[Equivalent],
    budget_minutes: float,
) -> Tally:
    tally = Tally(module=module.name)
    workdir = SCRATCH / slug(module.name)
    copy_tree(workdir)
    args = pytest_args(module, workdir)
    os.chdir(workdir)
    runner = TestRunner(workdir)
    # The unmutated code must pass, or every mutant would look killed.
    code, output = runner.run(args, config["timeout_seconds"] * 5, warm=True)
    if code != 0:
        sys.stderr.write(output[-5000:])
        tally.error = "the tests fail on the unmutated code"
        runner.close()
        os.chdir(ROOT)
        return tally
    stale = runner.preloaded([p.removesuffix(".py").replace("/", ".") for p in module.paths])
    if stale:  # every mutant would survive: the forks would run the unmutated code
        tally.error = f"preloaded by the test runner: {', '.join(stale)}"
        runner.close()
        os.chdir(ROOT)
        return tally
    for path in module.paths:  # no stale bytecode may stand in for a mutant
        for cached in (workdir / path).parent.glob(f"__pycache__/{Path(path).stem}.*.pyc"):
            cached.unlink()

    include = re.compile("|".join(f"(?:{op})$" for op in config["operators"]))
    sources = {p: (workdir / p).read_text() for p in module.paths}
    scopes = {p: qualnames(s) for p, s in sources.items()}
    session = SCRATCH / f"{slug(module.name)}.sqlite"
    session.unlink(missing_ok=True)
    with use_db(str(session), WorkDB.Mode.create) as db:
        init(module.paths, db, {})
        chosen = []
        for item in db.pending_work_items:
            [mutation] = item.mutations
            path = str(mutation.module_path)
            line = mutation.start_pos[0]
            if include.match(mutation.operator_name) and in_scope(
                scopes[path].get(line), module.functions
            ):
                chosen.append(item)
            else:
                db.set_result(
                    item.job_id,
                    WorkResult(output="not a chosen mutant", worker_outcome=WorkerOutcome.SKIPPED),
                )
        chosen.sort(key=order)  # job ids are random; the sample must not be
        random.Random(config["seed"]).shuffle(chosen)  # noqa: S311 - sampling, not secrets
        tally.mutants = len(chosen)
        started = time.monotonic()
        deadline = started + budget_minutes * 60
        for item in chosen:
            if time.monotonic() > deadline:
                break
            shutil.rmtree(workdir / ".hypothesis", ignore_errors=True)
            result = mutate_and_test(runner, item, args, config["timeout_seconds"])
            db.set_result(item.job_id, result)
            if result.worker_outcome is WorkerOutcome.NO_TEST:
                continue
            tally.tried += 1
            [mutation] = item.mutations
            described = describe(mutation, sources[str(mutation.module_path)], result.diff or "")
            if result.is_killed:
                tally.killed += 1
                match = find_equivalent(module.name, described, equivalents)
                if match is not None:
                    tally.killed_equivalents.append(f"{match.operator} at `{match.line}`")
                continue
            match = find_equivalent(module.name, described, equivalents)
            if match is not None:
                tally.equivalent.append({**described, "reason": match.reason})
            else:
                tally.survived.append({**described, "diff": result.diff})
        tally.seconds = time.monotonic() - started
    runner.close()
    os.chdir(ROOT)
    return tally


def order(item: Any) -> tuple[str, str, int]:
    [mutation] = item.mutations
    return (str(mutation.module_path), mutation.operator_name, mutation.occurrence)


def describe(mutation: Any, source: str, diff: str) -> dict[str, Any]:
    """Where the mutant is, the line as written and as mutated (its first changed line)."""
    line = mutation.start_pos[0]
    added = [d[1:] for d in diff.splitlines() if d.startswith("+") and not d.startswith("+++")]
    return {
        "path": str(mutation.module_path),
        "line": line,
        "operator": mutation.operator_name,
        "text": source.splitlines()[line - 1].strip(),
        "mutated": added[0].strip() if added else "",
    }


def find_equivalent(
    module: str, described: dict[str, Any], equivalents: list[Equivalent]
) -> Equivalent | None:
    for e in equivalents:
        if (
            e.module == module
            and re.fullmatch(e.operator, described["operator"])
            and e.line.strip() == described["text"]
            and (e.mutated is None or e.mutated.strip() == described["mutated"])
        ):
            return e
    return None


def commit() -> str:
    found = subprocess.run(  # noqa: S603 - fixed command
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(  # noqa: S603 - fixed command
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "shared", "tests"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def print_table(tallies: list[Tally], target: float) -> None:
    header = f"{'module':40} {'mutants':>7} {'tried':>6} {'killed':>6} {'survived':>8} "
    header += f"{'equiv.':>6} {'killed %':>8}"
    print(header)
    for t in tallies:
        mark = "" if t.score >= target else "  < target"
        print(
            f"{t.module:40} {t.mutants:7} {t.tried:6} {t.killed:6} {len(t.survived):8} "
            f"{len(t.equivalent):6} {t.score:7.1f}%{mark}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("modules", nargs="*", help="module names (default: all), e.g. domain/")
    parser.add_argument("--budget-minutes", type=float, help="per module (config: budget_minutes)")
    parser.add_argument("--target", type=float, default=90.0, help="killed %% to reach")
    args = parser.parse_args()
    config, modules, equivalents = load_config()
    if args.modules:
        modules = [m for m in modules if any(m.name.startswith(n) for n in args.modules)]
    cosmic_ray.plugins.OPERATOR_PROVIDERS["bookingsync"] = Provider()
    SCRATCH.mkdir(exist_ok=True)
    budget = args.budget_minutes or config["budget_minutes"]
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = commit()
    tallies = []
    for module in modules:
        tally = run_module(module, config, equivalents, budget)
        tallies.append(tally)
        done = f"{tally.tried}/{tally.mutants} tried in {tally.seconds:.0f} s"
        print(f"{module.name}: {tally.error or done}")
        for s in tally.survived:
            print(f"  survived {s['path']}:{s['line']} {s['operator']}")
            print(f"    - {s['text']}\n    + {s['mutated']}")
        for k in tally.killed_equivalents:
            print(f"  listed as equivalent but killed (remove it): {k}")
        sys.stdout.flush()
    print(f"\nMutation testing at {head}, {at}\n")
    print_table(tallies, args.target)
    report = SCRATCH / "report.json"
    report.write_text(
        json.dumps(
            {
                "commit": head,
                "at": at,
                "modules": [{**t.__dict__, "score": round(t.score, 1)} for t in tallies],
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nsurvivors with their diffs: {report}")
    return 0 if all(t.score >= args.target for t in tallies) else 1
