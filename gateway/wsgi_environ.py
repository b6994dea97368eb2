"""The WSGI environ of a request, made from its ASGI scope.

The keys and values a2wsgi's `build_environ` gives (PEP 3333's, as gunicorn
fills them, plus a2wsgi's `asgi.scope`, less the gateway's own scope keys), with
`wsgi.input_terminated` as gunicorn sets it: `wsgi.input` ends where the body
does, so an app may read a body of unknown length (a chunked upload; Werkzeug
reads none without it).

Made here rather than by a2wsgi, for two reasons. A route's prefix
(`gateway.prefix`, the scope's `root_path`) is the app's mount point:
`SCRIPT_NAME`, and the rest of the path `PATH_INFO`, as a WSGI server mounting
an app there says (a2wsgi's releases differ on whether `path` includes the root
path, and it lets a `SCRIPT_NAME` in the process's environment override the
mount). And it runs on every request: a header's environ key is computed once
per header name, and the process's `SCRIPT_NAME` once per backend, where a2wsgi
reads `os.environ` (a failed lookup, two exceptions) on each request.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gateway.http import NameMemo, app_scope
from gateway.types import Scope

# A header name's environ key. Names a client makes up are not kept past the bound.
_KEYS = NameMemo(lambda name: "HTTP_" + name.decode("latin-1").upper().replace("-", "_"))
_KEYS.update({b"content-length": "CONTENT_LENGTH", b"content-type": "CONTENT_TYPE"})


def process_script_name() -> str:
    """`SCRIPT_NAME` from the process's environment (an app mounted under a prefix by
    whoever started the server, as gunicorn reads it), in WSGI's text."""
    return (
        os.environ.get("SCRIPT_NAME", "")
        .encode(sys.getfilesystemencoding(), "surrogateescape")
        .decode("latin-1")
    )


def environ_of(scope: Scope, body: Any, script_name: str) -> dict[str, Any]:
    """The environ for an HTTP `scope`; `body` is `wsgi.input`, `script_name` the
    process's (`process_script_name`), used where the scope has no `root_path`."""
    root: str = scope.get("root_path", "")
    if root:  # gateway.prefix: the path starts with the root path
        script_name = _wsgi_str(root)
        path_info = _wsgi_str(scope["path"][len(root) :])
    else:
        path_info = _wsgi_str(scope["path"])
    server_name, server_port = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "asgi.scope": app_scope(scope),  # as a2wsgi gives it under uvicorn
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope["query_string"].decode("ascii"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stdout,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port or 0),
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    keys = _KEYS
    for name, raw in scope["headers"]:
        key = keys.get(name) or keys[name]
        value = raw.decode("latin-1")
        if key in environ:  # a repeated header: one value, comma-separated
            value = environ[key] + "," + value
        environ[key] = value
    return environ


def _wsgi_str(text: str) -> str:
    # PEP 3333: environ strings carry the path's bytes, each as one latin-1 character.
    return text.encode("utf-8").decode("latin-1")
