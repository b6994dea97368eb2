"""A rolling restart on one host, as Kubernetes does one: two gateways behind a small
balancer that polls `/-/readyz` and sends only to ready ones; each gateway in turn is
stopped with SIGTERM under load and replaced. Not one request may fail (with no
shutdown delay, the same test loses requests to refused connections)."""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.harness import ROOT, GatewayProcess

DELAY = 2.0  # the manifests' shutdown delay, scaled to the test; far above the poll period
POLL = 0.2  # a readiness probe's period


class ReadyBalancer:
    """Sends each request to a random gateway among those whose readyz last said 200."""

    def __init__(self) -> None:
        self.ready: set[str] = set()
        self.known: set[str] = set()
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._poll, daemon=True)]
        self._threads += [threading.Thread(target=self._load, daemon=True) for _ in range(4)]

    def add(self, url: str) -> None:
        with self._lock:
            self.known.add(url)

    def remove(self, url: str) -> None:
        with self._lock:
            self.known.discard(url)

    def _poll(self) -> None:
        with httpx.Client(timeout=1) as client:
            while not self._stop.is_set():
                with self._lock:
                    known = list(self.known)
                ready = set()
                for url in known:
                    try:
                        if client.get(url + "/-/readyz").status_code == 200:
                            ready.add(url)
                    except httpx.HTTPError:
                        pass
                with self._lock:
                    self.ready = ready
                time.sleep(POLL)

    def _load(self) -> None:
        clients: dict[str, httpx.Client] = {}
        try:
            while not self._stop.is_set():
                with self._lock:
                    ready = sorted(self.ready)
                if not ready:
                    time.sleep(0.01)
                    continue
                url = random.choice(ready)
                client = clients.get(url)
                if client is None:
                    client = clients[url] = httpx.Client(base_url=url, timeout=10)
                try:
                    if random.random() < 0.2:
                        book = {"title": "Rolling", "author": "Restart"}
                        response = client.post("/books", json=book)
                        ok = response.status_code == 201
                    else:
                        response = client.get("/books")
                        ok = response.status_code == 200
                    if not ok:
                        self.failures.append(f"{url}: {response.status_code} {response.text}")
                    else:
                        with self._lock:
                            self.served[url] += 1
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
        finally:
            for client in clients.values():
                client.close()

    def __enter__(self) -> ReadyBalancer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def wait_until(condition: object, seconds: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def replace(balancer: ReadyBalancer, old: GatewayProcess, new: GatewayProcess) -> int:
    """Bring `new` into service, then stop `old` under load; its exit code."""
    assert old.proc is not None
    new.__enter__()
    balancer.add(new.url)
    wait_until(lambda: balancer.served[new.url] >= 20, 30, f"traffic on {new.url}")
    old.proc.send_signal(signal.SIGTERM)
    code = old.proc.wait(DELAY + 30)
    balancer.remove(old.url)
    old.__exit__()
    return code


def test_rolling_restart_under_load_fails_no_request(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    shutil.copy(ROOT / "routes.yaml", routes)
    args = ("--shutdown-delay", str(DELAY), "--graceful-timeout", "10")
    first, second = GatewayProcess(routes, *args), GatewayProcess(routes, *args)
    first.__enter__()
    second.__enter__()
    try:
        with ReadyBalancer() as balancer:
            balancer.add(first.url)
            balancer.add(second.url)
            wait_until(lambda: min(balancer.served.values(), default=0) >= 20, 30, "load")
            third = GatewayProcess(routes, *args)
            assert replace(balancer, first, third) == 0
            fourth = GatewayProcess(routes, *args)
            assert replace(balancer, second, fourth) == 0
            wait_until(lambda: balancer.served[fourth.url] >= 40, 30, "load on the last")
        for gateway in (third, fourth):
            gateway.__exit__()
    finally:
        for gateway in (first, second):
            gateway.__exit__()
    assert balancer.failures == []
    # Every gateway took its share, and the requests kept coming throughout.
    assert all(balancer.served[g.url] >= 20 for g in (first, second, third, fourth))
    assert sum(balancer.served.values()) > 200
