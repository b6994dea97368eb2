"""The demo apps with faults on request, for tests that need 5xx answers and slow ones.

A gateway under test loads these as its backends (``tests.fault_apps:legacy`` and
``tests.fault_apps:new``). Each serves exactly what the real app serves, unless the
request carries ``X-Fault``:

- ``X-Fault: error``: the legacy app answers 500 itself (as Flask does for an
  unhandled error); the new app raises, so the gateway answers for it.
- ``X-Fault: slow``: the answer comes after ``SLOW_SECONDS``.

Kept free of test-only imports: the gateway's worker processes import it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from legacy_flask.app import app as legacy_app
from new_fastapi.app import app as new_app

SLOW_SECONDS = 0.3
FAULT_HEADER = "X-Fault"
_ASGI_FAULT_HEADER = FAULT_HEADER.lower().encode()
_WSGI_FAULT_KEY = "HTTP_" + FAULT_HEADER.upper().replace("-", "_")


class InjectedFault(RuntimeError):
    """Raised by the new app on ``X-Fault: error``."""


def legacy(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    fault = environ.get(_WSGI_FAULT_KEY)
    if fault == "error":
        body = b"Internal Server Error (injected)"
        start_response(
            "500 INTERNAL SERVER ERROR",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if fault == "slow":
        time.sleep(SLOW_SECONDS)
    result: Iterable[bytes] = legacy_app(environ, start_response)
    return result


async def new(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        fault = dict(scope["headers"]).get(_ASGI_FAULT_HEADER)
        if fault == b"error":
            raise InjectedFault("injected by the X-Fault header")
        if fault == b"slow":
            await asyncio.sleep(SLOW_SECONDS)
    await new_app(scope, receive, send)
