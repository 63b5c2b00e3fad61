"""Typed access to Azure Table Storage: one place where models become entities.

Every repository stores its pydantic model as JSON in the `Data` property, plus a few
typed "index" properties that queries filter on. Keys are encoded so that any id (Graph
event ids contain `/` and `+`) is a legal PartitionKey/RowKey.

Rules kept here, because Azurite does not enforce them and Azure does:
- a string property holds at most 64 KiB (as UTF-16), an entity at most 1 MiB;
- a transaction touches one partition and at most 100 entities;
- an update is conditional on the ETag it was read with (412 → ConcurrencyConflict);
- an insert is an insert-if-absent claim (409 → AlreadyExists).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient
from pydantic import BaseModel

from shared.domain.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    NotFound,
    StorageUnavailable,
    TransactionTooLarge,
)
from shared.ports import Stored

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_TRANSACTION_ENTITIES = 100
DATA_PROPERTY = "Data"
# Characters Table Storage forbids in keys, plus % so the encoding stays reversible.
_KEY_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "/\\#?%")


def encode_key(value: str) -> str:
    """A legal PartitionKey/RowKey for any string (percent-encodes / \\ # ? % and controls)."""
    return quote(value, safe=_KEY_SAFE)


def decode_key(value: str) -> str:
    return unquote(value)


_CREATE_ATTEMPTS = 3
# Table Storage's limits (learn.microsoft.com/azure/storage/tables/scalability-targets):
# a String property is UTF-16 of at most 64 KiB, an entity at most 1 MiB.
MAX_STRING_PROPERTY_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024


def check_entity_size(entity: Mapping[str, Any]) -> None:
    """Raise TransactionTooLarge for an entity Azure would refuse for its size (Azurite
    takes it), naming the property; strings are counted as the UTF-16 Azure keeps."""
    total = 0
    for name, value in entity.items():
        if not isinstance(value, str):
            continue
        size = len(value.encode("utf-16-le"))
        if size > MAX_STRING_PROPERTY_BYTES:
            raise TransactionTooLarge(
                f"property {name} of {entity.get('PartitionKey')}/{entity.get('RowKey')} "
                f"would hold {size} bytes; Table Storage takes at most 64 KiB"
            )
        total += size
    if total > MAX_ENTITY_BYTES:
        raise TransactionTooLarge(
            f"entity {entity.get('PartitionKey')}/{entity.get('RowKey')} would hold "
            f"{total} bytes; Table Storage takes at most 1 MiB"
        )


class TableStore:
    """The process's TableServiceClient and the tables it has made sure exist."""

    def __init__(self, service: TableServiceClient, *, prefix: str) -> None:
        self._service = service
        self._prefix = prefix
        self._ready: set[str] = set()
        # A table's client is built once: each costs a pipeline of policies (about 0.13 ms
        # of CPU), and it shares the service's transport and connections anyway.
        self._clients: dict[str, TableClient] = {}

    def table_name(self, kind: str) -> str:
        return f"{self._prefix}{kind}"

    async def table(self, kind: str) -> TableClient:
        """The client of table `<prefix><kind>` (one per table and process), creating the
        table on first use."""
        name = self.table_name(kind)
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._service.get_table_client(name)
        if name not in self._ready:
            for attempt in range(1, _CREATE_ATTEMPTS + 1):
                try:
                    await self._service.create_table_if_not_exists(name)
                    break
                except (ServiceRequestError, ServiceResponseError) as exc:
                    # A pooled connection the server closed as we reused it: the SDK does
                    # not repeat a POST, but creating a table if absent is safe to repeat.
                    if attempt == _CREATE_ATTEMPTS:
                        raise StorageUnavailable(
                            f"table {name} could not be created: {exc}"
                        ) from exc
                except AzureError as exc:
                    raise StorageUnavailable(f"table {name} could not be created: {exc}") from exc
            self._ready.add(name)
        return client

    async def check(self) -> None:
        """Raises StorageUnavailable unless the table service answers."""
        try:
            # A probe answers fast or not at all: no retries, a short connect timeout.
            await self._service.get_service_properties(retry_total=0, connection_timeout=3)
        except AzureError as exc:
            raise StorageUnavailable(f"table storage did not answer: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._service.close()


Operation = Literal["create", "update", "upsert", "delete"]


@dataclass
class Transaction:
    """Operations to commit atomically; checked against Azure's rules before sending."""

    operations: list[tuple[Operation, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def create(self, entity: dict[str, Any]) -> None:
        self.operations.append(("create", entity, {}))

    def update(self, entity: dict[str, Any], etag: str) -> None:
        self.operations.append(
            (
                "update",
                entity,
                {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": _IF_NOT_MODIFIED},
            )
        )

    def upsert(self, entity: dict[str, Any]) -> None:
        self.operations.append(("upsert", entity, {"mode": UpdateMode.REPLACE}))

    def delete(self, partition_key: str, row_key: str, etag: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": _IF_NOT_MODIFIED}
        self.operations.append(
            ("delete", {"PartitionKey": partition_key, "RowKey": row_key}, kwargs)
        )

    def validate(self) -> None:
        if len(self.operations) > MAX_TRANSACTION_ENTITIES:
            raise TransactionTooLarge(
                f"a transaction holds at most {MAX_TRANSACTION_ENTITIES} entities, "
                f"not {len(self.operations)}"
            )
        partitions = {entity["PartitionKey"] for _, entity, _ in self.operations}
        if len(partitions) > 1:
            raise TransactionTooLarge("a transaction must stay within one partition")
        keys = [(entity["PartitionKey"], entity["RowKey"]) for _, entity, _ in self.operations]
        if len(set(keys)) != len(keys):
            raise TransactionTooLarge("a transaction may touch each entity only once")
        for _, entity, _ in self.operations:
            check_entity_size(entity)


_IF_NOT_MODIFIED = MatchConditions.IfNotModified


def translate_error(exc: AzureError, what: str) -> Exception:
    """The domain error for an SDK error (callers `raise translate_error(...) from exc`)."""
    if isinstance(exc, ResourceModifiedError):
        return ConcurrencyConflict(f"{what} changed since it was read")
    if isinstance(exc, TableTransactionError):
        status = exc.status_code
        if status == 412:
            return ConcurrencyConflict(f"{what} changed since it was read")
        if status == 409:
            return AlreadyExists(f"{what} already exists")
        if status == 404:
            return NotFound(f"{what} does not exist")
    if isinstance(exc, ResourceExistsError):
        return AlreadyExists(f"{what} already exists")
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(f"{what} does not exist")
    if isinstance(exc, HttpResponseError) and exc.status_code == 412:
        return ConcurrencyConflict(f"{what} changed since it was read")
    return StorageUnavailable(f"storage failed on {what}: {type(exc).__name__}")


class EntityTable(Generic[M]):
    """One model kind in one table.

    Subclasses say how a model maps to keys (`keys`) and which typed properties it
    carries besides its JSON (`index_properties`).
    """

    kind: str
    model: type[M]
    # Passed to model_dump_json, e.g. to reveal secrets that must be stored.
    dump_context: ClassVar[dict[str, Any] | None] = None

    def __init__(self, store: TableStore) -> None:
        self._store = store

    # -- mapping -------------------------------------------------------------------
    def keys(self, value: M) -> tuple[str, str]:
        raise NotImplementedError

    def index_properties(self, value: M) -> Mapping[str, Any]:
        return {}

    def to_entity(self, value: M) -> dict[str, Any]:
        partition_key, row_key = self.keys(value)
        return {
            "PartitionKey": encode_key(partition_key),
            "RowKey": encode_key(row_key),
            DATA_PROPERTY: value.model_dump_json(context=self.dump_context),
            **self.index_properties(value),
        }

    def _sized_entity(self, value: M) -> dict[str, Any]:
        """The entity of a single-entity write, refused as Azure would for its size (a
        transaction checks its entities when it is committed)."""
        entity = self.to_entity(value)
        check_entity_size(entity)
        return entity

    def from_entity(self, entity: Mapping[str, Any]) -> Stored[M]:
        value = self.model.model_validate_json(entity[DATA_PROPERTY])
        metadata: Mapping[str, Any] = getattr(entity, "metadata", {})
        return Stored(value=value, etag=str(metadata.get("etag", "")))

    # -- operations ----------------------------------------------------------------
    async def _client(self) -> TableClient:
        return await self._store.table(self.kind)

    async def get_by_keys(self, partition_key: str, row_key: str) -> Stored[M] | None:
        client = await self._client()
        try:
            entity = await client.get_entity(encode_key(partition_key), encode_key(row_key))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise translate_error(exc, f"{self.kind} {partition_key}/{row_key}") from exc
        return self.from_entity(entity)

    async def get_properties(
        self, partition_key: str, row_key: str, select: list[str]
    ) -> Mapping[str, Any] | None:
        """The `select`ed properties of any row of this kind's table (an index row, say),
        or None when there is no such row."""
        client = await self._client()
        try:
            return await client.get_entity(
                encode_key(partition_key), encode_key(row_key), select=select
            )
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise translate_error(exc, f"{self.kind} {partition_key}/{row_key}") from exc

    async def insert(self, value: M) -> Stored[M]:
        """Insert if absent; raises AlreadyExists when the keys are taken."""
        client = await self._client()
        try:
            metadata = await client.create_entity(self._sized_entity(value))
        except AzureError as exc:
            raise translate_error(exc, self._describe(value)) from exc
        return Stored(value=value, etag=str(metadata["etag"]))

    async def replace(self, value: M, etag: str) -> Stored[M]:
        """Replace under the ETag it was read with; raises ConcurrencyConflict otherwise."""
        client = await self._client()
        try:
            metadata = await client.update_entity(
                self._sized_entity(value),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=_IF_NOT_MODIFIED,
            )
        except AzureError as exc:
            raise translate_error(exc, self._describe(value)) from exc
        return Stored(value=value, etag=str(metadata["etag"]))

    async def upsert(self, value: M) -> Stored[M]:
        """Write unconditionally: only for entities with a single writer."""
        client = await self._client()
        try:
            metadata = await client.upsert_entity(
                self._sized_entity(value), mode=UpdateMode.REPLACE
            )
        except AzureError as exc:
            raise translate_error(exc, self._describe(value)) from exc
        return Stored(value=value, etag=str(metadata["etag"]))

    async def delete_by_keys(
        self, partition_key: str, row_key: str, *, etag: str | None = None
    ) -> None:
        """Delete; absent is fine (idempotent). With an ETag, only that version."""
        client = await self._client()
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": _IF_NOT_MODIFIED}
        try:
            await client.delete_entity(encode_key(partition_key), encode_key(row_key), **kwargs)
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise translate_error(exc, f"{self.kind} {partition_key}/{row_key}") from exc

    async def query(
        self,
        partition_key: str | None = None,
        query_filter: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
    ) -> list[Stored[M]]:
        """Entities matching; follows continuation tokens until `limit` or the end."""
        results: list[Stored[M]] = []
        async for entity in self._iterate(partition_key, query_filter, parameters, limit):
            results.append(self.from_entity(entity))
            if limit is not None and len(results) >= limit:
                break
        return results

    async def _iterate(
        self,
        partition_key: str | None,
        query_filter: str | None,
        parameters: Mapping[str, Any] | None,
        page_size: int | None,
        select: list[str] | None = None,
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Raw entities matching, following continuation tokens; with `select`, only
        those properties."""
        client = await self._client()
        clauses: list[str] = []
        params: dict[str, Any] = dict(parameters or {})
        if partition_key is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = encode_key(partition_key)
        if query_filter:
            # Spaces around the parentheses: the SDK finds @parameters by splitting on spaces.
            clauses.append(f"( {query_filter} )")
        try:
            if clauses:
                pager = client.query_entities(
                    " and ".join(clauses),
                    parameters=params,
                    results_per_page=min(page_size or 1000, 1000),
                    select=select,
                )
            else:
                pager = client.list_entities(results_per_page=min(page_size or 1000, 1000))
            # The pager requests the next page with the continuation token as we iterate.
            async for entity in pager:
                yield entity
        except AzureError as exc:
            raise translate_error(exc, f"query on {self.kind}") from exc

    async def commit(self, transaction: Transaction) -> list[str]:
        """Commit atomically; returns the new ETags (empty strings for deletes).

        Raises TransactionTooLarge before sending when Azure would refuse the batch.
        """
        transaction.validate()
        if not transaction.operations:
            return []
        client = await self._client()
        try:
            results = await client.submit_transaction(transaction.operations)
        except AzureError as exc:
            raise translate_error(exc, f"transaction on {self.kind}") from exc
        return [str(result.get("etag", "")) for result in results]

    def _describe(self, value: M) -> str:
        partition_key, row_key = self.keys(value)
        return f"{self.kind} {partition_key}/{row_key}"
