"""Fixtures shared by every test: a fresh database per test, a client per app, and one
real browser for the page tests (a fresh context, i.e. a fresh cookie jar, per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from starlette.testclient import TestClient

from legacy_flask.db import DB_ENV_VAR
from tests.browser import SharedBrowser, chromium
from tests.support import legacy_test_client, new_test_client


@pytest.fixture(autouse=True)
def bookstore_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point both apps at an empty database file of this test's own."""
    path = tmp_path / "bookstore.db"
    monkeypatch.setenv(DB_ENV_VAR, str(path))
    return path


@pytest.fixture
def legacy_client() -> Iterator[TestClient]:
    with legacy_test_client() as client:
        yield client


@pytest.fixture
def new_client() -> Iterator[TestClient]:
    with new_test_client() as client:
        yield client


@pytest.fixture(scope="session")
def browser() -> Iterator[SharedBrowser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def browser_context(browser: SharedBrowser) -> Iterator[BrowserContext]:
    with browser.context() as context:
        yield context
