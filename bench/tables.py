"""Route files for the benchmark's gateways, written next to the run's other files.

`seed_database()` makes the database the servers share. `demo()` mirrors the
demo's routes.yaml (both apps mounted, the books API on one side, everything
else on the legacy app). `generated()` builds a large,
realistic table: many services and resources, with literal and `{param}`
segments and a few `{rest:path}` catch-alls, and the measured route declared
last, where a router that tries routes in turn pays the most.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BACKENDS = """\
backends:
  legacy: {wsgi: "legacy_flask.app:app"}
  new: {asgi: "new_fastapi.app:app"}
"""

MEASURED_PATH = "/books/1"


def _route(route_id: str, path: str, methods: str | None, backend: str) -> str:
    methods_part = f", methods: [{methods}]" if methods else ""
    return f"  - {{id: {route_id}, path: '{path}'{methods_part}, backend: {backend}}}\n"


def demo(books_get: str = "new", default: str = "legacy") -> str:
    return (
        "version: 1\n"
        + BACKENDS
        + f"default: {default}\n"
        + "routes:\n"
        + _route("books.list", "/books", "GET", "new")
        + _route("books.get", "/books/{book_id}", "GET, HEAD", books_get)
        + _route("books.events", "/books/events", "GET", "new")
    )


_SERVICES = (
    "catalog",
    "orders",
    "users",
    "payments",
    "inventory",
    "shipping",
    "reviews",
    "search",
    "billing",
    "accounts",
)
_RESOURCES = (
    "items",
    "carts",
    "invoices",
    "profiles",
    "coupons",
    "refunds",
    "addresses",
    "sessions",
    "reports",
    "tickets",
)
# Per resource: (id suffix, path suffix, methods); {rest:path} only rarely.
_SHAPES = (
    ("list", "", "GET, HEAD"),
    ("create", "", "POST"),
    ("get", "/{item_id}", "GET, HEAD"),
    ("update", "/{item_id}", "PUT, PATCH"),
    ("delete", "/{item_id}", "DELETE"),
    ("history", "/{item_id}/history", "GET"),
    ("notes", "/{item_id}/notes/{note_id}", "GET"),
    ("export", "/export/{fmt}", "GET"),
    ("files", "/{item_id}/files/{path:path}", "GET"),
    ("search", "/search", "GET"),
)


def generated_routes(count: int) -> list[tuple[str, str, str | None, str]]:
    """`count` routes in all, the last being GET /books/{book_id} (the measured one)."""
    routes: list[tuple[str, str, str | None, str]] = []
    index = 0
    while len(routes) < count - 1:
        service = _SERVICES[index % len(_SERVICES)]
        resource = _RESOURCES[(index // len(_SERVICES)) % len(_RESOURCES)]
        version = index // (len(_SERVICES) * len(_RESOURCES)) + 1
        base = f"/api/v{version}/{service}/{resource}"
        for suffix, tail, methods in _SHAPES:
            if len(routes) == count - 1:
                break
            backend = "new" if (index + len(suffix)) % 3 == 0 else "legacy"
            route_id = f"{service}.{resource}.v{version}.{suffix}"
            routes.append((route_id, base + tail, methods, backend))
        index += 1
    routes.append(("books.get", "/books/{book_id}", "GET, HEAD", "new"))
    return routes


def generated(count: int) -> str:
    body = "".join(_route(*route) for route in generated_routes(count))
    return "version: 1\n" + BACKENDS + "default: legacy\nroutes:\n" + body


def remote(upstream: str) -> str:
    return (
        "version: 1\n"
        "backends:\n"
        f'  remote: {{url: "{upstream}"}}\n'
        "default: remote\n"
        "routes:\n" + _route("books.get", "/books/{book_id}", "GET, HEAD", "remote")
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def seed_database(path: Path) -> Path:
    """A fresh bookstore with a few books, through the apps' own schema."""
    os.environ["BOOKSTORE_DB"] = str(path)
    from legacy_flask import db

    books = [
        ("Dune", "Frank Herbert", 1965),
        ("Neuromancer", "William Gibson", 1984),
        ("The Left Hand of Darkness", "Ursula K. Le Guin", 1969),
        ("Snow Crash", "Neal Stephenson", 1992),
        ("Kindred", "Octavia E. Butler", 1979),
    ]
    conn = db.connect()
    try:
        conn.executemany("INSERT INTO books (title, author, year) VALUES (?, ?, ?)", books)
    finally:
        conn.close()
    check = sqlite3.connect(path)
    try:
        (count,) = check.execute("SELECT count(*) FROM books").fetchone()
    finally:
        check.close()
    if count != len(books):
        raise RuntimeError(f"seeding the database failed: {count} books")
    return path
