"""The JSON API blueprint: ``/books``."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for

from legacy_flask import store
from legacy_flask.validation import ValidationError, validate_book

bp = Blueprint("api", __name__)


def json_response(payload: Any, status: int = 200) -> Response:
    """Compact UTF-8 JSON without a trailing newline.

    Error bodies are part of the contract and must be byte-identical to the new app's,
    which is why this does not use ``jsonify`` (that appends a newline).
    """
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return current_app.response_class(body, status=status, mimetype="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _not_found(book_id: int) -> Response:
    return error_response(404, f"book {book_id} not found")


@bp.get("/books")
def list_books() -> Response:
    author = request.args.get("author")
    return json_response(store.list_books(store.get_db(), author))


@bp.post("/books")
def create_book() -> Response:
    try:
        fields = validate_book(request.get_json(silent=True))
    except ValidationError as exc:
        return error_response(400, str(exc))
    book = store.create_book(store.get_db(), fields)
    response = json_response(book, 201)
    response.headers["Location"] = url_for("api.get_book", book_id=book["id"])
    return response


@bp.get("/books/<int:book_id>")
def get_book(book_id: int) -> Response:
    book = store.get_book(store.get_db(), book_id)
    return _not_found(book_id) if book is None else json_response(book)


@bp.put("/books/<int:book_id>")
def update_book(book_id: int) -> Response:
    try:
        changes = validate_book(request.get_json(silent=True), partial=True)
    except ValidationError as exc:
        return error_response(400, str(exc))
    book = store.update_book(store.get_db(), book_id, changes)
    return _not_found(book_id) if book is None else json_response(book)


@bp.delete("/books/<int:book_id>")
def delete_book(book_id: int) -> Response:
    if not store.delete_book(store.get_db(), book_id):
        return _not_found(book_id)
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]
    return response
