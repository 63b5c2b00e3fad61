"""Health: can the service do its work right now, and which resources cannot?

Two views: `HealthSummary` for anyone (ok, and a reason code per dependency) and the
whole `HealthReport` for administrators and the logs. A dependency's error text can name
the app, the tenant or a mailbox (Entra's AADSTS messages do), so it is never anonymous.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from shared.domain.base import DomainModel
from shared.domain.errors import DomainError
from shared.domain.resources import ConnectionState
from shared.ports import CalendarGateway, ResourceRepository, StorageProbe

logger = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
LISTED = 50


class ComponentStatus(DomainModel):
    ok: bool
    reason: str | None = None  # a code: the domain error's (graph_access_denied...) or timeout


class ComponentHealth(ComponentStatus):
    detail: str | None = None  # the dependency's own words: administrators only


class ResourcesHealth(DomainModel):
    total: int
    failing: list[str]  # resource ids (at most 50)
    subscriptions_expiring: list[str]  # within the renewal horizon, or missing


class HealthSummary(DomainModel):
    """What GET /api/health tells anyone: ok or not, and why as a code."""

    ok: bool
    storage: ComponentStatus
    graph: ComponentStatus | None = None


class HealthReport(DomainModel):
    ok: bool
    storage: ComponentHealth
    graph: ComponentHealth | None = None
    resources: ResourcesHealth | None = None

    def summary(self) -> HealthSummary:
        graph = _status(self.graph) if self.graph is not None else None
        return HealthSummary(ok=self.ok, storage=_status(self.storage), graph=graph)


def _status(component: ComponentHealth) -> ComponentStatus:
    return ComponentStatus(ok=component.ok, reason=component.reason)


class HealthService:
    """Probes storage, Graph and the resources' state (see `check_health`)."""

    def __init__(
        self,
        storage: StorageProbe,
        gateway: CalendarGateway,
        resources: ResourceRepository,
        *,
        clock: Callable[[], datetime],
        expiring_within: timedelta,
    ) -> None:
        self._storage = storage
        self._gateway = gateway
        self._resources = resources
        self._clock = clock
        self._expiring_within = expiring_within

    async def check(self) -> HealthReport:
        """Never raises; see `check_health`."""
        return await check_health(
            self._storage,
            self._gateway,
            self._resources,
            clock=self._clock,
            expiring_within=self._expiring_within,
        )


async def check_health(
    storage: StorageProbe,
    gateway: CalendarGateway | None = None,
    resources: ResourceRepository | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    expiring_within: timedelta = timedelta(hours=24),
) -> HealthReport:
    """Probe each dependency; never raises (a failing probe is reported, not thrown).
    `ok` means storage and Graph answer; failing resources are listed, not fatal."""
    storage_health = await _probe(storage.check(), "storage")
    graph_health = await _probe(gateway.check_reachable(), "graph") if gateway else None
    resources_health = None
    if resources is not None and storage_health.ok and clock is not None:
        now = clock()
        listed = [stored.value for stored in await resources.list_all()]
        in_scope = [r for r in listed if not r.status.state.is_ending]
        resources_health = ResourcesHealth(
            total=len(listed),
            failing=[r.resource_id for r in in_scope if r.status.state is ConnectionState.FAILING][
                :LISTED
            ],
            subscriptions_expiring=[
                r.resource_id
                for r in in_scope
                if r.settings.active
                and r.settings.direction.value != "none"
                and (
                    r.subscription_expires_at is None
                    or r.subscription_expires_at - now < expiring_within
                )
            ][:LISTED],
        )
    ok = storage_health.ok and (graph_health is None or graph_health.ok)
    return HealthReport(
        ok=ok, storage=storage_health, graph=graph_health, resources=resources_health
    )


async def _probe(check: Awaitable[None], name: str) -> ComponentHealth:
    try:
        await asyncio.wait_for(check, PROBE_SECONDS)
    except DomainError as exc:
        logger.warning("health: %s unavailable: %s", name, exc.message)
        return ComponentHealth(ok=False, reason=exc.code, detail=exc.message)
    except TimeoutError:
        detail = f"no answer in {PROBE_SECONDS:g} s"
        logger.warning("health: %s unavailable: %s", name, detail)
        return ComponentHealth(ok=False, reason="timeout", detail=detail)
    return ComponentHealth(ok=True)
