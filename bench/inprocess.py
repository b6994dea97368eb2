"""Rows 1, 2, 3 and 7: the in-process backends, the cost of metrics, and memory.

Row 1 puts FastAPI alone under uvicorn next to the same app behind the
gateway; row 2 does the same for Flask (a2wsgi under uvicorn, and gunicorn as
a user would most likely run it); row 3 is the gateway with and without its
Prometheus metrics; row 7 reads one gateway worker's memory, idle and after
the load of rows 1 and 3 plus a pass over a legacy page.

With --experiments, a what-if row in row 2 runs the gateway with 32 WSGI
threads, its former default, next to the shipped 10.
"""

from __future__ import annotations

from pathlib import Path

from bench import tables
from bench.harness import (
    Context,
    Group,
    Row,
    Server,
    free_port,
    judge,
    log,
    python_module_available,
    throughput_row,
)

PATH = tables.MEASURED_PATH
LEGACY_PAGE = "/ui/books/1"


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values["VmRSS"], values["VmHWM"]


def memory_row(case: str, server: Server) -> Row:
    rss, peak = memory(server.pid)
    return Row("7", case, f"RSS {rss:.1f} MB, peak {peak:.1f} MB")


def new_side(ctx: Context) -> None:
    """Rows 1, 3 and 7: everything served by the FastAPI app."""
    sections = ctx.opts.sections
    if not sections & {"1", "3", "7"}:
        return
    assert ctx.wrk is not None
    config = tables.write(ctx.workdir, "demo.yaml", tables.demo(books_get="new"))
    group = Group(ctx, PATH)
    if "1" in sections:
        port = free_port()
        group.start("direct", ctx.uvicorn("new_fastapi.app:app", port), port)
    port = free_port()
    gateway = group.start("gateway", ctx.gateway(config, port), port)
    idle = memory_row("gateway worker (demo mounted), idle", gateway)
    if "3" in sections:
        port = free_port()
        group.start("no-metrics", ctx.gateway(config, port, "--no-metrics"), port)
    log("rows 1/3: FastAPI alone, through the gateway, and without metrics")
    results = group.run()
    gw = results["gateway"]
    if "1" in sections:
        base = results["direct"]
        ctx.rows.append(throughput_row("1", "new: FastAPI alone (uvicorn)", base))
        row = throughput_row("1", "new: gateway -> FastAPI", gw)
        ctx.rows.append(judge(row, gw.rps / base.rps, 0.97))
    if "3" in sections:
        off = results["no-metrics"]
        ctx.rows.append(throughput_row("3", "gateway -> FastAPI, --no-metrics", off))
        row = throughput_row("3", "gateway -> FastAPI, metrics on", gw)
        ctx.rows.append(judge(row, gw.rps / off.rps, 0.95))
    if "7" in sections:
        log("row 7: a pass over a legacy page, then memory")
        gateway = group.servers["gateway"]  # the last round's process
        ctx.wrk.run(gateway.base + LEGACY_PAGE, ctx.opts.duration)
        ctx.rows.append(idle)
        ctx.rows.append(memory_row("gateway worker, after load (new + legacy)", gateway))
        if "direct" in group.servers:
            ctx.rows.append(
                memory_row("reference: FastAPI alone, after load", group.servers["direct"])
            )
    group.stop()


def legacy_side(ctx: Context) -> None:
    """Row 2: the Flask app directly (a2wsgi, gunicorn) and through the gateway."""
    if "2" not in ctx.opts.sections:
        return
    config = tables.write(ctx.workdir, "demo-legacy.yaml", tables.demo(books_get="legacy"))
    group = Group(ctx, PATH)
    port = free_port()
    group.start("direct", ctx.uvicorn("bench.legacy_asgi:app", port), port)
    port = free_port()
    group.start("gateway", ctx.gateway(config, port), port)
    if python_module_available("gunicorn"):
        port = free_port()
        argv = ctx.python(
            "-m", "gunicorn", "--workers", "1", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "legacy_flask.app:app",
        )  # fmt: skip
        group.start("gunicorn", argv, port)
    else:
        ctx.notes.append("gunicorn is not installed: pip install -e '.[bench]' for row 2")
    if ctx.opts.experiments:
        port = free_port()
        group.start("threads-10", ctx.gateway(config, port, "--wsgi-threads", "10"), port)
    log("row 2: Flask via a2wsgi, through the gateway, and under gunicorn")
    results = group.run()
    base, gw = results["direct"], results["gateway"]
    ctx.rows.append(throughput_row("2", "legacy: Flask via a2wsgi alone (uvicorn)", base))
    row = throughput_row("2", "legacy: gateway -> Flask", gw)
    ctx.rows.append(judge(row, gw.rps / base.rps, 0.97))
    if "threads-10" in results:
        what_if = results["threads-10"]
        case = "  what-if: gateway with --wsgi-threads 10 (a2wsgi's own default)"
        row = throughput_row("2", case, what_if)
        ctx.rows.append(judge(row, what_if.rps / base.rps, 0.97, what_if=True))
    if "gunicorn" in results:
        ref = results["gunicorn"]
        ctx.rows.append(throughput_row("2", "legacy: Flask under gunicorn (sync, 1 worker)", ref))
        row = Row("2", "legacy: gateway -> Flask, over gunicorn")
        ctx.rows.append(judge(row, gw.rps / ref.rps, 1.0))
    if "7" in ctx.opts.sections:
        case = "reference: Flask via a2wsgi alone, after load"
        ctx.rows.append(memory_row(case, group.servers["direct"]))
    group.stop()
