"""The HTML pages blueprint, mounted at ``/ui``."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response as BaseResponse

from legacy_flask import store
from legacy_flask.auth import login_required
from legacy_flask.validation import FIELDS, ValidationError, validate_book

bp = Blueprint("ui", __name__, url_prefix="/ui")

_INTEGER = re.compile(r"[+-]?\d+")


def form_to_payload(form: MultiDict[str, str]) -> dict[str, Any]:
    """Turn the submitted form into the same shape the JSON API receives.

    Blank text fields count as missing ("title is required"); a blank year means no
    year; a year that is not a whole number is passed through as text so that the
    shared validation rejects it with its usual message.
    """
    payload: dict[str, Any] = {}
    for name in FIELDS:
        value = form.get(name, "").strip()
        if name == "year":
            payload[name] = int(value) if _INTEGER.fullmatch(value) else (value or None)
        elif value:
            payload[name] = value
    return payload


@bp.get("/")
def book_list() -> str:
    return render_template("book_list.html", books=store.list_books(store.get_db()))


@bp.route("/books/new", methods=["GET", "POST"])
@login_required
def book_new() -> str | BaseResponse | tuple[str, int]:
    if request.method == "GET":
        return render_template("book_form.html", form={}, book=None)
    try:
        fields = validate_book(form_to_payload(request.form))
    except ValidationError as exc:
        flash(str(exc), "error")
        return render_template("book_form.html", form=request.form, book=None), 400
    book = store.create_book(store.get_db(), fields)
    flash("Book created", "success")
    return redirect(url_for("ui.book_detail", book_id=book["id"]), code=303)


@bp.route("/books/<int:book_id>/edit", methods=["GET", "POST"])
@login_required
def book_edit(book_id: int) -> str | BaseResponse | tuple[str, int]:
    book = store.get_book(store.get_db(), book_id)
    if book is None:
        abort(404)
    if request.method == "GET":
        form = {name: "" if book[name] is None else str(book[name]) for name in FIELDS}
        return render_template("book_form.html", form=form, book=book)
    try:
        fields = validate_book(form_to_payload(request.form))
    except ValidationError as exc:
        flash(str(exc), "error")
        return render_template("book_form.html", form=request.form, book=book), 400
    if store.update_book(store.get_db(), book_id, fields) is None:
        abort(404)
    flash("Book saved", "success")
    return redirect(url_for("ui.book_detail", book_id=book_id), code=303)


@bp.get("/books/<int:book_id>")
def book_detail(book_id: int) -> str:
    book = store.get_book(store.get_db(), book_id)
    if book is None:
        abort(404)
    return render_template("book_detail.html", book=book)


@bp.post("/books/<int:book_id>/delete")
@login_required
def book_delete(book_id: int) -> BaseResponse:
    book = store.get_book(store.get_db(), book_id)
    if book is None or not store.delete_book(store.get_db(), book_id):
        abort(404)
    flash(f"Book deleted: {book['title']}", "success")
    return redirect(url_for("ui.book_list"), code=303)
