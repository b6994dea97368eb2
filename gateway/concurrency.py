"""The bound on requests in flight in one worker (`--limit-concurrency`).

Past the bound a request gets a JSON 503 at once (a WebSocket is closed with
1013, try again later), so an overloaded worker sheds load instead of queueing
it without end. The health probes (`/-/healthz`, `/-/readyz`) are never refused:
a liveness probe refused under load would have a healthy pod restarted. That
is why the gateway counts, not uvicorn: its own `limit_concurrency` answers
every path alike, the probes included. `Gateway.__call__` keeps the count
itself: a wrapper's frame would be resumed at every suspension of every
request; this module answers the requests past the bound. HTTP/1.1 carries one request at a time
per connection, so this bounds the busy connections too; idle ones are bounded
in time by the keep-alive and head timeouts (`gateway.protocol`).
"""

from __future__ import annotations

from gateway.http import own_answer, send_json
from gateway.types import Scope, Send


async def refuse_overloaded(scope: Scope, send: Send) -> None:
    """The answer to a request past the bound (`Gateway.__call__` keeps the count)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013})
        return
    body = {
        "error": "the gateway has too many requests in flight; try again later",
        "kind": "overloaded",
    }
    await send_json(own_answer(scope, send), 503, body, [(b"retry-after", b"1")])
