"""Apps that say who they take the client to be, for the forwarded-header tests.

- `flask_app` (WSGI): `request.remote_addr`, `request.scheme`, an external `url_for`
  and the forwarded headers it received, on /flask/who; `proxyfix_app` is the same app
  behind Werkzeug's ProxyFix (as a Flask app behind a proxy is commonly run), on
  /proxyfix/who: it believes the last X-Forwarded-For and X-Forwarded-Proto it gets.
- `fastapi_app` (ASGI): `request.client.host`, `request.url.scheme`, `url_for`, on
  /fastapi/who.
  /fastapi/ws tells a WebSocket client its address and scheme.
- Both answer /split with their name, for a canary split between them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, WebSocket
from flask import Flask, url_for
from flask import request as flask_request
from werkzeug.middleware.proxy_fix import ProxyFix


def _forwarded(headers: Any) -> dict[str, str]:
    names = ("forwarded", "x-real-ip")
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower().startswith("x-forwarded-") or k.lower() in names
    }


flask_app = Flask(__name__)


@flask_app.get("/flask/who", endpoint="flask")
@flask_app.get("/proxyfix/who", endpoint="proxyfix")
def flask_who() -> dict[str, Any]:
    return {
        "client": flask_request.remote_addr,
        "scheme": flask_request.scheme,
        "url": url_for(flask_request.endpoint or "", _external=True),
        "forwarded": _forwarded(flask_request.headers),
    }


@flask_app.get("/split")
def flask_split() -> dict[str, str]:
    return {"app": "flask"}


proxyfix_app = ProxyFix(flask_app, x_for=1, x_proto=1, x_host=1)

fastapi_app = FastAPI()


@fastapi_app.get("/fastapi/who", name="who")
async def fastapi_who(request: Request) -> dict[str, Any]:
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "url": str(request.url_for("who")),
        "forwarded": _forwarded(request.headers),
    }


@fastapi_app.get("/split")
async def fastapi_split() -> dict[str, str]:
    return {"app": "fastapi"}


@fastapi_app.websocket("/fastapi/ws")
async def fastapi_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    client = websocket.client.host if websocket.client else None
    await websocket.send_json({"client": client, "scheme": websocket.url.scheme})
    await websocket.close()
