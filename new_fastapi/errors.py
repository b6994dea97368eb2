"""Error responses of the new app, matching the legacy app's bodies byte for byte."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

NOT_AN_OBJECT = "request body must be a JSON object"
NO_FIELDS = "no fields to update"

_RANGE_ERRORS = {"greater_than_equal", "less_than_equal"}
_KNOWN_STATUSES = {status.value for status in HTTPStatus}


class ApiError(Exception):
    """An error the API reports as ``{"error": message}`` with the given status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class BookNotFound(ApiError):
    def __init__(self, book_id: int) -> None:
        super().__init__(404, f"book {book_id} not found")


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def legacy_error(errors: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Pick the status and message the legacy app gives for the same bad request.

    Pydantic reports every problem at once; the legacy app reports the first one in a
    fixed order: not an object, unknown field (first in sorted order), title, author,
    year. A path parameter that does not parse means the route does not exist in the
    legacy app (``<int:book_id>`` does not match), hence 404.
    """
    by_field: dict[str, Mapping[str, Any]] = {}
    unknown: list[str] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        source = loc[0] if loc else "body"
        if source == "path":
            return 404, "not found"
        if source != "body":
            return 400, f"invalid {source} parameter: {loc[-1]}"
        if error.get("type") == "json_invalid" or len(loc) == 1:
            return 400, NOT_AN_OBJECT
        if error.get("type") == "extra_forbidden":
            unknown.append(str(loc[1]))
        else:
            by_field.setdefault(str(loc[1]), error)

    if unknown:
        return 400, f"unknown field: {min(unknown)}"
    for name in ("title", "author"):
        if name in by_field:
            if by_field[name].get("type") == "missing":
                return 400, f"{name} is required"
            return 400, f"{name} must be a non-empty string"
    if "year" in by_field:
        if by_field["year"].get("type") in _RANGE_ERRORS:
            return 400, "year is out of range"
        return 400, "year must be an integer or null"
    return 400, "invalid request"


async def handle_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.message)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    status_code, message = legacy_error(exc.errors())
    return error_response(status_code, message)


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str]:
    """Every method one of ``routes`` accepts for the request's path.

    Starlette answers 405 from the first route whose path matches, so its ``Allow``
    header lists only that route's methods, while GET and PUT on one path are two
    routes in FastAPI.
    """
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, Route):
            methods |= route.methods or set()
    return methods


def http_error_response(exc: StarletteHTTPException, allowed: Iterable[str] = ()) -> JSONResponse:
    """Framework errors (unknown path, wrong method, unreadable body) in the legacy shape."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allow := ", ".join(sorted(allowed))):
        headers["Allow"] = allow
    if exc.status_code == 400:
        # Raised by FastAPI only when it cannot read the body at all (e.g. not UTF-8).
        message = NOT_AN_OBJECT
    elif exc.status_code in _KNOWN_STATUSES:
        message = HTTPStatus(exc.status_code).phrase.lower()
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers)


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] = ()) -> None:
    """Register the handlers; ``routes`` are the API's routes, used for ``Allow`` on 405."""

    async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        allowed = allowed_methods([*app.router.routes, *routes], request.scope)
        return http_error_response(exc, allowed)

    app.exception_handler(ApiError)(handle_api_error)
    app.exception_handler(RequestValidationError)(handle_validation_error)
    app.exception_handler(StarletteHTTPException)(handle_http_error)
