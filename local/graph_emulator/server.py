"""Starting the emulator inside a running event loop (tests) or from the CLI."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from local.graph_emulator.app import create_app
from local.graph_emulator.config import EmulatorConfig
from local.graph_emulator.emulator import GraphEmulator
from local.graph_emulator.notifications import Notifier
from local.graph_emulator.state import EmulatorState

logger = logging.getLogger(__name__)


@dataclass
class RunningEmulator:
    """A started emulator. ``state`` gives tests direct access to what it stores."""

    emulator: GraphEmulator
    host: str
    port: int
    _runner: web.AppRunner

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_emulator"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.config.tenant_id}/oauth2/v2.0/token"

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    @property
    def state(self) -> EmulatorState:
        return self.emulator.state

    @property
    def notifier(self) -> Notifier:
        return self.emulator.notifier

    def reset(self, *, keep_startup_mailboxes: bool = True) -> None:
        """Same as ``POST /_emulator/reset``."""
        self.emulator.reset(keep_startup_mailboxes=keep_startup_mailboxes)

    async def close(self) -> None:
        await self._runner.cleanup()
        logger.info("Graph emulator on %s stopped", self.base_url)


async def start_emulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    mailboxes: Iterable[str] = (),
    tenant_id: str | None = None,
    strict_auth: bool | None = None,
    config: EmulatorConfig | None = None,
    **overrides: Any,
) -> RunningEmulator:
    """Start serving on ``host:port`` (0 picks a free port) in the running loop.

    ``overrides`` are EmulatorConfig field names (e.g. ``notification_batch_window_s=0.01``,
    ``notification_retry_delays_s=(0.01, 0.01)``, ``latency_ms=100``); an unknown name
    raises TypeError. ``tenant_id`` and ``strict_auth`` left as None keep the config's.
    """
    base = config or EmulatorConfig()
    changes: dict[str, Any] = dict(overrides)
    changes["startup_mailboxes"] = (*base.startup_mailboxes, *mailboxes)
    if tenant_id is not None:
        changes["tenant_id"] = tenant_id
    if strict_auth is not None:
        changes["strict_auth"] = strict_auth
    emulator = GraphEmulator(replace(base, **changes))
    runner = web.AppRunner(create_app(emulator))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = int(runner.addresses[0][1])
    running = RunningEmulator(emulator=emulator, host=host, port=bound_port, _runner=runner)
    logger.info("Graph emulator listening on %s", running.graph_url)
    return running
