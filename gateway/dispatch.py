"""Serving one request on one route: the gateway's request path.

`serve()` hands the request to the route's backend and owns everything around
that call: the request id (the client's own, else a new one; the backend sees
the same value), the `X-Gateway-*` response headers, metrics, and turning
every backend failure into a JSON answer.

A 5xx response from a backend is held back (up to `HOLD_LIMIT` bytes) until
the backend returns. Frameworks such as Starlette send their own plain-text
500 and *then* re-raise; holding the 5xx lets the gateway replace it with its
JSON error carrying the request id, and is the seam a fallback backend needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway.errors import BackendFailure
from gateway.table import Route
from gateway.types import Headers, Message, Receive, Scope, Send

log = logging.getLogger("gateway.dispatch")

HOLD_LIMIT = 64 * 1024
_REQUEST_ID = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """(request id, whether the client sent it)."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            if _VALID_REQUEST_ID.match(value):
                return value.decode("ascii"), True
            break
    return uuid.uuid4().hex, False


def json_response(
    status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Message, Message]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": payload, "more_body": False}


async def send_json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    start, end = json_response(status, body, headers)
    await send(start)
    await send(end)


class _Exchange:
    """Tracks one response on its way to the client (status, held 5xx, failure)."""

    __slots__ = ("extra", "held", "held_bytes", "send", "sent", "status")

    def __init__(self, send: Send, extra: Headers) -> None:
        self.send = send
        self.extra = extra
        self.status = 0  # 0 until the backend starts its response
        self.sent = False  # whether anything reached the client
        self.held: list[Message] | None = None
        self.held_bytes = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), *self.extra]
            if self.status >= 500:
                self.held = [message]
                return
        elif self.held is not None:
            self.held.append(message)
            self.held_bytes += len(message.get("body", b""))
            if self.held_bytes <= HOLD_LIMIT:
                return
            await self.flush()
            return
        elif kind == "websocket.accept":
            self.status = 101
            message["headers"] = [*message.get("headers", ()), *self.extra]
        elif kind == "websocket.close" and not self.status:
            self.status = 403  # closed before the handshake: the server answers 403
        self.sent = True
        await self.send(message)

    async def flush(self) -> None:
        held, self.held = self.held, None
        if held:
            self.sent = True
            for message in held:
                await self.send(message)


async def serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a request (HTTP or WebSocket) on `route`."""
    request_id, from_client = request_id_of(scope)
    if not from_client:
        scope = dict(scope)
        scope["headers"] = [*scope["headers"], (_REQUEST_ID, request_id.encode())]
    exchange = _Exchange(send, [*route.response_headers, (_REQUEST_ID, request_id.encode())])
    backend = route.backend
    metrics = route.metrics
    websocket = scope["type"] == "websocket"
    started = time.perf_counter()
    if metrics is not None:
        metrics.in_flight.inc()
    failure: BackendFailure | None = None
    try:
        if websocket and not backend.supports_websocket:
            await exchange({"type": "websocket.close", "code": 1003})
        elif route.timeout is None:
            await backend(scope, receive, exchange)
        else:
            await _with_timeout(route.timeout, backend(scope, receive, exchange), exchange)
        if not exchange.status:
            raise BackendFailure(500, "exception", "the backend returned without a response")
        await exchange.flush()
    except BackendFailure as exc:
        failure = exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        failure = BackendFailure(500, "exception", _describe(exc))
    finally:
        if metrics is not None:
            metrics.in_flight.dec()
    if failure is not None:
        await _answer_failure(route, scope, exchange, failure, request_id)
    if metrics is not None:
        method = "WEBSOCKET" if websocket else scope["method"]
        metrics.observe(method, exchange.status, time.perf_counter() - started)


async def _with_timeout(
    seconds: float, work: Coroutine[Any, Any, None], exchange: _Exchange
) -> None:
    """Time out a backend that has not *started* its response within `seconds`."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if not done and not exchange.status:
            raise BackendFailure(504, "timeout", f"no response within {seconds:g}s")
        await task
    finally:
        if not task.done():
            task.cancel()


async def _answer_failure(
    route: Route, scope: Scope, exchange: _Exchange, failure: BackendFailure, request_id: str
) -> None:
    if route.metrics is not None:
        route.metrics.errors[failure.kind].inc()
    log.error(
        "backend failed: route=%s backend=%s request_id=%s kind=%s status=%s %s %s: %s",
        route.id,
        route.backend_name,
        request_id,
        failure.kind,
        failure.status if not exchange.sent else "(response already started)",
        scope.get("method", "WEBSOCKET"),
        scope["path"],
        failure.detail,
    )
    if exchange.sent:
        return  # too late to answer: returning mid-response makes the server drop it
    exchange.held = None
    exchange.status = failure.status
    if scope["type"] == "websocket":
        await exchange.send({"type": "websocket.close", "code": 1011})
        return
    body = {
        "error": _PUBLIC_REASON.get(failure.kind, "the backend failed"),
        "kind": failure.kind,
        "route": route.id,
        "backend": route.backend_name,
        "request_id": request_id,
    }
    await send_json(exchange.send, failure.status, body, exchange.extra)


_PUBLIC_REASON = {
    "exception": "the backend raised an error",
    "timeout": "the backend did not answer in time",
    "connect": "the backend cannot be reached",
    "protocol": "the backend sent an invalid response",
}


def _describe(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame: enough to find it, no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
