"""The inventory: every endpoint of every backend, joined, with where it is served now.

`read_backends()` reads each backend's own route table (in-process apps through
`gateway.inventory.reading`, `url:` backends through their OpenAPI document) and never
lets an app stop the caller: an import that raises, even `SystemExit`, is reported as
that backend not being inspected. `build_inventory()` joins the endpoints by method
and path *shape* (parameter names may differ between the apps), each at the path a
client uses: an app mounted under a route's `strip_prefix` serves its `/books` at
`/api/v2/books` (`mount_points`). It asks the gateway's
own matcher which route claims each one, and gives each a status, the first that
applies of `STATUSES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.inventory.reading import ANY_METHOD, WEBSOCKET, AppEndpoint, Unreadable, read_app
from gateway.inventory.remote import read_openapi
from gateway.matching import Router, TemplateError, parse_template
from gateway.routefile.loading import import_target, is_factory
from gateway.routefile.model import DEFAULT_ROUTE_ID, BackendSpec, GatewayConfig, RouteSpec

# In the order they are decided, and shown: a misrouting first.
STATUSES = ("unreachable", "new-only", "canary", "migrated", "shadowed", "ready", "legacy-only")


class InventoryError(Exception):
    """The inventory cannot be made (say, no legacy side); the message says why."""


@dataclass(frozen=True, slots=True)
class BackendRead:
    """One backend's endpoints, or why they are not known (`endpoints` None)."""

    name: str
    endpoints: tuple[AppEndpoint, ...] | None
    reason: str | None = None


@dataclass(slots=True)
class Endpoint:
    method: str
    path: str
    shape: tuple[str, ...]
    implemented_by: list[str]
    names: dict[str, str]  # backend -> the app's own name for the endpoint
    hidden: bool  # left out of the OpenAPI schema by some app that implements it
    route: str | None = None  # the route that claims it now, `_default`, or None
    backend: str | None = None  # the backend that serves it now
    canary: dict[str, Any] | None = None
    shadowed: bool = False
    status: str = "legacy-only"
    routed: bool | None = None  # new-only endpoints: whether a route sends it to a new side
    traffic: dict[str, int] | None = None


@dataclass(slots=True)
class Inventory:
    legacy: str
    endpoints: list[Endpoint]
    backends: dict[str, BackendRead]
    problems: list[str] = field(default_factory=list)  # endpoints no template can express
    claims: dict[str, list[Endpoint]] = field(default_factory=dict)  # route id -> endpoints
    figures: dict[str, Any] | None = None  # live figures per route, when known


def import_app(target: str) -> Any:
    """Import an app for reading; whatever the import raises becomes `Unreadable`."""
    try:
        return import_target(target)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: a user's app must not stop us
        raise Unreadable(f"importing {target!r} raised {exc!r}") from None


def read_backend(spec: BackendSpec, folder: Path, factories: bool = True) -> list[AppEndpoint]:
    """One backend's endpoints; `folder` is where a relative OpenAPI file is found;
    `factories` False leaves an app made by a factory unread (`gateway check`)."""
    if not factories and is_factory(spec.target):
        raise Unreadable("an app factory, which check does not call ('gateway inventory' does)")
    if spec.kind == "url":
        if spec.openapi is None:
            raise Unreadable("a url backend without 'openapi:' (its endpoints are unknown)")
        return read_openapi(spec.target, spec.openapi, folder)
    return read_app(import_app(spec.target))


def read_backends(config: GatewayConfig, factories: bool = True) -> dict[str, BackendRead]:
    """Every backend's endpoints, in the file's order; never raises for an app's fault."""
    folder = Path(config.source).parent if config.source else Path.cwd()
    reads: dict[str, BackendRead] = {}
    for spec in config.backends:
        try:
            endpoints = read_backend(spec, folder, factories)
        except Unreadable as exc:
            reads[spec.name] = BackendRead(spec.name, None, str(exc))
        except Exception as exc:  # a framework object in a shape this reader did not expect
            reads[spec.name] = BackendRead(spec.name, None, f"reading its routes raised {exc!r}")
        else:
            reads[spec.name] = BackendRead(spec.name, tuple(endpoints))
    return reads


def build_inventory(
    config: GatewayConfig, reads: dict[str, BackendRead], legacy: str | None = None
) -> Inventory:
    legacy = legacy or config.default
    if legacy is None:
        raise InventoryError("the file has no 'default' backend: name the legacy side")
    if legacy not in reads:
        raise InventoryError(f"unknown legacy backend {legacy!r}; use one of: {', '.join(reads)}")
    order = [legacy, *(name for name in reads if name != legacy)]
    inventory = Inventory(legacy, [], {name: reads[name] for name in order})
    router: Router[RouteSpec] = Router()
    for route in config.routes:
        router.add(parse_template(route.path), route.methods, route)
    mounts = mount_points(config)
    joined: dict[tuple[str, tuple[str, ...]], Endpoint] = {}
    for name in order:
        for found in reads[name].endpoints or ():
            try:
                paths = _client_paths(found, mounts[name], router)
            except TemplateError as exc:
                inventory.problems.append(f"backend {name!r}: {found.method} {exc}")
                continue
            for path, shape in paths:
                endpoint = joined.get((found.method, shape))
                if endpoint is None:
                    endpoint = Endpoint(found.method, path, shape, [], {}, False)
                    joined[(found.method, shape)] = endpoint
                endpoint.implemented_by.append(name)
                endpoint.names[name] = found.name
                endpoint.hidden = endpoint.hidden or found.hidden
    for endpoint in sorted(joined.values(), key=lambda e: (e.path, e.method)):
        claim = router.match(_probe_method(endpoint.method), probe_path(endpoint.path))
        _place(endpoint, claim, config.default, inventory)
        if endpoint.route is not None:
            inventory.claims.setdefault(endpoint.route, []).append(endpoint)
        inventory.endpoints.append(endpoint)
    return inventory


def mount_points(config: GatewayConfig) -> dict[str, list[str]]:
    """Where each backend is mounted: the `strip_prefix` of every route that names it
    (on any side: backend, canary, fallback, shadow), and "" (its own paths) for the
    default backend, a route without a prefix, or a backend no route names; "" first."""
    mounts: dict[str, list[str]] = {spec.name: [] for spec in config.backends}

    def add(name: str | None, prefix: str) -> None:
        if name in mounts and prefix not in mounts[name]:
            mounts[name].append(prefix)

    add(config.default, "")
    for route in config.routes:
        prefix = route.strip_prefix or ""
        add(route.backend, prefix)
        add(route.canary.backend if route.canary else None, prefix)
        add(route.shadow.backend if route.shadow else None, prefix)
        add(route.fallback, prefix)
    return {name: sorted(found or [""], key=bool) for name, found in mounts.items()}


def _client_paths(
    found: AppEndpoint, mounts: list[str], router: Router[RouteSpec]
) -> list[tuple[str, tuple[str, ...]]]:
    """(path, shape) where clients reach an app's endpoint: its path under each of the
    backend's mount points whose route mounts it there (a route that strips another
    prefix, or none, would not hand the app this path). An endpoint no mount point
    reaches is listed under the first, where a route would have to serve it."""
    paths = []
    for mount in mounts:
        template = parse_template(mount + found.path)
        route = router.match(_probe_method(found.method), probe_path(template.text))
        if (route.strip_prefix if route else None) == (mount or None):
            paths.append((template.text, template.shape))
    if not paths:
        template = parse_template(mounts[0] + found.path)
        paths.append((template.text, template.shape))
    return paths


def _probe_method(method: str) -> str:
    # A WebSocket handshake is matched as GET (its scope has no method), as the gateway does.
    return "GET" if method in (WEBSOCKET, ANY_METHOD) else method


def probe_path(template: str) -> str:
    """A request path only this endpoint's parameters fill: each parameter by its own
    `{name}` text, which no literal segment of a route can equal."""
    segments = parse_template(template).segments
    return "/" + "/".join(s.value if s.kind == "literal" else "{" + s.value + "}" for s in segments)


def _place(
    endpoint: Endpoint, route: RouteSpec | None, default: str | None, inventory: Inventory
) -> None:
    """Where the endpoint is served now, and its status (the first of STATUSES that applies)."""
    legacy = inventory.legacy
    if route is not None:
        endpoint.route, endpoint.backend = route.id, route.backend
    elif default is not None:
        endpoint.route, endpoint.backend = DEFAULT_ROUTE_ID, default
    canary_to, canary_percent = None, 0.0
    if route is not None and route.canary is not None and route.canary.backend != route.backend:
        canary_to, canary_percent = route.canary.backend, route.canary.percent
        endpoint.canary = {"backend": canary_to, "percent": canary_percent}
    if route is not None and route.shadow is not None and route.shadow.backend != route.backend:
        endpoint.shadowed = legacy == route.backend and route.shadow.backend != legacy
    implements = set(endpoint.implemented_by)

    def misses(backend: str | None) -> bool:
        known = backend is not None and inventory.backends[backend].endpoints is not None
        return known and backend not in implements

    served = endpoint.backend
    if route is not None and (misses(served) or (canary_percent > 0 and misses(canary_to))):
        endpoint.status = "unreachable"
    elif legacy not in implements:
        endpoint.status = "new-only"
        endpoint.routed = served is not None and served != legacy
    elif canary_to is not None and canary_to != legacy and canary_percent > 0:
        endpoint.status = "canary"
    elif served is not None and served != legacy:
        endpoint.status = "migrated"
    elif endpoint.shadowed:
        endpoint.status = "shadowed"
    elif implements - {legacy}:
        endpoint.status = "ready"
    else:
        endpoint.status = "legacy-only"


def summary(inventory: Inventory) -> dict[str, Any]:
    counts: dict[str, Any] = {"endpoints": len(inventory.endpoints)}
    counts.update({status: 0 for status in STATUSES})
    for endpoint in inventory.endpoints:
        counts[endpoint.status] += 1
    on_legacy = [e for e in inventory.endpoints if inventory.legacy in e.implemented_by]
    counts["legacy_endpoints"] = len(on_legacy)
    counts["legacy_migrated"] = sum(1 for e in on_legacy if e.status == "migrated")
    counts["traffic_share_new"] = None
    return counts


def unserved_claims(
    inventory: Inventory, backend: str, route_ids: Sequence[str]
) -> dict[str, list[Endpoint]]:
    """For each route in `route_ids`, the endpoints it claims that `backend` does not
    implement (empty: none, or `backend`'s endpoints are not known)."""
    read = inventory.backends.get(backend)
    if read is None or read.endpoints is None:
        return {}
    missing: dict[str, list[Endpoint]] = {}
    for route_id in route_ids:
        gaps = [e for e in inventory.claims.get(route_id, []) if backend not in e.implemented_by]
        if gaps:
            missing[route_id] = gaps
    return missing
