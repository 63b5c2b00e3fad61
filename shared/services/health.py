"""Health: is the service able to do its work right now?"""

from __future__ import annotations

import logging

from shared.domain.base import DomainModel
from shared.domain.errors import StorageUnavailable
from shared.ports import StorageProbe

logger = logging.getLogger(__name__)


class ComponentHealth(DomainModel):
    ok: bool
    detail: str | None = None


class HealthReport(DomainModel):
    ok: bool
    storage: ComponentHealth


async def check_health(storage: StorageProbe) -> HealthReport:
    """Probe each dependency; never raises (a failing probe is reported, not thrown)."""
    try:
        await storage.check()
        storage_health = ComponentHealth(ok=True)
    except StorageUnavailable as exc:
        logger.warning("health: storage unavailable: %s", exc.message)
        storage_health = ComponentHealth(ok=False, detail=exc.message)
    return HealthReport(ok=storage_health.ok, storage=storage_health)
