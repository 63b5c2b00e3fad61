"""HTTP triggers served by aiohttp, one event loop, many requests at once.

A request becomes a `func.HttpRequest`; the returned `func.HttpResponse` (or str) becomes
the answer, with Content-Type built from mimetype and charset as the worker does. No
route, or a route without the method → 404 (the host has no 405); a failing function →
500 with the traceback logged. Keys (`authLevel`) are checked only in keys mode (below);
`func start` never checks them.

Two host endpoints exist besides the functions: `GET /admin/host/status` (readiness) and
`POST /admin/functions/{name}` (run a queue or timer function now; body
`{"input": "..."}`, answered with 202 like the host does).

Stricter than `func start`, as Azure is:
- **Keys** (`keys=HostKeys(...)`): a `function`-level route needs the function key or the
  master key, an `admin`-level one the master key, in `x-functions-key` or `?code=`;
  the admin API needs the master key; otherwise 401. `anonymous` routes need none.
  (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to)
- **HTTP concurrency** (`concurrency=N`): at most N HTTP invocations at once; more
  requests wait for a slot, as on a Flex Consumption instance whose
  `perInstanceConcurrency` is N (1 by default for Python:
  https://learn.microsoft.com/azure/azure-functions/functions-concurrency).
- **230 s to answer**: a function that has not answered by then gets its caller a 502,
  and runs on (https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout).

Not in Azure, for tests: with `response_log` (a folder), every answer given for a
function's route (the function's, or the host's 401, 500, 502 for it) is appended to a
JSON-lines file of this host there, so that tests can check each against the app's
OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from local.functions_host.app_index import HttpFunction
from local.functions_host.config import HTTP_RESPONSE_LIMIT_SECONDS, HostStartupError
from local.functions_host.easy_auth import LocalCaller, in_front
from local.functions_host.invocation import Invoker

logger = logging.getLogger(__name__)

# The host's default limit on request bodies (100 MB).
MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024

AdminInvoke = Callable[[str], Awaitable[object]]
# Where the host looks for a key: this header, then the `code` query parameter.
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True)
class HostKeys:
    """The keys a host in keys mode checks: its master key and one host function key
    (`default`), which every `function`-level route takes."""

    master: str
    function: str

    @classmethod
    def generate(cls) -> HostKeys:
        return cls(master=secrets.token_urlsafe(32), function=secrets.token_urlsafe(32))

    def allows(self, auth_level: str, key: str | None) -> bool:
        """Whether `key` opens a route of `auth_level` (anonymous, function or admin)."""
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not key:
            return False
        accepted = [self.master] if level == "admin" else [self.master, self.function]
        return any(hmac.compare_digest(key, candidate) for candidate in accepted)


class ResponseLog:
    """Appends one JSON line per answer to `<folder>/host-<pid>-<n>.jsonl`: the function,
    method, route template, path, status, the headers a client acts on and the body."""

    _opened = 0

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        ResponseLog._opened += 1
        self.path = folder / f"host-{os.getpid()}-{ResponseLog._opened}.jsonl"
        self._file: IO[str] | None = None

    def record(
        self, entry: HttpFunction, request: web.Request, response: web.StreamResponse
    ) -> None:
        body = response.body if isinstance(response, web.Response) else None
        line = {
            "function": entry.function.name,
            "method": request.method.upper(),
            "route": entry.route.path_template,
            "path": request.path,
            "status": response.status,
            "contentType": response.headers.get("Content-Type"),
            "retryAfter": response.headers.get("Retry-After"),
            "body": bytes(body).decode("utf-8", "replace") if isinstance(body, bytes) else "",
        }
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()  # read by the tests while the host runs, or after a kill

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class HttpTriggerServer:
    """Serves the HTTP functions (and the admin endpoints) until `stop()`."""

    def __init__(
        self,
        functions: Sequence[HttpFunction],
        invoker: Invoker,
        *,
        admin_invokers: Mapping[str, AdminInvoke] | None = None,
        not_here: Sequence[str] = (),
        keys: HostKeys | None = None,
        concurrency: int | None = None,
        response_limit: float = HTTP_RESPONSE_LIMIT_SECONDS,
        response_log: Path | None = None,
        local_caller: LocalCaller | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise HostStartupError("the HTTP concurrency must be at least 1")
        # Most specific routes first, as ASP.NET orders them; then by name for stability.
        self._routes = sorted(
            functions, key=lambda f: (f.route.precedence, f.route.path_template, f.function.name)
        )
        self._invoker = invoker
        self._admin_invokers = dict(admin_invokers or {})
        # Functions of the app that another host runs (see start_host's `triggers`).
        self._not_here = {name.lower(): name for name in not_here}
        self._admin_tasks: set[asyncio.Task[object]] = set()
        self._keys = keys
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self._response_limit = response_limit
        # Invocations whose caller was answered 502 at the response limit; they run on.
        self._overrun: set[asyncio.Future[web.StreamResponse]] = set()
        self._runner: web.AppRunner | None = None
        self._response_log = ResponseLog(response_log) if response_log is not None else None
        self._local_caller = local_caller
        self.url = ""

    async def start(self, host: str, port: int, *, grace_period: float) -> str:
        """Listen on host:port (0 picks a free port). Returns the base URL.

        Raises HostStartupError if the address is taken or unusable.
        """
        app = web.Application(client_max_size=MAX_REQUEST_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_period)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise HostStartupError(f"cannot listen on {host}:{port}: {error}") from error
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{_url_host(bound_host)}:{bound_port}"
        return self.url

    async def stop(self, grace_period: float) -> None:
        """Stop listening, let requests in flight finish within the grace period."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        running: set[asyncio.Future[Any]] = {*self._admin_tasks, *self._overrun}
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_period)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._response_log is not None:
            self._response_log.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        if raw_path.lower().startswith("/admin/"):
            if not self._authorized("admin", request):
                return web.Response(status=401)
            return await self._admin(request, raw_path)
        for entry in self._routes:
            # The host makes the methods part of each route, so a known route with
            # another method matches nothing: 404, never 405.
            if request.method.upper() not in entry.methods:
                continue
            values = entry.route.match(raw_path)
            if values is not None:
                if not self._authorized(entry.auth_level, request):
                    response: web.StreamResponse = web.Response(status=401)
                else:
                    response = await self._answer_in_time(entry, request, values)
                if self._response_log is not None:
                    self._response_log.record(entry, request, response)
                return response
        return web.Response(status=404)

    def _authorized(self, auth_level: str, request: web.Request) -> bool:
        if self._keys is None:
            return True
        # The header, when sent at all (even empty), is the key; `code` only without it
        # (AuthenticationLevelHandler.GetAuthorizationKeyInfoAsync). The first value counts.
        if KEY_HEADER in request.headers:
            key = request.headers.get(KEY_HEADER)
        else:
            key = request.query.get(KEY_QUERY)
        return self._keys.allows(auth_level, key)

    async def _answer_in_time(
        self, entry: HttpFunction, request: web.Request, route_values: dict[str, str]
    ) -> web.StreamResponse:
        """The function's answer, or 502 once the response limit passed (it runs on)."""
        try:
            http_request = await to_function_request(request, route_values, self._local_caller)
        except ConnectionResetError:
            # The client left before its body ended: nobody to answer and nothing to run.
            # Kestrel reports such a request as ConnectionBadRequest, in the category
            # Microsoft.AspNetCore.Server.Kestrel.BadRequests at Debug (KestrelTrace.
            # BadRequests.cs), not as an error of the host.
            logger.debug(
                "%s %s: the client left before its body ended", request.method, request.path
            )
            return web.Response(status=400)
        reason = f"HTTP {request.method} {request.path}"
        invocation = asyncio.ensure_future(self._invoke_in_slot(entry, http_request, reason))
        try:
            done, _ = await asyncio.wait({invocation}, timeout=self._response_limit)
        except asyncio.CancelledError:
            invocation.cancel()  # the client went away or the server stops
            raise
        if done:
            return invocation.result()
        logger.error(
            "Function '%s' did not answer %s %s within %.0f s; the caller gets 502 and the "
            "invocation runs on",
            entry.function.name,
            request.method,
            request.path,
            self._response_limit,
        )
        self._overrun.add(invocation)
        invocation.add_done_callback(self._overrun.discard)
        invocation.add_done_callback(_retrieve)
        return web.Response(status=502)

    async def _invoke_in_slot(
        self, entry: HttpFunction, http_request: func.HttpRequest, reason: str
    ) -> web.StreamResponse:
        async with self._slots or contextlib.nullcontext():
            return await self._invoke(entry, http_request, reason)

    async def _invoke(
        self, entry: HttpFunction, http_request: func.HttpRequest, reason: str
    ) -> web.StreamResponse:
        outcome = await self._invoker.invoke(entry.function, http_request, reason=reason)
        if not outcome.succeeded:
            return web.Response(status=500)
        try:
            return to_web_response(outcome.value)
        except TypeError:
            logger.exception("Function '%s' returned no usable HTTP response", entry.function.name)
            return web.Response(status=500)

    async def _admin(self, request: web.Request, raw_path: str) -> web.StreamResponse:
        segments = [unquote(s) for s in raw_path.split("/") if s]
        lowered = [s.lower() for s in segments]
        if lowered == ["admin", "host", "status"] and request.method == "GET":
            return web.json_response({"state": "Running", "version": "local"})
        if len(segments) == 3 and lowered[:2] == ["admin", "functions"]:
            invoke = _lookup(self._admin_invokers, segments[2])
            if invoke is None:
                elsewhere = self._not_here.get(segments[2].lower())
                if elsewhere is not None:
                    return web.Response(
                        status=404, text=f"function '{elsewhere}' is run by another host"
                    )
                return web.Response(status=404)
            if request.method != "POST":
                return web.Response(status=405, headers={"Allow": "POST"})
            try:
                document = json.loads(await request.read() or b"{}")
            except json.JSONDecodeError:
                return web.Response(status=400, text='expected a JSON body like {"input": ""}')
            text = document.get("input", "") if isinstance(document, dict) else ""
            task: asyncio.Task[object] = asyncio.ensure_future(invoke(str(text or "")))
            self._admin_tasks.add(task)
            task.add_done_callback(self._admin_tasks.discard)
            return web.Response(status=202)
        return web.Response(status=404)


async def to_function_request(
    request: web.Request, route_values: dict[str, str], local_caller: LocalCaller | None = None
) -> func.HttpRequest:
    """The request as the host hands it to the worker (ToRpcHttp in the host's
    GrpcMessageConversionExtensions.cs): repeated headers and query names joined with
    `,` (StringValues.ToString), empty query values left out, and a body only when the
    request has a Content-Length above 0, so a chunked request arrives without one.
    With a `local_caller`, as Easy Auth in front passes it on (easy_auth.py)."""
    has_length = (request.content_length or 0) > 0
    headers = _joined(request.headers.items(), lower_names=True)
    if local_caller is not None:
        headers = in_front(headers, local_caller)
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params=_joined(((k, v) for k, v in request.query.items() if v), lower_names=False),
        route_params=route_values,
        body=await request.read() if has_length else b"",
    )


def to_web_response(value: object) -> web.Response:
    """The HTTP answer for a function's return value. Raises TypeError for anything else."""
    if isinstance(value, func.HttpResponse):
        headers: CIMultiDict[str] = CIMultiDict()
        for name, header_value in value.headers.items():
            if name.lower() not in _DROPPED_RESPONSE_HEADERS:
                headers.add(name, header_value)
        if "Content-Type" not in headers:
            mimetype = value.mimetype
            headers["Content-Type"] = (
                f"{mimetype}; charset={value.charset}" if mimetype.startswith("text/") else mimetype
            )
        return web.Response(status=value.status_code, body=value.get_body(), headers=headers)
    if isinstance(value, str):
        return web.Response(
            status=200, body=value.encode("utf-8"), content_type="text/plain", charset="utf-8"
        )
    raise TypeError(f"expected func.HttpResponse or str, got {type(value).__name__}")


def _joined(pairs: Iterable[tuple[str, str]], *, lower_names: bool) -> dict[str, str]:
    """One value per name; repeated names joined with `,`, as StringValues.ToString does."""
    joined: dict[str, list[str]] = {}
    for name, value in pairs:
        joined.setdefault(name.lower() if lower_names else name, []).append(value)
    return {name: ",".join(parts) for name, parts in joined.items()}


def _retrieve(invocation: asyncio.Future[web.StreamResponse]) -> None:
    # Nobody awaits an invocation past the response limit; read its outcome here.
    error = None if invocation.cancelled() else invocation.exception()
    if error is not None:
        logger.error("An HTTP invocation past the response limit failed", exc_info=error)


def _lookup(invokers: Mapping[str, AdminInvoke], name: str) -> AdminInvoke | None:
    # Function names are case-insensitive in the host's admin API.
    for candidate, invoke in invokers.items():
        if candidate.lower() == name.lower():
            return invoke
    return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
