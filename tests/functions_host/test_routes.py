"""Route templates, matched like the Functions host's ASP.NET routing."""

from __future__ import annotations

import pytest

from local.functions_host.routes import RouteTemplate, RouteTemplateError


def test_literal_segments_match_case_insensitively_and_params_are_decoded() -> None:
    route = RouteTemplate("bookings/{id}/events", prefix="api")

    assert route.path_template == "/api/bookings/{id}/events"
    assert route.match("/API/Bookings/a%20b/events") == {"id": "a b"}
    assert route.match("/api/bookings/a/events/") == {"id": "a"}
    assert route.match("/api/bookings/a") is None
    assert route.match("/api/bookings//events") is None


def test_an_optional_parameter_may_be_left_out() -> None:
    route = RouteTemplate("greet/{name?}", prefix="api")

    assert route.match("/api/greet/ada") == {"name": "ada"}
    assert route.match("/api/greet") == {}


def test_a_default_fills_a_missing_parameter() -> None:
    route = RouteTemplate("page/{number=1}", prefix="")

    assert route.match("/page") == {"number": "1"}
    assert route.match("/page/3") == {"number": "3"}


@pytest.mark.parametrize(
    ("template", "good", "bad"),
    [
        ("items/{id:int}", "/api/items/-12", "/api/items/twelve"),
        ("items/{id:guid}", "/api/items/1c0e0f3e-8d4b-4f43-9a3e-0a8f5b5d2c11", "/api/items/x"),
        ("items/{id:alpha}", "/api/items/abc", "/api/items/ab1"),
        ("items/{id:int:min(10)}", "/api/items/10", "/api/items/9"),
        ("items/{id:range(1,5)}", "/api/items/5", "/api/items/6"),
        ("items/{id:length(3)}", "/api/items/abc", "/api/items/abcd"),
        ("items/{id:regex(^[a-z]{{2}}\\d$)}", "/api/items/ab1", "/api/items/abc"),
        ("items/{id:bool}", "/api/items/TRUE", "/api/items/yes"),
    ],
)
def test_constraints_filter_matches(template: str, good: str, bad: str) -> None:
    route = RouteTemplate(template, prefix="api")

    assert route.match(good) is not None
    assert route.match(bad) is None


def test_an_unknown_constraint_is_ignored() -> None:
    route = RouteTemplate("items/{id:shiny}", prefix="api")

    assert route.match("/api/items/x") == {"id": "x"}


def test_a_catch_all_takes_the_rest_of_the_path() -> None:
    route = RouteTemplate("files/{*path}", prefix="api")

    # Kestrel leaves `%2F` encoded in the path it decodes, and so in the route value.
    assert route.match("/api/files/a/b%2Fc%20d.txt") == {"path": "a/b%2Fc d.txt"}
    assert route.match("/api/files") == {}


def test_complex_segments_split_on_their_literals() -> None:
    route = RouteTemplate("files/{name}.{ext}", prefix="api")

    assert route.match("/api/files/report.final.pdf") == {"name": "report", "ext": "final.pdf"}


def test_literal_routes_outrank_parameter_routes() -> None:
    literal = RouteTemplate("items/new", prefix="api")
    constrained = RouteTemplate("items/{id:int}", prefix="api")
    parameter = RouteTemplate("items/{id}", prefix="api")
    catch_all = RouteTemplate("{*rest}", prefix="api")

    ordered = sorted([catch_all, parameter, constrained, literal], key=lambda r: r.precedence)

    assert ordered == [literal, constrained, parameter, catch_all]


@pytest.mark.parametrize(
    "template", ["items/{id", "items/id}", "{*rest}/more", "a/{x}{y}", "a/{x}/{x}", "a//b"]
)
def test_malformed_templates_are_rejected(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        RouteTemplate(template, prefix="api")
