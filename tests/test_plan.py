"""plan(route, scope): what serves a request, decided from the route and the request alone."""

from __future__ import annotations

from typing import Any

from gateway.dispatch import plan
from gateway.route_state import RouteState
from gateway.routefile.loading import parse_config
from gateway.shadow import ShadowRunner
from gateway.table import RouteTable, build_table

TABLE = """\
version: 1
backends:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
  old: {url: "http://127.0.0.1:3"}
default: legacy
routes:
  - id: plain
    path: /plain
    backend: new
  - id: canary
    path: /canary
    backend: legacy
    canary: {backend: new, percent: 30, sticky: "header:X-User"}
    fallback: old
    rollback: {error_ratio: 0.5, window: 10, min_requests: 5}
  - id: shadow
    path: /shadow
    backend: legacy
    shadow: {backend: new, percent: 50}
    fallback: new
"""


def table() -> RouteTable:
    config = parse_config(TABLE, resolve_imports=False)
    backends: dict[str, Any] = {"legacy": object(), "new": object(), "old": object()}
    state = RouteState(on_trip=lambda watch, total, failed: None)
    return build_table(config, backends, None, True, state, ShadowRunner())


def scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": method, "path": "/", "headers": headers or []}


def test_a_route_without_policies_has_one_plan_built_with_the_table() -> None:
    t = table()
    route = t.match("GET", "/plain")
    assert route is not None
    first, second = plan(route, scope()), plan(route, scope("POST"))
    assert first is second is route.fixed
    assert first.target.name == "new"
    assert (first.fallback, first.shadower, first.rollback) == (None, None, None)


def test_canary_by_sticky_key_and_the_rollback_watches_the_primary_only() -> None:
    route = table().match("GET", "/canary")
    assert route is not None and route.fallback is not None
    sides = {}
    for user in range(200):
        p = plan(route, scope(headers=[(b"x-user", str(user).encode())]))
        sides[user] = p.target.name
        assert p.fallback is not None and p.fallback.name == "old"
        if p.target.name == "legacy":
            assert p.rollback is route.fallback.rollback is not None
        else:
            assert p.rollback is None  # the canary's failures do not roll the route back
    assert 30 <= sum(side == "new" for side in sides.values()) <= 90
    again = plan(route, scope(headers=[(b"x-user", b"7")]))
    assert again.target.name == sides[7]  # sticky


def test_fallback_only_for_idempotent_methods_and_shadow_by_chance() -> None:
    route = table().match("GET", "/shadow")
    assert route is not None
    copied = plan(route, scope(), chance=lambda: 0.49)
    assert copied.shadower is route.shadower
    assert copied.fallback is not None and copied.fallback.name == "new"
    assert plan(route, scope(), chance=lambda: 0.5).shadower is None
    posted = plan(route, scope("POST"), chance=lambda: 0.0)
    assert posted.fallback is None  # a POST is never sent twice
    assert posted.shadower is None  # nor copied, without `unsafe: true`
    assert plan(route, {"type": "websocket", "path": "/shadow", "headers": []}).fallback is None
