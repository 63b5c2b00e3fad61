"""A real headless Chromium (the distribution's, never a downloaded one) for the console's
browser tests, with axe-core for the accessibility check."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, ConsoleMessage, Error, Page, async_playwright

from local.azurite import REPO_ROOT
from tests.fixtures.callers import ADMIN
from tests.fixtures.stack import KEY_HEADER, Stack

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
# Where the screenshots go: docs/console/ with CONSOLE_SCREENSHOTS=docs (`make
# screenshots`), else a folder of the session's own.
SCREENSHOTS = REPO_ROOT / "docs" / "console"


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    if os.environ.get("CONSOLE_SCREENSHOTS") == "docs":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return Path(tempfile.mkdtemp(prefix="console-screenshots-"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(stack_session: Stack) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile of a signed-in administrator: every request carries the
    principal App Service Authentication would pass on, and the function key (the stack
    runs in keys mode, as Azure does; the console's routes ask for none)."""
    if not CHROMIUM.exists():  # noqa: ASYNC240  # once per session, before any await
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1200, "height": 800},
                locale="en-GB",
                timezone_id="UTC",
                extra_http_headers={KEY_HEADER: stack_session.keys.function, **ADMIN},
            )
            context.set_default_timeout(10_000)
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: BrowserContext) -> AsyncIterator[Page]:
    page = await browser.new_page()
    await page.set_viewport_size({"width": 1200, "height": 800})
    problems: list[str] = []

    # A Content-Security-Policy violation or a script error is a failure of the console.
    def console_error(message: ConsoleMessage) -> None:
        # The browser's own line for each API answer >= 400 is no fault of the page.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    def script_error(error: Error) -> None:
        problems.append(str(error))

    page.on("console", console_error)
    page.on("pageerror", script_error)
    yield page
    await page.close()
    assert not problems, problems


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2.x A/AA).

    axe is evaluated through the DevTools protocol, which the page's CSP does not govern:
    the page itself keeps its policy."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
    result: dict[str, Any] = await page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", tags
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
