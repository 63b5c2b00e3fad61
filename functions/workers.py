"""Queue-triggered workers. They let exceptions propagate so the host retries and, after
maxDequeueCount, moves the message to `<queue>-poison`; every handler is idempotent."""

from __future__ import annotations

import logging

import azure.functions as func
from pydantic import TypeAdapter

from shared.composition import get_services
from shared.domain.messages import SYNC_OUTBOUND_QUEUE, OutboundWork, PushBooking

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

_outbound = TypeAdapter[OutboundWork](OutboundWork)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_OUTBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_outbound(msg: func.QueueMessage) -> None:
    work = _outbound.validate_json(msg.get_body())
    services = get_services()
    if isinstance(work, PushBooking):
        logger.info(
            "push booking %s v%d (try %s)", work.booking_id, work.booking_version, msg.dequeue_count
        )
        await services.push.push(work)
    else:
        logger.info("outbound work %s not handled yet", work.kind)
