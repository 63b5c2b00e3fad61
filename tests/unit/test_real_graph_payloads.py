"""Real Graph notification payloads, fed through the webhook functions.

Each payload names where its shape comes from: an example in Microsoft's Graph docs, or an
answer a user posted in a Graph SDK or docs issue. Ids, secrets and tenants are replaced
by this test's own (the fake world's subscription and tenant), nothing else. Add to this
corpus whenever Graph surprises the app.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from pydantic import SecretStr, TypeAdapter

from functions import graph
from shared.domain.calendar import SubscriptionRecord
from shared.domain.messages import (
    SYNC_INBOUND_QUEUE,
    EventChanges,
    InboundBatch,
    InboundWork,
    LifecycleEvent,
)
from tests.builders import T0
from tests.fakes import Clock, FakeWorld, fake_world

TENANT = "00000000-0000-0000-0000-0000000000aa"  # fake_world's GRAPH_TENANT_ID
SUBSCRIPTION = "3b5a0b87-16e1-4a5e-8f41-8d0f8c7b1c11"
STATE = "secretClientValue"
EVENT_RESOURCE = "Users/7b3d0a5c-4c1a-4f1e-9d5a-1f2e3d4c5b6a/Events/AAMkAGUwNjQ4ZjIxAAA="
_inbound = TypeAdapter[InboundWork](InboundWork)

# reauthorizationRequired as captured by users: organizationId, no tenantId.
# https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/84
# https://github.com/microsoftgraph/msgraph-sdk-java/issues/1551
# https://github.com/microsoftgraph/msgraph-sdk-dotnet/issues/3103
REAUTHORIZATION_REQUIRED_WITH_ORGANIZATION_ID: dict[str, Any] = {
    "value": [
        {
            "subscriptionId": SUBSCRIPTION,
            "subscriptionExpirationDateTime": "2026-12-05T10:00:00.0000000+00:00",
            "organizationId": TENANT,
            "clientState": STATE,
            "lifecycleEvent": "reauthorizationRequired",
        }
    ]
}

# An Outlook event change notification with organizationId in place of tenantId (the same
# captures; Graph documents tenantId). The rest as in the docs' example:
# https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
CHANGE_WITH_ORGANIZATION_ID: dict[str, Any] = {
    "value": [
        {
            "subscriptionId": SUBSCRIPTION,
            "subscriptionExpirationDateTime": "2026-12-05T10:00:00.0000000+00:00",
            "changeType": "updated",
            "resource": EVENT_RESOURCE,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": EVENT_RESOURCE,
                "@odata.etag": 'W/"DwAAABYAAADiJ+9DE2VNRqSHd4/nWAsxAAAMk9Wv"',
                "id": "AAMkAGUwNjQ4ZjIxAAA=",
            },
            "clientState": STATE,
            "organizationId": TENANT,
        }
    ]
}


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0), ("room-1@contoso.com",))
    await w.ports.subscriptions.save(
        SubscriptionRecord(
            subscription_id=SUBSCRIPTION,
            resource_id="room-1",
            mailbox="room-1@contoso.com",
            client_state=SecretStr(STATE),
            expires_at=T0 + timedelta(days=3),
            created_at=T0,
        )
    )
    monkeypatch.setattr(graph, "get_services", lambda: w.services)
    return w


async def _post(function: Any, route: str, payload: dict[str, Any]) -> func.HttpResponse:
    handler = function.build().get_user_function()
    request = func.HttpRequest(
        method="POST",
        url=f"http://localhost/api/{route}",
        body=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        params={},
        route_params={},
    )
    response: func.HttpResponse = await handler(request)
    return response


def _queued(w: FakeWorld) -> list[Any]:
    return [_inbound.validate_json(body) for body in w.queue.bodies(SYNC_INBOUND_QUEUE)]


async def test_lifecycle_with_organization_id_and_no_tenant_id_is_accepted(
    world: FakeWorld,
) -> None:
    response = await _post(
        graph.graph_lifecycle, "graph/lifecycle", REAUTHORIZATION_REQUIRED_WITH_ORGANIZATION_ID
    )

    assert response.status_code == 202
    [queued] = _queued(world)
    assert isinstance(queued, LifecycleEvent)
    assert (queued.resource_id, queued.lifecycle_event) == ("room-1", "reauthorizationRequired")


async def test_change_with_organization_id_and_no_tenant_id_is_accepted(
    world: FakeWorld,
) -> None:
    response = await _post(
        graph.graph_notifications, "graph/notifications", CHANGE_WITH_ORGANIZATION_ID
    )

    assert response.status_code == 202
    [queued] = _queued(world)
    assert isinstance(queued, EventChanges)
    assert [c.event_id for c in queued.changes] == ["AAMkAGUwNjQ4ZjIxAAA="]


async def test_an_organization_id_of_another_tenant_is_still_dropped(world: FakeWorld) -> None:
    other = json.loads(json.dumps(REAUTHORIZATION_REQUIRED_WITH_ORGANIZATION_ID))
    other["value"][0]["organizationId"] = "11111111-1111-1111-1111-111111111111"

    response = await _post(graph.graph_lifecycle, "graph/lifecycle", other)

    assert response.status_code == 202
    assert _queued(world) == []


# The lifecycle notification as Microsoft documents it, three in one POST: "lifecycle
# notifications can be batched together ... each with a possibly different
# lifecycleEvent value", and the lifecycle URL may be the notification URL.
# https://learn.microsoft.com/graph/change-notifications-lifecycle-events
# ("Structure of a lifecycle notification")
LIFECYCLE_BATCH_AS_DOCUMENTED: dict[str, Any] = {
    "value": [
        {
            "subscriptionId": SUBSCRIPTION,
            "subscriptionExpirationDateTime": "2019-03-20T11:00:00.0000000Z",
            "tenantId": TENANT,
            "clientState": STATE,
            "lifecycleEvent": event,
        }
        for event in ("subscriptionRemoved", "missed", "reauthorizationRequired")
    ]
}

# A change notification in the webhooks page's example shape: an `id` of its own, the
# resource as `Users/{user}@{tenant}/...`, a Z-suffixed expiry with seven fractional digits.
# https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
# ("Example: change notification")
USER = "7b3d0a5c-4c1a-4f1e-9d5a-1f2e3d4c5b6a"
CHANGE_AS_DOCUMENTED: dict[str, Any] = {
    "value": [
        {
            "id": "lsgTZMr9KwAAA",
            "subscriptionId": SUBSCRIPTION,
            "subscriptionExpirationDateTime": "2016-03-19T22:11:09.952Z",
            "clientState": STATE,
            "changeType": "created",
            "resource": f"users/{USER}@{TENANT}/events/AAMkAGI2=",
            "tenantId": TENANT,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": f"Users/{USER}@{TENANT}/Events/AAMkAGI2=",
                "@odata.etag": 'W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"',
                "id": "AAMkAGI2=",
            },
        }
    ]
}


@pytest.mark.parametrize("route", ["graph/lifecycle", "graph/notifications"])
async def test_a_documented_batch_of_lifecycle_events_queues_each(
    world: FakeWorld, route: str
) -> None:
    function = graph.graph_lifecycle if route == "graph/lifecycle" else graph.graph_notifications

    response = await _post(function, route, LIFECYCLE_BATCH_AS_DOCUMENTED)

    assert response.status_code == 202
    queued = _queued(world)
    events = [
        item
        for message in queued
        for item in (message.items if isinstance(message, InboundBatch) else [message])
        if isinstance(item, LifecycleEvent)
    ]
    assert sorted(e.lifecycle_event for e in events) == [
        "missed",
        "reauthorizationRequired",
        "subscriptionRemoved",
    ]
    assert {e.resource_id for e in events} == {"room-1"}


async def test_a_documented_change_notification_is_queued(world: FakeWorld) -> None:
    response = await _post(graph.graph_notifications, "graph/notifications", CHANGE_AS_DOCUMENTED)

    assert response.status_code == 202
    [queued] = _queued(world)
    assert isinstance(queued, EventChanges)
    assert [(c.change_type, c.event_id) for c in queued.changes] == [("created", "AAMkAGI2=")]
    assert queued.changes[0].change_key == "CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"


async def test_a_full_batch_in_the_documented_shape_with_long_ids_is_taken(
    world: FakeWorld,
) -> None:
    # 1,000 notifications (the most the app takes in one POST) of the documented shape
    # ("Users/{user}@{tenant}/Events/{id}" twice per item) with event ids as long as
    # Outlook's (~150 characters): about 1.1 MB. Refused with 413, Graph would retry the
    # whole POST for up to 4 hours, then drop every change in it.
    long_id = "AAMkAGI2TQ" + "A" * 138 + "AAA="
    item = json.loads(json.dumps(CHANGE_AS_DOCUMENTED["value"][0]).replace("AAMkAGI2=", long_id))
    batch = {"value": [item] * 1000}
    assert len(json.dumps(batch)) > 1024 * 1024

    response = await _post(graph.graph_notifications, "graph/notifications", batch)

    assert response.status_code == 202
    assert {
        c.event_id for m in _queued(world) if isinstance(m, EventChanges) for c in m.changes
    } == {long_id}
