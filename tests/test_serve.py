"""`gateway serve` as operators run it: refusing bad files, multiprocess metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port


def serve(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway serve --config PATH ARGS` run to its exit (each test here expects one)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_an_invalid_file_with_the_check_report(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "version: 1\nbackends:\n  legacy: {wsgi: 'legacy_flask.app:app'}\n"
        "default: legacy\nroutes:\n  - {id: a, path: /a, backend: nwe}\n"
    )
    result = serve(path, "--port", "1")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}:6:32: route 'a': unknown backend 'nwe'; use one of: legacy",
        f"{path}: invalid; the gateway did not start",
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_exits_1_when_a_backend_fails_to_start(tmp_path: Path, workers: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\nbackends:\n  new: {asgi: 'tests.apps:failing_startup'}\n")
    result = serve(path, "--port", str(free_port()), "--workers", workers)
    assert result.returncode == 1
    assert "backend 'new' failed to start: database unreachable" in result.stderr


@pytest.mark.parametrize("taken", ["traffic", "admin"])
def test_serve_names_the_address_it_cannot_listen_on(tmp_path: Path, taken: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\nbackends:\n  new: {asgi: 'tests.apps:asgi'}\n")
    with socket.socket() as other:  # another server, on the port the gateway wants
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = other.getsockname()[1]
        ports = {"traffic": free_port(), "admin": free_port()} | {taken: busy}
        result = serve(
            path, "--port", str(ports["traffic"]), "--admin-listen", f"127.0.0.1:{ports['admin']}"
        )
    assert result.returncode == 1
    assert (
        f"gateway serve: cannot listen on 127.0.0.1:{busy} ({taken} port); "
        "is another server running there?"
    ) in result.stderr.splitlines()


WORKER = """
import os, sys
from gateway.metrics import Metrics
m = Metrics()
m.for_route("r", "new").in_flight.inc()   # a request in flight when the worker dies
m.for_route("r", "new").observe("GET", 200, 0.01)
os._exit(0)
"""

SCRAPE = """
from gateway.metrics import Metrics
print(Metrics().render()[0].decode())
"""


def test_a_dead_workers_gauges_do_not_linger_but_its_counts_stay(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    text = subprocess.run(
        [sys.executable, "-c", SCRAPE],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert 'gateway_requests_in_flight{backend="new"}' not in text
    assert 'gateway_requests_total{backend="new",code="200",method="GET",route="r"} 2.0' in text
