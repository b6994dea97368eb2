"""`python -m bench [options]`: run the benchmark and print one table.

Defaults: 5 rounds of 3 s per variant, each on fresh server processes after a
1 s warm-up; 32 connections; 20 flips per worker count. `--quick` (or
BENCH_QUICK=1) runs 2 rounds of 1 s after 1 s and 5 flips: a smoke test, not
a measurement. Every option also reads an environment variable (BENCH_ROUNDS,
BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_FLIPS, BENCH_ONLY,
BENCH_NO_TRANSPORTS, BENCH_EXPERIMENTS), so `make bench` can be tuned without
editing the Makefile.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import flip, inprocess, remote, scale
from bench.harness import (
    QUICK_ENV,
    Context,
    Cores,
    Options,
    Processes,
    Section,
    ServerFailed,
    Wrk,
    ensure_tool,
    log,
    render,
    workspace,
)

SECTIONS: tuple[tuple[str, Section], ...] = (
    ("1,3,7", inprocess.new_side),
    ("2", inprocess.legacy_side),
    ("4", scale.run),
    ("5", remote.run),
    ("6", flip.run),
)
_NEEDS_WRK = frozenset({"1", "2", "3", "4", "5", "7"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse(argv: Sequence[str] | None) -> Options:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=_env_flag(QUICK_ENV),
        help="short rounds for a fast check (or BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=env("BENCH_ROUNDS"),
        help="rounds per comparison, each with fresh server processes (default 5)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=env("BENCH_DURATION"),
        help="whole seconds of load per round (default 3)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=env("BENCH_WARMUP"),
        help="whole seconds of load on each fresh process before its round (default 1)",
    )
    parser.add_argument("--connections", type=int, default=env("BENCH_CONNECTIONS"))
    parser.add_argument(
        "--flips",
        type=int,
        default=env("BENCH_FLIPS"),
        help="route flips timed in row 6, per worker count",
    )
    parser.add_argument(
        "--only",
        default=env("BENCH_ONLY"),
        help="comma-separated rows to run, e.g. 1,3 (default: all)",
    )
    parser.add_argument(
        "--no-transports",
        action="store_true",
        default=_env_flag("BENCH_NO_TRANSPORTS"),
        help="row 5 without the alternative HTTP clients (httpx and others)",
    )
    parser.add_argument(
        "--experiments",
        action="store_true",
        default=_env_flag("BENCH_EXPERIMENTS"),
        help="add the what-if row: row 2 with 32 WSGI threads (the former default)",
    )
    args = parser.parse_args(argv)
    base = Options.quick_defaults() if args.quick else Options()
    changes: dict[str, object] = {
        "transports": not args.no_transports,
        "experiments": args.experiments,
    }
    for name, kind in (
        ("rounds", int),
        ("duration", int),
        ("warmup", int),
        ("connections", int),
        ("flips", int),
    ):
        value = getattr(args, name)
        if value is not None:
            changes[name] = kind(value)
    if args.only:
        wanted = frozenset(part.strip() for part in str(args.only).split(",") if part.strip())
        unknown = wanted - base.sections
        if unknown:
            parser.error(f"--only: unknown rows {sorted(unknown)}; rows are 1 to 7")
        changes["sections"] = wanted
    opts = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    if (
        opts.rounds < 1
        or opts.duration < 1
        or opts.warmup < 0
        or opts.connections < 1
        or opts.flips < 1
    ):
        parser.error("rounds, duration, connections and flips must be positive")
    return opts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    cores = Cores.detect()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})  # this process polls and times: keep it off core 0
    started = time.monotonic()
    wrk_binary: str | None = None
    if opts.sections & _NEEDS_WRK:
        wrk_binary = ensure_tool("wrk", "wrk")
        if wrk_binary is None:
            print("wrk is required (apt-get install wrk)", file=sys.stderr)
            return 1
    failures: list[str] = []
    with workspace("gateway-bench-") as (workdir, env), Processes(workdir, cores, env) as procs:
        wrk = (
            Wrk(wrk_binary, workdir, cores, opts.connections, lambda: procs.servers)
            if wrk_binary
            else None
        )
        if wrk is not None and opts.quick:
            wrk.waiting_budget = 20.0  # a smoke test waits little for a quiet machine
        ctx = Context(opts, workdir, cores, procs, wrk)
        try:
            for rows, section in SECTIONS:
                if not opts.sections & set(rows.split(",")):
                    continue
                try:
                    section(ctx)
                except (ServerFailed, RuntimeError, OSError) as exc:
                    failures.append(f"rows {rows}: {str(exc).splitlines()[0]}")
                    log(f"rows {rows} failed: {exc}")
                    procs.stop_all()
        except KeyboardInterrupt:
            log("interrupted: stopping every server")
            procs.stop_all()
            return 130
    elapsed = time.monotonic() - started
    print(
        f"Gateway benchmark: {os.cpu_count()} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}, {cores.describe()}; "
        f"wrk -t1 -c{opts.connections}; {opts.rounds} rounds, each on fresh server processes: "
        f"{opts.warmup:g} s warm-up, then {opts.duration:g} s per variant; medians."
    )
    print()
    print(render(sorted(ctx.rows, key=lambda row: int(row.section))))
    print()
    print(
        "ratio: the gateway's throughput over the reference row above it (row 5: over nginx); "
        "in row 4's match rows, how many times faster the gateway's Router matches than "
        "Starlette's."
    )
    print(
        "server cpu: share of one core used by the server's processes during the load "
        "(row 5: the proxy, with its CPU time per request, then the upstream)."
    )
    if wrk is not None and wrk.foreign:
        median, worst = statistics.median(wrk.foreign), max(wrk.foreign)
        print(
            f"other processes on the machine during the load runs: {median * 100:.0f}% of a "
            f"core (median), {worst * 100:.0f}% (worst run)"
            + ("  <- a busy machine: expect noise" if median > 0.1 else "")
            + (
                f"; {wrk.reruns} run{'s' if wrk.reruns > 1 else ''} redone after a busy moment"
                if wrk.reruns
                else ""
            )
        )
    for note in ctx.notes:
        print(f"note: {note}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"Reproduce with: {opts.command()}   ({elapsed / 60:.1f} min)")
    return 1 if failures else 0
