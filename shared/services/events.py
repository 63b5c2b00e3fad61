"""Booking events: where each one goes, and the signed webhook that carries it out.

Every event goes to the `booking-events` queue; when a callback URL is configured it is
also queued for a POST signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`), retried with growing delays. The webhook-id is the event's id, so
a receiver drops a repeated delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from shared.domain.bookings import OutboxMessage
from shared.domain.messages import (
    BOOKING_EVENTS_QUEUE,
    BOOKING_WEBHOOKS_QUEUE,
    BookingEvent,
    WebhookDelivery,
)
from shared.ports import MessageQueue

logger = logging.getLogger(__name__)

# Delays before the 2nd, 3rd, ... try (seconds); then the message goes to the poison queue.
RETRY_DELAYS = (5, 30, 120, 600, 1800, 3600)


class WebhookTarget(Protocol):
    async def post(self, url: str, body: str, headers: dict[str, str]) -> int:
        """POST and return the status; raises OSError-like errors when unreachable."""
        ...


class EventRouting:
    """Which queues a booking event is written to."""

    def __init__(self, *, webhooks: bool) -> None:
        self._webhooks = webhooks

    def outbox(self, event: BookingEvent) -> list[OutboxMessage]:
        messages = [OutboxMessage(queue=BOOKING_EVENTS_QUEUE, body=event.model_dump_json())]
        if self._webhooks:
            delivery = WebhookDelivery(event=event)
            messages.append(
                OutboxMessage(queue=BOOKING_WEBHOOKS_QUEUE, body=delivery.model_dump_json())
            )
        return messages

    async def publish(self, queue: MessageQueue, event: BookingEvent) -> None:
        for message in self.outbox(event):
            await queue.send(message.queue, message.body)


class WebhookDeliveryFailed(Exception):
    """The receiver did not take the event after every retry."""


class WebhookSender:
    def __init__(
        self,
        *,
        url: str,
        secret: SecretStr,
        target: WebhookTarget,
        queue: MessageQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self._url = url
        self._signer = Webhook(secret.get_secret_value())
        self._target = target
        self._queue = queue
        self._clock = clock

    async def deliver(self, delivery: WebhookDelivery) -> bool:
        """POST the event once. On failure a retry is queued with a growing delay (the
        return is False); past the last delay WebhookDeliveryFailed is raised, so the
        message ends in the poison queue. Safe to repeat: the webhook-id is stable."""
        event = delivery.event
        body = event.model_dump_json()
        now = self._clock()
        headers = {
            "content-type": "application/json",
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(event.event_id, now, body),
        }
        try:
            status = await self._target.post(self._url, body, headers)
            problem = None if 200 <= status < 300 else f"status {status}"
        except OSError as exc:
            problem = type(exc).__name__
        if problem is None:
            logger.info("booking event %s delivered (try %d)", event.event_id, delivery.attempt)
            return True
        if delivery.attempt > len(RETRY_DELAYS):
            raise WebhookDeliveryFailed(
                f"event {event.event_id}: {problem} after {delivery.attempt} tries"
            )
        delay = RETRY_DELAYS[delivery.attempt - 1]
        logger.warning(
            "booking event %s not delivered (%s); retry in %d s", event.event_id, problem, delay
        )
        retry = delivery.model_copy(update={"attempt": delivery.attempt + 1})
        await self._queue.send(BOOKING_WEBHOOKS_QUEUE, retry, delay_seconds=delay)
        return False
