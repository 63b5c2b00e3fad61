"""$batch, per-mailbox throttling, injected faults and auth."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from local.graph_emulator import RunningEmulator, start_emulator
from tests.emulator.support import GraphClient, event_body

ALICE = "/users/alice@contoso.com"
JSON = {"Content-Type": "application/json"}


def _control_url(graph: GraphClient, path: str) -> str:
    return graph.graph_url.replace("/v1.0", "/_emulator") + path


def _create_step(body: dict[str, Any], user: str = ALICE) -> dict[str, Any]:
    """A $batch step (id 1) creating an event in the user's calendar (Alice's)."""
    return {"id": "1", "method": "POST", "url": f"{user}/events", "headers": JSON, "body": body}


async def _stats(graph: GraphClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await graph.get(_control_url(graph, "/stats"))).body
    return stats


async def test_batch_limits_and_depends_on(graph: GraphClient) -> None:
    too_many = [{"id": str(i), "method": "GET", "url": ALICE} for i in range(21)]
    refused = await graph.post("/$batch", {"requests": too_many})
    assert refused.status == 400

    batch = await graph.post(
        "/$batch",
        {
            "requests": [
                _create_step(event_body("batched", "2025-05-01T09:00:00", "2025-05-01T10:00:00")),
                {"id": "2", "method": "GET", "url": f"{ALICE}/events", "dependsOn": ["1"]},
                {"id": "3", "method": "GET", "url": "/users/ghost@contoso.com/events"},
                {"id": "4", "method": "GET", "url": ALICE, "dependsOn": ["3"]},
            ]
        },
    )
    assert batch.status == 200
    responses = {r["id"]: r for r in batch.body["responses"]}
    assert responses["1"]["status"] == 201
    assert [e["subject"] for e in responses["2"]["body"]["value"]] == ["batched"]
    assert responses["3"]["status"] == 404
    assert responses["4"]["status"] == 424

    stats = await _stats(graph)
    rows = {(r["method"], r["route"], r["mailbox"]): r["count"] for r in stats["requests"]}
    # At least this test's two: the emulator is the session's, and a host of an earlier
    # test may still send a `$batch` of its own (named by no mailbox). The steps are
    # counted under their own routes and mailboxes.
    assert rows[("POST", "/$batch", None)] >= 2
    assert rows[("POST", "/users/{id}/events", "alice@contoso.com")] == 1
    assert rows[("GET", "/users/{id}/events", "alice@contoso.com")] == 1
    assert rows[("GET", "/users/{id}/events", "ghost@contoso.com")] == 1


async def test_inner_throttled_request_is_a_429_inside_a_200(graph: GraphClient) -> None:
    fault = await graph.post(
        _control_url(graph, "/faults"),
        {"mailbox": "bob@contoso.com", "status": 429, "retryAfter": 7, "count": 1},
    )
    assert fault.status == 201
    batch = await graph.post(
        "/$batch",
        {
            "requests": [
                {"id": "a", "method": "GET", "url": f"{ALICE}/events"},
                {"id": "b", "method": "GET", "url": "/users/bob@contoso.com/events"},
            ]
        },
    )
    assert batch.status == 200
    inner = {r["id"]: r for r in batch.body["responses"]}
    assert inner["a"]["status"] == 200
    assert inner["b"]["status"] == 429
    assert inner["b"]["headers"]["Retry-After"] == "7"
    assert inner["b"]["body"]["error"]["code"] == "ApplicationThrottled"


async def test_fifth_concurrent_request_on_a_mailbox_is_throttled(graph: GraphClient) -> None:
    # Long enough that all five are in flight together even on a busy machine.
    await graph.post(_control_url(graph, "/latency"), {"ms": 1000})
    replies = await asyncio.gather(*(graph.get(f"{ALICE}/events") for _ in range(5)))
    await graph.post(_control_url(graph, "/latency"), {"ms": 0})
    statuses = sorted(r.status for r in replies)
    assert statuses == [200, 200, 200, 200, 429]
    throttled = next(r for r in replies if r.status == 429)
    assert throttled.error_code == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled.body["error"]["message"]
    assert int(throttled.headers["Retry-After"]) >= 1
    stats = await _stats(graph)
    assert stats["peakConcurrency"]["alice@contoso.com"] == 4
    # The emulator is the session's: other tests' hosts may still be at work on theirs.
    assert "alice@contoso.com" not in stats["inFlight"]
    # Another mailbox is not affected.
    assert (await graph.get("/users/bob@contoso.com/events")).status == 200


async def test_request_budget_per_window(emulator: RunningEmulator, graph: GraphClient) -> None:
    throttle = emulator.state.throttle
    original = throttle.budget
    throttle.budget = 3
    try:
        statuses = [(await graph.get(f"{ALICE}/events")).status for _ in range(4)]
        blocked = await graph.get(f"{ALICE}/events")
    finally:
        throttle.budget = original
    assert statuses == [200, 200, 200, 429]
    assert int(blocked.headers["Retry-After"]) > 1


async def test_fault_count_path_and_clearing(graph: GraphClient) -> None:
    await graph.post(
        _control_url(graph, "/faults"),
        {"pathContains": "/calendarView", "status": 503, "code": "ServiceUnavailable", "count": 2},
    )
    window = {"startDateTime": "2025-01-01T00:00:00Z", "endDateTime": "2025-01-02T00:00:00Z"}
    first = await graph.get(f"{ALICE}/calendarView", params=window)
    other_route = await graph.get(f"{ALICE}/events")
    second = await graph.get(f"{ALICE}/calendarView", params=window)
    third = await graph.get(f"{ALICE}/calendarView", params=window)
    assert (first.status, other_route.status, second.status, third.status) == (503, 200, 503, 200)
    assert first.error_code == "ServiceUnavailable"

    await graph.post(
        _control_url(graph, "/faults"), {"mailbox": "alice@contoso.com", "status": 403}
    )
    for _ in range(3):
        denied = await graph.get(f"{ALICE}/events")
        assert denied.status == 403
        assert denied.error_code == "ErrorAccessDenied"
    assert (await graph.delete(_control_url(graph, "/faults"))).status == 204
    assert (await graph.get(f"{ALICE}/events")).status == 200

    await graph.post(_control_url(graph, "/faults"), {"latencyMs": 150, "count": 1})
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = await graph.get(f"{ALICE}/events")
    assert slow.status == 200
    assert loop.time() - started >= 0.15


async def test_a_fault_after_applying_loses_only_the_answer(graph: GraphClient) -> None:
    """The write lands and its answer is the fault; a retry with the create's
    transactionId finds the event made, top level and inside a $batch alike."""
    # A mailbox of this test alone: the session's emulator also serves other tests' apps,
    # whose late requests would spend a fault on any mailbox.
    mailbox = f"lost-{uuid.uuid4().hex[:8]}@contoso.com"
    user = f"/users/{mailbox}"
    await graph.post(_control_url(graph, "/mailboxes"), {"id": mailbox})
    refused = await graph.post(_control_url(graph, "/faults"), {"afterApplying": True})
    assert refused.status == 400
    await graph.post(
        _control_url(graph, "/faults"),
        {"mailbox": mailbox, "status": 504, "afterApplying": True, "count": 2},
    )
    body = {
        **event_body("lost answer", "2025-03-01T09:00:00", "2025-03-01T10:00:00"),
        "transactionId": str(uuid.uuid4()),
    }
    lost = await graph.post(f"{user}/events", body)
    assert lost.status == 504
    in_batch = {
        **event_body("lost in a batch", "2025-03-01T11:00:00", "2025-03-01T12:00:00"),
        "transactionId": str(uuid.uuid4()),
    }
    batched = await graph.post("/$batch", {"requests": [_create_step(in_batch, user)]})
    assert [r["status"] for r in batched.body["responses"]] == [504]

    listed = (await graph.get(f"{user}/events", params={"$top": "100"})).body["value"]
    assert sorted(e["subject"] for e in listed) == ["lost answer", "lost in a batch"]
    again = await graph.post(f"{user}/events", body)
    assert again.status == 201
    made = next(e for e in listed if e["subject"] == "lost answer")
    assert again.body["id"] == made["id"]


async def test_a_fault_may_hit_one_method_only(graph: GraphClient) -> None:
    """An update's fault that the reads of the same event leave alone, top level and
    inside a $batch alike."""
    mailbox = f"method-{uuid.uuid4().hex[:8]}@contoso.com"
    user = f"/users/{mailbox}"
    await graph.post(_control_url(graph, "/mailboxes"), {"id": mailbox})
    for malformed in ("PATCH GET", "PÄTCH", "ß", "XXXXXXXXXX", "A" * 10_000, "", 5):
        refused = await graph.post(
            _control_url(graph, "/faults"), {"status": 503, "method": malformed}
        )
        assert refused.status == 400, malformed
    made = await graph.post(
        f"{user}/events", event_body("one method", "2025-03-01T09:00:00", "2025-03-01T10:00:00")
    )
    event = f"{user}/events/{made.body['id']}"
    await graph.post(
        _control_url(graph, "/faults"),
        {"mailbox": mailbox, "pathContains": "/events/", "method": "patch", "status": 503},
    )

    read = await graph.get(event)
    update = await graph.patch(event, {"subject": "renamed"})
    steps = [
        {"id": "1", "method": "GET", "url": event},
        {"id": "2", "method": "PATCH", "url": event, "headers": JSON, "body": {"subject": "x"}},
    ]
    batched = await graph.post("/$batch", {"requests": steps})

    assert (read.status, update.status) == (200, 503)
    answers = {r["id"]: r["status"] for r in batched.body["responses"]}
    assert answers == {"1": 200, "2": 503}
    assert (await graph.delete(_control_url(graph, "/faults"))).status == 204


async def test_bearer_token_is_required(graph: GraphClient) -> None:
    missing = await graph.get(f"{ALICE}/events", token="")
    assert missing.status == 401
    assert missing.error_code == "InvalidAuthenticationToken"
    assert (await graph.get(f"{ALICE}/events", token="anything")).status == 200
    control = await graph.get(_control_url(graph, "/mailboxes"), token="")
    assert control.status == 200


async def test_strict_auth_accepts_only_issued_tokens(http_session: aiohttp.ClientSession) -> None:
    running = await start_emulator(
        mailboxes=["alice@contoso.com"],
        strict_auth=True,
        client_credentials={"app-id": "app-secret"},
    )
    try:
        client = GraphClient(http_session, running.graph_url)
        assert (await client.get(f"{ALICE}/events", token="made-up")).status == 401
        form = {
            "grant_type": "client_credentials",
            "client_id": "app-id",
            "client_secret": "app-secret",
            "scope": "https://graph.microsoft.com/.default",
        }
        async with http_session.post(running.token_url, data=form) as response:
            assert response.status == 200
            issued = await response.json()
        assert issued["token_type"] == "Bearer"
        assert issued["expires_in"] == 3599
        ok = await client.get(f"{ALICE}/events", token=issued["access_token"])
        assert ok.status == 200
        async with http_session.post(
            running.token_url, data={**form, "client_secret": "wrong"}
        ) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "invalid_client"
        other_tenant = f"{running.base_url}/{uuid.uuid4()}/oauth2/v2.0/token"
        async with http_session.post(other_tenant, data=form) as response:
            assert response.status == 400
        async with http_session.post(f"{running.base_url}/_emulator/tokens/revoke") as response:
            assert (await response.json())["revoked"] == 1
        revoked = await client.get(f"{ALICE}/events", token=issued["access_token"])
        assert revoked.status == 401
    finally:
        await running.close()
