"""The aiohttp application: Graph under ``/v1.0``, the token endpoint, and the control API."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from local.graph_emulator.auth import TokenError, openid_configuration
from local.graph_emulator.control import EMULATOR_KEY, add_control_routes
from local.graph_emulator.emulator import GraphEmulator
from local.graph_emulator.errors import error_body
from local.graph_emulator.router import JSON_CONTENT_TYPE, GraphRequest, GraphResponse

logger = logging.getLogger(__name__)

GRAPH_PREFIX = "/v1.0"


def _to_web(response: GraphResponse) -> web.Response:
    if response.status == 204 or response.body is None:
        return web.Response(status=response.status, headers=response.headers)
    headers = {**response.headers, "Content-Type": JSON_CONTENT_TYPE}
    return web.Response(status=response.status, body=response.encoded(), headers=headers)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def graph_entry(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    raw = await request.read()
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            return _to_web(
                GraphResponse(400, error_body("BadRequest", "Unable to read JSON request payload."))
            )
    target = request.raw_path[len(GRAPH_PREFIX) :] or "/"
    graph_request = GraphRequest.build(
        request.method,
        target,
        CIMultiDict(request.headers),
        body,
        _origin(request) + GRAPH_PREFIX,
    )
    try:
        response = await emulator.dispatch(graph_request)
    except Exception:
        # An emulator bug must still look like a Graph 500 to the client under test.
        logger.exception("unhandled error for %s %s", request.method, request.path)
        response = GraphResponse(500, error_body("InternalServerError", "Emulator error."))
    return _to_web(response)


async def token_endpoint(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    form = await request.post()
    fields = {key: str(value) for key, value in form.items()}
    try:
        issued = emulator.state.tokens.issue(request.match_info["tenant"], fields)
    except TokenError as error:
        return web.json_response(error.body(), status=error.status)
    return web.json_response(issued)


async def discovery(request: web.Request) -> web.Response:
    return web.json_response(openid_configuration(_origin(request), request.match_info["tenant"]))


def create_app(emulator: GraphEmulator) -> web.Application:
    """The aiohttp app serving ``emulator``; closing the app stops notification delivery."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    add_control_routes(app)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token_endpoint)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", discovery)
    app.router.add_route("*", GRAPH_PREFIX + "/{tail:.*}", graph_entry)

    async def close_emulator(_: web.Application) -> None:
        await emulator.close()

    app.on_cleanup.append(close_emulator)
    return app
