"""GET /api/health: storage and Graph reachable, failing resources, expiring subscriptions."""

from __future__ import annotations

import azure.functions as func

from functions.http import json_response
from shared.composition import get_adapters, get_services
from shared.domain.base import utc_now
from shared.services.health import check_health
from shared.settings import get_settings

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


# Anonymous so that uptime probes need no key; it reveals resource ids, never mailbox data.
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    services = get_services()
    report = await check_health(
        get_adapters().tables,
        services.gateway,
        services.ports.resources,
        clock=utc_now,
        expiring_within=get_settings().subscription_renewal_horizon,
    )
    return json_response(report, status=200 if report.ok else 503)
