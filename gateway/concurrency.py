"""The bound on requests in flight in one worker (`--limit-concurrency`).

Past the bound a request gets a JSON 503 at once (a WebSocket is closed with
1013, try again later), so an overloaded worker sheds load instead of queueing
it without end. The health probes (`/-/healthz`, `/-/readyz`) are never refused:
a liveness probe refused under load would have a healthy pod restarted. That
is why the gateway counts, not uvicorn: its own `limit_concurrency` answers
every path alike, the probes included. HTTP/1.1 carries one request at a time
per connection, so this bounds the busy connections too; idle ones are bounded
in time by the keep-alive and head timeouts (`gateway.protocol`).
"""

from __future__ import annotations

from gateway.http import own_answer, send_json
from gateway.types import ASGIApp, Receive, Scope, Send


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[str]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt  # paths never refused
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit and scope["path"] not in self.exempt:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013})
                return
            body = {
                "error": "the gateway has too many requests in flight; try again later",
                "kind": "overloaded",
            }
            await send_json(own_answer(scope, send), 503, body, [(b"retry-after", b"1")])
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
