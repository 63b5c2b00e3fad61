"""A small FunctionApp for the local Functions host's tests (not the project's app).

What the functions saw is kept in `state`, reset before each test. Queue names and one
schedule come from app settings (`%...%`), so each test picks its own queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field

import azure.functions as func
from azure.functions.timer import TimerRequest

logger = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
STORAGE = "AzureWebJobsStorage"


@dataclass(frozen=True)
class Delivery:
    function: str
    message_id: str | None
    body: str
    dequeue_count: int | None


@dataclass
class SampleState:
    deliveries: list[Delivery] = field(default_factory=list)
    failed_dequeue_counts: list[int | None] = field(default_factory=list)
    slow_started: list[int | None] = field(default_factory=list)
    ticks: list[TimerRequest] = field(default_factory=list)
    startup_ticks: list[TimerRequest] = field(default_factory=list)
    failing_ticks: int = 0
    overrun_ticks: list[TimerRequest] = field(default_factory=list)
    http_in_flight: int = 0
    http_max_in_flight: int = 0
    queue_in_flight: int = 0
    queue_max_in_flight: int = 0
    sync_threads: list[str] = field(default_factory=list)
    naps_finished: int = 0

    def reset(self) -> None:
        self.__dict__.update(SampleState().__dict__)


state = SampleState()


@bp.route(route="items/{id}", methods=["GET", "POST"])
async def item(req: func.HttpRequest) -> func.HttpResponse:
    answer = {
        "id": req.route_params.get("id"),
        "method": req.method,
        "query": dict(req.params),
        "body": req.get_body().decode("utf-8"),
        "url": req.url,
        "sample_header": req.headers.get("x-sample"),
    }
    return func.HttpResponse(json.dumps(answer), mimetype="application/json")


@bp.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    state.http_in_flight += 1
    state.http_max_in_flight = max(state.http_max_in_flight, state.http_in_flight)
    try:
        await asyncio.sleep(0.2)
    finally:
        state.http_in_flight -= 1
    return func.HttpResponse("done")


@bp.route(route="nap", methods=["GET"])
async def nap(req: func.HttpRequest) -> func.HttpResponse:
    """Sleeps `?seconds=` and records that it finished (after its caller got a 502)."""
    await asyncio.sleep(float(req.params.get("seconds", "0")))
    state.naps_finished += 1
    return func.HttpResponse("rested")


@bp.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def open_door(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("open")


@bp.route(route="locked", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
async def locked(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin only")


@bp.route(route="greet/{name?}", methods=["GET"])
def greet(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # Sync on purpose: the host must run it on a worker thread.
    state.sync_threads.append(threading.current_thread().name)
    time.sleep(0.05)
    name = req.route_params.get("name", "nobody")
    return func.HttpResponse(f"hello {name} from {context.function_name}")


@bp.route(route="teapot", methods=["GET"])
def teapot(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse(
        "<p>short and stout</p>", status_code=418, mimetype="text/html", charset="iso-8859-1"
    )
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")
    return response


@bp.route(route="boom", methods=["GET"])
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@bp.queue_trigger(arg_name="msg", queue_name="%SAMPLE_RECORD_QUEUE%", connection=STORAGE)
async def record(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    state.queue_in_flight += 1
    state.queue_max_in_flight = max(state.queue_max_in_flight, state.queue_in_flight)
    try:
        if body.startswith("sleep:"):
            await asyncio.sleep(float(body.removeprefix("sleep:")))
    finally:
        state.queue_in_flight -= 1
    state.deliveries.append(Delivery("record", msg.id, body, msg.dequeue_count))


@bp.queue_trigger(arg_name="msg", queue_name="%SAMPLE_FAILING_QUEUE%", connection=STORAGE)
def always_fails(msg: func.QueueMessage) -> None:
    state.failed_dequeue_counts.append(msg.dequeue_count)
    raise ValueError(f"cannot handle {msg.get_body()!r}")


@bp.queue_trigger(arg_name="msg", queue_name="%SAMPLE_SLOW_QUEUE%", connection=STORAGE)
async def slow_queue(msg: func.QueueMessage) -> None:
    """Body: {"sleep": seconds, "slow_attempts": n}; sleeps on the first n deliveries."""
    payload = json.loads(msg.get_body())
    logger.info("slow_queue started message %s (dequeue count %s)", msg.id, msg.dequeue_count)
    state.slow_started.append(msg.dequeue_count)
    if (msg.dequeue_count or 0) <= payload["slow_attempts"]:
        await asyncio.sleep(payload["sleep"])
    state.deliveries.append(
        Delivery("slow_queue", msg.id, msg.get_body().decode("utf-8"), msg.dequeue_count)
    )


@bp.timer_trigger(schedule="%SAMPLE_TIMER_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    assert isinstance(timer, TimerRequest)
    state.ticks.append(timer)


@bp.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
async def startup_tick(timer: func.TimerRequest) -> None:
    assert isinstance(timer, TimerRequest)
    state.startup_ticks.append(timer)


@bp.timer_trigger(schedule="*/1 * * * * *", arg_name="timer")
async def overrun_tick(timer: func.TimerRequest) -> None:
    """Every second; its first run takes 2.5 s, past two occurrences."""
    assert isinstance(timer, TimerRequest)
    state.overrun_ticks.append(timer)
    if len(state.overrun_ticks) == 1:
        await asyncio.sleep(2.5)


@bp.timer_trigger(schedule="*/1 * * * * *", arg_name="timer")
async def failing_tick(timer: func.TimerRequest) -> None:
    state.failing_ticks += 1
    raise RuntimeError("every run fails")


@bp.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def whoami(req: func.HttpRequest) -> func.HttpResponse:
    """The platform headers the function got (X-MS-CLIENT-PRINCIPAL and its siblings)."""
    seen = {k: v for k, v in req.headers.items() if k.lower().startswith("x-ms-")}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")


app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
