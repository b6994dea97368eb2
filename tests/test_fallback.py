"""Fallback replay and automatic rollback."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.rollback import RollbackWatch
from gateway.routefile.model import RollbackSpec
from tests.harness import TEST_BACKENDS, free_port, gateway_client, wait_for, write_routes

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + f"""\
  slow: {{asgi: "tests.apps:asgi", timeout: 0.2}}
  down: {{url: "http://127.0.0.1:{free_port()}"}}
default: legacy
routes:
  - id: fail
    path: /fail
    backend: new
    fallback: legacy
  - id: status
    path: /status/{{code}}
    backend: new
    fallback: legacy
  - id: hang
    path: /hang
    backend: slow
    fallback: legacy
  - id: down
    path: /down
    backend: down
    fallback: legacy
"""
)


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    return write_routes(tmp_path, TABLE)


@pytest.mark.parametrize(
    ("path", "route", "source", "why"),
    [
        ("/fail", "fail", "new", "exception"),
        ("/status/503", "status", "new", "status 503"),
        ("/hang", "hang", "slow", "timeout"),
        ("/down", "down", "down", "connect"),
    ],
)
def test_failed_idempotent_request_is_replayed_once_on_the_fallback(
    routes: Path, path: str, route: str, source: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway_client(routes) as client:
        r = client.get(path, headers={"X-Request-ID": "rid-7"})
        metrics = client.get("/-/metrics").text
    assert r.status_code == 200
    assert r.json()["app"] == "wsgi"  # the legacy app answered
    assert r.json()["request_id"] == "rid-7"
    assert r.headers["x-gateway-backend"] == "legacy"
    assert r.headers["x-gateway-route"] == route
    assert f'gateway_fallbacks_total{{from="{source}",route="{route}",to="legacy"}} 1.0' in metrics
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.dispatch"]
    assert lines == [
        f"fallback: route={route} from={source} to=legacy request_id=rid-7 reason={why}"
    ]


def test_idempotent_body_is_replayed_intact(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.put("/fail", content=b"x" * 100_000)
    assert r.status_code == 200
    assert r.json()["body"] == "x" * 100_000


def test_non_idempotent_requests_are_not_replayed(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.post("/fail", content=b"{}")
        metrics = client.get("/-/metrics").text
    assert r.status_code == 500
    assert r.text == "Internal Server Error"  # the app's own answer, not replaced
    assert r.headers["x-gateway-backend"] == "new"
    assert "gateway_fallbacks_total{" not in metrics


def test_a_route_without_fallback_answers_the_failure(tmp_path: Path) -> None:
    no_fallback = TABLE.replace(
        "    path: /fail\n    backend: new\n    fallback: legacy\n",
        "    path: /fail\n    backend: new\n",
    )
    with gateway_client(write_routes(tmp_path, no_fallback)) as client:
        r = client.get("/fail")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"  # the app's own answer
    assert r.headers["x-gateway-backend"] == "new"


def test_when_the_fallback_fails_too_the_client_gets_that_answer(tmp_path: Path) -> None:
    both_fail = TABLE.replace(
        "    path: /fail\n    backend: new\n    fallback: legacy\n",
        "    path: /fail\n    backend: new\n    fallback: down\n",
    )
    with gateway_client(write_routes(tmp_path, both_fail)) as client:
        r = client.get("/fail")
        metrics = client.get("/-/metrics").text
    assert r.status_code == 502  # replayed once, on the fallback, which is down
    assert r.json()["backend"] == "down"
    assert 'gateway_fallbacks_total{from="new",route="fail",to="down"} 1.0' in metrics


def test_primary_failures_still_count_against_the_primary(routes: Path) -> None:
    with gateway_client(routes) as client:
        client.get("/fail")
        metrics = client.get("/-/metrics").text
    assert (
        'gateway_requests_total{backend="new",code="500",method="GET",route="fail"} 1.0' in metrics
    )
    assert (
        'gateway_requests_total{backend="legacy",code="200",method="GET",route="fail"} 1.0'
        in metrics
    )
    assert (
        'gateway_backend_errors_total{backend="new",kind="exception",route="fail"} 1.0' in metrics
    )


# --- rollback --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rollback_watch_needs_the_ratio_and_the_count_within_the_window() -> None:
    trips: list[tuple[int, int]] = []
    clock = Clock()
    watch = RollbackWatch(
        "r",
        "new",
        "legacy",
        RollbackSpec(0.2, 10, 10),
        lambda w, total, failed: trips.append((total, failed)),
        clock,
    )
    for _ in range(8):
        watch.record(False)
    watch.record(True)
    watch.record(True)  # 2 of 10 = 0.2: not above the ratio
    assert trips == []
    clock.now += 11  # the window moved on: the old answers are gone
    for _ in range(3):
        watch.record(True)  # 3 of 3 failed, but fewer than min_requests
    assert trips == []
    for _ in range(6):
        watch.record(False)
    watch.record(True)  # 4 of 10 failed
    assert trips == [(10, 4)]
    watch.record(True)
    assert trips == [(10, 4)]  # trips once
    assert watch.tripped


def test_rollback_flips_the_failing_route_in_the_file_and_only_that_route(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    text = TABLE.replace(
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n",
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n"
        "    rollback: {error_ratio: 0.5, window: 60, min_requests: 5}\n",
    )
    path = write_routes(tmp_path, text)
    with gateway_client(path, watch_interval=5) as client:
        for _ in range(2):
            assert client.get("/new/ok").status_code == 200
        answers = [client.get("/fail") for _ in range(5)]
        assert {r.status_code for r in answers} == {200}  # fallback served every one
        wait_for(
            lambda: client.get("/-/routes").json()["routes"][0]["backend"] == "legacy",
            5,
            "rollback",
        )
        assert client.get("/fail").headers["x-gateway-backend"] == "legacy"
        assert client.get("/status/200").headers["x-gateway-backend"] == "new"
        metrics = client.get("/-/metrics").text
    on_disk = path.read_text()
    assert on_disk == text.replace(
        "  - id: fail\n    path: /fail\n    backend: new\n",
        "  - id: fail\n    path: /fail\n    backend: legacy\n",
    )
    assert 'gateway_rollbacks_total{route="fail"} 1.0' in metrics
    rollbacks = [
        m for r in caplog.records if (m := r.getMessage()).startswith("automatic rollback:")
    ]
    assert rollbacks == [
        "automatic rollback: route=fail from=new to=legacy failed=5 of 5 in 60s "
        f"(over the 0.5 limit); stored in {path}"
    ]


def backend_of_status(client: TestClient) -> str:
    routes = client.get("/-/routes").json()["routes"]
    backend: str = next(r["backend"] for r in routes if r["id"] == "status")
    return backend


def test_rollback_never_flips_back_by_itself(tmp_path: Path) -> None:
    status_route = "  - id: status\n    path: /status/{code}\n    backend: new\n"
    text = TABLE.replace(
        status_route + "    fallback: legacy\n",
        status_route
        # Three seconds: the five failures below fit in it on a loaded machine too (the
        # window counts whole seconds, so one second could split them at its turn).
        + "    fallback: legacy\n    rollback: {error_ratio: 0.5, window: 3, min_requests: 5}\n",
    )
    rolled_back = text.replace(status_route, status_route.replace("new", "legacy"))
    path = write_routes(tmp_path, text)
    with gateway_client(path, watch_interval=5) as client:
        for _ in range(5):
            assert client.get("/status/503").status_code == 200  # new fails; legacy answers
        # the live table, not just the file
        wait_for(lambda: backend_of_status(client) == "legacy", 10, "rollback")
        assert path.read_text() == rolled_back
        # The backend recovers, and the window moves on past the failures: the route
        # stays where the rollback put it until a person flips it.
        until = time.monotonic() + 4
        while time.monotonic() < until:
            r = client.get("/status/200")
            assert (r.status_code, r.headers["x-gateway-backend"]) == (200, "legacy")
            time.sleep(0.05)
        assert backend_of_status(client) == "legacy"
        assert 'gateway_rollbacks_total{route="status"} 1.0' in client.get("/-/metrics").text
    assert path.read_text() == rolled_back


def test_policies_naming_the_routes_own_backend_do_nothing(tmp_path: Path) -> None:
    """After a flip or a rollback a route's policies may name its own backend: valid,
    and inert (no canary share, no copy, no replay on the same side)."""
    text = TABLE.replace(
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n",
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: new\n"
        "    canary: {backend: new, percent: 50}\n    shadow: {backend: new}\n"
        "    rollback: {error_ratio: 0.5, window: 60, min_requests: 1}\n",
    )
    path = write_routes(tmp_path, text)
    with gateway_client(path, watch_interval=5) as client:
        answers = [client.get("/fail") for _ in range(4)]
        assert {(r.status_code, r.headers["x-gateway-backend"]) for r in answers} == {(500, "new")}
        assert {r.text for r in answers} == {"Internal Server Error"}  # the app's own
        time.sleep(0.2)
        assert client.get("/-/shadow").json()["routes"] == {}
        metrics = client.get("/-/metrics").text
    assert 'gateway_route_weight{backend="new",route="fail"} 1.0' in metrics
    assert 'gateway_fallbacks_total{from="new",route="fail",to="new"}' not in metrics
    assert 'gateway_rollbacks_total{route="fail"}' not in metrics
    assert path.read_text() == text


def test_the_fallback_sees_the_request_as_the_client_sent_it(tmp_path: Path) -> None:
    """A mounted Starlette primary rewrites its scope (root_path, path_params): the
    WSGI fallback must still get the original path, not /x under SCRIPT_NAME /api."""
    path = write_routes(
        tmp_path,
        "version: 1\n"
        + TEST_BACKENDS
        + '  mounted: {asgi: "tests.apps:mounted"}\n'
        + "routes:\n  - {id: api, path: '/api/{rest:path}', backend: mounted, fallback: legacy}\n",
    )
    with gateway_client(path) as client:
        r = client.get("/api/x")
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "legacy"
    assert r.json()["path"] == "/api/x"


def test_a_route_moved_back_after_a_rollback_is_watched_afresh(tmp_path: Path) -> None:
    text = TABLE.replace(
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n",
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n"
        "    rollback: {error_ratio: 0.5, window: 60, min_requests: 5}\n",
    )
    path = write_routes(tmp_path, text)

    def backend_now(client: TestClient) -> str:
        route: str = client.get("/-/routes").json()["routes"][0]["backend"]
        return route

    with gateway_client(path, watch_interval=5) as client:
        for expected_rollbacks in (1, 2):
            for _ in range(5):
                assert client.get("/fail").status_code == 200  # the fallback answers
            wait_for(lambda: backend_now(client) == "legacy", 5, f"rollback {expected_rollbacks}")
            counted = 'gateway_rollbacks_total{route="fail"} ' + f"{expected_rollbacks}.0"
            assert counted in client.get("/-/metrics").text
            # The operator moves it back to try again: a fresh window, able to trip again.
            r = client.put("/-/routes/fail", json={"backend": "new"})
            assert r.status_code == 200
            assert backend_now(client) == "new"
