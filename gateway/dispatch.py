"""Serving one request on one route: `plan`, then carry the plan out.

`plan(route, scope)` decides what serves the request, from the route and the
request alone (no I/O): the target (the primary, or the canary for this
request), the fallback that may replay it, the shadower that may copy it, the
rollback watch its answer counts towards. `serve()` carries the plan out: it
calls the target, replays on the fallback if the target failed before anything
reached the client, delivers the answer (or the gateway's JSON error, with the
request id), and hands the exchange to the shadower.

Each backend call runs on a clock (`_Exchange.deadline`): `timeout` to the start
of the answer, then `read_timeout` between two messages of its body (an HTTP
body: a WebSocket, once accepted, may rightly stay quiet). It counts the
backend's time only, for every kind of backend alike: it stops while the
backend waits for the client's body and while the gateway hands the client a
message, so a slow upload or a slow reader is never taken for a slow backend.

An app's own answer, any status, reaches the client unchanged, even when the
app raises after it (Starlette's error middleware sends its plain-text 500 and
*then* re-raises): the failure is still logged, counted as a backend error and
counted against the rollback watch. The gateway answers with its own JSON only
when the app gave no complete answer (it raised before or while answering, timed
out, could not be reached, broke the protocol) or when the gateway cut the
request short itself (a limit). Where a fallback could replay the request, a 5xx
answer is held back (up to `HOLD_LIMIT` bytes) until the backend returns, so that
the fallback's answer can replace it; elsewhere nothing is held.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import traceback
from collections.abc import Callable

from gateway.bodies import BodyGuard, BodyRecorder, Captured
from gateway.errors import BackendError, BackendFailure, BackendTimeout, BadResponse, RequestCut
from gateway.http import REQUEST_ID, has_body, send_json, start_problem, with_request_id
from gateway.routefile.model import IDEMPOTENT_METHODS
from gateway.table import Plan, Route, Target
from gateway.types import Message, Receive, Scope, Send

log = logging.getLogger("gateway.dispatch")

HOLD_LIMIT = 64 * 1024
# The first message of an answer: an HTTP response, a WebSocket accepted, or a WebSocket
# handshake refused with an HTTP response (ASGI's websocket.http.response extension).
_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})
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


class Outcome(enum.Enum):
    ANSWERED = "answered"  # the backend's answer, below 500
    FAILED = "failed"  # a 5xx answer, or a failure the gateway answers for
    CLIENT_GONE = "client gone"  # the client left before its body was sent: nobody's fault
    CUT = "cut"  # the gateway cut the request body short (a limit): the client's doing


class _Exchange:
    """One backend's response on its way to the client: its status, a held 5xx, the
    failure, whether the answer is complete, and whether anything reached the client."""

    __slots__ = (
        "capture",
        "client_gone",
        "complete",
        "deadline",
        "extra",
        "failure",
        "guard",
        "held",
        "held_bytes",
        "hold",
        "limit",
        "paused",
        "send",
        "sent",
        "status",
        "target",
    )

    def __init__(
        self,
        target: Target,
        send: Send,
        request_id: str,
        capture: Captured | None = None,
        guard: BodyGuard | None = None,
        hold: bool = False,
    ) -> None:
        self.target = target
        self.hold = hold  # hold a 5xx: a fallback may answer instead
        self.guard = guard
        self.send = send
        # The gateway's headers on every answer, the backend's or its own.
        self.extra = [*target.response_headers, (REQUEST_ID, request_id.encode())]
        self.capture = capture
        self.status = 0  # 0 until the backend starts its response
        self.sent = False  # whether anything reached the client
        self.complete = False  # the backend sent its answer's last body part
        self.held: list[Message] | None = None
        self.held_bytes = 0
        self.failure: BackendFailure | None = None
        self.client_gone = False
        # The backend's clock, while there is something to time; `limit` is the time
        # the backend has from when it is next left to work alone (None: no limit), and
        # `paused` counts what waits on the client meanwhile.
        self.deadline: asyncio.Timeout | None = None
        self.limit = target.timeout
        self.paused = 0

    @property
    def cut(self) -> RequestCut | None:
        """The limit that cut the request short, while the gateway can still say so."""
        if self.guard is None or self.sent:
            return None
        return self.guard.cut

    @property
    def own_answer(self) -> bool:
        """Whether the client gets the backend's answer (whole, or as far as it went)
        rather than the gateway's."""
        return self.sent or self.complete

    @property
    def outcome(self) -> Outcome:
        if self.cut is not None:
            return Outcome.CUT
        if self.client_gone:
            return Outcome.CLIENT_GONE
        if self.failure is not None or self.status >= 500:
            return Outcome.FAILED
        return Outcome.ANSWERED

    async def __call__(self, message: Message) -> None:
        if self.deadline is None:
            await self._take(message)
            return
        self.client_waited(True)  # handing a message on is the client's time
        try:
            await self._take(message)
        finally:
            self.client_waited(False)

    async def _take(self, message: Message) -> None:
        # Without a body there is no guard, and no property to call per message.
        if self.guard is not None and self.cut is not None:
            return  # the app's reaction to a body the gateway cut: the gateway answers
        kind = message["type"]
        if self.capture is not None:
            self.capture.add(message)
        if kind == "http.response.start":
            if self.status:
                raise BadResponse("the backend started its response twice")
            if (problem := start_problem(message)) is not None:
                raise BadResponse(f"the backend's response start has {problem}")
        elif kind == "http.response.body":
            if not self.status:
                raise BadResponse("the backend sent a body before its response start")
            self.complete = not message.get("more_body", False)
        elif kind == "websocket.http.response.body":
            self.complete = not message.get("more_body", False)
        if kind in _STARTS:
            self._started(kind)
            self.status = message.get("status", 101)  # 101: websocket.accept
            message["headers"] = [*message.get("headers", ()), *self.extra]
            if self.status >= 500 and self.hold:
                self.held = [message]
                return
        elif self.held is not None:
            self.held.append(message)
            self.held_bytes += len(message.get("body", b""))
            if self.held_bytes <= HOLD_LIMIT:
                return
            await self.flush()
            return
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

    def _started(self, kind: str) -> None:
        """The answer started in time: from now on the clock bounds the gaps in an
        HTTP body (`read_timeout`), and nothing of an accepted WebSocket."""
        self.limit = None if kind == "websocket.accept" else self.target.read_timeout
        if self.limit is None and self.deadline is not None:
            self.deadline.reschedule(None)
            self.deadline = None  # nothing left to time: the rest goes straight through

    def client_waited(self, waiting: bool) -> None:
        """Something waits on the client (True): the backend for its body, or the
        gateway handing the client a message; or it no longer does (False). The clock
        stops while anything waits, and then starts afresh with the current limit: the
        time to the first byte counts from the last request byte the backend read
        (`--body-timeout` bounds the client's share)."""
        deadline = self.deadline
        if deadline is None or deadline.expired():
            return
        self.paused += 1 if waiting else -1
        if waiting:
            deadline.reschedule(None)
        elif not self.paused and self.limit is not None:
            deadline.reschedule(asyncio.get_running_loop().time() + self.limit)

    def discard(self) -> None:
        """Drop the held answer: the gateway answers instead (its error, a fallback's)."""
        self.held = None


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
    replaces: _Exchange | None = None,
) -> _Exchange:
    """Call one backend. With `hold`, a 5xx answer stays held: the caller decides
    whether it reaches the client (or a fallback's instead)."""
    exchange = _Exchange(target, send, request_id, capture, client, hold)
    if client is not None:
        client.waiting = exchange.client_waited
    deadline: asyncio.Timeout | None = None
    backend = target.backend
    started = time.perf_counter()
    backend.active += 1
    if target.metrics is not None:
        target.metrics.add_in_flight(1)
    try:
        if exchange.cut is not None:
            pass  # a declared Content-Length past the limit: the backend never sees it
        elif scope["type"] == "websocket" and not backend.supports_websocket:
            await exchange({"type": "websocket.close", "code": 1003})
        elif target.timeout is None and target.read_timeout is None:
            await target.app(scope, receive, exchange)
        else:
            async with asyncio.timeout(target.timeout) as deadline:
                exchange.deadline = deadline
                await target.app(scope, receive, exchange)
        if not exchange.status and exchange.cut is None:
            raise BackendError("the backend returned without a response")
    except BackendFailure as exc:
        exchange.failure = exc
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this request is being cancelled (server shutdown): let it end
        # The app cancelled something of its own and let the error escape: its failure.
        exchange.failure = BackendError(_describe(exc))
    except Exception as exc:
        if deadline is not None and deadline.expired():
            exchange.failure = BackendTimeout(
                f"no response body bytes for {target.read_timeout:g}s"
                if exchange.status
                else f"no response within {target.timeout:g}s"
            )
        else:
            exchange.failure = BackendError(_describe(exc))
    finally:
        exchange.deadline = None  # done with: a thread may still read the body or send
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


def _record(exchange: _Exchange, scope: Scope, seconds: float, replaces: _Exchange | None) -> None:
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


async def _finish(route: Route, scope: Scope, exchange: _Exchange, request_id: str) -> None:
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


def _log_fallback(route: Route, exchange: _Exchange, fallback: Target, request_id: str) -> None:
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
