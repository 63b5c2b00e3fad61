"""calendarView: recurrence expansion with exceptions and deletions, Graph's window rule,
time-zone preference and paging."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.emulator.support import GraphClient, event_body

ALICE = "/users/alice@contoso.com"


def _window(start: str, end: str) -> dict[str, str]:
    return {"startDateTime": start, "endDateTime": end}


async def _view(graph: GraphClient, start: str, end: str, **kwargs: Any) -> list[dict[str, Any]]:
    reply = await graph.get(f"{ALICE}/calendarView", params=_window(start, end), **kwargs)
    assert reply.status == 200, reply.body
    items: list[dict[str, Any]] = list(reply.body["value"])
    link = reply.body.get("@odata.nextLink")
    while link:
        more = await graph.get(link, **kwargs)
        items += more.body["value"]
        link = more.body.get("@odata.nextLink")
    return items


async def test_weekly_series_with_moved_and_deleted_occurrence(graph: GraphClient) -> None:
    master = (
        await graph.post(
            f"{ALICE}/events",
            event_body(
                "Weekly sync",
                "2025-03-03T09:00:00",
                "2025-03-03T10:00:00",
                "Europe/Paris",
                recurrence={
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                    "range": {
                        "type": "numbered",
                        "startDate": "2025-03-03",
                        "numberOfOccurrences": 6,
                    },
                },
            ),
        )
    ).body
    assert master["type"] == "seriesMaster"
    assert master["recurrence"]["range"]["numberOfOccurrences"] == 6

    before = await _view(graph, "2025-03-01T00:00:00Z", "2025-04-30T00:00:00Z")
    assert [o["type"] for o in before] == ["occurrence"] * 6
    assert {o["seriesMasterId"] for o in before} == {master["id"]}
    # Wall-clock time is kept across the DST change of 30 March.
    assert [o["start"]["dateTime"][:16] for o in before] == [
        "2025-03-03T08:00",
        "2025-03-10T08:00",
        "2025-03-17T08:00",
        "2025-03-24T08:00",
        "2025-03-31T07:00",
        "2025-04-07T07:00",
    ]

    third, fourth = before[2], before[3]
    third_path = f"{ALICE}/events/{quote(third['id'], safe='')}"
    assert (await graph.get(third_path)).body["type"] == "occurrence"
    moved = await graph.patch(
        third_path,
        {
            "start": {"dateTime": "2025-03-19T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2025-03-19T15:00:00", "timeZone": "UTC"},
        },
    )
    assert moved.status == 200
    assert moved.body["type"] == "exception"
    assert moved.body["id"] == third["id"]
    assert moved.body["originalStart"].startswith("2025-03-17T08:00:00")

    fourth_path = f"{ALICE}/events/{quote(fourth['id'], safe='')}"
    assert (await graph.delete(fourth_path)).status == 204
    assert (await graph.get(fourth_path)).status == 404

    after = await _view(graph, "2025-03-01T00:00:00Z", "2025-04-30T00:00:00Z")
    assert [(o["type"], o["start"]["dateTime"][:16]) for o in after] == [
        ("occurrence", "2025-03-03T08:00"),
        ("occurrence", "2025-03-10T08:00"),
        ("exception", "2025-03-19T14:00"),
        ("occurrence", "2025-03-31T07:00"),
        ("occurrence", "2025-04-07T07:00"),
    ]
    # The exception shows where it moved to, not where it was.
    assert [o["type"] for o in await _view(graph, "2025-03-17T00:00Z", "2025-03-18T00:00Z")] == []
    assert [o["type"] for o in await _view(graph, "2025-03-19T00:00Z", "2025-03-20T00:00Z")] == [
        "exception"
    ]
    # /events lists the master only; instances lists the series' members.
    listed = await graph.get(f"{ALICE}/events")
    assert [e["type"] for e in listed.body["value"]] == ["seriesMaster"]
    instances = await graph.get(
        f"{ALICE}/events/{quote(master['id'], safe='')}/instances",
        params=_window("2025-03-01T00:00:00Z", "2025-04-30T00:00:00Z"),
    )
    assert len(instances.body["value"]) == 5


async def test_monthly_and_daily_patterns(graph: GraphClient) -> None:
    await graph.post(
        f"{ALICE}/events",
        event_body(
            "Second Tuesday",
            "2025-01-14T12:00:00",
            "2025-01-14T13:00:00",
            recurrence={
                "pattern": {
                    "type": "relativeMonthly",
                    "interval": 1,
                    "daysOfWeek": ["tuesday"],
                    "index": "second",
                },
                "range": {"type": "endDate", "startDate": "2025-01-14", "endDate": "2025-04-30"},
            },
        ),
    )
    await graph.post(
        f"{ALICE}/events",
        event_body(
            "Fifth of month",
            "2025-01-05T08:00:00",
            "2025-01-05T08:30:00",
            recurrence={
                "pattern": {"type": "absoluteMonthly", "interval": 2, "dayOfMonth": 5},
                "range": {"type": "noEnd", "startDate": "2025-01-05"},
            },
        ),
    )
    view = await _view(graph, "2025-01-01T00:00:00Z", "2025-05-31T00:00:00Z")
    by_subject: dict[str, list[str]] = {}
    for item in view:
        by_subject.setdefault(item["subject"], []).append(item["start"]["dateTime"][:10])
    assert by_subject["Second Tuesday"] == ["2025-01-14", "2025-02-11", "2025-03-11", "2025-04-08"]
    assert by_subject["Fifth of month"] == ["2025-01-05", "2025-03-05", "2025-05-05"]


async def test_events_touching_the_window_edges_are_included(graph: GraphClient) -> None:
    await graph.post(
        f"{ALICE}/events", event_body("Ten", "2025-05-05T10:00:00", "2025-05-05T11:00:00")
    )
    ends_at_start = await _view(graph, "2025-05-05T11:00:00Z", "2025-05-05T12:00:00Z")
    starts_at_end = await _view(graph, "2025-05-05T09:00:00Z", "2025-05-05T10:00:00Z")
    apart = await _view(graph, "2025-05-05T11:00:01Z", "2025-05-05T12:00:00Z")
    assert [e["subject"] for e in ends_at_start] == ["Ten"]
    assert [e["subject"] for e in starts_at_end] == ["Ten"]
    assert apart == []
    # A window given with an offset is read in that offset.
    offset = await _view(graph, "2025-05-05T12:30:00+02:00", "2025-05-05T12:45:00+02:00")
    assert [e["subject"] for e in offset] == ["Ten"]


async def test_paging_and_prefer_headers(graph: GraphClient) -> None:
    for hour in range(12):
        await graph.post(
            f"{ALICE}/events",
            event_body(f"H{hour:02}", f"2025-08-01T{hour:02}:00:00", f"2025-08-01T{hour:02}:30:00"),
        )
    window = _window("2025-08-01T00:00:00Z", "2025-08-02T00:00:00Z")
    default_page = await graph.get(f"{ALICE}/calendarView", params=window)
    assert len(default_page.body["value"]) == 10
    assert "$skip=10" in default_page.body["@odata.nextLink"]

    # Two Prefer headers, one of them holding two preferences.
    prefer = [
        ("Prefer", 'outlook.timezone="Pacific Standard Time", IdType="ImmutableId"'),
        ("Prefer", "odata.maxpagesize=5"),
    ]
    first = await graph.get(f"{ALICE}/calendarView", params=window, headers=prefer)
    assert len(first.body["value"]) == 5
    assert first.body["value"][0]["start"] == {
        "dateTime": "2025-07-31T17:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
    assert "odata.maxpagesize=5" in first.headers["Preference-Applied"]
    pages = [first.body["value"]]
    link = first.body.get("@odata.nextLink")
    while link:
        page = await graph.get(link, headers=prefer)
        pages.append(page.body["value"])
        link = page.body.get("@odata.nextLink")
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [e["subject"] for p in pages for e in p] == [f"H{h:02}" for h in range(12)]

    top = await graph.get(f"{ALICE}/calendarView", params={**window, "$top": "3"})
    assert len(top.body["value"]) == 3
    missing_window = await graph.get(f"{ALICE}/calendarView")
    assert missing_window.status == 400
    assert missing_window.error_code == "ErrorInvalidParameter"


async def test_all_day_events_float_in_the_requested_zone(graph: GraphClient) -> None:
    await graph.post(
        f"{ALICE}/events",
        event_body(
            "Holiday",
            "2025-09-01T00:00:00",
            "2025-09-02T00:00:00",
            "Europe/Berlin",
            isAllDay=True,
            showAs="oof",
        ),
    )
    view = await _view(
        graph,
        "2025-08-31T00:00:00Z",
        "2025-09-03T00:00:00Z",
        headers={"Prefer": 'outlook.timezone="America/New_York"'},
    )
    assert view[0]["isAllDay"] is True
    assert view[0]["start"] == {
        "dateTime": "2025-09-01T00:00:00.0000000",
        "timeZone": "America/New_York",
    }
    not_midnight = await graph.post(
        f"{ALICE}/events",
        event_body("Bad", "2025-09-01T01:00:00", "2025-09-02T00:00:00", isAllDay=True),
    )
    assert not_midnight.status == 400
