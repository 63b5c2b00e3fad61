"""Resource API: connect/update, read, disconnect, availability, sync log, resync."""

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
from shared.observability import correlate
from shared.services.availability import AvailabilityQuery

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here


class SyncLogQuery(DomainModel):
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class DisconnectQuery(DomainModel):
    remove_events: bool = False


class ResyncAccepted(DomainModel):
    """The answer to POST /api/resources/{id}/resync: the resync is queued."""

    resource_id: str
    status: Literal["accepted"] = "accepted"


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
        query = parse_query(req, SyncLogQuery, {"limit": "limit"})
        with correlate(resource_id=resource_id):
            entries = await get_services().resources.sync_log(resource_id, query.limit)
            return json_response({"value": [entry.model_dump(mode="json") for entry in entries]})

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
