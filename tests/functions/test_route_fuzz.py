"""Every route, fuzzed in process from the app's own OpenAPI document (hypothesis, with
schemathesis drawing the cases) over fake ports: whatever a client or a stranger sends,
no answer is a 5xx, every refusal is an error body in the contract's shape with a status
the document lists, and a refused request leaves no queue message, no table row and no
Graph write behind. The webhook routes also get Graph-shaped bodies for a real
subscription, trusted or not. (tests/reliability/test_api_fuzz.py fuzzes the same
document over HTTP against the whole local stack.)"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.result import Ok

import function_app
from functions import bookings, graph, health, resources
from functions.openapi import OPERATIONS, build_openapi, error_codes
from shared.domain.calendar import SubscriptionRecord
from tests.builders import T0, booking_request
from tests.fakes import Clock, FakeWorld, fake_world
from tests.fixtures.callers import EVERY_ROLE

EXAMPLES_PER_OPERATION = 30
ROOM = "room-1@contoso.com"
SUBSCRIPTION = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
CLIENT_STATE = "a-long-random-client-state"
TENANT = "00000000-0000-0000-0000-0000000000aa"  # fake_world's GRAPH_TENANT_ID

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def handlers() -> dict[tuple[str, str], Handler]:
    found: dict[tuple[str, str], Handler] = {}
    # get_functions() refuses names it has listed before (the local host lists them too).
    function_app.app.functions_bindings = None
    for function in function_app.app.get_functions():
        declared = function.get_trigger()
        assert declared is not None
        trigger = declared.get_dict_repr()
        if trigger["type"] == "httpTrigger":
            for method in trigger["methods"]:
                found[(str(method.value), trigger["route"])] = function.get_user_function()
    return found


HANDLERS = handlers()
# A valid body per route taking one: the fuzzed fields are laid over it half the time, so
# that edgy values reach the services, not only the first validation error.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "bookings": {
        "resourceIds": ["room-1"],
        "start": (T0 + timedelta(hours=2)).isoformat(),
        "end": (T0 + timedelta(hours=3)).isoformat(),
        "title": "Fuzzed",
        "customer": {"name": "Ada", "email": "ada@example.com"},
    },
    "bookings/{bookingId}/reschedule": {
        "start": (T0 + timedelta(hours=4)).isoformat(),
        "end": (T0 + timedelta(hours=5)).isoformat(),
    },
    "resources/{resourceId}": {"mailbox": ROOM, "displayName": "Room 1"},
}
# The error codes each operation documents, by status.
DOCUMENTED_ERRORS = {
    (op.method, f"/api/{op.route}"): {
        status: {kind.code for kind in kinds} for status, kinds in error_codes(op).items()
    }
    for op in OPERATIONS
}


NOW = T0 - timedelta(days=1)


async def world_with_a_booking() -> tuple[FakeWorld, dict[str, str]]:
    w = fake_world(Clock(NOW), (ROOM,))
    await w.services.resources.put("room-1", _settings())
    await w.finish_connects()
    view = await w.services.bookings.create(booking_request(), None)
    await w.ports.subscriptions.save(
        SubscriptionRecord(
            subscription_id=SUBSCRIPTION,
            resource_id="room-1",
            mailbox=ROOM,
            client_state=SecretStr(CLIENT_STATE),
            expires_at=T0 + timedelta(days=3),
            created_at=T0,
        )
    )
    return w, {"resourceId": "room-1", "bookingId": view.booking_id}


def _settings() -> Any:
    from shared.domain.resources import ResourceSettings

    return ResourceSettings(mailbox=ROOM, display_name="Room 1")


def state(w: FakeWorld) -> dict[str, Any]:
    """What a request can leave behind: rows (by value; a day of the slot ledger with no
    claim counts as none), queue messages, mirror blocks, sync log, leases, Graph's
    events, transactionIds and subscriptions created."""
    found: dict[str, Any] = {}
    for name, port in vars(w.ports).items():
        rows = getattr(port, "rows", None)
        if rows is not None:
            found[name] = {
                key: stored.value
                for key, stored in rows.items()
                if name != "slot_ledger" or stored.value.claims
            }
        for attribute in ("blocks", "entries", "sent", "held"):
            if hasattr(port, attribute):
                found[f"{name}.{attribute}"] = copy.deepcopy(getattr(port, attribute))
    found["graph"] = (
        copy.deepcopy(w.calendar.events),
        dict(w.calendar.transactions),
        repr(w.calendar._ids),  # subscriptions created
    )
    return found


@st.composite
def graph_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A notification POST as Graph sends it, for our subscription or not, trusted or not."""
    item = st.fixed_dictionaries(
        {
            "subscriptionId": st.sampled_from(
                [SUBSCRIPTION, "11111111-2222-4333-8444-555555555555"]
            ),
            "clientState": st.sampled_from([CLIENT_STATE, "forged", None]),
            "tenantId": st.sampled_from([TENANT, "99999999-0000-0000-0000-000000000000"]),
        },
        optional={
            "changeType": st.sampled_from(["created", "updated", "deleted", "missed", ""]),
            "lifecycleEvent": st.sampled_from(
                ["missed", "reauthorizationRequired", "subscriptionRemoved", "other\n"]
            ),
            "resource": st.text(max_size=40),
            "resourceData": st.fixed_dictionaries(
                {},
                optional={
                    "id": st.text(max_size=40),
                    "@odata.etag": st.text(max_size=20),
                    "@odata.type": st.just("#Microsoft.Graph.Event"),
                },
            ),
        },
    )
    return {"value": draw(st.lists(item, max_size=5))}


async def send(
    method: str,
    route: str,
    path_parameters: dict[str, str],
    query: dict[str, Any],
    headers: dict[str, str],
    body: bytes,
) -> func.HttpResponse:
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost/api/{route}",
        body=body,
        headers={**headers, **EVERY_ROLE},  # as Easy Auth passes a caller on
        params={name: str(value) for name, value in query.items()},
        route_params=path_parameters,
    )
    return await HANDLERS[(method, route)](request)


def check(method: str, path: str, response: func.HttpResponse, before: Any, after: Any) -> None:
    status = response.status_code
    assert status < 500, f"{method} {path} -> {status}: {response.get_body()[:300]!r}"
    if status >= 400:
        codes = DOCUMENTED_ERRORS[(method, path)].get(status, set())
        assert response.mimetype == "application/json"
        code = json.loads(response.get_body())["error"]["code"]
        assert code in codes, f"{method} {path}: {status} {code} (documented: {codes})"
        changed = sorted(name for name in before if after[name] != before[name])
        assert not changed, (
            f"{method} {path} -> {status} left something in {changed}: "
            + str({name: after[name] for name in changed})[:600]
            + f" {response.get_body()[:300]!r}"
        )


def operations() -> list[Any]:
    schema = schemathesis.openapi.from_dict(build_openapi())
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.append(result.ok())
    return found


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """get_services of every HTTP module, pointed at the current example's world."""
    current: dict[str, Any] = {}
    for module in (bookings, resources, graph, health):
        monkeypatch.setattr(module, "get_services", lambda: current["world"].services)
    return current


@pytest.mark.parametrize("operation", operations(), ids=lambda op: op.label)
def test_no_input_gets_a_5xx_and_a_refusal_leaves_nothing_behind(
    operation: Any, patched: dict[str, Any]
) -> None:
    method = operation.method.upper()
    route = operation.path.removeprefix("/api/")
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    graph_bodies = graph_shaped() if route.startswith("graph/") else st.nothing()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=cases,
        real_ids=st.booleans(),
        graph_body=st.none() | graph_bodies,
        overlay=st.sets(st.integers(0, 6), max_size=2) if route in VALID_BODIES else st.none(),
        # Start (hours from the fake clock's now) and length (hours): the window's edges.
        times=st.none() | st.tuples(st.integers(-400 * 24, 400 * 24), st.integers(-2, 100 * 24)),
    )
    def run(
        case: Any,
        real_ids: bool,
        graph_body: dict[str, Any] | None,
        overlay: set[int] | None,
        times: tuple[int, int] | None,
    ) -> None:
        async def one() -> None:
            world, known = await world_with_a_booking()
            patched["world"] = world
            path_parameters = {
                name: known[name] if real_ids and name in known and method != "DELETE" else value
                for name, value in (case.path_parameters or {}).items()
            }
            headers = {name: str(value) for name, value in (case.headers or {}).items()}
            if graph_body is not None:
                body: bytes = json.dumps(graph_body).encode()
            elif case.body is NOT_SET:
                body = b""
            elif isinstance(case.body, bytes):
                body = case.body
            else:
                fuzzed = case.body
                if overlay and isinstance(fuzzed, dict):
                    # Some of the fuzzed fields (by position) over a valid body.
                    chosen = [k for i, k in enumerate(fuzzed) if i in overlay]
                    fuzzed = {**VALID_BODIES[route], **{k: fuzzed[k] for k in chosen}}
                if times and isinstance(fuzzed, dict) and "end" in VALID_BODIES.get(route, {}):
                    start = NOW + timedelta(hours=times[0])
                    fuzzed = {
                        **fuzzed,
                        "start": start.isoformat(),
                        "end": (start + timedelta(hours=times[1])).isoformat(),
                    }
                body = json.dumps(fuzzed).encode()
                headers.setdefault("Content-Type", "application/json")
            before = state(world)
            response = await send(
                method, route, path_parameters, dict(case.query or {}), headers, body
            )
            check(method, operation.path, response, before, state(world))

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(one())
        finally:
            loop.close()

    run()
