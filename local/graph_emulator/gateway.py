"""What every Graph request goes through, top-level or inside a batch, in Graph's order:
count it, check the bearer token, admit it against the mailbox's limits, apply an injected
fault or latency, then run the route."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from local.graph_emulator.errors import GraphError, error_body
from local.graph_emulator.router import GraphRequest, GraphResponse

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "(unmatched)"


def _error_response(error: GraphError, request: GraphRequest) -> GraphResponse:
    client_request_id = request.headers.get("client-request-id")
    return GraphResponse(
        status=error.status,
        body=error_body(error.code, error.message, client_request_id),
        headers=dict(error.headers),
    )


async def dispatch(
    emulator: GraphEmulator, request: GraphRequest, *, authenticated: bool = False
) -> GraphResponse:
    """Handle one Graph request. ``authenticated`` skips the token check (batch members
    ride on the batch's token)."""
    state = emulator.state
    match = emulator.router.resolve(request.method, request.segments)
    template = (
        match.route.template
        if match
        else emulator.router.template_for(request.segments) or UNMATCHED_ROUTE
    )
    mailbox_ref = match.route.mailbox_of(emulator, request, match.params) if match else None
    mailbox = state.find_mailbox(mailbox_ref) if mailbox_ref else None
    mailbox_key = mailbox.key if mailbox else (mailbox_ref.lower() if mailbox_ref else None)
    state.stats.count_request(request.method, template, mailbox_key)

    admitted: str | None = None
    try:
        if not authenticated:
            state.tokens.check(request.headers.get("Authorization"), state.config.strict_auth)
        if match is None:
            if template != UNMATCHED_ROUTE:
                raise GraphError(
                    405,
                    "BadRequest",
                    "Specified HTTP method is not allowed for the request target.",
                )
            first = request.segments[0] if request.segments else ""
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{first}'.")
        if mailbox_key is not None and match.route.throttled:
            state.throttle.admit(mailbox_key)
            admitted = mailbox_key
        keys = {mailbox.key, mailbox.user_id} if mailbox else {mailbox_key or ""}
        fault = state.faults.take(keys, request.raw_target, request.method)
        latency_ms = state.settings.latency_ms + (fault.latency_ms if fault else 0)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if fault is not None and fault.status is not None and not fault.after_applying:
            logger.info("fault %s applied to %s %s", fault.id, request.method, template)
            raise fault.to_error()
        response = await match.route.handler(emulator, request, match.params)
        if fault is not None and fault.after_applying:
            logger.info(
                "fault %s: %s %s carried out (%s), its answer lost",
                fault.id,
                request.method,
                template,
                response.status,
            )
            raise fault.to_error()
    except GraphError as error:
        response = _error_response(error, request)
    finally:
        if admitted is not None:
            state.throttle.release(admitted)

    state.stats.count_status(response.status)
    response.headers.setdefault("request-id", str(uuid.uuid4()))
    response.headers.setdefault(
        "client-request-id", request.headers.get("client-request-id") or str(uuid.uuid4())
    )
    return response
