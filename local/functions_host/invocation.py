"""Calling a user function the way the Python worker does.

Async functions are awaited on the host's event loop; sync ones run on a worker thread
(at most PYTHON_THREADPOOL_THREAD_COUNT at once, the worker's setting). The trigger value
is passed under the trigger's parameter name and a `context` parameter, when declared,
gets a `func.Context`. Every invocation is logged like the host logs it.

`functionTimeout` is enforced as Azure enforces it: when one invocation runs past it,
the host restarts the language worker process (WebScriptHostExceptionHandler.
OnTimeoutExceptionAsync in azure-functions-host restarts the worker channel that ran the
invocation), so every invocation on that worker fails, not only the one that timed out;
queue messages among them go back to their queue and count a dequeue. Here the "worker"
is this process's invocations: they are cancelled and fail. What a real restart also
does, and this cannot, is lose module state and stop sync functions' threads; a sync
function past the timeout is abandoned, its thread left to finish on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import azure.functions as func
from azure.functions import _abc as func_abc

from local.functions_host.app_index import IndexedFunction

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class InvocationOutcome:
    """What the host's FunctionResult says: the return value, or the error it raised."""

    invocation_id: str
    value: object = None
    error: Exception | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class FunctionTimeoutError(Exception):
    """The invocation ran past functionTimeout (the host's FunctionTimeoutException)."""


class WorkerRestartedError(Exception):
    """Another invocation on the same worker timed out, and the worker was restarted."""


class ThreadRunner:
    """Runs sync user functions on daemon threads, a bounded number at a time.

    Daemon threads rather than a ThreadPoolExecutor: the executor's threads are joined at
    interpreter exit, so a sync function still running when the grace period ends would
    keep the process alive; the host must exit, and the message it was handling simply
    reappears after its lease.
    """

    def __init__(self, max_threads: int | None = None) -> None:
        if max_threads is None:
            configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
            max_threads = (
                int(configured) if configured.isdigit() else min(32, (os.cpu_count() or 1) + 4)
            )
        self._slots = asyncio.Semaphore(max(1, max_threads))

    async def run(self, call: Callable[[], T]) -> T:
        async with self._slots:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()
            context = contextvars.copy_context()

            def target() -> None:
                try:
                    result = context.run(call)
                except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                    _deliver(loop, future, error=error)
                else:
                    _deliver(loop, future, result=result)

            threading.Thread(target=target, name="functions-host-worker", daemon=True).start()
            return await future


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    *,
    result: object = None,
    error: BaseException | None = None,
) -> None:
    def settle() -> None:
        if future.done():  # the awaiting task was cancelled (grace period over)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        # The loop closed while this thread ran: the host has exited, nobody awaits it.
        logger.debug("A sync function finished after the host stopped")


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _NoException(func_abc.RpcException):
    @property
    def source(self) -> str:
        return ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return ""


class _RetryContext(func_abc.RetryContext):
    # The local host has no retry policies; queue retries are redeliveries, not these.
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> func_abc.RpcException:
        return _NoException()


class InvocationContext(func.Context):
    """The `context` argument of a user function."""

    _thread_local = threading.local

    def __init__(self, *, invocation_id: str, function_name: str, function_directory: str):
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return self._retry_context


class Invoker:
    """Invokes indexed functions; shared by the HTTP, queue and timer triggers."""

    def __init__(
        self,
        *,
        threads: ThreadRunner,
        function_directory: str,
        function_timeout: float | None = None,
    ) -> None:
        self._threads = threads
        self._function_directory = function_directory
        self._function_timeout = function_timeout
        # The user calls in flight on "the worker", and why those a restart ended ended.
        self._calls: dict[str, asyncio.Future[Any]] = {}
        self._ended: dict[str, Exception] = {}
        self.worker_restarts = 0

    async def invoke(
        self, function: IndexedFunction, trigger_value: object, *, reason: str
    ) -> InvocationOutcome:
        """Call the function once. Exceptions become a failed outcome, logged with traceback.

        Cancellation (host shutdown past its grace period) propagates.
        """
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {function.trigger_arg: trigger_value}
        if function.wants_context:
            kwargs["context"] = InvocationContext(
                invocation_id=invocation_id,
                function_name=function.name,
                function_directory=self._function_directory,
            )
        logger.info(
            "Executing 'Functions.%s' (Reason='%s', Id=%s)", function.name, reason, invocation_id
        )
        started = time.monotonic()
        call: asyncio.Future[Any] = asyncio.ensure_future(self._call(function, kwargs))
        self._calls[invocation_id] = call
        try:
            await asyncio.wait({call}, timeout=self._function_timeout)
            if not call.done():
                self._restart_worker(function.name, invocation_id)
            value = await call
            restarted = self._ended.get(invocation_id)
            if restarted is not None:  # the function swallowed its cancellation
                raise restarted
        except asyncio.CancelledError:
            ended = self._ended.pop(invocation_id, None)
            if ended is not None:
                logger.error(
                    "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s",
                    function.name,
                    invocation_id,
                    _elapsed_ms(started),
                    ended,
                )
                return InvocationOutcome(invocation_id, error=ended)
            call.cancel()
            logger.warning(
                "Executed 'Functions.%s' (Cancelled, Id=%s, Duration=%dms): the host stopped",
                function.name,
                invocation_id,
                _elapsed_ms(started),
            )
            raise
        except Exception as error:
            logger.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                function.name,
                invocation_id,
                _elapsed_ms(started),
            )
            return InvocationOutcome(invocation_id, error=error)
        finally:
            self._calls.pop(invocation_id, None)
            self._ended.pop(invocation_id, None)
        if value is not None and not function.returns_output:
            # The worker rejects this too: there is no output binding to take the value.
            misuse = TypeError(
                f"function '{function.name}' without a $return binding returned a "
                f"non-None value ({type(value).__name__})"
            )
            logger.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s",
                function.name,
                invocation_id,
                _elapsed_ms(started),
                misuse,
            )
            return InvocationOutcome(invocation_id, error=misuse)
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            function.name,
            invocation_id,
            _elapsed_ms(started),
        )
        return InvocationOutcome(invocation_id, value=value)

    async def _call(self, function: IndexedFunction, kwargs: dict[str, Any]) -> Any:
        if function.is_async:
            return await function.user_function(**kwargs)
        return await self._threads.run(lambda: function.user_function(**kwargs))

    def _restart_worker(self, function_name: str, timed_out_id: str) -> None:
        """End every invocation in flight, as the host's restart of the worker does."""
        self.worker_restarts += 1
        timeout = self._function_timeout or 0.0
        logger.error(
            "Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating "
            "cancellation. Restarting the worker: %d invocation(s) in flight on it fail.",
            _timespan_text(timeout),
            function_name,
            timed_out_id,
            len(self._calls),
        )
        for invocation_id, call in self._calls.items():
            if call.done():
                continue
            self._ended[invocation_id] = (
                FunctionTimeoutError(
                    f"Timeout value of {_timespan_text(timeout)} was exceeded by function "
                    f"'Functions.{function_name}'"
                )
                if invocation_id == timed_out_id
                else WorkerRestartedError(
                    f"the worker restarted after 'Functions.{function_name}' timed out"
                )
            )
            call.cancel()


def _timespan_text(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
