"""A real gateway (2 workers), scraped by a real Prometheus running deploy/'s rules.

One scenario (the module fixture) sends known traffic: `books.list` served by
legacy, then flipped to new through the admin API, with injected 5xx answers on
both sides and slow answers on the new one (tests/fault_apps.py), plus an open
event stream and, last, a rejected route file. Then every PromQL expression of the Grafana
dashboard and of rules.yml is evaluated at one instant through Prometheus's
HTTP API, and must return the expected series per route and backend: values
exact where PromQL keeps them exact (counters, gauges, the live table), and
within the bounds of rate()'s extrapolation elsewhere.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml

from gateway.metrics import BUCKETS
from gateway.routefile.editing import flip
from gateway.sources import FileSource
from tests.fault_apps import FAULT_HEADER
from tests.promsupport import (
    LABEL_VALUES,
    NAN,
    POSITIVE,
    REPO,
    RULES,
    PrometheusAPI,
    Query,
    Sample,
    Where,
    dashboard_queries,
    free_port,
    log_tail,
    prometheus_config_for,
    prometheus_tools,
    rule_queries,
    running,
    substitute,
    variables_in,
    wait_for,
    within,
)

GATEWAY = str(Path(sys.executable).parent / "gateway")  # the console script of this venv
ROUTES = ("_default", "books.events", "books.get", "books.list")

# The traffic measured, sent after a scrape saw each series (see _traffic).
LEGACY_OK, LEGACY_ERRORS = 59, 1  # books.list on legacy: 1/60 answered 500
NEW_OK, NEW_SLOW, NEW_ERRORS = 46, 8, 6  # books.list on new: 6/60 answered 500, 8/60 slow
CREATED = 20  # POST /books: _default, legacy, 201
MISSING = 10  # GET /books/999999: books.get, new, 404

WINDOW = 60.0  # seconds of $__rate_interval: the whole scenario fits in it
HISTORY = 12.0  # seconds of samples, at least, of every series when the queries run
SCRAPE = 1.0  # seconds between scrapes (promsupport.prometheus_config_for)
SLOW = 0.25  # the histogram bucket boundary under the injected 0.3s delay


class Served(NamedTuple):
    """The route a request must match and the backend that must answer it."""

    route: str
    backend: str


LIST_LEGACY = Served("books.list", "legacy")
LIST_NEW = Served("books.list", "new")
DEFAULT = Served("_default", "legacy")
GET_NEW = Served("books.get", "new")


def rate(count: int, window: float = WINDOW) -> Where:
    """A per-second rate over `window` of `count` requests.

    rate() extrapolates the increase it sees, up (never down), by at most 1.1
    average sample intervals at each end. Over HISTORY that is 2.2 intervals in
    HISTORY / SCRAPE of them, or one fewer when a scrape of a busy machine failed
    (seen: 1.190x against the 1.183x bound of a perfect history).
    """
    intervals = HISTORY / SCRAPE - 1
    return within(count / window, (1 + 2.2 / intervals) * count / window)


def ratio(value: float, rel: float = 0.1) -> object:
    return pytest.approx(value, rel=rel)


FAST = Where(lambda v: 0 < v < SLOW, f"in (0, {SLOW}) s")
SLOWED = Where(lambda v: SLOW <= v <= 0.5, f"in [{SLOW}, 0.5] s")
LATENCY = Where(lambda v: 0 < v <= 10, "in (0, 10] s")


@dataclass
class Scenario:
    prometheus: PrometheusAPI
    instance: str
    at: float = 0.0  # every query is evaluated at this instant
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def query(self, expr: str) -> list[Sample]:
        return self.prometheus.query(expr, self.at)


class Traffic:
    """Requests to the gateway, each checked and counted by (route, backend, code)."""

    def __init__(self, client: httpx.Client, counts: dict[tuple[str, str, str], int]) -> None:
        self.client = client
        self.counts = counts

    def send(
        self,
        n: int,
        method: str,
        path: str,
        served: Served,
        *,
        status: int,
        fault: str | None = None,
        body: object = None,
        parallel: bool = False,
    ) -> None:
        def one(_: int) -> None:
            headers = {FAULT_HEADER: fault} if fault else {}
            response = self.client.request(method, path, headers=headers, json=body)
            assert response.status_code == status, response.text
            assert response.headers["x-gateway-route"] == served.route
            assert response.headers["x-gateway-backend"] == served.backend

        if parallel:
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(one, range(n)))
        else:
            for i in range(n):
                one(i)
        key = (served.route, served.backend, str(status))
        self.counts[key] = self.counts.get(key, 0) + n


def _gateway_metric(client: httpx.Client, series: str) -> float | None:
    """One value of the gateway's own /-/metrics (all workers together)."""
    for line in client.get("/-/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _routes_file(directory: Path) -> Path:
    """The demo's routes.yaml on the fault-injecting apps, books.list on legacy."""
    text = (REPO / "routes.yaml").read_text(encoding="utf-8")
    for real, faulty in (
        ('{wsgi: "legacy_flask.app:app"}', '{wsgi: "tests.fault_apps:legacy"}'),
        # The fault-injecting legacy app wraps the Flask app: it has no session to share.
        ('{asgi: "new_fastapi.app:app", session_from: legacy}', '{asgi: "tests.fault_apps:new"}'),
    ):
        assert real in text, f"routes.yaml no longer has {real}"
        text = text.replace(real, faulty)
    # The scenario's traffic and expected series are the book routes': cut the login ones.
    login = text.index("  - id: me ")
    text = text[:login]
    # Shadow books.get on legacy: the 404s of MISSING answer alike on both sides.
    get_route = "    methods: [GET, HEAD]\n    backend: new\n"
    assert get_route in text, "routes.yaml no longer has books.get on new"
    text = text.replace(get_route, get_route + "    shadow: {backend: legacy}\n", 1)
    path = directory / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    FileSource(path).edit_now(flip("books.list", "legacy"))
    return path


def _traffic(scenario: Scenario, client: httpx.Client, log: Path) -> tuple[float, float]:
    """Legacy traffic, the flip of books.list, new traffic.

    Returns when the flip was applied (gateway clock) and when the last series
    appeared (monotonic clock).
    """
    prom = scenario.prometheus
    send = Traffic(client, scenario.counts).send

    def scraped() -> bool:
        return prom.value("sum(gateway_requests_total)") == sum(scenario.counts.values())

    # Each series is created, then scraped, before the measured traffic:
    # rate() counts nothing for the sample a series starts with.
    book = {"title": "Strangler Fig", "author": "A. Gardener"}
    send(1, "GET", "/books", LIST_LEGACY, status=200)
    send(1, "GET", "/books", LIST_LEGACY, status=500, fault="error")
    send(1, "POST", "/books", DEFAULT, status=201, body=book)
    send(1, "GET", "/books/999999", GET_NEW, status=404)
    wait_for(scraped, "a scrape of the first requests", log=log)
    send(LEGACY_OK, "GET", "/books", LIST_LEGACY, status=200)
    send(LEGACY_ERRORS, "GET", "/books", LIST_LEGACY, status=500, fault="error")
    send(CREATED, "POST", "/books", DEFAULT, status=201, body=book)
    send(MISSING, "GET", "/books/999999", GET_NEW, status=404)

    # The flip, through the admin API; the other worker follows the file.
    flipped = client.put("/-/routes/books.list", json={"backend": "new"})
    assert flipped.status_code == 200, flipped.text
    applied = 'gateway_config_reloads_total{result="success"}'
    wait_for(
        lambda: _gateway_metric(client, applied) == 4.0,
        "both workers to apply the flip (2 start-up loads, 2 reloads)",
    )
    flipped_at = _gateway_metric(client, "gateway_config_last_reload_success_timestamp_seconds")
    assert flipped_at is not None

    send(1, "GET", "/books", LIST_NEW, status=200)
    send(1, "GET", "/books", LIST_NEW, status=500, fault="error")
    wait_for(scraped, "a scrape after the flip", log=log)
    last_series_seen = time.monotonic()
    send(NEW_OK, "GET", "/books", LIST_NEW, status=200)
    send(NEW_ERRORS, "GET", "/books", LIST_NEW, status=500, fault="error")
    send(NEW_SLOW, "GET", "/books", LIST_NEW, status=200, fault="slow", parallel=True)
    wait_for(scraped, "a scrape of all the traffic", log=log)
    return flipped_at, last_series_seen


def _reject_route_file(
    scenario: Scenario, client: httpx.Client, routes: Path, flipped_at: float, log: Path
) -> None:
    """Break the route file once the rules have seen the flip applied."""
    prom = scenario.prometheus
    # A rejection in the same scrape interval as the success before it is not
    # told apart (see rules.yml): let the rules record the flip first.
    wait_for(
        lambda: (
            prom.value("job_instance:gateway_config_reload_failures:by_last_success")
            == math.floor(flipped_at) * 1e6
        ),
        "the rules to record the flip",
        log=log,
    )
    broken = routes.with_name("routes.yaml.new")  # replaced in one step, as an editor does
    broken.write_text("version: 1\nroutes: [this is not a route table\n", encoding="utf-8")
    broken.replace(routes)
    rejected = 'gateway_config_reloads_total{result="failure"}'
    wait_for(lambda: _gateway_metric(client, rejected) == 2.0, "both workers to reject the file")
    wait_for(
        lambda: (
            prom.value("sum(job_instance:gateway_config_reload_failures:since_last_success)") == 2.0
        ),
        "the rules to record the rejection",
        log=log,
    )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tools = prometheus_tools()
    tmp = tmp_path_factory.mktemp("prometheus-integration")
    routes = _routes_file(tmp)
    gateway_port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        "BOOKSTORE_DB": str(tmp / "bookstore.db"),
        # The gateway's workers import tests.fault_apps.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    gateway_args = [GATEWAY, "serve", "--config", str(routes), "--port", str(gateway_port)]
    gateway_args += ["--workers", "2", "--no-access-log", "--log-level", "warning"]
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config_for(gateway_port)), encoding="utf-8")
    prometheus_args = [
        tools.prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        "--log.level=warn",
    ]
    gateway_log, prometheus_log = tmp / "gateway.log", tmp / "prometheus.log"
    with (
        running(gateway_args, log=gateway_log, env=env) as gateway,
        running(prometheus_args, log=prometheus_log, cwd=tmp) as prometheus,
        # No keep-alive: every request is a new connection, so both workers serve some.
        httpx.Client(
            base_url=f"http://127.0.0.1:{gateway_port}",
            timeout=10,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client,
    ):
        prom = PrometheusAPI(f"http://127.0.0.1:{prometheus_port}")
        scenario = Scenario(prom, instance=f"127.0.0.1:{gateway_port}")
        try:
            wait_for(
                lambda: client.get("/-/readyz").status_code == 200,
                "the gateway to be ready",
                process=gateway,
                log=gateway_log,
            )
            wait_for(prom.ready, "Prometheus to be ready", process=prometheus, log=prometheus_log)
            flipped_at, last_series_seen = _traffic(scenario, client, prometheus_log)
            with client.stream("GET", "/books/events") as events:  # open till the end
                assert events.status_code == 200
                assert events.headers["x-gateway-backend"] == "new"
                _reject_route_file(scenario, client, routes, flipped_at, prometheus_log)
                wait_for(
                    lambda: prom.value('sum(gateway_requests_in_flight{backend="new"})') == 1.0,
                    "a scrape of the open event stream",
                )
                # rate() extrapolates a series' increase by up to a scrape interval
                # at each end: a long history keeps that small against the increase.
                time.sleep(max(0.0, last_series_seen + HISTORY - time.monotonic()))
                scenario.at = time.time()
                yield scenario
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- gateway log ---\n{log_tail(gateway_log)}"
                f"\n--- prometheus log ---\n{log_tail(prometheus_log)}"
            ) from None
        finally:
            prom.close()
    shutil.rmtree(tmp / "data", ignore_errors=True)


# --- what each expression must return ------------------------------------------

Values = Mapping[tuple[str, ...], object]


@dataclass(frozen=True)
class Expect:
    """The series an expression returns: their labels (besides __name__) and values.

    `values` is for `$route` = All (`.*`), or computed from the scenario. With
    `$route` = books.list, expressions that keep the route label must return the
    books.list entries of `values`; those that aggregate it away, `books_list`.
    `check` replaces all of that for the odd expression out.
    """

    labels: tuple[str, ...] = ()
    values: Values | Callable[[Scenario], Values] = field(default_factory=dict)
    books_list: Values | None = None
    check: Callable[[Scenario, str], None] | None = None


LEGACY_TOTAL = LEGACY_OK + LEGACY_ERRORS
NEW_TOTAL = NEW_OK + NEW_SLOW + NEW_ERRORS
LEGACY_RATIO = LEGACY_ERRORS / LEGACY_TOTAL
NEW_RATIO = NEW_ERRORS / NEW_TOTAL
SERVED = (  # (route, backend) pairs that answered requests
    ("books.list", "legacy"),
    ("books.list", "new"),
    ("books.get", "new"),
    ("_default", "legacy"),
)


def per_instance(value: float) -> Callable[[Scenario], Values]:
    return lambda s: {("gateway", s.instance): value}


def rejections_after_last_success(s: Scenario) -> Values:
    applied = s.prometheus.value("max(gateway_config_last_reload_success_timestamp_seconds)", s.at)
    assert applied is not None
    return {("gateway", s.instance): math.floor(applied) * 1e6 - 2}


def route_variable(s: Scenario, expr: str) -> None:
    match = LABEL_VALUES.match(expr)
    assert match is not None, expr
    metric, label = match.groups()
    assert sorted(s.prometheus.label_values(label, metric)) == sorted(ROUTES)


def every_bucket(s: Scenario, expr: str) -> None:
    bounds: dict[tuple[str, str], list[float]] = {}
    for sample in s.query(expr):
        labels = sample.labels
        key = (labels["route"], labels["backend"])
        bounds.setdefault(key, []).append(float(labels["le"]))
        assert sample.value >= 0
    assert set(bounds) == {*SERVED, ("books.events", "new")}  # no request finished there yet
    for key, found in bounds.items():
        assert sorted(found) == [*BUCKETS, math.inf], key


EXPECTED: dict[str, Expect] = {
    # --- migration progress
    'panel "Routes on the new backend" A': Expect((), {(): 0.75}),  # 3 of 4, _default on legacy
    'panel "Traffic on the new backend" A': Expect(
        (),
        {(): ratio((NEW_TOTAL + MISSING) / (NEW_TOTAL + MISSING + LEGACY_TOTAL + CREATED), 0.25)},
    ),
    'panel "Migration alerts firing" A': Expect((), {(): 0.0}),  # pending, not firing, yet
    'panel "Rejected route table changes" A': Expect((), {(): 2.0}),  # one per worker
    'panel "Route table applied" A': Expect((), {(): within(0, 60)}),
    'panel "Traffic on the new backend, per route" A': Expect(
        ("route",),
        {
            ("books.list",): ratio(NEW_TOTAL / (NEW_TOTAL + LEGACY_TOTAL), 0.3),
            ("books.get",): 1.0,
            ("_default",): 0.0,
        },
    ),
    'panel "Live route table: share of each route per backend" A': Expect(
        ("route", "backend"),
        {
            ("books.list", "new"): 1.0,
            ("books.get", "new"): 1.0,
            ("books.events", "new"): 1.0,
            ("_default", "legacy"): 1.0,
        },
    ),
    # --- traffic, errors and latency
    'panel "Requests per second by route and backend" A': Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): rate(LEGACY_TOTAL),
            ("books.list", "new"): rate(NEW_TOTAL),
            ("books.get", "new"): rate(MISSING),
            ("_default", "legacy"): rate(CREATED),
        },
    ),
    'panel "5xx error ratio by route and backend (5m, as the alert sees it)" A': Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): ratio(LEGACY_RATIO),
            ("books.list", "new"): ratio(NEW_RATIO),
            ("books.get", "new"): 0.0,  # 404s only
            ("_default", "legacy"): 0.0,
        },
    ),
    'panel "5xx error ratio by route and backend (5m, as the alert sees it)" B': Expect(
        ("route", "backend"),
        {("books.list", "legacy"): ratio(LEGACY_RATIO), ("_default", "legacy"): 0.0},
    ),
    'panel "p99 latency by route and backend" A': Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): FAST,
            ("books.list", "new"): SLOWED,
            ("books.get", "new"): FAST,
            ("books.events", "new"): NAN,  # no request finished on it
            ("_default", "legacy"): FAST,
        },
    ),
    'panel "Responses by backend and status code" A': Expect(
        ("backend", "code"),
        {
            ("legacy", "200"): rate(LEGACY_OK),
            ("legacy", "500"): rate(LEGACY_ERRORS),
            ("legacy", "201"): rate(CREATED),
            ("new", "200"): rate(NEW_OK + NEW_SLOW),
            ("new", "500"): rate(NEW_ERRORS),
            ("new", "404"): rate(MISSING),
        },
        books_list={
            ("legacy", "200"): rate(LEGACY_OK),
            ("legacy", "500"): rate(LEGACY_ERRORS),
            ("new", "200"): rate(NEW_OK + NEW_SLOW),
            ("new", "500"): rate(NEW_ERRORS),
        },
    ),
    # --- gateway
    'panel "Requests in flight per backend" A': Expect(
        ("backend",),
        {("legacy",): 0.0, ("new",): 1.0},  # the open event stream
    ),
    'panel "Backend failures answered by the gateway" A': Expect(
        # The legacy app answers its injected 500 itself; the new app raises and
        # the gateway answers for it.
        ("route", "backend", "kind"),
        {("books.list", "new", "exception"): rate(NEW_ERRORS)},
    ),
    # --- safe migration
    'panel "Shadow comparisons by route and result" A': Expect(
        ("route", "result"), {("books.get", "match"): rate(MISSING)}
    ),
    'panel "Fallbacks and automatic rollbacks" A': Expect(("route", "from", "to"), {}),
    'panel "Fallbacks and automatic rollbacks" B': Expect(("route",), {}),
    'panel "Route table reloads" A': Expect((), {(): POSITIVE}),
    'panel "Route table reloads" B': Expect((), {(): POSITIVE}),
    # --- per route (the repeated row)
    'panel "$route: requests per second by backend" A': Expect(
        ("backend",),
        {("legacy",): rate(LEGACY_TOTAL + CREATED), ("new",): rate(NEW_TOTAL + MISSING)},
        books_list={("legacy",): rate(LEGACY_TOTAL), ("new",): rate(NEW_TOTAL)},
    ),
    'panel "$route: 5xx error ratio by backend" A': Expect(
        ("backend",),
        {
            ("legacy",): ratio(LEGACY_ERRORS / (LEGACY_TOTAL + CREATED), 0.3),
            ("new",): ratio(NEW_ERRORS / (NEW_TOTAL + MISSING), 0.3),
        },
        books_list={("legacy",): ratio(LEGACY_RATIO), ("new",): ratio(NEW_RATIO)},
    ),
    'panel "$route: latency by backend" A': Expect(  # p50
        ("backend",),
        {("legacy",): FAST, ("new",): FAST},
        books_list={("legacy",): FAST, ("new",): FAST},
    ),
    'panel "$route: latency by backend" B': Expect(  # p95
        ("backend",),
        {("legacy",): LATENCY, ("new",): LATENCY},
        books_list={("legacy",): FAST, ("new",): SLOWED},
    ),
    'panel "$route: latency by backend" C': Expect(  # p99
        ("backend",),
        {("legacy",): LATENCY, ("new",): LATENCY},
        books_list={("legacy",): FAST, ("new",): SLOWED},
    ),
    # --- annotations and variables
    'annotation "Route table applied"': Expect(("instance",), lambda s: {(s.instance,): POSITIVE}),
    'annotation "Route table rejected"': Expect(("instance",), lambda s: {(s.instance,): POSITIVE}),
    "variable route": Expect(check=route_variable),
    # --- recording rules
    "record route_backend:gateway_requests:rate5m": Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): rate(LEGACY_TOTAL, 300),
            ("books.list", "new"): rate(NEW_TOTAL, 300),
            ("books.get", "new"): rate(MISSING, 300),
            ("_default", "legacy"): rate(CREATED, 300),
        },
    ),
    "record route_backend:gateway_requests_error_ratio:rate5m": Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): ratio(LEGACY_RATIO),
            ("books.list", "new"): ratio(NEW_RATIO),
            ("books.get", "new"): 0.0,
            ("_default", "legacy"): 0.0,
        },
    ),
    "record route_backend:gateway_requests_error_ratio:avg1d": Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): within(0, 2 * LEGACY_RATIO),
            ("books.list", "new"): within(0, 2 * NEW_RATIO),
            ("books.get", "new"): 0.0,
            ("_default", "legacy"): 0.0,
        },
    ),
    "record route_backend_le:gateway_request_duration_seconds_bucket:rate5m": Expect(
        check=every_bucket
    ),
    "record route_backend:gateway_request_duration_seconds:p99_5m": Expect(
        ("route", "backend"),
        {
            ("books.list", "legacy"): FAST,
            ("books.list", "new"): SLOWED,
            ("books.get", "new"): FAST,
            ("_default", "legacy"): FAST,
        },
    ),
    "record route_backend:gateway_request_duration_seconds:p99_5m_median1d": Expect(
        ("route", "backend"), {pair: LATENCY for pair in SERVED}
    ),
    "record route:gateway_legacy_error_ratio:baseline": Expect(
        # books.list: legacy's last 5 minutes (60 requests); _default: its last
        # day (20 requests in 5 minutes are too few to judge by).
        ("route", "backend"),
        {("books.list", "legacy"): ratio(LEGACY_RATIO), ("_default", "legacy"): 0.0},
    ),
    "record route:gateway_legacy_p99_seconds:baseline": Expect(
        ("route", "backend"), {("books.list", "legacy"): FAST, ("_default", "legacy"): FAST}
    ),
    "record job_instance:gateway_config_reload_failures:total": Expect(
        ("job", "instance"), per_instance(2.0)
    ),
    "record job_instance:gateway_config_reload_failures:by_last_success": Expect(
        ("job", "instance"), rejections_after_last_success
    ),
    "record job_instance:gateway_config_reload_failures:since_last_success": Expect(
        ("job", "instance"), per_instance(2.0)
    ),
    # --- alerts: each expression picks exactly the route (or instance) at fault
    "alert GatewayNewBackendErrorRatioHigh": Expect(
        ("route",), {("books.list",): ratio(NEW_RATIO)}
    ),
    "alert GatewayNewBackendLatencyHigh": Expect(("route",), {("books.list",): SLOWED}),
    "alert GatewayConfigReloadFailing": Expect(("job", "instance"), per_instance(2.0)),
}

ALL_QUERIES = dashboard_queries() + rule_queries()
GRAFANA = {"__rate_interval": f"{WINDOW:g}s", "__range": "5m", "new_backend": "new"}
ALL_ROUTES, ONE_ROUTE = ".*", r"books\\.list"  # as Grafana formats them for `=~`


def _cases() -> list[Any]:
    cases = []
    for query in ALL_QUERIES:
        if "route" in variables_in(query.expr):
            for route, name in ((ALL_ROUTES, "All"), (ONE_ROUTE, "books.list")):
                cases.append(pytest.param(query, route, id=f"{query.where} [route={name}]"))
        else:
            cases.append(pytest.param(query, None, id=query.where))
    return cases


def _as_table(samples: list[Sample], labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    table: dict[tuple[str, ...], float] = {}
    for sample in samples:
        names = set(sample.labels) - {"__name__"}
        assert names == set(labels), f"series labels {sorted(names)}, expected {sorted(labels)}"
        key = tuple(sample.labels[name] for name in labels)
        assert key not in table, f"two series for {key}"
        table[key] = sample.value
    return table


@pytest.mark.parametrize(("query", "route"), _cases())
def test_expression_returns_the_expected_series(
    scenario: Scenario, query: Query, route: str | None
) -> None:
    expect = EXPECTED.get(query.where)
    assert expect is not None, f"no expectation for {query.where}: add one to EXPECTED"
    expr = substitute(query.expr, {**GRAFANA, "route": route or ALL_ROUTES})
    if expect.check is not None:
        expect.check(scenario, expr)
        return
    values = expect.values(scenario) if callable(expect.values) else expect.values
    if route == ONE_ROUTE:
        if "route" in expect.labels:
            at = expect.labels.index("route")
            values = {key: v for key, v in values.items() if key[at] == "books.list"}
        else:
            assert expect.books_list is not None, f"{query.where}: no books_list expectation"
            values = expect.books_list
    assert _as_table(scenario.query(expr), expect.labels) == values, expr


def test_every_expression_has_an_expectation() -> None:
    wheres = [q.where for q in ALL_QUERIES]
    assert len(wheres) == len(set(wheres)), "two expressions share a panel title and refId"
    assert set(wheres) == set(EXPECTED)


def test_requests_are_counted_exactly_across_both_workers(scenario: Scenario) -> None:
    samples = scenario.query("sum by (route, backend, code) (gateway_requests_total)")
    counted = {(s.labels["route"], s.labels["backend"], s.labels["code"]): s.value for s in samples}
    assert counted == {key: float(n) for key, n in scenario.counts.items()}
    # The warm-up requests (1 + 1), then the measured ones.
    on_new = 'sum(gateway_requests_total{route="books.list", backend="new"})'
    assert scenario.prometheus.value(on_new, scenario.at) == 2 + NEW_TOTAL


def test_rules_are_loaded_and_healthy(scenario: Scenario) -> None:
    groups = scenario.prometheus.rule_groups()
    assert {group["file"] for group in groups} == {str(RULES)}
    loaded = {group["name"]: [rule["name"] for rule in group["rules"]] for group in groups}
    in_file = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert loaded == {
        group["name"]: [rule.get("record") or rule["alert"] for rule in group["rules"]]
        for group in in_file
    }
    for group in groups:
        for rule in group["rules"]:
            assert (rule["name"], rule["health"], rule.get("lastError", "")) == (
                rule["name"],
                "ok",
                "",
            )


def test_alerts_are_pending_for_the_route_and_instance_at_fault(scenario: Scenario) -> None:
    def pending() -> set[tuple[str, str]] | None:
        found = {
            (a["labels"]["alertname"], a["labels"].get("route") or a["labels"]["instance"])
            for a in scenario.prometheus.alerts()
            if a["state"] == "pending"
        }
        return found if len(found) >= 3 else None

    assert wait_for(pending, "three pending alerts", timeout=10) == {
        ("GatewayNewBackendErrorRatioHigh", "books.list"),
        ("GatewayNewBackendLatencyHigh", "books.list"),
        ("GatewayConfigReloadFailing", scenario.instance),
    }
