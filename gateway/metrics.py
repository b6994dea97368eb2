"""Prometheus metrics: per route and per backend, resolved when a table is built.

Names and labels are a contract with dashboards and alert rules (deploy/):

- gateway_requests_total{route,backend,method,code}
- gateway_request_duration_seconds{route,backend}        histogram, 1 ms .. 10 s
- gateway_requests_in_flight{backend}
- gateway_backend_errors_total{route,backend,kind}       answers the gateway gave for a backend
- gateway_route_weight{route,backend}                    share of traffic, from the live table
- gateway_config_reloads_total{result}                   success | failure
- gateway_config_last_reload_success_timestamp_seconds
- gateway_shadow_requests_total{route,result}            match | mismatch | error | dropped
- gateway_fallbacks_total{route,from,to}
- gateway_rollbacks_total{route}

`route` is a route id (or `_default`), never a raw path, so cardinality is
bounded by the table. The request path only touches label children that
`RouteMetrics` resolved when the table was built, plus a small per-route
cache of (method, code) counter children.

With several workers, prometheus-client's multiprocess mode aggregates the
counters and histograms (`gateway serve` prepares a private directory). The
route weights describe the live table, so they are not stored at all: the
worker answering the scrape reports its own table, and a route removed by a
reload simply stops being reported.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue

from gateway.errors import FAILURE_KINDS
from gateway.routefile.model import HTTP_METHODS
from gateway.shadow import RESULTS as SHADOW_RESULTS

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The method label: every method a route may list but TRACE and CONNECT (seldom
# seen, counted as OTHER with anything else a client sends), and WEBSOCKET for a
# WebSocket (the inventory's name for one).
_METHODS = (HTTP_METHODS - {"TRACE", "CONNECT"}) | {"WEBSOCKET"}
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

Weights = Callable[[], Iterable[tuple[str, str, float]]]


class RouteMetrics:
    """The label children one (route, backend) pair writes to, resolved up front.

    A request writes to prometheus-client's value objects of those children,
    bound here once: the public `inc()` and `observe()` check on every call what
    cannot change after a child exists (that it has its labels, that the amount is
    positive), and the histogram finds its bucket in a Python loop. The values are
    the same ones the public methods write, so a scrape sees the same figures.

    In one process (`direct`), a value is a float behind a lock, so that threads
    may write it together. Every write of the request path's values is made in
    the event loop's thread (the request path is their only writer), so the
    request path adds to the float itself, without the lock: a scrape, which
    reads in another thread, sees the figure before or after an addition, as it
    would with the lock. In multiprocess mode a value is a file: written through
    its own `inc()`.

    These are internals: pyproject.toml bounds prometheus-client's version so that
    a release that changes them fails the install, not production (tests/test_metrics.py
    reads the figures back through the exposition and compares them with the
    public methods').
    """

    __slots__ = (
        "_bounds",
        "_buckets",
        "_by_status",
        "_direct",
        "_fallbacks",
        "_in_flight",
        "_requests",
        "_sum",
        "backend",
        "duration",
        "errors",
        "in_flight",
        "route",
    )

    def __init__(self, metrics: Metrics, route: str, backend: str) -> None:
        self.route = route
        self.backend = backend
        self._requests = metrics.requests
        self._fallbacks = metrics.fallbacks
        self.duration = metrics.duration.labels(route, backend)
        self._bounds = self.duration._upper_bounds
        self._buckets: list[Any] = list(self.duration._buckets)
        self._sum: Any = self.duration._sum
        self.in_flight = metrics.in_flight.labels(backend)
        self._in_flight: Any = self.in_flight._value
        self._direct = type(self._in_flight) is MutexValue
        # The requests counter child's value, per (method, status) seen (a method of
        # the label set only).
        self._by_status: dict[tuple[str, int], Any] = {}
        # Created up front, so that the first failure of a kind is a visible increase.
        self.errors = {
            kind: metrics.backend_errors.labels(route, backend, kind) for kind in FAILURE_KINDS
        }

    def count_fallback(self, source: str) -> None:
        """A request of this route replayed here after `source` failed."""
        self._fallbacks.labels(self.route, source, self.backend).inc()

    def began(self) -> None:
        """A request started on this backend."""
        if self._direct:
            self._in_flight._value += 1
        else:
            self._in_flight.inc(1)

    def ended(self) -> None:
        """A request this backend was serving ended."""
        if self._direct:
            self._in_flight._value -= 1
        else:
            self._in_flight.inc(-1)

    def observe(self, method: str, status: int, seconds: float) -> None:
        """A request answered with `status` after `seconds`."""
        count = self._by_status.get((method, status))
        if count is None:
            count = self._count(method, status)
        # The first bucket whose upper bound is at least `seconds` (the last is +Inf).
        bucket = self._buckets[bisect_left(self._bounds, seconds)]
        if self._direct:
            count._value += 1
            self._sum._value += seconds
            bucket._value += 1
        else:
            count.inc(1)
            self._sum.inc(seconds)
            bucket.inc(1)

    def _count(self, method: str, status: int) -> Any:
        label = method if method in _METHODS else "OTHER"
        count = self._requests.labels(self.route, self.backend, label, str(status))._value
        if label is method:
            # Only a method of the label set is kept: a client may name endlessly
            # many others (h11 takes any token), and each would stay here.
            self._by_status[(method, status)] = count
        return count


class Metrics:
    """The gateway's metric families, registered on a registry of their own."""

    def __init__(self, weights: Weights | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # `_created` series double the exposition for no dashboard use
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, help: str, labels: list[str]) -> Counter:
            return Counter(name, help, labels, registry=r)

        self.requests = counter(
            "gateway_requests",
            "Requests answered, per route, backend, method and status code.",
            ["route", "backend", "method", "code"],
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response, per route and backend.",
            ["route", "backend"],
            buckets=BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests being served, per backend.",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backend_errors = counter(
            "gateway_backend_errors",
            "Requests the gateway answered itself because the backend failed, per kind.",
            ["route", "backend", "kind"],
        )
        self.reloads = counter(
            "gateway_config_reloads", "Route table reloads, by result.", ["result"]
        )
        self.shadow = counter(
            "gateway_shadow_requests",
            "Shadow copies, by result: match, mismatch, error, dropped.",
            ["route", "result"],
        )
        self.fallbacks = counter(
            "gateway_fallbacks",
            "Requests replayed on the fallback backend after the first one failed.",
            ["route", "from", "to"],
        )
        self.rollbacks = counter(
            "gateway_rollbacks",
            "Automatic rollbacks: the route was flipped to its fallback.",
            ["route"],
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)  # both series exist from the start
        self.last_reload_success = Gauge(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last route table that was applied.",
            registry=r,
            multiprocess_mode="max",
        )
        self._weights = weights
        self._live = _LiveCollector(self)
        if self.multiprocess_dir is None:
            r.register(self._live)

    def set_weights_source(self, weights: Weights) -> None:
        self._weights = weights

    def shadow_children(self, route: str) -> dict[str, Counter]:
        return {result: self.shadow.labels(route, result) for result in SHADOW_RESULTS}

    def for_route(self, route: str, backend: str) -> RouteMetrics:
        return RouteMetrics(self, route, backend)

    def reload_result(self, ok: bool, at: float) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.last_reload_success.set(at)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self._scraped()), CONTENT_TYPE_LATEST

    def families(self) -> list[Metric]:
        """Every metric family as a scrape sees it (all workers together): the inventory's
        live figures come from here."""
        return list(self._scraped().collect())

    def _scraped(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self._live)
        return registry


class _LiveCollector(Collector):
    """Reports what the live route table says, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "gateway_route_weight",
            "Share of a route's traffic the live table sends to a backend (0 to 1).",
            labels=["route", "backend"],
        )
        source = self._metrics._weights
        if source is not None:
            for route, backend, weight in source():
                family.add_metric([route, backend], weight)
        yield family


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that no longer exist.

    prometheus-client has no call that lists the processes with files in the
    directory: this reads its file names (`gauge_live<mode>_<pid>.db`), an
    internal. pyproject.toml bounds prometheus-client's version so that a release
    that renames them fails the install, not production.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    pids = {int(m.group(1)) for name in names if (m := _LIVE_GAUGE_FILE.match(name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            prom_multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


def prepare_multiprocess_dir(directory: Path) -> None:
    """Create (or empty) the private directory the workers share, before they start."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
