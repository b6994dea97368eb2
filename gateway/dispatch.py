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
import random
import re
import time
import traceback
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway.bodies import BodyRecorder, ClientWatch, has_body
from gateway.errors import BackendFailure
from gateway.shadow import Captured, ShadowRunner
from gateway.table import Route, Target
from gateway.types import Headers, Message, Receive, Scope, Send

log = logging.getLogger("gateway.dispatch")

HOLD_LIMIT = 64 * 1024
CLIENT_CLOSED = 499  # the status logged and counted when the client left first (as nginx)
_REQUEST_ID = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """(request id, whether the client sent it)."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            if _VALID_REQUEST_ID.match(value):
                return value.decode("ascii"), True
            break
    # Unique, not secret: no system call per request as uuid4's urandom makes.
    return f"{random.getrandbits(128):032x}", False


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


def own_answer(scope: Scope, send: Send) -> Send:
    """`send` for an answer of the gateway's own: it carries the request id too."""
    request_id = request_id_of(scope)[0].encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (_REQUEST_ID, request_id)]
        await send(message)

    return send_with_id


class _Exchange:
    """Tracks one response on its way to the client (status, held 5xx, failure)."""

    __slots__ = ("capture", "extra", "held", "held_bytes", "send", "sent", "status")

    def __init__(self, send: Send, extra: Headers, capture: Captured | None = None) -> None:
        self.send = send
        self.capture = capture
        self.extra = extra
        self.status = 0  # 0 until the backend starts its response
        self.sent = False  # whether anything reached the client
        self.held: list[Message] | None = None
        self.held_bytes = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self.capture is not None:
            self.capture.add(message)
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


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


async def serve(
    route: Route, scope: Scope, receive: Receive, send: Send, shadows: ShadowRunner | None = None
) -> None:
    """Serve a request (HTTP or WebSocket) on `route`."""
    request_id, from_client = request_id_of(scope)
    if not from_client:  # none, or one not fit to pass on: the backend sees ours only
        scope = dict(scope)
        headers = [h for h in scope["headers"] if h[0] != _REQUEST_ID]
        headers.append((_REQUEST_ID, request_id.encode()))
        scope["headers"] = headers
    rid = (_REQUEST_ID, request_id.encode())
    target = route.primary
    canary = route.canary_target
    if canary is not None and route.canary is not None and route.canary.to_canary(scope):
        target = canary
    if scope["type"] != "http":
        await _finish(
            route, target, scope, *await _attempt(target, scope, receive, send, rid), request_id
        )
        return
    method = scope["method"]
    fallback = route.fallback
    if fallback is not None and (method not in IDEMPOTENT or fallback.name == target.name):
        fallback = None
    shadower = route.shadower
    if shadower is not None and (
        target is not route.primary
        or shadows is None
        or not shadower.wants(method, random.random())
    ):
        shadower = None
    bodied = has_body(scope)
    watch = ClientWatch(receive) if bodied else None
    if watch is not None:
        receive = watch.receive
    recorder = BodyRecorder(receive) if fallback is not None or shadower is not None else None
    if shadower is not None and recorder is not None and bodied:
        await recorder.preload()
    capture = Captured() if shadower is not None else None
    exchange, failure = await _attempt(
        target, scope, recorder.receive if recorder else receive, send, rid, capture, watch
    )
    if exchange.status == CLIENT_CLOSED:
        # Nothing to hold against the backend: no rollback vote, no fallback, no shadow.
        await _finish(route, target, scope, exchange, failure, request_id)
        return
    failed = failure is not None or exchange.status >= 500
    if route.rollback is not None and target is route.primary:
        route.rollback.record(failed)
    if failed and fallback is not None and not exchange.sent and recorder is not None:
        replay = recorder.replay()
        if replay is not None:
            _log_fallback(route, target, fallback, exchange, failure, request_id)
            if failure is not None:
                _count_failure(target, failure)
            exchange.held = None
            exchange, failure = await _attempt(fallback, scope, replay, send, rid, watch=watch)
            target = fallback
    await _finish(route, target, scope, exchange, failure, request_id)
    # Compare only what the primary itself answered (not a failure, not a fallback's answer).
    answered = failure is None and target is route.primary
    if answered and shadower and shadows and capture is not None and recorder is not None:
        primary = route.primary
        body = recorder.body(scope)
        shadows.submit(shadower, primary.backend, primary.name, scope, body, capture)


async def _attempt(
    target: Target,
    scope: Scope,
    receive: Receive,
    send: Send,
    rid: tuple[bytes, bytes],
    capture: Captured | None = None,
    watch: ClientWatch | None = None,
) -> tuple[_Exchange, BackendFailure | None]:
    """Call one backend. A 5xx answer stays held; the caller decides what reaches the client.

    A failure after the client went away mid-body is the client's doing: the exchange
    then has status CLIENT_CLOSED and no failure is returned."""
    exchange = _Exchange(send, [*target.response_headers, rid], capture)
    backend = target.backend
    metrics = target.metrics
    started = time.perf_counter()
    backend.active += 1
    if metrics is not None:
        metrics.in_flight.inc()
    failure: BackendFailure | None = None
    try:
        if scope["type"] == "websocket" and not backend.supports_websocket:
            await exchange({"type": "websocket.close", "code": 1003})
        elif target.timeout is None:
            await backend(scope, receive, exchange)
        else:
            await _with_timeout(target.timeout, backend(scope, receive, exchange), exchange)
        if not exchange.status:
            raise BackendFailure(500, "exception", "the backend returned without a response")
    except BackendFailure as exc:
        failure = exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        failure = BackendFailure(500, "exception", _describe(exc))
    finally:
        backend.active -= 1
        if metrics is not None:
            metrics.in_flight.dec()
    if failure is not None and watch is not None and watch.gone and not exchange.sent:
        failure = None
        exchange.held = None
        exchange.status = CLIENT_CLOSED
    if metrics is not None:
        status = failure.status if failure is not None and not exchange.sent else exchange.status
        method = scope.get("method", "WEBSOCKET")
        metrics.observe(method, status, time.perf_counter() - started)
    return exchange, failure


async def _finish(
    route: Route,
    target: Target,
    scope: Scope,
    exchange: _Exchange,
    failure: BackendFailure | None,
    request_id: str,
) -> None:
    """Deliver the final answer: the held response, or the gateway's own for a failure."""
    if exchange.status == CLIENT_CLOSED:
        log.info(
            "client went away before its request body was sent: route=%s backend=%s "
            "request_id=%s %s %s",
            route.id,
            target.name,
            request_id,
            scope["method"],
            scope["path"],
        )
        return
    if failure is None:
        await exchange.flush()
        return
    _count_failure(target, failure)
    log.error(
        "backend failed: route=%s backend=%s request_id=%s kind=%s status=%s %s %s: %s",
        route.id,
        target.name,
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
        "backend": target.name,
        "request_id": request_id,
    }
    await send_json(exchange.send, failure.status, body, exchange.extra)


def _count_failure(target: Target, failure: BackendFailure) -> None:
    if target.metrics is not None:
        target.metrics.errors[failure.kind].inc()


def _log_fallback(
    route: Route,
    target: Target,
    fallback: Target,
    exchange: _Exchange,
    failure: BackendFailure | None,
    request_id: str,
) -> None:
    what = failure.kind if failure is not None else f"status {exchange.status}"
    log.warning(
        "fallback: route=%s from=%s to=%s request_id=%s reason=%s",
        route.id,
        target.name,
        fallback.name,
        request_id,
        what,
    )
    if fallback.metrics is not None:
        fallback.metrics.count_fallback(route.id, target.name)


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
