"""The compiled, immutable route table a request is served from.

`build_table()` turns a validated `GatewayConfig` plus running backends into a
`RouteTable`: the segment trie, and for every route everything the request
path needs, computed once: the backend objects of each side (primary, canary,
fallback) with their response headers as bytes, their metric label children
and their limits (the route's, else the backend's), the canary split, the
shadower bound to its backends and runner, the rollback watch, and the plan of
a route whose plan does not depend on the request. A route's `strip_prefix`
mounts every side of it (`gateway.prefix`). The control plane publishes a table
by one attribute assignment; a request reads it once and keeps it to the end.
"""

from __future__ import annotations

import inspect
import os
import time
import types
from dataclasses import dataclass, field

from gateway.backends import Backend
from gateway.canary import CanarySplit
from gateway.matching import Router, parse_template
from gateway.metrics import Metrics, RouteMetrics
from gateway.prefix import mount
from gateway.rollback import RollbackWatch
from gateway.route_state import RouteState
from gateway.routefile.model import DEFAULT_ROUTE_ID, GatewayConfig, RouteSpec, seconds
from gateway.session import Gates
from gateway.shadow import Shadower, ShadowRunner
from gateway.types import ASGIApp, Headers


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """One backend as a route uses it."""

    name: str
    backend: Backend
    app: ASGIApp  # what serves a request: the backend, or its session gate (gateway.session)
    response_headers: Headers
    metrics: RouteMetrics | None
    timeout: float | None  # seconds to the first byte of the answer; None: no limit
    max_body: int | None = None  # bytes of request body; None: no limit
    body_timeout: float | None = None  # seconds the request body may stall; None: no limit
    # Seconds between two messages of the response body; None: no limit
    read_timeout: float | None = None


def bound(app: ASGIApp) -> ASGIApp:
    """`app` as the request path calls it: an object's `__call__` bound to it, which the
    interpreter calls as it calls a function. Calling the object itself goes through
    its type (about 700 instructions more per call in CPython 3.11)."""
    if isinstance(inspect.getattr_static(app, "__call__", None), types.FunctionType):
        return app.__call__  # type: ignore[no-any-return,operator]
    return app


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The gateway-wide limits on request bodies (`--max-body`, `--body-timeout`); 0: none."""

    max_body: int = 100 * 1024 * 1024
    body_timeout: float = 30.0


DEFAULT_LIMITS = BodyLimits()


@dataclass(frozen=True, slots=True, eq=False)
class Canary:
    """Which requests the canary serves, and the canary."""

    split: CanarySplit
    target: Target


@dataclass(frozen=True, slots=True, eq=False)
class Fallback:
    """Where a failed idempotent request is replayed, and the watch that rolls the
    route back to it (with a `rollback:` policy)."""

    target: Target
    rollback: RollbackWatch | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """What serves one request: see `gateway.dispatch.plan`."""

    target: Target
    fallback: Target | None = None  # replay a failed answer here, once
    shadower: Shadower | None = None  # copy the request, compare the answers
    rollback: RollbackWatch | None = None  # the target's answers count towards a rollback
    keeps_body: bool = field(init=False)  # the body is kept: a replay or a shadow needs it

    def __post_init__(self) -> None:
        kept = self.fallback is not None or self.shadower is not None
        object.__setattr__(self, "keeps_body", kept)


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A route ready to serve."""

    id: str
    primary: Target
    canary: Canary | None = None
    fallback: Fallback | None = None
    shadower: Shadower | None = None
    # The plan of every request, when no policy depends on the request.
    fixed: Plan | None = field(init=False)

    def __post_init__(self) -> None:
        plain = self.canary is None and self.fallback is None and self.shadower is None
        object.__setattr__(self, "fixed", Plan(self.primary) if plain else None)

    def weights(self) -> list[tuple[str, float]]:
        if self.canary is None:
            return [(self.primary.name, 1.0)]
        share = min(1.0, max(0.0, self.canary.split.fraction))
        return [(self.primary.name, 1.0 - share), (self.canary.target.name, share)]


# The front door's memory of routed paths (`RouteTable.known`): at most this many,
# each at most `KNOWN_PATH` characters long.
KNOWN_MAX = 1024
KNOWN_PATH = 256


@dataclass(frozen=True, slots=True, eq=False)
class RouteTable:
    config: GatewayConfig
    router: Router[Route]
    routes: tuple[Route, ...]
    default: Route | None
    loaded_at: float = field(default_factory=time.time)
    # The route (or None: unrouted) of a (method, path as the client spelled it) this
    # table has served before, a path the gateway does not keep for itself: the front
    # door then skips normalising the path, the reserved-path check and the walk.
    # Filled by `remember`; a new table starts empty, so no answer outlives its table.
    known: dict[tuple[str, str], Route | None] = field(default_factory=dict, init=False, repr=False)

    def match(self, method: str, path: str) -> Route | None:
        route = self.router.match(method, path)
        return self.default if route is None else route

    def remember(self, method: str, as_sent: str, route: Route | None) -> None:
        """Keep what `(method, as_sent)` routes to. Bounded whatever clients send: a
        long path is not kept, and a full memory starts over (the paths in use come
        back at their next request; a flood of one-off paths only keeps its own out)."""
        if len(as_sent) > KNOWN_PATH:
            return
        known = self.known
        if len(known) >= KNOWN_MAX:
            known.clear()
        known[method, as_sent] = route

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
    shadows: ShadowRunner | None = None,
    limits: BodyLimits = DEFAULT_LIMITS,
) -> RouteTable:
    # Shared login: raises if a backend's session_from cannot work.
    gates = Gates(config.backends, backends, os.environ)

    def target(route_id: str, name: str, own: RouteSpec | None = None) -> Target:
        """`name` as route `route_id` uses it; `own` is the route's spec, whose limits
        win over the backend's and whose prefix mounts it (None: the default route,
        which has none of its own)."""
        backend = backends[name]
        timeout = read_timeout = max_body = None
        if own is not None:
            timeout, read_timeout, max_body = own.timeout, own.read_timeout, own.max_body
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
            app=bound(mount(gates.wrap(spec), own.strip_prefix if own is not None else None)),
            response_headers=headers,
            metrics=metrics.for_route(route_id, name) if metrics else None,
            timeout=seconds(timeout, spec.time_limit),
            max_body=_first(max_body, spec.max_body, limits.max_body) or None,
            body_timeout=limits.body_timeout or None,
            read_timeout=seconds(read_timeout, spec.read_timeout),
        )

    def route(spec: RouteSpec) -> Route:
        primary = target(spec.id, spec.backend, spec)
        canary = fallback = shadower = None
        # A policy naming the route's own backend (after a flip or a rollback, say)
        # has nothing to do, and is valid: flips must not have to edit policies.
        if spec.canary is not None and spec.canary.backend != spec.backend:
            canary_target = target(spec.id, spec.canary.backend, spec)
            canary = Canary(CanarySplit(spec.id, spec.canary), canary_target)
        if spec.fallback is not None and spec.fallback != spec.backend:
            watch = None
            if spec.rollback is not None and state is not None:
                watch = state.rollback_watch(spec.id, spec.backend, spec.fallback, spec.rollback)
            fallback = Fallback(target(spec.id, spec.fallback, spec), watch)
        shadow = spec.shadow
        if shadow is not None and shadow.backend != spec.backend and state and shadows:
            shadower = Shadower(
                spec.id,
                shadow,
                mount(gates.wrap(config.backend(shadow.backend)), spec.strip_prefix),
                shadow.backend,
                primary.app,
                primary.name,
                state.shadow_stats(spec.id),
                metrics.shadow_children(spec.id) if metrics else None,
                spec.unsafe,
                shadows,
            )
        return Route(spec.id, primary, canary, fallback, shadower)

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


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)
