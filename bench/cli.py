"""`python -m bench [options]`: run the benchmark and print one table.

Defaults: 5 rounds of 3 s per variant, each on fresh server processes after a
1 s warm-up, 32 connections; 200 requests per server under callgrind; 20
flips per worker count. `--quick` (or BENCH_QUICK=1) is a smoke test, not a
measurement: 2 rounds of 1 s, 50 requests under callgrind, 5 flips. Every
option also reads an environment variable (BENCH_ROUNDS, BENCH_DURATION,
BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_REQUESTS, BENCH_FLIPS, BENCH_ONLY), so
`make bench` can be tuned without editing the Makefile.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import fleet_flip, flip, rows, tables
from bench.harness import (
    ROOT,
    Cores,
    Processes,
    ServerFailed,
    Wrk,
    ensure_tool,
    log,
    terminate_on_sigterm,
)
from bench.rows import SECTIONS, Context, Options
from bench.table import render

RUNNERS: tuple[tuple[frozenset[str], Callable[[Context], None]], ...] = (
    (frozenset({"instr"}), rows.instr),
    (frozenset({"new", "metrics"}), rows.new_and_metrics),
    (frozenset({"legacy"}), rows.legacy),
    (frozenset({"routes"}), rows.routes),
    (frozenset({"pages"}), rows.pages),
    (frozenset({"remote"}), rows.remote),
    (frozenset({"flip"}), flip.run),
    (frozenset({"fleet"}), fleet_flip.run),
)
_NUMBERS = ("rounds", "duration", "warmup", "connections", "requests", "flips")
QUICK = Options(rounds=2, duration=1, warmup=1, requests=50, flips=5, quick=True)


def parse(argv: Sequence[str] | None) -> Options:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    quick = env("BENCH_QUICK", "").strip().lower() in ("1", "true", "yes", "on")
    parser.add_argument("--quick", action="store_true", default=quick, help="a smoke test")
    for name in _NUMBERS:
        default = getattr(Options(), name)
        parser.add_argument(
            f"--{name}", type=int, default=env(f"BENCH_{name.upper()}"), help=f"default {default}"
        )
    parser.add_argument(
        "--only",
        default=env("BENCH_ONLY"),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    changes: dict[str, object] = {
        name: int(getattr(args, name)) for name in _NUMBERS if getattr(args, name) is not None
    }
    if args.only:
        wanted = [part.strip() for part in str(args.only).split(",") if part.strip()]
        unknown = sorted(set(wanted) - set(SECTIONS))
        if unknown:
            parser.error(f"--only: unknown sections {unknown}; they are {', '.join(SECTIONS)}")
        changes["sections"] = tuple(s for s in SECTIONS if s in wanted)
    opts = dataclasses.replace(QUICK if args.quick else Options(), **changes)  # type: ignore[arg-type]
    if min(opts.rounds, opts.duration, opts.connections, opts.requests, opts.flips) < 1:
        parser.error("rounds, duration, connections, requests and flips must be positive")
    return opts


def command(opts: Options) -> str:
    """The command line that reproduces a run with these options."""
    defaults = QUICK if opts.quick else Options()
    parts = ["python -m bench"] + (["--quick"] if opts.quick else [])
    parts += [
        f"--{n} {getattr(opts, n)}" for n in _NUMBERS if getattr(opts, n) != getattr(defaults, n)
    ]
    if opts.sections != SECTIONS:
        parts.append("--only " + ",".join(opts.sections))
    return " ".join(parts)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _tools(opts: Options) -> dict[str, str] | str:
    """The external tools the chosen sections need, or what is missing."""
    needed = {"wrk": "wrk"}
    if {"pages", "remote"} & set(opts.sections):
        needed["nginx"] = "nginx"
    if "instr" in opts.sections:
        needed["valgrind"] = "valgrind"
    found = {binary: ensure_tool(binary, package) for binary, package in needed.items()}
    missing = [binary for binary, path in found.items() if path is None]
    if missing:
        return f"missing: {', '.join(missing)} (apt-get install {' '.join(missing)})"
    return {binary: path for binary, path in found.items() if path is not None}


def _environment(db: Path) -> dict[str, str]:
    """This environment without the gateway's own settings, on database `db`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env["BOOKSTORE_DB"] = str(db)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    tools = _tools(opts)
    if isinstance(tools, str):
        print(tools, file=sys.stderr)
        return 1
    cores = Cores.detect()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})  # this process polls and times: off core 0
    started, load_before = time.monotonic(), os.getloadavg()
    failures: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp,
        terminate_on_sigterm(),
    ):
        workdir = Path(tmp)
        env = _environment(tables.seed_database(workdir / "bookstore.db"))
        with Processes(workdir, cores, env) as procs:
            wrk = Wrk(tools["wrk"], workdir, cores, opts.connections, procs)
            if opts.quick:
                wrk.waiting_budget = 5.0  # a smoke test waits little for a quiet machine
            ctx = Context(opts, workdir, cores, procs, wrk, tools)
            try:
                for sections, runner in RUNNERS:
                    if not sections & set(opts.sections):
                        continue
                    try:
                        runner(ctx)
                    except (ServerFailed, RuntimeError, OSError) as exc:
                        failures.append(f"{','.join(sorted(sections))}: {str(exc).splitlines()[0]}")
                        log(f"{','.join(sorted(sections))} failed: {exc}")
                        procs.stop_all()
            except KeyboardInterrupt:
                log("interrupted: stopping every server")
                return 130
    elapsed = time.monotonic() - started
    print(
        f"Gateway benchmark: {os.cpu_count()} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}, {cores.describe()}; wrk -t1 -c{opts.connections}; "
        f"{opts.rounds} rounds on fresh server processes, {opts.warmup} s warm-up, "
        f"{opts.duration} s per variant; callgrind: {opts.requests} requests per server."
    )
    print()
    order = {name: index for index, name in enumerate((*SECTIONS, "memory"))}
    print(render(sorted(ctx.rows, key=lambda row: order[row.section])))
    print()
    print(
        "per request: median CPU time (utime + stime from /proc) of the counted processes over "
        "the requests wrk completed; instr: instructions under callgrind. ratio: to the row "
        "above, median [lowest-highest] of the per-round ratios; lower is better."
    )
    if wrk.foreign:
        median, worst = statistics.median(wrk.foreign), max(wrk.foreign)
        print(
            f"machine: load average {load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} "
            f"at the end; other processes used {median * 100:.0f}% of a core during the load "
            f"runs (median), {worst * 100:.0f}% (worst)"
            + ("  <- a busy machine: expect noise" if median > 0.1 else "")
            + (f"; {wrk.reruns} runs redone after a busy moment" if wrk.reruns else "")
        )
    for note in ctx.notes:
        print(f"note: {note}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"Reproduce with: {command(opts)}   ({elapsed / 60:.1f} min)")
    return 1 if failures else 0
