"""Apps of every shape the inventory reads, and some it cannot (tests/test_inventory_apps.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from werkzeug.routing import Map, Rule


async def text(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ws(websocket: Any) -> None:
    await websocket.accept()
    await websocket.close()


class Items(HTTPEndpoint):
    async def get(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("items")

    async def post(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("created")


async def opaque(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app with no route table of its own."""


admin_router = APIRouter(prefix="/admin")


@admin_router.get("/stats")
def stats() -> dict[str, int]:
    return {}


inner = APIRouter()
inner.include_router(admin_router, include_in_schema=False)


@inner.put("/things/{thing_id:int}")
def put_thing(thing_id: int) -> dict[str, int]:
    return {}


fastapi_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
fastapi_app.include_router(inner, prefix="/v2")


@fastapi_app.websocket("/live/{room}")
async def live(websocket: WebSocket, room: str) -> None:
    await websocket.accept()


@fastapi_app.get("/metrics")
def own_metrics() -> str:
    return ""


starlette_app = Starlette(
    routes=[
        Route("/", text),
        Route("/items", Items),
        WebSocketRoute("/ws", ws),
        Mount(
            "/sub",
            routes=[Route("/hello/{name}", text), Mount("/deep", routes=[Route("/x", text)])],
        ),
        Mount("/fast", app=fastapi_app),
        Mount("/raw", app=opaque),
        Route("/files/{name}.txt", text, methods=["GET", "DELETE"]),
    ]
)


class WerkzeugApp:
    """A WSGI app on Werkzeug's routing alone, as Flask is built."""

    url_map = Map([Rule("/", endpoint="index"), Rule("/f/<name>.txt", endpoint="file")])

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


werkzeug_app = WerkzeugApp()


def plain_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    """A WSGI app with no route table the gateway can read."""
    start_response("200 OK", [])
    return [b""]
