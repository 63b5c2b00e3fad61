"""Resource API: list, connect/update, read, disconnect, availability, sync log, resync,
and the preview of a resource's event templates."""

from __future__ import annotations

from typing import Annotated, Literal

import azure.functions as func
from pydantic import Field

from functions.http import json_response, parse_body, parse_query, requires, respond, route_id
from shared.composition import get_services
from shared.domain.base import DomainModel
from shared.domain.callers import Role
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, ResyncResource
from shared.domain.resources import ConnectionState, ResourceSettings
from shared.domain.sync_log import PageCursor, SyncOutcome
from shared.observability import correlate
from shared.services.availability import AvailabilityQuery
from shared.services.previews import TemplatePreviewRequest
from shared.services.resources import ResourceView

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


class SyncLogQuery(DomainModel):
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    # Only entries with this outcome.
    outcome: SyncOutcome | None = None
    # The previous page's `nextPage`: the entries after its last one.
    after: PageCursor | None = None


class ResourceList(DomainModel):
    """The answer to GET /api/resources: every resource, ordered by id."""

    value: list[ResourceView]


class DisconnectQuery(DomainModel):
    remove_events: bool = False


class ResyncAccepted(DomainModel):
    """The answer to POST /api/resources/{id}/resync: the resync is queued."""

    resource_id: str
    status: Literal["accepted"] = "accepted"


@bp.route(route="resources", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def list_resources(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        return json_response(ResourceList(value=await get_services().resources.list_all()))

    return await respond(handle)


@bp.route(route="template-preview", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def preview_templates(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        request = parse_body(req, TemplatePreviewRequest)
        return json_response(get_services().resources.preview(request))

    return await respond(handle)


@bp.route(route="resources/{resourceId}", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def put_resource(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        settings = parse_body(req, ResourceSettings)
        with correlate(resource_id=resource_id, mailbox=settings.mailbox):
            view, _ = await get_services().resources.put(resource_id, settings)
            # Connecting (always so for a new resource) goes on in the queue worker; the
            # status shows when it is done. An update of a connected resource is done.
            if view.status.state is ConnectionState.CONNECTING:
                return json_response(view, status=202)
            return json_response(view)

    return await respond(handle)


@bp.route(route="resources/{resourceId}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def get_resource(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        with correlate(resource_id=resource_id):
            return json_response(await get_services().resources.get(resource_id))

    return await respond(handle)


@bp.route(route="resources/{resourceId}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@requires(Role.ADMIN)
async def delete_resource(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        query = parse_query(req, DisconnectQuery, {"removeEvents": "removeEvents"})
        with correlate(resource_id=resource_id):
            view = await get_services().resources.disconnect(
                resource_id, remove_events=query.remove_events
            )
            # Removing our events goes on in the queue worker; the status says when done.
            if view.status.state is ConnectionState.DISCONNECTING:
                return json_response(view, status=202)
            return json_response(view)

    return await respond(handle)


@bp.route(route="resources/{resourceId}/availability", methods=["GET"])
@requires(Role.FRONTEND)
async def get_availability(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        query = parse_query(
            req,
            AvailabilityQuery,
            {"start": "start", "end": "end", "durationMinutes": "durationMinutes"},
        )
        with correlate(resource_id=resource_id):
            availability = await get_services().availability.availability(resource_id, query)
            return json_response(availability)

    return await respond(handle)


@bp.route(
    route="resources/{resourceId}/sync-log", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
@requires(Role.ADMIN)
async def get_sync_log(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        query = parse_query(
            req, SyncLogQuery, {"limit": "limit", "outcome": "outcome", "after": "after"}
        )
        with correlate(resource_id=resource_id):
            page = await get_services().resources.sync_log(
                resource_id, query.limit, outcome=query.outcome, after=query.after
            )
            return json_response(page)

    return await respond(handle)


@bp.route(
    route="resources/{resourceId}/resync", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
@requires(Role.ADMIN)
async def resync_resource(req: func.HttpRequest) -> func.HttpResponse:
    async def handle() -> func.HttpResponse:
        resource_id = route_id(req, "resourceId")
        with correlate(resource_id=resource_id):
            await get_services().resources.get(resource_id)  # 404 for unknown resources
            await get_services().ports.queue.send(
                SYNC_OUTBOUND_QUEUE, ResyncResource(resource_id=resource_id, reason="requested")
            )
            return json_response(ResyncAccepted(resource_id=resource_id), status=202)

    return await respond(handle)
