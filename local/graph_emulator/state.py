"""Everything the emulator remembers: mailboxes with their events, subscriptions, delta
tokens, faults, tokens, counters and the run-time switches.

All of it is touched from the event loop only, so no locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from local.graph_emulator.auth import TokenStore
from local.graph_emulator.config import EmulatorConfig
from local.graph_emulator.faults import FaultRegistry
from local.graph_emulator.ids import folder_id_for, user_id_for
from local.graph_emulator.stats import RequestStats
from local.graph_emulator.throttling import MailboxThrottle

logger = logging.getLogger(__name__)


@dataclass
class EventRecord:
    """One stored event (single instance, series master or exception), or an occurrence
    synthesised from its master. Times are UTC; the zone names given on write are kept."""

    id: str
    ical_uid: str
    change_key: str
    created: datetime
    last_modified: datetime
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    is_all_day: bool
    props: dict[str, Any]
    extended: dict[str, tuple[str, str]] = field(default_factory=dict)
    transaction_id: str | None = None
    recurrence: dict[str, Any] | None = None
    type: str = "singleInstance"
    series_master_id: str | None = None
    original_start: datetime | None = None
    exceptions: dict[datetime, EventRecord] = field(default_factory=dict)
    cancelled_occurrences: set[datetime] = field(default_factory=set)
    # The folder holding it: the mailbox's calendar, or Deleted Items after a DELETE.
    parent_folder_id: str = ""
    # A meeting copy in an attendee's calendar: (organiser's mailbox key, organiser's id).
    copy_of: tuple[str, str] | None = None
    response: str = "organizer"  # responseStatus.response: organizer, accepted, ...


@dataclass
class Mailbox:
    upn: str
    user_id: str
    display_name: str
    startup: bool = False
    # A room (or resource) mailbox that processes meetings itself: an organiser's cancel
    # removes its copy instead of marking it cancelled.
    auto_processing: bool = False
    events: dict[str, EventRecord] = field(default_factory=dict)
    transactions: dict[str, str] = field(default_factory=dict)
    # Soft-deleted events (DELETE moves an event here; permanentDelete purges it).
    deleted_items: dict[str, EventRecord] = field(default_factory=dict)

    @property
    def calendar_id(self) -> str:
        return folder_id_for(self.upn, "calendar")

    @property
    def deleted_items_id(self) -> str:
        return folder_id_for(self.upn, "deleteditems")

    @property
    def key(self) -> str:
        return self.upn.lower()

    def to_user_json(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "userPrincipalName": self.upn,
            "mail": self.upn,
            "displayName": self.display_name,
            "businessPhones": [],
            "givenName": None,
            "surname": None,
            "jobTitle": None,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
        }


@dataclass
class SubscriptionRecord:
    id: str
    resource: str
    mailbox_key: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    created: datetime
    application_id: str
    creator_id: str
    latest_tls: str = "v1_2"


@dataclass
class DeltaToken:
    """Baseline of a finished round: instance id → changeKey at the time of the deltaLink."""

    mailbox_key: str
    window_start: datetime
    window_end: datetime
    zone: str | None
    baseline: dict[str, str]


@dataclass
class SkipToken:
    """A round in progress: the items still to page through and the baseline to hand on."""

    mailbox_key: str
    window_start: datetime
    window_end: datetime
    zone: str | None
    remaining: list[dict[str, Any]]
    page_size: int
    next_baseline: dict[str, str]


@dataclass
class RuntimeSettings:
    """Switches the control API flips; reset restores the start-up configuration."""

    latency_ms: int = 0
    duplicates: bool = False
    paused: bool = False
    notification_delay_s: float = 0.0


class EmulatorState:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.mailboxes: dict[str, Mailbox] = {}
        self.subscriptions: dict[str, SubscriptionRecord] = {}
        self.delta_tokens: dict[str, DeltaToken | SkipToken] = {}
        self.faults = FaultRegistry()
        self.stats = RequestStats()
        self.throttle = MailboxThrottle(
            concurrency=config.mailbox_concurrency,
            budget=config.mailbox_budget,
            window_s=config.mailbox_budget_window_s,
            concurrency_retry_after_s=config.concurrency_retry_after_s,
        )
        self.tokens = TokenStore(
            tenant_id=config.tenant_id,
            lifetime_s=config.token_lifetime_s,
            clients=config.client_credentials,
        )
        self.settings = self._initial_settings()
        for upn in config.startup_mailboxes:
            self.add_mailbox(upn, startup=True)

    def _initial_settings(self) -> RuntimeSettings:
        return RuntimeSettings(
            latency_ms=self.config.latency_ms,
            duplicates=self.config.duplicate_notifications,
            notification_delay_s=self.config.notification_delay_s,
        )

    # Mailboxes -------------------------------------------------------------------------

    def add_mailbox(
        self,
        upn: str,
        display_name: str | None = None,
        *,
        startup: bool = False,
        auto_processing: bool = False,
    ) -> Mailbox:
        """Create the mailbox (idempotent: an existing one is returned unchanged)."""
        existing = self.mailboxes.get(upn.lower())
        if existing is not None:
            return existing
        mailbox = Mailbox(
            upn=upn,
            user_id=user_id_for(upn),
            display_name=display_name or upn.split("@", 1)[0],
            startup=startup,
            auto_processing=auto_processing,
        )
        self.mailboxes[mailbox.key] = mailbox
        logger.info("mailbox %s added", upn)
        return mailbox

    def find_mailbox(self, ref: str) -> Mailbox | None:
        """A mailbox by UPN/email (any case) or by its user id."""
        ref = ref.strip().lower()
        found = self.mailboxes.get(ref)
        if found is not None:
            return found
        return next((m for m in self.mailboxes.values() if m.user_id == ref), None)

    def remove_mailbox(self, key: str) -> Mailbox | None:
        mailbox = self.mailboxes.pop(key, None)
        if mailbox is not None:
            self.expire_delta_tokens(key)
        return mailbox

    # Subscriptions ---------------------------------------------------------------------

    def active_subscriptions(self, now: datetime) -> list[SubscriptionRecord]:
        """Live subscriptions; expired ones are dropped here, as Graph deletes them."""
        expired = [s.id for s in self.subscriptions.values() if s.expiration <= now]
        for sub_id in expired:
            logger.info("subscription %s expired", sub_id)
            del self.subscriptions[sub_id]
        return list(self.subscriptions.values())

    def find_subscription(self, sub_id: str, now: datetime) -> SubscriptionRecord | None:
        return next((s for s in self.active_subscriptions(now) if s.id == sub_id), None)

    # Delta -----------------------------------------------------------------------------

    def expire_delta_tokens(self, mailbox_key: str) -> int:
        doomed = [t for t, s in self.delta_tokens.items() if s.mailbox_key == mailbox_key]
        for token in doomed:
            del self.delta_tokens[token]
        return len(doomed)

    # Reset -----------------------------------------------------------------------------

    def reset(self, *, keep_startup_mailboxes: bool = True) -> None:
        """Forget all data and counters. Start-up mailboxes come back empty unless
        ``keep_startup_mailboxes`` is false, which removes every mailbox."""
        startup = [m for m in self.mailboxes.values() if m.startup]
        self.mailboxes.clear()
        if keep_startup_mailboxes:
            for mailbox in startup:
                self.add_mailbox(mailbox.upn, mailbox.display_name, startup=True)
        self.subscriptions.clear()
        self.delta_tokens.clear()
        self.faults.clear()
        self.stats.reset()
        self.throttle.reset()
        # Issued tokens survive: they are credentials a long-lived client keeps, not data.
        self.settings = self._initial_settings()
        logger.info("state reset (start-up mailboxes kept: %s)", keep_startup_mailboxes)
