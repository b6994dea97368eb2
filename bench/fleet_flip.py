"""The fleet row: how long a flip takes to reach every worker of a fleet on one Redis.

Three `gateway serve --store --workers 2` instances share one redis-server (on
a free loopback port, persisting nothing). Each flip is a `PUT /-/routes/{id}`
on a randomly chosen instance, moving GET /books/{book_id} between the new and
the legacy app. Every worker publishes its heartbeat as soon as it has
swapped in a new table (`GET /-/fleet`), so the time of a flip is from
sending the PUT to the moment `/-/fleet` shows all six workers on the new
revision (polled every 5 ms). The flips are spaced by a random pause.

Target: p99 <= 1 s (the one-second promise of the control plane).
"""

from __future__ import annotations

import random
import shutil
import statistics
import time

import httpx

from bench import tables
from bench.harness import free_port, log
from bench.rows import Context, gateway
from bench.table import Row

INSTANCES = 3
WORKERS = 2
POLL = 0.005
GIVE_UP = 15.0
TARGET_MS = 1000.0
ROUTE = "books.get"


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def converged(client: httpx.Client, url: str, revision: int) -> bool:
    view = client.get(url + "/-/fleet").json()
    workers = [w for i in view["instances"] for w in i["workers"]]
    return len(workers) == INSTANCES * WORKERS and all(w["revision"] >= revision for w in workers)


def measure(urls: list[str], count: int, seed: int = 8) -> tuple[list[float], int]:
    """Seconds per flip until every worker serves it, and the failed edits."""
    rng = random.Random(seed)
    took: list[float] = []
    failed = 0
    backend = "new"
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 60
        revision = client.get(urls[0] + "/-/fleet").json()["revision"]
        while not converged(client, urls[0], revision):  # every worker has started
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet did not report all its workers within 60s")
            time.sleep(0.1)
        for _ in range(count):
            time.sleep(rng.uniform(0.2, 0.5))
            backend = "legacy" if backend == "new" else "new"
            started = time.perf_counter()
            r = client.put(rng.choice(urls) + f"/-/routes/{ROUTE}", json={"backend": backend})
            if r.status_code != 200:
                failed += 1
                continue
            revision += 1
            while not converged(client, rng.choice(urls), revision):
                if time.perf_counter() - started > GIVE_UP:
                    raise RuntimeError(f"a flip did not reach every worker in {GIVE_UP:g}s")
                time.sleep(POLL)
            took.append(time.perf_counter() - started)
    return took, failed


def run(ctx: Context) -> None:
    redis = shutil.which("redis-server")
    if redis is None:
        raise RuntimeError("the fleet row needs redis-server (deploy/redis/ensure-redis-server)")
    directory = ctx.workdir / "fleet"
    directory.mkdir()
    redis_port = free_port()
    ctx.procs.start(
        "redis",
        [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        port=redis_port,
        ready_path=None,
    )
    time.sleep(0.5)
    store = f"redis://127.0.0.1:{redis_port}/0"
    config = tables.write(directory, "routes.yaml", tables.demo(books_get="new"))
    urls = []
    for n in range(INSTANCES):
        port = free_port()
        argv = gateway(config, port, "--workers", str(WORKERS), "--store", store)
        server = ctx.procs.start(
            f"gateway-fleet-{n}", ctx.on_server(argv), port=port, ready_path="/-/readyz"
        )
        urls.append(server.base)
    log(f"fleet: {ctx.opts.flips} flips on {INSTANCES} instances of {WORKERS} workers")
    took, failed = measure(urls, ctx.opts.flips)
    ms = [t * 1000 for t in took]
    row = Row(
        "fleet",
        f"fleet flip, {INSTANCES} instances x {WORKERS} workers, edit to every worker",
        cost=f"median {statistics.median(ms):,.0f} ms",
        rate=f"{len(took)} flips, {failed} failed",
        p99=f"{p99(ms):,.0f} ms",
    )
    row.target = f"p99 <= {TARGET_MS / 1000:g} s"
    row.verdict = "met" if p99(ms) <= TARGET_MS and not failed else "MISSED"
    ctx.rows.append(row)
