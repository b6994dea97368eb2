"""The compiled, immutable route table a request is served from.

`build_table()` turns a validated `GatewayConfig` plus running backends into a
`RouteTable`: the segment trie, and for every route everything the request
path needs, computed once (the backend object, the response headers as
bytes, the metric label children). The gateway publishes a table by one
attribute assignment; a request reads it once and keeps it to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.backends import Backend
from gateway.config import DEFAULT_ROUTE_ID, GatewayConfig, RouteSpec
from gateway.matching import Router, parse_template
from gateway.metrics import Metrics, RouteMetrics
from gateway.types import Headers


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A route ready to serve: its backend resolved, its headers and metrics prepared."""

    id: str
    backend_name: str
    backend: Backend
    response_headers: Headers
    metrics: RouteMetrics | None
    timeout: float | None  # for in-process backends; remote ones time out in the client
    spec: RouteSpec | None = None


@dataclass(frozen=True, slots=True, eq=False)
class RouteTable:
    config: GatewayConfig
    router: Router[Route]
    routes: tuple[Route, ...]
    default: Route | None
    backends: dict[str, Backend]
    loaded_at: float = field(default_factory=time.time)

    def match(self, method: str, path: str) -> Route | None:
        route = self.router.match(method, path)
        return self.default if route is None else route

    def weights(self) -> list[tuple[str, str, float]]:
        """(route, backend, share of traffic) for every route the table serves."""
        shares = [(r.id, r.backend_name, 1.0) for r in self.routes]
        if self.default is not None:
            shares.append((DEFAULT_ROUTE_ID, self.default.backend_name, 1.0))
        return shares


def build_table(
    config: GatewayConfig,
    backends: dict[str, Backend],
    metrics: Metrics | None,
    route_headers: bool = True,
) -> RouteTable:
    def prepare(route_id: str, backend_name: str, spec: RouteSpec | None) -> Route:
        backend = backends[backend_name]
        # The spec by *name*: two names may share one running in-process app.
        backend_spec = config.backend(backend_name)
        headers: Headers = []
        if route_headers:
            headers = [
                (b"x-gateway-route", route_id.encode()),
                (b"x-gateway-backend", backend_name.encode()),
            ]
        return Route(
            id=route_id,
            backend_name=backend_name,
            backend=backend,
            response_headers=headers,
            metrics=metrics.for_route(route_id, backend_name) if metrics else None,
            timeout=backend_spec.timeout if backend_spec.kind != "url" else None,
            spec=spec,
        )

    router: Router[Route] = Router()
    routes = []
    for spec in config.routes:
        route = prepare(spec.id, spec.backend, spec)
        router.add(parse_template(spec.path), spec.methods, route)
        routes.append(route)
    default = prepare(DEFAULT_ROUTE_ID, config.default, None) if config.default else None
    return RouteTable(config, router, tuple(routes), default, dict(backends))
