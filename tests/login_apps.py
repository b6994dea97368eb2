"""Apps that share a login through the gateway, for the shared-session tests.

- `flask_login_app`: a Flask app whose login is Flask-Login's, with a session
  interface of its own (another cookie name and another signing salt than Flask's
  defaults): a reader that re-implemented Flask's defaults could not read it.
- `partner`: the FastAPI app beside it, reading and writing that session through
  `gateway.legacy_session` (Flask-Login keeps the user id under "_user_id").
- `upstream`: a remote app (run by a real uvicorn) that gets the session in the
  signed header and verifies it with `gateway.session_header`, stdlib only.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response, WebSocket
from flask import Flask, abort
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import session_header
from gateway.legacy_session import (
    LegacySession,
    clear_session,
    read_session,
    replace_session,
    user_required,
)

USERS = ("alice", "bob")


class SaltedSessions(SecureCookieSessionInterface):
    salt = "flask-login-test-salt"


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def create_flask_login_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "flask-login-test-key"
    app.config["SESSION_COOKIE_NAME"] = "login_sid"
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = SaltedSessions()
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in USERS else None

    @app.post("/login/<name>")
    def login(name: str) -> dict[str, Any]:
        if name not in USERS:
            abort(404)
        login_user(User(name))
        return {"user": name}

    @app.post("/legacy-logout")
    def logout() -> tuple[str, int]:
        logout_user()
        return "", 204

    @app.get("/me")
    @app.get("/legacy-me")
    def me() -> dict[str, Any] | tuple[dict[str, Any], int]:
        if not current_user.is_authenticated:
            return {"error": "unauthorized"}, 401
        return {"user": current_user.id}

    return app


flask_login_app = create_flask_login_app()

keyless = Flask("keyless")  # a Flask app without SECRET_KEY: no session to share

partner = FastAPI()
LoginUser = Annotated[str, Depends(user_required("_user_id"))]


@partner.get("/me")
def partner_me(user: LoginUser, request: Request) -> dict[str, Any]:
    if request.headers.get("x-fail"):
        raise RuntimeError("failing on purpose")
    return {"user": user}


@partner.post("/login-as/{name}")
def partner_login_as(name: str, request: Request, session: LegacySession) -> dict[str, Any]:
    replace_session(request, {**(session or {}), "_user_id": name, "_fresh": True})
    return {"user": name}


@partner.post("/logout", status_code=204, response_class=Response)
def partner_logout(request: Request) -> None:
    clear_session(request)


@partner.websocket("/ws-me")
async def partner_ws_me(websocket: WebSocket) -> None:
    await websocket.accept()
    session = read_session(websocket)
    await websocket.send_json({"user": session.get("_user_id") if session else None})
    await websocket.close()


@partner.get("/state-keys")
def partner_state_keys(request: Request) -> list[str]:
    return sorted(request.scope["state"])


# --- the same in plain Starlette --------------------------------------------------------

_login_user = user_required("_user_id")


async def starlette_me(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"user": _login_user(request)})  # Starlette's own 401 otherwise


starlette_partner = Starlette(routes=[Route("/plain-me", starlette_me)])


# --- the remote upstream -------------------------------------------------------------


def _key() -> bytes:
    return os.environ[session_header.KEY_ENV].encode()


async def remote_echo(request: StarletteRequest) -> JSONResponse:
    values = request.headers.getlist("x-legacy-session")
    try:
        session = session_header.verify(values[0], _key()) if len(values) == 1 else None
        verified = len(values) == 1
    except session_header.BadSessionHeader:
        session, verified = None, False
    return JSONResponse({"received": len(values), "verified": verified, "session": session})


async def remote_login_as(request: StarletteRequest) -> JSONResponse:
    name = request.path_params["name"]
    value = session_header.sign({"user": name}, _key())
    return JSONResponse({"user": name}, headers={"X-Legacy-Session": value})


async def remote_logout(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({}, headers={"X-Legacy-Session": session_header.sign(None, _key())})


async def remote_forged(request: StarletteRequest) -> JSONResponse:
    value = session_header.sign({"user": "mallory"}, b"not the shared key")
    return JSONResponse({}, headers={"X-Legacy-Session": value})


upstream = Starlette(
    routes=[
        Route("/remote/echo", remote_echo),
        Route("/remote/login-as/{name}", remote_login_as, methods=["POST"]),
        Route("/remote/logout", remote_logout, methods=["POST"]),
        Route("/remote/forged", remote_forged, methods=["POST"]),
    ]
)
