"""The new bookstore API, built with FastAPI.

It serves the same JSON contract as the legacy Flask app, on the same database, plus a
live feed of changes at ``/books/events``. Run it with ``uvicorn new_fastapi.app:app``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response, status
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from legacy_flask.db import INT64_MAX
from new_fastapi import login, repository
from new_fastapi.errors import NO_FIELDS, ApiError, BookNotFound, install_error_handlers
from new_fastapi.events import EventStreamResponse, stream_events
from new_fastapi.models import Book, BookCreate, BookUpdate, ErrorBody
from new_fastapi.repository import Connection

_DIGITS = re.compile(r"\d+")


def _digits_only(value: object) -> object:
    # The legacy routes use Flask's <int:book_id>, which matches digits only: no sign,
    # no spaces, no underscores. Anything else is "no such route" there, and here too.
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise ValueError("not a book id")
        return int(value)
    return value


BookId = Annotated[int, Path(description="The book's id"), BeforeValidator(_digits_only)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid input"},
    404: {"model": ErrorBody, "description": "No such book"},
}

router = APIRouter(tags=["books"])


# FastAPI does not add HEAD by itself (Flask does). Two decorators rather than
# api_route(methods=["GET", "HEAD"]) so that each gets its own OpenAPI operation id.
@router.get("/books")
@router.head("/books")
def list_books(
    conn: Connection,
    author: Annotated[str | None, Query(description="Only books by exactly this author")] = None,
) -> list[Book]:
    return repository.list_books(conn, author)


@router.post("/books", status_code=status.HTTP_201_CREATED, responses={400: ERRORS[400]})
def create_book(
    payload: BookCreate, conn: Connection, request: Request, response: Response
) -> Book:
    book = repository.create_book(conn, payload.model_dump())
    response.headers["Location"] = str(request.app.url_path_for("get_book", book_id=book.id))
    return book


# Must come before /books/{book_id}, whose route would otherwise match "events" (and then
# answer 404, since "events" is not a book id).
@router.get(
    "/books/events",
    response_class=EventStreamResponse,
    responses={200: {"description": "A `text/event-stream` of book changes"}},
)
async def book_events(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, description="Close after this many events")] = None,
    last_event_id: Annotated[
        int | None,
        Header(ge=0, le=INT64_MAX, description="Resume after this event id"),
    ] = None,
) -> EventStreamResponse:
    """Server-Sent Events for every change to a book, made through either app.

    Each event is `id: <event id>`, `event: created|updated|deleted` and
    `data: <book JSON>` (the book before deletion for `deleted`). The stream starts
    after the newest event, or after `Last-Event-ID` when the client resumes.
    """
    after_id = (
        last_event_id
        if last_event_id is not None
        else await run_in_threadpool(repository.latest_event_id)
    )
    return EventStreamResponse(
        stream_events(after_id, is_disconnected=request.is_disconnected, limit=limit),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/books/{book_id}", responses={404: ERRORS[404]})
@router.head("/books/{book_id}", responses={404: ERRORS[404]})
def get_book(book_id: BookId, conn: Connection) -> Book:
    book = repository.get_book(conn, book_id)
    if book is None:
        raise BookNotFound(book_id)
    return book


@router.put("/books/{book_id}", responses=ERRORS)
def update_book(book_id: BookId, payload: BookUpdate, conn: Connection) -> Book:
    changes = payload.model_dump(exclude_unset=True)
    if not changes:
        raise ApiError(400, NO_FIELDS)
    book = repository.update_book(conn, book_id, changes)
    if book is None:
        raise BookNotFound(book_id)
    return book


@router.delete(
    "/books/{book_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={404: ERRORS[404]},
)
def delete_book(book_id: BookId, conn: Connection) -> None:
    if not repository.delete_book(conn, book_id):
        raise BookNotFound(book_id)


class BookstoreAPI(FastAPI):
    """FastAPI, minus the 422 responses it documents by default.

    Validation errors are answered with 400 and the legacy messages (see
    :mod:`new_fastapi.errors`), never with 422, so the docs should not promise 422.
    """

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()  # generated once, then cached on self.openapi_schema
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return schema


def create_app() -> FastAPI:
    app = BookstoreAPI(
        title="Bookstore API",
        version="2.0.0",
        description="The bookstore's new API. Same contract as the legacy app, same data.",
        # Flask answers /books/ with 404 rather than a redirect; so do we.
        redirect_slashes=False,
    )
    app.include_router(router)
    app.include_router(login.router)
    install_error_handlers(app, [*router.routes, *login.router.routes])
    return app


app = create_app()
