"""The lock and the deployment package agree with what the app imports and runs.

- requirements.txt pins every package with hashes, and every top-level import of
  function_app.py, functions/ and shared/ comes from a distribution requirements.in declares.
- In a child process that can import only the lock's distributions (and the standard
  library), the app indexes and builds its Azure clients; with one package taken out of the
  lock the same check fails, so a module needed at runtime but missing from the lock (as
  aiohttp was: only a transitive dependency of an unrelated package) is caught here.
- .funcignore ships exactly the files that run.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from bench.package import is_ignored, locked, normalize, shipped_files

REPO = Path(__file__).resolve().parents[2]
APP_SOURCES = [REPO / "function_app.py", *(REPO / "functions").rglob("*.py"),
               *(REPO / "shared").rglob("*.py")]  # fmt: skip
OWN_PACKAGES = {"function_app", "functions", "shared"}


def declared() -> set[str]:
    """Names requirements.in declares."""
    names = set()
    for line in (REPO / "requirements.in").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            names.add(normalize(requirement.split("==")[0].split(">")[0].split("<")[0]))
    return names


def imported_modules() -> set[str]:
    """Absolute module names imported anywhere in the app's code (function bodies too)."""
    modules = set()
    for path in APP_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
    return {
        name
        for name in modules
        if name.split(".")[0] not in OWN_PACKAGES | set(sys.stdlib_module_names)
    }


def distribution_of(module: str) -> str:
    """The distribution whose RECORD lists the file `module` is loaded from."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not importable here"
    assert spec.origin is not None, f"{module} is a namespace package"
    for name in top_level_owners()[module.split(".")[0]]:
        root = Path(str(metadata.distribution(name).locate_file(""))).resolve()
        origin = Path(spec.origin).resolve()
        if origin.is_relative_to(root) and origin.relative_to(root).as_posix() in record(name):
            return normalize(name)
    raise AssertionError(f"no installed distribution lists {spec.origin}")


@cache
def top_level_owners() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@cache
def record(name: str) -> frozenset[str]:
    """The files a distribution installed (its RECORD), relative to its install folder."""
    return frozenset(str(f) for f in metadata.distribution(name).files or ())


def test_the_lock_pins_every_package_with_hashes() -> None:
    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    entries = [e for e in text.replace("\\\n", " ").splitlines() if e and e[0].isalnum()]

    assert len(entries) == len(locked()) > 50
    assert [e.split()[0] for e in entries if "--hash=sha256:" not in e] == []


def test_every_import_of_the_app_comes_from_a_declared_distribution() -> None:
    needed = {module: distribution_of(module) for module in imported_modules()}

    assert {m: d for m, d in needed.items() if d not in declared()} == {}
    assert set(needed.values()) - set(locked()) == set()
    assert declared() - set(locked()) == set(), "requirements.txt is stale: make lock"


def test_python_dateutil_is_not_shipped() -> None:
    assert "python-dateutil" not in locked()  # the Graph emulator's, not the app's


# --- the app runs from the lock alone --------------------------------------------------------

# Run in a child: a finder that refuses modules installed by distributions outside `allowed`,
# then what the Functions worker and the first invocation do: index the app, build every
# client with the settings infra/ gives it (no request is made).
LOCK_ONLY_SCRIPT = """
import importlib.abc, importlib.machinery, os, site, sys
from importlib import metadata
allowed = set(sys.argv[1].split(","))
def norm(name):
    import re
    return re.sub(r"[-_.]+", "-", name).lower()
site_dirs = tuple(os.path.realpath(d) + os.sep for d in site.getsitepackages())
permitted = set()  # RECORD entries (paths relative to site-packages) of allowed distributions
for dist in metadata.distributions():
    if norm(dist.metadata["Name"]) in allowed:
        permitted |= {str(f) for f in dist.files or ()}
class LockOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        origin = spec and spec.origin and os.path.realpath(spec.origin)
        for site_dir in site_dirs:
            if origin and origin.startswith(site_dir):
                relative = origin[len(site_dir):].replace(os.sep, "/")
                if relative not in permitted:
                    raise ModuleNotFoundError(
                        f"No module named {name!r} in the lock", name=name
                    )
        return None
sys.meta_path.insert(0, LockOnly())
import function_app
from shared.adapters.graph.gateway import build_calendar_gateway
from shared.composition import azure_credential, build_adapters, build_services
from shared.settings import Settings
settings = Settings(
    storage_table_endpoint="https://stexample.table.core.windows.net/",
    storage_queue_endpoint="https://stexample.queue.core.windows.net/",
    azure_client_id="00000000-0000-0000-0000-0000000000c1",
    graph_tenant_id="00000000-0000-0000-0000-000000000001",
    public_base_url="https://func-example.azurewebsites.net",
)
adapters = build_adapters(settings)
gateway = build_calendar_gateway(settings, azure_credential(settings.azure_client_id))
build_services(settings, adapters.ports(), gateway)
print(len(function_app.app.get_functions()))
"""


def run_with_only(distributions: set[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", LOCK_ONLY_SCRIPT, ",".join(sorted(distributions))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_app_indexes_and_builds_its_clients_from_the_lock_alone() -> None:
    result = run_with_only(set(locked()))

    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 10  # functions indexed


def test_a_runtime_import_missing_from_the_lock_fails_the_check() -> None:
    result = run_with_only(set(locked()) - {"aiohttp"})

    assert result.returncode != 0
    assert "No module named 'aiohttp' in the lock" in result.stderr


# --- the deployment package ------------------------------------------------------------------


def test_the_package_ships_only_what_runs() -> None:
    shipped = shipped_files(REPO)
    top = {name.split("/")[0] for name in shipped}

    assert top == {"function_app.py", "host.json", "requirements.txt", "functions", "shared"}
    assert not [name for name in shipped if name.endswith(".pyc")]


def test_the_package_ships_the_console_files() -> None:
    from functions.console import ASSETS, CONTENT_TYPES

    shipped = shipped_files(REPO)
    files = [p for p in ASSETS.iterdir() if p.suffix in CONTENT_TYPES]
    assert {"index.html", "app.js", "console.css"} <= {p.name for p in files}
    assert all(p.relative_to(REPO).as_posix() in shipped for p in files)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("tests/unit/test_x.py", True),
        ("shared/__pycache__/x.cpython-311.pyc", True),
        ("shared/services/local.py", False),  # `/local` is the root folder only
        ("README.md", True),
        ("shared/README.md", False),
        ("requirements.txt", False),
    ],
)
def test_funcignore_patterns(path: str, ignored: bool) -> None:
    from bench.package import ignore_patterns

    assert is_ignored(path, ignore_patterns(REPO)) is ignored
