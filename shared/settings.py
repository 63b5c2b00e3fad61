"""Configuration, read from app settings (environment variables).

Field names are the app-setting names (matched case-insensitively). Settings are loaded
lazily through `get_settings()` so that a missing value fails the invocation that needs
it with a clear message instead of breaking function discovery at import time.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, HttpUrl, SecretStr, UrlConstraints, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.bookings import BookingWindow

# An https:// URL: storage endpoints carry bearer tokens, which azure-core refuses to send
# over plain HTTP anyway.
HttpsUrl = Annotated[HttpUrl, UrlConstraints(allowed_schemes=["https"])]


class GraphAuthMode(StrEnum):
    """How the app obtains tokens for Microsoft Graph."""

    MANAGED_IDENTITY = "managed_identity"
    CLIENT_SECRET = "client_secret"  # noqa: S105 - a mode name, not a secret
    EMULATOR = "emulator"


class Settings(BaseSettings):
    """Every setting the app reads. Required values have no default."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Storage for the app's tables and queues. Azurite: a connection string. Azure: the
    # account's table and queue endpoints, reached with the managed identity (shared keys
    # are off). infra/ sets them from the account's own primaryEndpoints, so sovereign
    # clouds (other DNS suffixes) need no code change.
    storage_connection_string: SecretStr | None = None
    storage_table_endpoint: HttpsUrl | None = None
    storage_queue_endpoint: HttpsUrl | None = None
    # Client id of the user-assigned managed identity (read by azure-identity as well).
    azure_client_id: str | None = None
    table_name_prefix: str = Field(default="bookingsync", pattern=r"^[A-Za-z][A-Za-z0-9]{0,40}$")

    # Microsoft Graph.
    graph_tenant_id: str
    graph_base_url: HttpUrl = HttpUrl("https://graph.microsoft.com/v1.0")
    graph_auth_mode: GraphAuthMode = GraphAuthMode.MANAGED_IDENTITY
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None

    # Where Graph reaches our webhook routes, e.g. https://<app>.azurewebsites.net
    public_base_url: HttpUrl
    subscription_expiry_minutes: int = Field(default=10_000, ge=45, le=10_070)
    subscription_renew_within_hours: int = Field(default=24, ge=1, le=120)
    # New and renewed subscriptions expire up to this much earlier, at random (at most a
    # quarter of SUBSCRIPTION_EXPIRY_MINUTES), so mailboxes connected together do not all
    # fall due in one upkeep run.
    subscription_expiry_jitter_minutes: int = Field(default=1440, ge=0)

    # Timers (NCRONTAB, 6 fields). The host reads these names from app settings too.
    reconcile_schedule: str = "0 */15 * * * *"
    subscription_upkeep_schedule: str = "0 5 * * * *"
    # A past-due timer run (after an interrupted occurrence) this soon after the
    # resource's last round is a repeat and skipped; a page sent twice always is. Rounds of
    # an ordinary run always go, whatever RECONCILE_SCHEDULE's period.
    reconcile_repeat_within_minutes: int = Field(default=5, ge=0, le=60)
    # A resource whose round failed on a condition retrying cannot heal (mailbox gone,
    # access denied) is left out of timer rounds for this long, doubling per failed
    # round up to the maximum; it recovers by itself once a round succeeds.
    failing_retry_first_minutes: int = Field(default=15, ge=1, le=1440)
    failing_retry_max_minutes: int = Field(default=60, ge=1, le=1440)

    # Unavailability mirror window and freshness bound (fail closed past it).
    mirror_days_back: int = Field(default=1, ge=0, le=31)
    mirror_days_ahead: int = Field(default=180, ge=1, le=730)
    mirror_freshness_minutes: int = Field(default=60, ge=5)
    # A booking may start this much before now (a client's clock a little behind ours);
    # it ends by MIRROR_DAYS_AHEAD from now, the mirror's horizon.
    booking_start_grace_minutes: int = Field(default=5, ge=0, le=1440)

    # Booking events: always to the booking-events queue; also POSTed when a URL is set.
    booking_events_webhook_url: HttpUrl | None = None
    booking_events_webhook_secret: SecretStr | None = None

    idempotency_retention_hours: int = Field(default=48, ge=24)
    sync_log_retention_days: int = Field(default=30, ge=1)
    # How long the request that wrote a booking change alone may send its queue messages;
    # after that (it died before sending), the next touch of the booking sends them.
    outbox_lease_seconds: int = Field(default=30, ge=1, le=600)

    @property
    def booking_window(self) -> BookingWindow:
        return BookingWindow(
            grace=timedelta(minutes=self.booking_start_grace_minutes),
            horizon_days=self.mirror_days_ahead,
            history_days=self.mirror_days_back,
        )

    @property
    def subscription_renewal_horizon(self) -> timedelta:
        return timedelta(hours=self.subscription_renew_within_hours)

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        endpoints = (self.storage_table_endpoint, self.storage_queue_endpoint)
        if self.storage_connection_string is None and None in endpoints:
            raise ValueError(
                "set STORAGE_CONNECTION_STRING (Azurite), or STORAGE_TABLE_ENDPOINT and "
                "STORAGE_QUEUE_ENDPOINT (Azure)"
            )
        if self.graph_auth_mode is GraphAuthMode.CLIENT_SECRET and (
            self.graph_client_id is None or self.graph_client_secret is None
        ):
            raise ValueError(
                "GRAPH_AUTH_MODE=client_secret needs GRAPH_CLIENT_ID and GRAPH_CLIENT_SECRET"
            )
        if (
            self.graph_auth_mode is not GraphAuthMode.EMULATOR
            and self.public_base_url.scheme != "https"
        ):
            # Graph delivers notifications to https URLs only; only the emulator takes http.
            raise ValueError(
                "PUBLIC_BASE_URL must be an https URL (Graph refuses http notification URLs);"
                " http is accepted only with GRAPH_AUTH_MODE=emulator"
            )
        if self.failing_retry_max_minutes < self.failing_retry_first_minutes:
            raise ValueError(
                "FAILING_RETRY_MAX_MINUTES must be at least FAILING_RETRY_FIRST_MINUTES"
            )
        webhook = self.booking_events_webhook_url
        if webhook is not None and self.booking_events_webhook_secret is None:
            raise ValueError("BOOKING_EVENTS_WEBHOOK_URL needs BOOKING_EVENTS_WEBHOOK_SECRET")
        return self


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once on first use.

    Raises pydantic's ValidationError naming each missing or invalid setting.
    """
    return Settings()
