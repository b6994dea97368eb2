"""One request's call of a WSGI app: the app runs on a pool thread, its answer
reaches the event loop as ASGI messages.

The thread (`WSGICall.run`) calls the app and iterates what it returns; the
loop (`WSGICall.relay`) sends each message on. Between them is a list under a
lock, and the loop is woken only when it waits for messages: a thread that
produces several messages while the loop is busy or not yet awake hands them
all over with one wake-up, and never waits for the loop to take a message
(except past `QUEUE` of them, the bound on what a thread may run ahead of a
slow client). A response of a few chunks costs one wake-up of the loop, not one
round trip per message.

As PEP 3333 asks of a server (and gunicorn does), the response start goes out
with the first non-empty body chunk (or at the end of an empty body), so an app
may still replace it by calling `start_response` again with `exc_info`, and an
app that fails before its first byte gets the gateway's answer, not a half one.

When the loop stops waiting (a timeout cancels it), the call is abandoned: what
the app still sends is dropped on its thread, which never blocks for a reader
that is gone, and the pool's thread is given back (`release`) when the app has
returned, whichever side sees that last.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from gateway.types import Message, Send

QUEUE = 10  # messages a thread may hand over before it waits for the loop to take them


class WSGICall:
    """One call of `app` with `environ`. `release` gives the pool's thread back, in
    the loop, once the app has returned on it."""

    __slots__ = (
        "_abandoned",
        "_lock",
        "_messages",
        "_returned",
        "_room",
        "_start",
        "_started",
        "_waiter",
        "app",
        "environ",
        "error",
        "loop",
        "release",
    )

    def __init__(
        self,
        app: Callable[..., Any],
        environ: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        release: Callable[[], None],
    ) -> None:
        self.app = app
        self.environ = environ
        self.loop = loop
        self.release = release
        self.error: BaseException | None = None  # what the app raised
        # Shared by both sides, under `_lock`:
        self._lock = threading.Lock()
        self._messages: list[Message] = []  # handed over, not yet taken by the loop
        self._waiter: asyncio.Future[None] | None = None  # set while the loop waits
        self._room: threading.Lock | None = None  # held while the thread waits for room
        self._returned = False  # the app returned: `_messages` holds its last ones
        self._abandoned = False  # the loop stopped waiting
        # The thread's own:
        self._start: Message | None = None  # the response start, until it goes out
        self._started = False  # the response start went out

    # --- the loop's side ---------------------------------------------------------

    async def relay(self, send: Send) -> None:
        """Send the app's messages on until it returns; then give its thread back and
        raise what it raised. Cancelled (a timeout): abandon the call."""
        lock = self._lock
        try:
            while True:
                waiter = None
                with lock:
                    messages = self._messages
                    returned = self._returned
                    room, self._room = self._room, None
                    if messages:
                        self._messages = []
                    elif not returned:
                        waiter = self._waiter = self.loop.create_future()
                if room is not None:
                    room.release()
                for message in messages:
                    await send(message)
                if returned:
                    break
                if waiter is not None:
                    await waiter
        except BaseException:
            self._abandon()
            raise
        self.release()
        if self.error is not None:
            raise self.error

    def _abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            returned = self._returned
            room, self._room = self._room, None
        if room is not None:
            room.release()  # a thread that waits for room goes on, dropping what it sends
        if returned:
            self.release()  # else the thread gives itself back when the app returns

    # --- the thread's side -------------------------------------------------------

    def run(self) -> None:
        """Call the app and hand its answer over (on a pool thread)."""
        try:
            iterable = self.app(self.environ, self.start_response)
            try:
                for chunk in iterable:
                    if chunk:
                        self._body(chunk)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            self.error = exc
            self._end(False)
        else:
            self._end(True)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._started:  # too late to replace what the client has: fail
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback
        elif self._start is not None:
            raise RuntimeError("start_response called again without exc_info")
        self._start = {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [
                (name.strip().encode("latin-1").lower(), value.strip().encode("latin-1"))
                for name, value in headers
            ],
        }
        return self._write

    def _write(self, data: bytes) -> None:
        if data:
            self._body(data)

    def _body(self, chunk: bytes) -> None:
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        if self._started:
            self._put((message,))
        else:
            self._started = True
            start = self._start
            self._put((message,) if start is None else (start, message))

    def _end(self, answered: bool) -> None:
        """The app returned (`answered`: without raising): the end of its body, with
        the response start if it never went out, and the thread back to the pool."""
        start = None
        if answered and not self._started:
            self._started = True
            start = self._start
        with self._lock:
            abandoned = self._abandoned
            if not abandoned:
                messages = self._messages
                if answered:
                    if messages and start is None:
                        # The last chunk has not gone out yet: it ends the body, one
                        # message less to send (the client gets the same bytes).
                        messages[-1]["more_body"] = False
                    else:
                        if start is not None:
                            messages.append(start)
                        messages.append({"type": "http.response.body", "body": b""})
                self._returned = True
                waiter, self._waiter = self._waiter, None
        if abandoned:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to give back
                self.loop.call_soon_threadsafe(self.release)
        elif waiter is not None:
            self._wake(waiter)

    def _put(self, messages: tuple[Message, ...]) -> None:
        with self._lock:
            if self._abandoned:
                return  # nobody reads them
            self._messages.extend(messages)
            waiter, self._waiter = self._waiter, None
            room = None
            if len(self._messages) >= QUEUE:
                room = self._room = threading.Lock()
                room.acquire()
        if waiter is not None:
            self._wake(waiter)
        if room is not None:
            room.acquire()  # until the loop takes the messages, or abandons the call

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            self.loop.call_soon_threadsafe(_set, waiter)


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # not cancelled meanwhile
        waiter.set_result(None)
