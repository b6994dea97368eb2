"""Logging in: the demo users, the login page, logout, and ``GET /me``.

The logged-in user's name is kept in Flask's signed session cookie under
``session["user"]``. Behind the gateway, the new app reads the same session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash
from werkzeug.wrappers.response import Response as BaseResponse

from legacy_flask.api import json_response

bp = Blueprint("auth", __name__)

# The demo's users; the passwords ("wonderland", "builder") are hashed with Werkzeug's
# generate_password_hash.
USERS = {
    "alice": "scrypt:32768:8:1$CwPSgMOqvJ47XAsD$dbf41cb2988741ea39ea0e38d01a4b85a14454ddac7cc298"
    "a2833b09be28c421193d591790ba50588cff75c33b5547d41e1657e6ab7ba54230fa50cff07dd29e",
    "bob": "scrypt:32768:8:1$KmqvLOIGEBf9qVpP$5bc83db36a44562e87503d2f37ef442ab9a303f48a010f8457"
    "a2523d8e8c75287645d71cb693bdb4d54e113631f624b86fa6c61b24979dff297b531f11aa6473",
}

P = ParamSpec("P")
R = TypeVar("R")


def current_user() -> str | None:
    user = session.get("user")
    return user if isinstance(user, str) and user in USERS else None


def login_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    """A UI view for logged-in users; anyone else is sent to the login page first."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if current_user() is None:
            flash("Log in to change books", "error")
            return redirect(url_for("auth.login", next=request.path), code=303)
        return view(*args, **kwargs)

    return wrapper


def _safe_next(target: str | None) -> str:
    # Only a path of this site: "//host" or "http://..." would send the user elsewhere.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("ui.book_list")


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int]:
    next_path = request.values.get("next", "")
    if request.method == "GET":
        return render_template("login.html", next=next_path, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    hashed = USERS.get(username)
    if hashed is None or not check_password_hash(hashed, password):
        flash("Wrong user name or password", "error")
        return render_template("login.html", next=next_path, username=username), 401
    session.clear()  # nothing from before the login carries over
    session["user"] = username
    flash(f"Logged in as {username}", "success")
    return redirect(_safe_next(next_path), code=303)


@bp.post("/ui/logout")
def logout_page() -> BaseResponse:
    session.clear()
    flash("Logged out", "success")
    return redirect(url_for("ui.book_list"), code=303)


@bp.get("/me")
def me() -> Response:
    user = current_user()
    if user is None:
        abort(401)
    return json_response({"user": user})


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    response = Response(status=204)
    del response.headers["Content-Type"]  # no body, no type: as the new app answers
    return response
