"""`gateway serve --store`: starting with Redis down, seeding, and what `--config` is for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.cli import main
from tests.harness import ROOT, TEST_BACKENDS, GatewayProcess, free_port, write_routes
from tests.redis_server import RedisServer

TABLE = (
    "version: 1\n" + TEST_BACKENDS + 'routes:\n  - {id: r, path: "/status/{code}", backend: %s}\n'
)


def backend(url: str) -> str:
    return httpx.get(url + "/status/200", timeout=10).headers["x-gateway-backend"]


def test_started_while_redis_is_down_it_serves_config_then_the_store(tmp_path: Path) -> None:
    pushed = write_routes(tmp_path, TABLE % "new", "pushed.yaml")
    local = write_routes(tmp_path, TABLE % "legacy")
    with RedisServer(tmp_path) as redis:
        assert main(["push", str(pushed), "--store", redis.url]) == 0
        redis.stop()
        with GatewayProcess(local, "--store", redis.url) as gw:
            assert backend(gw.url) == "legacy"  # --config, while Redis does not answer
            store = httpx.get(gw.url + "/-/routes").json()["store"]
            assert store["reachable"] is False and store["revision"] == 0
            redis.start()
            deadline = time.monotonic() + 10
            while backend(gw.url) != "new":
                assert time.monotonic() < deadline, gw.log()
                time.sleep(0.05)
            routes = httpx.get(gw.url + "/-/routes").json()
            assert routes["store"]["reachable"] is True
            assert routes["store"]["revision"] == 1
            assert routes["store"]["config_ignored"] == str(local)  # never written over
            log = gw.log()
        assert main(["pull", "--store", redis.url]) == 0
    assert f"store unreachable at start: serving {local} until it answers" in log
    assert f"--config {local} ignored: the store holds a table (revision 1)" in log


def test_an_empty_store_and_no_config_is_a_clear_failure_to_start(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(tmp_path / "missing.yaml"),
                "--store",
                redis.url,
                "--port",
                str(free_port()),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert b"the store holds no route table; load one with 'gateway push FILE" in done.stderr
