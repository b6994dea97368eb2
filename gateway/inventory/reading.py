"""Reading an application's own route table: Flask/Werkzeug `url_map`, Starlette/FastAPI routes.

`read_app(obj)` returns the endpoints an app declares, each as a method and a path in
the gateway's template syntax (`<int:book_id>` becomes `{book_id}`, `<path:p>` becomes
`{p:path}`), or raises `Unreadable` saying why the app could not be read.

Methods are the ones the app declares. The `HEAD` a framework adds beside `GET` (and
an explicit `HEAD` handler beside a `GET` one, which answers the same request) is
folded into `GET`; so is the `OPTIONS` Flask adds to every rule. WebSocket routes have
the method `WEBSOCKET`; a mounted app that cannot be read further claims every method
(`*`) under its mount path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

WEBSOCKET = "WEBSOCKET"
ANY_METHOD = "*"
_MAX_WRAPPERS = 8  # middleware layers followed through `.app` to reach the framework object
_WERKZEUG_VAR = re.compile(
    r"<(?:(?P<conv>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[A-Za-z_]\w*)>"
)
_BRACED_VAR = re.compile(r"\{(?P<name>[^{}:]+)(?::(?P<conv>[^{}]+))?\}")
_ENDPOINT_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


class Unreadable(Exception):
    """An app whose routes cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class AppEndpoint:
    """One endpoint as an app declares it."""

    method: str
    path: str  # gateway template syntax
    name: str  # the app's own name for it (Flask endpoint, Starlette route name)
    hidden: bool = False  # left out of the app's OpenAPI schema


def read_app(obj: Any) -> list[AppEndpoint]:
    """The endpoints of a Flask, Werkzeug, Starlette or FastAPI application object."""
    app = obj
    for _ in range(_MAX_WRAPPERS):
        url_map = getattr(app, "url_map", None)
        if url_map is not None and hasattr(url_map, "iter_rules"):
            return _fold(_werkzeug_endpoints(url_map))
        routes = _routes_of(app)
        if routes is not None:
            return _fold(_starlette_endpoints(routes, ""))
        inner = getattr(app, "app", None)  # a middleware wrapping the framework's app
        if inner is None or inner is app:
            break
        app = inner
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise Unreadable(
        f"a {kind} has no route table the gateway can read (Flask or Werkzeug url_map, "
        "Starlette or FastAPI routes)"
    )


# --- Flask and Werkzeug --------------------------------------------------------------


def _werkzeug_endpoints(url_map: Any) -> Iterator[AppEndpoint]:
    for rule in url_map.iter_rules():
        path = werkzeug_template(rule.rule)
        methods = set(rule.methods) if rule.methods else {ANY_METHOD}
        # Flask adds OPTIONS to every rule unless the view handles it itself.
        if getattr(rule, "provide_automatic_options", False):
            methods.discard("OPTIONS")
        for method in methods:
            yield AppEndpoint(method, path, str(rule.endpoint))


def werkzeug_template(rule: str) -> str:
    """`/books/<int:book_id>` as `/books/{book_id}`, `/f/<path:p>` as `/f/{p:path}`."""
    return _template(rule, _WERKZEUG_VAR)


# --- Starlette and FastAPI -----------------------------------------------------------


def _routes_of(app: Any) -> list[Any] | None:
    router = getattr(app, "router", app)
    routes = getattr(router, "routes", None)
    return list(routes) if isinstance(routes, list | tuple) else None


def _flatten(routes: Iterable[Any]) -> Iterable[Any]:
    """Routes as served: FastAPI from 0.16x keeps included routers as one entry each,
    and says through `iter_route_contexts` what each included route is."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # older FastAPI copies included routes in place; Starlette alone
        return routes
    return list(iter_route_contexts(list(routes)))


def _starlette_endpoints(routes: Iterable[Any], prefix: str) -> Iterator[AppEndpoint]:
    from starlette.routing import Mount, Route, WebSocketRoute

    for entry in _flatten(routes):
        route = getattr(entry, "original_route", entry)
        path = prefix + str(getattr(entry, "path", "") or "")
        name = str(getattr(entry, "name", None) or getattr(route, "name", "") or "")
        hidden = not getattr(entry, "include_in_schema", True)
        if isinstance(route, WebSocketRoute):
            yield AppEndpoint(WEBSOCKET, starlette_template(path), name, hidden)
        elif isinstance(route, Route):
            methods = getattr(entry, "methods", None) or _endpoint_methods(route.endpoint)
            for method in methods:
                yield AppEndpoint(method, starlette_template(path), name, hidden)
        elif isinstance(route, Mount):
            inner = _routes_of(route.app)
            if inner is not None:
                yield from _starlette_endpoints(inner, path.rstrip("/"))
            else:
                template = starlette_template(path.rstrip("/") + "/{path:path}")
                yield AppEndpoint(_mounted_method(route.app), template, name or template)
        # Host routes and custom BaseRoute subclasses declare no path to join on.


def _endpoint_methods(endpoint: Any) -> list[str]:
    """An HTTPEndpoint class answers the methods it defines; anything else, every method."""
    if inspect.isclass(endpoint):
        found = [m.upper() for m in _ENDPOINT_METHODS if hasattr(endpoint, m)]
        if found:
            return found
    return [ANY_METHOD]


def _mounted_method(app: Any) -> str:
    from starlette.staticfiles import StaticFiles

    return "GET" if isinstance(app, StaticFiles) else ANY_METHOD


def starlette_template(path: str) -> str:
    """`/books/{book_id:int}` as `/books/{book_id}`; `{p:path}` stays as it is."""
    return _template(path or "/", _BRACED_VAR)


# --- shared --------------------------------------------------------------------------


def _template(path: str, variable: re.Pattern[str]) -> str:
    """`path` in the gateway's template syntax, its parameters found by `variable` (with
    the groups `name` and `conv`). A parameter that shares its segment with literal text
    (`/f/<name>.txt`) becomes a whole-segment parameter: the gateway's templates cannot
    say more, and the path shape stays the same."""

    def segment(text: str, last: bool) -> str:
        names = list(variable.finditer(text))
        if not names:
            return text
        path = names[-1].group("conv") == "path"
        return _param("_".join(m.group("name") for m in names), path and last)

    parts = path.split("/")
    converted = [segment(part, i == len(parts) - 1) for i, part in enumerate(parts)]
    text = "/".join(converted)
    return text if text.startswith("/") else "/" + text


def _param(name: str, path: bool) -> str:
    clean = re.sub(r"\W", "_", name) or "param"
    if clean[0].isdigit():
        clean = "_" + clean
    return "{" + clean + (":path}" if path else "}")


def _fold(endpoints: Iterable[AppEndpoint]) -> list[AppEndpoint]:
    """One endpoint per (method, path); HEAD beside GET folds into GET."""
    found: dict[tuple[str, str], AppEndpoint] = {}
    for endpoint in endpoints:
        found.setdefault((endpoint.method, endpoint.path), endpoint)
    for method, path in list(found):
        if method == "HEAD" and ("GET", path) in found:
            del found[(method, path)]
    return sorted(found.values(), key=lambda e: (e.path, e.method))
