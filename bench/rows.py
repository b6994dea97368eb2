"""Every row of the table, and how it is measured: the benchmark's method in one place.

Each comparison puts the gateway next to what a user would run instead, in the
same run, and reports the ratio of the two in CPU per request (the servers'
utime + stime from /proc over the requests wrk completed, round by round:
median and the lowest and highest round) with throughput beside it. Targets
are on the cost ratio, lower is better.

- `instr`: instructions per request under callgrind (bench.instructions) for
  the pairs of the rows below, and the gateway's own per request proxied to a
  `url:` upstream: the deterministic row, to trust first.
- `new`: FastAPI alone under uvicorn vs the gateway serving it, with the
  legacy Flask app mounted beside it (the demo table). Target <= 1.03x.
- `legacy`: Flask behind a2wsgi alone vs through the gateway. <= 1.03x.
- `metrics`: the gateway with metrics vs `--no-metrics`. <= 1.02x.
- `routes`: tables of 10 and 10,000 generated routes (the measured route
  declared last), and the 10,000 by a reload of a 10-route gateway; plus a
  timeit of one match, gateway `Router` vs Starlette's routes in turn. <= 1.03x.
- `pages`: the legacy app's pages (`GET /ui/`) through the gateway vs nginx in
  front of gunicorn (sync, one worker, same core): both processes counted. <= 0.8x.
- `remote`: a `url:` upstream through nginx (one worker, keep-alive pool) and
  through the gateway: the proxy's CPU alone. <= 2.5x.
- `flip`: how fast a saved route file reaches the clients (bench.flip).
- memory (`VmRSS`) of the workers, read after the loads of new, legacy and routes.
"""

from __future__ import annotations

import json
import sys
import time
import timeit
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from starlette.routing import BaseRoute, Match
from starlette.routing import Route as StarletteRoute

from bench import instructions, tables
from bench.harness import HOST, Cores, Group, Processes, Rounds, Server, Wrk, free_port, log
from bench.product import REFREEZE_DELAY, Router, parse_template, serve_command
from bench.table import Row, judge, load_row, median_ratio, spread

SECTIONS = ("instr", "new", "legacy", "metrics", "routes", "pages", "remote", "flip", "fleet")
BOOK = tables.MEASURED_PATH
PAGE = "/ui/"
LARGE = 10_000


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int = 5  # each on fresh server processes
    duration: int = 3  # seconds of load per variant and round (wrk's unit is whole seconds)
    warmup: int = 1  # seconds of load on each fresh process before its round
    connections: int = 32
    requests: int = 200  # measured by callgrind, per server, after 20 warm-up requests
    flips: int = 20
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False


@dataclass(slots=True)
class Context:
    opts: Options
    workdir: Path
    cores: Cores
    procs: Processes
    wrk: Wrk
    tools: dict[str, str]  # binary name -> path (nginx)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def wants(self, section: str) -> bool:
        return section in self.opts.sections

    def group(self, path: str) -> Group:
        o = self.opts
        return Group(
            self.procs, self.wrk, path, rounds=o.rounds, duration=o.duration, warmup=o.warmup
        )

    def on_server(self, argv: list[str]) -> list[str]:
        return self.cores.pin(self.cores.server, argv)

    def config(self, name: str, text: str) -> Path:
        return tables.write(self.workdir, name, text)


# --- the servers ---------------------------------------------------------------------


def gateway(config: Path, port: int, *extra: str) -> list[str]:
    """`gateway serve`, one worker, as every row runs it unless it says otherwise."""
    return [
        *serve_command(), "--config", str(config), "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning", *extra,
    ]  # fmt: skip


def uvicorn(target: str, port: int) -> list[str]:
    """An app alone, with the options `gateway serve` gives uvicorn (uvloop, httptools)."""
    return [
        sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning", "--lifespan", "on",
        "--no-proxy-headers", "--no-server-header",
    ]  # fmt: skip


def gunicorn(port: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync",
        "--bind", f"{HOST}:{port}", "--log-level", "warning", "legacy_flask.app:app",
    ]  # fmt: skip


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server {upstream}; {keepalive} }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def nginx(ctx: Context, name: str, upstream_port: int, port: int, *, keepalive: bool) -> list[str]:
    """nginx in the foreground on a config of its own; `keepalive` pools upstream
    connections (gunicorn's sync workers close each one, so not for them)."""
    binary = ctx.tools["nginx"]
    directory = ctx.workdir / name
    directory.mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=directory,
            upstream=f"{HOST}:{upstream_port}",
            host=HOST,
            port=port,
            keepalive="keepalive 128;" if keepalive else "",
        )
    )
    return [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]


def memory_row(case: str, server: Server) -> Row:
    """VmRSS and its peak (VmHWM) of a server's first process."""
    values = {}
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = rest
    rss, peak = (int(values[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    return Row("memory", case, rate=f"RSS {rss:.1f} MB, peak {peak:.1f} MB")


# --- the rows ------------------------------------------------------------------------


def instr(ctx: Context) -> None:
    """Instructions per request of each side of the rows below, one server at a time."""
    demo_new = ctx.config("instr-demo.yaml", tables.demo(books_get="new"))
    demo_legacy = ctx.config("instr-legacy.yaml", tables.demo(books_get="legacy"))
    small = ctx.config("instr-10.yaml", tables.generated(10))
    large = ctx.config(f"instr-{LARGE}.yaml", tables.generated(LARGE))
    quiet = ("--watch-interval", "5")  # the file watcher's polls are not the requests' cost
    servers: dict[str, Callable[[int], list[str]]] = {
        "FastAPI alone": partial(uvicorn, "new_fastapi.app:app"),
        "gateway -> FastAPI": lambda port: gateway(demo_new, port, *quiet),
        "gateway -> FastAPI, --no-metrics": (
            lambda port: gateway(demo_new, port, *quiet, "--no-metrics")
        ),
        "Flask via a2wsgi alone": partial(uvicorn, "bench.legacy_asgi:app"),
        "gateway -> Flask": lambda port: gateway(demo_legacy, port, *quiet),
        "gateway, 10 routes": lambda port: gateway(small, port, *quiet),
        f"gateway, {LARGE:,} routes": lambda port: gateway(large, port, *quiet),
    }  # fmt: skip
    pairs: tuple[tuple[str, str, float], ...] = (  # (measured, reference, target)
        ("gateway -> FastAPI", "FastAPI alone", 1.03),
        ("gateway -> Flask", "Flask via a2wsgi alone", 1.03),
        ("gateway -> FastAPI", "gateway -> FastAPI, --no-metrics", 1.02),
        (f"gateway, {LARGE:,} routes", "gateway, 10 routes", 1.03),
    )
    if ctx.opts.quick:
        pairs = pairs[:1]
    log(f"instr: {ctx.opts.requests} requests per server under callgrind")
    cost: dict[str, float] = {}
    for name in dict.fromkeys(n for pair in pairs for n in pair[:2]):
        port = free_port()
        argv = servers[name](port)
        label = name.replace(" ", "_").replace(">", "")
        cost[name] = instructions.per_request(
            ctx.procs, ctx.cores, ctx.workdir, label, argv, port, BOOK,
            warmup=10 if ctx.opts.quick else 20, requests=ctx.opts.requests,
        )  # fmt: skip
    for measured, reference, target in pairs:
        ratio = cost[measured] / cost[reference]
        row = Row(
            "instr",
            f"{measured} / {reference}",
            cost=f"{cost[measured] / 1e6:.3f} M vs {cost[reference] / 1e6:.3f} M instr",
            rate=f"{cost[measured] - cost[reference]:+,.0f} instr",
            ratio=spread([ratio]),
        )
        ctx.rows.append(judge(row, ratio, target))
    if not ctx.opts.quick:
        remote_instructions(ctx, quiet)


def remote_instructions(ctx: Context, quiet: tuple[str, ...]) -> None:
    """The gateway's instructions per request proxied to a `url:` upstream, which runs
    natively on the load core and is not counted. A row without a reference: nginx's
    count leaves out the kernel side that is most of its cost, so the remote target
    stays on CPU time (section remote); this is the measure of the gateway's own work."""
    port = free_port()
    argv = ctx.cores.pin(ctx.cores.load, uvicorn("new_fastapi.app:app", port))
    upstream = ctx.procs.start("instr-upstream", argv, port=port, ready_path=BOOK)
    config = ctx.config("instr-remote.yaml", tables.remote(upstream.base))
    port = free_port()
    try:
        cost = instructions.per_request(
            ctx.procs, ctx.cores, ctx.workdir, "gateway_url", gateway(config, port, *quiet),
            port, BOOK, warmup=20, requests=ctx.opts.requests,
        )  # fmt: skip
    finally:
        ctx.procs.stop(upstream)
    ctx.rows.append(Row("instr", "gateway -> url: upstream", cost=f"{cost:,.0f} instr"))


def compare(
    ctx: Context, section: str, results: dict[str, Rounds], reference: str,
    measured: str, labels: tuple[str, str], target: float,
) -> None:  # fmt: skip
    """Two rows: the reference, then the measured variant with its ratios and verdict."""
    ref = results[reference]
    ctx.rows.append(load_row(section, labels[0], ref))
    row = load_row(section, labels[1], results[measured], ref)
    ctx.rows.append(judge(row, median_ratio(results[measured], ref), target))


def new_and_metrics(ctx: Context) -> None:
    """FastAPI alone, through the gateway, and the gateway without metrics: one group."""
    config = ctx.config("demo.yaml", tables.demo(books_get="new"))
    group = ctx.group(BOOK)
    if ctx.wants("new"):
        port = free_port()
        group.add("alone", ctx.on_server(uvicorn("new_fastapi.app:app", port)), port)
    port = free_port()
    first = group.add("gateway", ctx.on_server(gateway(config, port)), port)
    idle = memory_row("gateway worker (demo table, both apps mounted), idle", first)
    if ctx.wants("metrics"):
        port = free_port()
        group.add("no-metrics", ctx.on_server(gateway(config, port, "--no-metrics")), port)
    log("new/metrics: FastAPI alone, through the gateway, and without metrics")
    results = group.run()
    if ctx.wants("new"):
        labels = ("FastAPI alone (uvicorn)", "gateway -> FastAPI (Flask mounted too)")
        compare(ctx, "new", results, "alone", "gateway", labels, 1.03)
    if ctx.wants("metrics"):
        labels = ("gateway -> FastAPI, --no-metrics", "gateway -> FastAPI, metrics on")
        compare(ctx, "metrics", results, "no-metrics", "gateway", labels, 1.02)
    gateway_server = group.servers["gateway"]  # the last round's process
    ctx.wrk.run(gateway_server.base + PAGE, ctx.opts.duration)  # the legacy side too
    ctx.rows.append(idle)
    ctx.rows.append(memory_row("gateway worker, after load (new + legacy)", gateway_server))
    if "alone" in group.servers:
        ctx.rows.append(memory_row("FastAPI alone, after load", group.servers["alone"]))
    group.stop()


def legacy(ctx: Context) -> None:
    config = ctx.config("demo-legacy.yaml", tables.demo(books_get="legacy"))
    group = ctx.group(BOOK)
    port = free_port()
    group.add("alone", ctx.on_server(uvicorn("bench.legacy_asgi:app", port)), port)
    port = free_port()
    group.add("gateway", ctx.on_server(gateway(config, port)), port)
    log("legacy: Flask via a2wsgi alone and through the gateway")
    results = group.run()
    labels = ("Flask via a2wsgi alone (uvicorn)", "gateway -> Flask")
    compare(ctx, "legacy", results, "alone", "gateway", labels, 1.03)
    ctx.rows.append(memory_row("Flask via a2wsgi alone, after load", group.servers["alone"]))
    group.stop()


def _reload_to(config: Path, text: str) -> Callable[[Server], None]:
    """For Group.add: a process started on `config` gets `text` by a reload, and the
    heap refreeze that follows a reload is over before it is measured."""

    def sha(server: Server) -> str:
        with urllib.request.urlopen(server.base + "/-/routes", timeout=30) as response:
            return str(json.load(response)["sha256"])

    def settle(server: Server) -> None:
        before = sha(server)
        staged = config.with_name(config.name + ".new")
        staged.write_text(text)
        staged.replace(config)
        deadline = time.monotonic() + 180
        while sha(server) == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not apply {config}")
            time.sleep(0.1)
        time.sleep(REFREEZE_DELAY + 1)

    return settle


def routes(ctx: Context) -> None:
    group = ctx.group(BOOK)
    small, large = tables.generated(10), tables.generated(LARGE)
    for name, text in (("10", small), (str(LARGE), large)):
        config = ctx.config(f"routes-{name}.yaml", text)
        port = free_port()
        group.add(name, ctx.on_server(gateway(config, port)), port, timeout=180)
    config = ctx.config("routes-reloaded.yaml", small)
    port = free_port()
    reloaded = _reload_to(config, large)
    # Every fresh process must start on the small table: the last one left the large one.
    argv = [
        "sh",
        "-c",
        f'cp "$0" "{config}" && exec "$@"',
        str(ctx.config("routes-first.yaml", small)),
    ]
    group.add(
        "reloaded", argv + ctx.on_server(gateway(config, port)), port, timeout=180, settle=reloaded
    )
    log(f"routes: the same request through 10 and {LARGE:,} routes, and {LARGE:,} by a reload")
    results = group.run()
    labels = ("gateway -> FastAPI, 10 routes", f"gateway -> FastAPI, {LARGE:,} routes")
    compare(ctx, "routes", results, "10", str(LARGE), labels, 1.03)
    row = load_row(
        "routes",
        f"gateway -> FastAPI, {LARGE:,} routes by a reload",
        results["reloaded"],
        results["10"],
    )
    ctx.rows.append(judge(row, median_ratio(results["reloaded"], results["10"]), 1.03))
    ctx.rows.append(
        memory_row(f"gateway worker, {LARGE:,} routes, after load", group.servers[str(LARGE)])
    )
    group.stop()
    match_micro(ctx)


def _starlette_match(routes: list[BaseRoute], scope: dict[str, object]) -> BaseRoute | None:
    """Starlette's own matching loop: the first full match wins, else the first partial."""
    partial_match = None
    for route in routes:
        match, _child_scope = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial_match is None:
            partial_match = route
    return partial_match


def match_micro(ctx: Context) -> None:
    """One match without HTTP: the gateway's Router against Starlette's routes in turn."""

    async def endpoint(request: object) -> None:
        return None

    repeat = 3 if ctx.opts.quick else 5
    for size in (10, LARGE):
        ours: Router[str] = Router()
        theirs: list[BaseRoute] = []
        for route_id, path, methods, _backend in tables.generated_routes(size):
            listed = [m.strip() for m in methods.split(",")] if methods else None
            ours.add(parse_template(path), tuple(listed) if listed else None, route_id)
            theirs.append(StarletteRoute(path, endpoint, methods=listed, name=route_id))
        for label, path in (("hit, declared last", BOOK), ("miss, to the default", PAGE)):
            scope: dict[str, object] = {
                "type": "http",
                "method": "GET",
                "path": path,
                "root_path": "",
                "headers": [],
            }
            if ours.match("GET", path) != getattr(_starlette_match(theirs, scope), "name", None):
                raise RuntimeError(f"the routers disagree on GET {path}")
            times = []
            for call in (
                partial(ours.match, "GET", path),
                partial(_starlette_match, theirs, scope),
            ):
                timer = timeit.Timer(call)
                number, _ = timer.autorange()
                times.append(min(timer.repeat(repeat=repeat, number=number)) / number)
            mine, other = (
                f"{t * 1e6:,.2f} us" if t < 1e-4 else f"{t * 1e6:,.0f} us" for t in times
            )
            case = f"match, {size:,} routes, {label}: Router vs Starlette"
            ctx.rows.append(
                Row(
                    "routes",
                    case,
                    cost=f"{mine} vs {other}",
                    rate_ratio=f"{times[1] / times[0]:,.0f}x faster",
                )
            )


def pages(ctx: Context) -> None:
    """The headline: legacy pages through the gateway vs nginx -> gunicorn, same core."""
    config = ctx.config("demo-pages.yaml", tables.demo(books_get="new"))
    group = ctx.group(PAGE)
    port = free_port()
    group.add("gunicorn", ctx.on_server(gunicorn(port)), port, loaded=False)
    front = free_port()
    argv = ctx.on_server(nginx(ctx, "nginx-gunicorn", port, front, keepalive=False))
    group.add("nginx", argv, front, counts=("nginx", "gunicorn"))
    port = free_port()
    group.add("gateway", ctx.on_server(gateway(config, port)), port)
    log(f"pages: GET {PAGE} through nginx -> gunicorn and through the gateway")
    results = group.run()
    labels = ("nginx -> gunicorn (sync, 1 worker), both processes", "gateway -> Flask (1 worker)")
    compare(ctx, "pages", results, "nginx", "gateway", labels, 0.8)
    group.stop()


def remote(ctx: Context) -> None:
    """The proxy's own CPU per request; the upstream (shared, on the load core) is the
    ceiling of both, so throughput tells them apart only when a proxy saturates."""
    group = ctx.group(BOOK)
    port = free_port()
    argv = ctx.cores.pin(ctx.cores.load, uvicorn("new_fastapi.app:app", port))
    upstream = group.add("upstream", argv, port, fresh=False)
    config = ctx.config("remote.yaml", tables.remote(upstream.base))
    front = free_port()
    group.add(
        "nginx", ctx.on_server(nginx(ctx, "nginx-remote", port, front, keepalive=True)), front
    )
    port = free_port()
    group.add("gateway", ctx.on_server(gateway(config, port)), port)
    log("remote: the upstream alone, through nginx and through the gateway")
    results = group.run()
    ctx.rows.append(
        load_row("remote", "upstream alone (FastAPI under uvicorn)", results["upstream"])
    )
    labels = ("nginx -> upstream: nginx's CPU", "gateway -> upstream: the gateway's CPU")
    compare(ctx, "remote", results, "nginx", "gateway", labels, 2.5)
    group.stop()
