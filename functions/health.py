"""GET /api/health (anonymous, terse) and GET /api/health/details (administrators)."""

from __future__ import annotations

import azure.functions as func

from functions.http import anonymous, json_response, requires
from shared.composition import get_services
from shared.domain.callers import Role

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


# Anonymous so that uptime probes need no key: ok or not, and a reason code per
# dependency; a dependency's own words (which can name the app and the tenant) and the
# resources' ids are only in the details and the logs.
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous
async def health(req: func.HttpRequest) -> func.HttpResponse:
    report = await get_services().health.check()
    return json_response(report.summary(), status=200 if report.ok else 503)


@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def health_details(req: func.HttpRequest) -> func.HttpResponse:
    report = await get_services().health.check()
    return json_response(report, status=200 if report.ok else 503)
