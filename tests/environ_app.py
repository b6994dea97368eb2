"""A WSGI app that answers with its whole environ as JSON, for comparing what gunicorn
and the gateway give an app (tests/test_fidelity_environ.py).

Strings are given as they are; other values by their type, except the few whose value
is the point (the version tuple, the flags). The request body is read the way a
framework reads it (to the end when the length is unknown and the server says the
input is terminated) and given as its length and digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    seen: dict[str, object] = {}
    for key, value in environ.items():
        if isinstance(value, str | bool | int | tuple) or value is None:
            seen[key] = list(value) if isinstance(value, tuple) else value
        else:
            seen[key] = f"<{type(value).__module__}.{type(value).__qualname__}>"
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    seen["body"] = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    out = json.dumps(seen, sort_keys=True).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]
