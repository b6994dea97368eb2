"""Request bodies on their way to a backend: their limits (`BodyGuard`), and keeping
them where a feature needs the bytes: a request's, to send it again (fallback
replay, shadow copy), and a response's, to compare it (shadow).

Only exchanges that may need it are recorded, and only up to `BODY_CAP` bytes:
past that the body streams on as usual and the request simply cannot be
replayed or shadowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import BodyTimeout, BodyTooLarge, RequestCut
from gateway.http import content_length, has_body
from gateway.types import Headers, Message, Receive, Scope

BODY_CAP = 1024 * 1024


class BodyGuard:
    """The backend's `receive` for a request with a body, and the body's limits.

    It cuts the body short (`cut`) when it grows past `max_body` bytes (at once
    when the client declares a larger Content-Length) or when no bytes come for
    `body_timeout` seconds: the backend then reads `http.disconnect`, the end of
    its body, and the client gets the gateway's answer. It also notes a client
    that went away before the body was complete, so that the backend's failure
    to read it is not taken for the backend's fault. It calls `waiting(True)`
    while the backend waits for the client, `waiting(False)` when it has its
    bytes: the backend's time to first byte does not count the client's time.
    """

    __slots__ = (
        "_receive",
        "body_timeout",
        "complete",
        "cut",
        "gone",
        "max_body",
        "size",
        "waiting",
    )

    def __init__(
        self, receive: Receive, scope: Scope, max_body: int | None, body_timeout: float | None
    ) -> None:
        self._receive = receive
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.size = 0
        self.complete = False
        self.gone = False  # left before the body was complete (not after: that is no excuse)
        self.cut: RequestCut | None = None
        self.waiting: Callable[[bool], None] = _ignore
        declared = content_length(scope)
        if max_body is not None and declared is not None and declared > max_body:
            self.cut = BodyTooLarge(f"Content-Length {declared} > {max_body}")

    async def receive(self) -> Message:
        if self.cut is not None:
            return {"type": "http.disconnect"}
        if self.complete:
            # After the body only a disconnect can come: no limit, and the backend's
            # time to first byte runs on (an app may listen for it while it works).
            return await self._receive()
        message = await self._body_part()
        if self.cut is not None:
            return message  # timed out: the end of the body for the backend
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.max_body is not None and self.size > self.max_body:
                self.cut = BodyTooLarge(f"body past {self.max_body} bytes")
                return {"type": "http.disconnect"}
            self.complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.gone = True
        return message

    async def _body_part(self) -> Message:
        self.waiting(True)
        try:
            if self.body_timeout is None:
                return await self._receive()
            async with asyncio.timeout(self.body_timeout):
                return await self._receive()
        except TimeoutError:
            self.cut = BodyTimeout(f"no body bytes for {self.body_timeout:g}s")
            return {"type": "http.disconnect"}
        finally:
            self.waiting(False)


def _ignore(waiting: bool) -> None:
    return None


class BodyRecorder:
    __slots__ = ("_receive", "_unread", "chunks", "complete", "overflow", "size")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._unread: list[Message] = []  # preloaded, not yet given to the backend
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.overflow = False

    async def receive(self) -> Message:
        """The backend's `receive`: what was preloaded first, then the client's stream."""
        if self._unread:
            return self._unread.pop(0)
        message = await self._receive()
        self._record(message)
        return message

    async def preload(self) -> None:
        """Read the body now, up to the cap, so it is known even if the backend never reads it.

        A shadow copy needs the whole body, but a backend may answer without reading
        it, and once the response is complete the server reports a disconnect instead.
        """
        while not self.complete and not self.overflow:
            message = await self._receive()
            self._record(message)
            self._unread.append(message)
            if message["type"] != "http.request":
                return

    def _record(self, message: Message) -> None:
        if message["type"] == "http.request":
            if not self.overflow:
                chunk = message.get("body", b"")
                self.size += len(chunk)
                if self.size > BODY_CAP:
                    self.overflow = True
                    self.chunks.clear()
                elif chunk:
                    self.chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True

    def body(self, scope: Scope) -> bytes | None:
        """The whole body if it is known (read, or absent by its headers), else None."""
        if self.overflow:
            return None
        if self.complete:
            return b"".join(self.chunks)
        return None if has_body(scope) else b""

    def replay(self) -> Receive | None:
        """A `receive` that plays the body again (then reads on), or None if it cannot."""
        if self.overflow:
            return None
        self._unread.clear()  # every preloaded chunk is in self.chunks too
        pending = list(self.chunks)
        started = False

        async def receive() -> Message:
            nonlocal started
            if pending or (self.complete and not started):
                started = True
                chunk = pending.pop(0) if pending else b""
                more = bool(pending) or not self.complete
                return {"type": "http.request", "body": chunk, "more_body": more}
            started = True
            return await self.receive()  # the rest of the body, or the disconnect

        return receive


@dataclass(slots=True)
class Captured:
    """A response as a backend gave it (body capped)."""

    status: int = 0
    headers: Headers = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    overflow: bool = False

    @property
    def media_type(self) -> str:
        for name, value in self.headers:
            if name == b"content-type":
                return value.decode("latin-1").split(";")[0].strip().lower()
        return ""

    def add(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body" and not self.overflow:
            self.body += message.get("body", b"")
            if len(self.body) > BODY_CAP:
                self.overflow = True
                self.body.clear()
