"""Logging in through the legacy app's page in a real browser, and the new app seeing it.

The demo pair behind a real uvicorn-served gateway, as `make run` serves it: the
legacy login form sets Flask's cookie in the browser, and `GET /me`, served by the
FastAPI app, reads that session through the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from gateway.app import Gateway
from gateway.settings import Settings
from tests.harness import SHARED_LOGIN_TABLE, ThreadServer, write_routes

TABLE = SHARED_LOGIN_TABLE


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    gateway = Gateway(Settings(config=str(write_routes(tmp_path, TABLE))))
    with ThreadServer(gateway) as server:
        yield server.url


@pytest.fixture
def page(browser_context: BrowserContext) -> Page:
    return browser_context.new_page()


def log_in(page: Page, site: str, user: str, password: str) -> None:
    page.goto(site + "/ui/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(site + "/ui/")


def me(page: Page, site: str) -> tuple[int, object, str]:
    """GET /me with the browser's cookies: (status, JSON body, the backend that answered)."""
    response = page.request.get(site + "/me")
    return response.status, response.json(), response.headers["x-gateway-backend"]


def test_log_in_on_the_legacy_page_and_the_new_app_sees_the_user(page: Page, site: str) -> None:
    assert me(page, site) == (401, {"error": "unauthorized"}, "new")
    log_in(page, site, "alice", "wonderland")
    assert page.inner_text("#user") == "alice"
    assert me(page, site) == (200, {"user": "alice"}, "new")


def test_log_out_on_the_legacy_page_and_the_new_app_sees_it(page: Page, site: str) -> None:
    log_in(page, site, "bob", "builder")
    page.click("text=Log out")
    page.wait_for_selector("text=Logged out")
    assert me(page, site)[0] == 401


def test_log_out_on_the_new_side_and_the_legacy_page_sees_it(page: Page, site: str) -> None:
    log_in(page, site, "alice", "wonderland")
    response = page.request.post(site + "/logout")
    assert (response.status, response.headers["x-gateway-backend"]) == (204, "new")
    assert page.context.cookies() == []  # the browser applied Flask's deletion
    page.goto(site + "/ui/")
    assert page.locator("#user").count() == 0
    assert page.locator("text=Log in").count() == 1


def test_a_wrong_password_is_refused_on_the_page(page: Page, site: str) -> None:
    page.goto(site + "/ui/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not her password")
    page.click("button[type=submit]")
    assert page.inner_text("[role=status]") == "Wrong user name or password"
    assert me(page, site)[0] == 401


def test_adding_a_book_asks_for_a_login_first(page: Page, site: str) -> None:
    page.goto(site + "/ui/books/new")
    assert page.url == site + "/ui/login?next=/ui/books/new"
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wonderland")
    page.click("button[type=submit]")
    page.wait_for_url(site + "/ui/books/new")
    page.fill("input[name=title]", "Emma")
    page.fill("input[name=author]", "Jane Austen")
    page.click("text=Create")
    assert page.inner_text("h1") == "Emma"
