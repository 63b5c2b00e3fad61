"""GET /api/health: storage (and later Graph, resources, subscriptions) at a glance."""

from __future__ import annotations

import azure.functions as func

from functions.http import json_response
from shared.composition import get_adapters
from shared.services.health import check_health

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


# Anonymous so that uptime probes need no key; it reveals counts, never mailbox data.
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    report = await check_health(get_adapters().tables)
    return json_response(report, status=200 if report.ok else 503)
