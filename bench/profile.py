"""Where does a gateway worker spend its time under load? A py-spy profile, summarised.

    python -m bench.profile new|legacy|remote|routes-10000 [--transport NAME]
                            [--wsgi-threads N] [--seconds N] [--native]

Starts the same servers as the benchmark row (pinned the same way), loads the
gateway with wrk, samples it with `py-spy record --gil` (only the thread
holding the GIL, so the figures are shares of the interpreter's time), and
prints the functions with the most samples: by self time, and the gateway's
own functions by inclusive time. `--native` adds C frames (the garbage
collector shows up as gc_collect_main) at the price of a slower process.
Needs py-spy (`pip install -e '.[bench]'`), and ptrace rights on the process.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import tables
from bench.harness import (
    Cores,
    Processes,
    Server,
    Wrk,
    ensure_tool,
    free_port,
    log,
    workspace,
)

SCENARIOS = ("new", "legacy", "remote", "routes-10000")
_LINE = re.compile(r":\d+\)$")


def summarise(raw: Path, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        self_time[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples (is py-spy allowed to trace the process?)"
    out = [f"{total} samples of the thread holding the GIL", "", "self time:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    out += ["", "the gateway's functions, inclusive:"]
    ours = [(name, n) for name, n in inclusive.most_common() if "gateway/" in name]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours[:top]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--transport", default=None, help="row 5's client (bench.transports)")
    parser.add_argument("--wsgi-threads", type=int, default=None, help="gateway serve's option")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    wrk_binary = ensure_tool("wrk", "wrk")
    if wrk_binary is None:
        return 1
    cores = Cores.detect()
    if cores.load is not None:
        os.sched_setaffinity(0, {cores.load})
    with workspace("gateway-profile-") as (workdir, env), Processes(workdir, cores, env) as procs:
        gateway = _start(args, procs, cores, workdir)
        wrk = Wrk(wrk_binary, workdir, cores, args.connections)
        wrk.run(gateway.base + tables.MEASURED_PATH, 2)
        raw = workdir / "profile.txt"
        load = subprocess.Popen(
            cores.pin(
                cores.load,
                [
                    wrk_binary,
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds + 3}s",
                    gateway.base + tables.MEASURED_PATH,
                ],
            ),
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
        record = [
            py_spy,
            "record",
            "--pid",
            str(gateway.pid),
            "--duration",
            str(args.seconds),
            "--rate",
            "200",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(raw),
        ]
        record += ["--native"] if args.native else ["--nonblocking"]
        log(f"sampling {gateway.name} for {args.seconds}s under load")
        subprocess.run(record, check=False, capture_output=True)
        load.wait()
        print(summarise(raw, args.top) if raw.exists() else "py-spy wrote no profile")
        if os.environ.get("BENCH_KEEP_PROFILE"):
            shutil.copy(raw, os.environ["BENCH_KEEP_PROFILE"])
    return 0


def _start(args: argparse.Namespace, procs: Processes, cores: Cores, workdir: Path) -> Server:
    python = sys.executable
    variant = [python, "-m", "bench.variant"]
    if args.transport:
        variant += ["--transport", args.transport]
    serve = ["--", "serve", "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    if args.wsgi_threads is not None:
        serve += ["--wsgi-threads", str(args.wsgi_threads)]
    if args.scenario in ("new", "legacy"):
        text = tables.demo(books_get=args.scenario)
    elif args.scenario == "routes-10000":
        text = tables.generated(10_000)
    else:
        port = free_port()
        upstream = procs.start(
            "upstream",
            cores.pin(
                cores.load,
                [
                    python,
                    "-m",
                    "uvicorn",
                    "new_fastapi.app:app",
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
            ),
            port=port,
            ready_path=tables.MEASURED_PATH,
            pin=False,
        )
        text = tables.remote(upstream.base)
    config = tables.write(workdir, "profile.yaml", text)
    port = free_port()
    return procs.start(
        "gateway",
        [*variant, *serve, "--config", str(config), "--port", str(port)],
        port=port,
        ready_path=tables.MEASURED_PATH,
        timeout=180,
    )


if __name__ == "__main__":
    sys.exit(main())
