"""calendarView/delta: full round in pages, incremental rounds, expiry → 410."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.emulator.support import GraphClient, event_body

ALICE = "/users/alice@contoso.com"
WINDOW = {"startDateTime": "2025-10-01T00:00:00Z", "endDateTime": "2025-10-31T00:00:00Z"}
PAGE_OF_2 = {"Prefer": "odata.maxpagesize=2"}


async def _round(graph: GraphClient, first: Any) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink; returns items, deltaLink and the number of pages."""
    reply = await first
    assert reply.status == 200, reply.body
    items = list(reply.body["value"])
    pages = 1
    while "@odata.nextLink" in reply.body:
        assert "$skiptoken=" in reply.body["@odata.nextLink"]
        reply = await graph.get(reply.body["@odata.nextLink"], headers=PAGE_OF_2)
        items += reply.body["value"]
        pages += 1
    assert "$deltatoken=" in reply.body["@odata.deltaLink"]
    return items, reply.body["@odata.deltaLink"], pages


async def test_delta_initial_incremental_and_expiry(graph: GraphClient) -> None:
    ids = {}
    for day in (1, 2, 3):
        created = await graph.post(
            f"{ALICE}/events",
            event_body(f"D{day}", f"2025-10-0{day}T09:00:00", f"2025-10-0{day}T10:00:00"),
        )
        ids[day] = created.body["id"]
    outside = await graph.post(
        f"{ALICE}/events", event_body("Nov", "2025-11-05T09:00:00", "2025-11-05T10:00:00")
    )

    items, delta_link, pages = await _round(
        graph, graph.get(f"{ALICE}/calendarView/delta", params=WINDOW, headers=PAGE_OF_2)
    )
    assert pages == 2
    assert sorted(i["subject"] for i in items) == ["D1", "D2", "D3"]

    nothing, delta_link, _ = await _round(graph, graph.get(delta_link, headers=PAGE_OF_2))
    assert nothing == []

    await graph.patch(f"{ALICE}/events/{quote(ids[1], safe='')}", {"subject": "D1 moved"})
    await graph.delete(f"{ALICE}/events/{quote(ids[2], safe='')}")
    added = await graph.post(
        f"{ALICE}/events", event_body("D9", "2025-10-09T09:00:00", "2025-10-09T10:00:00")
    )
    # Changes outside the window are not reported.
    await graph.patch(f"{ALICE}/events/{quote(outside.body['id'], safe='')}", {"subject": "N"})

    changes, delta_link, _ = await _round(graph, graph.get(delta_link, headers=PAGE_OF_2))
    updated = {c["id"]: c for c in changes if "@removed" not in c}
    removed = [c for c in changes if "@removed" in c]
    assert set(updated) == {ids[1], added.body["id"]}
    assert updated[ids[1]]["subject"] == "D1 moved"
    assert removed == [
        {"@odata.type": "#microsoft.graph.event", "id": ids[2], "@removed": {"reason": "deleted"}}
    ]

    # Moving an event out of the window removes it from the view.
    await graph.patch(
        f"{ALICE}/events/{quote(ids[3], safe='')}",
        {
            "start": {"dateTime": "2025-12-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2025-12-01T10:00:00", "timeZone": "UTC"},
        },
    )
    moved_out, delta_link, _ = await _round(graph, graph.get(delta_link))
    assert [(c["id"], "@removed" in c) for c in moved_out] == [(ids[3], True)]

    expired = await graph.post(
        graph.graph_url.replace("/v1.0", "/_emulator/delta/expire"),
        {"mailbox": "alice@contoso.com"},
    )
    assert expired.body["expired"] >= 1
    gone = await graph.get(delta_link)
    assert gone.status == 410
    assert gone.error_code == "syncStateNotFound"
    unknown = await graph.get(f"{ALICE}/calendarView/delta", params={"$deltatoken": "nope"})
    assert unknown.status == 410


async def test_delta_expands_series_and_rejects_unsupported_options(graph: GraphClient) -> None:
    master = await graph.post(
        f"{ALICE}/events",
        event_body(
            "Daily",
            "2025-10-06T08:00:00",
            "2025-10-06T08:15:00",
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2025-10-06", "numberOfOccurrences": 3},
            },
        ),
    )
    items, delta_link, _ = await _round(
        graph, graph.get(f"{ALICE}/calendarView/delta", params=WINDOW)
    )
    assert [i["type"] for i in items] == ["occurrence"] * 3

    # Deleting one occurrence: it is @removed; the others changed with their master.
    await graph.delete(f"{ALICE}/events/{quote(items[1]['id'], safe='')}")
    changes, _, _ = await _round(graph, graph.get(delta_link))
    assert {c["id"] for c in changes if "@removed" in c} == {items[1]["id"]}
    assert master.body["id"] not in {c["id"] for c in changes}

    rejected = await graph.get(
        f"{ALICE}/calendarView/delta", params={**WINDOW, "$filter": "subject eq 'x'"}
    )
    assert rejected.status == 400
    selected = await graph.get(
        f"{ALICE}/calendarView/delta", params={**WINDOW, "$select": "subject"}
    )
    assert selected.status == 200
    assert "start" in selected.body["value"][0]
