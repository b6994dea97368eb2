"""The legacy bookstore: a classic Flask application.

Run it with ``flask --app legacy_flask.app run``.
"""

from __future__ import annotations

import os

from flask import Flask, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers.response import Response as BaseResponse

from legacy_flask import api, auth, store, ui

DEV_SECRET_KEY = "dev-only-not-secret"


def _is_ui_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def handle_http_error(exc: HTTPException) -> BaseResponse | tuple[str, int]:
    """HTML error pages under ``/ui``, JSON errors everywhere else.

    The JSON message is the lower-cased status name, e.g. ``{"error": "not found"}``.
    """
    status = exc.code or 500
    if _is_ui_path(request.path):
        return render_template("error.html", error=exc), status
    response = api.error_response(status, exc.name.lower())
    for name, value in exc.get_headers():
        if name.lower() != "content-type":  # keeps Allow on 405
            response.headers[name] = value
    return response


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("BOOKSTORE_SECRET_KEY", DEV_SECRET_KEY)
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(auth.bp)
    app.register_error_handler(HTTPException, handle_http_error)
    app.teardown_appcontext(store.close_db)
    return app


app = create_app()
