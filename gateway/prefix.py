"""A route's `strip_prefix` at run time: the route's backends mounted under the prefix.

A mounted backend is told where it is mounted the way ASGI says it and uvicorn's
`--root-path` gives it: `root_path` ends with the prefix, and `path` and `raw_path`
are the whole path the client asked for. Each kind of backend speaks that in its own
protocol: an ASGI app reads the scope as it is (Starlette routes on the path after
`root_path`, and builds URLs with it); a WSGI app gets the prefix as `SCRIPT_NAME`
and the rest as `PATH_INFO` (`gateway.wsgi`); a url backend gets the rest, after its
own base path, and the prefix in `X-Forwarded-Prefix` (`gateway.upstream`).

The route was chosen on the canonical path (`gateway.paths`), which begins with the
prefix. Where the path the client sent is spelled otherwise (`/api//v2/books`,
`/api/v2/../v2/books`, `/api/%76%32/books`), a mounted backend gets the canonical
path: the split is made where the route made it, and no spelling of the rest can
climb out of the mount (above a url backend's base path, say).
"""

from __future__ import annotations

from collections.abc import Awaitable
from urllib.parse import quote

from gateway.paths import canonical
from gateway.types import ASGIApp, Receive, Scope, Send

# What a path segment may carry unencoded (RFC 3986 pchar), the slashes between them.
_PATH_SAFE = "/:@!$&'()*+,;="


def mounted(scope: Scope, prefix: str) -> Scope:
    """The scope a backend mounted under `prefix` gets for the request `scope`."""
    root = scope.get("root_path", "") + prefix
    sent: str = scope["path"]
    path = canonical(sent)
    raw: bytes | None = scope.get("raw_path")
    if raw is not None and (path != sent or not _under(raw, root.encode())):
        raw = quote(path, safe=_PATH_SAFE).encode("ascii")
    return {**scope, "root_path": root, "path": path, "raw_path": raw}


def _under(raw: bytes, root: bytes) -> bool:
    return raw.startswith(root) and raw[len(root) : len(root) + 1] in (b"", b"/")


class Mounted:
    """A backend (any ASGI app) as a route with `strip_prefix` calls it."""

    __slots__ = ("app", "prefix")

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The backend's own awaitable, not one of ours around it: no frame of this
        # wrapper to resume at every suspension of the request.
        return self.app(mounted(scope, self.prefix), receive, send)


def mount(app: ASGIApp, prefix: str | None) -> ASGIApp:
    """`app` mounted under `prefix`, or `app` itself when there is none."""
    return app if prefix is None else Mounted(app, prefix)
