"""Two `gateway serve --workers 2` instances on one real Redis, under continuous load.

Flips come from either instance's admin API and from `gateway flip --store`; Redis is
stopped and frozen (SIGSTOP) mid-load; someone writes an invalid table straight into
Redis. Every response is recorded: none may fail; every worker of every instance
must report the change in `/-/fleet` within SETTLE seconds of the edit (the
one-second target is the benchmark's; a busy test machine gets a generous bound),
and from then on every response must come from the new side.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import main
from tests.harness import ROOT, TEST_BACKENDS, GatewayProcess, write_routes
from tests.redis_server import RedisServer
from tests.under_load import Sample, request_until

SETTLE = 5.0
CLIENTS = 12  # per instance, each on its own keep-alive connection
PASSWORD = "fleet-secret-pw"
KEY = "fleet"

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  # flipped back and forth under load
  - id: r
    path: "/status/{code}"
    backend: legacy
  - {id: other, path: /other, backend: legacy, canary: {backend: new, percent: 0}}
  - id: flaky  # the new side of /fail raises
    path: /fail
    backend: new
    fallback: legacy
    rollback: {error_ratio: 0.5, window: 60, min_requests: 3}
"""
)


@dataclass
class Change:
    begun: float
    converged: float  # every worker of every instance said it serves the change
    backend: str
    how: str


# One Redis and one fleet for the module: starting four workers is the slow part.
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[list[GatewayProcess]]:
    config = write_routes(tmp_path_factory.mktemp("fleet"), TABLE)
    store = ("--store", redis_server.url, "--store-key", KEY, "--workers", "2")
    instances = [GatewayProcess(config, *store, ready_within=90) for _ in range(2)]
    with ExitStack() as stack:
        for gw in instances:  # one after the other: four workers importing at once is a
            stack.enter_context(gw)  # load spike uvicorn's supervisor can take for a hang
        yield instances


async def load(urls: list[str], stop: asyncio.Event, samples: list[Sample]) -> None:
    clients = [
        httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=1))
        for url in urls
        for _ in range(CLIENTS)
    ]
    try:
        await asyncio.gather(*(request_until(stop, c, "/status/200", samples) for c in clients))
    finally:
        for c in clients:
            await c.aclose()


async def fleet_view(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(url + "/-/fleet")
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        return view


async def converged(url: str, at_least: int, bound: float = SETTLE) -> float:
    """Seconds until every worker of both instances serves revision `at_least` or later."""
    started = time.monotonic()
    while True:
        view = await fleet_view(url)
        workers = [w for i in view["instances"] for w in i["workers"]]
        if (
            len(view["instances"]) == 2
            and len(workers) == 4
            and all(w["revision"] >= at_least for w in workers)
        ):
            return time.monotonic() - started
        assert time.monotonic() - started < bound, f"no convergence on {at_least}: {view}"
        await asyncio.sleep(0.02)


async def cli_flip(redis_url: str, backend: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "flip",
        "r",
        backend,
        "--store",
        redis_url,
        "--store-key",
        KEY,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode()


def check(samples: list[Sample], changes: list[Change], end: float) -> None:
    failed = [s for s in samples if s.status != 200]
    assert not failed, (
        f"{len(failed)} failed requests of {len(samples)}, e.g. "
        f"{[(s.status, s.error) for s in failed[:3]]}"
    )
    assert len(samples) > 300
    for change, following in zip(changes, [*changes[1:], None], strict=True):
        until = following.begun if following else end
        window = [s for s in samples if change.converged <= s.started and s.finished < until]
        assert window, f"no traffic after the {change.how} flip to {change.backend}"
        wrong = [s for s in window if s.backend != change.backend]
        assert not wrong, (
            f"{len(wrong)} of {len(window)} responses after the {change.how} flip to "
            f"{change.backend} had converged came from {wrong[0].backend}"
        )


def test_flips_reach_every_worker_of_every_instance_through_outages(
    fleet: list[GatewayProcess], redis_server: RedisServer
) -> None:
    urls = [gw.url for gw in fleet]
    rng = random.Random(11)

    async def scenario() -> tuple[list[Sample], list[Change], float, list[float]]:
        samples: list[Sample] = []
        changes: list[Change] = []
        took: list[float] = []
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(urls, stop, samples))
        revision = (await fleet_view(urls[0]))["revision"]
        assert revision == 1  # seeded once, by one of the four workers
        await converged(urls[0], 1, bound=15)  # the last worker to start may beat late
        backend = "legacy"

        async def flip(how: str) -> None:
            nonlocal backend, revision
            backend = "new" if backend == "legacy" else "legacy"
            begun = time.monotonic()
            if how == "cli":
                out = await cli_flip(redis_server.url, backend)
                assert out.startswith(f"redis://:***@127.0.0.1:{redis_server.port}/0: r -> ")
            else:
                async with httpx.AsyncClient(base_url=rng.choice(urls), timeout=10) as admin:
                    r = await admin.put("/-/routes/r", json={"backend": backend})
                    assert r.status_code == 200, r.text
            revision += 1
            took.append(await converged(urls[0], revision))
            since = time.monotonic()
            changes.append(Change(begun, since, backend, how))
            # Traffic on the new table, checked afterwards: some whole requests.
            deadline = since + 20
            while sum(s.started >= since for s in samples) < 40:
                assert time.monotonic() < deadline, "no traffic"
                await asyncio.sleep(0.05)

        for how in ("admin", "cli", "admin", "admin", "cli", "admin"):
            await flip(how)

        # Two edits at once, from both instances: both land, neither is lost.
        async with httpx.AsyncClient(timeout=10) as admin:
            a, b = await asyncio.gather(
                admin.put(urls[0] + "/-/routes/other", json={"canary": {"percent": 25}}),
                admin.put(urls[1] + "/-/routes/other", json={"backend": "new"}),
            )
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        revision += 2
        await converged(urls[0], revision)
        other = (await httpx.AsyncClient().get(urls[1] + "/-/routes")).json()["routes"][1]
        assert (other["backend"], other["canary"]["percent"]) == ("new", 25)

        # Redis stopped, then frozen: serving goes on, edits are refused, then resume.
        for fault in ("stop", "freeze"):
            if fault == "stop":
                redis_server.stop()
            else:
                redis_server.freeze()
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient(base_url=urls[1], timeout=20) as admin:
                started = time.monotonic()
                r = await admin.put("/-/routes/r", json={"backend": "new"})
                assert r.status_code == 503, r.text
                assert time.monotonic() - started < 8
                error = r.json()["error"]
                assert error.startswith(f"store redis://:***@127.0.0.1:{redis_server.port}/0")
                assert "did not answer" in error and error.endswith("; nothing was changed")
                assert PASSWORD not in r.text
                await asyncio.sleep(1.5)  # the watch notices too
                store = (await admin.get("/-/routes")).json()["store"]
                assert store["reachable"] is False and store["unreachable_since"], store
                assert PASSWORD not in json.dumps(store)
            if fault == "stop":
                redis_server.start()
            else:
                redis_server.thaw()
            await flip("admin")

        stop.set()
        end = time.monotonic()
        await traffic
        return samples, changes, end, took

    samples, changes, end, took = asyncio.run(scenario())
    check(samples, changes, end)
    assert len(took) == 8
    logs = "".join(gw.log() for gw in fleet)
    assert PASSWORD not in logs
    assert "store unreachable, serving the last table" in logs
    assert "store reachable again after" in logs


def test_an_invalid_table_written_into_redis_is_rejected_everywhere(
    fleet: list[GatewayProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    urls = [gw.url for gw in fleet]
    good = httpx.get(urls[0] + "/-/routes").json()["sha256"]
    revision = httpx.get(urls[0] + "/-/fleet").json()["revision"]
    bad = str(revision + 1)
    redis_server.cli("HSET", f"{KEY}:table", "text", "version: 1\nroutes: [", "revision", bad)
    redis_server.cli("PUBLISH", f"{KEY}:changes", bad)
    deadline = time.monotonic() + SETTLE
    while True:
        view = httpx.get(urls[1] + "/-/fleet").json()
        errors = [i["last_error"] for i in view["instances"]]
        if len(errors) == 2 and all(errors):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert view["revision"] == revision + 1
    assert all("invalid YAML" in e for e in errors)
    assert [i["revision"] for i in view["instances"]] == [revision] * 2  # last good one kept
    for url in urls:
        routes = httpx.get(url + "/-/routes").json()
        assert routes["sha256"] == good
        assert routes["last_error"]["problems"][0].startswith(
            f"redis://:***@127.0.0.1:{redis_server.port}/0 key {KEY}:2:"
        )
        assert httpx.get(url + "/status/200").status_code == 200
    events = httpx.get(urls[0] + "/-/events").json()["events"]
    assert "rejected" in {e["kind"] for e in events}
    assert PASSWORD not in json.dumps(events)

    # A good table pushed on top: every instance applies it and the error clears.
    path = write_routes(
        tmp_path, TABLE.replace("backend: legacy\n  - {id: other", "backend: new\n  - {id: other")
    )
    assert main(["push", str(path), "--store", redis_server.url, "--store-key", KEY]) == 0
    deadline = time.monotonic() + SETTLE
    while True:
        view = httpx.get(urls[0] + "/-/fleet").json()
        if [(i["revision"], i["last_error"]) for i in view["instances"]] == [
            (revision + 2, None)
        ] * 2:
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert all(httpx.get(u + "/status/200").headers["x-gateway-backend"] == "new" for u in urls)


def route_on(url: str, route_id: str) -> dict[str, Any]:
    """A route as `/-/routes` shows it, asked on a connection of its own (any worker)."""
    routes = httpx.get(url + "/-/routes", headers={"connection": "close"}).json()["routes"]
    found: dict[str, Any] = next(r for r in routes if r["id"] == route_id)
    return found


def wait_for(what: str, check: Any, bound: float = SETTLE) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"not within {bound}s: {what}"
        time.sleep(0.05)


def trip(url: str) -> None:
    """Failures on fresh connections until some worker of that instance trips."""
    for _ in range(12):
        r = httpx.get(url + "/fail", headers={"connection": "close"}, timeout=20)
        assert r.status_code == 200  # the fallback served it


def events(url: str, kind: str) -> list[dict[str, Any]]:
    found = httpx.get(url + "/-/events").json()["events"]
    return [e for e in found if e["kind"] == kind]


def test_a_rollback_on_one_instance_is_an_edit_every_instance_applies(
    fleet: list[GatewayProcess], redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [gw.url for gw in fleet]
    assert route_on(urls[1], "flaky")["backend"] == "new"
    trip(urls[0])
    for url in urls:
        wait_for(f"rollback on {url}", lambda u=url: route_on(u, "flaky")["backend"] == "legacy")
        assert "state" not in route_on(url, "flaky")  # stored, not merely applied
    [event] = events(urls[1], "rollback")
    assert (event["by"], event["route"], event["persisted"]) == (
        "automatic rollback",
        "flaky",
        True,
    )
    assert (event["from"], event["to"], event["routes"]) == ("new", "legacy", ["flaky"])
    assert main(["history", "--store", redis_server.url, "--store-key", KEY]) == 0
    newest = capsys.readouterr().out.splitlines()[0]
    assert "rollback" in newest and "automatic rollback" in newest and newest.endswith("flaky")


def test_a_rollback_while_redis_is_down_is_applied_then_stored_when_it_is_back(
    fleet: list[GatewayProcess], redis_server: RedisServer
) -> None:
    urls = [gw.url for gw in fleet]
    r = httpx.put(urls[0] + "/-/routes/flaky", json={"backend": "new"})
    assert r.status_code == 200, r.text
    for url in urls:
        wait_for(f"flip on {url}", lambda u=url: route_on(u, "flaky")["backend"] == "new")
    earlier = len(events(urls[0], "rollback"))
    redis_server.stop()
    try:
        trip(urls[1])
        # Applied on both workers of the instance that tripped, and said so.
        wait_for("local rollback", lambda: route_on(urls[1], "flaky")["backend"] == "legacy", 10)
        for _ in range(8):
            flaky = route_on(urls[1], "flaky")
            assert (flaky["backend"], flaky["state"]) == ("legacy", "rolled back"), flaky
            assert flaky["rolled_back"]["persisted"] is False
        assert route_on(urls[0], "flaky")["backend"] == "new"  # it could not hear of it
    finally:
        redis_server.start()

    # Stored once Redis answers: every instance takes it from the store.
    def stored(url: str) -> bool:
        flaky = route_on(url, "flaky")
        return flaky["backend"] == "legacy" and "state" not in flaky

    for url in urls:
        wait_for(f"stored rollback on {url}", lambda u=url: stored(u), 15)

    # Both reach the fleet's log: the local rollback (tried again until Redis took it)
    # and the stored one.
    def logged() -> list[bool]:
        return [e["persisted"] for e in events(urls[0], "rollback")][earlier:]

    wait_for("both rollback events", lambda: True in logged() and False in logged(), 15)
    log = fleet[1].log()
    assert "; applied, not persisted: store redis://:***@" in log
    assert "automatic rollback of route=flaky stored now that" in log
