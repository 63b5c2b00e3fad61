"""Graph change-notification subscriptions, one per connected resource.

Each subscription gets its own random clientState (stored, never logged); the webhook
trusts a notification only when its clientState matches in constant time. Graph never
returns a clientState when subscriptions are read, so ours is only ever the one we stored.

Graph refuses a second subscription of the app on one mailbox (409 Conflict). One left by
a connect that crashed before recording it, or by another deployment of the app, is found
by its resource in `GET /subscriptions`, deleted, and the subscription made again, once.

Callers race: a connect and the upkeep's recreate, or a timer fired twice for one
occurrence (a past-due run at start-up and the scheduled one). So what a subscription
replaces is read when it is written onto the resource (under the resource's ETag), not
from the caller's copy: the replaced one is dropped, whoever wrote it, and a renewal
records nothing once the resource points to another subscription. One survives.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import SecretStr

from shared.domain.calendar import GraphSubscription, SubscriptionRecord
from shared.domain.errors import GraphConflict, GraphNotFound
from shared.domain.resources import Direction, Resource
from shared.ports import CalendarGateway, ResourceRepository, SubscriptionRepository
from shared.services.resource_updates import update_resource

logger = logging.getLogger(__name__)


_EVENTS_RESOURCE = re.compile(r"^/?users/([^/]+)/events/?$", re.IGNORECASE)
NOTIFICATIONS_ROUTE = "/api/graph/notifications"
LIFECYCLE_ROUTE = "/api/graph/lifecycle"


def client_state() -> str:
    """A random clientState: 64 URL-safe characters (Graph allows up to 128)."""
    return secrets.token_urlsafe(48)


def subscribed_mailbox(resource: str | None) -> str | None:
    """The mailbox (lower case) of a subscription's resource `/users/{mailbox}/events`
    as Graph lists it (leading slash and case vary), or None for another resource."""
    match = _EVENTS_RESOURCE.match((resource or "").strip())
    return match.group(1).strip("'\"").lower() if match else None


def webhook_url(public_base_url: str, route: str) -> str:
    """The URL Graph is given for one of our webhook routes. The routes are anonymous
    (Graph sends no key; a notification is trusted on its clientState), so no key is in
    it: a `?code=` would only put a secret into Graph's subscription records."""
    return public_base_url.rstrip("/") + route


class SubscriptionService:
    def __init__(
        self,
        *,
        gateway: CalendarGateway,
        subscriptions: SubscriptionRepository,
        resources: ResourceRepository,
        clock: Callable[[], datetime],
        public_base_url: str,
        expiry_minutes: int,
        expiry_jitter_minutes: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self._gateway = gateway
        self._subscriptions = subscriptions
        self._resources = resources
        self._clock = clock
        self._base_url = public_base_url
        self._expiry = timedelta(minutes=expiry_minutes)
        # At most a quarter of the lifetime, so a subscription never expires much sooner
        # than asked however the two settings are combined.
        self._jitter = timedelta(minutes=min(expiry_jitter_minutes, expiry_minutes // 4))
        self._rng = rng or random.Random()  # noqa: S311 - spreading expiries, not secrecy

    def _expiry_from(self, now: datetime) -> datetime:
        """When a subscription made or renewed now should expire: the configured lifetime
        less a random part of the jitter, so that subscriptions made together (a bulk
        onboarding) fall due in different upkeep runs, and stay spread as they renew."""
        return now + self._expiry - self._jitter * self._rng.random()

    async def subscribe(self, resource: Resource) -> Resource:
        """Create a fresh subscription on the mailbox's events (replacing any old one).
        Resources with direction `none` get none. Raises the gateway's Graph errors."""
        if resource.settings.direction is Direction.NONE:
            return await self.unsubscribe(resource)
        now = self._clock()
        state = client_state()
        try:
            created = await self._create(resource, state, now)
        except GraphConflict:
            await self._drop_conflicting(resource)
            try:
                created = await self._create(resource, state, now)
            except GraphConflict as exc:
                raise GraphConflict(
                    f"Graph refuses a subscription on {resource.settings.mailbox}: another "
                    "subscription of this app holds it and could not be replaced"
                ) from exc
        await self._subscriptions.save(
            SubscriptionRecord(
                subscription_id=created.subscription_id,
                resource_id=resource.resource_id,
                mailbox=resource.settings.mailbox,
                client_state=SecretStr(state),
                expires_at=created.expires_at,
                created_at=now,
            )
        )
        replaced: list[str] = []

        def point_to_created(current: Resource) -> Resource:
            if current.subscription_id and current.subscription_id != created.subscription_id:
                replaced[:] = [current.subscription_id]
            else:
                replaced.clear()
            return current.model_copy(
                update={
                    "subscription_id": created.subscription_id,
                    "subscription_expires_at": created.expires_at,
                }
            )

        updated = await update_resource(self._resources, resource.resource_id, point_to_created)
        if updated is None:  # the resource is gone: nothing may keep this subscription
            await self._drop(created.subscription_id)
            return resource
        for previous in replaced:
            await self._drop(previous)
        logger.info(
            "subscription %s created for resource %s, expires %s",
            created.subscription_id,
            resource.resource_id,
            created.expires_at.isoformat(),
        )
        return updated or resource

    async def _create(self, resource: Resource, state: str, now: datetime) -> GraphSubscription:
        return await self._gateway.create_subscription(
            resource.settings.mailbox,
            webhook_url(self._base_url, NOTIFICATIONS_ROUTE),
            webhook_url(self._base_url, LIFECYCLE_ROUTE),
            state,
            self._expiry_from(now),
        )

    async def _drop_conflicting(self, resource: Resource) -> None:
        """Delete the app's subscriptions on the resource's mailbox that Graph lists (the
        409 does not reliably name one)."""
        mailbox = resource.settings.mailbox
        stale = [
            s.subscription_id
            for s in await self._gateway.list_subscriptions()
            if subscribed_mailbox(s.resource) == mailbox.lower()
        ]
        logger.warning(
            "resource %s: Graph holds %d other subscriptions on its mailbox; replacing them",
            resource.resource_id,
            len(stale),
        )
        for subscription_id in stale:
            await self._drop(subscription_id)

    async def unsubscribe(self, resource: Resource) -> Resource:
        """Delete the resource's subscription, if any. Idempotent."""
        if resource.subscription_id is None:
            return resource
        await self._drop(resource.subscription_id)
        updated = await self._record_if_current(
            resource.resource_id, resource.subscription_id, None, None
        )
        return updated or resource

    async def renew(self, resource: Resource) -> Resource:
        """Extend the subscription; a subscription Graph no longer knows is recreated.
        Returns the resource; `.subscription_id` changes when it was recreated."""
        if resource.subscription_id is None:
            return await self.subscribe(resource)
        try:
            renewed = await self._gateway.renew_subscription(
                resource.subscription_id, self._expiry_from(self._clock())
            )
        except GraphNotFound:
            logger.warning("subscription %s is gone; recreating", resource.subscription_id)
            await self._subscriptions.delete(resource.subscription_id)
            return await self.subscribe(resource.model_copy(update={"subscription_id": None}))
        stored = await self._subscriptions.get(renewed.subscription_id)
        if stored is not None:
            await self._subscriptions.save(
                stored.value.model_copy(update={"expires_at": renewed.expires_at})
            )
        updated = await self._record_if_current(
            resource.resource_id,
            resource.subscription_id,
            renewed.subscription_id,
            renewed.expires_at,
        )
        if updated is None:
            # Replaced meanwhile (its replacer dropped the one renewed here).
            current = await self._resources.get(resource.resource_id)
            return current.value if current is not None else resource
        return updated

    async def forget(self, resource_id: str, subscription_id: str) -> None:
        """Graph removed this subscription and no new one could be made: the resource no
        longer points at it, so whatever brings the resource back (its next round, the
        upkeep) subscribes again instead of renewing a subscription that is gone."""
        await self._subscriptions.delete(subscription_id)
        await self._record_if_current(resource_id, subscription_id, None, None)

    async def reauthorize(self, resource: Resource) -> Resource:
        """Answer `reauthorizationRequired`: reauthorize, then renew."""
        if resource.subscription_id is not None:
            try:
                await self._gateway.reauthorize_subscription(resource.subscription_id)
            except GraphNotFound:
                return await self.subscribe(resource.model_copy(update={"subscription_id": None}))
        return await self.renew(resource)

    async def _drop(self, subscription_id: str) -> None:
        await self._gateway.delete_subscription(subscription_id)
        await self._subscriptions.delete(subscription_id)

    async def _record_if_current(
        self,
        resource_id: str,
        expected: str,
        subscription_id: str | None,
        expires_at: datetime | None,
    ) -> Resource | None:
        """Write the subscription onto the resource if it still points to `expected`;
        None when it does not (or is gone)."""

        def change(current: Resource) -> Resource | None:
            if current.subscription_id != expected:
                return None
            return current.model_copy(
                update={"subscription_id": subscription_id, "subscription_expires_at": expires_at}
            )

        return await update_resource(self._resources, resource_id, change)
