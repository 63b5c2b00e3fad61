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

A step that may have been carried out though it failed (no answer, a 503 or 504) and that
names a `Recheck` is not sent again blindly: its read goes first, and the step is sent
again only when the read says so; otherwise the read's answer is the step's. An update
sent again on top of an Outlook edit made meanwhile would undo the edit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
    recheck: Recheck | None = None


@dataclass(frozen=True)
class Recheck:
    """What to do before a step that may have been carried out is sent again: `read` (a
    step of its own), then `again(its answer)` says whether the step is still to be sent.
    When not, the read's answer stands as the step's."""

    read: BatchStep
    again: Callable[[BatchAnswer], bool]


@dataclass(frozen=True)
class BatchAnswer:
    """A successful (2xx) inner answer. `after_unsure_attempt`: an earlier attempt of the
    same step met no sure answer (none in time, a 5xx), so it may have been carried out
    too; for a create, Graph may still be making that attempt's event."""

    status: int
    body: Any
    after_unsure_attempt: bool = False


class BatchSender:
    """Sends steps as `$batch` requests and returns, in order, each step's answer or the
    domain error it finally met. Never raises for a failed step."""

    def __init__(self, adapter: HttpxRequestAdapter, caller: GraphCaller) -> None:
        self._adapter = adapter
        self._caller = caller

    def clock(self) -> float:
        """The retry policy's clock (monotonic seconds)."""
        return self._caller.clock()

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
        started = self._caller.clock()
        results: dict[int, BatchAnswer | GraphError] = {}
        failures = await self._round(steps, list(range(len(steps))), results)
        return await self._retry(steps, results, failures, started, policy)

    async def attempt(self, steps: list[BatchStep]) -> list[BatchAnswer | GraphFailure]:
        """One attempt of every step (a lone step as a plain request, more as `$batch`es
        of at most 20 side by side): each step's answer or what it failed with, unretried."""
        if len(steps) == 1:
            return [await self._alone(steps[0])]
        chunks = [
            list(range(start, min(start + MAX_BATCH_REQUESTS, len(steps))))
            for start in range(0, len(steps), MAX_BATCH_REQUESTS)
        ]
        results: dict[int, BatchAnswer | GraphError] = {}
        failed = await asyncio.gather(*(self._round(steps, chunk, results) for chunk in chunks))
        answers: list[BatchAnswer | GraphFailure] = []
        failures = {index: failure for chunk in failed for index, failure in chunk.items()}
        for index in range(len(steps)):
            failure = failures.get(index)
            if failure is not None:
                answers.append(failure)
                continue
            answer = results[index]
            if isinstance(answer, GraphError):
                raise TypeError("a round records only successes")  # pragma: no cover
            answers.append(answer)
        return answers

    async def finish(
        self,
        steps: list[BatchStep],
        first: list[BatchAnswer | GraphFailure],
        *,
        started: float,
        policy: RetryPolicy | None = None,
    ) -> list[BatchAnswer | GraphError]:
        """The steps' answers after `first` (an `attempt` made at `started`): the failed
        ones retried as `send` would have, counting that attempt as their first."""
        answers: list[BatchAnswer | GraphError] = []
        for start in range(0, len(steps), MAX_BATCH_REQUESTS):
            chunk = steps[start : start + MAX_BATCH_REQUESTS]
            results: dict[int, BatchAnswer | GraphError] = {}
            failures: dict[int, GraphFailure] = {}
            for index, answer in enumerate(first[start : start + MAX_BATCH_REQUESTS]):
                if isinstance(answer, GraphFailure):
                    failures[index] = answer
                else:
                    results[index] = answer
            answers.extend(await self._retry(chunk, results, failures, started, policy))
        return answers

    async def _retry(
        self,
        steps: list[BatchStep],
        results: dict[int, BatchAnswer | GraphError],
        failures: dict[int, GraphFailure],
        started: float,
        policy: RetryPolicy | None,
    ) -> list[BatchAnswer | GraphError]:
        """Retries of the failed steps of a first round, while the policy allows."""
        policy, clock = policy or self._caller.policy, self._caller.clock
        attempt = 1
        # Steps with a recheck whose last try may have been carried out: read first.
        unsure: set[int] = set()
        # Steps one of whose tries may have been carried out, whatever came after.
        unanswered: set[int] = set()
        while failures:
            applied = {i for i, failure in failures.items() if failure.may_have_applied}
            unanswered |= applied
            unsure.update(i for i in applied if steps[i].recheck is not None)
            elapsed = clock() - started
            pending: list[int] = []
            wait = 0.0
            for index, failure in failures.items():
                delay = policy.delay_before_retry(failure, attempt, elapsed)
                if delay is None:
                    results[index] = to_domain_error(failure, steps[index].context)
                else:
                    pending.append(index)
                    wait = max(wait, delay)
            if not pending:
                break
            logger.warning(
                "graph $batch: %s of %s steps to retry (attempt %s) in %.1fs",
                len(pending),
                len(steps),
                attempt,
                wait,
            )
            await self._caller.sleep(wait)
            attempt += 1
            failures = await self._round(_sent(steps, unsure), pending, results)
            if unsure:
                failures.update(await self._settle_rechecks(steps, pending, unsure, results))
        for index in unanswered:
            answer = results[index]
            if isinstance(answer, BatchAnswer):
                results[index] = replace(answer, after_unsure_attempt=True)
        return [results[index] for index in range(len(steps))]

    async def _settle_rechecks(
        self,
        steps: list[BatchStep],
        pending: list[int],
        unsure: set[int],
        results: dict[int, BatchAnswer | GraphError],
    ) -> dict[int, GraphFailure]:
        """After a round that read some steps' rechecks: a step whose read answered and
        says so is sent again at once (its failures returned); for the others the read's
        answer stands. A step whose read failed stays unsure."""
        again: list[int] = []
        for index in pending:
            recheck = steps[index].recheck
            answer = results.get(index)
            if index not in unsure or recheck is None or not isinstance(answer, BatchAnswer):
                continue
            unsure.discard(index)
            if recheck.again(answer):
                del results[index]
                again.append(index)
            else:
                logger.warning(
                    "graph %s: no sure answer, and the read since shows it done or changed"
                    " by someone else; not sent again",
                    steps[index].context,
                )
        return await self._round(steps, again, results) if again else {}

    async def _round(
        self,
        steps: Sequence[BatchStep],
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

    async def _alone(self, step: BatchStep) -> BatchAnswer | GraphFailure:
        """One step sent as the plain request it is (a `$batch` of one costs more), under
        its mailbox's slot, answered as an inner answer would be."""
        request = step.request
        request.add_request_options([ResponseHandlerOption(NativeResponseHandler())])
        expand_url_once(self._adapter, request)
        try:
            async with self._caller.slots.slot(step.mailbox):
                response = await self._adapter.send_primitive_async(request, "bytes", ERROR_MAPPING)  # type: ignore[func-returns-value]
                if not isinstance(response, httpx.Response):
                    raise TypeError("the answer is not an HTTP response")
                raw = await response.aread()
        except GRAPH_CALL_ERRORS as exc:
            return failure_from_exception(exc)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status = response.status_code
        if 200 <= status < 300:
            if raw and body is None:
                return GraphFailure(
                    status=None,
                    code="InvalidJson",
                    message="Graph answered with a body that is not JSON",
                )
            return BatchAnswer(status=status, body=body)
        return failure_from_batch_answer(status, response.headers, body)

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


def _sent(steps: list[BatchStep], unsure: set[int]) -> list[BatchStep]:
    """What a round sends for each step: its recheck's read while it is unsure."""
    return [
        step.recheck.read if index in unsure and step.recheck is not None else step
        for index, step in enumerate(steps)
    ]


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


# Requests of a gatherer in flight at once before later steps wait to go together. Graph
# answers a `$batch` of 20 reads in about the time of one read, so four lanes carry some
# 80 reads a round trip; below that load every read goes at once.
GATHER_LANES = 4


@dataclass
class _Caller:
    steps: list[BatchStep]
    answer: asyncio.Future[list[BatchAnswer | GraphFailure]]


class BatchGatherer:
    """Steps of concurrent callers sent together, mailboxes mixed (group commit, as the
    webhook's queue writes). While `lanes` of its requests are in flight, the steps that
    come wait and go together in the next, up to 20 a `$batch`; an idle gatherer sends at
    once, a lone step as the plain request it is. Graph runs a batch's requests
    "irrespective of the target mailboxes" (up to four at once), each under its own
    mailbox's limits, and the batch takes each mailbox's slots here (`MailboxSlots`).

    Only the first attempt is shared: each caller retries its own failed steps under its
    own budget, so one mailbox's throttling never holds another mailbox's answers.
    One instance per process; its state belongs to the event loop it runs on.
    """

    def __init__(self, sender: BatchSender, *, lanes: int = GATHER_LANES) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._sender = sender
        self._lanes = lanes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[_Caller] = deque()
        self._busy = 0  # lanes taken: flushes scheduled or in flight
        self._flushes: set[asyncio.Task[None]] = set()

    async def send(
        self, steps: list[BatchStep], *, policy: RetryPolicy | None = None
    ) -> list[BatchAnswer | GraphError]:
        """Each step's answer or the domain error it finally met, as `BatchSender.send`."""
        if not steps:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests run several): what the last one left is not ours.
            self._loop, self._waiting, self._busy, self._flushes = loop, deque(), 0, set()
        started = self._sender.clock()
        caller = _Caller(steps, loop.create_future())
        self._waiting.append(caller)
        self._start()
        first = await caller.answer
        return await self._sender.finish(steps, first, started=started, policy=policy)

    def _start(self) -> None:
        """A flush for what waits, if a lane is free. It takes its steps when it runs, so
        the callers of one turn of the event loop go together."""
        if self._busy >= self._lanes or not self._waiting or self._loop is None:
            return
        self._busy += 1
        flush = self._loop.create_task(self._flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    def _take(self) -> list[_Caller]:
        """The waiting callers of the next request: whole callers, at most 20 steps (a
        caller with more goes alone)."""
        taken: list[_Caller] = []
        count = 0
        while self._waiting:
            caller = self._waiting[0]
            if caller.answer.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if taken and count + len(caller.steps) > MAX_BATCH_REQUESTS:
                break
            taken.append(self._waiting.popleft())
            count += len(caller.steps)
        return taken

    async def _flush(self) -> None:
        taken = self._take()
        try:
            if taken:
                steps = [step for caller in taken for step in caller.steps]
                answers = await self._sender.attempt(steps)
                offset = 0
                for caller in taken:
                    mine = answers[offset : offset + len(caller.steps)]
                    offset += len(caller.steps)
                    if not caller.answer.done():
                        caller.answer.set_result(mine)
        except asyncio.CancelledError:
            for caller in taken:
                caller.answer.cancel()  # the loop is ending: so are its waiters
            raise
        except Exception as exc:  # noqa: BLE001 - each caller raises it
            for caller in taken:
                if not caller.answer.done():
                    caller.answer.set_exception(exc)
        finally:
            self._busy -= 1
            self._start()
