"""The signed booking-events webhook: Standard Webhooks signature, retries, give-up."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from shared.domain.messages import (
    BOOKING_EVENTS_QUEUE,
    BOOKING_WEBHOOKS_QUEUE,
    BookingEvent,
    BookingEventType,
    EventSource,
    WebhookDelivery,
)
from shared.services.events import (
    RETRY_DELAYS,
    EventRouting,
    WebhookDeliveryFailed,
    WebhookSender,
)
from tests.builders import T0
from tests.fakes import Clock, FakeQueue

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[str, dict[str, str]]] = []

    async def post(self, url: str, body: str, headers: dict[str, str]) -> int:
        self.received.append((body, headers))
        status = self.statuses.pop(0) if self.statuses else 204
        if status == 0:
            raise ConnectionRefusedError("down")
        return status


def event() -> BookingEvent:
    return BookingEvent(
        event_id="bk-1.v2.booking.cancelled",
        type=BookingEventType.CANCELLED,
        booking_id="bk-1",
        occurred_at=T0,
        source=EventSource.OUTLOOK,
    )


def sender(receiver: Receiver, queue: FakeQueue) -> WebhookSender:
    return WebhookSender(
        url="https://bookings.example.com/hooks",
        secret=SecretStr(SECRET),
        target=receiver,
        queue=queue,
        clock=Clock(datetime.now(UTC)),  # receivers refuse timestamps 5 minutes off
    )


async def test_delivery_is_signed_per_standard_webhooks() -> None:
    receiver, queue = Receiver(), FakeQueue()

    assert await sender(receiver, queue).deliver(WebhookDelivery(event=event()))

    [(body, headers)] = receiver.received
    assert headers["webhook-id"] == "bk-1.v2.booking.cancelled"
    # The receiver's check: raises unless the signature matches id, timestamp and body.
    verifier = Webhook(SECRET)
    assert verifier.verify(body, headers) == json.loads(body)
    assert json.loads(body)["type"] == "booking.cancelled"
    assert queue.sent == []


async def test_a_tampered_body_fails_verification() -> None:
    receiver = Receiver()
    await sender(receiver, FakeQueue()).deliver(WebhookDelivery(event=event()))
    [(body, headers)] = receiver.received
    verifier = Webhook(SECRET)

    with pytest.raises(Exception, match="signature"):
        verifier.verify(body.replace("cancelled", "confirmed"), headers)


@pytest.mark.parametrize("status", [500, 429, 0])
async def test_failure_queues_a_delayed_retry(status: int) -> None:
    receiver, queue = Receiver(status), FakeQueue()

    assert not await sender(receiver, queue).deliver(WebhookDelivery(event=event()))

    [body] = queue.bodies(BOOKING_WEBHOOKS_QUEUE)
    retry = WebhookDelivery.model_validate_json(body)
    assert retry.attempt == 2
    assert retry.event == event()


async def test_gives_up_after_the_last_delay() -> None:
    receiver, queue = Receiver(503), FakeQueue()
    last = WebhookDelivery(event=event(), attempt=len(RETRY_DELAYS) + 1)

    with pytest.raises(WebhookDeliveryFailed):
        await sender(receiver, queue).deliver(last)
    assert queue.sent == []


def test_routing_adds_the_webhook_only_when_configured() -> None:
    assert [m.queue for m in EventRouting(webhooks=False).outbox(event())] == [BOOKING_EVENTS_QUEUE]
    assert [m.queue for m in EventRouting(webhooks=True).outbox(event())] == [
        BOOKING_EVENTS_QUEUE,
        BOOKING_WEBHOOKS_QUEUE,
    ]
