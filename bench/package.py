"""The deployment package: which files `.funcignore` ships, and how large the package is.

`python -m bench.package` prints the shipped files and sizes; `--stage DIR` copies the
shipped files into DIR and `--check DIR` imports the app staged there and builds its
clients (both used by `make check-lock`). Standard library only at import, so that a venv
holding just the lock can run it.

Sizes: the upload is a zip of the shipped files (what `azd deploy` / `func publish` send
for a remote build); the built package adds the lock's packages as installed (the remote
build's `pip install -r requirements.txt`), measured from this interpreter's installed copy
of each locked distribution.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCIGNORE = ".funcignore"
LOCK = "requirements.txt"


def ignore_patterns(repo: Path = REPO_ROOT) -> list[str]:
    """The patterns of `.funcignore`, comments and blank lines left out."""
    lines = (repo / FUNCIGNORE).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether `.funcignore` leaves out the file or folder at `relative` (a POSIX path):
    a pattern matches a name at any depth, or with a leading `/` at the root only. This is
    the subset of the gitignore syntax `.funcignore` uses (no negation, no inner `/`)."""
    parts = PurePosixPath(relative).parts
    for pattern in patterns:
        if pattern.startswith("/"):
            if fnmatch.fnmatchcase(parts[0], pattern[1:]):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def shipped_files(repo: Path = REPO_ROOT) -> list[str]:
    """Every file of `repo` that `.funcignore` does not leave out, sorted (POSIX paths)."""
    patterns = ignore_patterns(repo)
    found: list[str] = []
    for folder, dirs, files in os.walk(repo):
        base = Path(folder).relative_to(repo).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not is_ignored(prefix + d, patterns)]
        found += [prefix + f for f in files if not is_ignored(prefix + f, patterns)]
    return sorted(found)


# A pin may name extras (`httpx[http2]==…`): pip needs them in the lock to install a
# dependency that asks for them in --require-hashes mode.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def locked(repo: Path = REPO_ROOT) -> dict[str, str]:
    """The lock's distributions, normalized name → version."""
    pins: dict[str, str] = {}
    for line in (repo / LOCK).read_text(encoding="utf-8").splitlines():
        if pin := _PIN.match(line):
            pins[normalize(pin[1])] = pin[2]
    return pins


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PackageSize:
    files: int
    upload_zip_bytes: int
    app_bytes: int
    dependencies: int
    dependency_bytes: int
    not_installed: tuple[str, ...]  # locked, but absent or another version here

    @property
    def built_bytes(self) -> int:
        return self.app_bytes + self.dependency_bytes


def measure(repo: Path = REPO_ROOT) -> PackageSize:
    files = shipped_files(repo)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(repo / name, name)
    app_bytes = sum((repo / name).stat().st_size for name in files)
    dependency_bytes, missing = 0, []
    for name, version in sorted(locked(repo).items()):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}=={version}")
            continue
        if dist.version != version:
            missing.append(f"{name}=={version} (here {dist.version})")
        for file in dist.files or ():
            path = Path(str(dist.locate_file(file)))
            if path.is_file() and "__pycache__" not in path.parts:
                dependency_bytes += path.stat().st_size
    return PackageSize(
        files=len(files),
        upload_zip_bytes=len(buffer.getvalue()),
        app_bytes=app_bytes,
        dependencies=len(locked(repo)),
        dependency_bytes=dependency_bytes,
        not_installed=tuple(missing),
    )


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def describe(size: PackageSize) -> str:
    text = (
        f"upload {size.files} files, {size.upload_zip_bytes / 1024:.0f} KiB zipped; built "
        f"{mib(size.built_bytes)} installed ({size.dependencies} locked packages "
        f"{mib(size.dependency_bytes)}, .pyc left out)"
    )
    if size.not_installed:
        text += f"; not measured: {', '.join(size.not_installed)}"
    return text


def stage(target: Path, repo: Path = REPO_ROOT) -> None:
    """Copy the shipped files into `target` (replaced if it exists)."""
    shutil.rmtree(target, ignore_errors=True)
    for name in shipped_files(repo):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target / name)


def check_app(folder: Path) -> str:
    """Import the app in `folder` and build every client as in Azure (no request is made):
    what the worker's indexing and the first invocation need from the installed packages."""
    sys.path.insert(0, str(folder))
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
    return f"{len(function_app.app.get_functions())} functions indexed, clients built"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.package", description=__doc__)
    parser.add_argument("--stage", type=Path, help="copy the shipped files into this folder")
    parser.add_argument("--check", type=Path, help="import the staged app in this folder")
    args = parser.parse_args(argv)
    if args.stage is not None:
        stage(args.stage)
        return 0
    if args.check is not None:
        print(check_app(args.check))
        return 0
    for name in shipped_files():
        print(name)
    print(describe(measure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
