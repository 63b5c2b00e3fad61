"""Queue-triggered workers. They let exceptions propagate so the host retries and, after
maxDequeueCount, moves the message to `<queue>-poison`; every handler is idempotent.

Except Graph throttling that outlasts the gateway's retries: Graph allows 4 concurrent
requests per mailbox, and Azure runs each queue function on as many instances as its
queue calls for, so MailboxConcurrency 429s are expected under load, not failures. Such a
message is sent again with the Retry-After as its delay and this delivery succeeds, so
throttling never walks a message toward poison. The same goes for a push that waits for
a create of the same calendar still on its way (`PushDeferred`, for at most the two
minutes an unanswered write is waited for).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable

import azure.functions as func
from pydantic import TypeAdapter

from shared.composition import get_services
from shared.domain.errors import GraphThrottled
from shared.domain.messages import (
    BOOKING_WEBHOOKS_QUEUE,
    SYNC_INBOUND_QUEUE,
    SYNC_OUTBOUND_QUEUE,
    ConnectResource,
    DisconnectResource,
    EventChange,
    EventChanges,
    InboundBatch,
    InboundWork,
    LifecycleEvent,
    OutboundWork,
    PullBusyTime,
    PushBooking,
    ReconcilePage,
    ReconcileResource,
    ResyncResource,
    SubscriptionWork,
    WebhookDelivery,
)
from shared.observability import correlate
from shared.services.push import PushDeferred

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

# Bounds of the delay of a throttled message sent again (Queue Storage takes whole
# seconds); without a Retry-After, 2-10 s, spread so that processes do not return at once.
MAX_THROTTLE_DELAY_SECONDS = 300
_THROTTLE_DELAY_RANGE = (2, 10)
# host.json's visibilityTimeout: the wait before a failed message's next try.
INBOUND_RETRY_DELAY_SECONDS = 5

_outbound = TypeAdapter[OutboundWork](OutboundWork)
_inbound = TypeAdapter[InboundWork](InboundWork)


def _ids(
    work: PushBooking
    | ResyncResource
    | ReconcileResource
    | ReconcilePage
    | ConnectResource
    | PullBusyTime
    | DisconnectResource
    | EventChange
    | EventChanges
    | LifecycleEvent,
) -> dict[str, str]:
    """The correlation ids a queue message carries."""
    if isinstance(work, ReconcilePage):
        return {}
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
    await _later_when_throttled(SYNC_OUTBOUND_QUEUE, msg, _handle_outbound)


async def _handle_outbound(msg: func.QueueMessage) -> None:
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
        elif isinstance(work, ReconcilePage):
            sent = await services.rounds.fan_out_page(work)
            logger.info("reconcile round %s: %d resources sent", work.round_at.isoformat(), sent)
        elif isinstance(work, PullBusyTime):
            logger.info("pull %s of %s from %s", work.pull_id, work.resource_id, work.slice_start)
            await services.pulls.go_on(work)
        elif isinstance(work, DisconnectResource):
            logger.info("remove our events from %s (try %s)", work.mailbox, msg.dequeue_count)
            await services.resources.remove_events(work)
        elif isinstance(work, ReconcileResource):
            report = await services.rounds.run(work)
            logger.info("reconciled %s: %s", work.resource_id, report.model_dump_json())
        else:
            logger.info("resync of %s (%s)", work.resource_id, work.reason)
            await services.reconcile.resync(work.resource_id)


@bp.queue_trigger(arg_name="msg", queue_name=SYNC_INBOUND_QUEUE, connection="AzureWebJobsStorage")
async def sync_inbound(msg: func.QueueMessage) -> None:
    await _later_when_throttled(SYNC_INBOUND_QUEUE, msg, _handle_inbound_message)


async def _later_when_throttled(
    queue_name: str,
    msg: func.QueueMessage,
    handle: Callable[[func.QueueMessage], Awaitable[None]],
) -> None:
    """Run `handle`; when Graph throttled it past the gateway's retries, send the message
    again after the Retry-After instead of failing this delivery; likewise, after its
    delay, a push that waits for a create still on its way (`PushDeferred`, bounded)."""
    try:
        await handle(msg)
    except (GraphThrottled, PushDeferred) as exc:
        if isinstance(exc, GraphThrottled):
            delay, why = throttle_delay(exc.retry_after_seconds), "Graph throttled"
        else:
            delay, why = exc.delay_seconds, "waiting for a write on its way:"
        logger.warning(
            "message %s of %s: %s %s; sending it again in %d s",
            msg.id,
            queue_name,
            why,
            exc.message,
            delay,
        )
        await get_services().ports.queue.send(
            queue_name, msg.get_body().decode("utf-8"), delay_seconds=delay
        )


def throttle_delay(retry_after_seconds: float | None) -> int:
    if retry_after_seconds is None:
        return random.randint(*_THROTTLE_DELAY_RANGE)  # noqa: S311 - spreading, not secrecy
    return min(MAX_THROTTLE_DELAY_SECONDS, max(1, math.ceil(retry_after_seconds)))


async def _handle_inbound_message(msg: func.QueueMessage) -> None:
    work = _inbound.validate_json(msg.get_body())
    if not isinstance(work, InboundBatch):
        await _handle_inbound(work)
        return
    # One POST's subscriptions: separate resources, handled side by side. Each fares as
    # if it had come in a message of its own: what failed goes on as a message of its own
    # (a throttled item after its Retry-After, counting no try; any other after the
    # host's wait between tries, from then on retried and ended in `-poison` alone), and
    # this message completes. Retrying the whole message would repeat the items that were
    # applied, and let one mailbox's lasting failure take the others to `-poison`.
    outcomes = await asyncio.gather(
        *(_handle_inbound(item) for item in work.items), return_exceptions=True
    )
    failed: list[tuple[SubscriptionWork, Exception]] = []
    for item, outcome in zip(work.items, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            failed.append((item, outcome))
    if not failed:
        return
    logger.warning(
        "%d of the %d items of an inbound batch failed (%s); each is sent again on its own",
        len(failed),
        len(work.items),
        ", ".join(type(failure).__name__ for _, failure in failed),
    )
    queue = get_services().ports.queue
    await asyncio.gather(
        *(
            queue.send(SYNC_INBOUND_QUEUE, item, delay_seconds=_delay_after(failure))
            for item, failure in failed
        )
    )


def _delay_after(failure: Exception) -> int:
    """When an item that failed is tried again: after Graph's Retry-After when throttled,
    after its delay when it waits for a create on its way, else after host.json's
    `visibilityTimeout`, as a retried message would be."""
    if isinstance(failure, GraphThrottled):
        return throttle_delay(failure.retry_after_seconds)
    if isinstance(failure, PushDeferred):
        return failure.delay_seconds
    return INBOUND_RETRY_DELAY_SECONDS


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
