"""The composition root: builds the adapters once per process and hands out services.

Clients are built lazily on first use (no I/O at import, so function discovery never
fails on configuration) and shared by every invocation in the process. Tests build
their own `Adapters` against Azurite or swap in fakes.
"""

from __future__ import annotations

import functools
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.adapters.graph.gateway import build_calendar_gateway
from shared.adapters.storage.busy_days import BusyDayTable
from shared.adapters.storage.queues import QueueSender
from shared.adapters.storage.repositories import (
    BookingTable,
    CalendarCheckTable,
    EventMappingTable,
    IdempotencyTable,
    LeaseTable,
    MailboxClaimTable,
    ResourceTable,
    SlotLedgerTable,
    SubscriptionTable,
    SyncLogTable,
    UnavailabilityTable,
)
from shared.adapters.storage.tables import TableStore
from shared.adapters.webhooks import HttpWebhookTarget
from shared.domain.base import utc_now
from shared.observability import configure_observability
from shared.ports import (
    BookingRepository,
    CalendarChecks,
    CalendarGateway,
    DayViews,
    EventMappingRepository,
    IdempotencyStore,
    Leases,
    MailboxClaims,
    MessageQueue,
    ResourceRepository,
    SlotLedger,
    StorageProbe,
    SubscriptionRepository,
    SyncLog,
    UnavailabilityRepository,
)
from shared.services.availability import AvailabilityService
from shared.services.bookings import BookingService
from shared.services.connection import ConnectionTracker
from shared.services.events import EventRouting, WebhookSender
from shared.services.health import HealthService
from shared.services.inbound import EventChangeHandler, InboundService, NotificationIntake
from shared.services.live_check import LiveSlotCheck
from shared.services.mirror import MirrorService
from shared.services.outlook_changes import OutlookChangeApplier
from shared.services.pulls import BusyTimePulls
from shared.services.push import PushService
from shared.services.reconcile import ReconcileService
from shared.services.resources import ResourceService
from shared.services.rounds import ReconcileRounds, RetrySchedule
from shared.services.slots import SlotKeeper
from shared.services.subscriptions import SubscriptionService
from shared.services.upkeep import Upkeep
from shared.settings import GraphAuthMode, Settings, get_settings


@dataclass(frozen=True)
class Adapters:
    """Every adapter the services use, built once."""

    tables: TableStore
    queues: QueueSender
    resources: ResourceTable
    bookings: BookingTable
    event_mappings: EventMappingTable
    unavailability: UnavailabilityTable
    day_views: BusyDayTable
    subscriptions: SubscriptionTable
    sync_log: SyncLogTable
    slot_ledger: SlotLedgerTable
    idempotency: IdempotencyTable
    leases: LeaseTable
    calendar_checks: CalendarCheckTable
    mailbox_claims: MailboxClaimTable

    async def close(self) -> None:
        await self.tables.close()
        await self.queues.close()

    def ports(self) -> Ports:
        return Ports(
            storage=self.tables,
            queue=self.queues,
            resources=self.resources,
            bookings=self.bookings,
            event_mappings=self.event_mappings,
            unavailability=self.unavailability,
            day_views=self.day_views,
            subscriptions=self.subscriptions,
            sync_log=self.sync_log,
            slot_ledger=self.slot_ledger,
            idempotency=self.idempotency,
            leases=self.leases,
            calendar_checks=self.calendar_checks,
            mailbox_claims=self.mailbox_claims,
        )


@dataclass(frozen=True)
class Ports:
    """What the services need from storage, as protocols (tests pass in-memory fakes)."""

    storage: StorageProbe
    queue: MessageQueue
    resources: ResourceRepository
    bookings: BookingRepository
    event_mappings: EventMappingRepository
    unavailability: UnavailabilityRepository
    day_views: DayViews
    subscriptions: SubscriptionRepository
    sync_log: SyncLog
    slot_ledger: SlotLedger
    idempotency: IdempotencyStore
    leases: Leases
    calendar_checks: CalendarChecks
    mailbox_claims: MailboxClaims


def storage_transport_options() -> dict[str, Any]:
    """Options for the Storage clients' HTTP transport (aiohttp).

    With `use_env_settings` on (azure-core's default), aiohttp looks up the proxy
    variables and ~/.netrc on a worker thread for every request: two thread hops per
    Storage call, about 0.8 ms of CPU each call here and a wait for the event loop on a
    busy instance. Storage signs its own requests (a netrc login is never wanted), and
    proxy variables do not change while the process runs, so the per-request lookups are
    kept only when a proxy is configured at all."""
    return {"use_env_settings": bool(urllib.request.getproxies())}


def build_adapters(settings: Settings, credential: AsyncTokenCredential | None = None) -> Adapters:
    """Adapters over the storage account the settings name (no I/O happens here)."""
    transport = storage_transport_options()
    if settings.storage_connection_string is not None:
        connection = settings.storage_connection_string.get_secret_value()
        table_service = TableServiceClient.from_connection_string(connection, **transport)
        queue_service = QueueServiceClient.from_connection_string(connection, **transport)
    else:
        # Both are set (Settings checks it); str() keeps the account's own DNS suffix.
        table_endpoint, queue_endpoint = (
            str(settings.storage_table_endpoint),
            str(settings.storage_queue_endpoint),
        )
        credential = credential or azure_credential(settings.azure_client_id)
        table_service = TableServiceClient(table_endpoint, credential=credential, **transport)
        queue_service = QueueServiceClient(queue_endpoint, credential=credential, **transport)
    store = TableStore(table_service, prefix=settings.table_name_prefix)
    return Adapters(
        tables=store,
        queues=QueueSender(queue_service),
        resources=ResourceTable(store),
        bookings=BookingTable(store),
        event_mappings=EventMappingTable(store),
        unavailability=UnavailabilityTable(store),
        day_views=BusyDayTable(store),
        subscriptions=SubscriptionTable(store),
        sync_log=SyncLogTable(store),
        slot_ledger=SlotLedgerTable(store),
        idempotency=IdempotencyTable(store),
        leases=LeaseTable(store),
        calendar_checks=CalendarCheckTable(store),
        mailbox_claims=MailboxClaimTable(store),
    )


@functools.cache
def azure_credential(client_id: str | None) -> AsyncTokenCredential:
    """One managed-identity credential per process, shared by storage and Graph."""
    # Imported here, not at indexing: azure-identity's package imports every credential it
    # has, and msal with them. In Azure the Python worker has imported it before indexing
    # (the Azure Monitor exporter it starts does, with PYTHON_APPLICATIONINSIGHTS_ENABLE_
    # TELEMETRY on as infra/ sets it), so the first request pays nothing for it there;
    # locally (Azurite, the Graph emulator) no credential is built at all.
    from azure.identity.aio import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id)


@functools.cache
def get_adapters() -> Adapters:
    """The process-wide adapters (built on first use)."""
    configure_observability()
    return build_adapters(get_settings())


@dataclass(frozen=True)
class Services:
    """The use cases, wired to their adapters. Entry points call these."""

    ports: Ports
    gateway: CalendarGateway
    connection: ConnectionTracker
    mirror: MirrorService
    pulls: BusyTimePulls
    resources: ResourceService
    bookings: BookingService
    availability: AvailabilityService
    push: PushService
    subscriptions: SubscriptionService
    intake: NotificationIntake
    inbound: InboundService
    reconcile: ReconcileService
    rounds: ReconcileRounds
    upkeep: Upkeep
    health: HealthService
    webhooks: WebhookSender | None


def build_services(
    settings: Settings,
    ports: Ports,
    gateway: CalendarGateway,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> Services:
    slots = SlotKeeper(ports.slot_ledger, ports.bookings, clock)
    connection = ConnectionTracker(ports.resources, ports.sync_log, clock)
    mirror = MirrorService(
        gateway,
        ports.unavailability,
        clock,
        days_back=settings.mirror_days_back,
        days_ahead=settings.mirror_days_ahead,
        bookings=ports.bookings,
    )
    subscriptions = SubscriptionService(
        gateway=gateway,
        subscriptions=ports.subscriptions,
        resources=ports.resources,
        clock=clock,
        public_base_url=str(settings.public_base_url),
        expiry_minutes=settings.subscription_expiry_minutes,
        expiry_jitter_minutes=settings.subscription_expiry_jitter_minutes,
    )
    routing = EventRouting(webhooks=settings.booking_events_webhook_url is not None)
    bookings = BookingService(
        routing=routing,
        resources=ports.resources,
        bookings=ports.bookings,
        event_mappings=ports.event_mappings,
        checks=ports.calendar_checks,
        unavailability=ports.unavailability,
        idempotency=ports.idempotency,
        queue=ports.queue,
        slots=slots,
        clock=clock,
        freshness_minutes=settings.mirror_freshness_minutes,
        window=settings.booking_window,
        outbox_lease=timedelta(seconds=settings.outbox_lease_seconds),
        live_check=LiveSlotCheck(
            gateway,
            ports.queue,
            clock,
            bookings=ports.bookings,
            event_mappings=ports.event_mappings,
        ),
    )
    push = PushService(
        resources=ports.resources,
        bookings=ports.bookings,
        event_mappings=ports.event_mappings,
        checks=ports.calendar_checks,
        gateway=gateway,
        sync_log=ports.sync_log,
        connection=connection,
        clock=clock,
    )
    applier = OutlookChangeApplier(
        gateway=gateway,
        routing=routing,
        bookings=ports.bookings,
        booking_service=bookings,
        event_mappings=ports.event_mappings,
        checks=ports.calendar_checks,
        push=push,
        queue=ports.queue,
        sync_log=ports.sync_log,
        clock=clock,
    )
    changes = EventChangeHandler(
        resources=ports.resources,
        event_mappings=ports.event_mappings,
        unavailability=ports.unavailability,
        gateway=gateway,
        mirror=mirror,
        applier=applier,
        push=push,
        connection=connection,
        sync_log=ports.sync_log,
        clock=clock,
    )
    pulls = BusyTimePulls(
        resources=ports.resources,
        mirror=mirror,
        queue=ports.queue,
        connection=connection,
        sync_log=ports.sync_log,
        clock=clock,
    )
    reconcile = ReconcileService(
        resources=ports.resources,
        bookings=ports.bookings,
        booking_service=bookings,
        event_mappings=ports.event_mappings,
        checks=ports.calendar_checks,
        gateway=gateway,
        mirror=mirror,
        applier=applier,
        changes=changes,
        push=push,
        slots=slots,
        leases=ports.leases,
        connection=connection,
        pulls=pulls,
        sync_log=ports.sync_log,
        clock=clock,
        repeat_within=timedelta(minutes=settings.reconcile_repeat_within_minutes),
    )
    rounds = ReconcileRounds(
        resources=ports.resources,
        reconcile=reconcile,
        subscriptions=subscriptions,
        connection=connection,
        queue=ports.queue,
        sync_log=ports.sync_log,
        clock=clock,
        retry=RetrySchedule(
            first=timedelta(minutes=settings.failing_retry_first_minutes),
            cap=timedelta(minutes=settings.failing_retry_max_minutes),
        ),
    )
    return Services(
        ports=ports,
        gateway=gateway,
        connection=connection,
        mirror=mirror,
        pulls=pulls,
        resources=ResourceService(
            resources=ports.resources,
            event_mappings=ports.event_mappings,
            mailboxes=ports.mailbox_claims,
            gateway=gateway,
            pulls=pulls,
            subscriptions=subscriptions,
            connection=connection,
            sync_log=ports.sync_log,
            clock=clock,
            queue=ports.queue,
            bookings=ports.bookings,
            checks=ports.calendar_checks,
        ),
        bookings=bookings,
        availability=AvailabilityService(
            ports.resources,
            ports.unavailability,
            ports.day_views,
            clock,
            freshness_minutes=settings.mirror_freshness_minutes,
            window=settings.booking_window,
        ),
        push=push,
        subscriptions=subscriptions,
        intake=NotificationIntake(
            subscriptions=ports.subscriptions,
            queue=ports.queue,
            tenant_id=settings.graph_tenant_id,
            clock=clock,
        ),
        inbound=InboundService(
            resources=ports.resources,
            changes=changes,
            subscriptions=subscriptions,
            connection=connection,
            reconcile=reconcile.reconcile,
            sync_log=ports.sync_log,
            clock=clock,
        ),
        reconcile=reconcile,
        rounds=rounds,
        upkeep=Upkeep(
            resources=ports.resources,
            subscriptions=subscriptions,
            connection=connection,
            queue=ports.queue,
            clock=clock,
            renew_within=timedelta(hours=settings.subscription_renew_within_hours),
            idempotency=ports.idempotency,
            sync_log=ports.sync_log,
            idempotency_retention=timedelta(hours=settings.idempotency_retention_hours),
            sync_log_retention=timedelta(days=settings.sync_log_retention_days),
        ),
        health=HealthService(
            ports.storage,
            gateway,
            ports.resources,
            clock=clock,
            expiring_within=settings.subscription_renewal_horizon,
        ),
        webhooks=_webhook_sender(settings, ports.queue, clock),
    )


def _webhook_sender(
    settings: Settings, queue: MessageQueue, clock: Callable[[], datetime]
) -> WebhookSender | None:
    url, secret = settings.booking_events_webhook_url, settings.booking_events_webhook_secret
    if url is None or secret is None:
        return None
    return WebhookSender(
        url=str(url), secret=secret, target=HttpWebhookTarget(), queue=queue, clock=clock
    )


@functools.cache
def get_services() -> Services:
    """The process-wide services (built on first use, sharing one set of clients)."""
    settings = get_settings()
    configure_observability()
    managed_identity = (
        azure_credential(settings.azure_client_id)
        if settings.graph_auth_mode is GraphAuthMode.MANAGED_IDENTITY
        else None
    )
    gateway = build_calendar_gateway(settings, managed_identity)
    return build_services(settings, get_adapters().ports(), gateway)
