"""The control API under ``/_emulator/`` (JSON, no auth): lets tests and scripts set the
stage (mailboxes, faults, latency), play Graph (lifecycle events, expired delta tokens,
paused notifications) and read what happened (stats, deliveries, stored subscriptions)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from local.graph_emulator.emulator import GraphEmulator
from local.graph_emulator.notifications import LIFECYCLE_EVENTS
from local.graph_emulator.subscription_routes import render_subscription
from local.graph_emulator.timezones import utc_now

logger = logging.getLogger(__name__)

EMULATOR_KEY = web.AppKey("graph_emulator", GraphEmulator)
PREFIX = "/_emulator"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text="request body is not JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    return body


def _emulator(request: web.Request) -> GraphEmulator:
    return request.app[EMULATOR_KEY]


def _mailbox_json(emulator: GraphEmulator, key: str) -> dict[str, Any]:
    mailbox = emulator.state.mailboxes[key]
    return {
        "id": mailbox.upn,
        "userId": mailbox.user_id,
        "displayName": mailbox.display_name,
        "startup": mailbox.startup,
        "autoProcessing": mailbox.auto_processing,
        "eventCount": len(mailbox.events),
    }


async def add_mailbox(request: web.Request) -> web.Response:
    body = await _body(request)
    upn = body.get("id")
    if not isinstance(upn, str) or not upn.strip():
        return _error(400, "'id' (the mailbox address) is required")
    emulator = _emulator(request)
    display_name = body.get("displayName")
    mailbox = emulator.state.add_mailbox(
        upn.strip(),
        str(display_name) if display_name else None,
        auto_processing=body.get("autoProcessing") is True,
    )
    if body.get("autoProcessing") is True:
        mailbox.auto_processing = True  # also for a mailbox that already existed
    return web.json_response(_mailbox_json(emulator, mailbox.key), status=201)


async def list_mailboxes(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    return web.json_response(
        {"value": [_mailbox_json(emulator, key) for key in emulator.state.mailboxes]}
    )


async def remove_mailbox(request: web.Request) -> web.Response:
    """The mailbox disappears, as when a user leaves; its subscriptions are removed with a
    ``subscriptionRemoved`` lifecycle notification."""
    emulator = _emulator(request)
    mailbox = emulator.state.find_mailbox(request.match_info["mailbox"])
    if mailbox is None:
        return _error(404, "no such mailbox")
    for subscription in emulator.state.active_subscriptions(utc_now()):
        if subscription.mailbox_key == mailbox.key:
            emulator.notifier.publish_lifecycle(subscription, "subscriptionRemoved")
            del emulator.state.subscriptions[subscription.id]
    emulator.state.remove_mailbox(mailbox.key)
    return web.Response(status=204)


async def add_fault(request: web.Request) -> web.Response:
    """Body: ``mailbox``, ``pathContains``, ``status``, ``code``, ``message``, ``count``,
    ``retryAfter``, ``latencyMs``, and ``probability`` (0-1: the share of matching requests
    hit, e.g. 0.2 for a flaky Graph) with an optional ``seed`` for a repeatable sequence."""
    body = await _body(request)
    try:
        fault = _emulator(request).state.faults.add(body)
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(fault.to_json(), status=201)


async def list_faults(request: web.Request) -> web.Response:
    faults = _emulator(request).state.faults.list()
    return web.json_response({"value": [f.to_json() for f in faults]})


async def clear_faults(request: web.Request) -> web.Response:
    _emulator(request).state.faults.clear()
    return web.Response(status=204)


async def remove_fault(request: web.Request) -> web.Response:
    try:
        fault_id = int(request.match_info["fault"])
    except ValueError:
        return _error(400, "fault ids are integers")
    if not _emulator(request).state.faults.remove(fault_id):
        return _error(404, "no such fault")
    return web.Response(status=204)


async def pause_notifications(request: web.Request) -> web.Response:
    _emulator(request).state.settings.paused = True
    return web.json_response({"paused": True})


async def resume_notifications(request: web.Request) -> web.Response:
    _emulator(request).state.settings.paused = False
    return web.json_response({"paused": False})


async def set_duplicates(request: web.Request) -> web.Response:
    body = await _body(request)
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        return _error(400, "'enabled' must be true or false")
    _emulator(request).state.settings.duplicates = enabled
    return web.json_response({"enabled": enabled})


async def list_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"value": list(_emulator(request).notifier.deliveries)})


async def set_latency(request: web.Request) -> web.Response:
    body = await _body(request)
    milliseconds = body.get("ms")
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        return _error(400, "'ms' must be a non-negative integer")
    _emulator(request).state.settings.latency_ms = milliseconds
    return web.json_response({"ms": milliseconds})


async def set_notification_delay(request: web.Request) -> web.Response:
    body = await _body(request)
    milliseconds = body.get("ms")
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        return _error(400, "'ms' must be a non-negative integer")
    _emulator(request).state.settings.notification_delay_s = milliseconds / 1000
    return web.json_response({"ms": milliseconds})


def _stored_subscription(emulator: GraphEmulator, sub_id: str) -> dict[str, Any] | None:
    subscription = emulator.state.find_subscription(sub_id, utc_now())
    if subscription is None:
        return None
    rendered = render_subscription(
        subscription, tenant_id=emulator.config.tenant_id, reveal_client_state=True
    )
    rendered["mailbox"] = subscription.mailbox_key
    return rendered


async def list_subscriptions(request: web.Request) -> web.Response:
    emulator = _emulator(request)
    stored = [
        _stored_subscription(emulator, s.id) for s in emulator.state.active_subscriptions(utc_now())
    ]
    return web.json_response({"value": [s for s in stored if s is not None]})


async def get_subscription(request: web.Request) -> web.Response:
    stored = _stored_subscription(_emulator(request), request.match_info["subscription"])
    if stored is None:
        return _error(404, "no such subscription")
    return web.json_response(stored)


async def send_lifecycle(request: web.Request) -> web.Response:
    body = await _body(request)
    event = body.get("event")
    if event not in LIFECYCLE_EVENTS:
        return _error(400, f"'event' must be one of {', '.join(LIFECYCLE_EVENTS)}")
    emulator = _emulator(request)
    subscription = emulator.state.find_subscription(request.match_info["subscription"], utc_now())
    if subscription is None:
        return _error(404, "no such subscription")
    queued = emulator.notifier.publish_lifecycle(subscription, str(event))
    if event == "subscriptionRemoved":
        del emulator.state.subscriptions[subscription.id]
    return web.json_response({"queued": queued, "event": event}, status=202)


async def expire_delta(request: web.Request) -> web.Response:
    body = await _body(request)
    emulator = _emulator(request)
    ref = body.get("mailbox")
    if not isinstance(ref, str):
        return _error(400, "'mailbox' is required")
    mailbox = emulator.state.find_mailbox(ref)
    key = mailbox.key if mailbox else ref.lower()
    return web.json_response({"expired": emulator.state.expire_delta_tokens(key)})


async def stats(request: web.Request) -> web.Response:
    state = _emulator(request).state
    return web.json_response(state.stats.to_json(state.throttle.peak, state.throttle.in_flight))


async def reset(request: web.Request) -> web.Response:
    """Body ``{"all": true}`` also removes the start-up mailboxes; by default they stay,
    emptied."""
    body = await _body(request)
    keep = not bool(body.get("all", False))
    _emulator(request).reset(keep_startup_mailboxes=keep)
    return web.json_response({"reset": True, "startupMailboxesKept": keep})


async def revoke_tokens(request: web.Request) -> web.Response:
    return web.json_response({"revoked": _emulator(request).state.tokens.revoke_all()})


def add_control_routes(app: web.Application) -> None:
    router = app.router
    router.add_post(f"{PREFIX}/mailboxes", add_mailbox)
    router.add_get(f"{PREFIX}/mailboxes", list_mailboxes)
    router.add_delete(PREFIX + "/mailboxes/{mailbox}", remove_mailbox)
    router.add_post(f"{PREFIX}/faults", add_fault)
    router.add_get(f"{PREFIX}/faults", list_faults)
    router.add_delete(f"{PREFIX}/faults", clear_faults)
    router.add_delete(PREFIX + "/faults/{fault}", remove_fault)
    router.add_post(f"{PREFIX}/notifications/pause", pause_notifications)
    router.add_post(f"{PREFIX}/notifications/resume", resume_notifications)
    router.add_post(f"{PREFIX}/notifications/duplicates", set_duplicates)
    router.add_post(f"{PREFIX}/notifications/delay", set_notification_delay)
    router.add_get(f"{PREFIX}/notifications", list_deliveries)
    router.add_post(f"{PREFIX}/latency", set_latency)
    router.add_get(f"{PREFIX}/subscriptions", list_subscriptions)
    router.add_get(PREFIX + "/subscriptions/{subscription}", get_subscription)
    router.add_post(PREFIX + "/subscriptions/{subscription}/lifecycle", send_lifecycle)
    router.add_post(f"{PREFIX}/delta/expire", expire_delta)
    router.add_get(f"{PREFIX}/stats", stats)
    router.add_post(f"{PREFIX}/reset", reset)
    router.add_post(f"{PREFIX}/tokens/revoke", revoke_tokens)
