"""Start-up configuration of the Graph emulator (fixed for the life of one server)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# A fixed tenant so that an app configured once keeps matching the emulator across restarts.
DEFAULT_TENANT_ID = "8d1c7a4e-2f3b-4c5d-9e6f-a1b2c3d4e5f6"
# The application id reported in subscriptions (Graph reports the caller's app id).
DEFAULT_APPLICATION_ID = "0c5e8b7a-1d2f-4a3b-8c9d-e0f1a2b3c4d5"


@dataclass(frozen=True)
class EmulatorConfig:
    """Tunables. Defaults follow Microsoft Graph where Graph documents a figure, and are
    short where Graph's real figure (hours of retries) would make tests slow."""

    tenant_id: str = DEFAULT_TENANT_ID
    application_id: str = DEFAULT_APPLICATION_ID
    startup_mailboxes: tuple[str, ...] = ()

    # Auth: any non-empty bearer token unless strict; strict accepts only tokens issued by
    # the emulator's token endpoint. An empty client map accepts any client id and secret.
    strict_auth: bool = False
    client_credentials: Mapping[str, str] = field(default_factory=dict)
    token_lifetime_s: int = 3599

    # Outlook limits per app per mailbox.
    mailbox_concurrency: int = 4
    mailbox_budget: int = 10_000
    mailbox_budget_window_s: float = 600.0
    concurrency_retry_after_s: int = 1

    # Subscriptions: live tenants refuse more than 10,070 minutes for Outlook events.
    max_subscription_minutes: int = 10_070
    max_client_state_length: int = 128
    validation_timeout_s: float = 10.0

    # Graph requires https notification URLs; the local stack and tests run plain http.
    allow_http_notification_urls: bool = False

    # DELETE moves an event to Deleted Items. With immutable ids a GET by id may still find
    # it there (parentFolderId = Deleted Items): the harsher reading, on by default. False:
    # a GET by id of a deleted event answers 404, as a hard delete would.
    deleted_items_readable: bool = True

    # Events carry no `parentFolderId`: Graph's event resource has no such property (it is
    # a message's, a contact's and a folder's). True: they carry it (the calendar's id, or
    # Deleted Items'), the kinder reading.
    event_parent_folder_id: bool = False

    # `GET /users/{id}/events` lists "event objects in the user's mailbox" (v1.0 "List
    # events"), so the events in Deleted Items too: the harsher reading. False: the
    # calendar's alone, as `/users/{id}/calendar/events` always does.
    mailbox_events_include_deleted_items: bool = True

    # Graph answers a create or update in the zone the event was written in, whatever the
    # Prefer outlook.timezone (docs issue #116, docs-contrib #8645): the harsher reading.
    # False: the answer follows Prefer like a GET.
    answer_writes_in_written_zone: bool = True

    # Writes take Windows zone names and only the IANA names the dateTimeTimeZone page lists
    # ("Methods such as create or update might not support all ... time zones"): others
    # answer 400 TimeZoneNotSupportedException. True: any IANA name is taken (kinder).
    accept_any_iana_zone: bool = False

    # Editing or deleting one occurrence notifies `updated` for the series master only.
    # Room mailboxes send several per action, each with its own changeKey: more than 1
    # models that (tests turn it on).
    master_updates_per_occurrence_change: int = 1

    # Change-notification delivery.
    notification_batch_window_s: float = 0.05
    notification_delay_s: float = 0.0
    notification_timeout_s: float = 3.0
    notification_retry_delays_s: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    duplicate_notifications: bool = False
    missed_on_give_up: bool = True

    # Paging and batching.
    default_page_size: int = 10
    max_page_size: int = 1000
    max_batch_requests: int = 20
    batch_parallelism: int = 4

    # Added to every Graph route (milliseconds); can also be changed at run time.
    latency_ms: int = 0

    @property
    def notification_max_attempts(self) -> int:
        return len(self.notification_retry_delays_s) + 1
