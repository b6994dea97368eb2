"""Backends for the time-limit tests, the same behaviour as a WSGI and an ASGI app.

A path ending in `/stream` streams `n` chunks `gap` seconds apart (the gap after
the last one too), `/big` `n` chunks of `BIG` bytes at once; one ending in
`/slow` waits `wait` seconds, then, as any other path, echoes the request body
it read, as JSON. Kept free of test-only imports:
the gateway imports them as backends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from gateway.types import Receive, Scope, Send
from tests.lifespan import serve_lifespan


def _options(query: str) -> tuple[int, float, float]:
    """(n, gap, wait) from a query string."""
    values = {k: v[0] for k, v in parse_qs(query).items()}
    return int(values.get("n", "2")), float(values.get("gap", "0")), float(values.get("wait", "0"))


BIG = 64 * 1024


def chunk(i: int) -> bytes:
    return f"data: {i}\n\n".encode()


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterator[bytes] | list[bytes]:
    n, gap, wait = _options(environ.get("QUERY_STRING", ""))
    path: str = environ["PATH_INFO"]
    if path.endswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return _chunks(n, gap)
    if path.endswith("/big"):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * BIG for _ in range(n))
    time.sleep(wait)
    body = json.dumps({"body": environ["wsgi.input"].read().decode()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _chunks(n: int, gap: float) -> Iterator[bytes]:
    for i in range(n):
        yield chunk(i)
        time.sleep(gap)


async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    n, gap, wait = _options(scope["query_string"].decode())
    if scope["path"].endswith("/stream"):
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(n):
            await send({"type": "http.response.body", "body": chunk(i), "more_body": True})
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"].endswith("/big"):
        headers = [(b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(n):
            await send({"type": "http.response.body", "body": b"x" * BIG, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await asyncio.sleep(wait)
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = json.dumps({"body": body.decode()}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
