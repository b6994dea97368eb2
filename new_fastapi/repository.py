"""Database access for the new app.

The schema and the connection factory belong to the legacy app (:mod:`legacy_flask.db`);
this module only holds the new app's queries and the connection dependency.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from legacy_flask.db import BOOK_COLUMNS, INT64_MAX, INT64_MIN, UTC_NOW_SQL, connect
from new_fastapi.models import Book

_COLUMNS = ", ".join(BOOK_COLUMNS)
_EDITABLE = ("title", "author", "year")


def get_connection() -> Iterator[sqlite3.Connection]:
    """Dependency: one connection per request, closed when the request is done."""
    conn = connect()
    try:
        yield conn
    finally:
        conn.close()


Connection = Annotated[sqlite3.Connection, Depends(get_connection)]


def _book(row: sqlite3.Row) -> Book:
    return Book.model_validate({column: row[column] for column in BOOK_COLUMNS})


def _storable_id(book_id: int) -> bool:
    return INT64_MIN <= book_id <= INT64_MAX


def list_books(conn: sqlite3.Connection, author: str | None = None) -> list[Book]:
    sql = f"SELECT {_COLUMNS} FROM books"
    params: tuple[Any, ...] = ()
    if author is not None:
        sql += " WHERE author = ?"
        params = (author,)
    return [_book(row) for row in conn.execute(sql + " ORDER BY id", params)]


def get_book(conn: sqlite3.Connection, book_id: int) -> Book | None:
    if not _storable_id(book_id):
        return None
    row = conn.execute(f"SELECT {_COLUMNS} FROM books WHERE id = ?", (book_id,)).fetchone()
    return None if row is None else _book(row)


def create_book(conn: sqlite3.Connection, fields: dict[str, Any]) -> Book:
    rows = conn.execute(
        f"INSERT INTO books (title, author, year) VALUES (:title, :author, :year) "
        f"RETURNING {_COLUMNS}",
        fields,
    ).fetchall()
    return _book(rows[0])


def update_book(conn: sqlite3.Connection, book_id: int, changes: dict[str, Any]) -> Book | None:
    if not changes or not set(changes) <= set(_EDITABLE):
        raise ValueError(f"cannot update {sorted(changes)}")
    if not _storable_id(book_id):
        return None
    assignments = ", ".join(f"{name} = :{name}" for name in _EDITABLE if name in changes)
    rows = conn.execute(
        f"UPDATE books SET {assignments}, updated_at = {UTC_NOW_SQL} "
        f"WHERE id = :id RETURNING {_COLUMNS}",
        {**changes, "id": book_id},
    ).fetchall()
    return _book(rows[0]) if rows else None


def delete_book(conn: sqlite3.Connection, book_id: int) -> bool:
    if not _storable_id(book_id):
        return False
    return bool(conn.execute("DELETE FROM books WHERE id = ? RETURNING id", (book_id,)).fetchall())


@dataclass(frozen=True, slots=True)
class BookEvent:
    """One row of ``book_events``; ``book`` is the JSON text written by the trigger."""

    id: int
    kind: str
    book: str


def latest_event_id() -> int:
    """The id of the newest event, 0 if there is none. Opens its own connection."""
    conn = connect()
    try:
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM book_events").fetchone()
        return int(row[0])
    finally:
        conn.close()


def events_after(after_id: int, limit: int) -> list[BookEvent]:
    """Up to ``limit`` events newer than ``after_id``, oldest first. Opens its own connection."""
    conn = connect()
    try:
        rows = conn.execute(
            "SELECT id, kind, book FROM book_events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
    finally:
        conn.close()
    return [BookEvent(id=row["id"], kind=row["kind"], book=row["book"]) for row in rows]
