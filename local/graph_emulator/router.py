"""Graph requests independent of aiohttp, so that top-level requests and the inner requests
of a ``$batch`` go through the same routes, throttling, faults and counters."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from multidict import CIMultiDict

from local.graph_emulator.errors import GraphError
from local.graph_emulator.odata import parse_prefer

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator

JSON_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)


@dataclass
class GraphRequest:
    method: str
    segments: list[str]  # decoded path segments after /v1.0
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any
    graph_url: str  # e.g. http://127.0.0.1:7072/v1.0, for links in responses
    raw_target: str  # path and query as sent, for fault matching
    in_batch: bool = False
    prefs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: Any,
        graph_url: str,
        *,
        in_batch: bool = False,
    ) -> GraphRequest:
        """From a raw target (``/users/a%40b/events?$top=5``), relative to /v1.0."""
        parts = urlsplit(target)
        path = parts.path if parts.path.startswith("/") else "/" + parts.path
        segments = [unquote(s) for s in path.split("/") if s]
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        return cls(
            method=method.upper(),
            segments=segments,
            query=query,
            headers=headers,
            body=body,
            graph_url=graph_url,
            raw_target=unquote(target),
            in_batch=in_batch,
            prefs=parse_prefer(headers.getall("Prefer", [])),
        )

    def param(self, name: str) -> str | None:
        """A query parameter, matching the name case-insensitively as Graph does."""
        lowered = name.lower()
        return next((v for k, v in self.query.items() if k.lower() == lowered), None)

    def json_object(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise GraphError(400, "BadRequest", "A JSON object is required in the request body.")
        return self.body


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


def ok(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> GraphResponse:
    return GraphResponse(status=status, body=body, headers=dict(headers or {}))


def no_content() -> GraphResponse:
    return GraphResponse(status=204)


Params = dict[str, str]
Handler = Callable[["GraphEmulator", GraphRequest, Params], Awaitable[GraphResponse]]
MailboxOf = Callable[["GraphEmulator", GraphRequest, Params], "str | None"]


def mailbox_from_path(emulator: GraphEmulator, request: GraphRequest, params: Params) -> str | None:
    return params.get("id")


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # also the name counters use, e.g. /users/{id}/events/{eventId}
    handler: Handler
    mailbox_of: MailboxOf = mailbox_from_path
    throttled: bool = True

    def match(self, segments: list[str]) -> Params | None:
        parts = [p for p in self.template.split("/") if p]
        if len(parts) != len(segments):
            return None
        params: Params = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = segment
            elif part.lower() != segment.lower().removesuffix("()"):
                # OData function segments may carry their call parentheses: delta().
                return None
        return params


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: Params


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def resolve(self, method: str, segments: list[str]) -> RouteMatch | None:
        for route in self.routes:
            if route.method == method:
                params = route.match(segments)
                if params is not None:
                    return RouteMatch(route, params)
        return None

    def template_for(self, segments: list[str]) -> str | None:
        """The template of a route matching the path with another method (for a 405)."""
        return next((r.template for r in self.routes if r.match(segments) is not None), None)
