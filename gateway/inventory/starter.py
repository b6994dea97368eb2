"""`gateway init`: a starter route file from the two apps themselves.

Both backends, `default: legacy`, and one route per endpoint both apps implement
(status `ready`), each still on `backend: legacy`, so that moving one is a one-word
change. Ids come from the legacy app's names for its endpoints.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from gateway.inventory.joining import (
    BackendRead,
    Endpoint,
    InventoryError,
    build_inventory,
    import_app,
)
from gateway.inventory.reading import ANY_METHOD, WEBSOCKET, Unreadable, read_app
from gateway.routefile.loading import parse_config
from gateway.routefile.model import GatewayConfig

_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:-]+")


def app_kind(app: Any) -> str:
    """ "wsgi" or "asgi": what the gateway must run this object as."""
    if hasattr(app, "url_map"):
        return "wsgi"
    # A class instance is ASGI when its __call__ is a coroutine function.
    call = app if inspect.isroutine(app) else type(app).__call__
    return "asgi" if inspect.iscoroutinefunction(call) else "wsgi"


def starter_file(legacy_target: str, new_target: str) -> str:
    """The text of a route file for these two apps; raises `InventoryError` if either
    cannot be imported or read."""
    reads: dict[str, BackendRead] = {}
    kinds: dict[str, str] = {}
    for name, target in (("legacy", legacy_target), ("new", new_target)):
        try:
            app = import_app(target)
            reads[name] = BackendRead(name, tuple(read_app(app)))
        except Unreadable as exc:
            raise InventoryError(f"--{name} {target}: {exc}") from None
        kinds[name] = app_kind(app)
    backends = (
        f"  legacy: {{{kinds['legacy']}: {json.dumps(legacy_target)}}}\n"
        f"  new: {{{kinds['new']}: {json.dumps(new_target)}}}\n"
    )
    header = [
        "# Route table written by `gateway init`: which app serves each endpoint.",
        "# Each route on legacy is an endpoint both apps implement, still served by legacy.",
        "# Move one by changing its 'backend: legacy' to 'backend: new', or with",
        "#   gateway flip ROUTE_ID new",
        "# and check a change first with: gateway check",
        "version: 1",
        "",
        "backends:",
        backends.rstrip("\n"),
        "",
        "default: legacy    # whatever no route claims",
        "",
    ]
    inventory = build_inventory(_check(header), reads, "legacy")
    ready = [e for e in inventory.endpoints if e.status == "ready"]
    draft = _check(header + _routes([(e, "legacy") for e in ready]))
    # A ready route can claim an endpoint only the new app has (`/books/{id}` claims
    # `/books/events`) and send it to legacy; route each such endpoint to new instead.
    misrouted = [
        e for e in build_inventory(draft, reads, "legacy").endpoints if e.status == "unreachable"
    ]
    routes = sorted(
        [(e, "legacy") for e in ready] + [(e, "new") for e in misrouted],
        key=lambda r: (r[0].path, r[0].method),
    )
    lines = header + _routes(routes)
    _check(lines)
    return "\n".join(lines) + "\n"


def _routes(routes: list[tuple[Endpoint, str]]) -> list[str]:
    if not routes:
        return ["routes: []    # no endpoint is implemented by both apps yet"]
    lines = ["routes:"]
    used: set[str] = set()
    for endpoint, backend in routes:
        route_id = _route_id(endpoint.names[backend], endpoint.method, used)
        lines.append(f"  - id: {json.dumps(route_id)}")
        lines.append(f"    path: {json.dumps(endpoint.path)}")
        if endpoint.method == WEBSOCKET:  # a handshake is matched as GET
            lines.append("    methods: [GET]    # a WebSocket endpoint")
        elif endpoint.method != ANY_METHOD:
            lines.append(f"    methods: [{endpoint.method}]")
        if backend == "legacy":
            lines.append(
                f"    backend: legacy    # ready: new has it too ({endpoint.names['new']})"
            )
        else:
            lines.append(
                "    backend: new    # only new has it; a route above would send it to legacy"
            )
    return lines


def _route_id(name: str, method: str, used: set[str]) -> str:
    base = _ID_CHARS.sub("_", name).strip("_.:-") or "route"
    if not base[0].isalnum():
        base = "r" + base
    candidate = base
    if candidate in used:
        candidate = f"{base}.{method.lower()}"
    counter = 2
    while candidate in used:
        candidate = f"{base}.{method.lower()}{counter}"
        counter += 1
    used.add(candidate)
    return candidate


def _check(lines: list[str]) -> GatewayConfig:
    """The file must pass `gateway check` (imports aside, already done above)."""
    return parse_config("\n".join(lines) + "\n", "<gateway init>", resolve_imports=False)
