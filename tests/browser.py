"""A real browser for the page tests: Debian's Chromium, driven by Playwright.

Playwright is pointed at the system's Chromium (`make unit` installs Debian's
`chromium` package when it is missing) and never downloads a browser of its own.
One browser serves every page test of a run (the `browser` fixture in conftest.py);
each test gets a fresh context from `SharedBrowser.context()`, so no cookie or
storage leaks between tests.

Playwright's sync API runs its event loop in a greenlet of the main thread, and
after every call marks that loop as the thread's running loop (the loop is only
suspended, and must find itself running when it resumes). Left marked between page
tests, it would make every other test's `asyncio.run()` fail with "Already running
asyncio in this thread"; so the mark is set while a page test runs and cleared
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from playwright.sync_api import Browser, BrowserContext, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class SharedBrowser:
    """The run's one browser, lent to one page test at a time."""

    def __init__(self, browser: Browser, loop: asyncio.AbstractEventLoop) -> None:
        self.browser = browser
        self._loop = loop

    @contextlib.contextmanager
    def using(self) -> Iterator[Browser]:
        """Playwright's loop marked running for as long as the browser is in use."""
        asyncio._set_running_loop(self._loop)
        try:
            yield self.browser
        finally:
            asyncio._set_running_loop(None)

    @contextlib.contextmanager
    def context(self) -> Iterator[BrowserContext]:
        """A fresh browser context (its own cookies and storage) for one test."""
        with self.using() as browser:
            context = browser.new_context()
            try:
                yield context
            finally:
                context.close()


@contextlib.contextmanager
def chromium() -> Iterator[SharedBrowser]:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: `make unit` installs Debian's chromium package")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            shared = SharedBrowser(browser, asyncio.get_running_loop())
            asyncio._set_running_loop(None)
            try:
                yield shared
            finally:
                with shared.using():
                    browser.close()
                # Playwright's exit resumes (and closes) its loop: marked running again.
                asyncio._set_running_loop(shared._loop)
    finally:
        asyncio._set_running_loop(None)
