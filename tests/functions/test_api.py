"""The HTTP API, calling the decorated functions with func.HttpRequest over fake ports:
bad input gets a clear 4xx naming the field, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

import function_app
from functions import bookings, openapi, resources
from functions.http import domain_error_response
from functions.openapi import OPERATIONS
from shared.domain.calendar import ShowAs
from shared.domain.errors import (
    DomainError,
    GraphThrottled,
    GraphTransient,
    TransactionTooLarge,
)
from shared.domain.resources import ConnectionStatus
from tests.builders import T0, busy_block
from tests.fakes import Clock, FakeWorld, fake_world
from tests.fixtures.callers import EVERY_ROLE

MAILBOXES = ("room-1@contoso.com", "alice@contoso.com")


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    w = fake_world(Clock(T0 - timedelta(days=1)), MAILBOXES)
    for module in (bookings, resources):
        monkeypatch.setattr(module, "get_services", lambda: w.services)
    for resource_id in ("room-1", "alice"):
        status, _ = await call(
            resources.put_resource,
            "PUT",
            {"resourceId": resource_id},
            {"mailbox": f"{resource_id}@contoso.com", "displayName": resource_id},
        )
        assert status == 202  # connecting: the worker subscribes and pulls
    await w.finish_connects()
    return w


async def call(
    function: Any,
    method: str,
    route_params: dict[str, str] | None = None,
    body: object = None,
    *,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    handler: Callable[[func.HttpRequest], Any] = function.build().get_user_function()
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    request = func.HttpRequest(
        method=method,
        url="http://localhost/api/x",
        body=data,
        headers={**EVERY_ROLE, **(headers or {})},
        params=params or {},
        route_params=route_params or {},
    )
    response: func.HttpResponse = await handler(request)
    payload = response.get_body()
    return response.status_code, json.loads(payload) if payload else None


def booking_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceIds": ["room-1"],
        "start": (T0).isoformat(),
        "end": (T0 + timedelta(hours=1)).isoformat(),
        "title": "Intro call",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    }
    body.update(overrides)
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {detail["field"] for detail in body["error"]["details"]}


async def test_create_get_cancel_round_trip(world: FakeWorld) -> None:
    status, created = await call(bookings.create_booking, "POST", body=booking_body())
    assert status == 201
    assert created["status"] == "confirmed"
    assert created["sync"][0]["resourceId"] == "room-1"

    status, fetched = await call(bookings.get_booking, "GET", {"bookingId": created["bookingId"]})
    assert (status, fetched["bookingId"]) == (200, created["bookingId"])

    status, cancelled = await call(
        bookings.cancel_booking, "POST", {"bookingId": created["bookingId"]}
    )
    assert (status, cancelled["status"]) == (200, "cancelled")
    status, again = await call(bookings.cancel_booking, "POST", {"bookingId": created["bookingId"]})
    assert (status, again["status"]) == (200, "cancelled")


async def test_a_nul_in_the_title_is_422_naming_the_field_and_books_nothing(
    world: FakeWorld,
) -> None:
    status, body = await call(bookings.create_booking, "POST", body=booking_body(title="a\x00b"))
    assert (status, body["error"]["code"]) == (422, "invalid_input")
    assert error_fields(body) == {"title"}
    assert world.bookings.rows == {}
    assert world.outbound() == []


async def test_overlap_is_409_slot_unavailable(world: FakeWorld) -> None:
    await call(bookings.create_booking, "POST", body=booking_body())
    status, body = await call(bookings.create_booking, "POST", body=booking_body())
    assert status == 409
    assert body["error"]["code"] == "slot_unavailable"


async def test_idempotency_replay_and_other_body(world: FakeWorld) -> None:
    headers = {"Idempotency-Key": "abc"}
    s1, first = await call(bookings.create_booking, "POST", body=booking_body(), headers=headers)
    s2, second = await call(bookings.create_booking, "POST", body=booking_body(), headers=headers)
    s3, other = await call(
        bookings.create_booking, "POST", body=booking_body(title="Else"), headers=headers
    )
    assert (s1, s2) == (201, 201)
    assert first == second
    assert s3 == 422
    assert other["error"]["code"] == "idempotency_key_reused"


async def test_reschedule_into_taken_slot_is_409(world: FakeWorld) -> None:
    _, a = await call(bookings.create_booking, "POST", body=booking_body())
    later = T0 + timedelta(hours=2)
    await call(
        bookings.create_booking,
        "POST",
        body=booking_body(start=later.isoformat(), end=(later + timedelta(hours=1)).isoformat()),
    )
    status, _ = await call(
        bookings.reschedule_booking,
        "POST",
        {"bookingId": a["bookingId"]},
        {"start": later.isoformat(), "end": (later + timedelta(minutes=30)).isoformat()},
    )
    assert status == 409
    _, unchanged = await call(bookings.get_booking, "GET", {"bookingId": a["bookingId"]})
    assert unchanged["start"] == a["start"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2]", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        # JSON is UTF-8 (RFC 8259 §8.1): a well-formed booking in UTF-16 or with a BOM is not.
        (json.dumps(booking_body()).encode("utf-16"), 400, "malformed_json"),
        (b"\xef\xbb\xbf" + json.dumps(booking_body()).encode(), 400, "malformed_json"),
        (b'{"title": "\xff"}', 400, "malformed_json"),
        (b"{" + b'"a":"' + b"x" * 70_000 + b'"}', 413, "body_too_large"),
    ],
)
async def test_malformed_bodies(world: FakeWorld, raw: bytes, status: int, code: str) -> None:
    got, body = await call(bookings.create_booking, "POST", raw=raw)
    assert (got, body["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start": "2030-01-07T09:00:00"}, "start"),
        ({"resourceIds": [f"r{i}" for i in range(21)]}, "resourceIds"),
        ({"resourceIds": ["room-1", "ghost"]}, "resourceIds.1"),
        ({"title": ""}, "title"),
        ({"customer": {"name": "Ada"}}, "customer.email"),
        ({"resourceIds": None}, "resourceIds"),
    ],
)
async def test_invalid_booking_names_the_field(
    world: FakeWorld, overrides: dict[str, Any], field: str
) -> None:
    status, body = await call(bookings.create_booking, "POST", body=booking_body(**overrides))
    assert status == 422
    assert field in error_fields(body)
    assert body["error"]["message"]


async def test_missing_fields_are_all_named(world: FakeWorld) -> None:
    status, body = await call(bookings.create_booking, "POST", body={})
    assert status == 422
    assert {"resourceIds", "start", "end", "title", "customer"} <= error_fields(body)


async def test_unknown_booking_and_bad_ids(world: FakeWorld) -> None:
    status, body = await call(bookings.get_booking, "GET", {"bookingId": "nope"})
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await call(bookings.get_booking, "GET", {"bookingId": "../etc"})
    assert (status, error_fields(body)) == (422, {"bookingId"})


async def test_availability_and_its_query_errors(world: FakeWorld) -> None:
    await call(bookings.create_booking, "POST", body=booking_body())
    params = {
        "start": T0.isoformat(),
        "end": (T0 + timedelta(hours=2)).isoformat(),
        "durationMinutes": "30",
    }
    status, body = await call(
        resources.get_availability, "GET", {"resourceId": "room-1"}, params=params
    )
    assert status == 200
    assert [b["source"] for b in body["busy"]] == ["booking"]
    assert [s["start"] for s in body["freeSlots"]] == [
        (T0 + timedelta(minutes=60)).isoformat().replace("+00:00", "Z"),
        (T0 + timedelta(minutes=90)).isoformat().replace("+00:00", "Z"),
    ]

    status, body = await call(
        resources.get_availability, "GET", {"resourceId": "room-1"}, params={"start": "x"}
    )
    assert status == 422
    assert {"start", "end"} <= error_fields(body)


async def test_availability_answers_its_fields_in_order_camel_cased_and_nothing_private(
    world: FakeWorld,
) -> None:
    created = (await call(bookings.create_booking, "POST", body=booking_body()))[1]
    secret = busy_block(
        "ev-1",
        T0 + timedelta(minutes=90),
        show_as=ShowAs.TENTATIVE,
        summary="Board meeting",
        change_key="ck-1",
    )
    await world.ports.unavailability.replace_event("room-1", "ev-1", [secret])
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()}

    status, body = await call(
        resources.get_availability, "GET", {"resourceId": "room-1"}, params=params
    )

    def z(minutes: int) -> str:
        return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

    assert status == 200
    assert json.dumps(body) == json.dumps(
        {
            "resourceId": "room-1",
            "start": z(0),
            "end": z(180),
            "durationMinutes": 30,
            "busy": [
                {
                    "start": z(0),
                    "end": z(60),
                    "source": "booking",
                    "showAs": None,
                    "bookingId": created["bookingId"],
                },
                {
                    "start": z(90),
                    "end": z(120),
                    "source": "calendar",
                    "showAs": "tentative",
                    "bookingId": None,
                },
            ],
            "freeSlots": [
                {"start": z(60), "end": z(90)},
                {"start": z(120), "end": z(150)},
                {"start": z(150), "end": z(180)},
            ],
        }
    )


async def test_stale_mirror_answers_503(world: FakeWorld) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    stale = ConnectionStatus(mirror_refreshed_at=T0 - timedelta(days=30))
    await world.resources.update(stored.value.model_copy(update={"status": stale}), stored.etag)

    status, body = await call(bookings.create_booking, "POST", body=booking_body())

    assert status == 503
    assert body["error"]["code"] == "calendar_unavailable"
    assert "older than" in body["error"]["message"]


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (GraphTransient("Graph answered 503"), "5"),
        (GraphThrottled("Graph answered 429", retry_after_seconds=30), "30"),
        (GraphThrottled("Graph answered 429", retry_after_seconds=9000), "120"),
    ],
    ids=["down", "throttled", "throttled-long"],
)
async def test_a_live_calendar_graph_cannot_read_for_a_moment_says_when_to_retry(
    world: FakeWorld, error: DomainError, retry_after: str
) -> None:
    # The live look at the slot met a passing Graph failure: the same code as a resource
    # that is not healthy, but this one passes, and the answer says when to send again.
    world.calendar.fail("room-1@contoso.com", error)
    handler: Callable[[func.HttpRequest], Any] = bookings.create_booking.build().get_user_function()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/bookings",
        body=json.dumps(booking_body()).encode(),
        headers=dict(EVERY_ROLE),
        params={},
        route_params={},
    )

    response: func.HttpResponse = await handler(request)

    assert response.status_code == 503
    assert json.loads(response.get_body())["error"]["code"] == "calendar_unavailable"
    assert response.headers.get("Retry-After") == retry_after


async def test_a_resource_that_is_not_healthy_answers_503_without_retry_after(
    world: FakeWorld,
) -> None:
    stored = await world.resources.get("room-1")
    assert stored is not None
    stale = ConnectionStatus(mirror_refreshed_at=T0 - timedelta(days=30))
    await world.resources.update(stored.value.model_copy(update={"status": stale}), stored.etag)
    handler: Callable[[func.HttpRequest], Any] = bookings.create_booking.build().get_user_function()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/bookings",
        body=json.dumps(booking_body()).encode(),
        headers=dict(EVERY_ROLE),
        params={},
        route_params={},
    )

    response: func.HttpResponse = await handler(request)

    assert response.status_code == 503
    assert "Retry-After" not in response.headers


async def test_put_resource_validates_and_checks_the_mailbox(world: FakeWorld) -> None:
    status, body = await call(
        resources.put_resource,
        "PUT",
        {"resourceId": "r2"},
        {"mailbox": "nobody@contoso.com", "displayName": "R2"},
    )
    assert (status, error_fields(body)) == (422, {"mailbox"})
    status, body = await call(
        resources.put_resource,
        "PUT",
        {"resourceId": "r2"},
        {"mailbox": "alice@contoso.com", "displayName": "R2", "direction": "up", "timeZone": "X/Y"},
    )
    assert (status, error_fields(body)) == (422, {"direction", "timeZone"})


async def test_get_resource_shows_status(world: FakeWorld) -> None:
    status, body = await call(resources.get_resource, "GET", {"resourceId": "room-1"})
    assert status == 200
    assert body["status"]["state"] == "connected"
    assert body["status"]["mirrorRefreshedAt"] is not None
    assert body["settings"]["mailbox"] == "room-1@contoso.com"


def registered_routes() -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    # get_functions() refuses names it has listed before (the local host lists them too).
    function_app.app.functions_bindings = None
    for function in function_app.app.get_functions():
        declared = function.get_trigger()
        assert declared is not None
        trigger = declared.get_dict_repr()
        if trigger["type"] == "httpTrigger":
            for method in trigger["methods"]:
                routes.add((str(method.value), trigger["route"]))
    return routes


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    documented = {(op.method, op.route) for op in OPERATIONS}
    assert documented == registered_routes()


async def test_openapi_document_is_served() -> None:
    status, spec = await call(openapi.openapi, "GET")
    assert status == 200
    assert spec["openapi"] == "3.1.0"
    schema = spec["paths"]["/api/bookings"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["$ref"] == "#/components/schemas/BookingRequest"
    assert "resourceIds" in spec["components"]["schemas"]["BookingRequest"]["properties"]


async def test_a_template_with_a_format_spec_is_refused_before_any_push(world: FakeWorld) -> None:
    status, body = await call(
        resources.put_resource,
        "PUT",
        {"resourceId": "room-1"},
        {
            "mailbox": "room-1@contoso.com",
            "displayName": "Room 1",
            "subjectTemplate": "Training: {title:>1000000000}",
        },
    )
    assert (status, error_fields(body)) == (422, {"subjectTemplate"})
    assert "{title:>1000000000}" in body["error"]["details"][0]["message"]
    stored = await world.resources.get("room-1")
    assert stored is not None
    assert stored.value.settings.subject_template == "{title}"


@pytest.mark.parametrize(
    ("start", "end", "code", "field"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T01:00:00Z", "invalid_input", "start,end"),
        ("9999-12-31T00:00:00Z", "9999-12-31T01:00:00Z", "beyond_horizon", "end"),
        ("2029-01-01T09:00:00Z", "2029-01-01T10:00:00Z", "start_in_past", "start"),
        ("2030-09-15T09:00:00Z", "2030-09-15T10:00:00Z", "beyond_horizon", "end"),
        ("2030-01-07T09:00:00Z", "2030-04-06T09:00:00Z", "duration_too_long", "end"),
    ],
)
async def test_a_booking_outside_the_window_is_422_and_never_written(
    world: FakeWorld, start: str, end: str, code: str, field: str
) -> None:
    status, body = await call(
        bookings.create_booking, "POST", body=booking_body(start=start, end=end)
    )
    assert (status, body["error"]["code"]) == (422, code)
    assert error_fields(body) == set(field.split(","))
    assert world.ports.bookings.rows == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:30:00-01:00",  # after year 9999 in UTC
        "1600-12-31T23:59:59Z",  # before Table Storage's first date
        1_900_000_000,  # an epoch integer
        "1900000000",  # the same, as text
        1.9e9,
        True,
    ],
)
async def test_a_datetime_that_is_not_an_iso_8601_string_in_range_is_422(
    world: FakeWorld, value: object
) -> None:
    status, body = await call(bookings.create_booking, "POST", body=booking_body(start=value))
    assert (status, error_fields(body)) == (422, {"start"})
    status, body = await call(
        resources.get_availability,
        "GET",
        {"resourceId": "room-1"},
        params={"start": str(value), "end": "2030-01-08T00:00:00Z"},
    )
    assert (status, error_fields(body)) == (422, {"start"})


@pytest.mark.parametrize(
    ("start", "end", "code"),
    [
        ("2030-01-07T09:00:00Z", "2030-04-06T09:00:00Z", "duration_too_long"),  # 89 days
        ("2030-01-07T09:00:00Z", "2031-01-07T09:00:00Z", "duration_too_long"),  # a year
        ("2030-12-01T09:00:00Z", "2030-12-01T10:00:00Z", "beyond_horizon"),
    ],
)
async def test_reschedule_outside_the_window_is_422(
    world: FakeWorld, start: str, end: str, code: str
) -> None:
    _, created = await call(bookings.create_booking, "POST", body=booking_body())
    status, body = await call(
        bookings.reschedule_booking,
        "POST",
        {"bookingId": created["bookingId"]},
        {"start": start, "end": end},
    )
    assert (status, body["error"]["code"]) == (422, code)
    _, unchanged = await call(bookings.get_booking, "GET", {"bookingId": created["bookingId"]})
    assert (unchanged["start"], unchanged["end"]) == (created["start"], created["end"])


async def test_availability_beyond_the_horizon_is_422(world: FakeWorld) -> None:
    params = {"start": "2030-06-20T00:00:00Z", "end": "2030-07-20T00:00:00Z"}
    status, body = await call(
        resources.get_availability, "GET", {"resourceId": "room-1"}, params=params
    )
    assert (status, body["error"]["code"]) == (422, "beyond_horizon")
    assert "180 days" in body["error"]["message"]


async def test_deeply_nested_json_is_400_on_every_json_route(world: FakeWorld) -> None:
    nested = b"[" * 60_000
    for function, route in (
        (bookings.create_booking, {}),
        (bookings.reschedule_booking, {"bookingId": "bk-1"}),
        (resources.put_resource, {"resourceId": "room-1"}),
    ):
        status, body = await call(function, "POST", route, raw=nested)
        assert (status, body["error"]["code"]) == (400, "malformed_json")


@pytest.mark.parametrize(
    "key",
    [
        "caf\udce9",  # a byte that was not UTF-8, as the worker hands it over
        "café",
        "tab\there",
        "line\nbreak",
        "x" * 256,
        " ",
    ],
)
async def test_an_idempotency_key_that_is_not_printable_ascii_is_422(
    world: FakeWorld, key: str
) -> None:
    status, body = await call(
        bookings.create_booking, "POST", body=booking_body(), headers={"Idempotency-Key": key}
    )
    assert (status, error_fields(body)) == (422, {"Idempotency-Key"})
    assert world.ports.bookings.rows == {}  # type: ignore[attr-defined]


async def test_a_route_id_with_a_trailing_newline_is_422(world: FakeWorld) -> None:
    _, created = await call(bookings.create_booking, "POST", body=booking_body())
    for function, route in (
        (bookings.get_booking, {"bookingId": created["bookingId"] + "\n"}),
        (bookings.cancel_booking, {"bookingId": created["bookingId"] + "\n"}),
        (resources.get_resource, {"resourceId": "room-1\n"}),
    ):
        status, body = await call(function, "GET", route)
        assert (status, body["error"]["code"]) == (422, "invalid_input")


def every_subclass(kind: type[DomainError]) -> list[type[DomainError]]:
    return [kind, *(sub for child in kind.__subclasses__() for sub in every_subclass(child))]


def test_every_domain_error_has_a_status_other_than_500() -> None:
    # DomainError itself is never raised; an unlisted kind is a bug, and answers 500.
    for kind in every_subclass(DomainError)[1:]:
        response = domain_error_response(kind("x"))
        assert response.status_code != 500, kind.__name__


async def test_a_table_transaction_too_large_is_422_not_500(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise TransactionTooLarge("more than 100 entities in one transaction")

    monkeypatch.setattr(world.ports.slot_ledger, "write_days", refused)
    status, body = await call(bookings.create_booking, "POST", body=booking_body())
    assert (status, body["error"]["code"]) == (422, "transaction_invalid")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_declared_as_anything_but_json_is_415(
    world: FakeWorld, content_type: str
) -> None:
    status, body = await call(
        bookings.create_booking, "POST", body=booking_body(), headers={"Content-Type": content_type}
    )
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    assert content_type in body["error"]["message"]
    assert world.ports.bookings.rows == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_bodies_are_taken_with_or_without_a_charset(
    world: FakeWorld, content_type: str
) -> None:
    status, _ = await call(
        bookings.create_booking, "POST", body=booking_body(), headers={"Content-Type": content_type}
    )
    assert status == 201


async def test_put_resource_answers_202_and_the_worker_finishes_the_connect(
    world: FakeWorld,
) -> None:
    """PUT must not subscribe inline: Graph's validation POST needs an HTTP invocation of
    its own, and a Flex Consumption instance may run only one (functions-concurrency)."""
    world.calendar.events["carol@contoso.com"] = {}
    body = {"mailbox": "carol@contoso.com", "displayName": "Carol"}
    status, view = await call(resources.put_resource, "PUT", {"resourceId": "r3"}, body)

    assert status == 202
    assert view["status"]["state"] == "connecting"
    assert view["subscription"]["id"] is None
    _, unavailable = await call(
        resources.get_availability,
        "GET",
        {"resourceId": "r3"},
        params={
            "start": (T0 + timedelta(days=1)).isoformat(),
            "end": (T0 + timedelta(days=2)).isoformat(),
        },
    )
    assert "still connecting" in unavailable["error"]["message"]

    await world.finish_connects()

    status, view = await call(resources.get_resource, "GET", {"resourceId": "r3"})
    assert view["status"]["state"] == "connected"
    assert view["subscription"]["id"] is not None
    # A PUT that changes no mailbox is an update, answered at once.
    status, _ = await call(resources.put_resource, "PUT", {"resourceId": "r3"}, body)
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"end": T0.isoformat()}, "end"),
        ({"end": (T0 - timedelta(minutes=30)).isoformat()}, "end"),
        ({"resourceIds": ["room-1", "room-1"]}, "resourceIds"),
    ],
)
async def test_create_refusal_names_the_field_to_fix(
    world: FakeWorld, overrides: dict[str, Any], field: str
) -> None:
    status, body = await call(bookings.create_booking, "POST", body=booking_body(**overrides))
    assert status == 422
    assert error_fields(body) == {field}
    assert field in body["error"]["message"]


async def test_reschedule_names_end_when_it_is_not_after_start(world: FakeWorld) -> None:
    """What create is measured against above: the same refusal on reschedule."""
    _, created = await call(bookings.create_booking, "POST", body=booking_body())
    status, body = await call(
        bookings.reschedule_booking,
        "POST",
        {"bookingId": created["bookingId"]},
        {
            "start": (T0 + timedelta(hours=2)).isoformat(),
            "end": (T0 + timedelta(hours=1)).isoformat(),
        },
    )
    assert status == 422
    assert error_fields(body) == {"end"}
