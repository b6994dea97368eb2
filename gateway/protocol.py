"""The HTTP/1.1 connection under `gateway serve`: uvicorn's httptools protocol, with
the limits on request heads that neither uvicorn nor httptools has.

- A request line and header block past `--max-head` bytes gets 431 and the
  connection closes. httptools has no limit: a client sending headers without
  end grew the process without bound (20 such clients: 74 MB to 511 MB).
- A connection that has sent part of a request head and then nothing for
  `--head-timeout` seconds gets 408 and closes. uvicorn's keep-alive timer stops
  at the first byte, so such a connection stayed open forever.
- A connection that sends nothing is closed silently after the keep-alive
  timeout, from its first moment (uvicorn arms that timer after a response only).

The head timer costs a request nothing in the common case: each connection has
at most one timer, armed when a head begins and none is armed; when it fires it
looks at when the current head began (`_head_since`) and either refuses it or
is armed again for the time that head has left. A keep-alive connection's
requests so reuse one timer instead of arming and cancelling one each.

A complete head is measured exactly when its last header is parsed. One still
arriving is counted read by read, from the read it starts in (a head that
begins after a pipelined body in the same read counts from the next read), so
the bytes a connection can make the process hold stay within one read of the
limit, however the head is cut into reads.

Settings reach this class as they reach the app: through the `GATEWAY_*`
environment of the worker process (uvicorn builds one protocol per connection
from an import path). It subclasses uvicorn's `HttpToolsProtocol`, an internal:
pyproject.toml bounds uvicorn's version so that a release that changes it fails
the install, not production.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import Settings

log = logging.getLogger("gateway.protocol")


@functools.cache
def _limits() -> tuple[int, float]:
    settings = Settings.load()
    return settings.max_head, settings.head_timeout


class _Refused:
    """The cycle a refused connection is left with: its answer is complete, so uvicorn
    ignores whatever the parser still calls back with (a pipelined request, a body in
    the same read)."""

    response_complete = True
    more_body = False


class GatewayProtocol(HttpToolsProtocol):
    # The parser's callbacks are overridden only where the limits need them (the head's
    # start and end): each override is a Python call more per request. The base's
    # methods are called by name, not through super(), for the same reason.

    # The limits' own state in slots, not in the instance dict: uvicorn's protocol keeps
    # 28 attributes there, and CPython 3.11 shares the keys of at most 30 per class.
    # Past that, every instance gets a dict of its own, and each attribute uvicorn reads
    # or writes per request takes the interpreter's slow path.
    __slots__ = (
        "_head_bytes",
        "_head_since",
        "_head_timer",
        "_in_head",
        "_refused",
        "head_timeout",
        "max_head",
    )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        self.max_head, self.head_timeout = _limits()
        self._in_head = False  # between the first byte of a request and its last header
        self._head_bytes = 0
        self._head_since = 0.0  # when the head being read began (loop time)
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered by the gateway: parse nothing more
        # Silently closed if it never sends a byte, as it would be after a response.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        # Whether this read starts within a head: one is being read, or the last
        # request's body is complete (or its answer, which ends it), so the next byte
        # starts one.
        cycle = self.cycle
        counted = self._in_head or cycle is None or not cycle.more_body or cycle.response_complete
        HttpToolsProtocol.data_received(self, data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data) if counted else 0
            if self._head_bytes > self.max_head:
                self._refuse(431, "header_too_large", "the request head is too large")

    def on_message_begin(self) -> None:
        if self._refused:
            return
        HttpToolsProtocol.on_message_begin(self)
        self._in_head = True
        self._head_bytes = 0
        self._head_since = now = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(now + self.head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False  # the timer, if armed, finds no head in progress
        headers = self.headers
        # name + ": " + value + CRLF, counted in C rather than a generator per request.
        head = len(self.url) + sum(map(len, itertools.chain.from_iterable(headers)))
        head += 4 * len(headers)
        if head > self.max_head:
            self._refuse(431, "header_too_large", "the request head is too large")
            return
        HttpToolsProtocol.on_headers_complete(self)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # between requests: armed again when the next head begins
        due = self._head_since + self.head_timeout
        if self.loop.time() < due:  # a later head than the one it was armed for
            self._head_timer = self.loop.call_at(due, self._head_timed_out)
            return
        self._refuse(408, "head_timeout", "the request head stopped arriving")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, kind: str, reason: str) -> None:
        """Answer the gateway's JSON error and close: the head was never read to its end,
        so nothing more on this connection can be parsed."""
        self._stop_head_timer()
        self._in_head = False
        self._refused = True
        previous = self.cycle
        if previous is not None and not previous.response_complete:
            previous.disconnected = True  # as connection_lost tells a request in flight
            previous.message_event.set()
        self.cycle = _Refused()  # type: ignore[assignment]
        body = json.dumps({"error": reason, "kind": kind}, separators=(",", ":")).encode()
        phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body)
        )
        self.transport.close()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.info("request head refused: status=%d kind=%s client=%s", status, kind, client)
