"""Keeping a request body so that it can be sent again (fallback replay, shadow copy).

Only requests that may need it are recorded, and only up to `BODY_CAP` bytes:
past that the body streams on as usual and the request simply cannot be
replayed or shadowed.
"""

from __future__ import annotations

from gateway.types import Message, Receive, Scope

BODY_CAP = 1024 * 1024


class BodyRecorder:
    __slots__ = ("_receive", "chunks", "complete", "overflow", "size")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.overflow = False

    async def receive(self) -> Message:
        message = await self._receive()
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
        return message

    def body(self, scope: Scope) -> bytes | None:
        """The whole body if it is known (read, or absent by its headers), else None."""
        if self.overflow:
            return None
        if self.complete:
            return b"".join(self.chunks)
        for name, value in scope["headers"]:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return None
        return b""

    def replay(self) -> Receive | None:
        """A `receive` that plays the body again (then reads on), or None if it cannot."""
        if self.overflow:
            return None
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
