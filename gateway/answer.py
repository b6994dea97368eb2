"""The final answer to a request: the backend's own, or the gateway's, and its log line.

`deliver` sends what the client gets once the backend calls are over: the
backend's answer (a held 5xx flushed), or the gateway's JSON error with the
request id when the backend gave no complete answer or a limit cut the request
short. It logs every failure, cut and abandoned request on one line, key facts
first, never the request's headers, query or body.
"""

from __future__ import annotations

import logging

from gateway.exchange import Exchange
from gateway.http import send_json
from gateway.table import Route, Target
from gateway.types import Scope, Send

# The request path's logger, by the name operators already filter on.
log = logging.getLogger("gateway.dispatch")


async def deliver(route: Route, scope: Scope, exchange: Exchange, request_id: str) -> None:
    """Deliver the final answer: the backend's own (held or not), else the gateway's."""
    if exchange.client_gone:
        log.info(
            "client went away before its request body was sent: route=%s backend=%s "
            "request_id=%s %s %s",
            route.id,
            exchange.target.name,
            request_id,
            scope["method"],
            scope["path"],
        )
        return
    cut = exchange.cut
    if cut is not None:
        log.info(
            "request cut short: route=%s backend=%s request_id=%s kind=%s status=%d %s %s: %s",
            route.id,
            exchange.target.name,
            request_id,
            cut.kind,
            cut.status,
            scope["method"],
            scope["path"],
            cut,
        )
        body = {"error": cut.reason, "kind": cut.kind, "route": route.id, "request_id": request_id}
        # The rest of the body is never read: the connection cannot carry another request.
        await send_json(
            exchange.send, cut.status, body, [*exchange.extra, (b"connection", b"close")]
        )
        return
    failure = exchange.failure
    if failure is None:
        await exchange.flush()
        return
    if exchange.complete:
        answer = f"{exchange.status} (its own answer)"
    elif exchange.sent:
        answer = "(response already started)"
    else:
        answer = str(failure.status)
    log.error(
        "backend failed: route=%s backend=%s request_id=%s kind=%s status=%s %s %s: %s",
        route.id,
        exchange.target.name,
        request_id,
        failure.kind,
        answer,
        scope.get("method", "WEBSOCKET"),
        scope["path"],
        failure.detail,
    )
    if exchange.own_answer:
        # A complete answer stands as the app gave it. One already under way cannot
        # change: returning mid-response makes the server drop the connection.
        await exchange.flush()
        return
    exchange.discard()
    if scope["type"] == "websocket":
        await exchange.send({"type": "websocket.close", "code": 1011})
        return
    body = {
        "error": failure.reason,
        "kind": failure.kind,
        "route": route.id,
        "backend": exchange.target.name,
        "request_id": request_id,
    }
    await send_json(exchange.send, failure.status, body, exchange.extra)


def log_fallback(route: Route, exchange: Exchange, fallback: Target, request_id: str) -> None:
    failure = exchange.failure
    log.warning(
        "fallback: route=%s from=%s to=%s request_id=%s reason=%s",
        route.id,
        exchange.target.name,
        fallback.name,
        request_id,
        failure.kind if failure is not None else f"status {exchange.status}",
    )


async def end_cut_short(send: Send) -> None:
    """End a response the drain's last step cancelled (an event stream, a slow upload):
    as a complete answer, so that a client sees its end rather than a broken one."""
    try:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except RuntimeError:  # no response started yet: the server wants a start first
        await send_json(send, 503, {"error": "the gateway shut down before the answer came"})
