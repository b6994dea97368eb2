"""A team's Flask app as Flask 2.x runs it, and a Starlette app sharing its login.

Imported by `tests/test_flask2.py` in subprocesses whose PYTHONPATH puts Flask 2.3 and
Werkzeug 2.3 first (`.venv/flask2`); it uses only what Flask 2.3 and 3 both offer.

- `app`: query strings, forms, JSON, a body of any framing, an absolute redirect
  (`url_for(..., _external=True)`), a cookie session, a handler that raises (Flask's
  own 500 answer), and `/versions`, which says which Flask and Werkzeug serve it.
- `partner`: a Starlette app that reads and writes `app`'s session through
  `gateway.legacy_session` (the gateway opens it with Flask 2's session interface).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import flask
import werkzeug
from flask import Flask, jsonify, redirect, request, session, url_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.legacy_session import clear_session, read_session, replace_session

app = Flask(__name__)
app.secret_key = "flask2-test-key"


@app.get("/versions")
def versions() -> Any:
    return jsonify(
        flask=metadata.version("flask"),
        werkzeug=metadata.version("werkzeug"),
        flask_dir=str(Path(flask.__file__).parent.parent),
        werkzeug_dir=str(Path(werkzeug.__file__).parent.parent),
    )


@app.get("/search")
def search() -> Any:
    return jsonify(q=request.args.get("q"), tags=request.args.getlist("tag"))


@app.post("/form")
def form() -> Any:
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/json")
def json_echo() -> Any:
    data = request.get_json()
    return jsonify(got=data, keys=sorted(data)), 201


@app.post("/upload")
def upload() -> Any:
    """The body as the app read it, and whether the server ended the input."""
    body = request.get_data()
    return jsonify(
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        chunked=request.headers.get("Transfer-Encoding"),
        input_terminated=request.environ.get("wsgi.input_terminated", False),
    )


@app.get("/go")
def go() -> Any:
    return redirect(url_for("landing", page=2, _external=True))


@app.get("/landing")
def landing() -> Any:
    return jsonify(page=request.args.get("page"))


@app.post("/login")
def login() -> Any:
    session["user"] = request.form["user"]
    return jsonify(user=session["user"])


@app.get("/whoami")
def whoami() -> Any:
    return jsonify(user=session.get("user"))


@app.get("/boom")
def boom() -> Any:
    raise RuntimeError("the handler failed")


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Any:
    return jsonify(id=item_id)


@app.route("/files/<path:name>", methods=["GET", "DELETE"])
def files(name: str) -> Any:
    return jsonify(name=name, method=request.method)


async def me(request: Request) -> JSONResponse:
    shared = read_session(request)
    if shared is None:
        return JSONResponse({"error": "anonymous"}, status_code=401)
    return JSONResponse({"user": shared.get("user")})


async def rename(request: Request) -> JSONResponse:
    user = (await request.json())["user"]
    replace_session(request, {"user": user})
    return JSONResponse({"user": user})


async def sign_out(request: Request) -> JSONResponse:
    clear_session(request)
    return JSONResponse({"user": None})


partner = Starlette(
    routes=[
        Route("/me", me),
        Route("/rename", rename, methods=["POST"]),
        Route("/signout", sign_out, methods=["POST"]),
    ]
)
