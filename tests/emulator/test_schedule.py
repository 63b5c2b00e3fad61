"""getSchedule: availability view, schedule items, and Graph's request limits."""

from __future__ import annotations

from typing import Any

from tests.emulator.support import GraphClient, event_body

ALICE = "/users/alice@contoso.com"


def _request(schedules: list[str], start: str, end: str, interval: int = 60) -> dict[str, Any]:
    return {
        "schedules": schedules,
        "startTime": {"dateTime": start, "timeZone": "UTC"},
        "endTime": {"dateTime": end, "timeZone": "UTC"},
        "availabilityViewInterval": interval,
    }


async def test_get_schedule_reports_busy_slots_and_hides_private_details(
    graph: GraphClient,
) -> None:
    await graph.post(
        f"{ALICE}/events", event_body("Standup", "2025-06-02T09:00:00", "2025-06-02T10:00:00")
    )
    await graph.post(
        f"{ALICE}/events",
        event_body(
            "Doctor",
            "2025-06-02T11:00:00",
            "2025-06-02T12:00:00",
            sensitivity="private",
            showAs="oof",
        ),
    )
    await graph.post(
        f"{ALICE}/events",
        event_body("Maybe", "2025-06-02T12:30:00", "2025-06-02T13:00:00", showAs="tentative"),
    )
    reply = await graph.post(
        f"{ALICE}/calendar/getSchedule",
        _request(
            ["alice@contoso.com", "bob@contoso.com", "ghost@contoso.com"],
            "2025-06-02T08:00:00",
            "2025-06-02T14:00:00",
        ),
    )
    assert reply.status == 200
    alice, bob, ghost = reply.body["value"]
    assert alice["availabilityView"] == "020310"
    assert [i["status"] for i in alice["scheduleItems"]] == ["busy", "oof", "tentative"]
    assert alice["scheduleItems"][0]["subject"] == "Standup"
    assert alice["scheduleItems"][1]["isPrivate"] is True
    assert "subject" not in alice["scheduleItems"][1]
    assert bob["availabilityView"] == "000000"
    assert ghost["error"]["responseCode"] == "ErrorMailRecipientNotFound"


async def test_get_schedule_limits(graph: GraphClient) -> None:
    too_many = [f"user{i}@contoso.com" for i in range(21)]
    assert (
        await graph.post(
            f"{ALICE}/calendar/getSchedule",
            _request(too_many, "2025-06-01T00:00:00", "2025-06-02T00:00:00"),
        )
    ).status == 400
    too_long = await graph.post(
        f"{ALICE}/calendar/getSchedule",
        _request(["alice@contoso.com"], "2025-06-01T00:00:00", "2025-08-02T00:00:00"),
    )
    assert too_long.status == 400
    bad_interval = await graph.post(
        f"{ALICE}/calendar/getSchedule",
        _request(["alice@contoso.com"], "2025-06-01T00:00:00", "2025-06-02T00:00:00", 2),
    )
    assert bad_interval.status == 400
    just_under = await graph.post(
        f"{ALICE}/calendar/getSchedule",
        _request(["alice@contoso.com"], "2025-06-01T00:00:00", "2025-08-01T00:00:00", 1440),
    )
    assert just_under.status == 200
    assert len(just_under.body["value"][0]["availabilityView"]) == 61
