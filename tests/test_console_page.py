"""The operator console in a real browser (Debian's Chromium, driven by Playwright),
against one real `gateway serve` of the demo per module: two workers, an admin token.

The tests run in order on that one server, each from the state the ones before left
(books.get is flipped to legacy by the flip test, the rollback trips once). With
CONSOLE_SCREENSHOTS=1 (`make screenshots`) they also take the screenshots in docs/,
and record which version of the page took them; `test_screenshots_are_current`
fails when the page changed since.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response, expect

from gateway.console import VERSION
from tests.harness import ROOT, GatewayProcess

TOKEN = "console-test-token"
DOCS = ROOT / "docs"
SHOTS = DOCS / "console-screenshots.json"
SCREENSHOTS = ("overview", "flipped", "token", "rollback", "phone")
# The demo's table, a route whose backend fails, with a rollback to trip, a route
# shadowed by a backend that answers otherwise, and one mounting its backend under a prefix.
FLAKY = """\
  flaky: {asgi: "tests.apps:asgi"}
"""
FLAKY_ROUTE = """\
  - id: flaky
    path: /status/{code}
    methods: [GET]
    backend: flaky
    fallback: legacy
    rollback: {error_ratio: 0.5, window: 60, min_requests: 3}
  - id: compared
    path: /compared
    methods: [GET]
    backend: legacy
    shadow: {backend: flaky, percent: 100}
  - id: books.v1
    path: /v1/books
    strip_prefix: /v1
    methods: [GET]
    backend: new
"""
UNAUTHORISED = (
    "console error: Failed to load resource: the server responded with a status of "
    "401 (Unauthorized)"
)
WAIT_MS = 20_000  # generous: a busy machine must not fail these


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("console")
    demo = (ROOT / "routes.yaml").read_text()
    text = demo.replace("\ndefault:", FLAKY + "\ndefault:") + FLAKY_ROUTE
    assert text != demo + FLAKY_ROUTE  # the backend went in
    (directory / "routes.yaml").write_text(text)
    env = {"GATEWAY_ADMIN_TOKEN": TOKEN, "BOOKSTORE_DB": str(directory / "bookstore.db")}
    with GatewayProcess(directory / "routes.yaml", "--workers", "2", env=env) as gw:
        yield gw


class Watched:
    """A page, and everything that went wrong on it: console errors, page errors,
    requests that failed or were answered 4xx/5xx."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def open_console(self, gateway: GatewayProcess) -> Page:
        """The console opened with the token; the page's first ask, refused with 401
        until the token is given (the first test checks it), is not a problem."""
        open_console(self.page, gateway)
        expect(self.page.locator("#console")).to_be_visible(timeout=WAIT_MS)
        gate = [f"401: GET {gateway.url}/-/console/figures", UNAUTHORISED]
        self.problems = [p for p in self.problems if p not in gate]
        return self.page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status}: {response.request.method} {response.url}")


@pytest.fixture
def watched(browser_context: BrowserContext) -> Watched:
    return Watched(browser_context.new_page())


def open_console(page: Page, gateway: GatewayProcess, token: str = TOKEN) -> None:
    page.goto(gateway.url + "/-/console")
    page.get_by_label("Token (kept for this tab only)").fill(token)
    page.get_by_role("button", name="Open the console").click()


def row(page: Page, route_id: str) -> Any:
    return page.locator(f'#routes tr[data-route="{route_id}"]')


def confirm(page: Page) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Confirm").click()


def shot(page: Page, name: str) -> None:
    """Save the screenshot `name` under docs/ when asked to (make screenshots)."""
    assert name in SCREENSHOTS
    if not os.environ.get("CONSOLE_SCREENSHOTS"):
        return
    page.wait_for_timeout(300)  # let the last refresh paint
    # The route file lives in the test's temporary directory: show it as a user names it.
    page.evaluate(
        """() => {
          const info = document.getElementById("table-info");
          info.textContent = info.textContent.replace(/^\\S*\\/routes\\.yaml/, "routes.yaml");
        }"""
    )
    page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=True)
    taken = json.loads(SHOTS.read_text()) if SHOTS.exists() else {}
    SHOTS.write_text(json.dumps({**taken, name: VERSION}, indent=2, sort_keys=True) + "\n")


def backend_of(gateway: GatewayProcess, path: str) -> str:
    """The backend that answers `path` (headers only: /books/events is a stream)."""
    with httpx.stream("GET", gateway.url + path, timeout=10) as response:
        return response.headers["x-gateway-backend"]


def wait_for(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def test_the_page_asks_for_the_token_then_lists_the_demo_routes_cleanly(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.page
    page.goto(gateway.url + "/-/console")
    expect(page.locator("#gate")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()  # nothing shown before the token
    # The one refusal: the page asked, and learnt that it needs the token.
    assert watched.problems == [f"401: GET {gateway.url}/-/console/figures", UNAUTHORISED]
    watched.problems.clear()
    page.get_by_label("Token (kept for this tab only)").fill(TOKEN)
    page.get_by_role("button", name="Open the console").click()
    for route_id, backend in [("books.list", "new"), ("books.get", "new"), ("flaky", "flaky")]:
        expect(row(page, route_id).locator("td.backend")).to_have_text(backend, timeout=WAIT_MS)
    expect(row(page, "books.get").locator("td.route")).to_contain_text("GET,HEAD /books/{book_id}")
    expect(row(page, "books.v1").locator("td.route")).to_contain_text("GET /v1/books (strips /v1)")
    expect(row(page, "flaky").locator("td.policy")).to_contain_text("Rollback armed")
    expect(page.locator("#progress-counts")).to_contain_text("legacy-only", timeout=WAIT_MS)
    expect(page.locator("#live")).to_contain_text("Live")
    # The token is this tab's: in sessionStorage, never in a cookie.
    assert page.evaluate("sessionStorage.getItem('gateway-admin-token')") == TOKEN
    assert page.context.cookies() == []
    # 1280 px wide: the whole table fits, no column cut off.
    assert page.evaluate(
        "e => e.scrollWidth <= e.clientWidth", page.locator(".scroll").element_handle()
    )
    shot(page, "overview")
    page.wait_for_timeout(2500)  # a refresh or two more: still nothing wrong
    assert watched.problems == []


def test_traffic_shows_in_the_route_rate_within_seconds(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.open_console(gateway)
    traffic = row(page, "books.get").locator('td.traffic li[data-backend="new"]')
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for _ in range(30):
            assert client.get("/books/1").headers["x-gateway-backend"] == "new"
    expect(traffic).to_contain_text("req/s", timeout=WAIT_MS)
    rate = float(traffic.inner_text().split("req/s")[0].split()[-1])
    assert rate > 0
    expect(traffic).to_contain_text("p99")
    expect(page.locator("#figures-info")).to_contain_text("Traffic over the last")
    assert watched.problems == []


def test_shadow_mismatches_show_with_their_request_and_a_readable_diff(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.open_console(gateway)
    assert httpx.get(gateway.url + "/compared?page=2", timeout=10).status_code == 404
    expect(row(page, "compared").locator("td.shadow")).to_contain_text(
        "✗ 1 mismatch", timeout=WAIT_MS
    )
    mismatch = page.locator("#mismatches details").first
    expect(mismatch.locator("summary")).to_contain_text("compared · GET /compared?page=2")
    mismatch.locator("summary").click()
    expect(mismatch.locator("pre.diff").first).to_have_text("status: legacy 404, flaky 200\n")
    assert watched.problems == []


def test_a_flip_from_the_page_moves_the_route_and_shows_the_event(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.open_console(gateway)
    books = row(page, "books.get")
    expect(books.locator("td.backend")).to_have_text("new", timeout=WAIT_MS)
    books.get_by_label("Backend").select_option("legacy")
    books.get_by_role("button", name="Flip books.get").click()
    expect(page.locator("#confirm-text")).to_contain_text("from new to legacy")
    confirm(page)
    expect(page.locator("#outcome")).to_have_text("✓ Done: books.get now served by legacy.")
    wait_for(lambda: backend_of(gateway, "/books/1") == "legacy")
    expect(books.locator("td.backend")).to_have_text("legacy", timeout=WAIT_MS)
    event = page.locator('#events li[data-kind="flip"]').first
    expect(event).to_contain_text("routes: books.get", timeout=WAIT_MS)
    expect(event).to_contain_text("flip route=books.get backend=legacy")
    shot(page, "flipped")
    assert watched.problems == []


def test_a_refused_change_shows_its_reason_and_changes_nothing(
    watched: Watched, gateway: GatewayProcess
) -> None:
    before = gateway.config.read_bytes()
    page = watched.open_console(gateway)
    books = row(page, "books.list")
    books.get_by_label("Canary %").fill("150")
    books.get_by_role("button", name="Set the canary of books.list").click()
    confirm(page)
    expect(page.locator("#outcome")).to_have_text(
        "✗ Refused (422): percent must be from 0 to 100 (got 150)"
    )
    assert gateway.config.read_bytes() == before


def test_a_wrong_token_is_refused_and_shows_nothing(
    browser_context: BrowserContext, gateway: GatewayProcess
) -> None:
    page = browser_context.new_page()
    before = gateway.config.read_bytes()
    open_console(page, gateway, token="not-the-token")
    expect(page.locator("#gate-reason")).to_have_text("Refused: wrong admin token")
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#routes tbody tr")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('gateway-admin-token')") is None
    shot(page, "token")
    assert gateway.config.read_bytes() == before


def test_a_tripped_rollback_appears_as_such(watched: Watched, gateway: GatewayProcess) -> None:
    page = watched.open_console(gateway)
    flaky = row(page, "flaky")
    expect(flaky.locator("td.policy")).to_contain_text("Rollback armed", timeout=WAIT_MS)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for _ in range(4):
            client.get("/status/503")  # flaky fails; the fallback answers
    state = flaky.locator(".rollback-state")
    expect(state).to_contain_text("Rollback tripped", timeout=WAIT_MS)
    expect(state).to_contain_text("moved from flaky to legacy")
    expect(flaky.locator("td.backend")).to_have_text("legacy")
    expect(page.locator('#events li[data-kind="rollback"]')).to_contain_text("flaky from flaky")
    shot(page, "rollback")
    assert watched.problems == []


def test_flip_all_leaves_the_routes_legacy_does_not_implement(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.open_console(gateway)
    expect(row(page, "books.list").locator("td.backend")).to_have_text("new", timeout=WAIT_MS)
    page.get_by_role("button", name="Flip every route to legacy").click()
    confirm(page)
    expect(page.locator("#outcome")).to_contain_text("✓ Done: Flipped to legacy: ", timeout=WAIT_MS)
    expect(page.locator("#outcome")).to_contain_text("books.list")
    expect(page.locator("#outcome")).to_contain_text(
        "Left books.events as it was: 'legacy' does not implement GET /books/events"
    )
    wait_for(lambda: backend_of(gateway, "/books") == "legacy")
    assert backend_of(gateway, "/books/events") == "new"
    assert watched.problems == []


def test_a_rejected_file_shows_its_problems_with_their_positions(
    watched: Watched, gateway: GatewayProcess
) -> None:
    page = watched.open_console(gateway)
    good = gateway.config.read_bytes()
    gateway.config.write_text("version: 1\nroutes: [")
    try:
        rejected = page.locator('#events li[data-kind="rejected"]').first
        expect(rejected).to_contain_text("by file change", timeout=WAIT_MS)
        expect(rejected.locator(".problems")).to_contain_text(f"{gateway.config}:2:")
        expect(page.locator("#table-info")).to_contain_text("⚠ last file rejected")
    finally:
        gateway.config.write_bytes(good)
    expect(page.locator("#table-info")).not_to_contain_text("rejected", timeout=WAIT_MS)
    assert watched.problems == []


def test_the_keyboard_reaches_an_action_and_escape_cancels_it(
    watched: Watched, gateway: GatewayProcess
) -> None:
    before = gateway.config.read_bytes()
    page = watched.open_console(gateway)
    button = row(page, "books.get").get_by_role("button", name="Flip books.get")
    expect(button).to_be_visible(timeout=WAIT_MS)
    row(page, "books.get").get_by_label("Backend").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Flip books.get"
    page.keyboard.press("Enter")
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    page.wait_for_timeout(500)
    expect(page.locator("#outcome")).to_be_hidden()
    assert gateway.config.read_bytes() == before


def test_phone_width_fits_without_sideways_scrolling(
    browser_context: BrowserContext, gateway: GatewayProcess
) -> None:
    page = browser_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    open_console(page, gateway)
    expect(row(page, "books.get").locator("td.backend")).to_be_visible(timeout=WAIT_MS)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Each cell says which column it is, the table header being out of sight.
    label = row(page, "books.get").locator("td.backend")
    assert page.evaluate("e => getComputedStyle(e, '::before').content", label.element_handle())
    shot(page, "phone")


def test_screenshots_are_current() -> None:
    """docs/ holds a screenshot of every main state, taken by this version of the page
    (`make screenshots` takes them anew)."""
    taken = json.loads(SHOTS.read_text())
    for name in SCREENSHOTS:
        assert (DOCS / f"console-{name}.png").stat().st_size > 10_000, name
        assert taken.get(name) == VERSION, f"console-{name}.png is stale: run make screenshots"
