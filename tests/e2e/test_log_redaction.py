"""Secrets and private event content never reach the logs: the real app over the local stack.

Every logger is at DEBUG (azure-core's HTTP logging policy included) while a resource is
connected (a subscription with its clientState), Graph notifies the webhook, the test posts
notifications with the right and a wrong clientState, a private and a normal Outlook event
are created and changed, a lifecycle notification arrives, and a booking is pushed (Graph
calls with the bearer token). No record of the app or the host may then hold a clientState,
the wrong clientState, the bearer token, or either event's subject.

Records are captured before any filter runs (the redaction filter is the last line of
defence; this test checks that the code itself never logs them). The Graph emulator and the
test's own HTTP client run in this process too: their records (the emulator may log the
notifications it sends, payloads included) are not the app's and are left out by logger
name; so is aiohttp, which the host, the emulator and the test client all share.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared.adapters.graph.client import graph_credential, graph_scope
from shared.observability import correlation_ids
from shared.settings import get_settings
from tests.e2e.test_bookings_e2e import START, booking, slot, synced
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration

# The app (shared, functions), the SDKs it drives (azure-core and the storage clients,
# msgraph/kiota over httpx), and the local Functions host. The root logger is "root".
APP_AND_HOST_LOGGERS = (
    "root",
    "function_app",
    "shared",
    "functions",
    "azure",
    "msgraph",
    "msgraph_core",
    "kiota_http",
    "kiota_abstractions",
    "kiota_authentication_azure",
    "httpx",
    "httpcore",
    "local.functions_host",
)

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass(frozen=True)
class Seen:
    logger: str
    level: int
    message: str
    text: str  # message, raw arguments, extra attributes, traceback: all a handler can ship
    correlation: Mapping[str, str]


class RawCapture(logging.Handler):
    """Keeps every record as the code logged it, with the correlation ids in effect."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[Seen] = []

    def filter(self, record: logging.LogRecord) -> bool:
        # Filters configure_observability may add to root handlers (redaction among them)
        # must not hide what the code logged.
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
        parts = [message, repr(record.msg), repr(record.args), repr(extras)]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(record.exc_info[1])))
        parts += [record.exc_text or "", record.stack_info or ""]
        self.seen.append(
            Seen(record.name, record.levelno, message, "\n".join(parts), dict(correlation_ids()))
        )

    def of_app_and_host(self) -> list[Seen]:
        return [
            seen
            for seen in self.seen
            if any(
                seen.logger == n or seen.logger.startswith(n + ".") for n in APP_AND_HOST_LOGGERS
            )
        ]


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[RawCapture]:
    """Every logger at DEBUG; the capture first among the root's handlers, so it sees each
    record before another handler's filters could change it."""
    caplog.set_level(logging.DEBUG)
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and existing.level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)
    capture = RawCapture()
    logging.root.handlers.insert(0, capture)
    try:
        yield capture
    finally:
        logging.root.removeHandler(capture)


def when(hours: float, minutes: int = 60) -> dict[str, dict[str, str]]:
    start = START + timedelta(hours=hours)
    fmt = "%Y-%m-%dT%H:%M:%S"
    return {
        "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=minutes)).strftime(fmt), "timeZone": "UTC"},
    }


async def subscriptions_of(stack: Stack, mailbox: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await stack.control("GET", "/subscriptions"))["value"]
    return [s for s in listed if mailbox in s["resource"]]


async def calendar_busy_at(stack: Stack, resource_id: str, hours: float) -> bool:
    window = {
        "start": START.isoformat(),
        "end": (START + timedelta(hours=8)).isoformat(),
        "durationMinutes": "30",
    }
    status, availability = await stack.call(
        "GET", f"/resources/{resource_id}/availability", params=window
    )
    wanted = (START + timedelta(hours=hours)).strftime("%H:%M")
    return status == 200 and any(
        b["source"] == "calendar" and b["start"][11:16] == wanted for b in availability["busy"]
    )


def notification(
    subscription: dict[str, Any], client_state: str, event_id: str
) -> dict[str, list[dict[str, Any]]]:
    return {
        "value": [
            {
                "subscriptionId": subscription["id"],
                "clientState": client_state,
                "tenantId": subscription["tenantId"],
                "changeType": "updated",
                "resource": f"Users/x/Events/{event_id}",
                "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": event_id},
            }
        ]
    }


async def test_client_state_tokens_and_subjects_never_reach_the_logs(
    stack: Stack, mb: Mailboxes, captured: RawCapture
) -> None:
    marker = secrets.token_hex(4).upper()
    private_subject = f"SECRET-SUBJECT-{marker}"
    private_renamed = f"SECRET-RENAMED-{marker}"
    plain_subject = f"PLAIN-SUBJECT-{marker}"
    wrong_state = f"WRONG-STATE-{marker}"
    credential, _ = graph_credential(get_settings())
    token = (await credential.get_token(graph_scope(str(get_settings().graph_base_url)))).token

    # Connect: the app creates a subscription with its own clientState.
    room = await stack.connect(mb.room)
    [subscription] = await subscriptions_of(stack, mb.room)
    client_states = {subscription["clientState"]}

    # Outlook events: Graph notifies the webhook, the inbound worker mirrors them.
    status, private = await stack.graph(
        "POST",
        f"/users/{mb.room}/events",
        {"subject": private_subject, "sensitivity": "private", "showAs": "busy", **when(2)},
    )
    assert status == 201, private
    status, plain = await stack.graph(
        "POST", f"/users/{mb.room}/events", {"subject": plain_subject, "showAs": "busy", **when(4)}
    )
    assert status == 201, plain
    await eventually(lambda: calendar_busy_at(stack, room, 2))
    await eventually(lambda: calendar_busy_at(stack, room, 4))
    status, _ = await stack.graph(
        "PATCH", f"/users/{mb.room}/events/{private['id']}", {"subject": private_renamed}
    )
    assert status == 200

    # The webhook itself: the right clientState is enqueued, a wrong one dropped.
    for state in (subscription["clientState"], wrong_state):
        status, body = await stack.call(
            "POST", "/graph/notifications", notification(subscription, state, private["id"])
        )
        assert status == 202, body

    # A booking pushed to the room's calendar: Graph calls with the bearer token.
    status, created = await stack.call("POST", "/bookings", booking([room], **slot(hours=6)))
    assert status == 201, created
    await eventually(lambda: synced(stack, created["bookingId"]))

    # Graph asks the app to reauthorize its subscription (it may renew or recreate it).
    await stack.control(
        "POST",
        f"/subscriptions/{subscription['id']}/lifecycle",
        {"event": "reauthorizationRequired"},
    )

    async def handled_everything() -> bool:
        messages = {seen.message for seen in captured.of_app_and_host()}
        expected = ("1 enqueued, 0 dropped", "0 enqueued, 1 dropped", "lifecycle reauth")
        return all(any(text in m for m in messages) for text in expected)

    await eventually(handled_everything)
    await eventually(lambda: synced(stack, created["bookingId"]))
    client_states |= {s["clientState"] for s in await subscriptions_of(stack, mb.room)}

    records = captured.of_app_and_host()
    forbidden = {
        "clientState": client_states,
        "wrong clientState": {wrong_state},
        "bearer token": {token},
        "event subject": {private_subject, private_renamed, plain_subject},
    }
    leaks = [
        (what, seen.logger, seen.text[:300])
        for seen in records
        for what, values in forbidden.items()
        if any(value in seen.text for value in values)
    ]
    assert leaks == []

    # The capture did see the app, the host and azure-core's HTTP logging, and the
    # entry points' correlation ids.
    loggers = {seen.logger for seen in records}
    assert {"shared.services.inbound", "functions.workers", "shared.services.subscriptions"} <= (
        loggers
    )
    assert any(name.startswith("azure.core.pipeline.policies.http_logging") for name in loggers)
    assert any(name.startswith("local.functions_host") for name in loggers)
    push = next(s for s in records if s.message.startswith(f"push booking {created['bookingId']}"))
    assert push.correlation == {"booking_id": created["bookingId"]}
    lifecycle = next(s for s in records if s.message.startswith("lifecycle reauth"))
    assert lifecycle.correlation == {"resource_id": room, "subscription_id": subscription["id"]}
