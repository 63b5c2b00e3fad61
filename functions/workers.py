"""Queue-triggered workers. They let exceptions propagate so the host retries and, after
maxDequeueCount, moves the message to `<queue>-poison`; every handler is idempotent."""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func
from pydantic import TypeAdapter

from shared.composition import get_services
from shared.domain.messages import (
    BOOKING_WEBHOOKS_QUEUE,
    SYNC_INBOUND_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    ConnectResource,
    EventChange,
    EventChanges,
    InboundBatch,
    InboundWork,
    LifecycleEvent,
    OutboundWork,
    PushBooking,
    ReconcileResource,
    ResyncResource,
    WebhookDelivery,
)
from shared.observability import correlate

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

_outbound = TypeAdapter[OutboundWork](OutboundWork)
_inbound = TypeAdapter[InboundWork](InboundWork)


def _ids(
    work: PushBooking
    | ResyncResource
    | ReconcileResource
    | ConnectResource
    | EventChange
    | EventChanges
    | LifecycleEvent,
) -> dict[str, str]:
    """The correlation ids a queue message carries."""
    if isinstance(work, PushBooking):
        return {"booking_id": work.booking_id}
    if isinstance(work, EventChange):
        return {
            "resource_id": work.resource_id,
            "subscription_id": work.subscription_id,
            "event_id": work.event_id,
        }
    if isinstance(work, LifecycleEvent | EventChanges):
        return {"resource_id": work.resource_id, "subscription_id": work.subscription_id}
    return {"resource_id": work.resource_id}


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_OUTBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_outbound(msg: func.QueueMessage) -> None:
    work = _outbound.validate_json(msg.get_body())
    services = get_services()
    with correlate(**_ids(work)):
        if isinstance(work, PushBooking):
            logger.info(
                "push booking %s v%d (try %s)",
                work.booking_id,
                work.booking_version,
                msg.dequeue_count,
            )
            await services.push.push(work)
        elif isinstance(work, ConnectResource):
            logger.info("connect %s to %s", work.resource_id, work.mailbox)
            await services.resources.finish_connect(work)
        elif isinstance(work, ReconcileResource):
            report = await services.reconcile.reconcile(work.resource_id)
            logger.info("reconciled %s: %s", work.resource_id, report.model_dump_json())
        else:
            logger.info("resync of %s (%s)", work.resource_id, work.reason)
            await services.reconcile.resync(work.resource_id)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_INBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_inbound(msg: func.QueueMessage) -> None:
    work = _inbound.validate_json(msg.get_body())
    if not isinstance(work, InboundBatch):
        await _handle_inbound(work)
        return
    # One POST's subscriptions: separate resources, so handled side by side, as separate
    # messages would be. All are tried; then the first failure is raised so the message
    # is retried (every handler is idempotent, so the others repeat harmlessly).
    outcomes = await asyncio.gather(
        *(_handle_inbound(item) for item in work.items), return_exceptions=True
    )
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if len(failures) > 1:
        logger.warning(
            "%d of the %d items of an inbound batch failed; the first is raised: %s",
            len(failures),
            len(work.items),
            ", ".join(type(failure).__name__ for failure in failures),
        )
    if failures:
        raise failures[0]


async def _handle_inbound(work: EventChange | EventChanges | LifecycleEvent) -> None:
    services = get_services()
    with correlate(**_ids(work)):
        if isinstance(work, EventChange | EventChanges):
            await services.inbound.handle_change(work)
        else:
            logger.info("lifecycle %s for %s", work.lifecycle_event, work.resource_id)
            await services.inbound.handle_lifecycle(work)


@bp.queue_trigger(
    arg_name="msg", queue_name=BOOKING_WEBHOOKS_QUEUE, connection="AzureWebJobsStorage"
)
async def booking_webhooks(msg: func.QueueMessage) -> None:
    delivery = WebhookDelivery.model_validate_json(msg.get_body())
    sender = get_services().webhooks
    with correlate(booking_id=delivery.event.booking_id):
        if sender is None:
            logger.warning(
                "booking event %s dropped: no webhook URL is set", delivery.event.event_id
            )
            return
        await sender.deliver(delivery)
