"""The bookstore database, shared by the legacy Flask app and the new FastAPI app.

The legacy app owns the schema, as it would in a real migration: the new app imports
:func:`connect` from here and talks to the very same SQLite file.

This module deliberately uses nothing but the standard library, so importing it does
not pull Flask into the new app.

Every change to ``books`` is recorded in ``book_events`` by SQLite triggers, so a
change made through either app shows up in the event feed without the apps having to
remember to write it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

#: Environment variable naming the database file. Read on every new connection.
DB_ENV_VAR = "BOOKSTORE_DB"

#: The project root: the directory that contains the ``legacy_flask`` package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where the database lives when ``BOOKSTORE_DB`` is not set.
DEFAULT_DB_PATH = PROJECT_ROOT / "var" / "bookstore.db"

#: How long a connection waits for another writer before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 5000

#: SQL expression for "now" in the wire format: ISO-8601 UTC, seconds precision, ``Z``.
UTC_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"

#: The columns of a book, in wire order.
BOOK_COLUMNS = ("id", "title", "author", "year", "updated_at")

#: SQLite INTEGER is a signed 64-bit value.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _book_json(row: str) -> str:
    """``json_object(...)`` of the ``NEW`` or ``OLD`` row inside a trigger body."""
    pairs = ", ".join(f"'{column}', {row}.{column}" for column in BOOK_COLUMNS)
    return f"json_object({pairs})"


def _event_trigger(name: str, operation: str, kind: str, row: str) -> str:
    return f"""
CREATE TRIGGER IF NOT EXISTS {name} AFTER {operation} ON books
BEGIN
    INSERT INTO book_events (book_id, kind, book)
    VALUES ({row}.id, '{kind}', {_book_json(row)});
END;
"""


SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS books (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    year        INTEGER NULL,
    updated_at  TEXT    NOT NULL DEFAULT ({UTC_NOW_SQL})
);

CREATE INDEX IF NOT EXISTS books_author ON books (author);

CREATE TABLE IF NOT EXISTS book_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    book_id  INTEGER NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    book     TEXT    NOT NULL,  -- the JSON of the book (before deletion, for 'deleted')
    at       TEXT    NOT NULL DEFAULT ({UTC_NOW_SQL})
);
"""
    + _event_trigger("books_record_insert", "INSERT", "created", "NEW")
    + _event_trigger("books_record_update", "UPDATE", "updated", "NEW")
    + _event_trigger("books_record_delete", "DELETE", "deleted", "OLD")
)

_initialised: set[Path] = set()
_init_lock = threading.Lock()


def database_path() -> Path:
    """The database file in use: ``$BOOKSTORE_DB``, or ``var/bookstore.db`` in the project."""
    configured = os.environ.get(DB_ENV_VAR)
    return Path(configured) if configured else DEFAULT_DB_PATH


def _open(path: Path) -> sqlite3.Connection:
    # isolation_level=None: autocommit. Every statement the apps run is atomic on its
    # own (writes use RETURNING); multi-statement work must use BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _initialise(conn: sqlite3.Connection) -> None:
    # journal_mode is persistent in the file; it cannot change inside a transaction.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}\nCOMMIT;")


def connect() -> sqlite3.Connection:
    """Open a new connection to the bookstore database; the caller closes it.

    Use one connection per request or unit of work. The first connection to a given
    file in this process creates the schema if it is missing.
    """
    path = database_path().resolve()
    if path in _initialised:
        return _open(path)
    with _init_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _open(path)
        if path not in _initialised:
            try:
                _initialise(conn)
            except BaseException:
                conn.close()
                raise
            _initialised.add(path)
        return conn


def main() -> None:
    """Create the database if it is missing and print its path."""
    conn = connect()
    conn.close()
    print(database_path().resolve())


if __name__ == "__main__":
    main()
