"""Outbound calls to subscribers: the validation handshake, change notifications and
lifecycle notifications.

Delivery never blocks the write that caused it: notifications are buffered per URL for a
short window (Graph batches too), then POSTed by a background task with bounded retries.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from local.graph_emulator.state import EmulatorState, Mailbox, SubscriptionRecord
from local.graph_emulator.timezones import format_timestamp, utc_now

logger = logging.getLogger(__name__)

CHANGE = "change"
LIFECYCLE = "lifecycle"
LIFECYCLE_EVENTS = ("missed", "subscriptionRemoved", "reauthorizationRequired")
_DELIVERY_LOG_SIZE = 1000

_Key = tuple[str, str]  # (kind, url)


def _with_query(url: str, name: str, value: str) -> URL:
    separator = "&" if "?" in url else "?"
    return URL(f"{url}{separator}{name}={quote(value, safe='')}", encoded=True)


class Notifier:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.config = state.config
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=_DELIVERY_LOG_SIZE)
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[_Key, list[dict[str, Any]]] = {}
        self._timers: dict[_Key, asyncio.TimerHandle] = {}
        self._delayed: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._quiet = asyncio.Event()
        self._quiet.set()

    def _update_quiet(self, *_: object) -> None:
        if self._pending or self._delayed or self._tasks:
            self._quiet.clear()
        else:
            self._quiet.set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    # Validation ------------------------------------------------------------------------

    async def validate_endpoint(self, url: str) -> str | None:
        """POST ``?validationToken=`` to the URL. None when the subscriber answered 200,
        text/plain and the exact token; otherwise the reason Graph gives."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        self.state.stats.validations += 1
        failed = "Subscription validation request failed."
        try:
            async with self._client().post(
                _with_query(url, "validationToken", token),
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self.config.validation_timeout_s),
            ) as response:
                text = await response.text()
                content_type = response.headers.get("Content-Type", "")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("validation of %s failed: %s", url, type(exc).__name__)
            return f"{failed} Notification endpoint must respond with 200 OK to validation request."
        if status != 200:
            return (
                f"{failed} Notification endpoint must respond with 200 OK to validation "
                f"request. HTTP status code: {status}."
            )
        if not content_type.lower().startswith("text/plain"):
            return f"{failed} Notification endpoint must respond with content type text/plain."
        if text != token:
            return f"{failed} Response must exactly match validationToken query parameter."
        return None

    # Publishing ------------------------------------------------------------------------

    def publish_change(
        self, mailbox: Mailbox, event_id: str, change_type: str, change_key: str
    ) -> None:
        """Queue a change notification for each live subscription on the mailbox."""
        subscriptions = [
            s
            for s in self.state.active_subscriptions(utc_now())
            if s.mailbox_key == mailbox.key and change_type in s.change_types
        ]
        if not subscriptions:
            return
        if self.state.settings.paused:
            self.state.stats.notifications_dropped += len(subscriptions)
            logger.info("notifications paused: dropped %s %s", change_type, event_id)
            return
        for subscription in subscriptions:
            kinds = [change_type]
            # Graph often follows a create with an update, and repeats updates.
            if (
                self.state.settings.duplicates
                and "updated" in subscription.change_types
                and change_type in ("created", "updated")
            ):
                kinds.append("updated")
            for kind in kinds:
                item = self._change_item(subscription, mailbox, event_id, kind, change_key)
                self._schedule((CHANGE, subscription.notification_url), item)

    def publish_lifecycle(self, subscription: SubscriptionRecord, event: str) -> bool:
        """Queue a lifecycle notification; False when the subscription has no lifecycle URL."""
        if not subscription.lifecycle_url:
            return False
        item = {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": format_timestamp(subscription.expiration),
            "tenantId": self.config.tenant_id,
            "clientState": subscription.client_state,
            "lifecycleEvent": event,
        }
        self._enqueue((LIFECYCLE, subscription.lifecycle_url), item)
        return True

    def _change_item(
        self,
        subscription: SubscriptionRecord,
        mailbox: Mailbox,
        event_id: str,
        change_type: str,
        change_key: str,
    ) -> dict[str, Any]:
        resource = f"Users/{mailbox.user_id}/Events/{event_id}"
        return {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": format_timestamp(subscription.expiration),
            "changeType": change_type,
            "resource": resource,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": resource,
                "@odata.etag": f'W/"{change_key}"',
                "id": event_id,
            },
            "clientState": subscription.client_state,
            "tenantId": self.config.tenant_id,
        }

    def _schedule(self, key: _Key, item: dict[str, Any]) -> None:
        delay = self.state.settings.notification_delay_s
        if delay <= 0:
            self._enqueue(key, item)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._delayed.discard(handle)
            self._enqueue(key, item)

        handle = loop.call_later(delay, fire)
        self._delayed.add(handle)
        self._update_quiet()

    def _enqueue(self, key: _Key, item: dict[str, Any]) -> None:
        self._pending.setdefault(key, []).append(item)
        self._update_quiet()
        if key not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(
                self.config.notification_batch_window_s, self._flush, key
            )

    def _flush(self, key: _Key) -> None:
        self._timers.pop(key, None)
        items = self._pending.pop(key, [])
        if key[0] == CHANGE and self.state.settings.paused:
            self.state.stats.notifications_dropped += len(items)
            items = []
        if items:
            task = asyncio.get_running_loop().create_task(self._deliver(key, items))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self._update_quiet()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._update_quiet()

    # Delivery --------------------------------------------------------------------------

    async def _post(self, url: str, payload: dict[str, Any]) -> int | None:
        try:
            async with self._client().post(
                URL(url, encoded=True),
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self.config.notification_timeout_s),
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("delivery to %s failed: %s", url, type(exc).__name__)
            return None

    async def _deliver(self, key: _Key, items: list[dict[str, Any]]) -> None:
        kind, url = key
        payload = {"value": items}
        attempts = 0
        status: int | None = None
        for attempt, delay in enumerate((*self.config.notification_retry_delays_s, None), 1):
            attempts = attempt
            status = await self._post(url, payload)
            if status is not None and 200 <= status < 300:
                break
            if delay is not None:
                await asyncio.sleep(delay)
        delivered = status is not None and 200 <= status < 300
        self.deliveries.append(
            {
                "kind": kind,
                "url": url,
                "status": status,
                "attempts": attempts,
                "delivered": delivered,
                "at": format_timestamp(utc_now()),
                "payload": payload,
            }
        )
        stats = self.state.stats
        if delivered:
            stats.notification_posts += 1
            if kind == CHANGE:
                stats.notifications_sent += len(items)
            else:
                stats.lifecycle_sent += len(items)
            return
        logger.warning(
            "gave up delivering %s %s notifications to %s after %s attempts",
            len(items),
            kind,
            url,
            attempts,
        )
        if kind != CHANGE:
            return
        stats.notifications_failed += len(items)
        if self.config.missed_on_give_up:
            now = utc_now()
            for sub_id in dict.fromkeys(item["subscriptionId"] for item in items):
                subscription = self.state.find_subscription(sub_id, now)
                if subscription is not None:
                    self.publish_lifecycle(subscription, "missed")

    # Housekeeping ----------------------------------------------------------------------

    def reset(self) -> None:
        """Drop everything queued or in flight (used between tests)."""
        for handle in [*self._timers.values(), *self._delayed]:
            handle.cancel()
        self._timers.clear()
        self._delayed.clear()
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        self.deliveries.clear()
        self._update_quiet()

    async def idle(self) -> None:
        """Wait until nothing is queued or being delivered (for tests; bound it with
        ``asyncio.timeout``)."""
        await self._quiet.wait()

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.reset()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
