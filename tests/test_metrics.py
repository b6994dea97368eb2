"""Exact metric values after known traffic, for every backend kind and error path."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gateway.app import Gateway
from gateway.metrics import BUCKETS, Metrics
from gateway.settings import Settings
from tests import apps
from tests.harness import ThreadServer, free_port, gateway_client, write_routes


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    with ThreadServer(apps.asgi) as server:
        yield server


@pytest.fixture
def routes(tmp_path: Path, upstream: ThreadServer) -> Path:
    return write_routes(
        tmp_path,
        f"""\
version: 1
backends:
  legacy: {{wsgi: "tests.apps:wsgi"}}
  new: {{asgi: "tests.apps:asgi"}}
  slow: {{asgi: "tests.apps:asgi", timeout: 0.2}}
  remote: {{url: "{upstream.url}", timeout: 0.5}}
  down: {{url: "http://127.0.0.1:{free_port()}"}}
default: legacy
routes:
  - {{id: new.echo, path: "/new/{{p:path}}", backend: new}}
  - {{id: new.fail, path: /fail, backend: new}}
  - {{id: new.ws, path: /ws, backend: new}}
  - {{id: slow.hang, path: /hang, backend: slow}}
  - {{id: remote.echo, path: "/remote/{{p:path}}", backend: remote}}
  - {{id: remote.hang, path: /remote-hang, backend: remote}}
  - {{id: down, path: /down, backend: down}}
""",
    )


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = client.get("/-/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return values.get((name, frozenset(labels.items())))


def test_requests_are_counted_per_route_backend_method_and_code(routes: Path) -> None:
    with gateway_client(routes) as client:
        for _ in range(3):
            assert client.get("/new/a").status_code == 200
        assert client.post("/new/b", content=b"x").status_code == 200
        for _ in range(2):
            assert client.get("/anything/else").status_code == 200
        assert client.put("/remote/x").status_code == 200
        assert client.request("PROPFIND", "/remote/y").status_code == 405
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo:hi"
        m = scrape(client)
    count = "gateway_requests_total"
    assert value(m, count, route="new.echo", backend="new", method="GET", code="200") == 3
    assert value(m, count, route="new.echo", backend="new", method="POST", code="200") == 1
    assert value(m, count, route="_default", backend="legacy", method="GET", code="200") == 2
    assert value(m, count, route="remote.echo", backend="remote", method="PUT", code="200") == 1
    # Unusual methods share one label value: cardinality stays bounded.
    assert value(m, count, route="remote.echo", backend="remote", method="OTHER", code="405") == 1
    # A WebSocket is labelled as one, not as an unusual method.
    assert value(m, count, route="new.ws", backend="new", method="WEBSOCKET", code="101") == 1
    hist = "gateway_request_duration_seconds_count"
    assert value(m, hist, route="new.echo", backend="new") == 4
    assert value(m, hist, route="_default", backend="legacy") == 2
    assert (
        value(
            m, "gateway_request_duration_seconds_bucket", route="new.echo", backend="new", le="10.0"
        )
        == 4
    )
    assert value(m, "gateway_requests_in_flight", backend="new") == 0
    # Only the route id is ever a label, never the raw path.
    assert not [k for k in m if ("route", "/new/a") in k[1]]
    assert not [k for k in m if k[0].endswith("_created")]


@pytest.mark.parametrize(
    ("path", "route", "backend", "code", "kind"),
    [
        ("/fail", "new.fail", "new", "500", "exception"),
        ("/raise", "_default", "legacy", "500", "exception"),
        ("/hang", "slow.hang", "slow", "504", "timeout"),
        ("/remote-hang", "remote.hang", "remote", "504", "timeout"),
        ("/down", "down", "down", "502", "connect"),
    ],
)
def test_every_answer_the_gateway_gives_for_a_backend_is_counted(
    routes: Path, path: str, route: str, backend: str, code: str, kind: str
) -> None:
    with gateway_client(routes) as client:
        assert client.get(path).status_code == int(code)
        assert client.get(path).status_code == int(code)
        m = scrape(client)
    assert value(m, "gateway_backend_errors_total", route=route, backend=backend, kind=kind) == 2
    assert (
        value(m, "gateway_requests_total", route=route, backend=backend, method="GET", code=code)
        == 2
    )
    assert value(m, "gateway_requests_in_flight", backend=backend) == 0


def test_route_weights_follow_the_live_table(routes: Path) -> None:
    with gateway_client(routes, watch_interval=5) as client:
        m = scrape(client)
        assert value(m, "gateway_route_weight", route="new.echo", backend="new") == 1
        assert value(m, "gateway_route_weight", route="_default", backend="legacy") == 1
        assert value(m, "gateway_config_reloads_total", result="success") == 1
        assert value(m, "gateway_config_last_reload_success_timestamp_seconds")
        text = routes.read_text()
        # Remove one route, flip another.
        routes.write_text(
            text.replace("  - {id: down, path: /down, backend: down}\n", "").replace(
                "/fail, backend: new", "/fail, backend: legacy"
            )
        )
        assert client.post("/-/reload").status_code == 200
        routes.write_text("version: 1\nbackends: {}\n")
        assert client.post("/-/reload").status_code == 422
        m = scrape(client)
    assert value(m, "gateway_route_weight", route="down", backend="down") is None
    assert value(m, "gateway_route_weight", route="new.fail", backend="new") is None
    assert value(m, "gateway_route_weight", route="new.fail", backend="legacy") == 1
    assert value(m, "gateway_config_reloads_total", result="success") == 2
    assert value(m, "gateway_config_reloads_total", result="failure") == 1


def test_metrics_can_be_turned_off(routes: Path) -> None:
    with gateway_client(routes, metrics=False) as client:
        assert client.get("/new/x").status_code == 200
        r = client.get("/-/metrics")  # the admin API's now, which has no such path
    assert r.status_code == 404
    assert "x-gateway-backend" not in r.headers


def test_metrics_path_is_configurable(routes: Path) -> None:
    with gateway_client(routes, metrics_path="/-metrics") as client:
        assert "gateway_requests_total" in client.get("/-metrics").text
        assert client.get("/metrics").headers["x-gateway-backend"] == "legacy"
        assert client.get("/-/metrics").status_code == 404


def test_requests_are_answered_while_a_scrape_renders(routes: Path) -> None:
    """A large table's exposition takes seconds to render: not on the event loop."""
    rendering = threading.Event()
    release = threading.Event()
    gateway = Gateway(Settings(config=str(routes)))
    assert gateway.metrics is not None
    render = gateway.metrics.render

    def slow_render() -> tuple[bytes, str]:
        rendering.set()
        assert release.wait(10)
        return render()

    gateway.metrics.render = slow_render  # type: ignore[method-assign]
    with ThreadServer(gateway) as server:
        scrape = threading.Thread(target=lambda: httpx.get(server.url + "/-/metrics", timeout=15))
        scrape.start()
        assert rendering.wait(5)
        r = httpx.get(server.url + "/new/x", timeout=5)  # answered while the scrape waits
        assert r.status_code == 200
        release.set()
        scrape.join(15)
        metrics = httpx.get(server.url + "/-/metrics", timeout=5).text
    assert 'route="new.echo"' in metrics


def test_durations_fall_in_the_buckets_prometheus_client_puts_them_in() -> None:
    """The request path writes the histogram's values itself (RouteMetrics): a scrape
    shows what prometheus-client's own `observe()` gives, bounds included (`le` is <=)."""
    durations = [0.0, 0.0005, 0.001, 0.0010001, 0.0999, 0.1, 0.7, 2.5, 10.0, 10.5, 3600.0]
    metrics = Metrics()
    route = metrics.for_route("r", "new")
    registry = CollectorRegistry()
    labels = ["route", "backend"]
    name = "gateway_request_duration_seconds"
    reference = Histogram(name, "reference", labels, buckets=BUCKETS, registry=registry)
    for seconds in durations:
        route.observe("GET", 200, seconds)
        reference.labels("r", "new").observe(seconds)
    route.began()
    route.began()
    route.ended()

    def histogram(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode())
            if family.name == name
            for s in family.samples
        }

    ours = histogram(metrics.render()[0])
    assert ours == histogram(generate_latest(registry))
    at_1ms = frozenset({("route", "r"), ("backend", "new"), ("le", "0.001")})
    assert ours[(f"{name}_bucket", at_1ms)] == 3
    body = metrics.render()[0].decode()
    assert 'gateway_requests_total{backend="new",code="200",method="GET",route="r"} 11.0' in body
    assert 'gateway_requests_in_flight{backend="new"} 1.0' in body


def test_requests_with_endless_unknown_methods_take_no_memory_per_method() -> None:
    """A server on h11 takes any token as a method: a client naming a new one in every
    request is counted under OTHER, and the gateway keeps nothing per name it used."""
    metrics = Metrics()
    route = metrics.for_route("r", "new")
    route.observe("GET", 200, 0.01)
    tracemalloc.start()
    try:
        # First, caches of a fixed size fill (prometheus-client's own, about 140 KiB).
        for n in range(5_000):
            route.observe(f"BREW{n}", 405, 0.01)
        before = tracemalloc.get_traced_memory()[0]
        for n in range(5_000, 25_000):
            route.observe(f"BREW{n}", 405, 0.01)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, grown  # one entry per name kept: megabytes
    body = metrics.render()[0].decode()
    assert (
        'gateway_requests_total{backend="new",code="405",method="OTHER",route="r"} 25000.0' in body
    )
    assert 'gateway_requests_total{backend="new",code="200",method="GET",route="r"} 1.0' in body
