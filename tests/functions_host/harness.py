"""What the local host's tests share besides fixtures: waiting, host.json snippets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from local.functions_host import FastMode, RunningHost


class HostStarter(Protocol):
    """The `run_host` fixture: start the sample app with only the named functions."""

    def __call__(
        self,
        *functions: str,
        host_json: dict[str, Any] | None = None,
        fast: FastMode | None = None,
        **options: Any,
    ) -> Awaitable[RunningHost]: ...


def fast_queues(**settings: Any) -> dict[str, Any]:
    """host.json with quick polling and immediate retries, plus `extensions.queues` settings.

    The default one-minute polling back-off would make every queue test slow.
    """
    queues = {"maxPollingInterval": "00:00:00.200", "visibilityTimeout": "00:00:00", **settings}
    return {"extensions": {"queues": queues}}


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, every: float = 0.05
) -> None:
    """Return once `check()` is true; fail the test if it is not within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)
