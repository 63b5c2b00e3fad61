"""The emulator's JSON must deserialize through msgraph-sdk's own models, the way the app's
Graph adapter will read it."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from kiota_abstractions.serialization import Parsable, ParsableFactory
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory

from tests.emulator.support import BOOKING_PROPERTY, GraphClient, Receiver, event_body

# msgraph-sdk's request builders warn about their own deprecated classes while loading.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.event_collection_response import EventCollectionResponse
    from msgraph.generated.models.event_type import EventType
    from msgraph.generated.models.free_busy_status import FreeBusyStatus
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.sensitivity import Sensitivity
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.users.item.calendar_view.delta.delta_get_response import (
        DeltaGetResponse,
    )

ALICE = "/users/alice@contoso.com"
T = TypeVar("T", bound=Parsable)


def _parse(body: Any, model: ParsableFactory[T]) -> T:
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(body).encode())
    parsed = node.get_object_value(model)
    assert parsed is not None
    return parsed


async def test_events_and_pages_survive_sdk_deserialization(graph: GraphClient) -> None:
    created = await graph.post(
        f"{ALICE}/events",
        event_body(
            "Booking 42",
            "2025-06-02T09:00:00",
            "2025-06-02T10:00:00",
            "Europe/Paris",
            showAs="tentative",
            sensitivity="confidential",
            singleValueExtendedProperties=[{"id": BOOKING_PROPERTY, "value": "42"}],
            recurrence={
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2025-06-02", "numberOfOccurrences": 12},
            },
        ),
    )
    fetched = await graph.get(
        f"{ALICE}/events/{quote(created.body['id'], safe='')}",
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{BOOKING_PROPERTY}')"},
    )
    event = _parse(fetched.body, Event)
    assert event.id == created.body["id"]
    assert event.change_key == created.body["changeKey"]
    assert event.subject == "Booking 42"
    assert event.type == EventType.SeriesMaster
    assert event.show_as == FreeBusyStatus.Tentative
    assert event.sensitivity == Sensitivity.Confidential
    assert event.is_all_day is False
    assert event.start is not None
    assert event.start.date_time == "2025-06-02T07:00:00.0000000"
    assert event.start.time_zone == "UTC"
    assert event.end is not None
    assert event.end.date_time == "2025-06-02T08:00:00.0000000"
    assert event.recurrence is not None
    assert event.recurrence.range is not None
    assert event.recurrence.range.number_of_occurrences == 12
    properties = event.single_value_extended_properties or []
    assert [(p.id, p.value) for p in properties] == [(BOOKING_PROPERTY, "42")]
    assert event.last_modified_date_time is not None

    page = await graph.get(
        f"{ALICE}/calendarView",
        params={"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2025-09-01T00:00:00Z"},
    )
    collection = _parse(page.body, EventCollectionResponse)
    assert collection.odata_next_link == page.body["@odata.nextLink"]
    occurrences = collection.value or []
    assert len(occurrences) == 10
    assert occurrences[0].type == EventType.Occurrence
    assert occurrences[0].series_master_id == event.id

    delta = await graph.get(
        f"{ALICE}/calendarView/delta",
        params={"startDateTime": "2025-06-01T00:00:00Z", "endDateTime": "2025-06-05T00:00:00Z"},
    )
    delta_page = _parse(delta.body, DeltaGetResponse)
    assert delta_page.odata_delta_link == delta.body["@odata.deltaLink"]
    assert [e.type for e in delta_page.value or []] == [EventType.Occurrence]

    missing = await graph.get(f"{ALICE}/events/AAMkAGnope")
    error = _parse(missing.body, ODataError)
    assert error.error is not None
    assert error.error.code == "ErrorItemNotFound"


async def test_subscription_survives_sdk_deserialization(
    graph: GraphClient, receiver: Receiver
) -> None:
    expiry = datetime.now(UTC) + timedelta(days=6)
    reply = await graph.post(
        "/subscriptions",
        {
            "changeType": "created,updated,deleted",
            "notificationUrl": receiver.notification_url,
            "lifecycleNotificationUrl": receiver.lifecycle_url,
            "resource": "users/alice@contoso.com/events",
            "expirationDateTime": expiry.isoformat(),
            "clientState": "state-1",
        },
    )
    subscription = _parse(reply.body, Subscription)
    assert subscription.id == reply.body["id"]
    assert subscription.client_state == "state-1"
    assert subscription.change_type == "created,updated,deleted"
    assert subscription.lifecycle_notification_url == receiver.lifecycle_url
    assert subscription.expiration_date_time is not None
    assert abs((subscription.expiration_date_time - expiry).total_seconds()) < 1
