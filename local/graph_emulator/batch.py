"""``POST /$batch``: up to 20 inner requests, each routed, throttled, faulted and counted
like a request of its own. Independent requests run in parallel (at most
``batch_parallelism`` at once); ``dependsOn`` orders them, and a failed dependency gives 424.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from local.graph_emulator.errors import GraphError, error_body
from local.graph_emulator.router import JSON_CONTENT_TYPE, GraphRequest, GraphResponse, Params, ok

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator


def _invalid(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def _parse(requests: Any, limit: int) -> list[dict[str, Any]]:
    if not isinstance(requests, list) or not requests:
        raise _invalid("Invalid batch payload format: 'requests' must be a non-empty array.")
    if len(requests) > limit:
        raise _invalid(
            f"Unable to process the batch: it holds {len(requests)} requests and the maximum "
            f"is {limit}."
        )
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for raw in requests:
        if (
            not isinstance(raw, dict)
            or not raw.get("id")
            or not raw.get("method")
            or not raw.get("url")
        ):
            raise _invalid("Each batch request needs 'id', 'method' and 'url'.")
        request_id = str(raw["id"])
        if request_id.lower() in seen:
            raise _invalid(f"Batch request ids must be unique; '{request_id}' is repeated.")
        seen.add(request_id.lower())
        depends = raw.get("dependsOn") or []
        if not isinstance(depends, list):
            raise _invalid("'dependsOn' must be an array of request ids.")
        items.append({**raw, "id": request_id, "dependsOn": [str(d) for d in depends]})
    ids = {item["id"] for item in items}
    for item in items:
        missing = [d for d in item["dependsOn"] if d not in ids]
        if missing:
            raise _invalid(f"Request '{item['id']}' depends on unknown request '{missing[0]}'.")
    _reject_cycles(items)
    return items


def _reject_cycles(items: list[dict[str, Any]]) -> None:
    depends = {item["id"]: item["dependsOn"] for item in items}
    state: dict[str, int] = {}  # 1: visiting, 2: done

    def visit(node: str) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            raise _invalid("The dependsOn references of the batch form a cycle.")
        state[node] = 1
        for parent in depends[node]:
            visit(parent)
        state[node] = 2

    for node in depends:
        visit(node)


def _inner_response(request_id: str, response: GraphResponse) -> dict[str, Any]:
    headers = dict(response.headers)
    if response.body is not None:
        headers.setdefault("Content-Type", JSON_CONTENT_TYPE)
    result: dict[str, Any] = {"id": request_id, "status": response.status, "headers": headers}
    if response.body is not None:
        result["body"] = response.body
    return result


async def _execute(emu: GraphEmulator, outer: GraphRequest, item: dict[str, Any]) -> GraphResponse:
    url = str(item["url"])
    if url.lower().startswith(("http://", "https://")):
        return GraphResponse(
            400,
            error_body("BadRequest", "Batch request urls must be relative, e.g. '/users/{id}'."),
        )
    raw_headers = item.get("headers") or {}
    headers: CIMultiDict[str] = CIMultiDict((str(k), str(v)) for k, v in dict(raw_headers).items())
    if "body" in item and item["body"] is not None and "Content-Type" not in headers:
        return GraphResponse(
            400,
            error_body("BadRequest", "A Content-Type header is required when a body is given."),
        )
    authorization = outer.headers.get("Authorization")
    if authorization:
        headers["Authorization"] = authorization
    inner = GraphRequest.build(
        str(item["method"]),
        url if url.startswith("/") else "/" + url,
        headers,
        item.get("body"),
        outer.graph_url,
        in_batch=True,
    )
    return await emu.dispatch(inner, authenticated=True)


async def run_batch(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    body = request.json_object()
    items = _parse(body.get("requests"), emu.config.max_batch_requests)
    results: dict[str, GraphResponse] = {}
    finished = {item["id"]: asyncio.Event() for item in items}
    parallel = asyncio.Semaphore(emu.config.batch_parallelism)

    async def run(item: dict[str, Any]) -> None:
        try:
            for dependency in item["dependsOn"]:
                await finished[dependency].wait()
            if any(results[d].status >= 400 for d in item["dependsOn"]):
                results[item["id"]] = GraphResponse(
                    424,
                    error_body("FailedDependency", "A request this request depends on failed."),
                )
                return
            async with parallel:
                results[item["id"]] = await _execute(emu, request, item)
        finally:
            finished[item["id"]].set()

    await asyncio.gather(*(run(item) for item in items))
    return ok({"responses": [_inner_response(i["id"], results[i["id"]]) for i in items]})
