"""The composition root: configuration, state, notifier and the Graph route table."""

from __future__ import annotations

import logging

from local.graph_emulator import (
    batch,
    event_routes,
    schedule_routes,
    subscription_routes,
    user_routes,
    view_routes,
)
from local.graph_emulator.config import EmulatorConfig
from local.graph_emulator.gateway import dispatch
from local.graph_emulator.notifications import Notifier
from local.graph_emulator.router import GraphRequest, GraphResponse, Route, Router
from local.graph_emulator.state import EmulatorState

logger = logging.getLogger(__name__)


def _no_mailbox(*_: object) -> None:
    return None


def graph_routes() -> list[Route]:
    """Every Graph v1.0 route the emulator serves; templates double as counter names."""
    routes = [
        Route("POST", "/$batch", batch.run_batch, mailbox_of=_no_mailbox),
        Route("GET", "/users/{id}", user_routes.get_user),
        Route("GET", "/users/{id}/calendar", user_routes.get_calendar),
        Route("POST", "/users/{id}/calendar/getSchedule", schedule_routes.get_schedule),
        Route("GET", "/users/{id}/calendarView/delta", view_routes.delta),
        Route("GET", "/users/{id}/calendar/calendarView/delta", view_routes.delta),
        Route("GET", "/users/{id}/calendarView", view_routes.calendar_view),
        Route("GET", "/users/{id}/calendar/calendarView", view_routes.calendar_view),
        Route("GET", "/users/{id}/events/{eventId}/instances", view_routes.instances),
    ]
    routes += [
        Route("GET", "/users/{id}/events", event_routes.list_mailbox_events),
        Route("GET", "/users/{id}/calendar/events", event_routes.list_calendar_events),
    ]
    for prefix in ("/users/{id}/events", "/users/{id}/calendar/events"):
        routes += [
            Route("POST", prefix, event_routes.create),
            Route("GET", prefix + "/{eventId}", event_routes.get),
            Route("PATCH", prefix + "/{eventId}", event_routes.update),
            Route("DELETE", prefix + "/{eventId}", event_routes.delete),
            Route("POST", prefix + "/{eventId}/permanentDelete", event_routes.permanent_delete),
        ]
    subscription = subscription_routes.subscription_mailbox
    routes += [
        Route("GET", "/subscriptions", subscription_routes.list_all, _no_mailbox, False),
        Route("POST", "/subscriptions", subscription_routes.create, subscription, False),
        Route(
            "GET", "/subscriptions/{subscriptionId}", subscription_routes.get, subscription, False
        ),
        Route(
            "PATCH",
            "/subscriptions/{subscriptionId}",
            subscription_routes.update,
            subscription,
            False,
        ),
        Route(
            "DELETE",
            "/subscriptions/{subscriptionId}",
            subscription_routes.delete,
            subscription,
            False,
        ),
        Route(
            "POST",
            "/subscriptions/{subscriptionId}/reauthorize",
            subscription_routes.reauthorize,
            subscription,
            False,
        ),
    ]
    return routes


class GraphEmulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState(config)
        self.notifier = Notifier(self.state)
        self.router = Router(graph_routes())

    async def dispatch(
        self, request: GraphRequest, *, authenticated: bool = False
    ) -> GraphResponse:
        return await dispatch(self, request, authenticated=authenticated)

    def reset(self, *, keep_startup_mailboxes: bool = True) -> None:
        """Drop queued notifications, then all state (see EmulatorState.reset)."""
        self.notifier.reset()
        self.state.reset(keep_startup_mailboxes=keep_startup_mailboxes)

    async def close(self) -> None:
        await self.notifier.close()
