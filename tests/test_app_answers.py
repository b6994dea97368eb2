"""An app's own answer, any status, reaches the client unchanged, even when the app
raises after it; the failure is still logged, counted and held against the route.
The gateway's JSON answers only for an app that gave no complete answer (those cases:
tests/test_dispatch.py, tests/test_faults.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from gateway.bodies import BODY_CAP
from gateway.settings import Settings
from tests import flask_apps
from tests.harness import TEST_BACKENDS, ThreadServer, gateway_client, wait_for, write_routes

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
  flask: {wsgi: "tests.flask_apps:app"}
  half: {asgi: "tests.apps:half_answer"}
default: legacy
routes:
  - {id: fail, path: /fail, backend: new}
  - {id: guarded, path: /fail-after-read, backend: new, fallback: legacy}
  - {id: half, path: /half, backend: half}
  - {id: half.guarded, path: /half-guarded, backend: half, fallback: legacy}
  - {id: flask, path: /unavailable, backend: flask}
"""
)

# Starlette's ServerErrorMiddleware: it sends this answer, then re-raises.
STARLETTE_500 = (500, "text/plain; charset=utf-8", "Internal Server Error")


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    return write_routes(tmp_path, TABLE)


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.dispatch"]


def test_an_app_that_raises_after_its_own_500_is_answered_by_that_500(
    routes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with gateway_client(routes) as client:
        r = client.get("/fail", headers={"X-Request-ID": "rid-1"})
        metrics = client.get("/-/metrics").text
    assert (r.status_code, r.headers["content-type"], r.text) == STARLETTE_500
    assert r.headers["content-length"] == str(len(STARLETTE_500[2]))
    assert r.headers["x-gateway-backend"] == "new"
    assert r.headers["x-request-id"] == "rid-1"
    # Still the backend's failure: counted as its error, under the status it answered.
    assert 'gateway_backend_errors_total{backend="new",kind="exception",route="fail"} 1.0' in (
        metrics
    )
    assert 'gateway_requests_total{backend="new",code="500",method="GET",route="fail"} 1.0' in (
        metrics
    )
    [line] = failures(caplog)
    assert line.getMessage().startswith(
        "backend failed: route=fail backend=new request_id=rid-1 kind=exception "
        "status=500 (its own answer) GET /fail: RuntimeError: the new code is broken"
    )
    assert line.exc_info is None  # one line, no traceback


def test_an_app_that_raises_after_its_own_500_counts_against_the_rollback_watch(
    tmp_path: Path,
) -> None:
    text = TABLE.replace(
        "  - {id: fail, path: /fail, backend: new}\n",
        "  - id: fail\n    path: /fail\n    backend: new\n    fallback: legacy\n"
        "    rollback: {error_ratio: 0.5, window: 60, min_requests: 3}\n",
    )
    path = write_routes(tmp_path, text)
    with gateway_client(path, watch_interval=5) as client:
        # POST is not replayed: the client gets the app's own answer, and it counts.
        for _ in range(3):
            r = client.post("/fail", content=b"{}")
            assert (r.status_code, r.headers["content-type"], r.text) == STARLETTE_500
            assert r.headers["x-gateway-backend"] == "new"
        wait_for(
            lambda: client.get("/-/routes").json()["routes"][0]["backend"] == "legacy",
            10,
            "rollback",
        )
        assert 'gateway_rollbacks_total{route="fail"} 1.0' in client.get("/-/metrics").text


def test_a_fallback_still_replaces_the_apps_own_500(routes: Path) -> None:
    with gateway_client(routes) as client:
        r = client.put("/fail-after-read", content=b"payload")
        metrics = client.get("/-/metrics").text
    assert r.status_code == 200
    assert r.headers["x-gateway-backend"] == "legacy"
    assert r.json()["body"] == "payload"  # replayed whole on the fallback
    assert 'gateway_fallbacks_total{from="new",route="guarded",to="legacy"} 1.0' in metrics
    assert 'backend="new",kind="exception",route="guarded"} 1.0' in metrics


def test_a_held_500_the_fallback_cannot_replay_reaches_the_client(
    routes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The body is past the recording cap: the request cannot be replayed, and the
    # held answer is the app's own, complete: it is the answer.
    with gateway_client(routes) as client:
        r = client.put("/fail-after-read", content=b"x" * (BODY_CAP + 1))
        metrics = client.get("/-/metrics").text
    assert (r.status_code, r.headers["content-type"], r.text) == STARLETTE_500
    assert r.headers["x-gateway-backend"] == "new"
    assert "gateway_fallbacks_total{" not in metrics
    assert 'backend="new",kind="exception",route="guarded"} 1.0' in metrics
    [line] = failures(caplog)
    assert "status=500 (its own answer)" in line.getMessage()


def test_a_flask_apps_own_error_answer_reaches_the_client_unchanged(routes: Path) -> None:
    alone = flask_apps.app.test_client().get("/unavailable")
    with gateway_client(routes) as client:
        r = client.get("/unavailable")
        metrics = client.get("/-/metrics").text
    assert r.status_code == alone.status_code == 503
    assert r.content == alone.data
    assert r.json() == {"error": "maintenance", "until": "10:00"}
    for name in ("content-type", "content-length", "retry-after", "x-app-error"):
        assert r.headers[name] == alone.headers[name]
    assert r.headers["x-gateway-backend"] == "flask"
    # An answer, not a failure: no backend error counted.
    assert 'gateway_backend_errors_total{backend="flask",kind="exception",route="flask"} 0.0' in (
        metrics
    )
    assert 'gateway_requests_total{backend="flask",code="503",method="GET",route="flask"} 1.0' in (
        metrics
    )


def test_an_answer_broken_off_while_held_is_replaced_by_the_gateways_json(routes: Path) -> None:
    # Held for the fallback, which cannot replay a body past the recording cap: an
    # incomplete answer is no answer, and nothing of it reached the client yet.
    with gateway_client(routes) as client:
        r = client.put("/half-guarded", content=b"x" * (BODY_CAP + 1))
        metrics = client.get("/-/metrics").text
    assert r.status_code == 500
    assert r.json() == {
        "error": "the backend raised an error",
        "kind": "exception",
        "route": "half.guarded",
        "backend": "half",
        "request_id": r.headers["x-request-id"],
    }
    assert 'backend="half",kind="exception",route="half.guarded"} 1.0' in metrics


def test_an_answer_broken_off_on_its_way_is_cut_for_the_client_to_see(
    routes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ThreadServer(Gateway(Settings(config=str(routes)))) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(server.url + "/half", timeout=10)
        metrics = httpx.get(server.url + "/-/metrics", timeout=10).text
    assert 'backend="half",kind="exception",route="half"} 1.0' in metrics
    [line] = failures(caplog)
    assert "kind=exception status=(response already started) GET /half" in line.getMessage()
