"""Queue-triggered workers. They let exceptions propagate so the host retries and, after
maxDequeueCount, moves the message to `<queue>-poison`; every handler is idempotent."""

from __future__ import annotations

import logging

import azure.functions as func
from pydantic import TypeAdapter

from shared.composition import get_services
from shared.domain.messages import (
    SYNC_INBOUND_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    EventChange,
    InboundWork,
    OutboundWork,
    PushBooking,
    ReconcileResource,
)

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

_outbound = TypeAdapter[OutboundWork](OutboundWork)
_inbound = TypeAdapter[InboundWork](InboundWork)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_OUTBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_outbound(msg: func.QueueMessage) -> None:
    work = _outbound.validate_json(msg.get_body())
    services = get_services()
    if isinstance(work, PushBooking):
        logger.info(
            "push booking %s v%d (try %s)", work.booking_id, work.booking_version, msg.dequeue_count
        )
        await services.push.push(work)
    elif isinstance(work, ReconcileResource):
        report = await services.reconcile.reconcile(work.resource_id)
        logger.info("reconciled %s: %s", work.resource_id, report.model_dump_json())
    else:
        logger.info("resync of %s (%s)", work.resource_id, work.reason)
        await services.reconcile.resync(work.resource_id)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_INBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_inbound(msg: func.QueueMessage) -> None:
    work = _inbound.validate_json(msg.get_body())
    services = get_services()
    if isinstance(work, EventChange):
        await services.inbound.handle_change(work)
    else:
        logger.info("lifecycle %s for %s", work.lifecycle_event, work.resource_id)
        await services.inbound.handle_lifecycle(work)
