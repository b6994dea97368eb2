"""Book storage for the legacy app: the per-request connection and the SQL."""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import g

from legacy_flask import db

_COLUMNS = ", ".join(db.BOOK_COLUMNS)
_EDITABLE = ("title", "author", "year")


def get_db() -> sqlite3.Connection:
    """The connection for the current request, opened on first use."""
    if "db" not in g:
        g.db = db.connect()
    conn: sqlite3.Connection = g.db
    return conn


def close_db(_exc: BaseException | None = None) -> None:
    """Close the request's connection, if one was opened (app-context teardown)."""
    conn: sqlite3.Connection | None = g.pop("db", None)
    if conn is not None:
        conn.close()


def book_to_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A row as the wire-format dict, keys in contract order."""
    return {column: row[column] for column in db.BOOK_COLUMNS}


def _storable_id(book_id: int) -> bool:
    return db.INT64_MIN <= book_id <= db.INT64_MAX


def list_books(conn: sqlite3.Connection, author: str | None = None) -> list[dict[str, Any]]:
    if author is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM books ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM books WHERE author = ? ORDER BY id", (author,)
        ).fetchall()
    return [book_to_dict(row) for row in rows]


def get_book(conn: sqlite3.Connection, book_id: int) -> dict[str, Any] | None:
    if not _storable_id(book_id):
        return None
    row = conn.execute(f"SELECT {_COLUMNS} FROM books WHERE id = ?", (book_id,)).fetchone()
    return None if row is None else book_to_dict(row)


def create_book(conn: sqlite3.Connection, fields: dict[str, Any]) -> dict[str, Any]:
    """Insert a validated book and return it as stored."""
    rows = conn.execute(
        f"INSERT INTO books (title, author, year) VALUES (:title, :author, :year) "
        f"RETURNING {_COLUMNS}",
        fields,
    ).fetchall()
    return book_to_dict(rows[0])


def update_book(
    conn: sqlite3.Connection, book_id: int, changes: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply validated changes; ``None`` if there is no such book."""
    if not _storable_id(book_id):
        return None
    if not changes or not set(changes) <= set(_EDITABLE):
        raise ValueError(f"cannot update {sorted(changes)}")
    # Column names come from the fixed list above, never from the client.
    assignments = ", ".join(f"{name} = :{name}" for name in _EDITABLE if name in changes)
    rows = conn.execute(
        f"UPDATE books SET {assignments}, updated_at = {db.UTC_NOW_SQL} "
        f"WHERE id = :id RETURNING {_COLUMNS}",
        {**changes, "id": book_id},
    ).fetchall()
    return book_to_dict(rows[0]) if rows else None


def delete_book(conn: sqlite3.Connection, book_id: int) -> bool:
    """Delete a book; ``False`` if there was no such book."""
    if not _storable_id(book_id):
        return False
    rows = conn.execute("DELETE FROM books WHERE id = ? RETURNING id", (book_id,)).fetchall()
    return bool(rows)
