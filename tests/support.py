"""Helpers shared by the test modules."""

from __future__ import annotations

import re
from typing import Any

from a2wsgi import WSGIMiddleware
from starlette.testclient import TestClient

from legacy_flask.app import app as legacy_app
from new_fastapi.app import app as new_app

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def legacy_test_client() -> TestClient:
    """The legacy Flask app, spoken to over ASGI like the new one (use as a context manager)."""
    return TestClient(WSGIMiddleware(legacy_app))  # type: ignore[arg-type]


def new_test_client() -> TestClient:
    """The new FastAPI app (use as a context manager)."""
    return TestClient(new_app)


def assert_book(
    book: Any, *, title: str, author: str, year: int | None, book_id: int | None = None
) -> None:
    """``book`` is a wire-format book with these values, keys in contract order."""
    assert isinstance(book, dict)
    assert list(book) == ["id", "title", "author", "year", "updated_at"]
    assert isinstance(book["id"], int)
    if book_id is not None:
        assert book["id"] == book_id
    assert (book["title"], book["author"], book["year"]) == (title, author, year)
    assert ISO_UTC.fullmatch(book["updated_at"]), book["updated_at"]
