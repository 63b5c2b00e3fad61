"""msgraph-sdk's own client (kiota, httpx, default middleware) pointed at the emulator, as the
app's Graph adapter will be: URL templates such as ``calendarView/delta()``, PascalCase
action bodies, Prefer headers and nextLink/deltaLink following must all work."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration

from local.graph_emulator import RunningEmulator
from tests.emulator.support import BOOKING_PROPERTY, TEST_TOKEN, Receiver

# msgraph-sdk's request builders warn about their own deprecated classes while loading.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.event_type import EventType
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.single_value_legacy_extended_property import (
        SingleValueLegacyExtendedProperty,
    )
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.users.item.calendar.get_schedule.get_schedule_post_request_body import (
        GetSchedulePostRequestBody,
    )
    from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
        CalendarViewRequestBuilder,
    )
    from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
        DeltaRequestBuilder,
    )
    from msgraph.generated.users.item.events.item.event_item_request_builder import (
        EventItemRequestBuilder,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory

# The generated request builders warn about their own deprecated classes when first used.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated.*:DeprecationWarning")

ALICE = "alice@contoso.com"


class _StaticToken(AccessTokenProvider):
    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return TEST_TOKEN

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


@pytest_asyncio.fixture
async def sdk(emulator: RunningEmulator) -> AsyncIterator[GraphServiceClient]:
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient())
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_StaticToken()), http)
    adapter.base_url = emulator.graph_url
    try:
        yield GraphServiceClient(request_adapter=adapter)
    finally:
        await http.aclose()


def _when(value: str) -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=value, time_zone="Europe/Paris")


def _config(query: Any = None) -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    config.headers.add("Prefer", 'IdType="ImmutableId"')
    return config


async def test_sdk_client_round_trip(sdk: GraphServiceClient) -> None:
    user = sdk.users.by_user_id(ALICE)
    new_event = Event(
        subject="Booking 7",
        transaction_id="booking-7",
        start=_when("2025-06-02T09:00:00"),
        end=_when("2025-06-02T10:00:00"),
        single_value_extended_properties=[
            SingleValueLegacyExtendedProperty(id=BOOKING_PROPERTY, value="7")
        ],
    )
    created = await user.events.post(new_event, request_configuration=_config())
    retried = await user.events.post(new_event, request_configuration=_config())
    assert created is not None
    assert retried is not None
    assert retried.id == created.id
    assert created.id is not None

    expanded = await user.events.by_event_id(created.id).get(
        request_configuration=_config(
            EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
                expand=[f"singleValueExtendedProperties($filter=id eq '{BOOKING_PROPERTY}')"]
            )
        )
    )
    assert expanded is not None
    assert [p.value for p in expanded.single_value_extended_properties or []] == ["7"]

    view_config = _config(
        CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time="2025-06-01T00:00:00Z", end_date_time="2025-06-03T00:00:00Z"
        )
    )
    view_config.headers.add("Prefer", 'outlook.timezone="Europe/Paris"')
    view = await user.calendar_view.get(request_configuration=view_config)
    assert view is not None
    assert [(e.subject, e.start.date_time if e.start else None) for e in view.value or []] == [
        ("Booking 7", "2025-06-02T09:00:00.0000000")
    ]

    first_round = await user.calendar_view.delta.get(
        request_configuration=_config(
            DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                start_date_time="2025-06-01T00:00:00Z", end_date_time="2025-06-03T00:00:00Z"
            )
        )
    )
    assert first_round is not None
    assert first_round.odata_delta_link is not None
    assert [e.type for e in first_round.value or []] == [EventType.SingleInstance]
    await user.events.by_event_id(created.id).delete()
    second_round = await user.calendar_view.delta.with_url(first_round.odata_delta_link).get()
    assert second_round is not None
    removed = second_round.value or []
    assert [(e.id, e.additional_data.get("@removed")) for e in removed] == [
        (created.id, {"reason": "deleted"})
    ]

    # The DELETE was soft: the item is in Deleted Items until permanentDelete purges it.
    soft_deleted = await user.events.by_event_id(created.id).get()
    assert soft_deleted is not None
    await user.events.by_event_id(created.id).permanent_delete.post()
    with pytest.raises(ODataError) as raised:
        await user.events.by_event_id(created.id).get()
    assert raised.value.response_status_code == 404
    assert raised.value.error is not None
    assert raised.value.error.code == "ErrorItemNotFound"


async def test_sdk_subscription_and_get_schedule(
    sdk: GraphServiceClient, receiver: Receiver
) -> None:
    subscription = await sdk.subscriptions.post(
        Subscription(
            change_type="created,updated,deleted",
            notification_url=receiver.notification_url,
            lifecycle_notification_url=receiver.lifecycle_url,
            resource=f"/users/{ALICE}/events",
            expiration_date_time=datetime.now(UTC) + timedelta(minutes=10_000),
            client_state="sdk-state",
        )
    )
    assert subscription is not None
    assert subscription.id is not None
    renewed = await sdk.subscriptions.by_subscription_id(subscription.id).patch(
        Subscription(expiration_date_time=datetime.now(UTC) + timedelta(minutes=9_000))
    )
    assert renewed is not None
    assert renewed.expiration_date_time != subscription.expiration_date_time

    await sdk.users.by_user_id(ALICE).events.post(
        Event(subject="x", start=_when("2025-06-02T09:00:00"), end=_when("2025-06-02T10:00:00"))
    )
    await receiver.wait_for(lambda r: len(r.notifications) == 1)
    assert receiver.notifications[0]["clientState"] == "sdk-state"

    schedule = await sdk.users.by_user_id(ALICE).calendar.get_schedule.post(
        GetSchedulePostRequestBody(
            schedules=[ALICE],
            start_time=DateTimeTimeZone(date_time="2025-06-02T06:00:00", time_zone="UTC"),
            end_time=DateTimeTimeZone(date_time="2025-06-02T09:00:00", time_zone="UTC"),
            availability_view_interval=60,
        )
    )
    assert schedule is not None
    assert [s.availability_view for s in schedule.value or []] == ["020"]
