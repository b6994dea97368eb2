"""Garbage collection in a gateway worker before and after reloads of its table.

    python -m bench.gcpauses [--routes N] [--reloads N] [--seconds N] [--no-refreeze]

Starts one gateway worker on a generated table (10,000 routes by default),
pinned like the benchmark, with every full garbage collection timed inside
the worker (`bench.variant --gc-report`). It loads the worker with wrk for
`--seconds`; then, `--reloads` times: a load during which the file is edited
(a new comment: new content, the same table), so the worker reloads it and
refreezes its heap under load; and a load after that. Each line gives the
throughput, p99 and slowest response, the full collections (how many, their
total and the longest), and the collector's object counts (tracked, and
frozen). `--no-refreeze` runs the worker without the refreeze that follows a
reload, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import tables
from bench.harness import (
    Cores,
    Load,
    Processes,
    Server,
    Wrk,
    ensure_tool,
    free_port,
    log,
    reload_and_settle,
    workspace,
)


def collected(server: Server, report: Path) -> dict[str, Any]:
    """What the worker timed since the last call (it writes `report` on SIGUSR1)."""
    before = report.stat().st_mtime_ns if report.exists() else 0
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not report.exists() or report.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway wrote no garbage collection report")
        time.sleep(0.05)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def describe(pauses: list[float]) -> str:
    if not pauses:
        return "none"
    return f"{len(pauses)}, {sum(pauses):,.0f} ms in all, longest {max(pauses):,.1f} ms"


def line(load: Load, report: dict[str, Any]) -> str:
    return (
        f"{load.rps:,.0f} req/s, p99 {load.p99_ms:.1f} ms, slowest {load.max_ms:,.0f} ms; "
        f"full collections: {describe(report['pauses_ms'])}; "
        f"objects tracked {report['tracked']:,}, frozen {report['frozen']:,}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gcpauses")
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--reloads", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-refreeze", action="store_true")
    args = parser.parse_args(argv)
    wrk_binary = ensure_tool("wrk", "wrk")
    if wrk_binary is None:
        return 1
    cores = Cores.detect()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})
    with workspace("gateway-gc-") as (workdir, env):
        config = tables.write(workdir, "routes.yaml", tables.generated(args.routes))
        report = workdir / "gc.json"
        variant = [sys.executable, "-m", "bench.variant", "--gc-report", str(report)]
        if args.no_refreeze:
            variant.append("--no-refreeze")
        port = free_port()
        serve = ["--", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        with Processes(workdir, cores, env) as procs:
            log(f"starting a gateway worker on {args.routes:,} routes")
            gateway = procs.start(
                "gateway",
                [*variant, *serve, "--log-level", "warning", "--config", str(config)],
                port=port,
                ready_path=tables.MEASURED_PATH,
                timeout=300,
            )
            wrk = Wrk(wrk_binary, workdir, cores, args.connections)
            url = gateway.base + tables.MEASURED_PATH
            wrk.run(url, 3)
            refreeze = "no refreeze" if args.no_refreeze else "refreeze"
            print(f"{args.routes:,} routes, {refreeze}; loads of {args.seconds} s each")
            collected(gateway, report)
            for step in range(args.reloads + 1):
                if step:
                    # The file is edited 1 s into a load, which goes on through the
                    # reload and the refreeze that follows it.
                    during: list[Load] = []
                    loader = threading.Thread(
                        target=lambda out=during: out.append(wrk.run(url, args.seconds, [gateway]))
                    )
                    loader.start()
                    time.sleep(1)
                    took = reload_and_settle(gateway, config)
                    loader.join()
                    print(
                        f"  reload {step} under load: applied {took:.2f} s after the edit; "
                        + line(during[0], collected(gateway, report)),
                        flush=True,
                    )
                load = wrk.run(url, args.seconds, [gateway])
                label = "startup table" if not step else f"after reload {step}"
                print(f"  {label}: " + line(load, collected(gateway, report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
