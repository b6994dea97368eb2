"""Serving one request on one route: `plan`, then carry the plan out.

`plan(route, scope)` decides what serves the request, from the route and the
request alone (no I/O): the target (the primary, or the canary for this
request), the fallback that may replay it, the shadower that may copy it, the
rollback watch its answer counts towards. `serve()` carries the plan out: it
calls the target, replays on the fallback if the target failed before anything
reached the client, has the answer delivered (`gateway.answer`: the backend's,
or the gateway's JSON error with the request id), and hands the exchange to the
shadower.

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
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.answer import deliver, end_cut_short, log_fallback
from gateway.bodies import BodyGuard, BodyRecorder, Captured
from gateway.errors import BackendError, BackendFailure
from gateway.exchange import Exchange, Outcome
from gateway.http import BODY, survey
from gateway.routefile.model import IDEMPOTENT_METHODS
from gateway.table import Plan, Route
from gateway.types import Receive, Scope, Send

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


class Door(Protocol):
    """What `serve` keeps for the gateway's front door (`gateway.app.Gateway`)."""

    in_flight: int  # requests in flight in this worker (`--limit-concurrency`)
    draining: bool  # the worker is shutting down (`gateway.drain`)


async def serve(route: Route, scope: Scope, receive: Receive, send: Send, door: Door) -> None:
    """Serve a request (HTTP or WebSocket) on `route`, counted in flight at `door`.

    The front door hands the request over without a coroutine of its own (a frame
    less to resume at every suspension of the request): the count and the drain's
    cut are kept here."""
    door.in_flight += 1
    try:
        request_id = survey(scope)
        todo = route.fixed or plan(route, scope)
        client = None
        if scope[BODY] and scope["type"] == "http":
            limits = todo.target
            client = BodyGuard(receive, scope, limits.max_body, limits.body_timeout)
            receive = client.receive
        recorder = BodyRecorder(receive) if todo.keeps_body else None
        if recorder is not None:
            if todo.shadower is not None and client is not None:
                await recorder.preload()
            receive = recorder.receive
        capture = Captured() if todo.shadower is not None else None
        hold = todo.fallback is not None
        exchange = Exchange(todo.target, send, request_id, capture, client, hold)
        # The first call inline, not through `_attempt`: a coroutine frame less to
        # resume at every suspension of the request.
        started = _open(exchange)
        try:
            call = _call(exchange, scope, receive)
            if call is not None:
                await call
            if not exchange.status and exchange.cut is None:
                raise BackendError("the backend returned without a response")
        except BaseException as exc:
            if not _failed(exchange, exc):
                raise
        finally:
            _close(exchange)
        _settle(exchange, scope, started)
        # Policies first in these tests: a plain route's request skips the outcome.
        if todo.rollback is not None and exchange.outcome in (Outcome.ANSWERED, Outcome.FAILED):
            todo.rollback.record(exchange.outcome is Outcome.FAILED)
        fallback = todo.fallback
        if fallback is not None and exchange.outcome is Outcome.FAILED and not exchange.sent:
            replay = recorder.replay() if recorder is not None else None
            if replay is not None:
                log_fallback(route, exchange, fallback, request_id.decode())
                exchange.discard()
                replaced = exchange
                exchange = Exchange(fallback, send, request_id, guard=client)
                await _attempt(exchange, scope, replay, replaced)
        # Only a held answer, a failure, a cut or a client gone (which need a body, so a
        # guard) leave anything to deliver: the backend's answer went out as it came.
        if exchange.held is not None or exchange.failure is not None or client is not None:
            await deliver(route, scope, exchange, request_id.decode())
        # Compare only what the target itself answered (a 5xx included), not a failure,
        # a fallback's answer or an abandoned request.
        shadower = todo.shadower
        if shadower and capture and recorder and exchange.target is todo.target:
            answered = exchange.outcome in (Outcome.ANSWERED, Outcome.FAILED)
            if answered and exchange.failure is None:
                shadower.submit(scope, recorder.body(scope), capture)
    except asyncio.CancelledError:
        if not door.draining or scope["type"] != "http":
            raise
        await end_cut_short(send)
    finally:
        door.in_flight -= 1


async def _attempt(
    exchange: Exchange, scope: Scope, receive: Receive, replaces: Exchange | None
) -> None:
    """Call one backend (the fallback's replay): as `serve` calls the target."""
    started = _open(exchange)
    try:
        call = _call(exchange, scope, receive)
        if call is not None:
            await call
        if not exchange.status and exchange.cut is None:
            raise BackendError("the backend returned without a response")
    except BaseException as exc:
        if not _failed(exchange, exc):
            raise
    finally:
        _close(exchange)
    _settle(exchange, scope, started, replaces)


def _open(exchange: Exchange) -> float:
    """Start one backend call: count it in flight, start its clock. When it started."""
    target = exchange.target
    if exchange.guard is not None:
        exchange.guard.waiting = exchange.client_waited
    target.backend.active += 1
    if target.metrics is not None:
        target.metrics.began()
    if target.timeout is not None or target.read_timeout is not None:
        exchange.start()
    return time.perf_counter()


def _call(exchange: Exchange, scope: Scope, receive: Receive) -> Awaitable[None] | None:
    """The backend's work on this request; None where the backend never sees it."""
    if exchange.guard is not None and exchange.cut is not None:
        return None  # a declared Content-Length past the limit
    target = exchange.target
    if scope["type"] == "websocket" and not target.backend.supports_websocket:
        return exchange({"type": "websocket.close", "code": 1003})
    # The exchange's `__call__` bound: the app calls it as a function (see table.bound).
    return target.app(scope, receive, exchange.__call__)


def _failed(exchange: Exchange, exc: BaseException) -> bool:
    """Record what ended the call as the backend's failure. False when it is not the
    backend's: the request itself is being cancelled (server shutdown), or the process
    is exiting; the caller lets it end."""
    if isinstance(exc, BackendFailure):
        exchange.failure = exc
    elif isinstance(exc, asyncio.CancelledError):
        if exchange.end():
            exchange.failure = exchange.timed_out()  # the clock's own cancellation
        else:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return False
            # The app cancelled something of its own and let the error escape: its failure.
            exchange.failure = BackendError(_describe(exc))
    elif isinstance(exc, Exception):
        exchange.end()
        if exchange.expired:
            exchange.failure = exchange.timed_out()
        else:
            exchange.failure = BackendError(_describe(exc))
    else:
        return False
    return True


def _close(exchange: Exchange) -> None:
    exchange.end()  # a thread may still read the body or send: the clock is done with
    target = exchange.target
    target.backend.active -= 1
    if target.metrics is not None:
        target.metrics.ended()


def _settle(
    exchange: Exchange, scope: Scope, started: float, replaces: Exchange | None = None
) -> None:
    """What the call's end means (a cut body or a client gone is nobody's failure), and
    the call's metrics: every metric the request path writes."""
    client = exchange.guard
    cut = exchange.cut if client is not None else None
    if cut is not None:
        exchange.failure = None  # whatever the app made of the cut body
        exchange.discard()
    elif exchange.failure is not None and client and client.gone:
        # Failing to read a body its client abandoned is not the backend's fault, even
        # after the app answered for it (Starlette's 500 for the disconnect): nobody
        # is there to read that answer.
        exchange.failure = None
        exchange.client_gone = True
        exchange.discard()
    metrics = exchange.target.metrics
    if metrics is None:
        return
    failure = exchange.failure
    if cut is not None:
        status = cut.status
    elif exchange.client_gone:
        status = CLIENT_CLOSED
    elif failure is not None and not exchange.own_answer:
        status = failure.status
    else:
        status = exchange.status
    metrics.observe(scope.get("method", "WEBSOCKET"), status, time.perf_counter() - started)
    if failure is not None:
        metrics.errors[failure.kind].inc()
    if replaces is not None:
        metrics.count_fallback(replaces.target.name)


def _describe(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame: enough to find it, no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
