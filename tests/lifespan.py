"""The ASGI lifespan protocol for the test backends that have nothing to start or stop.

Kept free of test-only imports: the gateway's worker processes import the apps that use it.
"""

from __future__ import annotations

from gateway.types import Receive, Send


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Completes each lifespan event as it comes; returns once shutdown is complete."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return
