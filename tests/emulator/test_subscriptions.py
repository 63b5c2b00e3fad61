"""Subscriptions: the validation handshake, limits, renewal, change and lifecycle
notifications as a subscriber receives them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from local.graph_emulator import RunningEmulator
from tests.emulator.support import GraphClient, Receiver, event_body

ALICE = "/users/alice@contoso.com"


def _expiry(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _subscription(receiver: Receiver, **changes: Any) -> dict[str, Any]:
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.notification_url,
        "lifecycleNotificationUrl": receiver.lifecycle_url,
        "resource": "/users/alice@contoso.com/events",
        "expirationDateTime": _expiry(10_000),
        "clientState": "s3cret-state",
        **changes,
    }


async def _control(graph: GraphClient, path: str, body: Any = None) -> Any:
    return await graph.post(graph.graph_url.replace("/v1.0", "/_emulator") + path, body)


@pytest.mark.parametrize(
    ("validation", "accepted"), [("wrong", False), ("json", False), ("echo", True)]
)
async def test_validation_handshake(
    graph: GraphClient, receiver: Receiver, validation: str, accepted: bool
) -> None:
    receiver.validation = validation
    reply = await graph.post("/subscriptions", _subscription(receiver))
    if accepted:
        assert reply.status == 201, reply.body
        assert reply.body["clientState"] == "s3cret-state"
        assert reply.body["changeType"] == "created,updated,deleted"
    else:
        assert reply.status == 400
        assert reply.error_code == "InvalidRequest"
        assert "validation" in reply.body["error"]["message"].lower()
        assert (await graph.get("/subscriptions")).body["value"] == []


async def test_unreachable_endpoint_and_limits_are_refused(
    graph: GraphClient, receiver: Receiver
) -> None:
    unreachable = await graph.post(
        "/subscriptions", _subscription(receiver, notificationUrl="http://127.0.0.1:9/hook")
    )
    assert unreachable.status == 400
    too_long = await graph.post(
        "/subscriptions", _subscription(receiver, expirationDateTime=_expiry(10_071))
    )
    assert too_long.status == 400
    assert "10070 minutes" in too_long.body["error"]["message"]
    past = await graph.post(
        "/subscriptions", _subscription(receiver, expirationDateTime=_expiry(-1))
    )
    assert past.status == 400
    big_state = await graph.post("/subscriptions", _subscription(receiver, clientState="x" * 129))
    assert big_state.status == 400
    delegated = await graph.post("/subscriptions", _subscription(receiver, resource="/me/events"))
    assert delegated.status == 400
    bad_type = await graph.post("/subscriptions", _subscription(receiver, changeType="moved"))
    assert bad_type.status == 400
    no_mailbox = await graph.post(
        "/subscriptions", _subscription(receiver, resource="users/ghost@contoso.com/events")
    )
    assert no_mailbox.status == 404


async def test_renew_get_delete_and_expiry(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    created = (await graph.post("/subscriptions", _subscription(receiver))).body
    path = f"/subscriptions/{created['id']}"
    renewed = await graph.patch(path, {"expirationDateTime": _expiry(10_060)})
    assert renewed.status == 200
    assert renewed.body["expirationDateTime"] != created["expirationDateTime"]
    assert (await graph.patch(path, {"expirationDateTime": _expiry(20_000)})).status == 400
    stored = await graph.get(graph.graph_url.replace("/v1.0", "/_emulator") + path)
    assert stored.body["clientState"] == "s3cret-state"
    assert stored.body["tenantId"] == emulator.config.tenant_id

    # Once expired a subscription is gone and delivers nothing.
    emulator.state.subscriptions[created["id"]].expiration = datetime.now(UTC) - timedelta(
        seconds=1
    )
    assert (await graph.get(path)).status == 404
    await graph.post(
        f"{ALICE}/events", event_body("x", "2025-01-01T09:00:00", "2025-01-01T10:00:00")
    )
    await emulator.notifier.idle()
    assert receiver.notifications == []

    again = (await graph.post("/subscriptions", _subscription(receiver))).body
    assert (await graph.delete(f"/subscriptions/{again['id']}")).status == 204
    assert (await graph.delete(f"/subscriptions/{again['id']}")).status == 404


async def test_notifications_for_writes_are_batched_and_carry_client_state(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    subscription = (await graph.post("/subscriptions", _subscription(receiver))).body
    created = await graph.post(
        f"{ALICE}/events", event_body("A", "2025-02-01T09:00:00", "2025-02-01T10:00:00")
    )
    event_path = f"{ALICE}/events/{quote(created.body['id'], safe='')}"
    updated = await graph.patch(event_path, {"subject": "B"})
    await graph.delete(event_path)
    # Writes elsewhere do not notify this subscription.
    await graph.post(
        "/users/bob@contoso.com/events",
        event_body("x", "2025-02-01T09:00:00", "2025-02-01T10:00:00"),
    )
    await receiver.wait_for(lambda r: len(r.notifications) >= 3)
    await emulator.notifier.idle()

    assert [n["changeType"] for n in receiver.notifications] == ["created", "updated", "deleted"]
    assert receiver.posts == 1  # three changes within the batching window, one POST
    first = receiver.notifications[0]
    user_id = (await graph.get(ALICE)).body["id"]
    assert first["subscriptionId"] == subscription["id"]
    assert first["clientState"] == "s3cret-state"
    assert first["tenantId"] == emulator.config.tenant_id
    assert first["resource"] == f"Users/{user_id}/Events/{created.body['id']}"
    assert first["resourceData"] == {
        "@odata.type": "#Microsoft.Graph.Event",
        "@odata.id": first["resource"],
        "@odata.etag": f'W/"{created.body["changeKey"]}"',
        "id": created.body["id"],
    }
    assert receiver.notifications[1]["resourceData"]["@odata.etag"] == (
        f'W/"{updated.body["changeKey"]}"'
    )
    stats = await graph.get(graph.graph_url.replace("/v1.0", "/_emulator/stats"))
    assert stats.body["notificationsSent"] == 3


async def test_deleting_an_occurrence_notifies_only_a_master_update(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    master = await graph.post(
        f"{ALICE}/events",
        event_body(
            "Daily",
            "2025-03-03T09:00:00",
            "2025-03-03T09:30:00",
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2025-03-03", "numberOfOccurrences": 3},
            },
        ),
    )
    await graph.post("/subscriptions", _subscription(receiver))
    view = await graph.get(
        f"{ALICE}/calendarView",
        params={"startDateTime": "2025-03-01T00:00:00Z", "endDateTime": "2025-03-10T00:00:00Z"},
    )
    await graph.delete(f"{ALICE}/events/{quote(view.body['value'][1]['id'], safe='')}")
    await receiver.wait_for(lambda r: len(r.notifications) >= 1)
    await emulator.notifier.idle()
    assert [(n["changeType"], n["resourceData"]["id"]) for n in receiver.notifications] == [
        ("updated", master.body["id"])
    ]


async def test_paused_notifications_are_dropped_and_failures_retried(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    await graph.post("/subscriptions", _subscription(receiver))
    await _control(graph, "/notifications/pause")
    await graph.post(
        f"{ALICE}/events", event_body("lost", "2025-04-01T09:00:00", "2025-04-01T10:00:00")
    )
    await emulator.notifier.idle()
    await _control(graph, "/notifications/resume")
    assert receiver.notifications == []

    receiver.fail_next = 2  # two 503s, then accepted
    await graph.post(
        f"{ALICE}/events", event_body("kept", "2025-04-02T09:00:00", "2025-04-02T10:00:00")
    )
    await receiver.wait_for(lambda r: len(r.notifications) == 1)
    assert receiver.posts == 3
    stats = (await graph.get(graph.graph_url.replace("/v1.0", "/_emulator/stats"))).body
    assert stats["notificationsDropped"] == 1
    assert stats["notificationsSent"] == 1


async def test_duplicates_mode_follows_a_create_with_an_update(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    await graph.post("/subscriptions", _subscription(receiver))
    await _control(graph, "/notifications/duplicates", {"enabled": True})
    await graph.post(
        f"{ALICE}/events", event_body("d", "2025-04-03T09:00:00", "2025-04-03T10:00:00")
    )
    await receiver.wait_for(lambda r: len(r.notifications) >= 2)
    assert [n["changeType"] for n in receiver.notifications] == ["created", "updated"]


async def test_lifecycle_notifications(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    subscription = (await graph.post("/subscriptions", _subscription(receiver))).body
    for event in ("reauthorizationRequired", "missed"):
        sent = await _control(
            graph, f"/subscriptions/{subscription['id']}/lifecycle", {"event": event}
        )
        assert sent.status == 202
    await receiver.wait_for(lambda r: len(r.lifecycle) == 2)
    assert [n["lifecycleEvent"] for n in receiver.lifecycle] == [
        "reauthorizationRequired",
        "missed",
    ]
    assert receiver.lifecycle[0] == {
        "subscriptionId": subscription["id"],
        "subscriptionExpirationDateTime": subscription["expirationDateTime"],
        "tenantId": emulator.config.tenant_id,
        "clientState": "s3cret-state",
        "lifecycleEvent": "reauthorizationRequired",
    }
    assert (await graph.post(f"/subscriptions/{subscription['id']}/reauthorize")).status == 204

    await _control(
        graph, f"/subscriptions/{subscription['id']}/lifecycle", {"event": "subscriptionRemoved"}
    )
    await receiver.wait_for(lambda r: len(r.lifecycle) == 3)
    assert receiver.lifecycle[2]["lifecycleEvent"] == "subscriptionRemoved"
    assert (await graph.get(f"/subscriptions/{subscription['id']}")).status == 404


async def test_giving_up_on_delivery_sends_missed(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    await graph.post("/subscriptions", _subscription(receiver))
    receiver.fail_next = emulator.config.notification_max_attempts
    await graph.post(
        f"{ALICE}/events", event_body("x", "2025-04-04T09:00:00", "2025-04-04T10:00:00")
    )
    await receiver.wait_for(lambda r: len(r.lifecycle) == 1)
    assert receiver.notifications == []
    assert receiver.lifecycle[0]["lifecycleEvent"] == "missed"


async def test_a_notification_delay_set_at_run_time_holds_deliveries_back(
    graph: GraphClient, receiver: Receiver, emulator: RunningEmulator
) -> None:
    # Graph documents no bound on event notification latency
    # (change-notifications-overview#latency): the delay models a late one.
    await graph.post("/subscriptions", _subscription(receiver))
    refused = await _control(graph, "/notifications/delay", {"ms": -1})
    assert refused.status == 400
    await _control(graph, "/notifications/delay", {"ms": 600})
    started = asyncio.get_running_loop().time()
    await graph.post(
        f"{ALICE}/events", event_body("late", "2025-04-03T09:00:00", "2025-04-03T10:00:00")
    )

    await asyncio.sleep(0.3)
    assert receiver.notifications == []  # still held back
    await receiver.wait_for(lambda r: len(r.notifications) == 1)
    assert asyncio.get_running_loop().time() - started >= 0.6

    await _control(graph, "/reset")  # back to the start-up delay (none here)
    assert emulator.state.settings.notification_delay_s == 0
