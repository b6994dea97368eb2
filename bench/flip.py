"""The flip row: how long a saved routes file takes to reach the clients.

A flip saves an edited copy of the routes file over the live one (write a
temporary file, then an atomic rename), moving GET /books/{book_id} between
the new and the legacy app. Meanwhile this process polls the endpoint every
~5 ms and reads `X-Gateway-Backend`. Each poll opens a new connection, so
with several workers the kernel hands the polls to all of them.

Two times per flip, from the rename: the first response from the new backend,
and the first of `streak` consecutive ones (with two workers, one worker
answering is not enough: both must have reloaded). Flips are spaced by a
random pause so they fall at every phase of the gateway's file polling.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import tables
from bench.harness import Server, free_port, log
from bench.rows import Context, gateway
from bench.table import Row

PATH = tables.MEASURED_PATH
POLL = 0.005
GIVE_UP = 15.0
TARGET_MS = 1000.0
STREAK = 20  # consecutive responses from the new backend that prove a flip converged


@dataclass(slots=True)
class Flips:
    first: list[float] = field(default_factory=list)  # seconds
    converged: list[float] = field(default_factory=list)
    polls: int = 0
    errors: int = 0


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def measure(server: Server, config: Path, count: int, streak: int, seed: int = 7) -> Flips:
    texts = {backend: tables.demo(books_get=backend) for backend in ("new", "legacy")}
    rng = random.Random(seed)
    result = Flips()
    current = "new"
    with httpx.Client(
        base_url=server.base, limits=httpx.Limits(max_keepalive_connections=0), timeout=5
    ) as client:
        for _ in range(count):
            time.sleep(rng.uniform(0.1, 0.4))
            target = "legacy" if current == "new" else "new"
            staged = config.with_name(config.name + ".saving")
            staged.write_text(texts[target])
            started = time.perf_counter()
            os.replace(staged, config)
            first: float | None = None
            run_start = 0.0
            run = 0
            next_poll = started
            while run < streak:
                try:
                    response = client.get(PATH)
                except httpx.HTTPError:
                    result.errors += 1
                    response = None
                now = time.perf_counter()
                result.polls += 1
                if response is not None and response.status_code != 200:
                    result.errors += 1
                backend = response.headers.get("x-gateway-backend") if response else None
                if backend == target:
                    if first is None:
                        first = now - started
                    if run == 0:
                        run_start = now - started
                    run += 1
                else:
                    run = 0
                if now - started > GIVE_UP:
                    raise RuntimeError(f"a flip to {target} did not take effect in {GIVE_UP:g}s")
                next_poll += POLL
                time.sleep(max(0.0, next_poll - time.perf_counter()))
            assert first is not None
            result.first.append(first)
            result.converged.append(run_start)
            current = target
    return result


def _worker_writes(server: Server) -> dict[int, int]:
    """Bytes each worker has written so far (its responses, mostly): who answered the polls."""
    written: dict[int, int] = {}
    for pid in server.pids():
        try:
            if b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # the supervisor, multiprocessing's resource tracker
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("wchar:"):
                    written[pid] = int(line.split()[1])
        except OSError:
            continue
    return written


def _row(case: str, values: list[float], flips: Flips, judged: bool) -> Row:
    ms = [v * 1000 for v in values]
    row = Row(
        "flip",
        case,
        cost=f"median {statistics.median(ms):,.0f} ms",
        rate=f"{len(values)} flips, {flips.errors} failed of {flips.polls:,}",
        p99=f"{p99(ms):,.0f} ms",
    )
    if judged:
        row.target = f"p99 <= {TARGET_MS / 1000:g} s"
        row.verdict = "met" if p99(ms) <= TARGET_MS and not flips.errors else "MISSED"
    return row


def run(ctx: Context) -> None:
    for workers in (1, 2):
        directory = ctx.workdir / f"flip-{workers}"
        directory.mkdir()
        config = tables.write(directory, "routes.yaml", tables.demo(books_get="new"))
        port = free_port()
        server = ctx.procs.start(
            f"gateway-flip-{workers}",
            ctx.on_server(gateway(config, port, "--workers", str(workers))),
            port=port,
            ready_path=PATH,
        )
        time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish starting
        log(f"flip: {ctx.opts.flips} flips with {workers} worker(s)")
        before = _worker_writes(server)
        flips = measure(server, config, ctx.opts.flips, STREAK)
        after = _worker_writes(server)
        ctx.procs.stop(server)
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        if workers == 1:
            ctx.rows.append(_row(f"flip, {label}: first new response", flips.first, flips, True))
        else:
            ctx.rows.append(_row(f"flip, {label}: first new response", flips.first, flips, False))
            ctx.rows.append(
                _row(
                    f"flip, {label}: {STREAK} new responses in a row",
                    flips.converged,
                    flips,
                    True,
                )
            )
            shares = [after[pid] - before.get(pid, 0) for pid in after]
            log(f"  bytes written per worker during the flips: {shares}")
            if len(shares) < workers or min(shares) < 0.1 * max(shares):
                ctx.notes.append(
                    "flip: the polls did not reach every worker; the 2-worker figure "
                    "may not prove both converged"
                )
