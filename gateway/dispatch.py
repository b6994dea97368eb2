"""Serving one request on one route: `plan`, then carry the plan out.

`plan(route, scope)` decides what serves the request, from the route and the
request alone (no I/O): the target (the primary, or the canary for this
request), the fallback that may replay it, the shadower that may copy it, the
rollback watch its answer counts towards. `serve()` carries the plan out: it
calls the target, replays on the fallback if the target failed before anything
reached the client, delivers the answer (or the gateway's JSON error, with the
request id), and hands the exchange to the shadower.

Each backend call answers through an `Exchange` (`gateway.exchange`), which
keeps its clock (`timeout` to the start of the answer, `read_timeout` between
two body messages, the backend's time only) and what reached the client.

An app's own answer, any status, reaches the client unchanged, even when the
app raises after it (Starlette's error middleware sends its plain-text 500 and
*then* re-raises): the failure is still logged, counted as a backend error and
counted against the rollback watch. The gateway answers with its own JSON only
when the app gave no complete answer (it raised before or while answering, timed
out, could not be reached, broke the protocol) or when the gateway cut the
request short itself (a limit). Where a fallback could replay the request, a
5xx answer is held back (up to `exchange.HOLD_LIMIT` bytes) until the backend
returns, so that the fallback's answer can replace it; elsewhere nothing is
held.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Callable

from gateway.bodies import BodyGuard, BodyRecorder, Captured
from gateway.errors import BackendError, BackendFailure
from gateway.exchange import Exchange, Outcome
from gateway.http import has_body, send_json, with_request_id
from gateway.routefile.model import IDEMPOTENT_METHODS
from gateway.table import Plan, Route, Target
from gateway.types import Receive, Scope, Send

log = logging.getLogger("gateway.dispatch")

CLIENT_CLOSED = 499  # the status counted when the client left first (as nginx logs it)


def plan(route: Route, scope: Scope, chance: Callable[[], float] = random.random) -> Plan:
    """What serves this request on `route`; `chance` draws the random shares."""
    if route.fixed is not None:
        return route.fixed
    target = route.primary
    canary = route.canary
    if canary is not None and canary.split.to_canary(scope, chance):
        target = canary.target
    if scope["type"] != "http":
        return Plan(target)
    on_primary = target is route.primary
    method = scope["method"]
    fallback = rollback = None
    if route.fallback is not None:
        if method in IDEMPOTENT_METHODS and route.fallback.target.name != target.name:
            fallback = route.fallback.target
        if on_primary:
            rollback = route.fallback.rollback
    shadower = route.shadower
    if shadower is not None and not (on_primary and shadower.wants(method, chance())):
        shadower = None
    return Plan(target, fallback, shadower, rollback)


async def serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a request (HTTP or WebSocket) on `route`."""
    request_id, scope = with_request_id(scope)
    todo = plan(route, scope)
    client = None
    if scope["type"] == "http" and has_body(scope):
        limits = todo.target
        client = BodyGuard(receive, scope, limits.max_body, limits.body_timeout)
        receive = client.receive
    recorder = BodyRecorder(receive) if todo.keeps_body else None
    if recorder is not None:
        if todo.shadower is not None and client is not None:
            await recorder.preload()
        receive = recorder.receive
    capture = Captured() if todo.shadower is not None else None
    exchange = await _attempt(
        todo.target, scope, receive, send, request_id, capture, client, todo.fallback is not None
    )
    # Policies first in these tests: a plain route's request skips the outcome.
    if todo.rollback is not None and exchange.outcome in (Outcome.ANSWERED, Outcome.FAILED):
        todo.rollback.record(exchange.outcome is Outcome.FAILED)
    fallback = todo.fallback
    if fallback is not None and exchange.outcome is Outcome.FAILED and not exchange.sent:
        replay = recorder.replay() if recorder is not None else None
        if replay is not None:
            _log_fallback(route, exchange, fallback, request_id)
            exchange.discard()
            exchange = await _attempt(
                fallback, scope, replay, send, request_id, client=client, replaces=exchange
            )
    await _finish(route, scope, exchange, request_id)
    # Compare only what the target itself answered (a 5xx included), not a failure,
    # a fallback's answer or an abandoned request.
    shadower = todo.shadower
    if shadower and capture and recorder and exchange.target is todo.target:
        answered = exchange.outcome in (Outcome.ANSWERED, Outcome.FAILED)
        if answered and exchange.failure is None:
            shadower.submit(scope, recorder.body(scope), capture)


async def _attempt(
    target: Target,
    scope: Scope,
    receive: Receive,
    send: Send,
    request_id: str,
    capture: Captured | None = None,
    client: BodyGuard | None = None,
    hold: bool = False,
    replaces: Exchange | None = None,
) -> Exchange:
    """Call one backend. With `hold`, a 5xx answer stays held: the caller decides
    whether it reaches the client (or a fallback's instead)."""
    exchange = Exchange(target, send, request_id, capture, client, hold)
    if client is not None:
        client.waiting = exchange.client_waited
    backend = target.backend
    started = time.perf_counter()
    backend.active += 1
    if target.metrics is not None:
        target.metrics.add_in_flight(1)
    if target.timeout is not None or target.read_timeout is not None:
        exchange.start()
    try:
        if exchange.cut is not None:
            pass  # a declared Content-Length past the limit: the backend never sees it
        elif scope["type"] == "websocket" and not backend.supports_websocket:
            await exchange({"type": "websocket.close", "code": 1003})
        else:
            await target.app(scope, receive, exchange)
        if not exchange.status and exchange.cut is None:
            raise BackendError("the backend returned without a response")
    except BackendFailure as exc:
        exchange.failure = exc
    except asyncio.CancelledError as exc:
        if exchange.end():
            exchange.failure = exchange.timed_out()  # the clock's own cancellation
        else:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request is being cancelled (server shutdown): let it end
            # The app cancelled something of its own and let the error escape: its failure.
            exchange.failure = BackendError(_describe(exc))
    except Exception as exc:
        exchange.end()
        if exchange.expired:
            exchange.failure = exchange.timed_out()
        else:
            exchange.failure = BackendError(_describe(exc))
    finally:
        exchange.end()  # a thread may still read the body or send: the clock is done with
        backend.active -= 1
        if target.metrics is not None:
            target.metrics.add_in_flight(-1)
    if exchange.cut is not None:
        exchange.failure = None  # whatever the app made of the cut body
        exchange.discard()
    elif exchange.failure is not None and client and client.gone:
        # Failing to read a body its client abandoned is not the backend's fault, even
        # after the app answered for it (Starlette's 500 for the disconnect): nobody
        # is there to read that answer.
        exchange.failure = None
        exchange.client_gone = True
        exchange.discard()
    _record(exchange, scope, time.perf_counter() - started, replaces)
    return exchange


def _record(exchange: Exchange, scope: Scope, seconds: float, replaces: Exchange | None) -> None:
    """The metrics of one backend call (every metric the request path writes)."""
    metrics = exchange.target.metrics
    if metrics is None:
        return
    failure = exchange.failure
    cut = exchange.cut
    if cut is not None:
        status = cut.status
    elif exchange.client_gone:
        status = CLIENT_CLOSED
    elif failure is not None and not exchange.own_answer:
        status = failure.status
    else:
        status = exchange.status
    metrics.observe(scope.get("method", "WEBSOCKET"), status, seconds)
    if failure is not None:
        metrics.errors[failure.kind].inc()
    if replaces is not None:
        metrics.count_fallback(replaces.target.name)


async def _finish(route: Route, scope: Scope, exchange: Exchange, request_id: str) -> None:
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


def _log_fallback(route: Route, exchange: Exchange, fallback: Target, request_id: str) -> None:
    failure = exchange.failure
    log.warning(
        "fallback: route=%s from=%s to=%s request_id=%s reason=%s",
        route.id,
        exchange.target.name,
        fallback.name,
        request_id,
        failure.kind if failure is not None else f"status {exchange.status}",
    )


def _describe(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame: enough to find it, no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
