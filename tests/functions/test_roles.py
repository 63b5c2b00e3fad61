"""Who may call what: every HTTP function declares the app roles it takes (or that it is
anonymous on purpose), refuses a request without a readable principal with 401 and a
caller without the role with 403, and the OpenAPI document and the function keys agree
with that table. Callers over the whole local stack: tests/e2e/test_roles_e2e.py."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from functions.http import MAX_PRINCIPAL_CHARS, PRINCIPAL_HEADER, ROUTE_ROLES
from functions.openapi import OPERATIONS, build_openapi
from shared.domain.callers import Caller, ClientPrincipal, PrincipalClaim, Role
from tests.fixtures.callers import ADMIN, EVERY_ROLE, FRONTEND, NO_ROLE, caller

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


@dataclass(frozen=True)
class Route:
    function: str
    method: str
    route: str
    auth_level: str
    handler: Handler


def registered() -> list[Route]:
    routes = []
    # get_functions() refuses names it has listed before (the local host lists them too).
    function_app.app.functions_bindings = None
    for function in function_app.app.get_functions():
        declared = function.get_trigger()
        assert declared is not None
        trigger = declared.get_dict_repr()
        if trigger["type"] != "httpTrigger":
            continue
        for method in trigger["methods"]:
            level = trigger.get("authLevel", func.AuthLevel.FUNCTION)
            routes.append(
                Route(
                    str(function.get_function_name()),
                    str(method.value),
                    trigger["route"],
                    str(getattr(level, "value", level)).lower(),
                    function.get_user_function(),
                )
            )
    return routes


ROUTES = registered()
PROTECTED = [route for route in ROUTES if ROUTE_ROLES.get(route.function)]


def ids(route: Route) -> str:
    return f"{route.method} {route.route}"


def test_every_http_function_declares_its_roles_or_that_it_is_anonymous() -> None:
    undeclared = {route.function for route in ROUTES} - set(ROUTE_ROLES)
    assert not undeclared, f"add @requires(...) or @anonymous to {sorted(undeclared)}"


def test_only_graph_health_and_the_document_are_anonymous() -> None:
    public = {(r.method, r.route) for r in ROUTES if not ROUTE_ROLES[r.function]}
    assert public == {
        ("POST", "graph/notifications"),
        ("POST", "graph/lifecycle"),
        ("GET", "health"),
        ("GET", "openapi.json"),
    }


def test_administration_routes_take_only_administrators() -> None:
    admin_only = {r.route for r in ROUTES if ROUTE_ROLES[r.function] == {Role.ADMIN}}
    assert admin_only == {
        "console",
        "console/{file}",
        "resources",
        "template-preview",
        "resources/{resourceId}",
        "resources/{resourceId}/sync-log",
        "resources/{resourceId}/resync",
        "health/details",
    }


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_the_document_declares_the_roles_each_function_enforces(route: Route) -> None:
    (op,) = [op for op in OPERATIONS if (op.method, op.route) == (route.method, route.route)]
    assert frozenset(op.roles) == ROUTE_ROLES[route.function]
    assert op.auth == route.auth_level.replace("function", "functionKey")


@pytest.mark.parametrize("route", ROUTES, ids=ids)
def test_a_function_key_is_asked_only_where_no_browser_calls(route: Route) -> None:
    """Keys are a second lock for frontends' servers; an administrator's browser (the
    console) cannot keep one, so every route an administrator may call takes none."""
    roles = ROUTE_ROLES[route.function]
    wants_key = bool(roles) and Role.ADMIN not in roles
    assert route.auth_level == ("function" if wants_key else "anonymous")


def test_the_document_declares_401_403_and_the_roles_on_every_protected_operation() -> None:
    spec = build_openapi()
    for op in OPERATIONS:
        declared = spec["paths"][f"/api/{op.route}"][op.method.lower()]
        responses = declared["responses"]
        if not op.roles:
            assert "403" not in responses
            assert all("entraId" not in requirement for requirement in declared["security"])
            continue
        for status, code in (("401", "unauthorized"), ("403", "forbidden")):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            body = spec["components"]["schemas"][ref.rsplit("/", 1)[1] + "Body"]
            assert body["properties"]["code"]["enum"] == [code]
        assert sorted(r["entraId"][0] for r in declared["security"]) == sorted(op.roles)
    assert spec["components"]["securitySchemes"]["entraId"]["scheme"] == "bearer"


async def answer(route: Route, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(
        method=route.method,
        url=f"http://localhost/api/{route.route}",
        body=b"",
        headers=headers,
        route_params={"resourceId": "room-1", "bookingId": "b-1"},
    )
    response = await route.handler(request)
    return response.status_code, json.loads(response.get_body())


def encoded(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


NOT_PRINCIPALS = {
    "missing": {},
    "empty": {PRINCIPAL_HEADER: ""},
    "blank": {PRINCIPAL_HEADER: "   "},
    "not base64": {PRINCIPAL_HEADER: "this is not base64!"},
    "base64 of text": {PRINCIPAL_HEADER: encoded(b"admin")},
    "base64 of bytes": {PRINCIPAL_HEADER: encoded(b"\xff\xfe\x00{")},
    "a JSON list": {PRINCIPAL_HEADER: encoded(b'[{"typ": "roles", "val": "BookingSync.Admin"}]')},
    "no provider": {
        PRINCIPAL_HEADER: encoded(b'{"claims": [{"typ": "roles", "val": "BookingSync.Admin"}]}')
    },
    "claims not a list": {PRINCIPAL_HEADER: encoded(b'{"auth_typ": "aad", "claims": "roles"}')},
    "a claim without a value": {
        PRINCIPAL_HEADER: encoded(b'{"auth_typ": "aad", "claims": [{"typ": "roles"}]}')
    },
    "too long": {PRINCIPAL_HEADER: "A" * (MAX_PRINCIPAL_CHARS + 4)},
    # Only the principal counts: Easy Auth's -ID and -NAME alone are no caller.
    "siblings only": {
        "X-MS-CLIENT-PRINCIPAL-ID": "x",
        "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.com",
    },
}


@pytest.mark.parametrize("route", PROTECTED, ids=ids)
@pytest.mark.parametrize("case", NOT_PRINCIPALS)
async def test_without_a_readable_principal_every_protected_route_answers_401(
    route: Route, case: str
) -> None:
    status, body = await answer(route, NOT_PRINCIPALS[case])
    assert (status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("route", PROTECTED, ids=ids)
@pytest.mark.parametrize(
    "headers",
    [
        NO_ROLE,
        caller(name="someone"),
        # App roles are Entra's: another provider's `roles` claim grants nothing.
        {PRINCIPAL_HEADER: encoded(json.dumps({"auth_typ": "github", "claims": [
            {"typ": "roles", "val": Role.ADMIN.value},
            {"typ": "roles", "val": Role.FRONTEND.value}]}).encode())},
        # Role values are matched exactly, as Entra sends them.
        {PRINCIPAL_HEADER: encoded(json.dumps({"auth_typ": "aad", "claims": [
            {"typ": "roles", "val": Role.ADMIN.value.lower()},
            {"typ": "roles", "val": f" {Role.FRONTEND.value}"}]}).encode())},
    ],
    ids=["no role", "named, no role", "another provider", "near-miss values"],
)  # fmt: skip
async def test_a_caller_without_the_role_gets_403_naming_it(
    route: Route, headers: dict[str, str]
) -> None:
    status, body = await answer(route, headers)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    for role in ROUTE_ROLES[route.function]:
        assert role.value in body["error"]["message"]


@pytest.mark.parametrize("route", PROTECTED, ids=ids)
async def test_each_role_is_refused_exactly_where_the_table_says(route: Route) -> None:
    roles = ROUTE_ROLES[route.function]
    for role, headers in ((Role.FRONTEND, FRONTEND), (Role.ADMIN, ADMIN)):
        if role in roles:
            continue
        status, body = await answer(route, headers)
        assert (status, body["error"]["code"]) == (403, "forbidden"), role


def principal(*claims: tuple[str, str], role_typ: str | None = None) -> ClientPrincipal:
    return ClientPrincipal(
        auth_typ="aad",
        claims=[PrincipalClaim(typ=typ, val=val) for typ, val in claims],
        role_typ=role_typ,
    )


def test_a_caller_holds_the_known_roles_of_its_roles_claims() -> None:
    found = Caller.from_principal(
        principal(("roles", Role.ADMIN.value), ("roles", "Other.Role"), ("groups", "x")),
        principal_id="id-1",
    )
    assert found.roles == {Role.ADMIN}
    assert found.id == "id-1"


def test_the_principals_own_role_claim_type_counts_too() -> None:
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    found = Caller.from_principal(
        principal((role_typ, Role.FRONTEND.value), role_typ=role_typ), principal_id=None
    )
    assert found.roles == {Role.FRONTEND}


def test_the_caller_id_falls_back_to_the_object_id_claim() -> None:
    oid = "http://schemas.microsoft.com/identity/claims/objectidentifier"
    assert Caller.from_principal(principal((oid, "o-1")), principal_id=None).id == "o-1"
    assert Caller.from_principal(principal(), principal_id=None).id is None


def test_the_test_callers_hold_what_their_names_say() -> None:
    def roles_of(headers: Mapping[str, str]) -> set[str]:
        decoded = json.loads(base64.b64decode(headers["x-ms-client-principal"]))
        return {c["val"] for c in decoded["claims"] if c["typ"] == "roles"}

    assert roles_of(FRONTEND) == {Role.FRONTEND}
    assert roles_of(ADMIN) == {Role.ADMIN}
    assert roles_of(EVERY_ROLE) == set(Role)
    assert roles_of(NO_ROLE) == set()


def test_easy_auth_lets_through_exactly_the_anonymous_routes() -> None:
    """infra/ puts Easy Auth in front of every path but its excludedPaths: an anonymous
    route missing there would get Graph a 401 from the platform; a protected one listed
    there would still be refused by the app, but should not be."""
    bicep = (Path(__file__).parents[2] / "infra" / "app" / "api.bicep").read_text()
    block = re.search(r"excludedPaths: \[(.*?)\]", bicep, re.DOTALL)
    assert block is not None
    excluded = set(re.findall(r"'([^']+)'", block.group(1)))
    anonymous = {f"/api/{r.route}" for r in ROUTES if not ROUTE_ROLES[r.function]}
    assert excluded == anonymous
