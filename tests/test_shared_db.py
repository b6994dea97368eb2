"""Both apps read and write the same SQLite file, and see each other's changes at once."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from legacy_flask import db
from tests.support import assert_book, legacy_test_client, new_test_client


def test_database_path_follows_the_environment(bookstore_db: Path) -> None:
    assert db.database_path() == bookstore_db
    assert not bookstore_db.exists()
    db.connect().close()
    assert bookstore_db.exists()


def test_default_database_lives_in_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.DB_ENV_VAR)
    assert db.database_path() == db.PROJECT_ROOT / "var" / "bookstore.db"
    assert (db.PROJECT_ROOT / "legacy_flask" / "db.py").is_file()


def test_connect_creates_missing_directories_schema_and_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nested" / "dir" / "books.db"
    monkeypatch.setenv(db.DB_ENV_VAR, str(path))
    conn = db.connect()
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"books", "book_events"} <= tables
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == db.BUSY_TIMEOUT_MS
        assert isinstance(conn.execute("SELECT 1 AS one").fetchone(), sqlite3.Row)
    finally:
        conn.close()


def test_triggers_record_every_change(bookstore_db: Path) -> None:
    conn = db.connect()
    try:
        conn.execute("INSERT INTO books (title, author) VALUES ('T', 'A')")
        conn.execute("UPDATE books SET year = 2001 WHERE id = 1")
        conn.execute("DELETE FROM books WHERE id = 1")
        events = conn.execute("SELECT book_id, kind, book FROM book_events ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [(row["book_id"], row["kind"]) for row in events] == [
        (1, "created"),
        (1, "updated"),
        (1, "deleted"),
    ]
    assert events[1]["book"].startswith('{"id":1,"title":"T","author":"A","year":2001,')
    assert events[2]["book"] == events[1]["book"]


def test_module_entry_point_creates_the_database(
    bookstore_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db.main()
    assert capsys.readouterr().out == f"{bookstore_db.resolve()}\n"
    assert bookstore_db.exists()


def test_created_through_legacy_is_readable_through_new(
    legacy_client: TestClient, new_client: TestClient
) -> None:
    book = legacy_client.post(
        "/books", json={"title": "Kindred", "author": "Octavia Butler"}
    ).json()
    response = new_client.get(f"/books/{book['id']}")
    assert response.status_code == 200
    assert response.json() == book
    assert new_client.get("/books").json() == [book]


def test_created_through_new_is_readable_through_legacy(
    legacy_client: TestClient, new_client: TestClient
) -> None:
    book = new_client.post("/books", json={"title": "Lolly Willowes", "author": "Warner"}).json()
    response = legacy_client.get(f"/books/{book['id']}")
    assert response.status_code == 200
    assert response.json() == book
    assert legacy_client.get("/books").json() == [book]


def test_updates_and_deletes_are_seen_by_the_other_app(
    legacy_client: TestClient, new_client: TestClient
) -> None:
    book = legacy_client.post("/books", json={"title": "Orlando", "author": "Woolf"}).json()
    url = f"/books/{book['id']}"

    updated = new_client.put(url, json={"year": 1928, "author": "Virginia Woolf"}).json()
    assert_book(updated, book_id=book["id"], title="Orlando", author="Virginia Woolf", year=1928)
    assert legacy_client.get(url).json() == updated

    again = legacy_client.put(url, json={"title": "Orlando: A Biography"}).json()
    assert new_client.get(url).json() == again
    assert again["year"] == 1928

    assert legacy_client.delete(url).status_code == 204
    assert new_client.get(url).status_code == 404
    assert new_client.delete(url).status_code == 404
    assert new_client.get("/books").json() == legacy_client.get("/books").json() == []


def _create_many(target: str, worker: int, count: int) -> list[dict[str, Any]]:
    factory = legacy_test_client if target == "legacy" else new_test_client
    books = []
    with factory() as client:
        for n in range(count):
            response = client.post(
                "/books", json={"title": f"{target} {worker}/{n}", "author": f"w{worker}"}
            )
            assert response.status_code == 201, response.text
            books.append(response.json())
    return books


def test_concurrent_writes_through_both_apps_all_succeed(bookstore_db: Path) -> None:
    workers, per_worker = 8, 25
    targets = ["legacy" if worker % 2 else "new" for worker in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_create_many, target, worker, per_worker)
            for worker, target in enumerate(targets)
        ]
        created = [book for future in futures for book in future.result()]

    total = workers * per_worker
    assert len({book["id"] for book in created}) == total
    with legacy_test_client() as legacy, new_test_client() as new:
        listed = new.get("/books").json()
        assert len(listed) == total
        assert legacy.get("/books").json() == listed
        assert len(legacy.get("/books", params={"author": "w3"}).json()) == per_worker
    assert sorted(listed, key=lambda book: book["id"]) == sorted(created, key=lambda b: b["id"])

    conn = sqlite3.connect(bookstore_db)
    try:
        kinds = conn.execute("SELECT kind, COUNT(*) FROM book_events GROUP BY kind").fetchall()
    finally:
        conn.close()
    assert kinds == [("created", total)]
