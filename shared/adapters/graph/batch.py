"""JSON `$batch`: up to 20 requests in one POST, each answered (and throttled) on its own.

The inner requests are built by msgraph-sdk's request builders (`to_post_request_information`
and friends), so URLs and bodies are exactly what the single calls send; the batch itself is
sent through the same request adapter (auth, Prefer, telemetry). msgraph-core's
`BatchRequestContent` is not used: in msgraph-core 1.5.2 it imports `deprecated`, which the
package does not declare (ImportError here), and it keeps absolute URLs where `$batch` wants
them relative to the version root.

A 429/503/504 inside a 200 batch answer is not retried by any SDK. Here the failed steps are
sent again in a later batch after the longest Retry-After among them, under the same
`RetryPolicy` as single requests (one budget per step: one attempt per round).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_http.httpx_request_adapter import HttpxRequestAdapter
from kiota_http.middleware.options.response_handler_option import ResponseHandlerOption

from shared.adapters.graph.client import (
    IMMUTABLE_ID_PREFERENCE,
    expand_url_once,
    merge_preferences,
)
from shared.adapters.graph.errors import (
    ERROR_MAPPING,
    GRAPH_CALL_ERRORS,
    GraphFailure,
    failure_from_batch_answer,
    failure_from_exception,
    to_domain_error,
)
from shared.adapters.graph.throttle import GraphCaller, RetryPolicy
from shared.domain.errors import GraphError

logger = logging.getLogger(__name__)

MAX_BATCH_REQUESTS = 20
# The outer status of a batch of which some steps failed (throttled ones, typically).
OUTER_FAILED_DEPENDENCY = 424


@dataclass(frozen=True)
class BatchStep:
    """One request of a batch: its mailbox (for the per-mailbox limit), the request as a
    request builder made it, and a context naming it in errors and logs."""

    mailbox: str
    request: RequestInformation
    context: str


@dataclass(frozen=True)
class BatchAnswer:
    """A successful (2xx) inner answer."""

    status: int
    body: Any


class BatchSender:
    """Sends steps as `$batch` requests and returns, in order, each step's answer or the
    domain error it finally met. Never raises for a failed step."""

    def __init__(self, adapter: HttpxRequestAdapter, caller: GraphCaller) -> None:
        self._adapter = adapter
        self._caller = caller

    async def send(
        self, steps: list[BatchStep], *, policy: RetryPolicy | None = None
    ) -> list[BatchAnswer | GraphError]:
        """`policy`: retries of the steps (the caller's own when None)."""
        chunks = [
            steps[start : start + MAX_BATCH_REQUESTS]
            for start in range(0, len(steps), MAX_BATCH_REQUESTS)
        ]
        answers = await asyncio.gather(*(self._send_chunk(chunk, policy) for chunk in chunks))
        return [answer for chunk_answers in answers for answer in chunk_answers]

    async def _send_chunk(
        self, steps: list[BatchStep], policy: RetryPolicy | None
    ) -> list[BatchAnswer | GraphError]:
        policy, clock = policy or self._caller.policy, self._caller.clock
        results: dict[int, BatchAnswer | GraphError] = {}
        pending = list(range(len(steps)))
        started = clock()
        attempt = 0
        while pending:
            attempt += 1
            failures = await self._round(steps, pending, results)
            elapsed = clock() - started
            pending = []
            wait = 0.0
            for index, failure in failures.items():
                delay = policy.delay_before_retry(failure, attempt, elapsed)
                if delay is None:
                    results[index] = to_domain_error(failure, steps[index].context)
                else:
                    pending.append(index)
                    wait = max(wait, delay)
            if pending:
                logger.warning(
                    "graph $batch: %s of %s steps to retry (attempt %s) in %.1fs",
                    len(pending),
                    len(steps),
                    attempt,
                    wait,
                )
                await self._caller.sleep(wait)
        return [results[index] for index in range(len(steps))]

    async def _round(
        self,
        steps: list[BatchStep],
        pending: list[int],
        results: dict[int, BatchAnswer | GraphError],
    ) -> dict[int, GraphFailure]:
        """Send the pending steps once; record successes, return failures by index."""
        wanted = Counter(steps[index].mailbox for index in pending)
        try:
            async with self._caller.slots.slots(wanted):
                raw = await self._post([(str(index), steps[index]) for index in pending])
        except GRAPH_CALL_ERRORS as exc:
            failure = failure_from_exception(exc)
            return dict.fromkeys(pending, failure)
        answers = _answers_by_id(raw)
        failures: dict[int, GraphFailure] = {}
        for index in pending:
            answer = answers.get(str(index))
            if answer is None:
                failures[index] = GraphFailure(
                    status=None, code="MissingBatchAnswer", message="no answer for this step"
                )
                continue
            status = int(answer.get("status") or 0)
            body = answer.get("body")
            if 200 <= status < 300:
                results[index] = BatchAnswer(status=status, body=body)
            else:
                failures[index] = failure_from_batch_answer(status, answer.get("headers"), body)
        return failures

    async def _post(self, steps: list[tuple[str, BatchStep]]) -> bytes:
        """The batch answer's body. An outer 424 (Graph's answer to a throttled batch, also
        Dev Proxy's) still carries every step's own answer, so it is read like a 200; any
        other failure raises as a single request's would."""
        payload = {"requests": [self._inner_request(step_id, step) for step_id, step in steps]}
        request = RequestInformation(Method.POST, "{+baseurl}/$batch", {})
        request.headers.try_add("Accept", "application/json")
        request.headers.try_add("Content-Type", "application/json")
        request.content = json.dumps(payload).encode()
        # The raw answer, so that a 424's body is not lost to the SDK's error mapping.
        request.add_request_options([ResponseHandlerOption(NativeResponseHandler())])
        expand_url_once(self._adapter, request)
        response = await self._adapter.send_primitive_async(request, "bytes", ERROR_MAPPING)  # type: ignore[func-returns-value]
        if not isinstance(response, httpx.Response):
            raise TypeError("the $batch answer is not an HTTP response")
        raw = await response.aread()
        status = response.status_code
        if status == OUTER_FAILED_DEPENDENCY and _answers_by_id(raw):
            logger.info("graph $batch answered 424: reading each step's answer")
            return raw
        if not 200 <= status < 300:
            span = self._adapter.start_tracing_span(request, "batch")
            try:
                await self._adapter.throw_failed_responses(response, ERROR_MAPPING, span, span)
            finally:
                span.end()
        return raw

    def _inner_request(self, step_id: str, step: BatchStep) -> dict[str, Any]:
        info = step.request
        self._adapter.set_base_url_for_request_information(info)
        method = info.http_method
        if method is None:
            raise ValueError(f"{step.context}: request without a method")
        inner: dict[str, Any] = {
            "id": step_id,
            "method": method.value,
            "url": _relative_url(info.url, self._adapter.base_url),
        }
        headers = dict(info.request_headers or {})
        prefer = [value for key, value in headers.items() if key.lower() == "prefer"]
        headers = {key: value for key, value in headers.items() if key.lower() != "prefer"}
        # The batch's own Prefer header does not reach inner requests: each carries its own.
        headers["Prefer"] = merge_preferences(prefer, IMMUTABLE_ID_PREFERENCE)
        inner["headers"] = headers
        if info.content:
            inner["body"] = json.loads(info.content)
        return inner


def _relative_url(url: str, base_url: str) -> str:
    """`$batch` wants URLs relative to the version root (`/users/...`)."""
    base = base_url.rstrip("/")
    if url.startswith(base):
        return url[len(base) :] or "/"
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _answers_by_id(raw: bytes) -> Mapping[str, dict[str, Any]]:
    try:
        document = json.loads(raw)
    except ValueError:
        return {}
    responses = document.get("responses") if isinstance(document, dict) else None
    if not isinstance(responses, list):
        return {}
    return {str(item["id"]): item for item in responses if isinstance(item, dict) and "id" in item}
