"""The URLs Graph is given for our webhook routes: anonymous routes, so no key in them."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.composition import build_services
from shared.domain.calendar import GraphSubscription
from shared.settings import Settings
from tests.builders import T0, resource
from tests.fakes import Clock, FakeCalendar, fake_world


class RecordingCalendar(FakeCalendar):
    def __init__(self, mailboxes: tuple[str, ...]) -> None:
        super().__init__(mailboxes)
        self.urls: list[tuple[str, str]] = []

    async def create_subscription(
        self,
        mailbox: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires_at: datetime,
    ) -> GraphSubscription:
        self.urls.append((notification_url, lifecycle_url))
        return await super().create_subscription(
            mailbox, notification_url, lifecycle_url, client_state, expires_at
        )


async def test_subscriptions_get_the_plain_route_urls_whatever_the_settings_say() -> None:
    ports = fake_world(Clock(T0), ()).ports
    calendar = RecordingCalendar(("room-1@contoso.com",))
    settings = Settings.model_validate(
        {
            "storage_connection_string": "UseDevelopmentStorage=true",
            "graph_tenant_id": "00000000-0000-0000-0000-0000000000aa",
            "public_base_url": "https://func.example.net/",
            # A setting of older versions: the routes are anonymous, so it is not used.
            "graph_webhook_function_key": "a-key",
        }
    )
    services = build_services(settings, ports, calendar, clock=Clock(T0 - timedelta(days=1)))

    await services.subscriptions.subscribe(resource("room-1"))

    assert calendar.urls == [
        (
            "https://func.example.net/api/graph/notifications",
            "https://func.example.net/api/graph/lifecycle",
        )
    ]
    assert "graph_webhook_function_key" not in Settings.model_fields
