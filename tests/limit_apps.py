"""Backends for the limit tests: a WSGI app that reads every body it gets, or hangs.

Kept free of test-only imports: the gateway's worker processes import it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from tests.lifespan import serve_lifespan

HANG_SECONDS = 2.0  # long enough to outlast a test's short timeout, short enough to end
seen: list[int] = []  # the size of every body the app read, in this process


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """`/hang` answers after HANG_SECONDS; anything else echoes how much body it read,
    and on which thread (each WSGI backend has a pool of its own)."""
    if environ["PATH_INFO"] in ("/hang", "/hang-chunks"):
        time.sleep(HANG_SECONDS)
    if environ["PATH_INFO"] == "/hang-chunks":  # more chunks than a2wsgi queues
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"] * 50
    body = environ["wsgi.input"].read()
    seen.append(len(body))
    payload = json.dumps(
        {"read": len(body), "thread": threading.current_thread().name, "ok": True}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


other = wsgi  # the same app under a second import path: a second backend


async def listening(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI handler that reads its body, then hangs listening for the disconnect."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    await receive()
