"""Helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


GATEWAY_TABLE = """\
version: 1
backends:
  legacy: {wsgi: "legacy_flask.app:app"}
  new: {asgi: "new_fastapi.app:app"}
default: legacy
routes:
  - {id: books.collection, path: /books, backend: %(books)s}
  - {id: books.item, path: "/books/{book_id}", backend: %(books)s}
  - {id: books.events, path: /books/events, methods: [GET], backend: new}
"""


@contextlib.contextmanager
def gateway_test_client(books: str) -> Iterator[TestClient]:
    """The gateway, with every book endpoint routed to `books` ("new" or "legacy")."""
    from tests.harness import gateway_client

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "routes.yaml"
        path.write_text(GATEWAY_TABLE % {"books": books})
        with gateway_client(path) as client:
            yield client
