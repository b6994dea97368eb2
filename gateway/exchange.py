"""One backend call's response on its way to the client, and the clock that bounds it.

`Exchange` is the `send` a backend answers through: it checks the answer's
protocol, adds the gateway's headers, holds a 5xx back where a fallback could
replace it (up to `HOLD_LIMIT` bytes), and records what reached the client. Its
`outcome` says how the call went.

It also keeps the backend's clock: `timeout` to the start of the answer, then
`read_timeout` between two messages of its body (an HTTP body: a WebSocket,
once accepted, may rightly stay quiet). It counts the backend's time only, for
every kind of backend alike: it stops while the backend waits for the client's
body and while the gateway hands the client a message, so a slow upload or a
slow reader is never taken for a slow backend. The clock is a deadline that
pausing and resuming merely set; the loop's `Watchdog` (`gateway.clock`)
watches the deadlines of every call in flight with one timer, and expiring
cancels the call's task, as `asyncio.timeout` would.

Most answers need none of that per message: with nothing to hold, capture or
cut, and no `read_timeout` (the clock stops at the answer's start), a message
is checked and handed to the server's `send` as it is, without a coroutine of
the gateway's own (`direct`).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable

from gateway import clock
from gateway.bodies import BodyGuard, Captured
from gateway.clock import Watchdog, watchdog
from gateway.errors import BackendFailure, BackendTimeout, BadResponse, RequestCut
from gateway.http import REQUEST_ID, start_problem
from gateway.table import Target
from gateway.types import Message, Send

HOLD_LIMIT = 64 * 1024
# The first message of an answer: an HTTP response, a WebSocket accepted, or a WebSocket
# handshake refused with an HTTP response (ASGI's websocket.http.response extension).
_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})


class Outcome(enum.Enum):
    ANSWERED = "answered"  # the backend's answer, below 500
    FAILED = "failed"  # a 5xx answer, or a failure the gateway answers for
    CLIENT_GONE = "client gone"  # the client left before its body was sent: nobody's fault
    CUT = "cut"  # the gateway cut the request body short (a limit): the client's doing


class Exchange:
    """One backend's response on its way to the client: its status, a held 5xx, the
    failure, whether the answer is complete, and whether anything reached the client."""

    __slots__ = (
        "cancelling",
        "capture",
        "client_gone",
        "complete",
        "direct",
        "dog",
        "due",
        "expired",
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
        "task",
        "timing",
    )

    def __init__(
        self,
        target: Target,
        send: Send,
        request_id: bytes,
        capture: Captured | None = None,
        guard: BodyGuard | None = None,
        hold: bool = False,
    ) -> None:
        self.target = target
        self.hold = hold  # hold a 5xx: a fallback may answer instead
        self.guard = guard
        self.send = send
        # The gateway's headers on every answer, the backend's or its own.
        self.extra = [*target.response_headers, (REQUEST_ID, request_id)]
        self.capture = capture
        # Messages go straight to `send` (see the module's docstring).
        self.direct = not hold and capture is None and guard is None
        if target.read_timeout is not None:
            self.direct = False
        self.status = 0  # 0 until the backend starts its response
        self.sent = False  # whether anything reached the client
        self.complete = False  # the backend sent its answer's last body part
        self.held: list[Message] | None = None
        self.held_bytes = 0
        self.failure: BackendFailure | None = None
        self.client_gone = False
        # The backend's clock (see the module's docstring). `limit` is the time the
        # backend has from when it is next left to work alone (None: no limit), `due`
        # when that time is up (None while paused or without a limit), `paused` counts
        # what waits on the client meanwhile.
        self.timing = False
        self.expired = False
        self.limit = target.timeout
        self.due: float | None = None
        self.paused = 0
        self.dog: Watchdog | None = None
        self.task: asyncio.Task[object] | None = None
        self.cancelling = 0

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

    def __call__(self, message: Message) -> Awaitable[None]:
        if not self.direct:
            return self._handle(message)
        kind = message["type"]
        if kind == "http.response.body":
            if not self.status:
                raise BadResponse("the backend sent a body before its response start")
            self.complete = not message.get("more_body", False)
        elif kind == "http.response.start":
            self._start(message)
            if self.timing:
                self._stop()  # the answer started in time, and its body is not timed
        else:
            return self._handle(message)
        self.sent = True
        return self.send(message)

    def _start(self, message: Message) -> None:
        """Check an `http.response.start` and add the gateway's headers to it."""
        if self.status:
            raise BadResponse("the backend started its response twice")
        if (problem := start_problem(message)) is not None:
            raise BadResponse(f"the backend's response start has {problem}")
        self.status = message["status"]
        message["headers"] = [*message.get("headers", ()), *self.extra]

    async def _handle(self, message: Message) -> None:
        """A message of a call that holds, captures, may be cut or times its body;
        or of a WebSocket."""
        timing = self.timing
        if timing:  # handing a message on is the client's time: the clock stops
            self.paused += 1
            self.due = None
        try:
            # Without a body there is no guard, and no property to call per message.
            if self.guard is not None and self.cut is not None:
                return  # the app's reaction to a body the gateway cut: the gateway answers
            kind = message["type"]
            if self.capture is not None:
                self.capture.add(message)
            if kind == "http.response.start":
                self._start(message)
                self._started(kind)
                if self.status >= 500 and self.hold:
                    self.held = [message]
                    return
            elif kind in _STARTS:  # a WebSocket accepted, or its handshake refused
                self._started(kind)
                self.status = message.get("status", 101)  # 101: websocket.accept
                message["headers"] = [*message.get("headers", ()), *self.extra]
            elif self.held is not None:
                if kind == "http.response.body":
                    self.complete = not message.get("more_body", False)
                self.held.append(message)
                self.held_bytes += len(message.get("body", b""))
                if self.held_bytes <= HOLD_LIMIT:
                    return
                await self.flush()
                return
            elif kind == "http.response.body":
                if not self.status:
                    raise BadResponse("the backend sent a body before its response start")
                self.complete = not message.get("more_body", False)
            elif kind == "websocket.http.response.body":
                self.complete = not message.get("more_body", False)
            elif kind == "websocket.close" and not self.status:
                self.status = 403  # closed before the handshake: the server answers 403
            self.sent = True
            await self.send(message)
        finally:
            if timing:
                self.client_waited(False)

    async def flush(self) -> None:
        held, self.held = self.held, None
        if held:
            self.sent = True
            for message in held:
                await self.send(message)

    def discard(self) -> None:
        """Drop the held answer: the gateway answers instead (its error, a fallback's)."""
        self.held = None

    def start(self) -> None:
        """Start the clock on the backend call, which runs in the current task."""
        loop = asyncio.get_running_loop()
        dog = clock.last
        if dog is None or dog.loop is not loop:
            dog = watchdog(loop)
        self.dog = dog
        self.task = task = asyncio.current_task(loop)
        if task is not None:
            self.cancelling = task.cancelling()
        self.timing = True
        if self.limit is not None:  # _run(), spelled out: every request starts a clock
            self.due = due = loop.time() + self.limit
            dog.watched.add(self)
            if due < dog.armed:
                dog.arm(due)

    def _run(self, due: float) -> None:
        """Let the clock run until `due`."""
        self.due = due
        dog = self.dog
        dog.watched.add(self)  # type: ignore[union-attr]
        if due < dog.armed:  # type: ignore[union-attr]
            dog.arm(due)  # type: ignore[union-attr]

    def expire(self) -> None:
        """The deadline passed (the watchdog says so): cancel the call."""
        self._stop()
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    def _started(self, kind: str) -> None:
        """The answer started in time: from now on the clock bounds the gaps in an
        HTTP body (`read_timeout`), and nothing of an accepted WebSocket."""
        self.limit = None if kind == "websocket.accept" else self.target.read_timeout
        if self.limit is None and self.timing:
            self._stop()  # nothing left to time: the rest goes straight through

    def client_waited(self, waiting: bool) -> None:
        """Something waits on the client (True): the backend for its body, or the
        gateway handing the client a message; or it no longer does (False). The clock
        stops while anything waits, and then starts afresh with the current limit: the
        time to the first byte counts from the last request byte the backend read
        (`--body-timeout` bounds the client's share)."""
        if not self.timing:
            return
        if waiting:
            self.paused += 1
            self.due = None
            return
        self.paused -= 1
        if not self.paused and self.limit is not None:
            self._run(self.dog.loop.time() + self.limit)  # type: ignore[union-attr]

    def _stop(self) -> None:
        self.timing = False
        self.due = None
        self.dog.watched.discard(self)  # type: ignore[union-attr]

    def end(self) -> bool:
        """The call is over: stop the clock. If it ran out, withdraw the cancellation it
        sent the task (once), and say whether that was the task's only one: if it was,
        a `CancelledError` was the clock's doing; if not, the task is being cancelled
        besides (server shutdown), as `asyncio.timeout` tells them apart."""
        if self.timing:
            self._stop()
        task = self.task
        if task is None or not self.expired:
            return False
        self.task = None
        return task.uncancel() <= self.cancelling

    def timed_out(self) -> BackendTimeout:
        """The failure of a call whose clock ran out."""
        if self.status:
            return BackendTimeout(f"no response body bytes for {self.target.read_timeout:g}s")
        return BackendTimeout(f"no response within {self.target.timeout:g}s")
