"""The shared login as an in-process ASGI app reads and writes it (FastAPI or Starlette).

Behind the gateway, a backend with `session_from` finds the legacy Flask app's
session in its request `state` (see `gateway.session`). With FastAPI:

    from gateway.legacy_session import LegacySession, user_required

    CurrentUser = Annotated[str, Depends(user_required("user"))]

    @app.get("/me")
    def me(user: CurrentUser) -> dict[str, str]:
        return {"user": user}

`user_required` raises Starlette's `HTTPException(401)`, so the app's own
exception handlers give the 401 in the app's usual error shape. With plain
Starlette, call `read_session(request)`, `replace_session(...)` and
`clear_session(...)` in an endpoint. A write takes effect when the response
starts: the gateway sets the cookie the Flask app would set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import Depends
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from gateway.session import STATE_KEY

__all__ = [
    "LegacySession",
    "clear_session",
    "read_session",
    "replace_session",
    "user_required",
]


def read_session(connection: HTTPConnection) -> Mapping[str, Any] | None:
    """The Flask session of this request, read-only (None: anonymous)."""
    session = connection.scope.get("state", {}).get(STATE_KEY)
    return session if isinstance(session, Mapping) else None


def replace_session(connection: HTTPConnection, data: Mapping[str, Any]) -> None:
    """Make `data` the whole session (as a Flask view would after `session.clear()`)."""
    connection.scope.setdefault("state", {})[STATE_KEY] = MappingProxyType(dict(data))


def clear_session(connection: HTTPConnection) -> None:
    """End the session (log out): the gateway deletes the cookie as Flask would."""
    connection.scope.setdefault("state", {})[STATE_KEY] = None


def user_required(key: str) -> Callable[[HTTPConnection], Any]:
    """A dependency giving `session[key]` (the logged-in user), else a 401.

    `key` is where the Flask app keeps its user: e.g. "_user_id" with Flask-Login."""

    def current_user(connection: HTTPConnection) -> Any:
        session = read_session(connection)
        user = session.get(key) if session is not None else None
        if user is None:
            raise HTTPException(401)
        return user

    return current_user


LegacySession = Annotated[Mapping[str, Any] | None, Depends(read_session)]
