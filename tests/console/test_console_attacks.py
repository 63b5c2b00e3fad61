"""The console against a careless administrator and an unlucky network: deep links that do
not decode, actions that fail or answer late, and the longest display name the API takes
on a phone's width. The API is played by route interception, so each test sees exactly
the answer it needs; the page's files come from the local stack."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, Route, expect

from tests.console.test_console_browser import _view
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def bare_page(browser: BrowserContext) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page whose script errors the test itself looks at (the `page` fixture fails in
    its teardown, which an expected failure cannot cover)."""
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page, errors
    await page.close()


async def serve_room_x(page: Page, view: dict[str, object] | None = None) -> None:
    shown = view or _view("connected")

    async def resource(route: Route) -> None:
        await route.fulfill(json=shown)

    async def listed(route: Route) -> None:
        await route.fulfill(json={"value": [shown]})

    await page.route("**/api/resources/room-x", resource)
    await page.route("**/api/resources", listed)


async def test_a_deep_link_that_does_not_decode_still_shows_a_page(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, errors = bare_page
    await serve_room_x(page)
    await page.goto(f"{stack.host_url}/api/console#/resources/%E0%/edit")
    # Either the list (as for an unknown route) or a message; never a page left loading.
    await page.wait_for_timeout(1500)
    assert await page.get_attribute("main", "aria-busy") == "false"
    await expect(page.locator("main")).not_to_contain_text("Loading…")
    assert errors == []


async def test_a_resync_the_network_drops_says_it_was_not_started(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)

    async def drop(route: Route) -> None:
        await route.abort("connectionreset")

    await page.route("**/api/resources/room-x/resync", drop)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Resync…").click()
    await page.get_by_role("dialog").get_by_role("button", name="Resync").click()
    alert = page.locator(".danger-zone").get_by_role("alert")
    await expect(alert).to_contain_text("The service cannot be reached")
    await expect(alert).not_to_contain_text("Could not load")
    await expect(alert).to_contain_text(re.compile(r"resync", re.IGNORECASE))


async def test_a_late_resync_answer_leaves_the_administrator_where_they_went(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)

    async def slow(route: Route) -> None:
        await asyncio.sleep(1.5)
        await route.fulfill(status=202, json={"resourceId": "room-x", "status": "accepted"})

    await page.route("**/api/resources/room-x/resync", slow)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Resync…").click()
    await page.get_by_role("dialog").get_by_role("button", name="Resync").click()
    await page.get_by_role("link", name="Connect a resource").first.click()
    await expect(page).to_have_url(re.compile(r"#/connect$"))
    await page.wait_for_timeout(2500)  # the resync's answer has come by now
    await expect(page).to_have_url(re.compile(r"#/connect$"))


@pytest.mark.parametrize("route", ["#/resources", "#/resources/room-x/edit"])
async def test_the_longest_display_name_does_not_scroll_a_phone_sideways(
    stack: Stack, bare_page: tuple[Page, list[str]], route: str
) -> None:
    page, _ = bare_page
    view = _view("connected")
    view["settings"] = {**view["settings"], "displayName": "W" * 200}  # type: ignore[dict-item]
    await serve_room_x(page, view)
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.goto(f"{stack.host_url}/api/console{route}")
    await expect(page.locator("main h1")).to_be_visible()
    await expect(page.get_by_text("W" * 200).first).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390


async def test_a_settings_page_that_answers_late_does_not_take_the_page_back(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)

    async def slow(route: Route) -> None:
        await asyncio.sleep(1.5)
        await route.fulfill(json=_view("connected"))

    await page.route("**/api/resources/room-x", slow)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("link", name="Connect a resource").first.click()
    await expect(page.locator("main h1")).to_have_text("Connect a resource")
    await page.wait_for_timeout(2500)  # the settings have come by now
    await expect(page.locator("main h1")).to_have_text("Connect a resource")


async def test_a_late_save_answer_leaves_the_administrator_where_they_went(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)

    async def slow_put(route: Route) -> None:
        if route.request.method != "PUT":
            await route.fallback()
            return
        await asyncio.sleep(1.5)
        await route.fulfill(json=_view("connected"))

    await page.route("**/api/resources/room-x", slow_put)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Save settings").click()
    await page.get_by_role("link", name="Connect a resource").first.click()
    await expect(page).to_have_url(re.compile(r"#/connect$"))
    await page.wait_for_timeout(2500)  # the save's answer has come by now
    await expect(page).to_have_url(re.compile(r"#/connect$"))
    await expect(page.locator("#notice")).to_contain_text("are saved")


async def test_a_save_the_network_drops_says_it_may_have_been_saved(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)

    async def drop_put(route: Route) -> None:
        if route.request.method != "PUT":
            await route.fallback()
            return
        await route.abort("connectionreset")

    await page.route("**/api/resources/room-x", drop_put)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Save settings").click()
    summary = page.locator("#form-errors")
    await expect(summary).to_contain_text("may or may not have been saved")
    await expect(summary).to_contain_text("Reload the page")
    await expect(summary).to_contain_text("The service cannot be reached")


async def test_a_resync_that_runs_cannot_be_sent_twice(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)
    sent: list[str] = []

    async def slow(route: Route) -> None:
        sent.append(route.request.method)
        await asyncio.sleep(1.5)
        await route.fulfill(status=202, json={"resourceId": "room-x", "status": "accepted"})

    await page.route("**/api/resources/room-x/resync", slow)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Resync…").click()
    await page.get_by_role("dialog").get_by_role("button", name="Resync").click()
    for name in ("Resync…", "Disconnect…", "Disconnect and remove events…"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    await expect(page).to_have_url(re.compile(r"#/resources$"))
    assert sent == ["POST"]


async def test_a_disconnect_the_service_refuses_says_it_was_not_done_and_offers_a_retry(
    stack: Stack, bare_page: tuple[Page, list[str]]
) -> None:
    page, _ = bare_page
    await serve_room_x(page)
    sent: list[str] = []

    async def refuse(route: Route) -> None:
        if route.request.method != "DELETE":
            await route.fallback()
            return
        sent.append(route.request.method)
        error = {"code": "storage_unavailable", "message": "Storage is not answering."}
        await route.fulfill(status=503, json={"error": error})

    await page.route("**/api/resources/room-x", refuse)
    await page.goto(f"{stack.host_url}/api/console#/resources/room-x/edit")
    await page.get_by_role("button", name="Disconnect…", exact=True).click()
    await page.get_by_role("dialog").get_by_role("button", name="Disconnect, keep events").click()
    alert = page.locator(".danger-zone").get_by_role("alert")
    await expect(alert).to_contain_text("was not disconnected")
    await expect(alert).to_contain_text("Storage is not answering.")
    await expect(alert).not_to_contain_text("Could not load")
    async with page.expect_response(lambda r: r.request.method == "DELETE"):
        await alert.get_by_role("button", name="Try again").click()
    assert sent == ["DELETE", "DELETE"]
