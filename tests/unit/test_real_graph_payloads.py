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
from shared.domain.messages import SYNC_INBOUND_QUEUE, EventChanges, InboundWork, LifecycleEvent
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
