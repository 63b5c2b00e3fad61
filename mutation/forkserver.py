"""Runs pytest for mutation testing, one fork per mutant, with the libraries preloaded.

Started by mutation.run with the project's interpreter (.venv); reads one JSON request a
line on stdin ({"args": [...], "timeout": s}) and answers one JSON line on stdout
({"code": pytest's exit code or null on timeout, "output": ...}). Third-party modules
(pytest, hypothesis, pydantic, the Azure and Graph SDKs) are imported once, before any
fork; the project's own modules never are, so each fork imports the mutated source
afresh from disk. Only the first ("warm") run, on unmutated code, writes bytecode; the
caller then deletes the mutated module's. A fresh interpreter per mutant spent most of
its time importing.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

# Never preloaded: the project's own code (anything under the scratch copy, too).
OWN = ("shared", "functions", "function_app", "tests", "mutation", "__main__", "conftest")


def _fork_pytest(args: list[str], timeout: float, out_path: str, warm: bool) -> int | None:
    pid = os.fork()
    if pid == 0:  # the child: pytest on the mutated tree, output to a file
        code = 3
        sys.dont_write_bytecode = not warm
        try:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import pytest

            code = int(pytest.main(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def _preload(args: list[str]) -> int:
    """Import the third-party modules a collection of these tests imports."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        import pytest

        pytest.main([*args, "--collect-only", "-q"])
        here = os.getcwd() + os.sep
        names = [
            name
            for name, module in list(sys.modules.items())
            if name.split(".")[0] not in OWN
            and not (getattr(module, "__file__", None) or "").startswith(here)
        ]
        os.write(write, json.dumps(names).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    loaded = 0
    for name in json.loads(b"".join(chunks) or b"[]"):
        try:
            importlib.import_module(name)
            loaded += 1
        except Exception:  # noqa: BLE001, S112 - a module that only imports in context
            continue
    return loaded


def main() -> None:
    sys.dont_write_bytecode = True  # a mutant's bytecode must never be cached
    sys.path.insert(0, os.getcwd())  # the scratch copy of the repository
    preloaded = False
    for line in sys.stdin:
        request: dict[str, Any] = json.loads(line)
        if "loaded" in request:  # which of these modules a fork would inherit
            found = [name for name in request["loaded"] if name in sys.modules]
            sys.stdout.write(json.dumps({"loaded": found}) + "\n")
            sys.stdout.flush()
            continue
        if not preloaded:
            _preload(request["args"])
            preloaded = True
        with tempfile.NamedTemporaryFile(suffix=".out", delete=False) as out:
            path = out.name
        try:
            code = _fork_pytest(
                request["args"], request["timeout"], path, request.get("warm", False)
            )
            with open(path, errors="replace") as f:
                output = f.read()[-20000:]
        finally:
            os.unlink(path)
        sys.stdout.write(json.dumps({"code": code, "output": output}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
