"""Queue triggers: poll a Storage queue and run the function per message, like the host.

What the queue extension does, and this listener does too:
- receive up to `batchSize` messages at once, each leased (made invisible) for the
  processing lease (the host uses 10 minutes) and the lease renewed half-way through
  while the function runs;
- fetch the next batch once no more than `newBatchThreshold` messages are in flight, so
  at most batchSize + newBatchThreshold run at once;
- poll again at once while messages come; when the queue is empty, back off
  exponentially from 100 ms up to `maxPollingInterval`;
- decode the text per `messageEncoding` (base64 by default, or none); a message that is
  not valid base64 goes straight to the poison queue;
- on success delete the message; on failure, once its dequeue count reached
  `maxDequeueCount`, copy its text unchanged to `<queue>-poison` (created if missing)
  and delete it, otherwise make it visible again after `visibilityTimeout`;
- a message is never deleted before its function succeeded, so one in flight at shutdown
  reappears after its lease.
The trigger queue is created at start if missing, so a fresh Azurite needs no setup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

from local.functions_host.app_index import QueueFunction
from local.functions_host.config import (
    HOST_PROCESSING_LEASE_SECONDS,
    MIN_POLLING_INTERVAL_SECONDS,
    HostStartupError,
    QueuesOptions,
)
from local.functions_host.invocation import InvocationOutcome, Invoker

logger = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"


@dataclass
class _Lease:
    message_id: str
    pop_receipt: str


class QueueTriggerListener:
    """Runs one queue-triggered function until `stop()`."""

    def __init__(
        self,
        function: QueueFunction,
        invoker: Invoker,
        options: QueuesOptions,
        *,
        processing_lease: float = HOST_PROCESSING_LEASE_SECONDS,
    ) -> None:
        if processing_lease < 1:
            raise HostStartupError("the processing lease must be at least 1 second")
        self.function = function
        self._invoker = invoker
        self._options = options
        # Storage takes whole seconds; the host truncates its TimeSpans the same way.
        self._lease_seconds = math.ceil(processing_lease)
        self._retry_after_failure_seconds = int(options.visibility_timeout)
        self._threshold = options.effective_new_batch_threshold
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def queue_name(self) -> str:
        return self.function.queue_name

    async def start(self) -> None:
        """Create the queue if needed and start polling. Raises HostStartupError."""
        self._queue = self._client(self.queue_name)
        self._poison = self._client(self.queue_name + POISON_SUFFIX)
        try:
            await self._create_if_missing(self._queue)
        except AzureError as error:
            await self._close_clients()
            raise HostStartupError(
                f"Function '{self.function.function.name}': cannot use queue '{self.queue_name}' "
                f"(connection '{self.function.connection_setting}'): {error}"
            ) from error
        self._poller = asyncio.create_task(self._poll(), name=f"poll {self.queue_name}")

    async def stop(self, grace_period: float) -> None:
        """Stop polling; give messages in flight the grace period, then abandon them."""
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_period
        if self._poller is not None:
            # The poller only waits on a receive or a sleep; it ends as soon as it wakes.
            done, _ = await asyncio.wait({self._poller}, timeout=max(grace_period, 0.1))
            if not done:
                self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._in_flight:
            remaining = max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(set(self._in_flight), timeout=remaining)
            if pending:
                logger.warning(
                    "Queue '%s': %d message(s) still processing after the grace period; "
                    "abandoning them, they reappear when their lease ends",
                    self.queue_name,
                    len(pending),
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        await self._close_clients()

    async def invoke_now(self, text: str) -> InvocationOutcome:
        """Run the function once on `text`, outside the queue (the admin API)."""
        message = _function_message(
            message_id=str(uuid.uuid4()),
            body=text.encode("utf-8"),
            dequeue_count=1,
            insertion_time=datetime.now(UTC),
            expiration_time=None,
            time_next_visible=None,
            pop_receipt=None,
        )
        return await self._invoker.invoke(
            self.function.function, message, reason="Invoked through the admin API"
        )

    async def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL_SECONDS
        while not self._stopping.is_set():
            await self._wait_for_batch_threshold()
            if self._stopping.is_set():
                break
            try:
                messages = await self._receive()
            except Exception:
                # Polling must outlive any one bad poll, as the host's listener does.
                logger.exception("Queue '%s': polling failed", self.queue_name)
                messages = []
            if self._stopping.is_set():
                await self._release_unstarted(messages)
                break
            if messages:
                for message in messages:
                    task = asyncio.create_task(self._process(message), name=f"message {message.id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                delay = MIN_POLLING_INTERVAL_SECONDS
                continue
            await self._sleep(delay)
            delay = min(delay * 2, self._options.max_polling_interval)

    async def _wait_for_batch_threshold(self) -> None:
        while len(self._in_flight) > self._threshold and not self._stopping.is_set():
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({*self._in_flight, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _receive(self) -> list[StorageQueueMessage]:
        assert self._queue is not None
        try:
            pager = self._queue.receive_messages(
                messages_per_page=self._options.batch_size,
                visibility_timeout=self._lease_seconds,
            )
            # One page is one Get Messages call; the pager would otherwise call again.
            async for page in pager.by_page():
                return [message async for message in page]
        except ResourceNotFoundError:
            logger.warning("Queue '%s' disappeared; creating it again", self.queue_name)
            await self._best_effort(self._create_if_missing(self._queue), "create the queue")
        except AzureError as error:
            logger.warning("Polling queue '%s' failed: %s", self.queue_name, error)
        return []

    async def _process(self, message: StorageQueueMessage) -> None:
        lease = _Lease(message.id, message.pop_receipt or "")
        name = self.function.function.name
        dequeue_count = message.dequeue_count or 0
        try:
            if dequeue_count > self._options.max_dequeue_count:
                # Already past the limit (say, a host died mid-run each time): the host
                # moves it without running the function again.
                await self._move_to_poison(message, lease)
                return
            try:
                body = self._decode(message.content)
            except ValueError as error:
                logger.error(
                    "Queue '%s': message %s is not valid %s (%s); moving it to '%s'",
                    self.queue_name,
                    message.id,
                    self._options.message_encoding,
                    error,
                    self.queue_name + POISON_SUFFIX,
                )
                await self._move_to_poison(message, lease, undecodable=True)
                return
            trigger_value = _function_message(
                message_id=message.id,
                body=body,
                dequeue_count=dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            outcome = await self._run_leased(trigger_value, lease)
            await self._complete(message, lease, outcome)
        except AzureError as error:
            # The message stays where it is and comes back when its lease ends.
            logger.warning(
                "Queue '%s': storage call for message %s of '%s' failed: %s",
                self.queue_name,
                message.id,
                name,
                error,
            )
        except Exception:
            logger.exception(
                "Queue '%s': handling message %s of '%s' failed", self.queue_name, message.id, name
            )

    async def _run_leased(
        self, trigger_value: FunctionQueueMessage, lease: _Lease
    ) -> InvocationOutcome:
        finished = asyncio.Event()
        renewal = asyncio.create_task(self._keep_leased(lease, finished))
        try:
            outcome = await self._invoker.invoke(
                self.function.function,
                trigger_value,
                reason=f"New queue message detected on '{self.queue_name}'.",
            )
        except asyncio.CancelledError:
            renewal.cancel()
            raise
        finally:
            finished.set()
        # Let a renewal in flight land first: its new pop receipt is the one that deletes.
        await renewal
        return outcome

    async def _keep_leased(self, lease: _Lease, finished: asyncio.Event) -> None:
        assert self._queue is not None
        interval = self._lease_seconds / 2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), timeout=interval)
            if finished.is_set():
                return
            try:
                updated = await self._queue.update_message(
                    lease.message_id,
                    pop_receipt=lease.pop_receipt,
                    visibility_timeout=self._lease_seconds,
                )
            except HttpResponseError as error:
                if error.status_code in (400, 404):
                    # Pop receipt mismatch or message gone: someone else owns it now.
                    logger.warning(
                        "Queue '%s': lost the lease on message %s: %s",
                        self.queue_name,
                        lease.message_id,
                        error,
                    )
                    return
                logger.warning(
                    "Queue '%s': renewing the lease on message %s failed: %s",
                    self.queue_name,
                    lease.message_id,
                    error,
                )
                continue
            except AzureError as error:
                logger.warning(
                    "Queue '%s': renewing the lease on message %s failed: %s",
                    self.queue_name,
                    lease.message_id,
                    error,
                )
                continue
            if updated.pop_receipt:
                lease.pop_receipt = updated.pop_receipt

    async def _complete(
        self, message: StorageQueueMessage, lease: _Lease, outcome: InvocationOutcome
    ) -> None:
        assert self._queue is not None
        if outcome.succeeded:
            await self._delete(lease)
            return
        dequeue_count = message.dequeue_count or 0
        if dequeue_count >= self._options.max_dequeue_count:
            await self._move_to_poison(message, lease)
            return
        logger.info(
            "Queue '%s': message %s failed (dequeue count %d of %d); retrying in %d s",
            self.queue_name,
            message.id,
            dequeue_count,
            self._options.max_dequeue_count,
            self._retry_after_failure_seconds,
        )
        try:
            await self._queue.update_message(
                lease.message_id,
                pop_receipt=lease.pop_receipt,
                visibility_timeout=self._retry_after_failure_seconds,
            )
        except HttpResponseError as error:
            # Gone or taken over by another receiver: nothing to release.
            logger.debug(
                "Queue '%s': could not release message %s: %s", self.queue_name, message.id, error
            )

    async def _move_to_poison(
        self, message: StorageQueueMessage, lease: _Lease, *, undecodable: bool = False
    ) -> None:
        assert self._poison is not None
        poison_name = self.queue_name + POISON_SUFFIX
        if not undecodable:  # an undecodable one was logged as such
            logger.warning(
                "Message has reached MaxDequeueCount of %d. Moving message %s to queue '%s'.",
                self._options.max_dequeue_count,
                message.id,
                poison_name,
            )
        # The stored text is copied as is, so the poison message keeps the encoding.
        try:
            await self._poison.send_message(message.content)
        except ResourceNotFoundError:
            await self._create_if_missing(self._poison)
            await self._poison.send_message(message.content)
        await self._delete(lease)

    async def _delete(self, lease: _Lease) -> None:
        assert self._queue is not None
        try:
            await self._queue.delete_message(lease.message_id, pop_receipt=lease.pop_receipt)
        except ResourceNotFoundError:
            logger.debug(
                "Queue '%s': message %s was already gone", self.queue_name, lease.message_id
            )

    async def _release_unstarted(self, messages: list[StorageQueueMessage]) -> None:
        # Received while stopping: hand them back now instead of hiding them for a lease.
        assert self._queue is not None
        for message in messages:
            await self._best_effort(
                self._queue.update_message(
                    message.id, pop_receipt=message.pop_receipt, visibility_timeout=0
                ),
                f"release message {message.id}",
            )

    def _decode(self, content: object) -> bytes:
        text = content if isinstance(content, str) else str(content or "")
        if self._options.message_encoding == "none":
            return text.encode("utf-8")
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as error:
            raise ValueError(str(error)) from error

    async def _create_if_missing(self, client: QueueClient) -> None:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()

    async def _best_effort(self, call: Awaitable[object], what: str) -> None:
        try:
            await call
        except AzureError as error:
            logger.warning("Queue '%s': could not %s: %s", self.queue_name, what, error)

    def _client(self, queue_name: str) -> QueueClient:
        # The SDK's default retry waits 15 s and more between tries; a local host with
        # Azurite down should say so within seconds.
        return self.function.connection.queue_client(
            queue_name,
            initial_backoff=1,
            increment_base=2,
            retry_total=3,
        )

    async def _close_clients(self) -> None:
        for client in (self._queue, self._poison):
            if client is not None:
                await client.close()


def _function_message(
    *,
    message_id: str,
    body: bytes,
    dequeue_count: int,
    insertion_time: datetime | None,
    expiration_time: datetime | None,
    time_next_visible: datetime | None,
    pop_receipt: str | None,
) -> FunctionQueueMessage:
    """The worker's QueueMessage, the one that carries dequeue count and times."""
    return FunctionQueueMessage(  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
        id=message_id,
        body=body,
        dequeue_count=dequeue_count,
        insertion_time=insertion_time,
        expiration_time=expiration_time,
        time_next_visible=time_next_visible,
        pop_receipt=pop_receipt,
    )
