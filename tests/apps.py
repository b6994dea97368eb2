"""Small backends with known behaviour, mounted by the gateway in tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.types import Receive, Scope, Send

lifespan_events: list[str] = []


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "app": "echo",
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {k: v for k, v in request.headers.items()},
            "body": body.decode("latin-1"),
            "db": getattr(request.state, "db", None),
        },
        headers={"x-echo": "1"},
    )


async def fail(request: Request) -> PlainTextResponse:
    raise RuntimeError("the new code is broken")


async def read_and_fail(request: Request) -> PlainTextResponse:
    await request.body()
    raise RuntimeError("the new code is broken after reading the body")


async def hang(request: Request) -> PlainTextResponse:
    await asyncio.sleep(3600)
    return PlainTextResponse("never")


async def slow_stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "3"))
    delay = float(request.query_params.get("delay", "0.2"))

    async def chunks() -> Any:
        for i in range(count):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(chunks(), media_type="text/event-stream")


open_streams: list[int] = [0]


async def forever(request: Request) -> StreamingResponse:
    """An endless event stream that counts itself while open."""

    async def chunks() -> Any:
        open_streams[0] += 1
        try:
            while True:
                yield b"data: tick\n\n"
                await asyncio.sleep(0.05)
        finally:
            open_streams[0] -= 1

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def status_unavailable(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


async def status(request: Request) -> PlainTextResponse:
    return PlainTextResponse("status", status_code=int(request.path_params["code"]))


BOOK = {"id": 1, "title": "Dune", "author": "Frank Herbert", "price": 10}
calls: dict[str, int] = {"asgi.book": 0, "wsgi.book": 0}


async def book(request: Request) -> JSONResponse:
    """The new side's answer: a seeded difference in `price`, a fresh `updated_at`."""
    calls["asgi.book"] += 1
    delay = float(request.query_params.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    return JSONResponse({**BOOK, "price": 12, "updated_at": time.time()})


async def same(request: Request) -> JSONResponse:
    """The new side of tests.flask_apps' /same: the same answer, as Starlette gives it."""
    return JSONResponse({"title": "Dune"})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"echo:{text}")
    await websocket.close()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    lifespan_events.append("startup")
    yield {"db": "ready"}
    lifespan_events.append("shutdown")


asgi = Starlette(
    routes=[
        Route("/fail", fail, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        Route("/fail-after-read", read_and_fail, methods=["PUT"]),
        Route("/book", book, methods=["GET", "POST", "PUT"]),
        Route("/hang", hang),
        Route("/same", same),
        Route("/remote-hang", hang),
        Route("/stream", slow_stream),
        Route("/local/stream", slow_stream),
        Route("/forever", forever),
        Route("/status/{code:int}", status),
        WebSocketRoute("/ws", ws_echo),
        Route("/{path:path}", echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
    ],
    lifespan=lifespan,
)


# A mounted sub-application that is down: Starlette rewrites root_path and path_params
# in the scope it is given; nothing of that may reach the backend tried next.
mounted = Starlette(routes=[Mount("/api", routes=[Route("/{rest:path}", status_unavailable)])])


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A plain WSGI app: echoes what it saw, or raises on /raise; /book is the legacy book."""
    if environ["PATH_INFO"] == "/raise":
        raise ValueError("legacy exploded")
    if environ["PATH_INFO"] == "/book":
        calls["wsgi.book"] += 1
        noise = {"served_at": time.time()} if "noise" in environ.get("QUERY_STRING", "") else {}
        body = json.dumps({**BOOK, "updated_at": time.time(), **noise}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    payload = json.dumps(
        {
            "app": "wsgi",
            "path": environ["PATH_INFO"],
            "request_id": environ.get("HTTP_X_REQUEST_ID"),
            "body": body.decode("latin-1"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


async def raw_raise(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that raises before starting any response."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    raise KeyError("raw failure")


async def half_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that reads the body, starts a 500, sends part of it and raises."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"the first half", "more_body": True})
    raise RuntimeError("broken halfway through its answer")


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})


# --- apps that break the protocols (tests/test_faults.py) ---------------------------


async def body_before_start(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.body", "body": b"no start", "more_body": False})


async def str_headers(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [("x-a", "b")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def crlf_header(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"x-a", b"b\r\nSet-Cookie: injected=1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def status_zero(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 0, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
    raise asyncio.CancelledError()


def wsgi_never_starts(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return [b"a body without start_response"]


def wsgi_scope_keys(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers the sorted keys of the ASGI scope its environ was made
    from (a2wsgi's `asgi.scope`)."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(sorted(environ["asgi.scope"])).encode()]


async def scope_keys(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that answers the sorted keys of the scope it was given."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    body = json.dumps(sorted(scope)).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
