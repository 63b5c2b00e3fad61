"""The console in a real headless Chromium against the local stack: connect a resource
through the form, change its delete policy, see a booking and its cancellation from
Outlook, the sync log, resync and disconnect; axe-core finds no serious violation on any
page; and a screenshot of each page."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, Route, expect

from tests.console.conftest import axe_violations
from tests.e2e.test_bookings_e2e import START, booking, our_events, synced
from tests.fixtures.callers import ADMIN, FRONTEND
from tests.fixtures.stack import Mailboxes, Stack, eventually

pytestmark = pytest.mark.integration


async def accessible(page: Page) -> None:
    assert await axe_violations(page) == []


async def shot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> None:
    await page.screenshot(path=folder / f"{name}.png", full_page=full_page)
    assert (folder / f"{name}.png").stat().st_size > 1000


async def narrow_screen(page: Page, folder: Path) -> None:
    """On a phone's width the table becomes one card per resource, nothing scrolls
    sideways."""
    await page.set_viewport_size({"width": 390, "height": 800})
    try:
        box = await page.locator("#resources thead").bounding_box()
        assert box is not None
        assert box["x"] < 0  # the column names move into each cell
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await accessible(page)
        await shot(page, folder, "resources-narrow")
    finally:
        await page.set_viewport_size({"width": 1200, "height": 800})


async def test_an_administrator_connects_watches_and_disconnects_a_room(
    stack: Stack, mb: Mailboxes, page: Page, screenshot_dir: Path
) -> None:
    resource_id = "room-" + mb.room.split("@")[0].rsplit("-", 1)[1]
    await page.goto(f"{stack.host_url}/api/console#/connect")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect a resource")

    # The form: every setting, a live preview, and the API's errors next to their fields.
    await page.get_by_label("Resource id").fill(resource_id)
    await page.get_by_label("Mailbox").fill(mb.room)
    await page.get_by_label("Display name").fill("Training room")
    await page.get_by_label("Time zone").fill("Europe/London")
    subject = page.get_by_label("Event subject")
    await subject.fill("Training: {title:>9}")
    await expect(page.locator("#error-subjectTemplate")).to_contain_text("not a plain placeholder")
    await expect(subject).to_have_attribute("aria-invalid", "true")
    await subject.fill("Training: {title}")
    await expect(page.locator("#preview-subject")).to_have_text("Training: Consultation")
    await expect(page.locator("#error-subjectTemplate")).to_be_hidden()
    await accessible(page)
    await shot(page, screenshot_dir, "connect", full_page=False)

    await page.get_by_label("Mailbox").fill("nobody-here@contoso.com")
    await page.get_by_role("button", name="Connect").click()
    await expect(page.locator("#error-mailbox")).to_have_text("not found in Microsoft 365")
    await expect(page.locator("#form-errors")).to_be_focused()
    await page.get_by_label("Mailbox").fill(mb.room)
    await page.get_by_role("button", name="Connect").click()

    # The list follows the connect until it is connected.
    await expect(page.locator("#notice")).to_contain_text("Training room is connecting")
    row = page.locator(f'tr[data-resource="{resource_id}"]')
    await expect(row.locator(".status")).to_have_text("Connected", timeout=20_000)
    await expect(row).to_contain_text(mb.room)
    await accessible(page)
    await shot(page, screenshot_dir, "resources")
    await narrow_screen(page, screenshot_dir)
    await page.get_by_label("Show status").select_option("failing")
    await expect(row).to_have_count(0)
    await page.get_by_label("Show status").select_option("connected")
    await expect(row).to_have_count(1)

    # Change the delete policy.
    await row.get_by_role("link", name="Settings of Training room").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Settings of Training room")
    await page.get_by_role("radio", name="Cancel the booking").check()
    await page.get_by_role("button", name="Save settings").click()
    await expect(page.locator("#notice")).to_contain_text("settings of Training room are saved")
    _, view = await stack.call("GET", f"/resources/{resource_id}")
    assert view["settings"]["onOutlookDelete"] == "cancel_booking"
    assert view["settings"]["subjectTemplate"] == "Training: {title}"

    # A booking made through the API shows in the bookings view, synced.
    status, created = await stack.call("POST", "/bookings", booking([resource_id]))
    assert status == 201, created
    await eventually(lambda: synced(stack, created["bookingId"]))
    day = START.date().isoformat()
    bookings_url = f"#/resources/{resource_id}/bookings?from={day}&to={day}"
    await page.goto(f"{stack.host_url}/api/console{bookings_url}")
    line = page.locator(f'tr[data-booking="{created["bookingId"]}"]')
    await expect(line).to_contain_text("confirmed")
    await expect(line.locator(".sync-state")).to_have_text("synced")
    await accessible(page)
    await shot(page, screenshot_dir, "bookings")

    # The Outlook user deletes the event: the booking is cancelled, the log says so.
    [event] = await our_events(stack, mb.room)
    await stack.graph("DELETE", f"/users/{mb.room}/events/{event['id']}")

    async def cancelled() -> bool:
        _, seen = await stack.call("GET", f"/bookings/{created['bookingId']}")
        return bool(seen["status"] == "cancelled")

    await eventually(cancelled, within=10)
    await page.reload()
    await expect(line.locator(".booking")).to_have_text("cancelled")

    await page.get_by_role("link", name="Sync log").click()
    log = page.locator("#sync-log")
    delete_line = log.locator("tr", has_text="outlook_delete:cancel_booking")
    await expect(delete_line).to_contain_text(created["bookingId"])
    times = await log.locator("tbody time").evaluate_all("ts => ts.map(t => t.dateTime)")
    assert times == sorted(times, reverse=True)  # newest first
    await accessible(page)
    await shot(page, screenshot_dir, "sync-log")
    await page.get_by_label("Show outcome").select_option("failed")
    await expect(page.locator("#log-region")).to_contain_text("No entries.")
    # Two entries a page: older pages and back.
    await page.goto(f"{stack.host_url}/api/console#/resources/{resource_id}/log?size=2")
    await expect(log.locator("tbody tr")).to_have_count(2)
    newest = await log.locator("tbody tr").first.text_content()
    await page.get_by_role("button", name="Older →").click()
    await expect(page.locator("#log-region")).to_contain_text("Page 2")
    assert await log.locator("tbody tr").first.text_content() != newest
    await page.get_by_role("button", name="← Newer").click()
    await expect(page.locator("#log-region")).to_contain_text("Page 1")
    await expect(log.locator("tbody tr").first).to_have_text(newest or "")

    # Resync, behind a confirmation that says what happens.
    await page.goto(f"{stack.host_url}/api/console#/resources/{resource_id}/edit")
    await page.get_by_role("button", name="Resync…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("deleted and written again from the bookings")
    await accessible(page)
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("button", name="Resync…")).to_be_focused()
    await page.get_by_role("button", name="Resync…").click()
    await dialog.get_by_role("button", name="Resync").click()
    await expect(page.locator("#notice")).to_contain_text("Resync of Training room started")

    async def resynced() -> bool:
        _, entries = await stack.call("GET", f"/resources/{resource_id}/sync-log")
        return any(e["action"] == "resync_finished" for e in entries["value"])

    await eventually(resynced, within=15)

    # Disconnect, keeping our events.
    await page.goto(f"{stack.host_url}/api/console#/resources/{resource_id}/edit")
    await page.get_by_role("button", name="Disconnect…").click()
    await expect(dialog).to_contain_text("The events this app wrote stay in the calendar")
    await dialog.get_by_role("button", name="Disconnect, keep events").click()
    await expect(page.locator("#notice")).to_contain_text("Training room is disconnected")
    await expect(row.locator(".status")).to_have_text("Disconnected")

    await page.goto(f"{stack.host_url}/api/console#/health")
    await expect(page.locator("#overall")).to_have_text(
        re.compile("Everything works|Something fails")
    )
    await accessible(page)
    await shot(page, screenshot_dir, "health")


async def test_the_form_is_usable_with_the_keyboard_alone(stack: Stack, page: Page) -> None:
    await page.goto(f"{stack.host_url}/api/console#/connect")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect a resource")

    async def tab() -> str:
        await page.keyboard.press("Tab")
        focused: str = await page.evaluate(
            "document.activeElement.id || document.activeElement.textContent.trim()"
        )
        return focused

    assert await tab() == "Skip to content"
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    assert [await tab() for _ in range(6)] == [
        "f-resourceId",
        "f-mailbox",
        "f-displayName",
        "f-timeZone",
        "f-direction-both",  # a radio group is one stop, at its checked choice
        "f-inbound-created",
    ]
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("ArrowDown")  # the arrows choose within the group
    assert await page.locator("#f-direction-out").is_checked()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Connect a resource")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": 401}, "You are not signed in"),
        (
            {"status": 302, "headers": {"Location": "https://login.microsoftonline.com/x"}},
            "You are not signed in",
        ),
        ({"status": 403}, "You need the administrator role"),
        ({"status": 503, "body": ""}, "The service cannot be reached"),
        (None, "The service cannot be reached"),
        (
            {
                "status": 503,
                "content_type": "application/json",
                "body": '{"error": {"code": "storage_unavailable", "message": "storage is down",'
                ' "details": []}}',
                "headers": {"Retry-After": "5"},
            },
            "storage is down Try again in 5 s.",
        ),
    ],
    ids=["401", "302-to-sign-in", "403", "503-no-body", "unreachable", "503-error"],
)
async def test_each_failure_of_the_api_says_what_to_do(
    stack: Stack, page: Page, answer: dict[str, object] | None, message: str
) -> None:
    async def refuse(route: object) -> None:
        if answer is None:
            await route.abort("connectionrefused")  # type: ignore[attr-defined]
        else:
            await route.fulfill(**answer)  # type: ignore[attr-defined]

    await page.route("**/api/resources", refuse)
    await page.goto(f"{stack.host_url}/api/console#/resources")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text(message)
    await expect(alert.get_by_role("button", name="Try again")).to_be_visible()
    await accessible(page)


async def test_the_page_keeps_a_strict_policy_and_revalidates(stack: Stack) -> None:
    async with stack.http.get(f"{stack.host_url}/api/console") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
        etag = response.headers["ETag"]
        assert response.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    async with stack.http.get(
        f"{stack.host_url}/api/console", headers={"If-None-Match": etag}
    ) as response:
        assert response.status == 304
        assert await response.read() == b""
    async with stack.http.get(f"{stack.host_url}/api/console/app.js") as response:
        assert (response.status, response.content_type) == (200, "text/javascript")
    async with stack.http.get(f"{stack.host_url}/api/console/nothing.js") as response:
        assert response.status == 404


async def test_the_console_takes_an_administrator_and_no_key(stack: Stack) -> None:
    async with aiohttp.ClientSession() as browser_without_key:
        for path in ("/api/console", "/api/console/app.js", "/api/resources"):
            async with browser_without_key.get(stack.host_url + path) as response:
                assert response.status == 401, path  # not signed in
            async with browser_without_key.get(stack.host_url + path, headers=FRONTEND) as r:
                assert r.status == 403, path  # signed in, without the role
            async with browser_without_key.get(stack.host_url + path, headers=ADMIN) as r:
                assert r.status == 200, path


def _view(state: str) -> dict[str, object]:
    return {
        "resourceId": "room-x",
        "settings": {
            "mailbox": "room-x@contoso.com",
            "displayName": "Room X",
            "timeZone": "UTC",
            "direction": "both",
            "inboundChanges": ["created", "updated", "deleted"],
            "active": True,
            "onOutlookDelete": "ignore",
            "onOutlookMove": "ignore",
            "blockWorkingElsewhere": False,
            "liveSlotCheck": True,
            "cancelledEventMode": "delete",
            "subjectTemplate": "{title}",
            "bodyTemplate": "{notes}",
        },
        "status": {"state": state, "reason": None},
        "subscription": {"id": None, "expiresAt": None},
        "mappedEvents": 3,
    }


async def test_disconnecting_with_our_events_removed_says_so_and_asks_for_it(
    stack: Stack, page: Page
) -> None:
    """The choice that deletes events sends removeEvents=true, after a confirmation that
    names what goes; the list then shows the resource disconnecting. (The API's side of
    it is in tests/e2e/test_disconnect_e2e.py.)"""
    deletes: list[str] = []

    async def resource(route: Route) -> None:
        if route.request.method == "DELETE":
            deletes.append(route.request.url)
            await route.fulfill(status=202, json=_view("disconnecting"))
        else:
            await route.fulfill(json=_view("connected"))

    async def listed(route: Route) -> None:
        await route.fulfill(json={"value": [_view("disconnecting")]})

    await page.route("**/api/resources/room-x", resource)
    await page.route("**/api/resources/room-x?*", resource)
    await page.route("**/api/resources", listed)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Disconnect and remove events…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("deletes every event it wrote there (3 now")
    await dialog.get_by_role("button", name="Disconnect and remove events").click()
    await expect(page.locator("#notice")).to_contain_text("Room X is disconnecting")
    await expect(page.locator('tr[data-resource="room-x"] .status')).to_have_text("Disconnecting")
    assert [url.split("/api/")[1] for url in deletes] == ["resources/room-x?removeEvents=true"]
