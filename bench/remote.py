"""Row 5: the gateway as a reverse proxy to a remote upstream, against nginx.

One upstream (`uvicorn new_fastapi.app:app` on a port of its own) serves
every variant: the upstream alone (the ceiling any proxy can reach), nginx
(one worker, HTTP/1.1 to a keep-alive upstream pool), the gateway as shipped
(aiohttp), and, unless --no-transports, the gateway with each alternative
client from `bench.transports` swapped in by `bench.variant` (among them
httpx, the gateway's client before aiohttp).

On two cores the upstream cannot have a core of its own: it shares the load
core with wrk, and the proxy has the server core. The cpu column shows who is
saturated (proxy first, upstream second): a proxy below 100% means the
upstream, not the proxy, bounds that row. BENCH_UPSTREAM_CORE=server puts the
upstream on the server core instead, sharing it with the proxy, so that
throughput reflects the proxy's cost per request directly.
"""

from __future__ import annotations

import inspect
import os

from bench import tables
from bench.harness import (
    HOST,
    Context,
    Group,
    Server,
    ensure_tool,
    free_port,
    judge,
    log,
    throughput_row,
)
from bench.transports import DESCRIPTIONS, TRANSPORTS

PATH = tables.MEASURED_PATH
TARGET = 0.6

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
    upstream app {{
        server {upstream};
        keepalive 128;
    }}
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


def nginx_command(ctx: Context, binary: str, upstream: Server, port: int) -> list[str]:
    """nginx in the foreground, on a config of its own in the run's directory."""
    directory = ctx.workdir / "nginx"
    directory.mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=directory, upstream=f"{HOST}:{upstream.port}", host=HOST, port=port)
    )
    return [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]


def shipped_client() -> str:
    """The type of client `gateway.upstream.new_client()` makes, as its signature says."""
    from gateway import upstream

    annotation = inspect.signature(upstream.new_client).return_annotation
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "?")


def _upstream_core(ctx: Context) -> int | None:
    """The load core by default (see the module docstring)."""
    choice = os.environ.get("BENCH_UPSTREAM_CORE", "load")
    return ctx.cores.server if choice == "server" else ctx.cores.load


def run(ctx: Context) -> None:
    if "5" not in ctx.opts.sections:
        return
    assert ctx.wrk is not None
    group = Group(ctx, PATH)
    port = free_port()
    argv = ctx.cores.pin(_upstream_core(ctx), ctx.uvicorn("new_fastapi.app:app", port))
    upstream = group.start("upstream", argv, port, pin=False, fresh=False)
    config = tables.write(ctx.workdir, "remote.yaml", tables.remote(upstream.base))
    nginx_binary = ensure_tool("nginx", "nginx")
    if nginx_binary is not None:
        port = free_port()
        argv = nginx_command(ctx, nginx_binary, upstream, port)
        group.start("nginx", argv, port, also_watch=(upstream,))
    else:
        ctx.notes.append("nginx is not available: row 5 has no nginx reference")
    port = free_port()
    group.start("shipped", ctx.gateway(config, port), port, also_watch=(upstream,))
    if ctx.opts.transports:
        for name in TRANSPORTS:
            port = free_port()
            argv = ctx.gateway_variant(["--transport", name], config, port)
            group.start(name, argv, port, also_watch=(upstream,))
    log("row 5: upstream alone, nginx, and the gateway with each HTTP client")
    results = group.run()
    ceiling = results["upstream"]
    ctx.rows.append(throughput_row("5", "upstream alone (FastAPI under uvicorn)", ceiling))
    reference = results.get("nginx")
    if reference is not None:
        row = throughput_row("5", "nginx -> upstream", reference, ("proxy ", "up "), cost=True)
        ctx.rows.append(row)
    for name, summary in results.items():
        if name in ("upstream", "nginx"):
            continue
        shipped = name == "shipped"
        if shipped:
            case = f"gateway -> upstream, {shipped_client()} (shipped)"
        else:
            case = f"  what-if: client {DESCRIPTIONS[name]}"
        row = throughput_row("5", case, summary, ("proxy ", "up "), cost=True)
        if reference is not None:
            judge(row, summary.rps / reference.rps, TARGET, what_if=not shipped)
        ctx.rows.append(row)
    if reference is not None and reference.rps > 0.9 * ceiling.rps:
        ctx.notes.append(
            "row 5: nginx reaches the upstream's own throughput, so the upstream bounds the "
            "nginx row (a faster proxy cannot show)"
        )
    group.stop()
