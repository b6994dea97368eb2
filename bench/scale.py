"""Row 4: does the size of the route table cost anything per request?

Over HTTP: the same request through gateways loaded with generated tables of
10, 1,000 and 10,000 routes (the measured route declared last). Without
HTTP: the time to match one request with the gateway's `Router` (a segment
trie) and with Starlette's router on the same templates, matching the way
Starlette's `Router.__call__` does (each route's `matches(scope)` in turn
until one matches fully), for a request that hits the last route and for
one that matches nothing and falls to the default backend.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.routing import Route as StarletteRoute

from bench import tables
from bench.harness import (
    Context,
    Group,
    Row,
    Server,
    free_port,
    judge,
    log,
    reload_and_settle,
    throughput_row,
)
from bench.inprocess import memory_row
from gateway.matching import Router, parse_template

SIZES = (10, 1_000, 10_000)
HIT = ("GET", tables.MEASURED_PATH)
MISS = ("GET", "/ui/books/1")  # no route claims it: the default backend serves it


async def _endpoint(request: Request) -> Response:
    return Response()


def _methods(text: str | None) -> tuple[str, ...] | None:
    return tuple(m.strip() for m in text.split(",")) if text else None


def build_routers(size: int) -> tuple[Router[str], list[BaseRoute]]:
    ours: Router[str] = Router()
    theirs: list[BaseRoute] = []
    for route_id, path, methods, _backend in tables.generated_routes(size):
        ours.add(parse_template(path), _methods(methods), route_id)
        listed = _methods(methods)
        theirs.append(
            StarletteRoute(path, _endpoint, methods=list(listed) if listed else None, name=route_id)
        )
    return ours, theirs


def starlette_match(routes: list[BaseRoute], scope: dict[str, object]) -> BaseRoute | None:
    """Starlette's own matching loop: first full match wins, else the first partial."""
    partial = None
    for route in routes:
        match, _child_scope = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call: timeit's autorange, best of `repeat`."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def micro(ctx: Context) -> None:
    repeat = 3 if ctx.opts.quick else 5
    log("row 4: matching micro-benchmark (gateway Router vs Starlette router)")
    for size in SIZES:
        ours, theirs = build_routers(size)
        for label, (method, path) in (("hit, declared last", HIT), ("miss, to default", MISS)):
            scope: dict[str, object] = {
                "type": "http",
                "method": method,
                "path": path,
                "root_path": "",
                "headers": [],
            }
            found = starlette_match(theirs, scope)
            if ours.match(method, path) != getattr(found, "name", None):
                raise RuntimeError(f"the routers disagree on {method} {path}")
            mine = per_call(partial(ours.match, method, path), repeat)
            other = per_call(partial(starlette_match, theirs, scope), repeat)
            ctx.rows.append(
                Row(
                    "4",
                    f"match, {size:,} routes, {label}: Router vs Starlette",
                    f"{_us(mine)} vs {_us(other)}",
                    ratio=f"{other / mine:,.1f}x",
                )
            )


def _us(seconds: float) -> str:
    micro = seconds * 1e6
    return f"{micro:,.2f} us" if micro < 100 else f"{micro:,.0f} us"


def http(ctx: Context) -> None:
    group = Group(ctx, tables.MEASURED_PATH)
    largest = SIZES[-1]
    for size in SIZES:
        config = tables.write(ctx.workdir, f"routes-{size}.yaml", tables.generated(size))
        port = free_port()
        group.start(str(size), ctx.gateway(config, port), port, timeout=180)
    # The largest table again, but built by a reload (the gateway starts on the
    # smallest): does it cost what the same table loaded at startup does?
    variants = [("reloaded", ctx.gateway)]
    if ctx.opts.experiments:
        variants.append(("reloaded, no refreeze", partial(ctx.gateway_variant, ["--no-refreeze"])))
    small, large = tables.generated(SIZES[0]), tables.generated(largest)
    for name, command in variants:
        config = tables.write(ctx.workdir, f"routes-{name}.yaml", small)
        port = free_port()
        prepare, settle = _reloaded(config, small, large)
        group.start(name, command(config, port), port, timeout=180, prepare=prepare, settle=settle)
    log("row 4: the same request through tables of 10, 1,000 and 10,000 routes, and reloaded")
    results = group.run()
    base = results[str(SIZES[0])]
    for size in SIZES:
        summary = results[str(size)]
        row = throughput_row("4", f"gateway -> FastAPI, {size:,} routes", summary)
        if size != SIZES[0]:
            judge(row, summary.rps / base.rps, 0.97)
        ctx.rows.append(row)
    for name, _command in variants:
        summary = results[name]
        row = throughput_row("4", f"gateway -> FastAPI, {largest:,} routes, {name}", summary)
        judge(row, summary.rps / base.rps, 0.97, what_if=name != "reloaded")
        ctx.rows.append(row)
    if "7" in ctx.opts.sections:
        for size in SIZES[1:]:
            case = f"gateway worker, {size:,} routes, after load"
            ctx.rows.append(memory_row(case, group.servers[str(size)]))
        case = f"gateway worker, {largest:,} routes by a reload, after load"
        ctx.rows.append(memory_row(case, group.servers["reloaded"]))
    group.stop()


def _reloaded(
    config: Path, first: str, then: str
) -> tuple[Callable[[], None], Callable[[Server], None]]:
    """For Group.start: each process starts on `first`, then reloads `then`."""

    def prepare() -> None:
        config.write_text(first)

    def settle(server: Server) -> None:
        reload_and_settle(server, config, then)

    return prepare, settle


def run(ctx: Context) -> None:
    if "4" not in ctx.opts.sections:
        return
    http(ctx)
    micro(ctx)
