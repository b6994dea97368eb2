"""The compiled, immutable route table a request is served from.

`build_table()` turns a validated `GatewayConfig` plus running backends into a
`RouteTable`: the segment trie, and for every route everything the request
path needs, computed once: the backend objects of each side (primary, canary,
fallback) with their response headers as bytes and their metric label
children, the canary split, the shadow comparator and the rollback watch. The
gateway publishes a table by one attribute assignment; a request reads it once
and keeps it to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.backends import Backend
from gateway.canary import CanarySplit
from gateway.matching import Router, parse_template
from gateway.metrics import Metrics, RouteMetrics
from gateway.rollback import RollbackWatch
from gateway.route_state import RouteState
from gateway.routefile.model import DEFAULT_ROUTE_ID, GatewayConfig, RouteSpec
from gateway.shadow import Shadower
from gateway.types import Headers


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """One backend as a route uses it."""

    name: str
    backend: Backend
    response_headers: Headers
    metrics: RouteMetrics | None
    timeout: float | None  # for in-process backends; remote ones time out in the client


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A route ready to serve."""

    id: str
    primary: Target
    canary: CanarySplit | None = None
    canary_target: Target | None = None
    fallback: Target | None = None
    shadower: Shadower | None = None
    rollback: RollbackWatch | None = None

    def weights(self) -> list[tuple[str, float]]:
        if self.canary is None or self.canary_target is None:
            return [(self.primary.name, 1.0)]
        share = min(1.0, max(0.0, self.canary.fraction))
        return [(self.primary.name, 1.0 - share), (self.canary_target.name, share)]


@dataclass(frozen=True, slots=True, eq=False)
class RouteTable:
    config: GatewayConfig
    router: Router[Route]
    routes: tuple[Route, ...]
    default: Route | None
    loaded_at: float = field(default_factory=time.time)

    def match(self, method: str, path: str) -> Route | None:
        route = self.router.match(method, path)
        return self.default if route is None else route

    def weights(self) -> list[tuple[str, str, float]]:
        """(route, backend, share of traffic) for every route the table serves."""
        every = [*self.routes, *([self.default] if self.default else [])]
        return [(r.id, name, share) for r in every for name, share in r.weights()]


def build_table(
    config: GatewayConfig,
    backends: dict[str, Backend],
    metrics: Metrics | None,
    route_headers: bool = True,
    state: RouteState | None = None,
) -> RouteTable:
    def target(route_id: str, name: str) -> Target:
        backend = backends[name]
        # The spec by *name*: two names may share one running in-process app.
        spec = config.backend(name)
        headers: Headers = []
        if route_headers:
            headers = [
                (b"x-gateway-route", route_id.encode()),
                (b"x-gateway-backend", name.encode()),
            ]
        return Target(
            name=name,
            backend=backend,
            response_headers=headers,
            metrics=metrics.for_route(route_id, name) if metrics else None,
            timeout=spec.timeout if spec.kind != "url" else None,
        )

    def route(spec: RouteSpec) -> Route:
        canary = shadower = watch = None
        canary_target = fallback = None
        # A policy naming the route's own backend (after a flip or a rollback, say)
        # has nothing to do, and is valid: flips must not have to edit policies.
        if spec.canary is not None and spec.canary.backend != spec.backend:
            canary = CanarySplit(spec.id, spec.canary)
            canary_target = target(spec.id, spec.canary.backend)
        if spec.fallback is not None and spec.fallback != spec.backend:
            fallback = target(spec.id, spec.fallback)
            if spec.rollback is not None and state is not None:
                watch = state.rollback_watch(spec.id, spec.backend, spec.fallback, spec.rollback)
        shadowed = spec.shadow is not None and spec.shadow.backend != spec.backend
        if spec.shadow is not None and shadowed and state is not None:
            shadower = Shadower(
                spec.id,
                spec.shadow,
                backends[spec.shadow.backend],
                spec.shadow.backend,
                state.shadow_stats(spec.id),
                metrics.shadow_children(spec.id) if metrics else None,
                spec.unsafe,
            )
        return Route(
            spec.id,
            target(spec.id, spec.backend),
            canary,
            canary_target,
            fallback,
            shadower,
            watch,
        )

    router: Router[Route] = Router()
    routes = []
    for spec in config.routes:
        compiled = route(spec)
        router.add(parse_template(spec.path), spec.methods, compiled)
        routes.append(compiled)
    default = None
    if config.default:
        default = Route(DEFAULT_ROUTE_ID, target(DEFAULT_ROUTE_ID, config.default))
    return RouteTable(config, router, tuple(routes), default)
