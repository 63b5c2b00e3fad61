"""Queue Storage sender whose encoding agrees with host.json.

The Functions host decodes queue messages as base64 unless host.json sets
`extensions.queues.messageEncoding` to `none`; host.json keeps the default, so every
message is sent base64-encoded (TextBase64EncodePolicy).
"""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from pydantic import BaseModel

from shared.domain.errors import StorageUnavailable
from shared.domain.messages import QUEUES, poison_queue

logger = logging.getLogger(__name__)


class QueueSender:
    """Sends pydantic models as JSON; creates each queue (and its poison queue) once."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[str, QueueClient] = {}
        self._ready: set[str] = set()

    def _client(self, queue_name: str) -> QueueClient:
        client = self._clients.get(queue_name)
        if client is None:
            client = self._service.get_queue_client(
                queue_name, message_encode_policy=TextBase64EncodePolicy()
            )
            self._clients[queue_name] = client
        return client

    async def ensure_queues(self, names: tuple[str, ...] = QUEUES) -> None:
        """Create the app's queues and their `-poison` queues if missing."""
        for name in names:
            for queue_name in (name, poison_queue(name)):
                await self._ensure(queue_name)

    async def _ensure(self, queue_name: str) -> None:
        if queue_name in self._ready:
            return
        try:
            await self._client(queue_name).create_queue()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise StorageUnavailable(f"queue {queue_name} could not be created") from exc
        self._ready.add(queue_name)

    async def send(
        self, queue_name: str, message: BaseModel | str, *, delay_seconds: int = 0
    ) -> None:
        """Enqueue `message` (a model, or its JSON); raises StorageUnavailable when the
        queue cannot take it."""
        await self._ensure(queue_name)
        text = message if isinstance(message, str) else message.model_dump_json()
        try:
            await self._client(queue_name).send_message(
                text, visibility_timeout=delay_seconds or None
            )
        except AzureError as exc:
            raise StorageUnavailable(f"could not enqueue to {queue_name}") from exc
        logger.debug("enqueued a message to %s", queue_name)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await self._service.close()
